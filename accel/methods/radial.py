"""`Radial`: Radial attention (static O(n log n) mask with energy decay) as an accel method.

Reference: X. Li, M. Li et al., "Radial Attention: O(n log n) Sparse Attention with Energy Decay
for Long Video Generation", 2025 (arXiv 2506.19852), as released in mit-han-lab/radial-attention.
The exact rule, the release's block selection and our alternatives are in :mod:`accel.patterns.radial`.
"""

from __future__ import annotations

import dataclasses

import torch

from accel.kernels import validate_block_size
from accel.methods.preset import MODEL_FAMILIES, Published
from accel.methods.static import StaticPatternMethod
from accel.patterns.blocks import order_key
from accel.patterns.radial import GRANULARITIES, RadialRule, build_radial_layout, radial_block_mask
from accel.schedule import Schedule

__all__ = ["Radial"]

_SOURCE = "mit-han-lab/radial-attention @72788d4 "
_HUNYUAN = Published(dict(decay=0.95, sink=False), Schedule(dense_steps=12, dense_layers=0),
                     _SOURCE + "scripts/hunyuan_t2v_inference.sh (arXiv 2506.19852)")
_WAN21 = Published(dict(decay=0.2, sink=True), Schedule(dense_steps=12, dense_layers=1),
                   _SOURCE + "scripts/wan_t2v_inference.sh (arXiv 2506.19852)")
_WAN22 = Published(dict(decay=0.8, sink=True, block_size=64), Schedule(dense_steps=11, dense_layers=1),
                   _SOURCE + "scripts/wan_22_t2v_inference.sh (Wan2.2-T2V-A14B)")
#: model name -> the release's setting; I2V and TI2V have no script of their own: the same-generation
#: text-to-video setting (the release's Wan processors are the same code for them)
_RADIAL_PUBLISHED = {
    "hunyuan-video": _HUNYUAN,
    "wan2.1-t2v-1.3b": _WAN21,
    "wan2.1-t2v-14b": _WAN21,
    "wan2.1-i2v-14b-480p": _WAN21._replace(source=_WAN21.source + "; no I2V script: the T2V setting"),
    "wan2.1-i2v-14b-720p": _WAN21._replace(source=_WAN21.source + "; no I2V script: the T2V setting"),
    "wan2.2-t2v-a14b": _WAN22,
    "wan2.2-ti2v-5b": _WAN22._replace(source=_WAN22.source + "; no TI2V-5B script: the A14B setting"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Radial(StaticPatternMethod):
    """Radial attention over the video tokens (text stays dense), as mit-han-lab/radial-attention runs it.

    Frames at distance ``d <= 1`` attend densely; at ``d >= 2`` a query sees keys whose spatial
    index (``y * W + x``) is within a half-width that halves with each doubling of ``d``, scaled by
    ``decay``, never below ``block_size``; frame distances whose *undecayed* width is below 128 tokens
    are thinned to every m-th (the release's fixed threshold; ``decay`` does not enter it). By default
    the kernel runs the release's block selection (a per-frame-pair column-density test, not a
    superset of the token rule). Exact definitions in :mod:`accel.patterns.radial`.

    Args:
        decay: window scale, a finite number > 0 (default 1.0). The release's scripts use 0.95
            (HunyuanVideo), 0.2 (Wan 2.1) and 0.8 (Wan 2.2); see :meth:`preset`. Smaller is sparser.
        block_size: block size of the kernel and the smallest window half-width, a power of two >= 16
            (default 128, the release's; its Wan 2.2 processor uses 64).
        sink: if True, every query also attends all of frame 0 (attention sink; the release's Wan mask).
        granularity: what the kernel executes:

            * ``"block"`` (default, the release's): the blocks kept by the release's per-frame-pair
              density test, computed in full;
            * ``"cover"`` (ours): every block holding an allowed pair, computed in full (never drops an
              allowed pair; denser);
            * ``"token"``: the ``"cover"`` blocks masked to the token rule exactly.
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    Tokens stay in row-major (frame-major) order; on a single image (``T = 1``) every pair is at
    frame distance 0 and Radial is dense attention. The release pairs Radial with a dense schedule:
    see :meth:`preset`.

    Raises:
        ValueError: a parameter out of range; at call time, ``granularity="block"`` on a grid whose
            frames are too small for the release's selection (a query block keeps no key block).
    """

    decay: float = 1.0
    block_size: int = 128
    sink: bool = False
    granularity: str = "block"

    def __post_init__(self) -> None:
        d = self.decay
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not (d > 0) or d == float("inf"):
            raise ValueError(f"decay must be a finite number > 0, got {d!r}")
        validate_block_size("block_size", self.block_size)
        if not isinstance(self.sink, bool):
            raise ValueError(f"sink must be a bool, got {self.sink!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        super().__post_init__()

    def rule(self, grid):
        """The :class:`~accel.patterns.radial.RadialRule` on ``grid``."""
        return RadialRule(tuple(grid), self.decay, self.block_size, self.sink)

    def video_block_layout(self, tokens, *, batch, heads, device):
        """The executed block layout of the video tokens in ``tokens``' order (cached); see ``granularity``."""
        rule = self._rule(tokens.grid)
        dev = torch.device(device)
        if self.granularity == "block" and tokens.permutation is not None:
            raise ValueError("Radial(granularity='block') runs the release's row-major blocks; this call's token "
                             "layout carries a permutation: use granularity='cover' or 'token'")
        key = ("radial_layout", rule.key(), order_key(tokens.permutation), self.granularity, str(dev))
        return self._memo(key, lambda: build_radial_layout(rule, tokens.permutation, granularity=self.granularity,
                                                           device=dev))

    def video_token_mask(self, tokens, *, batch, heads, device="cpu"):
        """The brute-force video mask the method executes, bool ``[1, 1, N, N]`` (tests only): the
        release's block selection (``"block"``), the token rule rounded up to whole blocks
        (``"cover"``), or the token rule (``"token"``)."""
        if self.granularity == "token":
            return super().video_token_mask(tokens, batch=batch, heads=heads, device=device)
        b = self.block_size
        if self.granularity == "block":
            blocks = radial_block_mask(self._rule(tokens.grid))
        else:
            mask = super().video_token_mask(tokens, batch=batch, heads=heads, device="cpu")[0, 0]
            n = mask.shape[0]
            nb = -(-n // b)
            pad = torch.zeros(nb * b, nb * b, dtype=torch.bool)
            pad[:n, :n] = mask
            blocks = pad.view(nb, b, nb, b).any(3).any(1)
        n = tokens.num_video_tokens
        mask = blocks.repeat_interleave(b, 0).repeat_interleave(b, 1)[:n, :n]
        return mask[None, None].to(device)

    @classmethod
    def published(cls, model: str) -> Published | None:
        """The release's setting for ``model`` (``Radial.preset(model)``; see
        :meth:`~accel.methods.base.AttentionMethod.preset`), from mit-han-lab/radial-attention's scripts
        (commit 72788d4); the step index counts pipeline steps, the layer index each transformer's blocks:

        * ``hunyuan-video``: ``decay=0.95``, no sink; first 12 of 50 steps dense, no dense layers
          (``scripts/hunyuan_t2v_inference.sh``; its first release used ``decay_factor 1``).
        * Wan 2.1 (``wan2.1-*``): ``decay=0.2``, ``sink=True``; first 12 steps and the first layer dense
          (``scripts/wan_t2v_inference.sh``; the I2V checkpoints have no script: the same setting).
        * Wan 2.2 (``wan2.2-*``): ``decay=0.8``, ``sink=True``, ``block_size=64`` (its Wan 2.2
          processor); first 11 of 40 steps and the first layer of each expert dense
          (``scripts/wan_22_t2v_inference.sh``, A14B; the TI2V-5B has no script: the same setting).

        ``flux`` models raise ``ValueError``: Radial is a video pattern and is dense on a single image.
        """
        if MODEL_FAMILIES.get(model) == "flux":
            raise ValueError("Radial is a video pattern (frames); on FLUX images (T = 1) it is dense attention. "
                             "Use ClearLocal or Neighborhood for FLUX.")
        return _RADIAL_PUBLISHED.get(model)

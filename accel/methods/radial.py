"""`Radial`: Radial attention (static O(n log n) mask with energy decay) as an accel method.

Reference: X. Li, M. Li et al., "Radial Attention: O(n log n) Sparse Attention with Energy Decay
for Long Video Generation", 2025 (arXiv 2506.19852). The exact rule and its block rounding are in
:mod:`accel.patterns.radial`.
"""

from __future__ import annotations

import dataclasses

import torch

from accel.kernels import validate_block_size
from accel.methods.preset import MODEL_FAMILIES, Published
from accel.methods.static import StaticPatternMethod
from accel.patterns.radial import GRANULARITIES, RadialRule
from accel.schedule import Schedule

__all__ = ["Radial"]


_RADIAL_PUBLISHED = {
    "hunyuan_video": Published(dict(decay=1.0, sink=False), Schedule(dense_steps=12, dense_layers=0),
                               "radial-attention scripts/hunyuan_t2v_inference.sh (arXiv 2506.19852)"),
    "wan": Published(dict(decay=0.2, sink=True), Schedule(dense_steps=12, dense_layers=1),
                     "radial-attention Wan 2.1 scripts (arXiv 2506.19852)"),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Radial(StaticPatternMethod):
    """Radial attention over the video tokens (text stays dense).

    Frames at distance ``d <= 1`` attend densely; at ``d >= 2`` a query sees keys whose spatial
    index (``y * W + x``) is within a half-width that halves with each doubling of ``d`` (band
    ``floor(log2 d)``), scaled by ``decay``; once that falls below a block, only every m-th frame
    distance is kept (diagonal-frequency reduction). Executed at block granularity: every block
    pair containing an allowed token pair is computed in full. Exact definitions in
    :mod:`accel.patterns.radial`.

    Args:
        decay: window scale, a finite number > 0 (default 1.0 = the paper's widths; the paper's
            HunyuanVideo runs use 1.0, its Wan 2.1 runs 0.2). Smaller is sparser.
        block_size: block size of the kernel and of the reduction threshold, a power of two >= 16
            (default 128, as in the paper).
        sink: if True, every query also attends all of frame 0 (attention sink; the paper's Wan mask).
        granularity: ``"block"`` (default, as the paper executes it): visited blocks are computed in
            full; ``"token"``: the same blocks, masked to the token rule exactly.
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    Tokens stay in row-major (frame-major) order; on a single image (``T = 1``) every pair is at
    frame distance 0 and Radial is dense attention. The paper pairs Radial with a dense schedule:
    see :meth:`preset`.
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

    def video_token_mask(self, tokens, *, batch, heads, device="cpu"):
        """The brute-force video rule, bool ``[1, 1, N, N]``: the token rule, rounded up to whole
        ``block_size`` blocks (in sequence order) when ``granularity == "block"`` (tests only)."""
        mask = super().video_token_mask(tokens, batch=batch, heads=heads, device="cpu")[0, 0]
        if self.granularity == "block":
            n, b = mask.shape[0], self.block_size
            nb = -(-n // b)
            pad = torch.zeros(nb * b, nb * b, dtype=torch.bool)
            pad[:n, :n] = mask
            blocks = pad.view(nb, b, nb, b).any(3).any(1)
            mask = blocks.repeat_interleave(b, 0).repeat_interleave(b, 1)[:n, :n]
        return mask[None, None].to(device)

    @classmethod
    def published(cls, model: str) -> Published | None:
        """The paper's published setting for a model of family ``hunyuan_video`` or ``wan``
        (``Radial.preset(model)``; see :meth:`~accel.methods.base.AttentionMethod.preset`).

        * ``hunyuan_video``: ``decay=1.0``, no sink; schedule: first 12 of 50 steps dense, no dense
          layers (mit-han-lab/radial-attention ``scripts/hunyuan_t2v_inference.sh``:
          ``dense_timesteps=12``, ``dense_layers=0``, ``decay_factor 1``).
        * ``wan`` (every Wan checkpoint): ``decay=0.2``, ``sink=True``; schedule: first 12 of 50 steps
          and the first layer dense (the repository's Wan 2.1 scripts: ``dense_timesteps=12``,
          ``dense_layers=1``, ``decay_factor 0.2``; its Wan mask keeps frame 0 as a sink).

        ``flux`` models raise ``ValueError``: Radial is a video pattern and is dense on a single image.
        """
        family = MODEL_FAMILIES.get(model)
        if family == "flux":
            raise ValueError("Radial is a video pattern (frames); on FLUX images (T = 1) it is dense attention. "
                             "Use ClearLocal or Neighborhood for FLUX.")
        return _RADIAL_PUBLISHED.get(family)

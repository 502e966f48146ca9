"""ConsistEdit's attention-fusion rule (Yin et al. 2025, "ConsistEdit: Highly Consistent and Precise
Training-free Visual Editing", arXiv 2510.17803), on the vision tokens of (source, target) pairs.

In every controlled layer, after QK-norm and RoPE and before the attention:

* for the first ``int(T * alpha)`` steps (``T`` = number of steps) the target's vision-token Q and K
  are the source's (structure lock);
* afterwards Q and K are fused by the edit mask ``M``: the target's own inside ``M``, the source's
  outside;
* V is fused by ``M`` at every step.

Text tokens (FLUX: first; HunyuanVideo: last, padded) are never touched, nor are source rows.
"""

from __future__ import annotations

import math

import torch

from accel.control.controller import AttentionCall, Rule
from accel.grid import TokenLayout

__all__ = ["ConsistEdit", "check_alpha", "grid_mask_to_tokens"]


def check_alpha(alpha) -> float:
    """``alpha`` as a float; ``ValueError`` unless it is a real number in ``[0, 1]``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (consistency strength) must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def grid_mask_to_tokens(mask: torch.Tensor, layout: TokenLayout, device) -> torch.Tensor:
    """The bool ``[T*H*W]`` mask of the layout's video tokens (in sequence order) from a ``[T, H, W]`` grid mask.

    Raises:
        ValueError: the mask's shape is not the layout's grid.
    """
    if tuple(mask.shape) != layout.grid:
        raise ValueError(f"the edit mask has grid shape {tuple(mask.shape)} but this call's token grid is "
                         f"{layout.grid} (T, H, W); build the mask for the size you generate")
    flat = mask.reshape(-1).to(device)
    if layout.permutation is not None:
        flat = flat[layout.permutation.to(device)]
    return flat


class ConsistEdit(Rule):
    """ConsistEdit's Q/K/V fusion for the target rows of (source, target) pairs (see the module docstring).

    Args:
        alpha: consistency strength in ``[0, 1]``: the structure lock lasts ``int(T * alpha)`` steps.
            The paper's defaults: 1.0 for colour/material edits, 0.3 for shape/object edits, 0.1 for
            real (inverted) inputs.
        mask: the edit region, a bool tensor ``[T, H, W]`` over the token grid (True = edit), or
            ``None`` for an all-edit mask.

    Default layers (:class:`~accel.control.Controller` ``layers="auto"``): FLUX single-stream blocks (the
    paper's choice), every self-attention layer of Wan and HunyuanVideo.
    """

    default_layers = {"flux": r"^single_transformer_blocks\.", "wan": None, "hunyuan_video": None}

    def __init__(self, alpha: float = 1.0, mask: torch.Tensor | None = None) -> None:
        self.alpha = check_alpha(alpha)
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 3:
                raise ValueError(f"mask must be None or a bool tensor [T, H, W] over the token grid, got "
                                 f"{type(mask).__name__}{tuple(mask.shape) if isinstance(mask, torch.Tensor) else ''}")
        self.mask = mask

    def structure_steps(self, num_steps: int) -> int:
        """Number of leading steps with the structure lock: ``int(num_steps * alpha)`` in floating point,
        as the release computes it (e.g. ``int(28 * 0.1) = 2``)."""
        return int(num_steps * self.alpha)

    def _locked(self, call: AttentionCall) -> bool:
        if self.alpha == 0.0:
            return False
        if call.num_steps is None:
            if self.alpha == 1.0:
                return True
            raise RuntimeError("ConsistEdit needs the number of inference steps (Controller(num_steps=...) or a "
                               "pipeline that reports it) for 0 < alpha < 1")
        return call.step < self.structure_steps(call.num_steps)

    def rewrite_qkv(self, call: AttentionCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        if call.cross:
            return q, k, v
        locked = self._locked(call)
        m = None if self.mask is None else grid_mask_to_tokens(self.mask, call.layout, q.device)
        if not locked and (m is None or bool(m.all())):
            return q, k, v          # the target keeps its own Q, K, V: nothing to fuse
        vis = call.layout.video_slice
        new = []
        for x, lock_it in ((q, locked), (k, locked), (v, False)):
            if m is None and not lock_it:
                new.append(x)
                continue
            x_src, x_tgt = x[0::2, vis], x[1::2, vis]
            fused = x_src if lock_it else torch.where(m[None, :, None, None], x_tgt, x_src)
            out = x.clone()
            out[1::2, vis] = fused
            new.append(out)
        return tuple(new)

    def __repr__(self) -> str:
        region = "all-edit" if self.mask is None else f"mask {tuple(self.mask.shape)} ({int(self.mask.sum())} edit tokens)"
        return f"ConsistEdit(alpha={self.alpha}, {region})"

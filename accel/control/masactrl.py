"""MasaCtrl-style mutual self-attention (Cao et al. 2023, "MasaCtrl: Tuning-Free Mutual Self-Attention
Control for Consistent Image Synthesis and Editing", arXiv 2304.08465), adapted to diffusion transformers.

From ``start_step`` on, in every controlled layer, the target branch's vision queries attend to the
*source* branch's vision keys and values (the target's own text keys and values stay), so the target
keeps the source's appearance while its queries (layout) follow the target prompt. Text queries and
source rows are unchanged. Implemented on the controller's *attention operator* hook: the layer's own
attention runs once as usual and once with the target's vision K/V replaced by the source's; the
target's vision-query rows come from the second run.
"""

from __future__ import annotations

import torch

from accel.control.consistedit import grid_mask_to_tokens
from accel.control.controller import AttentionCall, Rule

__all__ = ["MutualSelfAttention"]


class MutualSelfAttention(Rule):
    """Target vision queries attend to the source's vision K/V (MasaCtrl's mutual self-attention).

    Args:
        start_step: the first step (0-based) with mutual attention, an int >= 0 (MasaCtrl: 4 of 50).
        mask: optional bool ``[T, H, W]`` token-grid mask: only target queries inside it use mutual
            attention (MasaCtrl's mask-guided variant); ``None`` = every vision query.

    Default layers: all self-attention layers (restrict with the controller's ``layers``; MasaCtrl
    uses the later layers of its U-Net).
    """

    def __init__(self, start_step: int = 0, mask: torch.Tensor | None = None) -> None:
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"start_step must be an int >= 0, got {start_step!r}")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 3):
            raise ValueError("mask must be None or a bool tensor [T, H, W] over the token grid")
        self.start_step = start_step
        self.mask = mask

    def attention(self, call: AttentionCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, operator):
        out = operator(q, k, v)
        if call.cross or call.step < self.start_step:
            return out
        vis = call.layout.video_slice
        k_mut, v_mut = k.clone(), v.clone()
        k_mut[1::2, vis] = k[0::2, vis]
        v_mut[1::2, vis] = v[0::2, vis]
        mutual = operator(q, k_mut, v_mut)
        result = out.clone()
        if self.mask is None:
            result[1::2, vis] = mutual[1::2, vis]
        else:
            m = grid_mask_to_tokens(self.mask, call.layout, q.device)[None, :, None, None]
            result[1::2, vis] = torch.where(m, mutual[1::2, vis], out[1::2, vis])
        return result

    def __repr__(self) -> str:
        return f"MutualSelfAttention(start_step={self.start_step}, mask={'None' if self.mask is None else 'given'})"

"""accel processor for HunyuanVideo's dual- and single-stream attention."""

from __future__ import annotations

import torch

from accel.methods.base import AttentionMethod
from accel.processors.base import AccelProcessorMixin, Route, rebind_core_attention
from accel.processors.upstream import HunyuanVideoAttnProcessor2_0

__all__ = ["AccelHunyuanVideoAttnProcessor"]

_ROUTED_CALL = rebind_core_attention(HunyuanVideoAttnProcessor2_0.__call__)


class AccelHunyuanVideoAttnProcessor(AccelProcessorMixin, HunyuanVideoAttnProcessor2_0):
    """HunyuanVideo attention (``transformer_blocks.N.attn``, ``single_transformer_blocks.J.attn``)
    with the core attention computed by an accel method.

    A subclass of diffusers' ``HunyuanVideoAttnProcessor2_0``: projections, per-head RMS QK-norm,
    RoPE on the video tokens and the ``[video, text]`` concatenation are upstream's code. The joint
    sequence is video tokens then text tokens (``text_side="last"``); the text padding that upstream
    passes as ``attention_mask`` is carried by the token layout's ``text_mask`` (same rule: the first
    ``sum(encoder_attention_mask)`` text tokens are valid). Layers/steps the schedule keeps dense run
    upstream's processor unchanged. The token refiner keeps upstream's ``AttnProcessor2_0``.

    Args:
        method: the accel attention method (e.g. ``accel.Dense()``).
    """

    def __init__(self, method: AttentionMethod) -> None:
        super().__init__()
        self._init_method(method)

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same arguments and result as ``HunyuanVideoAttnProcessor2_0.__call__`` (diffusers >= 0.42)."""
        binding = self._binding(attn)
        route = self._control_route(binding, attention_mask)
        if route is not None:
            return _ROUTED_CALL(self, attn, hidden_states, encoder_hidden_states, route, image_rotary_emb)
        if binding.is_dense():
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        return _ROUTED_CALL(self, attn, hidden_states, encoder_hidden_states, Route(self.method, binding),
                            image_rotary_emb)

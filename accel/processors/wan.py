"""accel processor for Wan 2.1 / 2.2 self-attention (``WanTransformer3DModel.blocks.N.attn1``)."""

from __future__ import annotations

import torch

from accel.methods.base import AttentionMethod
from accel.processors.base import AccelProcessorMixin, Route, rebind_core_attention
from accel.processors.upstream import WanAttnProcessor

__all__ = ["AccelWanAttnProcessor"]

_ROUTED_CALL = rebind_core_attention(WanAttnProcessor.__call__)


class AccelWanAttnProcessor(AccelProcessorMixin, WanAttnProcessor):
    """Wan self-attention with the core attention computed by an accel method.

    A subclass of diffusers' ``WanAttnProcessor``: the Q/K/V projections, the RMS QK-norm across
    heads and the rotary embedding are upstream's code; only the attention of the rotated q/k/v runs
    ``method(q, k, v, layout)``. Cross-attention calls (``encoder_hidden_states`` given: ``attn2``,
    including image-to-video's image branch) and the layers/steps the schedule keeps dense run
    upstream's processor unchanged.

    Args:
        method: the accel attention method (e.g. ``accel.Dense()``).

    Install with :func:`accel.apply`, or with ``transformer.set_attn_processor`` followed by
    :func:`accel.processors.attach` (which records the token layout on every call).
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
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Same arguments and result as ``WanAttnProcessor.__call__`` (diffusers >= 0.42)."""
        if encoder_hidden_states is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        binding = self._binding(attn)
        route = self._control_route(binding, attention_mask)
        if route is not None:
            return _ROUTED_CALL(self, attn, hidden_states, None, route, rotary_emb)
        if binding.is_dense():
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if attention_mask is not None:
            raise ValueError("AccelWanAttnProcessor: Wan self-attention takes no attention_mask, got one")
        return _ROUTED_CALL(self, attn, hidden_states, None, Route(self.method, binding), rotary_emb)

"""accel processor for FLUX.1's dual- and single-stream attention."""

from __future__ import annotations

import torch

from accel.methods.base import AttentionMethod
from accel.processors.base import AccelProcessorMixin, Route, rebind_core_attention
from accel.processors.upstream import FluxAttnProcessor

__all__ = ["AccelFluxAttnProcessor"]

_ROUTED_CALL = rebind_core_attention(FluxAttnProcessor.__call__)


class AccelFluxAttnProcessor(AccelProcessorMixin, FluxAttnProcessor):
    """FLUX.1 attention (``transformer_blocks.N.attn``, ``single_transformer_blocks.J.attn``) with the
    core attention computed by an accel method.

    A subclass of diffusers' ``FluxAttnProcessor``: projections, QK-norm, the ``[text, image]``
    concatenation and RoPE over the joint sequence are upstream's code. The joint sequence is text
    tokens then image tokens (``text_side="first"``); single-stream blocks receive it already
    concatenated, so the text length comes from the root hook. Layers/steps the schedule keeps dense
    run upstream's processor unchanged. FLUX passes ``joint_attention_kwargs`` to processors; only
    upstream's keyword names are accepted, as upstream does.

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
        encoder_hidden_states: torch.Tensor = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Same arguments and result as ``FluxAttnProcessor.__call__`` (diffusers >= 0.42)."""
        binding = self._binding(attn)
        route = self._control_route(binding, attention_mask)
        if route is not None and (route.method is None or attention_mask is None):
            return _ROUTED_CALL(self, attn, hidden_states, encoder_hidden_states, route, image_rotary_emb)
        if binding.is_dense():
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if attention_mask is not None:
            raise ValueError(
                "AccelFluxAttnProcessor: an attention_mask was passed to FLUX attention; accel methods take text "
                "padding from the token layout and do not support custom masks"
            )
        return _ROUTED_CALL(self, attn, hidden_states, encoder_hidden_states, Route(self.method, binding),
                            image_rotary_emb)

"""Shared machinery of the accel processors: routing upstream's core attention call to a method.

Each accel processor subclasses the upstream diffusers processor. To keep upstream's projections,
QK-norm, RoPE and text concatenation *literally* upstream's, a sparse call runs upstream's own
``__call__`` code object, bound to a copy of its module globals in which the name
``dispatch_attention_fn`` resolves to :func:`route_attention`. Upstream passes its ``attention_mask``
argument verbatim to ``dispatch_attention_fn``; the accel processor passes a :class:`Route` there, and
:func:`route_attention` sends that call to the accel method. Every other dispatch (Wan's image-to-video
branch, for example) goes to diffusers' real ``dispatch_attention_fn`` unchanged. Nothing global is
modified: upstream modules, classes and the attention-backend registry stay as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from accel.methods.base import AttentionMethod
from accel.processors.context_parallel import ulysses_method_attention
from accel.processors.upstream import dispatch_attention_fn, rebind_dispatch

if TYPE_CHECKING:
    from accel.processors.state import LayerBinding

__all__ = ["Route", "route_attention", "rebind_core_attention", "AccelProcessorMixin", "BINDING_ATTR"]

# attribute set on each attention module by the root hook installer (state lives on the model)
BINDING_ATTR = "_accel_binding"


class Route(NamedTuple):
    """Carried through upstream's ``attention_mask`` argument to :func:`route_attention`.

    Attributes:
        method: the accel method to run, or ``None`` for upstream's own attention (diffusers'
            ``dispatch_attention_fn`` with ``mask``), used where an attention controller is active on
            a layer/step that the schedule keeps dense.
        binding: the layer binding (root-hook state and layer index) of the attention module.
        control: an attention controller (:class:`accel.control.Controller`) whose hooks wrap the
            call, or ``None``.
        mask: upstream's own ``attention_mask`` argument, passed on when ``method`` is ``None``.
    """

    method: AttentionMethod | None
    binding: LayerBinding
    control: Any = None
    mask: Any = None


def route_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    attention_kwargs: dict[str, Any] | None = None,
    *,
    backend=None,
    parallel_config=None,
) -> torch.Tensor:
    """Stand-in for diffusers' ``dispatch_attention_fn`` inside rebound upstream processor code.

    Same signature as ``dispatch_attention_fn``. When ``attn_mask`` is a :class:`Route`, runs
    ``route.method(query, key, value, layout, scale=scale)`` with the token layout recorded by the root
    hook (or, when ``route.method`` is ``None``, diffusers' ``dispatch_attention_fn`` with
    ``route.mask``); with a ``route.control``, that attention is wrapped by the controller's hooks
    (``route.control.attend``: rewrite Q/K/V, replace the operator, blend the output). Otherwise
    forwards every argument to diffusers' ``dispatch_attention_fn``.

    Under diffusers' context parallelism (``parallel_config`` with a ``ContextParallelConfig``) a routed
    method call runs inside diffusers' Ulysses attention on the whole sequence
    (:func:`accel.processors.context_parallel.ulysses_method_attention`).

    Raises:
        NotImplementedError: a routed call with dropout / causal masking, which accel methods do not
            implement, or an attention controller under context parallelism.
        ValueError: a routed call under ring attention (refused; Ulysses is the alternative).
    """
    if not isinstance(attn_mask, Route):
        return dispatch_attention_fn(
            query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=enable_gqa, attention_kwargs=attention_kwargs, backend=backend,
            parallel_config=parallel_config,
        )
    route = attn_mask
    parallel = parallel_config is not None and getattr(parallel_config, "context_parallel_config", None) is not None
    if parallel and route.control is not None:
        raise NotImplementedError(
            "attention controllers (accel.control, editing) do not support diffusers' context parallelism; "
            "edit on one GPU"
        )
    if route.method is None:
        def core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return dispatch_attention_fn(q, k, v, attn_mask=route.mask, dropout_p=dropout_p, is_causal=is_causal,
                                         scale=scale, enable_gqa=enable_gqa, attention_kwargs=attention_kwargs,
                                         backend=backend, parallel_config=parallel_config)
        if route.control is None:
            return core(query, key, value)
        return route.control.attend(query, key, value, route.binding, core)
    if dropout_p != 0.0 or is_causal:
        raise NotImplementedError(f"accel methods support neither dropout nor causal masks (dropout_p={dropout_p}, "
                                  f"is_causal={is_causal})")
    layout = route.binding.layout()
    if parallel:
        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return route.method(q, k, v, layout, scale=scale)
        return ulysses_method_attention(run, query, key, value, layout, scale, parallel_config)
    if route.control is None:
        out = route.method(query, key, value, layout, scale=scale)
    else:
        out = route.control.attend(query, key, value, route.binding,
                                   lambda q, k, v: route.method(q, k, v, layout, scale=scale))
    # optional accel.eval.recorder.DensityRecorder on the model's RunState; eager only (skipped when compiling)
    recorder = getattr(route.binding.run, "recorder", None)
    if recorder is not None and not torch.compiler.is_compiling():
        recorder.record_call(route.binding, route.method, query, key, value, layout, scale)
    return out


def rebind_core_attention(function):
    """A copy of upstream ``function`` whose global ``dispatch_attention_fn`` is :func:`route_attention`
    (:func:`accel.processors.upstream.rebind_dispatch`; raises ``RuntimeError`` if it no longer calls it)."""
    return rebind_dispatch(function, route_attention)


class AccelProcessorMixin:
    """State-free part of every accel processor: the method and the dense/sparse decision.

    The per-model state (token layout, step, schedule) is read from the attention module's
    ``_accel_binding`` attribute, set by :func:`accel.apply` or :func:`accel.processors.attach`, so one
    processor instance may serve several layers or models.
    """

    method: AttentionMethod

    def _init_method(self, method: AttentionMethod) -> None:
        if not isinstance(method, AttentionMethod):
            raise TypeError(
                f"method must be an accel attention method (e.g. accel.Dense()), got {type(method).__name__}"
            )
        self.method = method

    def _binding(self, attn: torch.nn.Module) -> LayerBinding:
        binding = getattr(attn, BINDING_ATTR, None)
        if binding is None:
            raise RuntimeError(
                f"{type(self).__name__} does not know the token layout of this attention call: its transformer has "
                "no accel root hook (or this module is not a self-attention layer accel supports). Install accel "
                "with accel.apply(pipe_or_transformer, method), or, after transformer.set_attn_processor(...), "
                "call accel.processors.attach(transformer)."
            )
        return binding

    def _control_route(self, binding: LayerBinding, attention_mask: Any) -> Route | None:
        """The :class:`Route` of a call that an attention controller wraps, or ``None`` (no controller, or
        not active on this layer at this step). Where the schedule keeps the layer dense the route runs
        upstream's attention (``method=None``) with upstream's ``attention_mask``."""
        control = binding.run.control
        if control is None or not control.active(binding):
            return None
        method = None if binding.is_dense() else self.method
        return Route(method, binding, control, attention_mask)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r})"

"""The attention controller: rules with explicit hook points, gated by a (step, layer) schedule.

A :class:`Controller` is installed on a pipeline (or transformer) of a supported family. In every
self-attention layer it selects, at every step its ``steps`` window admits, the accel processor hands
it the layer's rotated ``q, k, v`` (``[B, S, H, D]``, after QK-norm and RoPE) and the attention
operator (the installed accel method, or upstream's attention where none is installed / the layer
runs dense). The controller runs its rules' hooks in order:

1. :meth:`Rule.observe` -- look at ``q, k, v`` (e.g. to build an edit mask);
2. :meth:`Rule.rewrite_qkv` -- return new ``q, k, v`` (e.g. ConsistEdit's fusion);
3. :meth:`Rule.attention` -- wrap or replace the attention operator (e.g. MasaCtrl's mutual attention);
4. :meth:`Rule.blend_output` -- change the attention output ``[B, S, H, D]``;

and, once per denoising step, :meth:`Rule.blend_latents` on the pipeline's latents (through
:meth:`Controller.callback`, passed as the pipeline's ``callback_on_step_end``). For Wan, whose
self-attention holds no text, :meth:`Rule.observe_cross` sees the cross-attention (``attn2``)
queries and text keys, and :meth:`Rule.blend_cross_output` may change its output.

**Pairs.** Editing rules work on a batch of (source, target) pairs: rows ``0, 2, 4, ...`` are source
branches and rows ``1, 3, 5, ...`` their targets. Calling a pipeline with ``prompt=[source, target]``
gives exactly that, also with classifier-free guidance as two calls per step (each call holds one
pair) or as one batched call (``[uncond pair, cond pair]``). :func:`source_rows`, :func:`target_rows`
and :func:`with_target_rows` read and write the halves.

The step index is the root hook's: distinct timesteps of the current pipeline call, so two CFG
calls of one step share it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch

from accel.grid import TokenLayout

__all__ = [
    "AttentionCall",
    "Controller",
    "Rule",
    "source_rows",
    "target_rows",
    "with_target_rows",
]



@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """What a rule knows about one controlled attention call.

    Attributes:
        step: the denoising step index (0-based, distinct timesteps of this pipeline call).
        num_steps: the number of steps of the call (set by the caller or read from the pipeline), or ``None``.
        layer: the global self-attention layer index (see :mod:`accel.processors.families`).
        name: the attention module's path (e.g. ``"single_transformer_blocks.0.attn"``).
        layout: the :class:`~accel.grid.TokenLayout` of the call (vision tokens and the text span).
        family: ``"flux"``, ``"wan"`` or ``"hunyuan_video"``.
        context: the diffusers cache-context name of the transformer call (``"cond"``, ``"uncond"``) or ``None``.
        cross: True for a Wan cross-attention call (``observe_cross``), False for self-attention.
    """

    step: int
    num_steps: int | None
    layer: int
    name: str
    layout: TokenLayout
    family: str
    context: str | None = None
    cross: bool = False


def _check_pairs(x: torch.Tensor) -> None:
    if x.shape[0] % 2:
        raise ValueError(
            f"an editing rule needs (source, target) pairs in the batch (rows 0,2,4,... source, 1,3,5,... target), "
            f"got batch size {x.shape[0]}; call the pipeline with prompt=[source_prompt, target_prompt]"
        )


def source_rows(x: torch.Tensor) -> torch.Tensor:
    """The source rows (``0, 2, 4, ...``) of a paired batch ``x`` (a view)."""
    _check_pairs(x)
    return x[0::2]


def target_rows(x: torch.Tensor) -> torch.Tensor:
    """The target rows (``1, 3, 5, ...``) of a paired batch ``x`` (a view)."""
    _check_pairs(x)
    return x[1::2]


def with_target_rows(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A copy of paired batch ``x`` whose target rows are ``target`` (source rows untouched)."""
    _check_pairs(x)
    out = x.clone()
    out[1::2] = target
    return out


class Rule:
    """Base class of attention-control rules: every hook is the identity; override what you need.

    A rule may keep per-call state; :meth:`reset` is called when its controller is installed and by
    the caller between pipeline calls.
    """

    #: family name -> default layer filter (see :class:`Controller` ``layers``); ``None`` = all layers
    default_layers: dict[str, object] = {}
    #: True if the rule wants Wan cross-attention calls (:meth:`observe_cross`)
    wants_cross_attention: bool = False

    def reset(self) -> None:
        """Forget per-call state."""

    def observe(self, call: AttentionCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """See the layer's rotated ``q, k, v`` ``[B, S, H, D]`` before any rewrite."""

    def observe_cross(self, call: AttentionCall, q: torch.Tensor, k: torch.Tensor) -> None:
        """See a Wan cross-attention call: vision queries ``[B, S, H, D]``, text keys ``[B, L, H, D]``."""

    def rewrite_qkv(self, call: AttentionCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Return the ``(q, k, v)`` the attention should use (never modify the inputs in place)."""
        return q, k, v

    def attention(self, call: AttentionCall, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  operator: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Compute the attention output ``[B, S, H, D]``; ``operator(q, k, v)`` is the layer's own attention."""
        return operator(q, k, v)

    def blend_output(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        """Return the attention output to use (``[B, S, H, D]``)."""
        return out

    def blend_cross_output(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        """Return the Wan cross-attention (``attn2``) output to use, ``[B, S, C]`` (vision tokens, after the
        output projection); only called for rules with :attr:`wants_cross_attention`."""
        return out

    def blend_latents(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        """Return the latents to continue with after denoising step ``step`` (the pipeline's layout)."""
        return latents


def _check_steps(steps) -> tuple[int, int | None]:
    if steps is None:
        return (0, None)
    if isinstance(steps, range) and steps.step == 1:
        return (steps.start, steps.stop)
    if (isinstance(steps, tuple) and len(steps) == 2 and all(isinstance(s, int) and not isinstance(s, bool)
                                                             or s is None for s in steps)):
        start, stop = steps
        start = 0 if start is None else start
        if start >= 0 and (stop is None or stop >= start):
            return (start, stop)
    raise ValueError(f"steps must be None (all steps), a range with step 1 or a (start, stop) tuple of ints "
                     f"with 0 <= start <= stop (stop may be None), got {steps!r}")


class Controller:
    """Attention control on a Wan, HunyuanVideo or FLUX pipeline: rules run in the selected layers.

    Args:
        rules: the :class:`Rule` objects, run in this order at every hook.
        layers: which self-attention layers are controlled: ``"auto"`` (default: the
            ``default_layers`` entry for the model family of the first rule that has one, e.g. FLUX
            single-stream blocks for ConsistEdit; all layers when no rule has one), ``None`` (all), an
            int, an iterable of ints (global layer indices), a regular expression searched in the module path, or a callable
            ``(index, path) -> bool`` -- as the ``layers`` argument of :func:`accel.apply`.
        steps: which denoising steps are controlled: ``None`` (all, default), ``range(start, stop)``
            or a ``(start, stop)`` tuple (``stop`` may be ``None``).
        num_steps: the number of inference steps of the calls the controller will see (what rules
            use to turn fractions into step counts); ``None`` reads it from the pipeline at run time.

    Use :meth:`install` (or ``with controller.install(pipe):``) and pass :meth:`callback` as the
    pipeline's ``callback_on_step_end`` when a rule blends latents.
    """

    def __init__(self, rules: Iterable[Rule], *, layers="auto", steps=None, num_steps: int | None = None) -> None:
        rules = list(rules)
        if not rules or not all(isinstance(r, Rule) for r in rules):
            raise TypeError(f"rules must be a non-empty iterable of accel.control.Rule, got {rules!r}")
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
            raise ValueError(f"num_steps must be an int >= 1 or None, got {num_steps!r}")
        self.rules = rules
        self.layers = layers
        self.steps = _check_steps(steps)
        self.num_steps = num_steps
        self._runs: dict[int, tuple[frozenset[int], str]] = {}
        self._installed: list = []   # (run, handle we created or None, [torch hook handles])

    # ------------------------------------------------------------------ installation
    def install(self, pipe_or_transformer) -> Controller:
        """Install on a pipeline (its ``transformer`` and ``transformer_2``) or a transformer; returns self.

        Where no accel method is installed, installs accel's processors with upstream's attention
        (``accel.apply(..., accel.Dense(), schedule=Schedule(dense_layers=1.0))``, so uncontrolled calls are
        bit-identical to the stock model); otherwise composes with the installed method.

        Raises:
            ValueError: a diffusers caching hook that skips layer computations is active (FirstBlockCache,
                TaylorSeer, FasterCache, PyramidAttentionBroadcast, MagCache, ...); the controller is
                already installed; another controller is installed on the model.
            TypeError: an unsupported model.
        """
        from accel.methods.dense import Dense
        from accel.processors.apply import _select, _transformers_of, apply
        from accel.processors.families import family_of
        from accel.processors.state import get_root_hook
        from accel.schedule import Schedule

        if self._installed:
            raise ValueError("this Controller is already installed; call remove() first")
        transformers, _ = _transformers_of(pipe_or_transformer)
        for model in transformers:
            check_no_skipping_hooks(model)
            hook = get_root_hook(model)
            if hook is not None and hook.run.control is not None:
                raise ValueError(f"another attention controller is installed on this {type(model).__name__}; "
                                 "remove it first")
        own = None
        if any(get_root_hook(m) is None for m in transformers):
            if any(get_root_hook(m) is not None for m in transformers):
                raise ValueError("accel is installed on only some of the pipeline's transformers; remove it first")
            own = apply(pipe_or_transformer, Dense(), schedule=Schedule(dense_layers=1.0))
        try:
            for model in transformers:
                family = family_of(model)
                layers = self.layers
                if layers == "auto":
                    prefs = [r.default_layers[family.name] for r in self.rules if family.name in r.default_layers]
                    layers = prefs[0] if prefs else None
                chosen = frozenset(index for _, _, index in _select(family, model, layers))
                run = get_root_hook(model).run
                torch_hooks = []
                if family.name == "wan" and any(r.wants_cross_attention for r in self.rules):
                    for index, block in enumerate(model.blocks):
                        if index in chosen:
                            hook = _CrossObserver(self, run, index, f"blocks.{index}.attn2")
                            torch_hooks.append(block.attn2.register_forward_pre_hook(hook, with_kwargs=True))
                            torch_hooks.append(block.attn2.register_forward_hook(hook.blend))
                self._runs[id(run)] = (chosen, family.name)
                run.control = self
                self._installed.append((run, torch_hooks))
        except Exception:
            self._undo(own)
            raise
        self._own = own
        for rule in self.rules:
            rule.reset()
        return self

    def _undo(self, own) -> None:
        for run, torch_hooks in self._installed:
            for h in torch_hooks:
                h.remove()
            if run.control is self:
                run.control = None
        self._installed = []
        self._runs = {}
        if own is not None:
            own.remove()

    def remove(self) -> None:
        """Uninstall: processors installed by :meth:`install` are restored; an accel method applied
        before stays (idempotent)."""
        self._undo(getattr(self, "_own", None))
        self._own = None

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ------------------------------------------------------------------ per call
    def _step_ok(self, step: int) -> bool:
        start, stop = self.steps
        return step >= start and (stop is None or step < stop)

    def active(self, binding) -> bool:
        """True when the controller acts on this layer (a :class:`~accel.processors.state.LayerBinding`) now."""
        entry = self._runs.get(id(binding.run))
        return entry is not None and binding.layer in entry[0] and self._step_ok(max(binding.run.counter.step, 0))

    def _call(self, run, layer: int, name: str, cross: bool = False) -> AttentionCall:
        counter = run.counter
        num_steps = self.num_steps if self.num_steps is not None else counter.num_inference_steps
        return AttentionCall(max(counter.step, 0), num_steps, layer, name, run.layout, self._runs[id(run)][1],
                             counter.context_name, cross)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, binding,
               operator: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Run the rules' hooks around one attention call (called by the accel processors).

        Args:
            q, k, v: the layer's rotated queries, keys, values ``[B, S, H, D]``.
            binding: the attention module's :class:`~accel.processors.state.LayerBinding`.
            operator: the layer's own attention ``(q, k, v) -> out``.
        """
        call = self._call(binding.run, binding.layer, binding.name)
        for rule in self.rules:
            rule.observe(call, q, k, v)
        for rule in self.rules:
            q, k, v = rule.rewrite_qkv(call, q, k, v)
        op = operator
        for rule in self.rules:
            op = _bind_attention(rule, call, op)
        out = op(q, k, v)
        for rule in self.rules:
            out = rule.blend_output(call, out)
        return out

    def callback(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """A ``callback_on_step_end`` for diffusers pipelines: runs every rule's :meth:`Rule.blend_latents`.

        Pass ``callback_on_step_end=controller.callback`` (the pipeline's default
        ``callback_on_step_end_tensor_inputs=["latents"]`` provides the latents).
        """
        latents = callback_kwargs.get("latents")
        if latents is None:
            return {}
        for rule in self.rules:
            latents = rule.blend_latents(step, latents)
        return {"latents": latents}

    def __repr__(self) -> str:
        state = "installed" if self._installed else "not installed"
        return f"Controller({state}, rules={self.rules!r}, layers={self.layers!r}, steps={self.steps!r})"


def _bind_attention(rule: Rule, call: AttentionCall, inner):
    return lambda q, k, v: rule.attention(call, q, k, v, inner)


class _CrossObserver:
    """Forward pre-hook on a Wan ``attn2``: computes its queries and text keys as upstream does and
    hands them to the rules' :meth:`Rule.observe_cross` (the attention itself is not changed);
    :meth:`blend` is its forward hook, handing the output to :meth:`Rule.blend_cross_output`."""

    def __init__(self, controller: Controller, run, layer: int, name: str) -> None:
        self.controller, self.run, self.layer, self.name = controller, run, layer, name

    def __call__(self, module, args, kwargs) -> None:
        if not self.controller._step_ok(max(self.run.counter.step, 0)):
            return None
        from accel.processors.upstream import wan_qkv_projections

        names = ("hidden_states", "encoder_hidden_states")
        inputs = dict(zip(names, args, strict=False))
        inputs.update({n: kwargs[n] for n in names if n in kwargs})
        hidden, text = inputs.get("hidden_states"), inputs.get("encoder_hidden_states")
        if hidden is None or text is None:
            return None
        with torch.no_grad():
            if module.add_k_proj is not None:  # image-to-video: image tokens first, the last 512 are text
                text = text[:, text.shape[1] - 512:]
            q, k, _ = wan_qkv_projections(module, hidden, text)
            q = module.norm_q(q).unflatten(2, (module.heads, -1))
            k = module.norm_k(k).unflatten(2, (module.heads, -1))
            call = self.controller._call(self.run, self.layer, self.name, cross=True)
            for rule in self.controller.rules:
                rule.observe_cross(call, q, k)
        return None

    def blend(self, module, args, output):
        if not self.controller._step_ok(max(self.run.counter.step, 0)):
            return None
        call = self.controller._call(self.run, self.layer, self.name, cross=True)
        for rule in self.controller.rules:
            if rule.wants_cross_attention:
                output = rule.blend_cross_output(call, output)
        return output


def check_no_skipping_hooks(model: torch.nn.Module) -> None:
    """Raise ``ValueError`` if a diffusers hook that skips or reuses layer computations is on ``model``
    (:data:`accel.processors.upstream.SKIPPING_HOOKS`)."""
    from accel.processors.upstream import SKIPPING_HOOKS, hook_registry

    found = set()
    for module in model.modules():
        registry = hook_registry(module)
        if registry is None:
            continue
        for name in getattr(registry, "hooks", {}):
            if name in SKIPPING_HOOKS:
                found.add(SKIPPING_HOOKS[name])
    if found:
        raise ValueError(
            f"attention control needs every layer to run at every step, but {', '.join(sorted(found))} is active on "
            f"this {type(model).__name__} (it skips or reuses layer computations); disable it first "
            "(e.g. transformer.disable_cache())"
        )

"""`accel.apply` / `accel.remove`: install an attention method on a pipeline or transformer.

::

    handle = accel.apply(pipe, accel.Dense(), schedule=accel.Schedule(dense_steps=0.25))
    video = pipe(prompt).frames
    handle.remove()                    # previous processors restored exactly

    with accel.apply(pipe, method):    # or as a context manager
        video = pipe(prompt).frames
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

from accel.methods.base import AttentionMethod
from accel.methods.preset import Preset
from accel.processors.base import BINDING_ATTR, AccelProcessorMixin
from accel.processors.context_parallel import carry_dispatch_settings
from accel.processors.families import Family, family_of
from accel.processors.parallelize import prepare_model
from accel.processors.state import (
    ROOT_HOOK_NAME,
    LayerBinding,
    RootHook,
    RunState,
    StepCounter,
    get_root_hook,
    register_root_hook,
)
from accel.processors.token_order import BLOCK_SPECS, WholeModelOrder
from accel.processors.upstream import hook_registry
from accel.schedule import Schedule

__all__ = ["apply", "remove", "attach", "AccelHandle"]

LayerFilter = None | int | str | Iterable[int] | Callable[[int, str], bool]


class AccelHandle:
    """What :func:`apply` (or :func:`attach`) installed; removes it again.

    Usable as a context manager: leaving the ``with`` block calls :meth:`remove`.

    Attributes:
        method: the installed method (``None`` for :func:`attach`).
        schedule: the :class:`~accel.schedule.Schedule`.
        transformers: the transformers it was installed on.
        layers: ``{transformer index: [module path, ...]}`` of the attention modules whose processor
            was replaced.
    """

    def __init__(self, method, schedule, counter: StepCounter) -> None:
        self.method = method
        self.schedule = schedule
        self.transformers: list[torch.nn.Module] = []
        self.layers: dict[int, list[str]] = {}
        self._counter = counter
        self._runs: list[RunState] = []
        self._saved: list[list[tuple[torch.nn.Module, object]]] = []
        self._bound: list[list[torch.nn.Module]] = []
        self._removed = False

    # ------------------------------------------------------------------ step control
    @property
    def step(self) -> int:
        """The current step index (-1 before the first transformer call of a pipeline call)."""
        return self._counter.step

    @property
    def num_inference_steps(self) -> int | None:
        """Number of steps of the current call, when known; settable (an int >= 1, or None to read it
        from the pipeline again) for schedules with fractions or last steps on a bare transformer."""
        return self._counter.num_inference_steps

    @num_inference_steps.setter
    def num_inference_steps(self, value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"num_inference_steps must be an int >= 1 or None, got {value!r}")
        self._counter.user_num_inference_steps = value
        self._counter.num_inference_steps = value
        self._counter._notify()

    def set_step(self, step: int, num_inference_steps: int | None = None) -> None:
        """Set the step index by hand (compiled transformers called outside a pipeline).

        Args:
            step: the step index, an int >= 0.
            num_inference_steps: the call's number of steps (int >= 1), or ``None`` to keep it.
        """
        self._counter.set_step(step, num_inference_steps)

    def reset(self) -> None:
        """Restart step counting (the next transformer call is step 0)."""
        self._counter.reset()

    def set_image_grid(self, height: int, width: int) -> None:
        """Tell FLUX transformers the image grid (in tokens) for calls traced by ``torch.compile``.

        Args:
            height: image height in tokens (pixels / 16 for FLUX.1), an int >= 1.
            width: image width in tokens, an int >= 1.
        """
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1 (tokens), got {value!r}")
        for run in self._runs:
            run.grid_by_tokens[height * width] = (1, height, width)

    @property
    def token_layout(self):
        """The TokenLayout recorded by the last transformer call (of the first transformer)."""
        return self._runs[0].layout if self._runs else None

    # ------------------------------------------------------------------ removal
    def remove(self) -> None:
        """Restore the previous processors and remove the root hooks (idempotent).

        The restored processors are the same objects as before; they take over the attention backend
        and parallel config diffusers set on accel's processors meanwhile (``set_attention_backend``,
        ``enable_parallelism`` after :func:`apply`), so they keep computing what the model now asks for.
        """
        if self._removed:
            return
        for model, saved, bound, run in zip(self.transformers, self._saved, self._bound, self._runs, strict=True):
            for module, processor in saved:
                # settings diffusers gave our processor meanwhile (enable_parallelism, set_attention_backend)
                carry_dispatch_settings(module.processor, processor)
                module.set_processor(processor)
            for module in bound:
                if getattr(module, BINDING_ATTR, None) is not None and module._accel_binding.run is run:
                    delattr(module, BINDING_ATTR)
            if run.token_order is not None:
                run.token_order.remove()
                run.token_order = None
            registry = hook_registry(model)
            if registry is not None and registry.get_hook(ROOT_HOOK_NAME) is not None:
                registry.remove_hook(ROOT_HOOK_NAME, recurse=False)
            if getattr(model, "_accel_handle", None) is self:
                del model._accel_handle
            self._counter.remove_listener(run)
        self._removed = True

    def __enter__(self) -> AccelHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "removed" if self._removed else "installed"
        names = ", ".join(type(t).__name__ for t in self.transformers)
        return f"AccelHandle({state}, method={self.method!r}, schedule={self.schedule!r}, transformers=[{names}])"


def _transformers_of(target) -> tuple[list[torch.nn.Module], object]:
    """(transformers, pipeline or None) of a pipeline or a transformer."""
    if isinstance(target, torch.nn.Module):
        family_of(target)
        return [target], None
    found = [getattr(target, name, None) for name in ("transformer", "transformer_2")]
    found = [t for t in found if isinstance(t, torch.nn.Module)]
    if not found:
        raise TypeError(
            f"accel needs a diffusers pipeline with a .transformer or a transformer module, got "
            f"{type(target).__name__}"
        )
    for t in found:
        family_of(t)
    return found, target


def _select(family: Family, model: torch.nn.Module, layers: LayerFilter) -> list[tuple[str, torch.nn.Module, int]]:
    modules = family.attention_modules(model)
    if layers is None:
        return modules
    if isinstance(layers, bool):
        raise TypeError(f"layers must be None, an int, a regex string, ints or a callable, got {layers!r}")
    if isinstance(layers, int):
        keep = [m for m in modules if m[2] == layers]
    elif isinstance(layers, str):
        try:
            regex = re.compile(layers)
        except re.error as err:
            raise ValueError(f"layers={layers!r} is not a valid regular expression: {err}") from None
        keep = [m for m in modules if regex.search(m[0])]
    elif callable(layers):
        keep = [m for m in modules if layers(m[2], m[0])]
    else:
        try:
            wanted = set(layers)
        except TypeError:
            raise TypeError(
                f"layers must be None, an int, a regex string, an iterable of ints or a callable(index, name), "
                f"got {type(layers).__name__}"
            ) from None
        bad = [x for x in wanted if isinstance(x, bool) or not isinstance(x, int)]
        if bad:
            raise TypeError(f"layers must hold ints (global layer indices), got {sorted(map(repr, bad))}")
        out_of_range = sorted(x for x in wanted if not 0 <= x < len(modules))
        if out_of_range:
            raise ValueError(
                f"layers {out_of_range} are out of range: {type(model).__name__} has {len(modules)} self-attention "
                f"layers (indices 0..{len(modules) - 1})"
            )
        keep = [m for m in modules if m[2] in wanted]
    if not keep:
        raise ValueError(
            f"layers={layers!r} matches none of the {len(modules)} self-attention layers of {type(model).__name__} "
            f"(e.g. {modules[0][0]!r} is index 0; names: {', '.join(m[0] for m in modules[:4])}, ...)"
        )
    return keep


def _install(handle: AccelHandle, model, family: Family, counter: StepCounter, schedule: Schedule,
             replace: list[tuple[str, torch.nn.Module, int]] | None, permute_once: bool = True) -> None:
    if get_root_hook(model) is not None:
        raise ValueError(
            f"accel is already installed on this {type(model).__name__}; call handle.remove() or "
            "accel.remove(model) first"
        )
    targets = family.attention_modules(model)
    modules = [module for _, module, _ in targets]
    prepare_model(model, modules, runs_methods=bool(replace) or any(
        isinstance(m.processor, AccelProcessorMixin) for m in modules))
    run = RunState(counter, schedule, num_layers=len(targets), modules=modules)
    counter.add_listener(run)
    saved: list = []
    # bookkeeping first, so that handle.remove() can undo a partial installation
    handle.transformers.append(model)
    handle.layers[len(handle.transformers) - 1] = [name for name, _, _ in (replace or [])]
    handle._runs.append(run)
    handle._saved.append(saved)
    handle._bound.append([module for _, module, _ in targets])
    model._accel_handle = handle
    for _, module, _ in replace or ():
        previous = module.processor
        saved.append((module, previous))
        processor = family.processor_cls(handle.method)
        carry_dispatch_settings(previous, processor)  # same backend, same context parallelism
        module.set_processor(processor)
    for name, module, index in targets:
        setattr(module, BINDING_ATTR, LayerBinding(run, index, name))
    run.permute_once = permute_once
    spec = BLOCK_SPECS.get(family.name)
    if spec is not None and handle.method is not None and replace:
        run.token_order = WholeModelOrder(model, spec, run, handle.method,
                                          covers_all_layers=len(replace) == len(targets))
    register_root_hook(model, RootHook(family, run))


def apply(
    pipe_or_transformer,
    method: AttentionMethod | Preset,
    *,
    schedule: Schedule | None = None,
    layers: LayerFilter = None,
    permute_once: bool = True,
) -> AccelHandle:
    """Run ``method`` in the self-attention layers of a Wan, HunyuanVideo or FLUX model.

    Installs a root hook on each transformer (it records the token layout and counts steps) and an
    accel processor (a subclass of the upstream one) on each selected self-attention layer.

    Args:
        pipe_or_transformer: a diffusers pipeline with a ``transformer`` (and for Wan 2.2 a
            ``transformer_2``, which gets the same method and shares the step counter), or the
            transformer itself (``WanTransformer3DModel``, ``HunyuanVideoTransformer3DModel``,
            ``FluxTransformer2DModel``). Passing the pipeline lets schedules with step fractions or
            last steps read its number of inference steps.
        method: the attention method, an :class:`accel.methods.AttentionMethod` (e.g. ``accel.Dense()``),
            or a :class:`~accel.methods.preset.Preset` (``accel.Radial.preset("wan2.1-t2v-1.3b")``): its
            method with its schedule.
        schedule: where to keep dense (upstream) attention; default ``Schedule()`` (nowhere), or the
            preset's schedule when ``method`` is a preset (a different ``schedule`` is then an error).
        layers: which self-attention layers get the method (the others keep their processor):
            ``None`` (all), an int or an iterable of ints (global layer indices, see
            :mod:`accel.processors.families`), a regular expression searched in the module path
            (e.g. ``"single_transformer_blocks"``), or a callable ``(index, path) -> bool``.
        permute_once: when the method runs in its own token order (tiled patterns), gather the hidden
            states into that order once per transformer call instead of once per attention call,
            whenever every self-attention layer runs the method at that step (default True; the
            output is the same, see :mod:`accel.processors.token_order`). ``False``: always per layer.

    Returns:
        An :class:`AccelHandle`; ``handle.remove()`` (or leaving ``with handle:``) restores the
        previous processors exactly.

    Context parallelism: on a transformer running diffusers' Ulysses attention
    (``enable_parallelism(config=ContextParallelConfig(ulysses_degree=N))``, before or after this call;
    see :func:`accel.processors.enable_context_parallel`) each method runs on the whole sequence for
    the rank's share of the heads, and dense layers keep diffusers' parallel attention. Ring attention
    is refused (here, or at the first call when enabled afterwards).

    Raises:
        TypeError: unsupported model (the message lists the supported ones), wrong argument types.
        ValueError: ``layers`` matches no layer or names one out of range; accel already installed; a
            ``schedule`` that differs from the given preset's; the transformer runs diffusers' ring
            attention, or a Ulysses degree that does not divide its head count.
    """
    if isinstance(method, Preset):
        if schedule is not None and schedule != method.schedule:
            raise ValueError(f"schedule={schedule!r} conflicts with the preset's schedule {method.schedule!r}; "
                             "pass the preset alone, or its .method with the schedule you want")
        method, schedule = method.method, method.schedule
    if not isinstance(method, AttentionMethod):
        raise TypeError(f"method must be an accel attention method (e.g. accel.Dense()), got {type(method).__name__}")
    if not isinstance(permute_once, bool):
        raise TypeError(f"permute_once must be a bool, got {permute_once!r}")
    if schedule is None:
        schedule = Schedule()
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an accel.Schedule or None, got {type(schedule).__name__}")
    transformers, pipe = _transformers_of(pipe_or_transformer)
    plans = []
    for model in transformers:
        family = family_of(model)
        plans.append((model, family, _select(family, model, layers)))
    counter = StepCounter(pipe)
    handle = AccelHandle(method, schedule, counter)
    try:
        for model, family, chosen in plans:
            _install(handle, model, family, counter, schedule, chosen, permute_once)
    except Exception:
        handle.remove()
        raise
    return handle


def attach(pipe_or_transformer, *, schedule: Schedule | None = None) -> AccelHandle:
    """Install only the root hook (token layout, step counting) for processors set by hand.

    For users who install accel processors themselves with ``transformer.set_attn_processor(...)``
    (e.g. :class:`~accel.processors.AccelWanAttnProcessor` on some layers). Arguments as in
    :func:`apply`; the handle's :meth:`~AccelHandle.remove` removes the hook and leaves the
    processors as they are.
    """
    if schedule is None:
        schedule = Schedule()
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an accel.Schedule or None, got {type(schedule).__name__}")
    transformers, pipe = _transformers_of(pipe_or_transformer)
    counter = StepCounter(pipe)
    handle = AccelHandle(None, schedule, counter)
    try:
        for model in transformers:
            _install(handle, model, family_of(model), counter, schedule, None)
    except Exception:
        handle.remove()
        raise
    return handle


def remove(pipe_or_transformer) -> bool:
    """Remove whatever :func:`apply` / :func:`attach` installed on a pipeline or transformer.

    Returns:
        True if something was removed, False if accel was not installed.
    """
    transformers, _ = _transformers_of(pipe_or_transformer)
    removed = False
    for model in transformers:
        handle = getattr(model, "_accel_handle", None)
        if handle is not None:
            handle.remove()
            removed = True
    return removed

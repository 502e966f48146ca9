"""Per-model state of an accel installation: the root hook, the step counter, the layer bindings.

Everything lives on the model (the hook in diffusers' ``HookRegistry`` of the transformer, a
:class:`LayerBinding` on each attention module), never in globals or ``ContextVar``\\ s, so two
pipelines in one process do not interfere and ``torch.compile(transformer, fullgraph=True)`` traces
through it.

Step counting. The step index is the number of distinct timesteps seen since the pipeline call
began, minus one. Two sources feed it, both outside any compiled graph:

* diffusers' ``transformer.cache_context(name, ...)``, which every Wan / HunyuanVideo / FLUX pipeline
  wraps around each transformer call: the hook's :class:`ContextWatcher` (a ``StateManager``) is told
  the context eagerly. The step key is the context's ``step_index`` (Wan), else the pipeline's
  ``current_timestep`` (when :func:`accel.apply` was given the pipeline), else the context's name (a
  new step starts each time the first context name of the call, e.g. ``"cond"``, comes again).
* without a context (a transformer called directly), the root hook compares the ``timestep``
  argument with the previous one (eager mode only; a compiled transformer needs the context or
  :meth:`StepCounter.set_step`).

The counter restarts at the end of every pipeline call (diffusers calls ``reset_state`` of stateful
hooks in ``maybe_free_model_hooks``) and when a context reports ``step_index == 0``.
"""

from __future__ import annotations

import inspect
import weakref
from typing import Any

import torch

from accel.grid import STEP_KEY, TokenLayout
from accel.processors.base import AccelProcessorMixin
from accel.processors.context_parallel import check_same_inputs, context_parallel_config
from accel.processors.parallelize import prepare_model
from accel.processors.upstream import HookRegistry, ModelHook, StateManager, hook_registry
from accel.schedule import Schedule

__all__ = ["StepCounter", "RunState", "LayerBinding", "RootHook", "ContextWatcher", "ROOT_HOOK_NAME"]

ROOT_HOOK_NAME = "accel_root"


def _timestep_key(timestep: Any) -> tuple:
    """A hashable fingerprint of a timestep argument (scalar, [B] or per-token [B, S]); syncs once."""
    if isinstance(timestep, torch.Tensor):
        t = timestep.detach()
        if t.numel() <= 8:
            return ("t",) + tuple(float(x) for x in t.flatten().tolist())
        t = t.float()
        return ("t",) + tuple(float(x) for x in torch.stack((t.amax(), t.amin(), t.sum())).tolist())
    if isinstance(timestep, (int, float)):
        return ("t", float(timestep))
    return ("t", repr(timestep))


class StepCounter:
    """Counts denoising steps of one pipeline call; shared by the transformers of one installation.

    Attributes:
        step: the current step index (-1 before the first transformer call of a pipeline call).
        num_inference_steps: the number of steps of the current call when known (from the pipeline,
            the cache context, or set by the user), else ``None``.
        context_name: the name of the diffusers cache context of the current transformer call
            (``"cond"``, ``"uncond"``, ...), or ``None`` outside a context.
    """

    def __init__(self, pipeline=None) -> None:
        self.step = -1
        self.num_inference_steps: int | None = None
        self.user_num_inference_steps: int | None = None
        self._last_key: tuple | None = None
        self._first_context: str | None = None
        self.context_active = False
        self.context_name: str | None = None
        self._pipeline = weakref.ref(pipeline) if pipeline is not None else None
        self._listeners: list[RunState] = []

    # ------------------------------------------------------------------ observers
    def add_listener(self, run: RunState) -> None:
        self._listeners.append(run)

    def remove_listener(self, run: RunState) -> None:
        self._listeners = [r for r in self._listeners if r is not run]

    def _notify(self) -> None:
        for run in self._listeners:
            run.refresh_dense_layers()

    # ------------------------------------------------------------------ counting
    def reset(self) -> None:
        """Forget the current pipeline call: the next transformer call is step 0."""
        self.step = -1
        self._last_key = None
        self._first_context = None
        self.num_inference_steps = None
        self._notify()

    def set_step(self, step: int, num_inference_steps: int | None = None) -> None:
        """Set the step index by hand (for transformers called outside a pipeline, e.g. compiled ones).

        Args:
            step: the step index, an int >= 0.
            num_inference_steps: the number of steps of the call (int >= 1), or ``None`` to keep it.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if num_inference_steps is not None:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be an int >= 1 or None, got {num_inference_steps!r}")
            self.num_inference_steps = num_inference_steps
        self.step = step
        self._last_key = ("manual", step)
        self._notify()

    def observe(self, key: tuple) -> None:
        """Advance the step when ``key`` differs from the previous call's key."""
        if key != self._last_key:
            self._last_key = key
            self.step += 1
            self._refresh_num_steps()
            self._notify()

    def _refresh_num_steps(self) -> None:
        if self.user_num_inference_steps is not None:
            self.num_inference_steps = self.user_num_inference_steps
            return
        pipe = self._pipeline() if self._pipeline is not None else None
        if pipe is not None:
            n = getattr(pipe, "num_timesteps", None)  # public property; AttributeError before the first call
            if isinstance(n, int) and n > 0:
                self.num_inference_steps = n

    def on_context(self, context) -> None:
        """Called (eagerly) when diffusers sets or clears a cache context on the transformer."""
        if context is None:
            self.context_active = False
            self.context_name = None
            return
        self.context_active = True
        self.context_name = context.name
        if context.num_inference_steps is not None and self.user_num_inference_steps is None:
            self.num_inference_steps = int(context.num_inference_steps)
        if context.step_index is not None:
            if context.step_index == 0 and self.step > 0:
                self.reset()
            self.observe(("step_index", int(context.step_index)))
            return
        pipe = self._pipeline() if self._pipeline is not None else None
        timestep = getattr(pipe, "current_timestep", None) if pipe is not None else None
        if timestep is None:
            timestep = context.timestep
        if timestep is not None:
            self.observe(_timestep_key(timestep))
            return
        if self._first_context is None or context.name == self._first_context:
            self._first_context = context.name
            self.observe(("context", self.step + 1))


class RunState:
    """State of one transformer: the current token layout and which layers run dense now.

    Attributes:
        counter: the shared :class:`StepCounter`.
        schedule: the :class:`~accel.schedule.Schedule`.
        num_layers: number of self-attention layers of the transformer (global indices ``0 ..
            num_layers - 1``).
        modules: the self-attention modules bound to this state, by layer index.
        layout: the :class:`~accel.grid.TokenLayout` of the current forward call (``None`` before the
            first call).
        dense_layers: frozenset of the layer indices that run dense at the current step.
        control: the attention controller (:class:`accel.control.Controller`) installed on this
            transformer, or ``None``; the processors hand it the layers and steps it is active on.
        permute_once: whether eligible forwards run in the method's token order
            (:mod:`accel.processors.token_order`); ``token_order`` holds those hooks (or ``None``).
    """

    def __init__(self, counter: StepCounter, schedule: Schedule, num_layers: int, modules=()) -> None:
        self.counter = counter
        self.schedule = schedule
        self.num_layers = num_layers
        self.modules = list(modules)
        self.layout: TokenLayout | None = None
        self.grid_by_tokens: dict[int, tuple[int, int, int]] = {}
        self.dense_layers: frozenset[int] = frozenset()
        self.control = None
        #: run each eligible forward in the method's token order (see accel.processors.token_order)
        self.permute_once = True
        #: the transformer's WholeModelOrder hooks, or None
        self.token_order = None
        self.refresh_dense_layers()

    def refresh_dense_layers(self) -> None:
        """Recompute :attr:`dense_layers` for the counter's step (kept as the same object if unchanged,
        so compiled graphs guarding on it are not invalidated)."""
        step = max(self.counter.step, 0)
        if self.schedule.needs_num_steps and self.counter.num_inference_steps is None and self.counter.step < 0:
            new = frozenset(range(self.num_layers)) if self.schedule.dense_steps else frozenset()
        else:
            new = self.schedule.dense_layer_set(step, self.counter.num_inference_steps, self.num_layers)
        if new != self.dense_layers:
            self.dense_layers = new


class LayerBinding:
    """What an accel processor needs from its attention module: the run state and the layer index.

    Attributes:
        run: the transformer's :class:`RunState`.
        layer: the global self-attention layer index of the module.
        name: the module's path in the transformer (e.g. ``"single_transformer_blocks.3.attn"``).
    """

    def __init__(self, run: RunState, layer: int, name: str) -> None:
        self.run = run
        self.layer = layer
        self.name = name

    def is_dense(self) -> bool:
        """True when the schedule says this layer runs dense attention at the current step."""
        return self.layer in self.run.dense_layers

    def layout(self) -> TokenLayout:
        """The token layout of the current transformer call; raises if none was recorded."""
        layout = self.run.layout
        if layout is None:
            raise RuntimeError(
                f"no token layout is recorded for {self.name}: the attention module was called outside its "
                "transformer's forward; call the transformer (its accel root hook records the layout)"
            )
        return layout

    def __repr__(self) -> str:
        return f"LayerBinding(layer={self.layer}, name={self.name!r})"


class ContextWatcher(StateManager):
    """A ``StateManager`` through which diffusers' ``cache_context`` reaches the step counter eagerly."""

    def __init__(self, counter: StepCounter) -> None:
        super().__init__(dict)
        self._counter = counter

    def set_context(self, context) -> None:
        super().set_context(context)
        self._counter.on_context(context)


class RootHook(ModelHook):
    """diffusers ``ModelHook`` on the transformer root: records the token layout and counts steps.

    As a stateful diffusers hook it is reset by the pipeline at the end of every call and receives
    the pipeline's cache contexts. The per-call recording runs in a PyTorch forward pre-hook that
    :meth:`initialize_hook` adds to the module (``register_forward_pre_hook(with_kwargs=True)``)
    rather than in a replaced ``forward``, so it survives tools that swap ``module.forward`` after
    accel is installed (accelerate's offloading hooks restore the forward they saw when they are
    re-installed at the end of each offloaded pipeline call).

    Args:
        family: the model-family adapter (:mod:`accel.processors.families`) that reads the layout
            from the forward arguments.
        run: the transformer's :class:`RunState`.
    """

    _is_stateful = True

    def __init__(self, family, run: RunState) -> None:
        super().__init__()
        self.family = family
        self.run = run
        self.watcher = ContextWatcher(run.counter)
        self._param_names: tuple[str, ...] = ()
        self._torch_hook = None

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        params = list(inspect.signature(type(module).forward).parameters)
        self._param_names = tuple(params[1:])
        self._torch_hook = module.register_forward_pre_hook(self.record, with_kwargs=True)
        return module

    def deinitalize_hook(self, module: torch.nn.Module) -> torch.nn.Module:  # (sic) diffusers' spelling
        if self._torch_hook is not None:
            self._torch_hook.remove()
            self._torch_hook = None
        return module

    def record(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook: record the call's TokenLayout; count the step when no cache context is active.

        It runs before diffusers' own hooks (``enable_parallelism``'s split of the inputs), so the
        layout is always the whole sequence's. Under context parallelism (eager calls) it also
        reconciles the processors with the model's parallel config and checks that every rank of
        the group passed the same latents (:mod:`accel.processors.context_parallel`)."""
        inputs = dict(zip(self._param_names, args, strict=False))
        inputs.update(kwargs)
        if not torch.compiler.is_compiling():  # context parallelism enabled before or after accel
            modules = self.run.modules
            prepare_model(module, modules, runs_methods=any(isinstance(m.processor, AccelProcessorMixin)
                                                            for m in modules))
            cp = context_parallel_config(module)
            if cp is not None and isinstance(inputs.get("hidden_states"), torch.Tensor):
                check_same_inputs(cp, inputs["hidden_states"])
        self.run.layout = self.family.token_layout(module, inputs, self.run)
        if self.run.token_order is not None:
            self.run.token_order.observe_inputs(inputs)
        counter = self.run.counter
        if not counter.context_active:
            if torch.compiler.is_compiling():
                if self.run.schedule.depends_on_step:
                    raise RuntimeError(
                        "a compiled transformer called outside a diffusers pipeline cannot count denoising steps "
                        "(the timestep is a tensor); wrap each call in `with transformer.cache_context('cond'):` "
                        "or set the step with handle.set_step(i) before each call"
                    )
            else:
                counter.observe(_timestep_key(inputs.get("timestep")))
        if not torch.compiler.is_compiling():  # methods with step-dependent rules read it (Agent's phases)
            self.run.layout.cache[STEP_KEY] = (max(counter.step, 0), counter.num_inference_steps)
        return None

    def reset_state(self, module: torch.nn.Module) -> torch.nn.Module:
        self.run.counter.reset()
        self.run.layout = None
        return module


def get_root_hook(module: torch.nn.Module) -> RootHook | None:
    """The accel root hook of ``module``, or ``None``."""
    registry = hook_registry(module)
    if registry is None:
        return None
    return registry.get_hook(ROOT_HOOK_NAME)


def register_root_hook(module: torch.nn.Module, hook: RootHook) -> None:
    """Register ``hook`` on ``module``'s diffusers hook registry under :data:`ROOT_HOOK_NAME`."""
    HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, ROOT_HOOK_NAME)

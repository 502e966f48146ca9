"""Every contact point of accel with diffusers, in one module, checked when accel's processors are imported.

The rest of accel imports diffusers' classes and functions from here. Besides diffusers' public classes
(the transformers, the attention processors, the hook registry), accel relies on behaviour that is not a
documented API. Each reliance, with what accel assumes:

1. **Positional call of upstream's processors.** accel's processors subclass ``WanAttnProcessor``,
   ``HunyuanVideoAttnProcessor2_0`` and ``FluxAttnProcessor`` and call ``super().__call__(attn,
   hidden_states, encoder_hidden_states, attention_mask, <rotary embedding>)`` positionally: the first
   parameters of upstream's ``__call__`` are these, in this order (:data:`PROCESSOR_PARAMETERS`).
2. **The attention mask passes through untouched.** Upstream's ``__call__`` calls the module global
   ``dispatch_attention_fn`` (so a copy of the function with that global rebound,
   :func:`rebind_dispatch`, reaches accel) and hands it its ``attention_mask`` argument without assigning
   it: accel carries its routing object there.
3. **dispatch_attention_fn's parameters** (:data:`DISPATCH_PARAMETERS`): accel's stand-in,
   :func:`accel.processors.base.route_attention`, takes the same ones and forwards them.
4. **Hooks.** ``HookRegistry.check_if_exists_or_initialize(module)``, ``register_hook(hook, name)``,
   ``get_hook(name)``, ``remove_hook(name, recurse=...)``, the ``hooks`` dict, the registry kept as the
   module attribute ``_diffusers_hook`` (:func:`hook_registry`); ``ModelHook``'s callbacks
   ``initialize_hook``, ``deinitalize_hook`` (diffusers' spelling), ``reset_state`` and its
   ``_is_stateful`` flag.
5. **Cache contexts reach stateful hooks by an attribute scan.** ``transformer.cache_context(...)``
   calls ``diffusers.hooks.hooks._set_cache_context``, which calls ``set_context(context)`` on every
   ``StateManager`` found in ``vars(hook)`` of each stateful hook; accel's root hook keeps a
   ``StateManager`` subclass as an attribute to be told (:class:`accel.processors.state.ContextWatcher`).
   The context's fields ``name``, ``step_index``, ``num_inference_steps`` and ``timestep`` are read.
6. **Transformer forward arguments** accel's root hook reads by name (:data:`FORWARD_PARAMETERS`), and the
   module paths of the self-attention layers (:mod:`accel.processors.families`; not checked here: a
   model with other paths gets no accel processor and :func:`accel.apply` says so).
7. **Wan's ``_get_qkv_projections(attn, hidden_states, encoder_hidden_states)``**, with which attention
   control observes Wan's cross-attention (:mod:`accel.control.controller`).
8. **Names of the caching hooks that skip layer computations** (:data:`SKIPPING_HOOKS`, read from
   diffusers' own module constants): attention control refuses to run under them.
9. **Pipeline properties** ``num_timesteps`` and ``current_timestep`` (public properties of diffusers'
   Wan, HunyuanVideo and FLUX pipelines; ``num_timesteps`` raises ``AttributeError`` before the first
   call), read with a fallback when absent (not checked: a missing one only loses a hint for step counting).

10. **Context parallelism** (:mod:`accel.processors.context_parallel`, :mod:`accel.processors.parallelize`).
    ``model.enable_parallelism(config=..., cp_plan=...)`` records a ``ParallelConfig`` as the model's
    ``_parallel_config`` and gives it to every processor that keeps a ``_parallel_config`` attribute;
    processors pass ``self._attention_backend`` and ``self._parallel_config`` to ``dispatch_attention_fn``
    (:data:`DISPATCH_SETTINGS`). The split hooks of a ``_cp_plan`` (Wan's and FLUX's; HunyuanVideo has
    none) cut each span of tokens with ``tensor.chunk`` (``tensor_split`` with ``ulysses_anything``) and
    are diffusers hooks, so accel's root hook, a torch forward pre-hook, sees the unsplit inputs.
    :data:`templated_context_parallel_attention` (``_templated_context_parallel_attention``) runs the
    Ulysses all-to-alls around ``forward_op(ctx, query, key, value, attn_mask, dropout_p, is_causal,
    scale, enable_gqa, return_lse, _save_ctx=..., _parallel_config=...)``, whose inputs are the ranks'
    local sequences concatenated in rank order. Read from ``ContextParallelConfig``: ``ring_degree``,
    ``ulysses_degree``, ``ulysses_anything``, ``ring_anything`` and, after setup, ``_ulysses_mesh`` and
    ``_flattened_mesh`` (:data:`CONTEXT_PARALLEL_FIELDS`). ``ModelMixin._resolve_parallel_config``
    places rank ``r`` on device ``r % torch.accelerator.device_count()`` (a division by zero without an
    accelerator).

11. **Transformer blocks' leading parameters** (:data:`BLOCK_PARAMETERS`): whole-model token order
    (:mod:`accel.processors.token_order`) reads and replaces the hidden states, rotary tables and
    per-token embeddings a block receives, by position (the models call their blocks positionally,
    FLUX by keyword).

:func:`check` verifies 1-5, 6 (argument names), 7, 8, 10 (names, signatures, fields; the token
order after the all-to-all is checked by tests/processors/test_context_parallel.py) and 11; importing this
module runs it and raises one
``ImportError`` listing every difference and naming :data:`SUPPORTED_DIFFUSERS`.
"""

from __future__ import annotations

import dataclasses
import dis
import functools
import importlib
import inspect
import types

#: The diffusers versions accel supports (pyproject.toml), and the one it is tested with (constraints.txt).
SUPPORTED_DIFFUSERS = ">=0.42.1"
TESTED_DIFFUSERS = "0.42.1"

try:
    import diffusers
    from diffusers import ContextParallelConfig, FluxTransformer2DModel, HunyuanVideoTransformer3DModel, WanTransformer3DModel
    from diffusers.hooks import HookRegistry, ModelHook
    from diffusers.hooks import hooks as _hooks_module
    from diffusers.hooks.hooks import StateManager
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
    from diffusers.models.attention_dispatch import _templated_context_parallel_attention as templated_context_parallel_attention
    from diffusers.models.attention_dispatch import dispatch_attention_fn
    from diffusers.models.modeling_utils import ModelMixin
    from diffusers.models.transformers.transformer_flux import (
        FluxAttnProcessor,
        FluxSingleTransformerBlock,
        FluxTransformerBlock,
    )
    from diffusers.models.transformers.transformer_hunyuan_video import (
        HunyuanVideoAttnProcessor2_0,
        HunyuanVideoSingleTransformerBlock,
        HunyuanVideoTransformerBlock,
    )
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanTransformerBlock
    from diffusers.models.transformers.transformer_wan import _get_qkv_projections as wan_qkv_projections
except ImportError as exc:  # not installed, or a version without one of these names
    raise ImportError(
        f"accel.processors needs diffusers {SUPPORTED_DIFFUSERS} (tested with {TESTED_DIFFUSERS}): {exc}. "
        "Install it with `pip install -c constraints.txt diffusers` (accel.kernels and accel.methods work without it)."
    ) from exc

__all__ = [
    "SUPPORTED_DIFFUSERS",
    "TESTED_DIFFUSERS",
    "FluxTransformer2DModel",
    "HunyuanVideoTransformer3DModel",
    "WanTransformer3DModel",
    "WanAttnProcessor",
    "HunyuanVideoAttnProcessor2_0",
    "FluxAttnProcessor",
    "HookRegistry",
    "ModelHook",
    "StateManager",
    "dispatch_attention_fn",
    "ContextParallelConfig",
    "ContextParallelInput",
    "ContextParallelOutput",
    "templated_context_parallel_attention",
    "DISPATCH_SETTINGS",
    "CONTEXT_PARALLEL_FIELDS",
    "wan_qkv_projections",
    "SKIPPING_HOOKS",
    "PROCESSOR_PARAMETERS",
    "DISPATCH_PARAMETERS",
    "FORWARD_PARAMETERS",
    "hook_registry",
    "rebind_dispatch",
    "check",
    "BLOCK_PARAMETERS",
]

#: upstream processor -> the leading parameters of its ``__call__`` that accel passes positionally
PROCESSOR_PARAMETERS = {
    WanAttnProcessor: ("self", "attn", "hidden_states", "encoder_hidden_states", "attention_mask", "rotary_emb"),
    HunyuanVideoAttnProcessor2_0: ("self", "attn", "hidden_states", "encoder_hidden_states", "attention_mask",
                                   "image_rotary_emb"),
    FluxAttnProcessor: ("self", "attn", "hidden_states", "encoder_hidden_states", "attention_mask",
                        "image_rotary_emb"),
}

#: the parameters of ``dispatch_attention_fn``, in order (accel's stand-in has the same)
DISPATCH_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa",
                       "attention_kwargs", "backend", "parallel_config")

#: processor attributes through which diffusers routes a processor's dispatch_attention_fn call
DISPATCH_SETTINGS = ("_attention_backend", "_parallel_config")

#: ``ContextParallelConfig`` fields accel reads (the last two are set by diffusers when parallelism is enabled)
CONTEXT_PARALLEL_FIELDS = ("ring_degree", "ulysses_degree", "ulysses_anything", "ring_anything", "mesh",
                           "_ulysses_mesh", "_flattened_mesh")

#: parameters of ``_templated_context_parallel_attention`` accel passes by keyword
_TEMPLATE_KEYWORDS = ("forward_op", "backward_op", "_parallel_config")

#: transformer -> the ``forward`` arguments accel's root hook reads by name
FORWARD_PARAMETERS = {
    WanTransformer3DModel: ("hidden_states", "timestep"),
    HunyuanVideoTransformer3DModel: ("hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask"),
    FluxTransformer2DModel: ("hidden_states", "timestep", "encoder_hidden_states", "img_ids"),
}

#: transformer block -> its leading ``forward`` parameters (after ``self``) that whole-model token order reads
#: by position: hidden states, text states, timestep embedding, [attention mask,] rotary tables
BLOCK_PARAMETERS = {
    WanTransformerBlock: ("hidden_states", "encoder_hidden_states", "temb", "rotary_emb"),
    HunyuanVideoTransformerBlock: ("hidden_states", "encoder_hidden_states", "temb", "attention_mask", "freqs_cis"),
    HunyuanVideoSingleTransformerBlock: ("hidden_states", "encoder_hidden_states", "temb", "attention_mask",
                                         "image_rotary_emb"),
    FluxTransformerBlock: ("hidden_states", "encoder_hidden_states", "temb", "image_rotary_emb"),
    FluxSingleTransformerBlock: ("hidden_states", "encoder_hidden_states", "temb", "image_rotary_emb"),
}

# diffusers module (under diffusers.hooks) -> (constant naming a hook that skips or reuses layer computations,
# the feature's name in messages)
_SKIPPING_HOOK_CONSTANTS = {
    "first_block_cache": (("_FBC_LEADER_BLOCK_HOOK", "FirstBlockCache"), ("_FBC_BLOCK_HOOK", "FirstBlockCache")),
    "taylorseer_cache": (("_TAYLORSEER_CACHE_HOOK", "TaylorSeerCache"),),
    "faster_cache": (("_FASTER_CACHE_DENOISER_HOOK", "FasterCache"), ("_FASTER_CACHE_BLOCK_HOOK", "FasterCache")),
    "pyramid_attention_broadcast": (("_PYRAMID_ATTENTION_BROADCAST_HOOK", "PyramidAttentionBroadcast"),),
    "mag_cache": (("_MAG_CACHE_LEADER_BLOCK_HOOK", "MagCache"), ("_MAG_CACHE_BLOCK_HOOK", "MagCache")),
    "sea_cache": (("_SEA_CACHE_ROOT_HOOK", "SeaCache"), ("_SEA_CACHE_LEADER_BLOCK_HOOK", "SeaCache"),
                  ("_SEA_CACHE_BLOCK_HOOK", "SeaCache")),
    "layer_skip": (("_LAYER_SKIP_HOOK", "LayerSkip"),),
    "text_kv_cache": (("_TEXT_KV_CACHE_TRANSFORMER_HOOK", "TextKVCache"), ("_TEXT_KV_CACHE_BLOCK_HOOK", "TextKVCache")),
}


def _skipping_hooks() -> tuple[dict[str, str], list[str]]:
    names, problems = {}, []
    for module_name, constants in _SKIPPING_HOOK_CONSTANTS.items():
        try:
            module = importlib.import_module(f"diffusers.hooks.{module_name}")
        except ImportError as exc:
            problems.append(f"diffusers.hooks.{module_name} cannot be imported ({exc})")
            continue
        for constant, feature in constants:
            value = getattr(module, constant, None)
            if isinstance(value, str):
                names[value] = feature
            else:
                problems.append(f"diffusers.hooks.{module_name}.{constant} (the {feature} hook name) is missing")
    return names, problems


def hook_registry(module):
    """diffusers' ``HookRegistry`` of ``module`` if it has one (``module._diffusers_hook``), else ``None``."""
    return getattr(module, "_diffusers_hook", None)


def rebind_dispatch(function: types.FunctionType, replacement) -> types.FunctionType:
    """A copy of upstream ``function`` in which the global ``dispatch_attention_fn`` is ``replacement``.

    The code object, defaults and closure are upstream's; only the globals lookup table differs (a copy
    of the upstream module's globals taken now). Nothing global is modified.

    Raises:
        RuntimeError: ``function`` does not call ``dispatch_attention_fn`` (an upstream change this version
            of accel does not know).
    """
    if not _calls_dispatch(function):
        raise RuntimeError(
            f"{function.__qualname__} no longer calls dispatch_attention_fn; diffusers {diffusers.__version__} is not "
            f"supported by accel's processors (supported: diffusers {SUPPORTED_DIFFUSERS}, tested {TESTED_DIFFUSERS})"
        )
    scope = dict(function.__globals__)
    scope["dispatch_attention_fn"] = replacement
    rebound = types.FunctionType(function.__code__, scope, function.__name__, function.__defaults__,
                                 function.__closure__)
    rebound.__kwdefaults__ = function.__kwdefaults__
    return functools.update_wrapper(rebound, function)


def _calls_dispatch(function) -> bool:
    names = set(function.__code__.co_names)
    for const in function.__code__.co_consts:  # nested functions (none call the dispatcher today)
        if isinstance(const, types.CodeType):
            names |= set(const.co_names)
    return "dispatch_attention_fn" in names


def _assigns(function, name: str) -> bool:
    return any(ins.opname.startswith(("STORE", "DELETE")) and ins.argval == name
               for ins in dis.get_instructions(function))


def _parameters(function) -> tuple[str, ...]:
    return tuple(inspect.signature(function).parameters)


def check() -> list[str]:
    """The differences between the installed diffusers and what accel relies on (see the module
    docstring); an empty list when there are none."""
    problems = []
    for cls, expected in PROCESSOR_PARAMETERS.items():
        got = _parameters(cls.__call__)[: len(expected)]
        if got != expected:
            problems.append(f"{cls.__name__}.__call__ parameters start {got}, accel calls it as {expected}")
        if not _calls_dispatch(cls.__call__):
            problems.append(f"{cls.__name__}.__call__ no longer calls dispatch_attention_fn")
        if _assigns(cls.__call__, "attention_mask"):
            problems.append(f"{cls.__name__}.__call__ reassigns attention_mask before dispatch_attention_fn")
    got = _parameters(dispatch_attention_fn)
    if got != DISPATCH_PARAMETERS:
        problems.append(f"dispatch_attention_fn parameters are {got}, accel expects {DISPATCH_PARAMETERS}")
    for cls, names in FORWARD_PARAMETERS.items():
        missing = [n for n in names if n not in _parameters(cls.forward)]
        if missing:
            problems.append(f"{cls.__name__}.forward has no parameter {', '.join(missing)}")
    for owner, attrs in ((HookRegistry, ("check_if_exists_or_initialize", "register_hook", "get_hook", "remove_hook")),
                         (ModelHook, ("initialize_hook", "deinitalize_hook", "reset_state", "_is_stateful")),
                         (StateManager, ("set_context",))):
        problems += [f"{owner.__name__}.{a} is missing" for a in attrs if not hasattr(owner, a)]
    if hasattr(HookRegistry, "remove_hook") and "recurse" not in _parameters(HookRegistry.remove_hook):
        problems.append("HookRegistry.remove_hook takes no recurse argument")
    scan = getattr(_hooks_module, "_set_cache_context", None)
    if scan is None:
        problems.append("diffusers.hooks.hooks._set_cache_context (cache contexts -> stateful hooks) is missing")
    elif not {"vars", "StateManager", "set_context", "_is_stateful"} <= set(scan.__code__.co_names):
        problems.append("diffusers.hooks.hooks._set_cache_context no longer finds StateManager attributes of "
                        "stateful hooks (vars(hook)) to call set_context on")
    context_cls = getattr(_hooks_module, "CacheContext", None)
    fields = {f.name for f in dataclasses.fields(context_cls)} if dataclasses.is_dataclass(context_cls) else set()
    missing = {"name", "step_index", "num_inference_steps", "timestep"} - fields
    if missing:
        problems.append(f"diffusers.hooks.hooks.CacheContext lacks {', '.join(sorted(missing))}")
    if _parameters(wan_qkv_projections)[:3] != ("attn", "hidden_states", "encoder_hidden_states"):
        problems.append(f"transformer_wan._get_qkv_projections parameters are {_parameters(wan_qkv_projections)}, "
                        "accel expects (attn, hidden_states, encoder_hidden_states)")
    problems += _skipping_hooks()[1]
    problems += _context_parallel_problems()
    for cls, expected in BLOCK_PARAMETERS.items():
        got = _parameters(cls.forward)[1:len(expected) + 1]
        if got != expected:
            problems.append(f"{cls.__name__}.forward parameters start {got}, accel's whole-model token order reads "
                            f"{expected}")
    return problems


def _context_parallel_problems() -> list[str]:
    problems = []
    for cls in (WanAttnProcessor, HunyuanVideoAttnProcessor2_0, FluxAttnProcessor):
        problems += [f"{cls.__name__} has no {a} attribute" for a in DISPATCH_SETTINGS if not hasattr(cls, a)]
    config = ContextParallelConfig
    fields = {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
    missing = [f for f in CONTEXT_PARALLEL_FIELDS if f not in fields]
    if missing:
        problems.append(f"ContextParallelConfig has no field {', '.join(missing)}")
    missing = [p for p in _TEMPLATE_KEYWORDS if p not in _parameters(templated_context_parallel_attention)]
    if missing:
        problems.append(f"_templated_context_parallel_attention has no parameter {', '.join(missing)}")
    if not {"config", "cp_plan"} <= set(_parameters(ModelMixin.enable_parallelism)):
        problems.append("ModelMixin.enable_parallelism takes no config / cp_plan arguments")
    for cls in (WanTransformer3DModel, FluxTransformer2DModel):
        if not isinstance(getattr(cls, "_cp_plan", None), dict):
            problems.append(f"{cls.__name__} has no _cp_plan")
    return problems


def _check_at_import() -> None:
    problems = check()
    if problems:
        raise ImportError(
            f"accel's processors support diffusers {SUPPORTED_DIFFUSERS} (tested with {TESTED_DIFFUSERS}); the "
            f"installed diffusers {diffusers.__version__} differs where accel relies on its internals:\n- "
            + "\n- ".join(problems)
            + f"\nInstall a supported version (`pip install -c constraints.txt diffusers`, i.e. {TESTED_DIFFUSERS})."
        )


_check_at_import()

#: diffusers hook name -> the caching feature that installs it (hooks that skip or reuse layer computations)
SKIPPING_HOOKS: dict[str, str] = _skipping_hooks()[0]

"""``accel.pipelines.load`` (:func:`load`): a ready diffusers pipeline from a preset name, a folder or a hub id.

::

    pipe = accel.pipelines.load("wan2.1-t2v-1.3b", method="radial")   # the paper's Radial setting
    video = pipe(prompt, **pipe.accel_preset.generation_kwargs()).frames[0]

    pipe = accel.pipelines.load("embedded")          # offline, no download
    pipe = accel.pipelines.load("/models/my-wan")    # a folder written by save_pretrained

Checkpoints are read with diffusers' own ``DiffusionPipeline.from_pretrained`` with
``use_safetensors=True`` (pickled ``.bin`` weights are refused) and ``trust_remote_code=False`` (a
``model_index.json`` naming custom code is refused); ``HF_HUB_OFFLINE=1`` is honoured (then only the
local cache is used). The device and, while offline, the presence of a hub checkpoint in the local
cache are checked before anything is loaded (:func:`parse_device`, :func:`check_weights_available`),
with one-line errors that say what to do.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from pathlib import Path

import torch

from .presets import ModelPreset, get_preset, preset_for_hub_id

__all__ = ["load", "resolve_model", "pipeline_size_rules", "parse_dtype", "parse_device", "weights_cached",
           "check_weights_available", "FAMILY_OF_PIPELINE"]

#: diffusers pipeline class name -> preset family.
FAMILY_OF_PIPELINE = {
    "WanPipeline": "wan",
    "WanImageToVideoPipeline": "wan_i2v",
    "HunyuanVideoPipeline": "hunyuan_video",
    "FluxPipeline": "flux",
}
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def parse_dtype(dtype) -> torch.dtype | None:
    """``None``, a ``torch.dtype`` or a name (``"bf16"``, ``"bfloat16"``, ``"fp16"``, ``"fp32"``, ...) -> dtype.

    Raises:
        ValueError: anything other than float32, float16 or bfloat16.
    """
    if dtype is None or dtype in (torch.float32, torch.float16, torch.bfloat16):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be float32, float16 or bfloat16 (a torch.dtype or one of {sorted(_DTYPES)}), "
                     f"got {dtype!r}")


def parse_device(device) -> torch.device:
    """``device`` as a ``torch.device`` this machine can use; ``None`` means CUDA when available, else CPU.

    Raises:
        ValueError: not a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``), or one this machine
            cannot use: CUDA on a PyTorch build without CUDA, no visible CUDA device, an index past the last
            device, another accelerator type that is not available. The message says what to use instead.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch.device or a string like 'cpu', 'cuda' or 'cuda:1', got {device!r}") from exc
    if parsed.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise ValueError(f"device {str(device)!r}: this PyTorch build ({torch.__version__}) has no CUDA support; "
                             "use device cpu, or install a CUDA build of PyTorch")
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"device {str(device)!r}: no CUDA device is visible (CUDA_VISIBLE_DEVICES="
                             f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use device cpu")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    elif parsed.type not in ("cpu", "meta"):
        backend = getattr(torch.backends, parsed.type, None) or getattr(torch, parsed.type, None)
        if not getattr(backend, "is_available", lambda: False)():
            raise ValueError(f"device {str(device)!r}: {parsed.type} is not available on this machine; use device "
                             "cpu" + (" or cuda" if torch.cuda.is_available() else ""))
    return parsed


def weights_cached(hub_id: str) -> bool:
    """Whether the hub checkpoint ``hub_id`` is in the local Hugging Face cache (its ``model_index.json``
    is; the loader finds out whether the rest is). Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub_id, "model_index.json")
    return isinstance(found, str)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or value in ("1", "ON", "YES", "TRUE")


def check_weights_available(preset_or_path) -> None:
    """Refuse a hub checkpoint that cannot be loaded without downloading while downloads are off.

    Nothing to check for built-in presets (embedded, tiny), local folders, or when downloads are allowed
    (``HF_HUB_OFFLINE`` unset: diffusers downloads what is missing).

    Raises:
        ValueError: ``preset_or_path`` names nothing (see :func:`resolve_model`).
        OSError: a hub checkpoint missing from the local Hugging Face cache while ``HF_HUB_OFFLINE`` is set;
            the one-line message says how to download it.
    """
    _preset, location = resolve_model(preset_or_path)
    if location is None or Path(location).expanduser().exists() or not _hub_offline() or weights_cached(location):
        return
    raise OSError(f"model {location!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, so it "
                  f"cannot be downloaded: download it first with `hf download {location}` (after `hf auth login` "
                  "for gated models such as FLUX.1-dev), or unset HF_HUB_OFFLINE")


def resolve_model(preset_or_path: str) -> tuple[ModelPreset | None, str | None]:
    """Decide what ``preset_or_path`` names, without loading anything.

    Returns:
        ``(preset, location)``: a preset name gives ``(preset, hub id or None)``; a hub id of a preset
        gives that preset and the id; a local folder with ``model_index.json`` or another hub id
        ``owner/name`` gives ``(None, location)``.

    Raises:
        ValueError: not a preset, not a folder with ``model_index.json``, not shaped like a hub id.
    """
    if not isinstance(preset_or_path, (str, Path)) or not str(preset_or_path):
        raise ValueError(f"model must be a preset name, a folder or a hub id, got {preset_or_path!r}")
    text = str(preset_or_path)
    try:
        preset = get_preset(text)
        return preset, preset.hub_id
    except ValueError as unknown:
        message = str(unknown)
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"model folder {str(path)!r} has no model_index.json (save it with "
                             "pipeline.save_pretrained); " + message)
        return None, str(path)
    if _HUB_ID.fullmatch(text) and not text.startswith((".", "/")):
        return preset_for_hub_id(text), text
    raise ValueError(f"model {text!r} is not a preset, an existing folder or a hub id 'owner/name'; "
                     + message.split("; ", 1)[1])


def _from_pretrained(location: str, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.from_pretrained(location, dtype=dtype, use_safetensors=True,
                                                 trust_remote_code=False)
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise OSError(f"could not load {location!r} with diffusers' from_pretrained (safetensors only): {first}. "
                      "If it is a hub id: it must be in diffusers format, downloadable (logged in with "
                      "`hf auth login` for gated models such as FLUX.1-dev) or already in the local cache when "
                      "HF_HUB_OFFLINE=1.") from None


def pipeline_size_rules(pipe) -> tuple[int, int | None]:
    """``(size_multiple, frame_step)`` that ``pipe`` needs: height and width multiples of
    ``size_multiple`` (VAE spatial scale x transformer patch size, and 16 where the pipeline checks
    it), ``num_frames = 1 + k * frame_step`` (temporal VAE scale; ``None`` for image pipelines).

    Raises:
        TypeError: a pipeline class other than Wan (T2V/I2V), HunyuanVideo or FLUX.
    """
    family = _family_of(pipe)
    cfg = pipe.transformer.config
    if family == "flux":
        return int(pipe.vae_scale_factor) * 2, None
    patch = cfg.patch_size[1] if isinstance(cfg.patch_size, (tuple, list)) else cfg.patch_size
    spatial = int(pipe.vae_scale_factor_spatial) * int(patch)
    return math.lcm(16, spatial), int(pipe.vae_scale_factor_temporal)


def _family_of(pipe) -> str:
    name = type(pipe).__name__
    if name not in FAMILY_OF_PIPELINE:
        raise TypeError(f"unsupported pipeline {name}; supported: {', '.join(FAMILY_OF_PIPELINE)}")
    return FAMILY_OF_PIPELINE[name]


def _derived_preset(pipe, location: str) -> ModelPreset:
    """A preset for a checkpoint that matches none: the pipeline's own call defaults."""
    family = _family_of(pipe)
    params = inspect.signature(type(pipe).__call__).parameters

    def default(name, fallback=None):
        value = params[name].default if name in params else fallback
        return fallback if value is inspect.Parameter.empty or value is None else value

    multiple, frame_step = pipeline_size_rules(pipe)
    if family == "flux":
        side = int(pipe.default_sample_size * pipe.vae_scale_factor)
        height = width = side
    else:
        height, width = default("height"), default("width")
    return ModelPreset(
        name=location, family=family, source="path", hub_id=None, height=int(height), width=int(width),
        num_frames=None if family == "flux" else int(default("num_frames")), steps=int(default("num_inference_steps")),
        guidance=float(default("guidance_scale")), fps=None if family == "flux" else 16,
        size_multiple=multiple, frame_step=frame_step,
        needs_image=family == "wan_i2v", note="the pipeline's own __call__ defaults; fps 16 (no source)",
    )


def _check_family_requirements(family: str) -> None:
    """Refuse, before loading, a family whose diffusers pipeline cannot run in this environment."""
    import importlib.util

    # diffusers 0.42's WanImageToVideoPipeline cleans every prompt with ftfy.fix_text but imports ftfy
    # only when it is installed, so without it each call fails with NameError.
    if family == "wan_i2v" and importlib.util.find_spec("ftfy") is None:
        raise ImportError("Wan image-to-video pipelines need the ftfy package (diffusers cleans prompts with it): "
                          "pip install ftfy")


def load(
    preset_or_path: str = "embedded",
    *,
    method=None,
    method_args: dict | None = None,
    schedule=None,
    device=None,
    dtype=None,
    offload: bool = False,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    parallel=None,
):
    """Load a pipeline by preset name, folder or hub id, with an accel method applied.

    Args:
        preset_or_path: a preset name from :data:`accel.pipelines.presets.PRESETS` (``"embedded"``,
            ``"tiny-wan"``, ``"wan2.1-t2v-1.3b"``, ``"flux.1-dev"``, ...), a local folder holding a
            diffusers ``model_index.json``, or a hub id ``owner/name`` (a preset's hub id gets that
            preset's settings).
        method: ``None`` (upstream attention), a method name from
            :data:`accel.methods.registry.METHODS` (``"radial"``, ``"neighborhood"``, ...: the
            published setting for this model, ``Cls.preset(name)``, where the class has one, else class defaults),
            or an :class:`accel.AttentionMethod` instance used as is.
        method_args: fields that replace the named method's defaults (only with a name).
        schedule: an :class:`accel.Schedule`; ``None`` means the published schedule of a named method
            (e.g. Radial's 12 dense steps on Wan) or no dense steps otherwise.
        device: where to run (``"cuda"``, ``"cuda:1"``, ``"cpu"``, a ``torch.device``); ``None`` means
            CUDA when available, else CPU.
        dtype: parameter dtype (``torch.bfloat16``, ``"bf16"``, ``"fp16"``, ``"fp32"``, ...); ``None``
            means bfloat16 for hub checkpoints on CUDA and float32 otherwise. Wan presets keep their
            VAE in float32 (Wan's recommendation).
        offload: model CPU offload (``pipe.enable_model_cpu_offload``): components live on the CPU
            and move to ``device`` one at a time. Needs an accelerator device.
        vae_tiling: decode the VAE tile by tile (less memory for large frames).
        vae_slicing: decode batch entries one at a time.
        parallel: context parallelism, one video split over several GPUs with diffusers' Ulysses
            attention (every process of a ``torchrun`` / ``accelerate launch`` job calls ``load``
            alike): ``None`` or ``1`` (off), an int ``N >= 2`` (groups of ``N`` consecutive ranks
            each split one video: ranks ``[0, N)``, ``[N, 2N)``, ...; ``N`` must divide the number of
            processes and the model's head count), or a diffusers ``ContextParallelConfig`` used as
            is. See :func:`accel.processors.enable_context_parallel`. Not with ``offload``.

    Returns:
        The diffusers pipeline, with ``pipe.accel_preset`` (the :class:`ModelPreset` whose
        :meth:`~ModelPreset.generation_kwargs` are the recommended call settings),
        ``pipe.accel_handle`` (the :class:`accel.AccelHandle`, or ``None``),
        ``pipe.accel_method_source`` (where the method's setting comes from) and
        ``pipe.accel_parallel`` (the ``ContextParallelConfig`` in use, or ``None``).

    Raises:
        ValueError: unknown preset/path, bad dtype/method/parallel, a device this machine cannot use
            (checked before loading), offload without an accelerator or with ``parallel``, a VAE without
            tiling/slicing support; ring attention with a method (refused by :func:`accel.apply`).
        OSError: the checkpoint cannot be loaded (not cached while offline: checked before loading; not
            diffusers format, no safetensors weights); the message is one line.
        RuntimeError: ``parallel`` without an initialised ``torch.distributed`` process group.
        TypeError: a pipeline class accel does not support.
        ImportError: a package the model's pipeline needs is missing (ftfy for Wan image-to-video).
    """
    from accel.methods.base import AttentionMethod
    from accel.methods.registry import method_for_model
    from accel.processors.apply import apply
    from accel.schedule import Schedule

    dtype = parse_dtype(dtype)
    parallel = _check_parallel(parallel, offload)  # argument combinations first, then what this machine can do
    device = parse_device(device)
    if offload and device.type == "cpu":
        raise ValueError("offload=True moves components between the CPU and an accelerator; device is cpu "
                         "(no CUDA device here) - drop offload")
    if method_args and not isinstance(method, str):
        raise ValueError("method_args is only used with a method name (e.g. method='radial')")
    if method is not None and not isinstance(method, (str, AttentionMethod)):
        raise ValueError(f"method must be None, a method name or an accel method object, got {type(method).__name__}")
    if schedule is not None and not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be an accel.Schedule or None, got {type(schedule).__name__}")
    preset, location = resolve_model(preset_or_path)
    if isinstance(method, str):  # validate the name before any loading
        method_for_model(method, dict(method_args or {}), None)

    if preset is not None:
        _check_family_requirements(preset.family)
    hub_like = preset is None or preset.source == "hub"
    if dtype is None:
        dtype = torch.bfloat16 if hub_like and device.type == "cuda" else torch.float32
    if preset is not None and preset.source == "embedded":
        from accel.embedded.model import embedded

        pipe = embedded(dtype=dtype)
    elif preset is not None and preset.source == "tiny":
        from .tiny import tiny_pipeline

        pipe = tiny_pipeline(preset.family).to(dtype=dtype)
    else:
        check_weights_available(location)
        pipe = _from_pretrained(location, dtype)
        if preset is None:
            preset = _derived_preset(pipe, location)
            _check_family_requirements(preset.family)
        elif _family_of(pipe) != preset.family:
            raise TypeError(f"{location!r} loaded as {type(pipe).__name__}, expected the {preset.family} family of "
                            f"preset {preset.name!r}")
    if preset.vae_fp32 and dtype != torch.float32 and getattr(pipe, "vae", None) is not None:
        pipe.vae.to(dtype=torch.float32)
    if preset.flow_shift is not None:
        _set_flow_shift(pipe, preset.flow_shift)
    if parallel is not None:
        from accel.processors.parallelize import enable_context_parallel, ulysses_config

        if isinstance(parallel, int):
            parallel = ulysses_config(parallel, device_type=device.type)
        enable_context_parallel(pipe, parallel)

    handle, source = None, ""
    if isinstance(method, str):
        method_obj, published_schedule, source = method_for_model(method, dict(method_args or {}), preset.method_model)
        if schedule is None:
            schedule = published_schedule
    else:
        method_obj, source = method, ("user object" if method is not None else "")
    if method_obj is not None:
        handle = apply(pipe, method_obj, schedule=schedule)

    if vae_tiling:
        _vae_call(pipe, "enable_tiling")
    if vae_slicing:
        _vae_call(pipe, "enable_slicing")
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.accel_preset = preset
    pipe.accel_handle = handle
    pipe.accel_method_source = source
    pipe.accel_parallel = parallel
    return pipe


def _check_parallel(parallel, offload: bool):
    """``parallel`` of :func:`load` checked before any loading: ``None`` (off), an int >= 2 or a config."""
    if parallel is None:
        return None
    from accel.processors.upstream import ContextParallelConfig

    is_count = isinstance(parallel, int) and not isinstance(parallel, bool)
    if not (is_count and parallel >= 1 or isinstance(parallel, ContextParallelConfig)):
        raise ValueError(f"parallel must be None, an int >= 1 (GPUs per video) or a diffusers ContextParallelConfig, "
                         f"got {parallel!r}")
    if is_count and parallel == 1:
        return None
    if offload:
        raise ValueError("offload=True cannot be combined with parallel (context parallelism keeps the whole "
                         "transformer on every GPU of the group)")
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"parallel={parallel!r} needs torch.distributed initialised: launch one process per GPU "
                           "with torchrun or accelerate launch (and call torch.distributed.init_process_group)")
    if is_count and dist.get_world_size() % parallel:
        raise ValueError(f"parallel={parallel} must divide the number of processes ({dist.get_world_size()})")
    return parallel


def _set_flow_shift(pipe, shift: float) -> None:
    scheduler = pipe.scheduler
    config = scheduler.config
    key = "flow_shift" if "flow_shift" in config else "shift" if "shift" in config else None
    if key is None or config[key] == shift:
        return
    pipe.scheduler = type(scheduler).from_config(config, **{key: shift})


def _vae_call(pipe, name: str) -> None:
    fn = getattr(getattr(pipe, "vae", None), name, None)
    if fn is None:
        raise ValueError(f"this pipeline's VAE ({type(getattr(pipe, 'vae', None)).__name__}) has no {name}()")
    fn()

"""The models the demo can run, and a per-app cache of loaded pipelines.

The offered models are presets of :mod:`accel.pipelines.presets`: the embedded model and the tiny
random-weight pipelines always (they need no download), and a hub checkpoint's preset only when its
weights are already in the local Hugging Face cache (the demo never downloads). Pipelines are loaded
with :func:`accel.pipelines.load` (safetensors only, no remote code).

An entry knows whether it makes a video or an image, the demo's default call settings (small ones for
the CPU-friendly offline models, the preset's for real checkpoints), the size rules, the limits the demo
enforces on one request (so a request cannot ask for hours of work), and the pipeline's keyword
arguments for validated settings.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

from accel.pipelines.loading import weights_cached

__all__ = ["ModelEntry", "ModelCache", "entry_for_preset", "offered_models"]

# demo defaults and per-request limits of the offline models (CPU-friendly: seconds per request). The embedded
# model's defaults are its trained clip size (accel.embedded.model.DEFAULT_GENERATION: 128x128, 17 frames, a
# 2,304-token grid, where CPU "auto" runs the gather backend) with fewer steps than its 20 so that a first
# comparison (8 pipeline calls) takes about a minute on 2 CPU cores
_OFFLINE = {
    "embedded": dict(defaults=dict(height=128, width=128, frames=17, steps=8), max_side=256, max_frames=33, max_steps=50,
                     description="the trained tiny Wan 2.1 text-to-video model shipped with accel (shapes moving "
                                 "over a background)"),
    "tiny-wan": dict(defaults=dict(height=32, width=32, frames=9, steps=2), max_side=128, max_frames=33, max_steps=20,
                     description="a Wan 2.1 text-to-video pipeline with random weights (noise; for checking the "
                                 "machinery)"),
    "tiny-hunyuan-video": dict(defaults=dict(height=32, width=32, frames=9, steps=2), max_side=128, max_frames=33,
                               max_steps=20, description="a HunyuanVideo pipeline with random weights (noise; for "
                                                          "checking the machinery)"),
    "tiny-flux": dict(defaults=dict(height=32, width=32, frames=1, steps=2), max_side=128, max_frames=1, max_steps=20,
                      description="a FLUX.1 text-to-image pipeline with random weights (noise; for checking the "
                                  "machinery)"),
}
# families the demo drives (image-to-video needs an input image: not offered)
_FAMILIES = ("wan", "hunyuan_video", "flux")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model of the demo.

    Attributes:
        name: the preset name, shown in the page and accepted by the logic functions.
        description: one line shown under the model choice.
        kind: ``"video"`` (the pipeline returns ``frames``) or ``"image"`` (``images``).
        loader: builds the pipeline (no arguments; never downloads).
        defaults: default ``height``, ``width``, ``frames`` (1 for images), ``steps``.
        size_multiple: height and width must be multiples of this (pixels).
        frame_step: frame counts must be ``1 + k * frame_step`` (1 for images).
        max_side: largest height or width accepted (pixels).
        max_frames: largest frame count accepted (1 for images).
        max_steps: largest number of denoising steps accepted.
        extra_call_kwargs: fixed keyword arguments of every pipeline call (guidance, text length, ...).
    """

    name: str
    description: str
    kind: str
    loader: Callable[[], Any]
    defaults: dict
    size_multiple: int
    frame_step: int
    max_side: int
    max_frames: int
    max_steps: int
    extra_call_kwargs: dict = dataclasses.field(default_factory=dict)

    def call_kwargs(self, *, height: int, width: int, frames: int, steps: int) -> dict:
        """The pipeline's keyword arguments (without prompt and generator) for validated settings."""
        kwargs = dict(self.extra_call_kwargs, height=height, width=width, num_inference_steps=steps, output_type="np")
        if self.kind == "video":
            kwargs["num_frames"] = frames
        return kwargs


def _loader(name: str, device):
    def load_pipeline():
        from accel.pipelines.loading import load

        pipe = load(name, device=device)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return load_pipeline


def entry_for_preset(preset, *, device=None) -> ModelEntry:
    """The demo entry of a :class:`~accel.pipelines.presets.ModelPreset`.

    Args:
        preset: the preset.
        device: where its pipeline runs (``None``: CUDA when available, else CPU).
    """
    video = preset.is_video
    extra = {k: v for k, v in preset.generation_kwargs().items()
             if k not in ("height", "width", "num_frames", "num_inference_steps")}
    offline = _OFFLINE.get(preset.name)
    if offline is not None:
        limits = {k: offline[k] for k in ("defaults", "max_side", "max_frames", "max_steps")}
        description = offline["description"]
    else:
        limits = dict(defaults=dict(height=preset.height, width=preset.width, frames=preset.num_frames or 1,
                                    steps=preset.steps),
                      max_side=max(preset.height, preset.width), max_frames=preset.num_frames or 1,
                      max_steps=max(100, preset.steps))
        description = f"{preset.hub_id} (from the local cache); defaults: {preset.note}"
    return ModelEntry(name=preset.name, description=description, kind="video" if video else "image",
                      loader=_loader(preset.name, device), size_multiple=preset.size_multiple,
                      frame_step=preset.frame_step or 1, extra_call_kwargs=extra, **limits)


def offered_models(*, device=None, include_hub: bool = True) -> dict[str, ModelEntry]:
    """The models the demo offers, by name: the offline ones, then cached hub checkpoints.

    Args:
        device: as in :func:`entry_for_preset`.
        include_hub: also offer hub presets whose weights are in the local cache.
    """
    from accel.pipelines.presets import PRESETS

    out = {}
    for name in _OFFLINE:
        out[name] = entry_for_preset(PRESETS[name], device=device)
    if include_hub:
        for preset in PRESETS.values():
            if (preset.source == "hub" and preset.family in _FAMILIES and not preset.needs_image
                    and weights_cached(preset.hub_id)):
                out[preset.name] = entry_for_preset(preset, device=device)
    return out


class ModelCache:
    """Loaded pipelines of one app, by model name (each loaded once, on first use; thread-safe).

    Owned by the app object, never module-global, so two apps (or tests) do not share pipelines.

    Args:
        models: the offered models by name (default :func:`offered_models`).
        warm_up: after loading a pipeline, run one smallest one-step call so that the first timed
            request does not include one-time start-up costs (which would bias a dense-vs-sparse
            latency comparison towards whichever runs second).
    """

    def __init__(self, models: dict[str, ModelEntry] | None = None, *, warm_up: bool = True) -> None:
        self.models = dict(offered_models() if models is None else models)
        self.warm_up = warm_up
        self._pipes: dict[str, Any] = {}
        self._lock = threading.Lock()

    def entry(self, name: str) -> ModelEntry:
        """The entry called ``name``.

        Raises:
            ValueError: ``name`` is not one of the offered models (the message lists them).
        """
        if name not in self.models:
            raise ValueError(f"model must be one of {list(self.models)}, got {name!r}")
        return self.models[name]

    def pipeline(self, name: str):
        """The loaded pipeline of model ``name`` (loads it on first use)."""
        entry = self.entry(name)
        with self._lock:
            if name not in self._pipes:
                pipe = entry.loader()
                if self.warm_up:
                    _warm_up(pipe, entry)
                self._pipes[name] = pipe
            return self._pipes[name]


def _warm_up(pipe, entry: ModelEntry) -> None:
    """One smallest one-step call, so the first timed request does not pay one-time start-up costs."""
    import torch

    side = entry.size_multiple
    pipe(prompt="warm up", generator=torch.Generator().manual_seed(0),
         **entry.call_kwargs(height=side, width=side, frames=1, steps=1))

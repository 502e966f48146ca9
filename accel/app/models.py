"""The models the demo can run, and a per-app cache of loaded pipelines.

Every entry loads offline: the embedded model ships with the package and the tiny pipelines are built
in memory. An entry knows whether it makes a video or an image, its default call settings, the limits
the demo enforces on sizes (so one request cannot ask for hours of work), and how to turn validated
settings into the pipeline's keyword arguments.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ModelEntry", "ModelCache", "MODELS", "model_names"]


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model of the demo.

    Attributes:
        name: the name shown in the page and accepted by the logic functions.
        description: one line shown under the model choice.
        kind: ``"video"`` (the pipeline returns ``frames``) or ``"image"`` (``images``).
        loader: builds the pipeline (no arguments; offline).
        defaults: default ``height``, ``width``, ``frames`` (1 for images), ``steps``.
        size_multiple: height and width must be multiples of this (pixels).
        max_side: largest height or width accepted (pixels).
        max_frames: largest frame count accepted (odd; 1 for images).
        max_steps: largest number of denoising steps accepted.
        extra_call_kwargs: fixed keyword arguments of every pipeline call (guidance, text length, ...).
    """

    name: str
    description: str
    kind: str
    loader: Callable[[], Any]
    defaults: dict
    size_multiple: int
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


def _load_embedded():
    from accel.pipelines.embedded import embedded

    return embedded()


def _load_tiny(family: str):
    def load():
        from accel.pipelines.tiny import tiny_pipeline

        pipe = tiny_pipeline(family)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return load


def _embedded_extra() -> dict:
    """The embedded model's trained guidance scale and text length (its :data:`DEFAULT_GENERATION`)."""
    from accel.pipelines.embedded import DEFAULT_GENERATION

    return {k: DEFAULT_GENERATION[k] for k in ("guidance_scale", "max_sequence_length")}


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            name="embedded",
            description="the trained tiny Wan 2.1 text-to-video model shipped with accel (shapes moving over a background)",
            kind="video", loader=_load_embedded,
            defaults=dict(height=64, width=64, frames=9, steps=8),
            size_multiple=16, max_side=256, max_frames=33, max_steps=50,
            extra_call_kwargs=_embedded_extra(),
        ),
        ModelEntry(
            name="tiny-wan",
            description="a Wan 2.1 text-to-video pipeline with random weights (noise; for checking the machinery)",
            kind="video", loader=_load_tiny("wan"),
            defaults=dict(height=32, width=32, frames=9, steps=2),
            size_multiple=16, max_side=128, max_frames=33, max_steps=20,
            extra_call_kwargs=dict(guidance_scale=6.0, max_sequence_length=16),
        ),
        ModelEntry(
            name="tiny-flux",
            description="a FLUX.1 text-to-image pipeline with random weights (noise; for checking the machinery)",
            kind="image", loader=_load_tiny("flux"),
            defaults=dict(height=32, width=32, frames=1, steps=2),
            size_multiple=16, max_side=128, max_frames=1, max_steps=20,
            extra_call_kwargs=dict(guidance_scale=3.5, max_sequence_length=16),
        ),
    )
}


def model_names() -> list[str]:
    """Names of the models the demo offers, in display order."""
    return list(MODELS)


class ModelCache:
    """Loaded pipelines of one app, by model name (each loaded once, on first use; thread-safe).

    Owned by the app object, never module-global, so two apps (or tests) do not share pipelines.

    Args:
        models: the offered models by name (default :data:`MODELS`).
        warm_up: after loading a pipeline, run one smallest one-step call so that the first timed
            request does not include one-time start-up costs (which would bias a dense-vs-sparse
            latency comparison towards whichever runs second).
    """

    def __init__(self, models: dict[str, ModelEntry] | None = None, *, warm_up: bool = True) -> None:
        self.models = dict(MODELS if models is None else models)
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

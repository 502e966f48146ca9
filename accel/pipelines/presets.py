"""Model presets: which checkpoint, and how its authors recommend calling it.

A :class:`ModelPreset` names a model (the offline embedded model, a tiny random-weight pipeline, or
a real checkpoint on the Hugging Face hub in diffusers format) together with its default size,
frames, steps, guidance, frames per second and scheduler shift, and the size rules its pipeline
enforces. :func:`accel.pipelines.loading.load` builds the pipeline from a preset; ``accel render``
renders with its settings unless overridden.

Per-method defaults (window sizes, decay, dense steps) are the method classes' own published
settings, ``Radial.preset(name)`` and so on, looked up by the preset's name (one vocabulary of model
names: :data:`accel.methods.preset.MODEL_FAMILIES` lists these names); each cites its paper or script.
Tiny and embedded models have none and use the class defaults (their grids are far smaller than the
papers').

Sources of the numbers (checked while writing this table; where a value has no source it says so):

* diffusers 0.42.1 pipeline ``__call__`` defaults and ``EXAMPLE_DOC_STRING`` examples
  (``pipelines/wan/pipeline_wan.py``: Wan 2.1 T2V 480x832, 81 frames, 50 steps, guidance 5.0,
  export at 16 fps, ``flow_shift = 5.0  # 5.0 for 720P, 3.0 for 480P``; ``pipeline_wan_i2v.py``: same
  for I2V 480P/720P; ``pipelines/hunyuan_video/pipeline_hunyuan_video.py``: 720x1280, 129 frames,
  50 steps, guidance 6.0, max_sequence_length 256; ``pipelines/flux/pipeline_flux.py``: schnell at
  4 steps and guidance 0.0).
* diffusers' FLUX documentation (api/pipelines/flux): schnell is timestep-distilled,
  ``max_sequence_length`` at most 256, ``guidance_scale`` 0; dev is guidance-distilled. FLUX.1-dev's
  1024x1024 / 50 steps come from its model card's example as remembered; that card was not
  re-checked while writing this (guidance 3.5 and max_sequence_length 512 are FluxPipeline's defaults).
* HunyuanVideo's README / sample_video.py command: ``--video-size 720 1280 --video-length 129
  --infer-steps 50 --embedded-cfg-scale 6.0 --flow-shift 7.0`` (seen in many scripts built on it);
  fps 24: the diffusers-integration test card magespace/hyvideo-diffusers-dev exports at 24 (diffusers'
  own example exports its 61-frame clip at 15 fps).
* Wan 2.2 configs (Wan-Video/Wan2.2 ``wan/configs/wan_t2v_A14B.py``: ``sample_shift 12.0``,
  ``sample_steps 40``, ``boundary 0.875``, ``sample_guide_scale (3.0, 4.0)`` for (low, high) noise,
  shared ``sample_fps 16``, ``frame_num 81``; ``wan_ti2v_5B.py``: ``vae_stride (4, 16, 16)``,
  ``sample_fps 24``, ``sample_shift 5.0``, ``sample_steps 50``, ``sample_guide_scale 5.0``,
  ``frame_num 121``; ``SUPPORTED_SIZES``: TI2V at 704*1280). In diffusers, ``guidance_scale`` is
  the high-noise expert (``transformer``) and ``guidance_scale_2`` the low-noise one.
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

from accel.embedded.model import DEFAULT_GENERATION

__all__ = ["ModelPreset", "PRESETS", "DEFAULT_PRESET", "get_preset", "preset_for_hub_id"]


@dataclasses.dataclass(frozen=True)
class ModelPreset:
    """A model and its recommended generation settings.

    Attributes:
        name: the preset name users type (``accel render --model NAME``).
        family: pipeline family: ``"wan"`` (text-to-video, Wan 2.1/2.2), ``"wan_i2v"`` (Wan 2.1
            image-to-video), ``"hunyuan_video"`` or ``"flux"`` (text-to-image).
        source: ``"embedded"`` (shipped weights), ``"tiny"`` (random weights built in memory),
            ``"hub"`` (a diffusers-format checkpoint, loaded with ``from_pretrained``) or ``"path"``
            (a checkpoint given by folder or hub id that matches no preset).
        hub_id: the hub repository (``source == "hub"``), else ``None``.
        height, width: default output size in pixels.
        num_frames: default frame count; ``None`` for image models.
        steps: default ``num_inference_steps``.
        guidance: default ``guidance_scale`` (HunyuanVideo and FLUX.1-dev: the embedded guidance).
        guidance_2: ``guidance_scale_2`` (Wan 2.2's low-noise expert), or ``None``.
        fps: frames per second of written videos (``None`` for image models).
        flow_shift: scheduler shift set at load time, or ``None`` to keep the checkpoint's.
        max_sequence_length: text tokens passed to the pipeline, or ``None`` for its default.
        size_multiple: height and width must be multiples of this (VAE scale x patch size, and the
            pipeline's own check).
        frame_step: ``num_frames`` must be ``1 + k * frame_step`` (temporal VAE compression); ``None``
            for image models.
        needs_image: the model conditions on an input image (``image`` in the prompt file).
        vae_fp32: keep the VAE in float32 whatever the dtype (Wan's recommendation for decoding).
        call_kwargs: extra keyword arguments of every pipeline call, as ``(key, value)`` pairs.
        note: where the numbers come from.
    """

    name: str
    family: str
    source: str
    hub_id: str | None
    height: int
    width: int
    num_frames: int | None
    steps: int
    guidance: float
    guidance_2: float | None = None
    fps: int | None = 16
    flow_shift: float | None = None
    max_sequence_length: int | None = None
    size_multiple: int = 16
    frame_step: int | None = 4
    needs_image: bool = False
    vae_fp32: bool = False
    call_kwargs: tuple[tuple[str, Any], ...] = ()
    note: str = ""

    @property
    def method_model(self) -> str:
        """The model name the method classes' published settings are looked up with (``Radial.preset(...)``):
        the preset's own name, or for a checkpoint that matches no preset (``source == "path"``) its
        family's name (``"wan"``, ``"hunyuan_video"``, ``"flux"``)."""
        if self.source == "path":
            return _METHOD_FAMILY[self.family]
        return self.name

    @property
    def is_video(self) -> bool:
        """True for video models (``num_frames`` is not ``None``)."""
        return self.num_frames is not None

    def generation_kwargs(self) -> dict[str, Any]:
        """The pipeline call's keyword arguments for this preset's defaults (no prompt, no generator)."""
        out: dict[str, Any] = dict(height=self.height, width=self.width, num_inference_steps=self.steps,
                                   guidance_scale=self.guidance)
        if self.num_frames is not None:
            out["num_frames"] = self.num_frames
        if self.guidance_2 is not None:
            out["guidance_scale_2"] = self.guidance_2
        if self.max_sequence_length is not None:
            out["max_sequence_length"] = self.max_sequence_length
        out.update(dict(self.call_kwargs))
        return out


# pipeline family -> the family of the method classes' published settings
_METHOD_FAMILY = {"wan": "wan", "wan_i2v": "wan", "hunyuan_video": "hunyuan_video", "flux": "flux"}

_WAN_NOTE = "diffusers pipeline_wan.py example and __call__ defaults"
_TINY_NOTE = "tiny random-weight pipeline (accel.pipelines.tiny); sizes from tiny_call_kwargs, no source needed"

_TABLE = [
    # The offline model shipped with accel: accel.embedded.model.DEFAULT_GENERATION (its training size).
    # fps 8: the embedded clips are 17 frames of procedural motion; 8 fps is what `accel generate` uses.
    ModelPreset("embedded", "wan", "embedded", None, DEFAULT_GENERATION["height"], DEFAULT_GENERATION["width"],
                DEFAULT_GENERATION["num_frames"], DEFAULT_GENERATION["num_inference_steps"],
                DEFAULT_GENERATION["guidance_scale"], fps=8,
                max_sequence_length=DEFAULT_GENERATION["max_sequence_length"], size_multiple=16, frame_step=2,
                note="accel.embedded.model.DEFAULT_GENERATION"),
    ModelPreset("tiny-wan", "wan", "tiny", None, 16, 16, 9, 2, 6.0, fps=8, max_sequence_length=16,
                size_multiple=16, frame_step=4, note=_TINY_NOTE),
    ModelPreset("tiny-wan-i2v", "wan_i2v", "tiny", None, 16, 16, 9, 2, 6.0, fps=8, max_sequence_length=16,
                size_multiple=16, frame_step=4, needs_image=True, note=_TINY_NOTE),
    ModelPreset("tiny-hunyuan-video", "hunyuan_video", "tiny", None, 16, 16, 9, 2, 4.5, fps=8,
                max_sequence_length=16, size_multiple=16, frame_step=4,
                call_kwargs=(("prompt_template", {"template": "{}", "crop_start": 0}),), note=_TINY_NOTE),
    ModelPreset("tiny-flux", "flux", "tiny", None, 8, 8, None, 2, 3.5, fps=None, max_sequence_length=16,
                size_multiple=2, frame_step=None, note=_TINY_NOTE),
    ModelPreset("hunyuan-video", "hunyuan_video", "hub", "hunyuanvideo-community/HunyuanVideo", 720, 1280, 129, 50,
                6.0, fps=24, flow_shift=7.0, max_sequence_length=256,
                note="HunyuanVideo README (720x1280, 129 frames, 50 steps, embedded guidance 6.0, flow shift 7.0); "
                     "diffusers pipeline_hunyuan_video.py defaults; fps 24 as in the diffusers integration's test card "
                     "(magespace/hyvideo-diffusers-dev exports at fps=24; diffusers' own example uses 15)"),
    ModelPreset("wan2.1-t2v-1.3b", "wan", "hub", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 480, 832, 81, 50, 5.0,
                fps=16, flow_shift=3.0, max_sequence_length=512, vae_fp32=True,
                note=_WAN_NOTE + " (flow shift 3.0 for 480P)"),
    ModelPreset("wan2.1-t2v-14b", "wan", "hub", "Wan-AI/Wan2.1-T2V-14B-Diffusers", 720, 1280, 81, 50, 5.0,
                fps=16, flow_shift=5.0, max_sequence_length=512, vae_fp32=True,
                note=_WAN_NOTE + " (720x1280 with flow shift 5.0 for 720P)"),
    ModelPreset("wan2.1-i2v-14b-480p", "wan_i2v", "hub", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", 480, 832, 81, 50,
                5.0, fps=16, flow_shift=3.0, max_sequence_length=512, needs_image=True,
                vae_fp32=True, note="diffusers pipeline_wan_i2v.py example (max area 480x832, 81 frames, guidance "
                                    "5.0, 16 fps); flow shift 3.0 = diffusers' 480P recommendation"),
    ModelPreset("wan2.1-i2v-14b-720p", "wan_i2v", "hub", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", 720, 1280, 81, 50,
                5.0, fps=16, flow_shift=5.0, max_sequence_length=512, needs_image=True,
                vae_fp32=True, note="as wan2.1-i2v-14b-480p at 720P (flow shift 5.0 = diffusers' 720P recommendation)"),
    ModelPreset("wan2.2-t2v-a14b", "wan", "hub", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", 720, 1280, 81, 40, 4.0,
                guidance_2=3.0, fps=16, flow_shift=12.0, max_sequence_length=512, vae_fp32=True,
                note="Wan2.2 wan_t2v_A14B.py (40 steps, shift 12.0, guidance 4.0 high noise / 3.0 low noise, 16 fps)"),
    ModelPreset("wan2.2-ti2v-5b", "wan", "hub", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", 704, 1280, 121, 50, 5.0,
                fps=24, flow_shift=5.0, max_sequence_length=512, size_multiple=32, vae_fp32=True,
                note="Wan2.2 wan_ti2v_5B.py (704x1280, 121 frames, 50 steps, shift 5.0, guidance 5.0, 24 fps; VAE "
                     "stride 16 x patch 2 = 32); text-to-video only here"),
    ModelPreset("flux.1-dev", "flux", "hub", "black-forest-labs/FLUX.1-dev", 1024, 1024, None, 50, 3.5, fps=None,
                max_sequence_length=512, frame_step=None,
                note="guidance 3.5 and max_sequence_length 512: diffusers FluxPipeline defaults (checked); 1024x1024 "
                     "and 50 steps: the FLUX.1-dev model card example as remembered, not re-checked here "
                     "(FluxPipeline itself defaults to 28 steps)"),
    ModelPreset("flux.1-schnell", "flux", "hub", "black-forest-labs/FLUX.1-schnell", 1024, 1024, None, 4, 0.0,
                fps=None, max_sequence_length=256, frame_step=None,
                note="diffusers FLUX docs and pipeline_flux.py example (4 steps, guidance 0, max_sequence_length <= "
                     "256); 1024x1024 is the pipeline default (default_sample_size 128 x VAE scale 8)"),
]

#: Preset name -> :class:`ModelPreset` (read-only).
PRESETS = MappingProxyType({p.name: p for p in _TABLE})

#: The preset ``accel render`` uses without ``--model``: the offline embedded model.
DEFAULT_PRESET = "embedded"


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name`` (case-insensitive; an old spelling with ``_`` for ``-``, e.g.
    ``tiny-hunyuan_video``, gives the preset with a :class:`~accel.kernels.renamed.RenamedWarning`).

    Raises:
        ValueError: no such preset (the message lists the names).
    """
    from accel.kernels.renamed import current_spelling

    if not isinstance(name, str):
        raise TypeError(f"preset name must be a str, got {type(name).__name__}")
    current = current_spelling(name, PRESETS, "model")
    preset = PRESETS[current] if current is not None else None
    if preset is None:
        raise ValueError(f"unknown preset {name!r}; presets are {', '.join(PRESETS)}")
    return preset


def preset_for_hub_id(hub_id: str) -> ModelPreset | None:
    """The preset whose checkpoint is ``hub_id`` (exact, case-insensitive), or ``None``."""
    for preset in PRESETS.values():
        if preset.hub_id is not None and preset.hub_id.lower() == hub_id.lower():
            return preset
    return None

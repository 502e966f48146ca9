"""The model architectures the transformer speed benchmark builds (:mod:`accel.eval.model_bench`).

:data:`FULL_MODELS`: the transformers of HunyuanVideo, Wan 2.1 14B / 1.3B and FLUX.1-dev at their
published configurations and their pipelines' default resolutions; :data:`TINY_MODELS`: the same
architectures and block counts at toy widths and grids (CPU tests). :func:`build_model` makes one with
a chosen number of blocks and random weights directly on a device; :func:`make_inputs` the arguments
of one call.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import torch

__all__ = ["ModelSpec", "FULL_MODELS", "TINY_MODELS", "tiny_overrides", "import_diffusers", "build_model",
           "make_inputs"]

# diffusers' constructor argument holding each block kind's count
_COUNT_ARG = {"blocks": "num_layers", "transformer_blocks": "num_layers", "single_transformer_blocks": "num_single_layers"}
# optional diffusers integrations the run does not need; hidden while diffusers is imported, so the
# GPU machine's own versions of them (and their compatibility with the carried diffusers) never matter
_OPTIONAL_INTEGRATIONS = ("peft", "transformers", "accelerate")


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec:
    """One transformer at one resolution.

    Attributes:
        name: the name used on the command line and in the records.
        family: ``"hunyuan_video"``, ``"wan"`` or ``"flux"`` (the presets' model names).
        title: what it is, in words (checkpoint, resolution, frames).
        config: constructor arguments of the diffusers class, without the block counts.
        blocks: the real model's block count per kind, in forward order (``{"blocks": 40}``).
        size: the latent ``(frames, height, width)`` of a video model, or the image ``(height, width)``
            in pixels for FLUX.
        text_len: text tokens per call.
        calls_per_step: transformer calls per denoising step in the diffusers pipeline's default use.
        num_steps: the pipeline's default number of denoising steps.
        preset_model: the checkpoint's name in accel's presets (``accel.pipelines.presets``), which the
            methods' ``preset()`` takes.
        built: blocks built (and timed) per kind by default.
    """

    name: str
    family: str
    title: str
    config: dict
    blocks: dict
    size: tuple
    text_len: int
    calls_per_step: int
    num_steps: int
    preset_model: str
    built: int = 2

    def grid(self) -> tuple[int, int, int]:
        """The token grid ``(T, H, W)`` after patchifying (FLUX: ``(1, H/16, W/16)``)."""
        if self.family == "flux":
            return (1, self.size[0] // 16, self.size[1] // 16)  # VAE /8, then 2x2 packing
        if self.family == "wan":
            p_t, p_h, p_w = self.config["patch_size"]
        else:
            p_t, p_h = self.config["patch_size_t"], self.config["patch_size"]
            p_w = p_h
        t, h, w = self.size
        return (t // p_t, h // p_h, w // p_w)

    def self_attention_len(self) -> int:
        """Tokens of one self-attention call: video/image tokens, plus the text for the joint-attention models."""
        return math.prod(self.grid()) + (0 if self.family == "wan" else self.text_len)

    def built_blocks(self, per_kind: int | None = None) -> dict[str, int]:
        """Blocks to build per kind: ``per_kind`` (default :attr:`built`), at most the real count."""
        n = self.built if per_kind is None else per_kind
        return {kind: min(n, total) for kind, total in self.blocks.items()}


_HV = dict(in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_refiner_layers=2,
           mlp_ratio=4.0, patch_size=2, patch_size_t=1, qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=4096,
           pooled_projection_dim=768, rope_theta=256.0, rope_axes_dim=(16, 56, 56))
_WAN = dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
            cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)
_FLUX = dict(patch_size=1, in_channels=64, attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
             pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))

#: Full-size models (configurations of the published checkpoints' transformers), most important first.
FULL_MODELS = {s.name: s for s in (
    ModelSpec("hunyuan_video_720p", "hunyuan_video", "HunyuanVideo (13B), 1280x720, 129 frames", _HV,
              {"transformer_blocks": 20, "single_transformer_blocks": 40}, (33, 90, 160), 256, 1, 50, "hunyuan-video"),
    ModelSpec("wan14b_720p", "wan", "Wan 2.1 T2V 14B, 1280x720, 81 frames", {**_WAN, "num_attention_heads": 40,
              "ffn_dim": 13824}, {"blocks": 40}, (21, 90, 160), 512, 2, 50, "wan2.1-t2v-14b"),
    ModelSpec("wan1.3b_480p", "wan", "Wan 2.1 T2V 1.3B, 832x480, 81 frames", {**_WAN, "num_attention_heads": 12,
              "ffn_dim": 8960}, {"blocks": 30}, (21, 60, 104), 512, 2, 50, "wan2.1-t2v-1.3b"),
    ModelSpec("flux_1024", "flux", "FLUX.1-dev (12B), 1024x1024", _FLUX,
              {"transformer_blocks": 19, "single_transformer_blocks": 38}, (1024, 1024), 512, 1, 28, "flux.1-dev"),
)}

_TINY_HV = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_refiner_layers=1,
                patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
                rope_axes_dim=(4, 6, 6))
_TINY_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                 text_dim=16, freq_dim=32, ffn_dim=32, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                 rope_max_seq_len=32)
_TINY_FLUX = dict(patch_size=1, in_channels=4, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=16,
                  pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(4, 6, 6))

#: Toy widths and grids with the real block counts, step counts and calls per step (CPU tests).
TINY_MODELS = {s.name: s for s in (
    ModelSpec("hunyuan_video_tiny", "hunyuan_video", "HunyuanVideo architecture, toy width", _TINY_HV,
              FULL_MODELS["hunyuan_video_720p"].blocks, (4, 8, 8), 8, 1, 50, "hunyuan-video", built=1),
    ModelSpec("wan_tiny", "wan", "Wan 2.1 architecture, toy width", _TINY_WAN, FULL_MODELS["wan1.3b_480p"].blocks,
              (4, 16, 16), 8, 2, 50, "wan2.1-t2v-1.3b", built=2),
    ModelSpec("flux_tiny", "flux", "FLUX.1 architecture, toy width", _TINY_FLUX, FULL_MODELS["flux_1024"].blocks,
              (128, 128), 8, 1, 28, "flux.1-dev", built=1),
)}

# preset overrides at toy sizes: 16-token blocks, windows that fit the toy grids, and the reference
# backend (no FlexAttention compilation in a CPU test)
_TINY_OVERRIDES = {
    "Radial": {},
    # the video presets are tile-aligned: tiles of one 16-token block, windows and strides in whole tiles
    "Neighborhood": {"hunyuan_video": dict(window=(3, 4, 8), stride=(1, 4, 4), tiling=(1, 4, 4)),
                     "wan": dict(window=(3, 4, 8), stride=(1, 4, 4), tiling=(1, 4, 4)),
                     "flux": dict(window=(4, 4), stride=(2, 2))},
    "Rectified": {"*": dict(keep_neighbors=False)},  # on toy grids every block is a curve neighbour
    "ClearLocal": {"hunyuan_video": dict(radius=2, radius_t=1, tiling=(1, 4, 4)),
                   "wan": dict(radius=2, radius_t=1, tiling=(1, 4, 4)), "flux": dict(radius=2)},
    "Agent": {"*": dict(stride=(2, 2))},  # AgentSD merging on toy grids: 2 x 2 destination regions
}


def tiny_overrides(method: str, family: str) -> dict:
    """The preset overrides of ``method`` on the toy model of ``family`` (block size 16, reference backend)."""
    table = _TINY_OVERRIDES[method]
    return {"block_size": 16, "backend": "reference", **table.get("*", {}), **table.get(family, {})}


# ---------------------------------------------------------------------------------------------- building
def import_diffusers() -> list[str]:
    """Import diffusers (and accel's processors) with its optional integrations (peft, transformers,
    accelerate) hidden when they are not imported yet: building and running the transformers needs none
    of them, and the GPU machine's versions of them may not match the carried diffusers.

    diffusers decides at its import which integrations (and so which pipelines) are available, for the
    whole process: call this only in a process that needs no pipeline afterwards (the benchmark script).
    Returns the names that were hidden (empty when diffusers was imported already).
    """
    if "diffusers" in sys.modules:
        import accel.processors  # noqa: F401

        return []
    added = [name for name in _OPTIONAL_INTEGRATIONS if name not in sys.modules]
    for name in added:
        sys.modules[name] = None  # import of these raises ImportError; diffusers then treats them as absent
    try:
        import diffusers  # noqa: F401
        from diffusers import FluxTransformer2DModel, HunyuanVideoTransformer3DModel, WanTransformer3DModel  # noqa: F401

        import accel.processors  # noqa: F401
    finally:
        for name in added:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]
    return added


def _model_class(family: str):
    from diffusers import FluxTransformer2DModel, HunyuanVideoTransformer3DModel, WanTransformer3DModel

    return {"wan": WanTransformer3DModel, "hunyuan_video": HunyuanVideoTransformer3DModel,
            "flux": FluxTransformer2DModel}[family]


def build_model(spec: ModelSpec, built: dict[str, int], device: torch.device | str, dtype: torch.dtype):
    """The transformer of ``spec`` with ``built[kind]`` blocks of each kind and random weights.

    Parameters are created and initialised on ``device`` (PyTorch's default initialisation, run there),
    then cast to ``dtype``, except the modules the diffusers class lists in ``_keep_in_fp32_modules``,
    which stay float32. Returns the model in eval mode.
    """
    cls = _model_class(spec.family)
    cfg = {**spec.config, **{_COUNT_ARG[kind]: n for kind, n in built.items()}}
    with torch.device(device):
        model = cls(**cfg)
    torch.nn.Module.to(model, dtype)  # (diffusers' own .to() warns about the float32 modules kept below)
    keep = set(getattr(cls, "_keep_in_fp32_modules", None) or ())
    if keep and dtype != torch.float32:
        # diffusers' rule: a parameter or buffer stays float32 when a keep name is a part of its dotted name
        for module_name, module in model.named_modules():
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                full = f"{module_name}.{name}" if module_name else name
                if tensor is not None and tensor.is_floating_point() and keep.intersection(full.split(".")):
                    if isinstance(tensor, torch.nn.Parameter):
                        tensor.data = tensor.data.float()
                    else:
                        setattr(module, name, tensor.float())
    return model.eval().requires_grad_(False)


def make_inputs(spec: ModelSpec, device: torch.device | str, dtype: torch.dtype, *, seed: int = 0) -> dict:
    """Random arguments of one transformer call of ``spec`` (batch 1); HunyuanVideo's text mask marks the
    last quarter of the text tokens as padding, as a short prompt's mask does."""
    g = torch.Generator(device=device).manual_seed(seed)
    cfg = spec.config

    def rnd(*shape):
        return torch.randn(*shape, generator=g, device=device, dtype=torch.float32).to(dtype)

    t = torch.tensor([500.0], device=device)
    if spec.family == "wan":
        return dict(hidden_states=rnd(1, cfg["in_channels"], *spec.size), timestep=t,
                    encoder_hidden_states=rnd(1, spec.text_len, cfg["text_dim"]), return_dict=False)
    if spec.family == "hunyuan_video":
        mask = torch.ones(1, spec.text_len, dtype=torch.bool, device=device)
        mask[:, spec.text_len * 3 // 4:] = False
        return dict(hidden_states=rnd(1, cfg["in_channels"], *spec.size), timestep=t,
                    encoder_hidden_states=rnd(1, spec.text_len, cfg["text_embed_dim"]), encoder_attention_mask=mask,
                    pooled_projections=rnd(1, cfg["pooled_projection_dim"]),
                    guidance=torch.tensor([6016.0], device=device), return_dict=False)
    _, h, w = spec.grid()
    img_ids = torch.zeros(h, w, 3, device=device)
    img_ids[..., 1] = torch.arange(h, device=device)[:, None]
    img_ids[..., 2] = torch.arange(w, device=device)[None, :]
    return dict(hidden_states=rnd(1, h * w, cfg["in_channels"]),
                encoder_hidden_states=rnd(1, spec.text_len, cfg["joint_attention_dim"]),
                pooled_projections=rnd(1, cfg["pooled_projection_dim"]), timestep=t / 1000,
                img_ids=img_ids.reshape(-1, 3), txt_ids=torch.zeros(spec.text_len, 3, device=device),
                guidance=torch.tensor([3.5], device=device), return_dict=False)

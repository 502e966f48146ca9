"""Model families accel supports: which attention modules it replaces and how it reads the token layout.

=================  ==================================  ============================================
family             transformer class (diffusers)       self-attention modules -> global layer index
=================  ==================================  ============================================
Wan 2.1 / 2.2      ``WanTransformer3DModel``           ``blocks.N.attn1`` -> N
HunyuanVideo       ``HunyuanVideoTransformer3DModel``  ``transformer_blocks.N.attn`` -> N,
                                                       ``single_transformer_blocks.J.attn`` ->
                                                       ``num_layers + J``
FLUX.1             ``FluxTransformer2DModel``          ``transformer_blocks.N.attn`` -> N,
                                                       ``single_transformer_blocks.J.attn`` ->
                                                       ``num_layers + J``
=================  ==================================  ============================================

Wan cross-attention (``attn2``) and HunyuanVideo's token refiner are left to upstream.
"""

from __future__ import annotations

import re

import torch

from accel.grid import TokenLayout
from accel.processors.upstream import FluxTransformer2DModel, HunyuanVideoTransformer3DModel, WanTransformer3DModel

__all__ = ["Family", "FAMILIES", "family_of", "supported_transformers"]


class Family:
    """Adapter of one model family (see the module docstring). Subclasses fill the class attributes."""

    name: str = ""
    transformer_cls: type = object
    # regex over module paths -> (block kind, block number); kinds listed in global-index order
    pattern: re.Pattern = re.compile("$^")
    kinds: tuple[str, ...] = ()

    @property
    def processor_cls(self) -> type:
        raise NotImplementedError

    def attention_modules(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, int]]:
        """``(path, module, global layer index)`` of every self-attention module accel replaces, by index."""
        found = []
        counts = {kind: len(getattr(model, kind, ())) for kind in self.kinds}
        offsets, total = {}, 0
        for kind in self.kinds:
            offsets[kind] = total
            total += counts[kind]
        for name, module in model.named_modules():
            match = self.pattern.fullmatch(name)
            if match:
                found.append((name, module, offsets[match.group(1)] + int(match.group(2))))
        return sorted(found, key=lambda item: item[2])

    def token_layout(self, model: torch.nn.Module, inputs: dict, run) -> TokenLayout:
        """The TokenLayout of a forward call with arguments ``inputs`` (name -> value)."""
        raise NotImplementedError


def _grid_from_5d(hidden_states: torch.Tensor, p_t: int, p_h: int, p_w: int, model_name: str) -> tuple[int, int, int]:
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 5:
        shape = tuple(hidden_states.shape) if isinstance(hidden_states, torch.Tensor) else type(hidden_states).__name__
        raise ValueError(f"{model_name} hidden_states must be a 5-D latent [B, C, F, H, W], got {shape}")
    _, _, f, h, w = hidden_states.shape
    return (f // p_t, h // p_h, w // p_w)


class WanFamily(Family):
    name = "wan"
    transformer_cls = WanTransformer3DModel
    pattern = re.compile(r"(blocks)\.(\d+)\.attn1")
    kinds = ("blocks",)

    @property
    def processor_cls(self):
        from accel.processors.wan import AccelWanAttnProcessor

        return AccelWanAttnProcessor

    def token_layout(self, model, inputs, run):
        p_t, p_h, p_w = model.config.patch_size
        grid = _grid_from_5d(inputs.get("hidden_states"), p_t, p_h, p_w, "WanTransformer3DModel")
        return TokenLayout(grid)


class HunyuanVideoFamily(Family):
    name = "hunyuan_video"
    transformer_cls = HunyuanVideoTransformer3DModel
    pattern = re.compile(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.attn")
    kinds = ("transformer_blocks", "single_transformer_blocks")

    @property
    def processor_cls(self):
        from accel.processors.hunyuan_video import AccelHunyuanVideoAttnProcessor

        return AccelHunyuanVideoAttnProcessor

    def token_layout(self, model, inputs, run):
        p, p_t = model.config.patch_size, model.config.patch_size_t
        grid = _grid_from_5d(inputs.get("hidden_states"), p_t, p, p, "HunyuanVideoTransformer3DModel")
        text = inputs.get("encoder_hidden_states")
        text_len = int(text.shape[1])
        mask = inputs.get("encoder_attention_mask")
        text_mask = None
        if mask is not None:
            # exactly upstream's rule (HunyuanVideoTransformer3DModel.forward): the first
            # sum(encoder_attention_mask) text tokens of each sample are valid, the rest is padding
            valid = mask.sum(dim=1, dtype=torch.int)
            text_mask = torch.arange(text_len, device=mask.device)[None, :] < valid[:, None]
        return TokenLayout(grid, text_len, "last", text_mask)


class FluxFamily(Family):
    name = "flux"
    transformer_cls = FluxTransformer2DModel
    pattern = re.compile(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.attn")
    kinds = ("transformer_blocks", "single_transformer_blocks")

    @property
    def processor_cls(self):
        from accel.processors.flux import AccelFluxAttnProcessor

        return AccelFluxAttnProcessor

    def token_layout(self, model, inputs, run):
        hidden = inputs.get("hidden_states")
        text = inputs.get("encoder_hidden_states")
        n_img, text_len = int(hidden.shape[1]), int(text.shape[1])
        img_ids = inputs.get("img_ids")
        if torch.compiler.is_compiling():
            grid = run.grid_by_tokens.get(n_img)
            if grid is None:
                raise RuntimeError(
                    f"the image grid of this FLUX call ({n_img} image tokens) is read from img_ids, which "
                    "torch.compile cannot read; run one call uncompiled first (the grid is remembered per token "
                    "count) or call handle.set_image_grid(height_tokens, width_tokens)"
                )
        else:
            grid = self._grid_from_ids(img_ids, n_img)
            run.grid_by_tokens[n_img] = grid
        return TokenLayout(grid, text_len, "first")

    @staticmethod
    def _grid_from_ids(img_ids, n_img: int) -> tuple[int, int, int]:
        if not isinstance(img_ids, torch.Tensor) or img_ids.shape[-1] != 3:
            raise ValueError("FluxTransformer2DModel img_ids must be a tensor [S, 3] (or [B, S, 3]) of (0, row, col)")
        ids = img_ids[0] if img_ids.dim() == 3 else img_ids
        rows, cols = ids[:, 1], ids[:, 2]
        lo = torch.stack((rows.amin(), cols.amin(), rows.amax(), cols.amax())).tolist()
        h, w = int(lo[2] - lo[0]) + 1, int(lo[3] - lo[1]) + 1
        if h * w != n_img or ids.shape[0] != n_img:
            raise ValueError(
                f"FLUX img_ids span a {h} x {w} grid but the call has {n_img} image tokens: accel supports one "
                "row-major image grid per call (no extra reference-image tokens)"
            )
        return (1, h, w)


FAMILIES: tuple[Family, ...] = (WanFamily(), HunyuanVideoFamily(), FluxFamily())


def supported_transformers() -> list[str]:
    """Names of the transformer classes accel supports."""
    return [f.transformer_cls.__name__ for f in FAMILIES]


def family_of(model: torch.nn.Module) -> Family:
    """The :class:`Family` of a transformer; ``TypeError`` listing the supported classes otherwise."""
    for family in FAMILIES:
        if isinstance(model, family.transformer_cls):
            return family
    raise TypeError(
        f"accel does not support {type(model).__name__}; supported transformers: "
        f"{', '.join(supported_transformers())} (or a pipeline holding one as .transformer)"
    )

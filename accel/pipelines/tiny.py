"""Tiny offline pipelines: complete diffusers Wan / Wan-I2V / HunyuanVideo / FLUX pipelines with
random weights, built in memory.

Every component -- transformer, VAE, text encoder(s), tokenizer(s), scheduler, image encoder -- is
created from a small config (the sizes follow diffusers' own fast-test configs), with weights drawn
from a fixed seed, and tokenizers built from an in-memory character vocabulary. Nothing is
downloaded. The pipelines can be saved with ``save_pretrained`` and reloaded offline with
``from_pretrained``. They serve tests, CI and the demo's fallback; their pictures are noise.

::

    pipe = tiny_pipeline("wan", seed=0)
    video = pipe(**tiny_call_kwargs("wan")).frames     # (1, 9, 3, 16, 16)

HunyuanVideo's default prompt template is cut at a position tuned for Llama's real tokenizer; call
the tiny pipeline with ``prompt_template={"template": "{}", "crop_start": 0}`` (included in
:func:`tiny_call_kwargs`).
"""

from __future__ import annotations

import string
from contextlib import contextmanager

import torch

__all__ = [
    "FAMILIES",
    "tiny_call_kwargs",
    "tiny_flux_pipeline",
    "tiny_hunyuan_video_pipeline",
    "tiny_pipeline",
    "tiny_wan_i2v_pipeline",
    "tiny_wan_pipeline",
]

FAMILIES = ("wan", "wan_i2v", "hunyuan_video", "flux")
_CHARS = list(string.ascii_lowercase + string.digits + ".,!?'-")
_TEXT_VOCAB = 1000  # embedding rows of the tiny text encoders (>= every tokenizer's vocabulary)


@contextmanager
def _seeded(seed: int):
    """Run a block with the global CPU RNG seeded, restoring the caller's RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return seed


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# ---------------------------------------------------------------------- tokenizers
def _t5_tokenizer():
    """A T5 (unigram) tokenizer over single characters: ids 0 pad, 1 eos, 2 unk."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + c, -3.0) for c in _CHARS] + [(c, -4.0) for c in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _clip_tokenizer():
    """A CLIP (BPE without merges) tokenizer over single characters, 77 tokens max."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _CHARS:
        vocab[c] = len(vocab)
    for c in _CHARS:
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _llama_tokenizer():
    """A Llama (metaspace BPE without merges) tokenizer over single characters, pad id 3."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "\u2581": 4}
    for c in _CHARS:
        vocab[c] = len(vocab)
    for c in _CHARS:
        vocab["\u2581" + c] = len(vocab)
    return LlamaTokenizer(vocab=vocab, merges=[], pad_token="<pad>")


def _t5_config(cls_config):
    return cls_config(
        vocab_size=_TEXT_VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )


# ---------------------------------------------------------------------- Wan
def _wan_vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def _wan_transformer(num_layers: int, *, in_channels: int = 16, image_dim: int | None = None):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
        out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32, num_layers=num_layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim,
    )


def _wan_components(seed, num_layers: int, **transformer_kwargs):
    """(vae, text encoder, transformer) of the tiny Wan pipelines, each from its own seed offset."""
    from transformers import UMT5Config, UMT5EncoderModel

    seed = _check_seed(seed)
    _check_count("num_layers", num_layers, 1)
    with _seeded(seed):
        vae = _wan_vae()
    with _seeded(seed + 1):
        text_encoder = UMT5EncoderModel(_t5_config(UMT5Config))
    with _seeded(seed + 2):
        transformer = _wan_transformer(num_layers, **transformer_kwargs)
    return vae, text_encoder, transformer


def tiny_wan_pipeline(seed: int = 0, *, num_layers: int = 2):
    """A ``WanPipeline`` (text-to-video) with tiny random weights.

    Args:
        seed: weights are drawn from ``torch.manual_seed(seed)`` (the caller's RNG state is kept);
            an int >= 0. Same seed, same weights.
        num_layers: transformer blocks (each has self-attention ``attn1`` and cross-attention
            ``attn2``), an int >= 1 (default 2).

    Components: ``WanTransformer3DModel`` (2 heads x 12 dims, patch (1, 2, 2)), ``AutoencoderKLWan``
    (base_dim 3, z_dim 16), ``UMT5EncoderModel`` (d_model 32), a character-level T5 tokenizer,
    ``FlowMatchEulerDiscreteScheduler(shift=7.0)``.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline
    vae, text_encoder, transformer = _wan_components(seed, num_layers)
    return WanPipeline(tokenizer=_t5_tokenizer(), text_encoder=text_encoder.eval(), vae=vae.eval(),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer.eval())


def tiny_wan_i2v_pipeline(seed: int = 0, *, num_layers: int = 2):
    """A ``WanImageToVideoPipeline`` with tiny random weights (Wan 2.1 I2V layout).

    Like :func:`tiny_wan_pipeline`, plus a ``CLIPVisionModelWithProjection`` image encoder (hidden 4,
    32 x 32 input) and ``CLIPImageProcessor``; the transformer takes 36 input channels and has
    ``image_dim=4``, so its cross-attention (``attn2``) also attends image tokens.

    Args:
        seed: as in :func:`tiny_wan_pipeline`.
        num_layers: transformer blocks, an int >= 1 (default 2).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    vae, text_encoder, transformer = _wan_components(seed, num_layers, in_channels=36, image_dim=4)
    with _seeded(seed + 3):
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            intermediate_size=16, patch_size=1,
        ))
    return WanImageToVideoPipeline(
        tokenizer=_t5_tokenizer(), text_encoder=text_encoder.eval(), vae=vae.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), image_processor=CLIPImageProcessor(crop_size=32, size=32),
        image_encoder=image_encoder.eval(), transformer=transformer.eval(),
    )


# ---------------------------------------------------------------------- HunyuanVideo
def tiny_hunyuan_video_pipeline(seed: int = 0, *, num_layers: int = 1, num_single_layers: int = 1):
    """A ``HunyuanVideoPipeline`` with tiny random weights.

    Args:
        seed: as in :func:`tiny_wan_pipeline`.
        num_layers: dual-stream blocks, an int >= 1 (default 1).
        num_single_layers: single-stream blocks, an int >= 0 (default 1).

    Components: ``HunyuanVideoTransformer3DModel`` (2 heads x 10 dims, patch 1, one refiner layer),
    ``AutoencoderKLHunyuanVideo`` (8 channels, 8x spatial / 4x temporal compression), ``LlamaModel``
    (hidden 16) + character-level Llama tokenizer, ``CLIPTextModel`` (hidden 8) + character-level CLIP
    tokenizer, ``FlowMatchEulerDiscreteScheduler(shift=7.0)``. Call it with
    ``prompt_template={"template": "{}", "crop_start": 0}``.
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    seed = _check_seed(seed)
    _check_count("num_layers", num_layers, 1)
    _check_count("num_single_layers", num_single_layers, 0)
    with _seeded(seed):
        transformer = HunyuanVideoTransformer3DModel(
            in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=num_layers,
            num_single_layers=num_single_layers, num_refiner_layers=1, patch_size=1, patch_size_t=1,
            guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
        )
    with _seeded(seed + 1):
        blocks = ("HunyuanVideoDownBlock3D",) * 4
        vae = AutoencoderKLHunyuanVideo(
            in_channels=3, out_channels=3, latent_channels=4, down_block_types=blocks,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
            act_fn="silu", norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8,
            temporal_compression_ratio=4, mid_block_add_attention=True,
        )
    with _seeded(seed + 2):
        text_encoder = LlamaModel(LlamaConfig(
            bos_token_id=1, eos_token_id=2, hidden_size=16, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, pad_token_id=3, vocab_size=_TEXT_VOCAB, hidden_act="gelu",
        ))
    with _seeded(seed + 3):
        text_encoder_2 = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, hidden_size=8, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, pad_token_id=1, vocab_size=_TEXT_VOCAB, hidden_act="gelu", projection_dim=32,
        ))
    return HunyuanVideoPipeline(
        text_encoder=text_encoder.eval(), tokenizer=_llama_tokenizer(), transformer=transformer.eval(),
        vae=vae.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=text_encoder_2.eval(), tokenizer_2=_clip_tokenizer(),
    )


# ---------------------------------------------------------------------- FLUX
def tiny_flux_pipeline(seed: int = 0, *, num_layers: int = 1, num_single_layers: int = 1):
    """A ``FluxPipeline`` (FLUX.1 text-to-image) with tiny random weights.

    Args:
        seed: as in :func:`tiny_wan_pipeline`.
        num_layers: dual-stream blocks, an int >= 1 (default 1).
        num_single_layers: single-stream blocks, an int >= 0 (default 1).

    Components: ``FluxTransformer2DModel`` (2 heads x 16 dims, RoPE axes (4, 4, 8)), ``AutoencoderKL``
    (one block, 1 latent channel, so one image token per 2 x 2 pixels), ``CLIPTextModel`` (hidden 32) and
    ``T5EncoderModel`` (d_model 32) with character-level tokenizers,
    ``FlowMatchEulerDiscreteScheduler()``.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    seed = _check_seed(seed)
    _check_count("num_layers", num_layers, 1)
    _check_count("num_single_layers", num_single_layers, 0)
    with _seeded(seed):
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=4, num_layers=num_layers, num_single_layers=num_single_layers,
            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
            axes_dims_rope=[4, 4, 8],
        )
    with _seeded(seed + 1):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=1, hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, pad_token_id=1, vocab_size=_TEXT_VOCAB, hidden_act="gelu", projection_dim=32,
        ))
    with _seeded(seed + 2):
        text_encoder_2 = T5EncoderModel(_t5_config(T5Config))
    with _seeded(seed + 3):
        vae = AutoencoderKL(
            sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
            latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
            shift_factor=0.0609, scaling_factor=1.5035,
        )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae.eval(), text_encoder=text_encoder.eval(),
        tokenizer=_clip_tokenizer(), text_encoder_2=text_encoder_2.eval(), tokenizer_2=_t5_tokenizer(),
        transformer=transformer.eval(),
    )


# ---------------------------------------------------------------------- by name
_BUILDERS = {
    "wan": tiny_wan_pipeline,
    "wan_i2v": tiny_wan_i2v_pipeline,
    "hunyuan_video": tiny_hunyuan_video_pipeline,
    "flux": tiny_flux_pipeline,
}


def tiny_pipeline(family: str, seed: int = 0, **kwargs):
    """The tiny pipeline of ``family``: ``"wan"``, ``"wan_i2v"``, ``"hunyuan_video"`` or ``"flux"``.

    ``seed`` and ``kwargs`` (layer counts) go to the family's builder (:func:`tiny_wan_pipeline`, ...).
    """
    if family not in _BUILDERS:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return _BUILDERS[family](seed, **kwargs)


def tiny_call_kwargs(family: str, *, seed: int = 0, steps: int = 2, size: int | None = None) -> dict:
    """Keyword arguments for a quick call of the tiny pipeline of ``family`` (fresh generator each time).

    Args:
        family: as in :func:`tiny_pipeline`.
        seed: seed of the ``torch.Generator`` that draws the initial noise, an int >= 0.
        steps: ``num_inference_steps``, an int >= 1 (default 2).
        size: output height and width in pixels (default: 16 for video families, 8 for FLUX); for
            video families a multiple of 16, for FLUX a multiple of 2.

    The call returns tensors (``output_type="pt"``); video families make 9 frames (``"wan_i2v"`` passes
    random text embeddings instead of a prompt, see the comment in the code), and guidance is on
    (two transformer calls per step) for Wan and HunyuanVideo (``true_cfg_scale`` for HunyuanVideo).
    """
    if family not in _BUILDERS:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    _check_seed(seed)
    _check_count("steps", steps, 1)
    gen = torch.Generator("cpu").manual_seed(seed)
    if family in ("wan", "wan_i2v"):
        size = 16 if size is None else _check_count("size", size, 16)
        kwargs = dict(prompt="dance monkey", negative_prompt="negative", height=size, width=size, num_frames=9,
                      guidance_scale=6.0, num_inference_steps=steps, max_sequence_length=16, output_type="pt",
                      generator=gen)
        if family == "wan_i2v":
            from PIL import Image

            kwargs["image"] = Image.new("RGB", (size, size), (120, 60, 200))
            # diffusers 0.42.1's WanImageToVideoPipeline cleans prompts with ftfy even when ftfy is not
            # installed (NameError), so the tiny call passes random text embeddings instead of prompts.
            del kwargs["prompt"], kwargs["negative_prompt"]
            kwargs["prompt_embeds"] = torch.randn(1, 16, 32, generator=gen)
            kwargs["negative_prompt_embeds"] = torch.randn(1, 16, 32, generator=gen)
        return kwargs
    if family == "hunyuan_video":
        size = 16 if size is None else _check_count("size", size, 16)
        return dict(prompt="dance monkey", negative_prompt="negative", true_cfg_scale=2.0,
                    prompt_template={"template": "{}", "crop_start": 0}, height=size, width=size, num_frames=9,
                    guidance_scale=4.5, num_inference_steps=steps, max_sequence_length=16, output_type="pt",
                    generator=gen)
    size = 8 if size is None else _check_count("size", size, 2)
    return dict(prompt="dance monkey", height=size, width=size, guidance_scale=3.5, num_inference_steps=steps,
                max_sequence_length=16, output_type="pt", generator=gen)

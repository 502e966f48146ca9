"""Editing with attention control: :func:`edit_generated` (generate a source and its edit together) and
:func:`edit` (edit a real image or video), for FLUX, Wan and HunyuanVideo diffusers pipelines.

Both run the source and the target prompt as one batch of two from the same starting latent, with a
:class:`~accel.control.Controller` carrying :class:`~accel.control.ConsistEdit` (default) or
:class:`~accel.control.MutualSelfAttention` (``rule="masactrl"``). The edit mask is, in order of
precedence: the user's ``mask``; the attention to ``edit_words`` measured in a source-only pass
(:class:`~accel.control.EditMaskObserver`); or all-edit. Real inputs are encoded with the VAE, inverted
along the flow-matching ODE (:mod:`accel.editing.inversion`, by default ConsistEdit's release's UniInv
scheme) and, as in the release, the source branch's vision Q/K in the controlled layers are the ones
recorded during the inversion (:class:`~accel.control.SourceQK`), the mask coming from the inversion's
attention; ``source="latents"`` (ours) replays the inverted latent trajectory instead.

::

    from accel.editing import edit_generated
    result = edit_generated(pipe, "a red circle moving left", "a blue circle moving left",
                            edit_words="red", alpha=1.0, steps=20, seed=0)
    result.source, result.target, result.mask
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import torch

from accel.control import ConsistEdit, Controller, EditMaskObserver, MutualSelfAttention, ReplaySource, SourceQK
from accel.control.consistedit import check_alpha
from accel.control.mask import DEFAULT_THRESHOLD, edit_token_positions, resize_user_mask
from accel.control.scene import CrossAttentionBlend, LatentBlend, SourceStart

__all__ = ["EditResult", "edit", "edit_generated", "encode_input", "token_grid", "RULES", "SOURCES", "ALPHA_DEFAULTS",
           "KEEP_SCENE"]

RULES = ("consistedit", "masactrl")
#: how the source branch of a real-input edit follows the input (:func:`edit`)
SOURCES = ("qk", "latents")
#: ways to keep the source outside the edit mask, beyond the rule (:mod:`accel.control.scene`; not in the release)
KEEP_SCENE = ("latents", "cross_attention")
#: ConsistEdit's recommended consistency strengths (Yin et al. 2025)
ALPHA_DEFAULTS = {"color": 1.0, "material": 1.0, "shape": 0.3, "object": 0.3, "real": 0.1}
_OWN_KWARGS = ("prompt", "generator", "latents", "num_inference_steps", "callback_on_step_end", "prompt_embeds")


@dataclasses.dataclass
class EditResult:
    """What :func:`edit_generated` / :func:`edit` return.

    Attributes:
        source: the source image/video, in the pipeline's ``output_type`` (batch dimension removed).
        target: the edited image/video, same format.
        mask: the edit mask used, bool ``[T, H, W]`` over the token grid (``None``: all-edit).
        heatmap: the normalised attention to the edit words ``[T, H, W]`` when the mask came from them.
        inversion: the :class:`~accel.editing.inversion.Inversion` of a real input (``None`` otherwise).
    """

    source: object
    target: object
    mask: torch.Tensor | None
    heatmap: torch.Tensor | None = None
    inversion: object = None


def _family(pipe) -> str:
    from accel.processors.families import family_of

    transformer = getattr(pipe, "transformer", None)
    if not isinstance(transformer, torch.nn.Module):
        raise TypeError(f"pipe must be a FLUX, Wan or HunyuanVideo diffusers pipeline, got {type(pipe).__name__}")
    return family_of(transformer).name


def _call_default(pipe, name: str, value):
    if value is not None:
        return value
    default = inspect.signature(type(pipe).__call__).parameters[name].default
    if name in ("height", "width") and default is None:  # FLUX: default_sample_size * vae_scale_factor
        return pipe.default_sample_size * pipe.vae_scale_factor
    return default


def token_grid(pipe, *, height: int | None = None, width: int | None = None, num_frames: int | None = None):
    """The self-attention token grid ``(T, H, W)`` a pipeline call of this size produces.

    Args:
        pipe: a FLUX, Wan or HunyuanVideo pipeline.
        height, width: output size in pixels (``None``: the pipeline's default).
        num_frames: video frames (``None``: the pipeline's default; ignored for FLUX).
    """
    family = _family(pipe)
    height, width = _call_default(pipe, "height", height), _call_default(pipe, "width", width)
    if family == "flux":
        f = pipe.vae_scale_factor * 2
        return (1, height // f, width // f)
    num_frames = _call_default(pipe, "num_frames", num_frames)
    cfg = pipe.transformer.config
    if family == "wan":
        p_t, p_h, p_w = cfg.patch_size
    else:
        p_t, p_h, p_w = cfg.patch_size_t, cfg.patch_size, cfg.patch_size
    s_t, s_s = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    return (((num_frames - 1) // s_t + 1) // p_t, height // s_s // p_h, width // s_s // p_w)


def _split_output(out):
    media = out.images if hasattr(out, "images") else out.frames
    return media[0], media[1]


def _text_positions(pipe, family: str, prompt: str, words, kwargs, match: str = "first") -> tuple[list[int], int | None]:
    """(token positions of the edit words, valid text length) for the text the transformer attends."""
    max_len = kwargs.get("max_sequence_length")
    if family == "flux":
        tok = pipe.tokenizer_2
        max_len = max_len or 512
        template, crop = "{}", 0
    elif family == "wan":
        tok = pipe.tokenizer
        max_len = max_len or 512
        template, crop = "{}", 0
    else:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

        tpl = kwargs.get("prompt_template") or DEFAULT_PROMPT_TEMPLATE
        tok, template, crop = pipe.tokenizer, tpl["template"], int(tpl.get("crop_start", 0))
        max_len = max_len or 256
    positions = edit_token_positions(tok, prompt, words, template=template, crop_start=crop, max_length=max_len,
                                     match=match)
    if family == "hunyuan_video":
        return positions, None  # padding comes from the token layout's text_mask
    if family == "flux":
        # FLUX attends every T5 token, padding included, and the release's mask softmax runs over all of
        # them (ConsistEdit_Code @ 0b73d6a: all 512 text keys, no mask): no valid length
        return positions, None
    ids = tok(prompt, max_length=max_len, truncation=True, add_special_tokens=True)["input_ids"]
    return positions, len(ids)


def _resolve_alpha(alpha) -> float:
    if isinstance(alpha, str):
        if alpha not in ALPHA_DEFAULTS:
            raise ValueError(f"alpha must be a number in [0, 1] or one of {sorted(ALPHA_DEFAULTS)}, got {alpha!r}")
        return ALPHA_DEFAULTS[alpha]
    return check_alpha(alpha)


def _check_common(pipe, source_prompt, target_prompt, steps, seed, rule, pipe_kwargs) -> str:
    family = _family(pipe)
    for name, value in (("source_prompt", source_prompt), ("target_prompt", target_prompt)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    bad = [k for k in pipe_kwargs if k in _OWN_KWARGS]
    if bad:
        raise ValueError(f"edit functions set {bad} themselves; pass the prompts, steps and seed as arguments")
    for key in ("num_images_per_prompt", "num_videos_per_prompt"):
        if pipe_kwargs.get(key, 1) != 1:
            raise ValueError(f"{key} must be 1 for editing (the batch holds one (source, target) pair), "
                             f"got {pipe_kwargs[key]!r}")
    return family


def _resolve_mask(pipe, family, mask, grid, pipe_kwargs):
    if mask is None:
        return None
    height, width = _call_default(pipe, "height", pipe_kwargs.get("height")), _call_default(
        pipe, "width", pipe_kwargs.get("width"))
    if family == "flux":
        return resize_user_mask(mask, grid, pixel_size=(height, width))
    frames = _call_default(pipe, "num_frames", pipe_kwargs.get("num_frames"))
    return resize_user_mask(mask, grid, pixel_size=(height, width), num_frames=frames,
                            temporal_factor=pipe.vae_scale_factor_temporal)


def _make_rule(rule: str, alpha: float, mask, start_step: int):
    if rule == "consistedit":
        return ConsistEdit(alpha=alpha, mask=mask)
    return MutualSelfAttention(start_step=start_step, mask=mask)


def _check_keep_scene(keep_scene, has_mask: bool) -> tuple[str, ...]:
    """``keep_scene`` as a tuple of :data:`KEEP_SCENE` names; ``ValueError`` for anything else, or when the
    edit has no mask to keep the scene outside of."""
    if keep_scene is None:
        return ()
    names = (keep_scene,) if isinstance(keep_scene, str) else tuple(keep_scene) \
        if isinstance(keep_scene, (tuple, list)) else None
    if names is None or not names or any(n not in KEEP_SCENE for n in names) or len(set(names)) != len(names):
        raise ValueError(f"keep_scene must be None, one of {KEEP_SCENE} or a tuple of distinct ones, got {keep_scene!r}")
    if not has_mask:
        raise ValueError(f"keep_scene={keep_scene!r} keeps the source outside the edit mask, but this edit has none "
                         "(all-edit); pass edit_words or mask")
    return names


def _scene_rules(keep_scene: tuple[str, ...], mask) -> list:
    """The :mod:`accel.control.scene` rules ``keep_scene`` names, for this edit mask."""
    kinds = {"latents": LatentBlend, "cross_attention": CrossAttentionBlend}
    return [kinds[name](mask) for name in keep_scene]


def _generators(seed: int, n: int, device) -> list[torch.Generator]:
    return [torch.Generator(device="cpu" if device is None else device).manual_seed(seed) for _ in range(n)]


def _negatives(pipe_kwargs: dict, n: int) -> dict:
    neg = pipe_kwargs.get("negative_prompt")
    if isinstance(neg, str):
        pipe_kwargs = dict(pipe_kwargs, negative_prompt=[neg] * n)
    return pipe_kwargs


def _mask_observer(pipe, family, source_prompt, edit_words, pipe_kwargs, mask_options: dict) -> EditMaskObserver:
    positions, valid = _text_positions(pipe, family, source_prompt, edit_words, pipe_kwargs,
                                       match=mask_options.get("word_match", "first"))
    return EditMaskObserver(positions, valid, rows="all", softmax=mask_options.get("softmax"))


def _observe_mask(pipe, family, source_prompt, edit_words, steps, seed, threshold, pipe_kwargs, *, latents=None,
                  replay=None, mask_options=None):
    """A source-only pass with an :class:`EditMaskObserver` in its layers; returns (mask, heatmap)."""
    mask_options = mask_options or {}
    observer = _mask_observer(pipe, family, source_prompt, edit_words, pipe_kwargs, mask_options)
    rules = [observer] + ([replay] if replay is not None else [])
    controller = Controller(rules, layers=mask_options.get("layers", "auto"), num_steps=steps)
    kwargs = dict(_negatives(pipe_kwargs, 1), output_type="latent")
    with controller.install(pipe):
        pipe(prompt=source_prompt, num_inference_steps=steps, latents=latents,
             generator=None if latents is not None else _generators(seed, 1, None),
             callback_on_step_end=controller.callback if replay is not None else None, **kwargs)
    return observer.mask(threshold), observer.heatmap()


def _mask_options(word_match, mask_softmax, mask_layers) -> dict:
    from accel.control.mask import MASK_SOFTMAX, WORD_MATCHES

    if word_match not in WORD_MATCHES:
        raise ValueError(f"word_match must be one of {WORD_MATCHES}, got {word_match!r}")
    if mask_softmax is not None and mask_softmax not in MASK_SOFTMAX:
        raise ValueError(f"mask_softmax must be None or one of {MASK_SOFTMAX}, got {mask_softmax!r}")
    return {"word_match": word_match, "softmax": mask_softmax, "layers": mask_layers}


def edit_generated(pipe, source_prompt: str, target_prompt: str, *, edit_words=None, mask=None, alpha=0.3,
                   steps: int = 28, seed: int = 0, rule: str = "consistedit", layers="auto",
                   threshold: float = DEFAULT_THRESHOLD, start_step: int = 0, keep_scene=None,
                   word_match: str = "first", mask_softmax: str | None = None, mask_layers="auto",
                   source_steps: int = 0, **pipe_kwargs) -> EditResult:
    """Generate an image/video for ``source_prompt`` and its edit for ``target_prompt`` together.

    Both branches start from the same noise (``seed``) and denoise as one batch ``[source, target]``; the
    rule fuses the target's vision-token attention with the source's in the controlled layers.

    Args:
        pipe: a ``FluxPipeline``, ``WanPipeline`` or ``HunyuanVideoPipeline`` (any checkpoint; accel methods
            already applied with :func:`accel.apply` are kept and composed with).
        source_prompt: the prompt of the source.
        target_prompt: the prompt of the edit (typically the source prompt with the edit words changed).
        edit_words: word(s) of ``source_prompt`` whose attention defines the edit mask (a str or a list);
            ``None`` with no ``mask`` means all-edit. A word missing from the prompt raises ``ValueError``.
        mask: a user edit mask (PIL image, list of frames, array/tensor ``[H, W]`` or ``[F, H, W]`` at the
            token grid or the pixel size; nonzero = edit); overrides ``edit_words``.
        alpha: ConsistEdit's consistency strength in [0, 1] (structure lock for ``int(steps * alpha)``
            steps), or a name: ``"color"``/``"material"`` (1.0), ``"shape"``/``"object"`` (0.3), ``"real"``
            (0.1). Default 0.3. Unused by ``rule="masactrl"``.
        steps: number of inference steps, an int >= 1.
        seed: seed of the shared starting noise (CPU generator), an int >= 0.
        rule: ``"consistedit"`` (default) or ``"masactrl"`` (target queries attend to source K/V from
            ``start_step`` on).
        layers: controlled layers (see :class:`~accel.control.Controller`); ``"auto"``: FLUX single-stream
            blocks, all layers of Wan / HunyuanVideo.
        threshold: edit-mask threshold on the normalised attention map, in [0, 1] (default 0.1).
        start_step: MasaCtrl's first mutual-attention step.
        keep_scene: what else keeps the source outside the edit mask (not part of ConsistEdit's release; see
            :mod:`accel.control.scene`): ``None`` (default, the release's rule alone), ``"latents"`` (after
            every step the target's latents outside the mask are the source's), ``"cross_attention"`` (Wan:
            the target's cross-attention output outside the mask is the source's), or a tuple of both.
            Needs an edit mask (``edit_words`` or ``mask``).
        word_match: how ``edit_words`` are found in ``source_prompt``: ``"first"`` (default, the release's:
            the first case-sensitive occurrence as a substring) or ``"words"`` (ours: every whole-word,
            case-insensitive occurrence); see :func:`~accel.control.mask.find_word_spans`.
        mask_softmax: the edit mask's softmax domain (:class:`~accel.control.EditMaskObserver`): ``None``
            (default: the release's per family, ``"joint"`` on FLUX, ``"text"`` on Wan / HunyuanVideo),
            ``"joint"`` or ``"text"``.
        mask_layers: the layers the mask is observed in (as ``layers``); ``"auto"`` (default): FLUX's
            single-stream blocks (the release's), every layer of Wan / HunyuanVideo; ``None``: every layer.
        source_steps: for the first ``source_steps`` steps the target's latents are the source's, whole frame
            (ours, not the release's: :class:`~accel.control.scene.SourceStart`; SDEdit-style), an int in
            ``[0, steps]``; default 0 (off). It keeps what a model decides in those steps -- the objects'
            places, and on the embedded model also their colour (``benchmarks/edit_keep_scene.py``).
        **pipe_kwargs: other pipeline arguments (``height``, ``width``, ``num_frames``, ``guidance_scale``,
            ``negative_prompt``, ``output_type``, ...); not ``prompt``, ``generator``, ``latents``,
            ``num_inference_steps`` or ``callback_on_step_end``.

    Returns:
        An :class:`EditResult`.

    Raises:
        ValueError: bad prompts/steps/seed/rule/alpha/threshold/source_steps, an edit word missing from the source
            prompt, a mask of a size other than the token grid or pixel size, a caching hook that skips
            layers (FirstBlockCache, TaylorSeer, ...).
        TypeError: an unsupported pipeline or mask type.
    """
    family = _check_common(pipe, source_prompt, target_prompt, steps, seed, rule, pipe_kwargs)
    alpha = _resolve_alpha(alpha)
    keep_scene = _check_keep_scene(keep_scene, mask is not None or edit_words is not None)
    if isinstance(source_steps, bool) or not isinstance(source_steps, int) or not 0 <= source_steps <= steps:
        raise ValueError(f"source_steps must be an int in [0, steps={steps}], got {source_steps!r}")
    options = _mask_options(word_match, mask_softmax, mask_layers)
    grid = token_grid(pipe, height=pipe_kwargs.get("height"), width=pipe_kwargs.get("width"),
                      num_frames=pipe_kwargs.get("num_frames"))
    token_mask = _resolve_mask(pipe, family, mask, grid, pipe_kwargs)
    heat = None
    if token_mask is None and edit_words is not None:
        _text_positions(pipe, family, source_prompt, edit_words, pipe_kwargs, match=word_match)  # validate first
        token_mask, heat = _observe_mask(pipe, family, source_prompt, edit_words, steps, seed, threshold, pipe_kwargs,
                                         mask_options=options)
    rules = [_make_rule(rule, alpha, token_mask, start_step), *_scene_rules(keep_scene, token_mask)]
    if source_steps:
        rules.append(SourceStart(source_steps))
    controller = Controller(rules, layers=layers, num_steps=steps)
    blends = bool(keep_scene) or source_steps > 0
    with controller.install(pipe):
        out = pipe(prompt=[source_prompt, target_prompt], num_inference_steps=steps,
                   generator=_generators(seed, 2, None), callback_on_step_end=controller.callback if blends else None,
                   **_negatives(pipe_kwargs, 2))
    source, target = _split_output(out)
    return EditResult(source, target, token_mask, heat)


# ---------------------------------------------------------------------- real inputs
def _to_unit_tensor(media) -> torch.Tensor:
    """An image/video as float ``[F, 3, H, W]`` in [0, 1] (F = 1 for an image)."""
    from PIL import Image

    if isinstance(media, Image.Image):
        media = [media]
    if isinstance(media, (list, tuple)) and media and all(isinstance(m, Image.Image) for m in media):
        arr = np.stack([np.asarray(m.convert("RGB"), dtype=np.float32) / 255.0 for m in media])
        return torch.from_numpy(arr).permute(0, 3, 1, 2)
    if isinstance(media, np.ndarray):
        media = torch.from_numpy(np.ascontiguousarray(media))
        if media.dim() in (3, 4) and media.shape[-1] in (1, 3):  # channels last
            media = media.movedim(-1, -3)
        if media.dtype == torch.uint8:
            media = media.float() / 255.0
    if isinstance(media, torch.Tensor):
        x = media.detach().float().cpu()
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"image_or_video tensor must be [3, H, W] or [F, 3, H, W] in [0, 1], got {tuple(media.shape)}")
        if float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise ValueError("image_or_video values must lie in [0, 1]")
        return x
    raise TypeError(f"image_or_video must be a PIL image, a list of PIL frames, a numpy array or a torch tensor, "
                    f"got {type(media).__name__}")


@torch.no_grad()
def encode_input(pipe, image_or_video) -> tuple[torch.Tensor, dict]:
    """Encode an image (FLUX) or video (Wan, HunyuanVideo) into the latent a pipeline call's ``latents`` takes.

    Args:
        pipe: the pipeline.
        image_or_video: a PIL image, a list of PIL frames, or an array/tensor ``[3, H, W]`` / ``[F, 3, H, W]``
            (``[H, W, 3]`` / ``[F, H, W, 3]`` arrays too) with values in [0, 1] (uint8 arrays in [0, 255]).

    Returns:
        ``(latents, size)``: the clean latent (batch 1; FLUX packed) and the call's ``height``, ``width``
        (and ``num_frames`` for video) as a dict.

    Raises:
        ValueError: a size the pipeline cannot produce exactly (FLUX: multiple of ``2 * vae_scale_factor``;
            video: multiple of ``vae_scale_factor_spatial * patch``, ``num_frames = 1 + k * temporal factor``).
    """
    family = _family(pipe)
    x = _to_unit_tensor(image_or_video)
    f, _, h, w = x.shape
    vae = pipe.vae
    param = next(vae.parameters())
    if family == "flux":
        if f != 1:
            raise ValueError(f"FLUX edits images: image_or_video must hold one frame, got {f}")
        m = pipe.vae_scale_factor * 2
        if h % m or w % m:
            raise ValueError(f"image size {h}x{w} must be a multiple of {m} for this FLUX pipeline")
        z = vae.encode((x * 2 - 1).to(param)).latent_dist.mode()
        z = (z - vae.config.shift_factor) * vae.config.scaling_factor
        latents = pipe._pack_latents(z, 1, z.shape[1], z.shape[2], z.shape[3])
        return latents, {"height": h, "width": w}
    s_t, s_s = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    cfg = pipe.transformer.config
    p = cfg.patch_size[1] if family == "wan" else cfg.patch_size
    if h % (s_s * p) or w % (s_s * p):
        raise ValueError(f"video size {h}x{w} must be a multiple of {s_s * p} for this pipeline")
    if (f - 1) % s_t:
        raise ValueError(f"the video must have 1 + k*{s_t} frames for this pipeline, got {f}")
    video = (x * 2 - 1).permute(1, 0, 2, 3)[None].to(param)   # [1, 3, F, H, W]
    z = vae.encode(video).latent_dist.mode()
    if family == "wan":
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(z)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(z)
        z = (z - mean) / std
    else:
        z = z * vae.config.scaling_factor
    return z, {"height": h, "width": w, "num_frames": f}


def edit(pipe, image_or_video, source_prompt: str, target_prompt: str, *, edit_words=None, mask=None, alpha=0.1,
         steps: int = 28, seed: int = 0, rule: str = "consistedit", layers="auto", inversion: str = "uniinv",
         source: str = "qk", threshold: float = DEFAULT_THRESHOLD, start_step: int = 0, word_match: str = "first",
         mask_softmax: str | None = None, mask_layers="auto", **pipe_kwargs) -> EditResult:
    """Edit a real image (FLUX) or video (Wan, HunyuanVideo) from ``source_prompt`` to ``target_prompt``.

    The input is encoded with the pipeline's VAE and inverted along the flow-matching ODE with the
    source prompt (:func:`accel.editing.inversion.invert`); then source and target denoise as one batch
    from the inverted noise while the rule fuses the target's attention with the source's. With
    ``source="qk"`` (default, ConsistEdit's release) the inversion records the source's vision Q/K in the
    controlled layers and the edit replays them in the source rows (:class:`~accel.control.SourceQK`); an
    ``edit_words`` mask comes from the inversion's own attention in the controlled layers. With
    ``source="latents"`` (ours) the
    source branch replays the inverted latent trajectory (so it reproduces the input exactly) and an
    ``edit_words`` mask comes from a separate replayed source pass.

    Args:
        pipe: as in :func:`edit_generated`.
        image_or_video: the input (see :func:`encode_input`); its size sets the output size.
        source_prompt: a prompt describing the input.
        target_prompt: the prompt of the edit.
        edit_words, mask, rule, layers, threshold, start_step, word_match, mask_softmax, mask_layers: as in
            :func:`edit_generated`.
        alpha: as in :func:`edit_generated`; default 0.1 (the release's value for real inputs).
        steps: inference steps (the inversion's grid), an int >= 1.
        seed: unused by the deterministic inversion; kept for the same signature (an int >= 0).
        inversion: ``"uniinv"`` (default, the release's; ``steps + 1`` transformer calls), ``"euler"`` or
            ``"heun"`` (predictor-corrector, twice the calls; only with ``source="latents"``).
        source: ``"qk"`` (default, the release's) or ``"latents"`` (ours); see above.
        **pipe_kwargs: other pipeline arguments, as in :func:`edit_generated` (not ``height``/``width``/
            ``num_frames``, which come from the input).

    Returns:
        An :class:`EditResult` with ``inversion`` set.

    Raises:
        ValueError: as :func:`edit_generated`; an unknown ``source`` or ``inversion``; ``"heun"`` with
            ``source="qk"`` (Q/K are recorded once per timestep).
    """
    from accel.editing.inversion import INVERSION_METHODS, invert

    family = _check_common(pipe, source_prompt, target_prompt, steps, seed, rule, pipe_kwargs)
    alpha = _resolve_alpha(alpha)
    options = _mask_options(word_match, mask_softmax, mask_layers)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if inversion not in INVERSION_METHODS:
        raise ValueError(f"inversion must be one of {INVERSION_METHODS}, got {inversion!r}")
    if source == "qk" and inversion == "heun":
        raise ValueError("source='qk' records the source's Q/K once per inversion timestep; inversion='heun' "
                         "evaluates twice per step: use inversion='uniinv' or 'euler', or source='latents'")
    if source == "qk" and mask_layers != "auto":
        raise ValueError("with source='qk' the mask is observed during the inversion in the controlled layers "
                         "(`layers`), as the release does; mask_layers applies to source='latents'")
    for key in ("height", "width", "num_frames"):
        if key in pipe_kwargs:
            raise ValueError(f"edit() takes {key!r} from the input; do not pass it")
    latents, size = encode_input(pipe, image_or_video)
    kwargs = dict(pipe_kwargs, **size)
    grid = token_grid(pipe, height=size["height"], width=size["width"], num_frames=size.get("num_frames"))
    token_mask = _resolve_mask(pipe, family, mask, grid, kwargs)
    words = token_mask is None and edit_words is not None
    if words:
        _text_positions(pipe, family, source_prompt, edit_words, kwargs, match=word_match)
    invert_kwargs = {k: v for k, v in kwargs.items() if k != "output_type"}
    heat = None
    if source == "qk":
        edit_rule = _make_rule(rule, alpha, None, start_step)
        edit_layers = type(edit_rule).default_layers.get(family) if layers == "auto" else layers
        recorder = SourceQK(steps).recording()
        observer = _mask_observer(pipe, family, source_prompt, edit_words, kwargs, options) if words else None
        # one pass: the Q/K of the controlled layers and the mask from the same layers' attention
        record_rules = [recorder] + ([observer] if observer is not None else [])
        with Controller(record_rules, layers=edit_layers, num_steps=steps).install(pipe):
            inv = invert(pipe, latents, source_prompt, steps=steps, method=inversion, **invert_kwargs)
        if observer is not None:
            token_mask, heat = observer.mask(threshold), observer.heatmap()
        rules = [recorder.replaying(), _make_rule(rule, alpha, token_mask, start_step)]
        callback = None
    else:
        inv = invert(pipe, latents, source_prompt, steps=steps, method=inversion, **invert_kwargs)
        if words:
            replay = ReplaySource(inv.trajectory, inv.clean, rows="all")
            token_mask, heat = _observe_mask(pipe, family, source_prompt, edit_words, steps, seed, threshold, kwargs,
                                             latents=inv.noise, replay=replay, mask_options=options)
        rules = [_make_rule(rule, alpha, token_mask, start_step), ReplaySource(inv.trajectory, inv.clean)]
        callback = True
    controller = Controller(rules, layers=layers, num_steps=steps)
    with controller.install(pipe):
        out = pipe(prompt=[source_prompt, target_prompt], num_inference_steps=steps,
                   latents=inv.noise.expand(2, *inv.noise.shape[1:]).clone(),
                   callback_on_step_end=controller.callback if callback else None, **_negatives(kwargs, 2))
    source_media, target = _split_output(out)
    return EditResult(source_media, target, token_mask, heat, inv)

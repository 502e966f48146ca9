"""PIE-Bench-style editing metrics (Ju et al. 2024, "PnP Inversion", PIE-Bench): how well an edit keeps
what should stay.

* **Background preservation** (:func:`background_metrics`): MSE and PSNR over the pixels *outside* the
  edit mask only; SSIM of the two images with the edit region set to 0 in both (PIE-Bench's
  masked-image convention, since SSIM needs whole windows).
* **Object placement** (:func:`object_iou`): per frame, intersection over union of the object pixels of
  the source and of the edit (found by the caller, e.g. :func:`accel.embedded.adherence.object_mask`),
  averaged over the frames where either has any.
* **Structure** (:func:`structure_similarity`): SSIM of the Canny edge maps (``skimage.feature.canny``)
  of the grey-level source and edit, per frame, averaged -- 1.0 when the edges are identical.
* **CLIP score** (:func:`clip_score`): ``100 * cos(image embedding, text embedding)`` with a CLIP model
  found *locally* (never downloaded); when none is available it is reported absent (``None`` with the
  reason from :func:`clip_status`).

Image conventions as in :mod:`accel.eval.metrics`: ``[H, W]`` / ``[H, W, C]`` images, ``[F, H, W]`` /
``[F, H, W, C]`` videos (channel last, frames first), values on a scale with ``data_range`` (1.0 for
[0, 1]). Masks: True (nonzero) = edit region, at the pixel size (``[H, W]`` or ``[F, H, W]``) or at a
token grid ``[T, h, w]`` (e.g. :attr:`accel.editing.pipeline.EditResult.mask`), which is upsampled.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from accel.eval.metrics import psnr, ssim

__all__ = [
    "background_metrics",
    "structure_similarity",
    "object_iou",
    "clip_status",
    "clip_score",
    "edit_scores",
    "mask_to_pixels",
    "CLIP_CANDIDATES",
]

#: local CLIP checkpoints tried by :func:`clip_status` (hub ids, looked up in the local cache only)
CLIP_CANDIDATES = ("openai/clip-vit-large-patch14", "openai/clip-vit-base-patch32", "openai/clip-vit-base-patch16")


def _array(x, name: str) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    try:
        from PIL import Image

        if isinstance(x, Image.Image):
            x = np.asarray(x.convert("RGB"), dtype=np.float64) / 255.0
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (2, 3, 4):
        raise ValueError(f"{name} must be an image [H, W(, C)] or a video [F, H, W(, C)], got shape {arr.shape}")
    return arr


def _frames(arr: np.ndarray, video: bool) -> np.ndarray:
    """``[F, H, W, C]`` view of an image or video array (C = 1 for grey)."""
    if not video:
        arr = arr[None]
    if arr.ndim == 3:
        arr = arr[..., None]
    return arr


def _is_video(arr: np.ndarray) -> bool:
    return arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4))


def mask_to_pixels(mask, frames: int, height: int, width: int) -> np.ndarray:
    """A bool ``[F, H, W]`` pixel mask from a pixel or token-grid mask (True = edit).

    Args:
        mask: ``[H, W]``, ``[F, H, W]`` at the pixel size, or ``[T, h, w]`` with ``h``, ``w`` dividing
            ``H``, ``W`` (a token grid; each token covers an ``H/h x W/w`` patch; latent frame 0 covers frame
            0 and latent frame ``j`` covers frames ``s*(j-1)+1 .. s*j`` with ``s = (F - 1) / (T - 1)``).
        frames, height, width: the pixel size.

    Raises:
        ValueError: a mask size that maps to no pixel grid of this size.
    """
    m = _array(mask, "mask") > 0.5 if not (torch.is_tensor(mask) and mask.dtype == torch.bool) else \
        mask.detach().cpu().numpy()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise ValueError(f"mask must be [H, W] or [F, H, W], got shape {m.shape}")
    t, h, w = m.shape
    if height % h or width % w:
        raise ValueError(f"mask of spatial size {h}x{w} does not divide the image size {height}x{width}")
    m = m.repeat(height // h, axis=1).repeat(width // w, axis=2)
    if t == frames:
        return m
    if t == 1:
        return np.repeat(m, frames, axis=0)
    if (frames - 1) % (t - 1):
        raise ValueError(f"a mask with {t} frames cannot be mapped to {frames} frames (need (F - 1) divisible by T - 1)")
    s = (frames - 1) // (t - 1)
    index = [0] + [(f - 1) // s + 1 for f in range(1, frames)]
    return m[index]


def background_metrics(source, edited, mask, data_range: float = 1.0) -> dict:
    """Background preservation of an edit: how unchanged the pixels outside the edit mask are.

    Args:
        source: the source image/video (see the module docstring).
        edited: the edited image/video, same shape.
        mask: the edit region (pixel or token-grid mask, True = edit; see :func:`mask_to_pixels`).
        data_range: max - min of the value scale.

    Returns:
        ``{"mse", "psnr_db", "ssim", "background_fraction"}``: MSE over the background pixels (all channels,
        all frames); PSNR per frame over that frame's background pixels (all channels), averaged over the
        frames that have background (:mod:`accel.eval.metrics`' convention; ``inf`` when identical); SSIM
        (mean over frames) of both images with the edit region set to 0 (needs H, W >= 11); the fraction of
        pixels in the background.

    Raises:
        ValueError: shapes differ, or the mask covers every pixel (no background).
    """
    a, b = _array(source, "source"), _array(edited, "edited")
    if a.shape != b.shape:
        raise ValueError(f"source and edited must have the same shape, got {a.shape} and {b.shape}")
    video = _is_video(a)
    fa, fb = _frames(a, video), _frames(b, video)
    keep = ~mask_to_pixels(mask, fa.shape[0], fa.shape[1], fa.shape[2])
    if not keep.any():
        raise ValueError("the edit mask covers the whole image: there is no background to measure")
    err = float(((fa - fb)[keep] ** 2).mean())
    ma, mb = fa * keep[..., None], fb * keep[..., None]
    ssims = [ssim(ma[i], mb[i], data_range) for i in range(fa.shape[0])]
    # accel.eval.metrics' one PSNR convention: per frame (here over that frame's background), then averaged
    psnrs = [psnr(fa[i][keep[i]], fb[i][keep[i]], data_range) for i in range(fa.shape[0]) if keep[i].any()]
    return {
        "mse": err,
        "psnr_db": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "background_fraction": float(keep.mean()),
    }


def object_iou(source_objects, edited_objects, *, per_frame: bool = False):
    """Mean over frames of ``|S & E| / |S | E|`` for bool object masks ``S`` (source) and ``E`` (edit).

    Args:
        source_objects, edited_objects: bool ``[F, H, W]`` (or ``[H, W]``) arrays of the same shape, True on
            object pixels.
        per_frame: return the list of per-frame IoUs instead (``None`` for a frame where ``S | E`` is empty).

    Returns:
        The mean IoU over the frames where ``S | E`` has any pixel; ``None`` when no frame has one.
    """
    a, b = np.asarray(source_objects, dtype=bool), np.asarray(edited_objects, dtype=bool)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise ValueError(f"object masks must be bool [F, H, W] or [H, W] of the same shape, got {a.shape} and {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    union = (a | b).reshape(a.shape[0], -1).sum(1)
    inter = (a & b).reshape(a.shape[0], -1).sum(1)
    frames = union > 0
    if per_frame:
        return [float(i / u) if u else None for i, u in zip(inter, union, strict=True)]
    return float(np.mean(inter[frames] / union[frames])) if frames.any() else None


def structure_similarity(source, edited, sigma: float = 1.0, data_range: float = 1.0) -> float:
    """SSIM of the Canny edge maps of the grey-level source and edit, averaged over frames.

    Args:
        source, edited: images/videos, same shape (colour is averaged to grey first).
        sigma: Gaussian smoothing of the Canny detector (``skimage.feature.canny``), > 0.
        data_range: max - min of the value scale (edges are found on values divided by it).

    Returns:
        A value in [-1, 1]; 1.0 when the edge maps are identical.
    """
    from skimage.feature import canny

    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    a, b = _array(source, "source"), _array(edited, "edited")
    if a.shape != b.shape:
        raise ValueError(f"source and edited must have the same shape, got {a.shape} and {b.shape}")
    video = _is_video(a)
    fa, fb = _frames(a, video).mean(-1) / data_range, _frames(b, video).mean(-1) / data_range
    scores = []
    for x, y in zip(fa, fb, strict=True):
        ex, ey = canny(x, sigma=sigma).astype(np.float64), canny(y, sigma=sigma).astype(np.float64)
        scores.append(1.0 if np.array_equal(ex, ey) else ssim(ex, ey, 1.0))
    return float(np.mean(scores))


def _load_clip(model: str | None):
    from transformers import CLIPModel, CLIPProcessor

    names = [model] if model is not None else list(CLIP_CANDIDATES)
    errors = []
    for name in names:
        try:
            return CLIPModel.from_pretrained(name, local_files_only=True).eval(), \
                CLIPProcessor.from_pretrained(name, local_files_only=True), name
        except Exception as exc:  # noqa: BLE001 - any failure means "not available locally"
            errors.append(f"{name}: {type(exc).__name__}")
    raise FileNotFoundError("; ".join(errors))


def clip_status(model: str | None = None) -> tuple[bool, str]:
    """Whether a CLIP model is available locally (no download is ever attempted), and a reason.

    Args:
        model: a local folder or hub id to use; ``None`` tries :data:`CLIP_CANDIDATES` in the local cache.
    """
    try:
        _, _, name = _load_clip(model)
    except (FileNotFoundError, ImportError) as exc:
        return False, f"CLIP score not computed: no CLIP model available locally ({exc})"
    return True, f"CLIP model {name}"


def clip_score(image, prompt: str, model: str | None = None) -> float | None:
    """CLIP score ``100 * max(cos(image, text), 0)`` (Hessel et al. 2021) with a local CLIP model, or ``None``.

    Args:
        image: an image ``[H, W, 3]`` in [0, 1] (or a PIL image); for a video pass frames one by one.
        prompt: the text (the target prompt).
        model: as in :func:`clip_status`.

    Returns:
        The score, or ``None`` when no CLIP model is available locally (see :func:`clip_status`).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    try:
        clip, processor, _ = _load_clip(model)
    except (FileNotFoundError, ImportError):
        return None
    arr = np.clip(_array(image, "image"), 0, 1)
    pixels = (arr * 255).round().astype(np.uint8)
    inputs = processor(text=[prompt], images=[pixels], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = clip(**inputs)
    img, txt = out.image_embeds[0], out.text_embeds[0]
    cos = torch.nn.functional.cosine_similarity(img, txt, dim=0)
    return float(100.0 * cos.clamp(min=0))


def edit_scores(source, edited, mask, target_prompt: str | None = None, *, data_range: float = 1.0,
                clip_model: str | None = None) -> dict:
    """All PIE-Bench-style scores of one edit.

    Args:
        source, edited, mask, data_range: as in :func:`background_metrics`.
        target_prompt: for the CLIP score (skipped when ``None``).
        clip_model: as in :func:`clip_status`.

    Returns:
        ``{"background": {...}, "structure_ssim": float, "clip_score": float | None, "clip_note": str}``;
        for a video the CLIP score is the mean over frames.
    """
    scores = {
        "background": background_metrics(source, edited, mask, data_range),
        "structure_ssim": structure_similarity(source, edited, data_range=data_range),
    }
    if target_prompt is None:
        scores["clip_score"], scores["clip_note"] = None, "no target prompt given"
        return scores
    ok, note = clip_status(clip_model)
    scores["clip_note"] = note
    if not ok:
        scores["clip_score"] = None
        return scores
    arr = _array(edited, "edited") / data_range
    frames = _frames(arr, _is_video(arr))
    values = [clip_score(f if f.shape[-1] == 3 else np.repeat(f, 3, axis=-1), target_prompt, clip_model)
              for f in frames]
    scores["clip_score"] = float(np.mean(values))
    return scores

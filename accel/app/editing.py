"""The Edit tab's work as plain functions: attention-control editing (ConsistEdit) of a generated or given clip.

Three sources: ``"generate"`` (the source prompt is generated and edited in the same batch,
:func:`accel.editing.edit_generated`), ``"upload"`` (an uploaded image or video) and ``"last"``
(the last result of the Generate tab); the latter two are resized to the chosen size, cut to the
chosen frame count, inverted and edited (:func:`accel.editing.edit`).

The edit mask is, in order: an uploaded mask image, a drawn mask, the attention to the edit words,
or none (everything may change). Background preservation compares the edited result with the
source (the input itself for uploads and the last result) outside the mask, with
:func:`accel.eval.edit_metrics.background_metrics` (PIE-Bench's conventions), and the structure score
is :func:`accel.eval.edit_metrics.structure_similarity` (SSIM of the edge maps).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from accel.render.folder import is_inside

from .logic import MAX_PROMPT_CHARS, MAX_SEED, AppInputError, Progress, _int_field, _write_png, _write_result, check_size
from .models import ModelCache
from .outputs import OutputFolder
from .uploads import fit_media, read_media

__all__ = ["SOURCES", "EditSettings", "EditOutcome", "run_edit", "mask_picture"]

SOURCES = ("generate", "upload", "last")
DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class EditSettings:
    """One Edit request, as the page sends it.

    Attributes:
        model: a model the app offers (:func:`accel.app.models.offered_models`: preset names of accel.pipelines.presets).
        source: ``"generate"``, ``"upload"`` or ``"last"`` (see the module docstring).
        source_prompt: describes the source (1 to 400 characters).
        target_prompt: the edit's prompt (1 to 400 characters), usually the source prompt with the
            edit words replaced.
        edit_words: comma-separated words of ``source_prompt`` whose attention defines the edit mask
            (empty: no word mask).
        alpha: ConsistEdit's consistency strength in [0, 1] (structure locked for ``floor(alpha *
            steps)`` steps; 1 suits colour edits, 0.3 shape edits, 0.1 real inputs).
        steps: denoising (and inversion) steps, 1 to the model's ``max_steps``.
        seed: noise seed for ``"generate"``, 0 to 2**31 - 1.
        height, width, frames: the output size; inputs are resized and cut to it (same rules as
            :class:`~accel.app.logic.GenerateSettings`).
        upload: path of the uploaded image/video (``source="upload"``); must lie inside the app's
            upload folder (``upload_root`` of :func:`run_edit`).
        mask_file: path of an uploaded mask image (white or opaque = edit), or ``None``; inside the
            upload folder too.
        drawn_mask: a drawn mask, ``[H, W]`` or ``[H, W, C]`` array (any nonzero = edit), or ``None``.
    """

    model: str
    source: str
    source_prompt: str
    target_prompt: str
    edit_words: str = ""
    alpha: float = 0.3
    steps: int = 4
    seed: int = 0
    height: int = 64
    width: int = 64
    frames: int = 9
    upload: str | None = None
    mask_file: str | None = None
    drawn_mask: np.ndarray | None = None


@dataclasses.dataclass
class EditOutcome:
    """What one Edit request produced (paths inside the app's output folder).

    Attributes:
        kind: ``"video"`` or ``"image"``.
        source_output: the source file (for inputs: the input as resized and cut).
        edited_output: the edited file.
        mask_picture: PNG of the token-grid edit mask (frames left to right; white = edit), or ``None``
            when nothing restricted the edit.
        mask: bool ``[T, H, W]`` token-grid mask used, or ``None``.
        mask_origin: ``"uploaded mask"``, ``"drawn mask"``, ``"edit words"`` or ``"none"``.
        edited_fraction: fraction of pixels inside the mask (1.0 without a mask).
        background_psnr_db, background_ssim: :func:`accel.eval.edit_metrics.background_metrics` of the
            edited result against the source (``None`` when the mask covers everything; SSIM also
            ``None`` for frames smaller than the SSIM window).
        structure_ssim: :func:`accel.eval.edit_metrics.structure_similarity` (edge-map SSIM) of the
            source and the edit, or ``None`` for frames smaller than the SSIM window.
        latency_s: wall time of the edit call (seconds).
        source_frames, edited_frames: float ``[F, H, W, 3]`` in [0, 1].
    """

    kind: str
    source_output: Path
    edited_output: Path
    mask_picture: Path | None
    mask: torch.Tensor | None
    mask_origin: str
    edited_fraction: float
    background_psnr_db: float | None
    background_ssim: float | None
    structure_ssim: float | None
    latency_s: float
    source_frames: np.ndarray
    edited_frames: np.ndarray

    def figures_markdown(self) -> str:
        """The figures as a small Markdown table."""
        def fmt(value, spec, unit=""):
            if value is None:
                return "n/a (no background)"
            if value == float("inf"):
                return "∞ (identical)"
            return f"{value:{spec}}{unit}"

        rows = [
            ("edit mask from", self.mask_origin),
            ("edited area", f"{100 * self.edited_fraction:.1f} % of pixels"),
            ("background PSNR vs source", fmt(self.background_psnr_db, ".2f", " dB")),
            ("background SSIM vs source", fmt(self.background_ssim, ".4f")),
            ("structure (edge-map SSIM)", "n/a" if self.structure_ssim is None else f"{self.structure_ssim:.4f}"),
            ("latency", f"{self.latency_s:.2f} s"),
        ]
        return "\n".join(["| figure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def mask_picture(mask: torch.Tensor, *, target: int = 96) -> np.ndarray:
    """uint8 ``[H, W, 3]``: the token-grid frames of ``mask`` left to right (white = edit), 2-px grey gaps,
    each frame scaled up by an integer factor to at least ``target`` pixels high."""
    m = mask.cpu().numpy().astype(np.uint8) * 255
    scale = max(1, -(-target // m.shape[1]))
    tiles = [f.repeat(scale, 0).repeat(scale, 1) for f in m]
    gap = np.full((tiles[0].shape[0], 2), 128, np.uint8)
    row = np.concatenate([x for tile in tiles for x in (tile, gap)][:-1], axis=1)
    return np.repeat(row[..., None], 3, axis=2)


def _drawn_to_array(drawn) -> np.ndarray | None:
    """A drawn mask as float ``[H, W]`` (1 = edit), or ``None`` when nothing is drawn."""
    if drawn is None:
        return None
    arr = np.asarray(drawn)
    if arr.ndim == 3:
        arr = arr[..., 3] if arr.shape[-1] == 4 else arr.max(-1)
    if arr.ndim != 2:
        raise AppInputError(f"the drawn mask must be a 2-D picture, got shape {arr.shape}")
    arr = (arr > 0).astype(np.float32)
    return arr if arr.any() else None


def _resize_mask(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if arr.shape == (height, width):
        return arr
    im = Image.fromarray((arr * 255).astype(np.uint8)).resize((width, height), Image.NEAREST)
    return np.asarray(im, dtype=np.float32) / 255.0


def _validate(s: EditSettings, models: ModelCache):
    try:
        entry = models.entry(s.model)
    except ValueError as exc:
        raise AppInputError(str(exc)) from exc
    if s.source not in SOURCES:
        raise AppInputError(f"source must be one of {list(SOURCES)}, got {s.source!r}")
    prompts = {}
    for name in ("source_prompt", "target_prompt"):
        text = (getattr(s, name) or "").strip()
        if not text or len(text) > MAX_PROMPT_CHARS:
            raise AppInputError(f"{name.replace('_', ' ')} must have 1 to {MAX_PROMPT_CHARS} characters, got {len(text)}")
        prompts[name] = text
    if isinstance(s.alpha, bool) or not isinstance(s.alpha, (int, float)) or not 0.0 <= float(s.alpha) <= 1.0:
        raise AppInputError(f"alpha must be a number in [0, 1], got {s.alpha!r}")
    height, width, frames = check_size(entry, s.height, s.width, s.frames)
    size = dict(height=height, width=width)
    steps = _int_field("steps", s.steps, 1, entry.max_steps)
    seed = _int_field("seed", s.seed, 0, MAX_SEED)
    words = [w.strip() for w in (s.edit_words or "").split(",") if w.strip()]
    s = dataclasses.replace(s, alpha=float(s.alpha), steps=steps, seed=seed, frames=frames, **prompts, **size)
    return s, entry, words


def _inside(root: Path, path: str, what: str, folder: str) -> str:
    """``path`` if it lies inside ``root`` (the app's ``folder``), else refuse."""
    if not is_inside(path, root):
        raise AppInputError(f"{what} is not inside the app's {folder}; only files uploaded through the page "
                            "or written by the app are read")
    return path


def run_edit(settings: EditSettings, models: ModelCache, outputs: OutputFolder, *, last_output: str | None = None,
             upload_root: str | Path | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
             progress: Progress | None = None) -> EditOutcome:
    """Validate and run one Edit request; write its files into a new folder of ``outputs``.

    Args:
        settings: the request (see :class:`EditSettings`).
        models: the app's loaded pipelines.
        outputs: the app's output folder.
        last_output: path of the Generate tab's last result (``source="last"``); must lie inside
            ``outputs``.
        upload_root: the folder the server keeps uploads in; ``settings.upload`` and
            ``settings.mask_file`` must lie inside it (default: the output folder's root).
        max_upload_bytes: size limit of uploaded files (media and mask).
        progress: called as ``progress(fraction, text)`` at the start and end of the work.

    Raises:
        AppInputError: an invalid request (missing or unreadable upload, a path outside the output
            folder, an edit word missing from the source prompt, a mask of the wrong size, ...).
    """
    from accel.editing import edit, edit_generated

    s, entry, words = _validate(settings, models)
    uploads = outputs.root if upload_root is None else Path(upload_root).expanduser().resolve()
    folder_name = "output folder" if upload_root is None else "upload folder"
    media = None
    if s.source == "upload":
        if not s.upload:
            raise AppInputError("source is 'upload' but no file was uploaded")
        media = read_media(_inside(uploads, s.upload, "the uploaded file", folder_name), max_bytes=max_upload_bytes,
                           max_frames=s.frames)
    elif s.source == "last":
        if not last_output:
            raise AppInputError("source is 'last' but nothing was generated yet in this session (use the Generate tab)")
        media = read_media(_inside(outputs.root, last_output, "the last result", "output folder"),
                           max_bytes=max_upload_bytes, max_frames=s.frames)
    if media is not None:
        if entry.kind == "image":
            media = media[:1]
        media = fit_media(media, height=s.height, width=s.width, frames=s.frames)

    mask, origin = None, "none"
    if s.mask_file:
        uploaded = read_media(_inside(uploads, s.mask_file, "the mask image", folder_name), max_bytes=max_upload_bytes,
                              max_frames=1)[0].mean(-1)
        mask, origin = _resize_mask((uploaded > 0.5).astype(np.float32), s.height, s.width), "uploaded mask"
    drawn = _drawn_to_array(s.drawn_mask)
    if drawn is not None:
        if mask is not None:
            raise AppInputError("give either an uploaded mask or a drawn mask, not both")
        mask, origin = _resize_mask(drawn, s.height, s.width), "drawn mask"
    if mask is None and words:
        origin = "edit words"

    if progress is not None:
        progress(0.0, f"loading {entry.name}")
    pipe = models.pipeline(entry.name)
    call = entry.call_kwargs(height=s.height, width=s.width, frames=s.frames, steps=s.steps)
    call.pop("num_inference_steps")
    common = dict(edit_words=words or None, mask=mask, alpha=s.alpha, steps=s.steps, seed=s.seed)
    if progress is not None:
        progress(0.1, "editing" if media is None else "inverting and editing")
    t0 = time.perf_counter()
    try:
        if media is None:
            result = edit_generated(pipe, s.source_prompt, s.target_prompt, **common, **call)
        else:
            for key in ("height", "width", "num_frames"):
                call.pop(key, None)
            result = edit(pipe, media, s.source_prompt, s.target_prompt, **common, **call)
    except ValueError as exc:  # edit words not in the prompt, mask size, ...
        raise AppInputError(f"the edit cannot run: {exc}") from exc
    latency = time.perf_counter() - t0
    if progress is not None:
        progress(1.0, "writing files")

    def as_frames(x):
        arr = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
        return np.clip(arr if entry.kind == "video" else arr[None], 0.0, 1.0)

    source = media if media is not None else as_frames(result.source)
    edited = as_frames(result.target)
    folder = outputs.new_request_dir("edit")
    source_path = _write_result(source, folder, "source", entry.kind)
    edited_path = _write_result(edited, folder, "edited", entry.kind)
    from accel.eval.edit_metrics import background_metrics, structure_similarity
    from accel.eval.metrics import SSIM_WINDOW

    whole = min(s.height, s.width) >= SSIM_WINDOW
    structure = structure_similarity(source, edited) if whole else None
    picture, fraction, psnr, ssim = None, 1.0, None, None
    if result.mask is not None:
        picture = folder / "mask.png"
        _write_png(mask_picture(result.mask), picture)
        fraction = float(result.mask.float().mean())  # every token covers the same number of pixels
        if not bool(result.mask.all()):
            if whole:
                figures = background_metrics(source, edited, result.mask)
                psnr, ssim = figures["psnr_db"], figures["ssim"]
                fraction = 1.0 - figures["background_fraction"]
            else:
                from accel.eval.edit_metrics import mask_to_pixels
                from accel.eval.metrics import psnr as psnr_of

                keep = ~mask_to_pixels(result.mask, *source.shape[:3])
                psnr, fraction = psnr_of(source[keep], edited[keep]), 1.0 - float(keep.mean())
    return EditOutcome(kind=entry.kind, source_output=source_path, edited_output=edited_path, mask_picture=picture,
                       mask=result.mask, mask_origin=origin, edited_fraction=fraction, background_psnr_db=psnr,
                       background_ssim=ssim, structure_ssim=structure, latency_s=latency, source_frames=source,
                       edited_frames=edited)

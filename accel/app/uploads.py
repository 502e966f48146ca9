"""Reading media the page hands in (uploads, or the last generated result), checked before use.

A file is accepted only when it is a regular file no larger than the limit, its name ends in one of
:data:`IMAGE_SUFFIXES` or :data:`VIDEO_SUFFIXES`, and it decodes as such (Pillow for images,
FFmpeg through imageio for videos) within a pixel and frame budget. Nothing else is ever opened:
no pickle, no archives, no paths outside what the page or the app's own output folder provides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .logic import AppInputError

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "MAX_PIXELS", "read_media", "fit_media"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif")
#: largest accepted width x height of one frame
MAX_PIXELS = 4096 * 4096


def read_media(path: str | Path, *, max_bytes: int, max_frames: int) -> np.ndarray:
    """Decode an image or video file into float ``[F, H, W, 3]`` in [0, 1] (``F = 1`` for an image).

    Args:
        path: the file.
        max_bytes: largest accepted file size in bytes.
        max_frames: read at most this many frames of a video (the rest is ignored).

    Raises:
        AppInputError: a missing or non-regular file, a file over ``max_bytes``, an unsupported
            suffix, a file that does not decode as the media its suffix says, or frames over
            :data:`MAX_PIXELS`.
    """
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise AppInputError(f"the file {name!r} is missing or not a regular file")
    size = p.stat().st_size
    if size > max_bytes:
        raise AppInputError(f"{name!r} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.1f} MB")
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return _read_image(p)
    if suffix in VIDEO_SUFFIXES:
        return _read_video(p, max_frames)
    raise AppInputError(f"{name!r}: only images ({', '.join(IMAGE_SUFFIXES)}) and videos "
                        f"({', '.join(VIDEO_SUFFIXES)}) are accepted")


def _check_pixels(name: str, width: int, height: int) -> None:
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise AppInputError(f"{name!r} is {width}x{height} pixels; at most {MAX_PIXELS} pixels per frame are accepted")


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            _check_pixels(path.name, *im.size)
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AppInputError(f"{path.name!r} is not a readable image") from exc
    return rgb[None]


def _read_video(path: Path, max_frames: int) -> np.ndarray:
    import imageio.v2 as imageio

    frames = []
    try:
        reader = imageio.get_reader(path, format="FFMPEG")
        try:
            for frame in reader:
                if not frames:
                    _check_pixels(path.name, frame.shape[1], frame.shape[0])
                frames.append(np.asarray(frame)[..., :3])
                if len(frames) >= max_frames:
                    break
        finally:
            reader.close()
    except AppInputError:
        raise
    except Exception as exc:  # FFmpeg refuses the file: it is not a video
        raise AppInputError(f"{path.name!r} is not a readable video") from exc
    if not frames:
        raise AppInputError(f"{path.name!r} has no frames")
    return np.stack(frames).astype(np.float32) / 255.0


def fit_media(media: np.ndarray, *, height: int, width: int, frames: int) -> np.ndarray:
    """Resize ``media`` (``[F, H, W, 3]`` in [0, 1]) to ``height`` x ``width`` and keep its first ``frames`` frames.

    Frames are resized independently (bilinear, Pillow). An image (one frame) given where more frames are
    asked for raises, as does a video shorter than ``frames``.

    Raises:
        AppInputError: fewer frames than ``frames``.
    """
    from PIL import Image

    if media.shape[0] < frames:
        raise AppInputError(f"the input has {media.shape[0]} frame(s); {frames} are needed (lower 'frames')")
    out = []
    for frame in media[:frames]:
        im = Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))
        if im.size != (width, height):
            im = im.resize((width, height), Image.BILINEAR)
        out.append(np.asarray(im, dtype=np.float32) / 255.0)
    return np.stack(out)

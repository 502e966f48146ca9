"""Writing rendered media: MP4 clips, PNG images, PNG frame folders and strips, all atomically.

Every writer first writes under a temporary name in the destination folder (:func:`partial_path`),
then renames it over the destination (``os.replace``, atomic on POSIX within one file system). A
file (or frame folder) that exists under its final name is therefore complete; an interrupted write
leaves only the temporary name, which the next write replaces.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import torch

__all__ = ["partial_path", "to_uint8", "write_mp4", "write_png", "write_frames", "write_strip"]


def partial_path(path: Path) -> Path:
    """The temporary name used while ``path`` is being written: ``.<stem>.partial<suffix>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def to_uint8(frames) -> np.ndarray:
    """``frames`` (a tensor or array of floats in [0, 1], any shape) as uint8 in [0, 255]; uint8 passes through.

    Values outside [0, 1] are clipped; rounding is to nearest.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if frames.dtype == torch.uint8:
            return frames.numpy()
        arr = frames.float().numpy()
    else:
        arr = np.asarray(frames)
        if arr.dtype == np.uint8:
            return arr
    return (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)


def _check_frames(frames: np.ndarray, name: str) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{name} must be [F, H, W, 3] RGB frames with F >= 1, got shape {tuple(frames.shape)}")


def write_mp4(frames, path: Path, fps: int) -> None:
    """Write ``frames`` (``[F, H, W, 3]`` floats in [0, 1] or uint8) to ``path`` as H.264 MP4, atomically.

    Args:
        frames: the clip, frame-major, RGB.
        path: destination file (its folder must exist); replaced only when the new file is complete.
        fps: frames per second stored in the file, an int >= 1.
    """
    import imageio.v2 as imageio

    if isinstance(fps, bool) or not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be an int >= 1, got {fps!r}")
    data = to_uint8(frames)
    _check_frames(data, "frames")
    path = Path(path)
    tmp = partial_path(path)
    try:
        # macro_block_size=1: keep small sizes as they are (no resize to multiples of 16)
        imageio.mimwrite(tmp, list(data), fps=fps, format="FFMPEG", codec="libx264", macro_block_size=1)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_png(image, path: Path) -> None:
    """Write one RGB image (``[H, W, 3]`` floats in [0, 1] or uint8) to ``path`` as PNG, atomically."""
    import imageio.v2 as imageio

    data = to_uint8(image)
    if data.ndim != 3 or data.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] RGB, got shape {tuple(data.shape)}")
    path = Path(path)
    tmp = partial_path(path)
    try:
        imageio.imwrite(tmp, data, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_frames(frames, folder: Path) -> None:
    """Write each frame of ``frames`` (``[F, H, W, 3]``) as ``folder/frame_0000.png``, ... atomically.

    The frames go to a temporary sibling folder that is renamed to ``folder`` when all are written;
    an existing ``folder`` is replaced.
    """
    import imageio.v2 as imageio

    data = to_uint8(frames)
    _check_frames(data, "frames")
    folder = Path(folder)
    tmp = partial_path(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for i, frame in enumerate(data):
            imageio.imwrite(tmp / f"frame_{i:04d}.png", frame, format="PNG")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_strip(frames, path: Path, every: int = 4, scale: int = 2) -> None:
    """Write every ``every``-th frame side by side as one PNG (nearest-neighbour upscaled by ``scale``), atomically."""
    data = to_uint8(frames)
    _check_frames(data, "frames")
    data = data[::every]
    strip = np.concatenate(list(data), axis=1).repeat(scale, 0).repeat(scale, 1)
    write_png(strip, path)

"""Pictures that put the method's frames next to the dense ones: one frame of each and their amplified
difference, and the same three side by side for every frame (one clip, so the three play in step).

Frames are float ``[F, H, W, 3]`` in [0, 1] (what :class:`accel.app.logic.GenerateResult` holds). The
difference picture is ``min(1, gain * |method - dense|)`` per pixel and channel: black where the two
agree, white where they differ by ``1 / gain`` or more.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DIFF_GAIN", "difference", "frame_pictures", "side_by_side", "scale_note"]

#: the difference picture's amplification (a difference of 1 / DIFF_GAIN or more is white)
DIFF_GAIN = 4.0
#: pixels between the pictures of :func:`side_by_side` (white)
GAP = 4


def _check(frames: np.ndarray, dense: np.ndarray) -> None:
    if frames.shape != dense.shape or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames and dense must both be [F, H, W, 3], got {frames.shape} and {dense.shape}")


def difference(frames: np.ndarray, dense: np.ndarray, gain: float = DIFF_GAIN) -> np.ndarray:
    """``min(1, gain * |frames - dense|)``, float32, the shape of the inputs.

    Args:
        frames, dense: float ``[F, H, W, 3]`` in [0, 1], the same shape.
        gain: amplification, a finite number > 0.
    """
    _check(frames, dense)
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a finite number > 0, got {gain!r}")
    return np.minimum(1.0, gain * np.abs(frames.astype(np.float32) - dense.astype(np.float32)))


def _upscaled(image: np.ndarray, target: int) -> np.ndarray:
    """``image`` (float ``[H, W, 3]`` in [0, 1]) as uint8, each pixel repeated so the longer side reaches
    ``target`` pixels (never scaled down)."""
    scale = max(1, -(-target // max(image.shape[:2])))
    out = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
    return out.repeat(scale, axis=0).repeat(scale, axis=1)


def frame_pictures(frames: np.ndarray, dense: np.ndarray, index: int, *, gain: float = DIFF_GAIN,
                   target: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame ``index`` of the method, of dense, and their difference (:func:`difference`), as uint8
    ``[h, w, 3]`` pictures enlarged by pixel repetition to at least ``target`` pixels on the longer side.

    Raises:
        ValueError: ``index`` outside ``0 .. F-1`` (the message gives the range), or the shapes differ.
    """
    _check(frames, dense)
    if isinstance(index, float) and index.is_integer():
        index = int(index)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(frames):
        raise ValueError(f"frame must be a whole number from 0 to {len(frames) - 1}, got {index!r}")
    diff = difference(frames[index:index + 1], dense[index:index + 1], gain)[0]
    return _upscaled(frames[index], target), _upscaled(dense[index], target), _upscaled(diff, target)


def side_by_side(frames: np.ndarray, dense: np.ndarray, *, gain: float = DIFF_GAIN) -> np.ndarray:
    """Every frame as ``method | dense | difference`` in one picture (float ``[F, H, 3W + 2 GAP, 3]``, white
    gaps of :data:`GAP` pixels): one clip whose three parts always show the same frame."""
    _check(frames, dense)
    gap = np.ones((*frames.shape[:2], GAP, 3), dtype=np.float32)
    return np.concatenate([frames.astype(np.float32), gap, dense.astype(np.float32), gap,
                           difference(frames, dense, gain)], axis=2)


def scale_note(gain: float = DIFF_GAIN) -> str:
    """The difference picture's scale in words."""
    return (f"difference: |method - dense| × {gain:g} per pixel and channel; black: equal, white: a difference of "
            f"{1 / gain:.2f} or more (on a 0-1 scale)")

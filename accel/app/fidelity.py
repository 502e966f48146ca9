"""PSNR and SSIM of a result against a reference clip, over all pixels or a chosen region.

Both use data range 1 (frames are floats in [0, 1]). SSIM is scikit-image's
``structural_similarity`` (Wang et al. 2004, uniform 7 x 7 window, colour channels averaged), whose
per-pixel map is averaged over the region and the frames.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["fidelity"]


def fidelity(frames: np.ndarray, reference: np.ndarray, where: np.ndarray | None = None) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``frames`` against ``reference``.

    Args:
        frames: float ``[F, H, W, 3]`` in [0, 1].
        reference: the same shape.
        where: optional bool ``[F, H, W]``: only these pixels count (e.g. the background of an edit);
            ``None`` counts every pixel.

    Returns:
        ``(psnr, ssim)``: PSNR over the counted values (``inf`` when they are identical); SSIM with
        the largest odd window up to 7 that fits the frame: without ``where``, scikit-image's mean
        SSIM per frame (which leaves out a border of half a window), averaged over frames; with
        ``where``, the full SSIM map averaged over the counted pixels.

    Raises:
        ValueError: shapes differ, ``where`` has the wrong shape, or counts no pixel.
    """
    from skimage.metrics import structural_similarity

    if frames.shape != reference.shape or frames.ndim != 4:
        raise ValueError(f"frames {frames.shape} and reference {reference.shape} must both be [F, H, W, 3]")
    if where is not None:
        where = np.asarray(where, dtype=bool)
        if where.shape != frames.shape[:3]:
            raise ValueError(f"where must be bool {frames.shape[:3]}, got {where.shape}")
        if not where.any():
            raise ValueError("where selects no pixel")
    a = frames.astype(np.float64)
    b = reference.astype(np.float64)
    err = ((a - b) ** 2).mean(-1)
    mse = float(err[where].mean() if where is not None else err.mean())
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    win = min(7, *(d if d % 2 else d - 1 for d in a.shape[1:3]))
    if where is None:
        ssim = float(np.mean([structural_similarity(x, y, data_range=1.0, channel_axis=-1, win_size=win)
                              for x, y in zip(a, b, strict=True)]))
        return psnr, ssim
    maps = np.stack([structural_similarity(x, y, data_range=1.0, channel_axis=-1, win_size=win, full=True)[1].mean(-1)
                     for x, y in zip(a, b, strict=True)])
    return psnr, float(maps[where].mean())

"""PSNR and SSIM of a result against a reference over a chosen region (the background of an edit).

Whole-frame figures come from :mod:`accel.eval.metrics`; this module adds the region. SSIM here is
scikit-image's ``structural_similarity`` map (Wang et al. 2004, uniform window of up to 7 x 7, colour
channels averaged), averaged over the region's pixels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["region_fidelity"]


def region_fidelity(frames: np.ndarray, reference: np.ndarray, where: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``frames`` against ``reference`` over the pixels ``where`` selects.

    Args:
        frames: float ``[F, H, W, 3]`` in [0, 1].
        reference: the same shape.
        where: bool ``[F, H, W]``: the pixels that count.

    Returns:
        ``(psnr, ssim)``: PSNR (data range 1) of the selected pixels' values (``inf`` when identical);
        the SSIM map (largest odd window up to 7 that fits the frame; data range 1) averaged over the
        selected pixels.

    Raises:
        ValueError: shapes differ, ``where`` has the wrong shape, or selects no pixel.
    """
    from skimage.metrics import structural_similarity

    if frames.shape != reference.shape or frames.ndim != 4:
        raise ValueError(f"frames {frames.shape} and reference {reference.shape} must both be [F, H, W, 3]")
    where = np.asarray(where, dtype=bool)
    if where.shape != frames.shape[:3]:
        raise ValueError(f"where must be bool {frames.shape[:3]}, got {where.shape}")
    if not where.any():
        raise ValueError("where selects no pixel")
    a = frames.astype(np.float64)
    b = reference.astype(np.float64)
    mse = float(((a - b) ** 2).mean(-1)[where].mean())
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    win = min(7, *(d if d % 2 else d - 1 for d in a.shape[1:3]))
    maps = np.stack([structural_similarity(x, y, data_range=1.0, channel_axis=-1, win_size=win, full=True)[1].mean(-1)
                     for x, y in zip(a, b, strict=True)])
    return psnr, float(maps[where].mean())

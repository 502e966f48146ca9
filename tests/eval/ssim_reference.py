"""Reference PSNR/SSIM written from the papers' formulas, independent of scikit-image (tests only).

SSIM: Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004 -- an 11x11 Gaussian window with sigma 1.5
(normalised to sum 1), K1 = 0.01, K2 = 0.03, population local variances, the SSIM map over the valid
region (the whole window inside the image) averaged; colour images average the per-channel SSIM. This
was accel's own implementation before :mod:`accel.eval.metrics` switched to scikit-image.
"""

import math

import numpy as np
import torch

WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03


def _gaussian() -> torch.Tensor:
    x = torch.arange(WINDOW, dtype=torch.float64) - (WINDOW - 1) / 2
    w = torch.exp(-(x**2) / (2 * SIGMA**2))
    return w / w.sum()


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    g = _gaussian()
    x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1))


def ssim_per_frame(reference, test, data_range: float = 1.0) -> list[float]:
    """SSIM of each frame of ``[F, H, W]`` or ``[F, H, W, C]`` videos (channel mean), all planes filtered at once."""
    a = torch.as_tensor(np.asarray(reference, dtype=np.float64))
    b = torch.as_tensor(np.asarray(test, dtype=np.float64))
    frames = a.shape[0]
    if a.ndim == 4:
        a, b = a.movedim(-1, 1), b.movedim(-1, 1)
    a = a.reshape(-1, 1, a.shape[-2], a.shape[-1])
    b = b.reshape(-1, 1, b.shape[-2], b.shape[-1])
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a), _filter_valid(b)
    var_a = _filter_valid(a * a) - mu_a**2
    var_b = _filter_valid(b * b) - mu_b**2
    cov = _filter_valid(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean(dim=(1, 2, 3)).view(frames, -1).mean(dim=1).tolist()


def ssim(reference, test, data_range: float = 1.0) -> float:
    """SSIM of one ``[H, W]`` or ``[H, W, C]`` image pair (channel mean)."""
    return ssim_per_frame(np.asarray(reference)[None], np.asarray(test)[None], data_range)[0]


def psnr(reference, test, data_range: float = 1.0) -> float:
    """PSNR (dB) over every element of one frame."""
    err = float(((np.asarray(reference, dtype=np.float64) - np.asarray(test, dtype=np.float64)) ** 2).mean())
    return math.inf if err == 0 else 10.0 * math.log10(data_range**2 / err)

"""Image and video fidelity metrics: MSE, PSNR, SSIM (and LPIPS when its weights are on disk).

Conventions (the layout diffusers returns with ``output_type="np"``):

- an *image* is ``[H, W]`` or ``[H, W, C]`` (channel last);
- a *video* is ``[F, H, W]`` or ``[F, H, W, C]`` (frames first); video metrics are computed per frame
  and averaged over frames (arithmetic mean);
- values are floats on a known scale, ``data_range`` = max - min of that scale (1.0 for [0, 1]
  images, 255 for uint8 images). Inputs may be numpy arrays, torch tensors or anything
  ``numpy.asarray`` accepts; all arithmetic is in float64.

SSIM follows Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
structural similarity", IEEE TIP 2004: an 11x11 Gaussian window with sigma 1.5 (normalised to sum
1), K1 = 0.01, K2 = 0.03, population (biased) local variances, the SSIM map taken over the *valid*
region only (positions where the whole window lies inside the image) and averaged; colour images
average the per-channel SSIM.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "SSIM_WINDOW",
    "SSIM_SIGMA",
    "mse",
    "psnr",
    "ssim",
    "video_psnr",
    "video_ssim",
    "compare_frames",
    "lpips_status",
    "lpips_distance",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def _as_pair(reference, test, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(np.asarray(reference.detach().cpu() if torch.is_tensor(reference) else reference))
    b = torch.as_tensor(np.asarray(test.detach().cpu() if torch.is_tensor(test) else test))
    if a.shape != b.shape:
        raise ValueError(f"{name}: reference and test must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError(f"{name}: inputs are empty (shape {tuple(a.shape)})")
    return a.to(torch.float64), b.to(torch.float64)


def _check_range(data_range: float) -> None:
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number (max - min of the value scale), got {data_range!r}")


def mse(reference, test) -> float:
    """Mean squared error over every element of two arrays of the same shape."""
    a, b = _as_pair(reference, test, "mse")
    return float(((a - b) ** 2).mean())


def psnr(reference, test, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over every element: ``10 * log10(data_range**2 / MSE)``.

    Args:
        reference: the reference image (any shape).
        test: the image to score, same shape.
        data_range: max - min of the value scale (1.0 for [0, 1]).

    Returns:
        PSNR in decibels; ``math.inf`` when the arrays are identical.
    """
    _check_range(data_range)
    err = mse(reference, test)
    if err == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / err)


@functools.lru_cache(maxsize=4)
def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``[N, 1, H, W]``, valid region only."""
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)
    x = torch.nn.functional.conv2d(x, g.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(x, g.view(1, 1, -1, 1))


def _ssim_planes(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM of each ``[N, H, W]`` plane pair -> ``[N]``."""
    a, b = a[:, None], b[:, None]
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_a, mu_b = _filter_valid(a), _filter_valid(b)
    var_a = _filter_valid(a * a) - mu_a**2
    var_b = _filter_valid(b * b) - mu_b**2
    cov = _filter_valid(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den).mean(dim=(1, 2, 3))


def _planes(x: torch.Tensor, image_ndim: int) -> torch.Tensor:
    """``[..., H, W]`` or ``[..., H, W, C]`` -> ``[N, H, W]`` planes (channels moved to the batch)."""
    if image_ndim == 3:
        x = x.movedim(-1, -3)
    return x.reshape(-1, x.shape[-2], x.shape[-1])


def _check_image_ndim(shape, name: str, lead: int) -> int:
    ndim = len(shape) - lead
    if ndim not in (2, 3):
        kind = "video [F, H, W] or [F, H, W, C]" if lead else "image [H, W] or [H, W, C]"
        raise ValueError(f"{name}: expected an {kind}, got shape {tuple(shape)}")
    h, w = shape[lead], shape[lead + 1]
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(
            f"{name}: height and width must be >= {SSIM_WINDOW} (the SSIM window), got {h}x{w} from shape {tuple(shape)}"
        )
    return ndim


def ssim(reference, test, data_range: float = 1.0) -> float:
    """Mean structural similarity of one image pair (Wang et al. 2004; window in the module docstring).

    Args:
        reference: ``[H, W]`` or ``[H, W, C]`` (channel last), H and W >= 11.
        test: the image to score, same shape.
        data_range: max - min of the value scale (1.0 for [0, 1]).

    Returns:
        SSIM in [-1, 1]; 1.0 for identical images. Colour images: mean of the per-channel SSIM.
    """
    _check_range(data_range)
    a, b = _as_pair(reference, test, "ssim")
    nd = _check_image_ndim(a.shape, "ssim", 0)
    return float(_ssim_planes(_planes(a, nd), _planes(b, nd), data_range).mean())


def _per_frame_ssim(a: torch.Tensor, b: torch.Tensor, data_range: float) -> list[float]:
    nd = _check_image_ndim(a.shape, "video_ssim", 1)
    frames = a.shape[0]
    per_plane = _ssim_planes(_planes(a, nd), _planes(b, nd), data_range)
    return per_plane.view(frames, -1).mean(dim=1).tolist()


def _per_frame_psnr(a: torch.Tensor, b: torch.Tensor, data_range: float) -> list[float]:
    errs = ((a - b) ** 2).reshape(a.shape[0], -1).mean(dim=1).tolist()
    return [math.inf if e == 0 else 10.0 * math.log10(data_range**2 / e) for e in errs]


def video_psnr(reference, test, data_range: float = 1.0) -> float:
    """PSNR (dB) of each frame, averaged over frames; ``[F, ...]`` inputs, frames first.

    A frame identical to its reference scores ``inf``, and so does the mean then.
    """
    _check_range(data_range)
    a, b = _as_pair(reference, test, "video_psnr")
    if a.ndim < 2:
        raise ValueError(f"video_psnr: expected frames first, [F, H, W] or [F, H, W, C], got shape {tuple(a.shape)}")
    return float(np.mean(_per_frame_psnr(a, b, data_range)))


def video_ssim(reference, test, data_range: float = 1.0) -> float:
    """SSIM of each frame (as :func:`ssim`), averaged over frames; ``[F, H, W]`` or ``[F, H, W, C]``."""
    _check_range(data_range)
    a, b = _as_pair(reference, test, "video_ssim")
    return float(np.mean(_per_frame_ssim(a, b, data_range)))


def compare_frames(reference, test, data_range: float = 1.0) -> dict:
    """All metrics of a video, frames first: ``[F, H, W]`` or ``[F, H, W, C]`` (one image: pass ``image[None]``).

    Args:
        reference: the reference frames.
        test: the frames to score, same shape.
        data_range: max - min of the value scale.

    Returns:
        ``{"mse", "psnr_db", "ssim", "psnr_db_per_frame", "ssim_per_frame", "frames"}``: ``mse`` over all
        elements; ``psnr_db`` and ``ssim`` are means of the per-frame values (inf when a frame is identical).
    """
    _check_range(data_range)
    a, b = _as_pair(reference, test, "compare_frames")
    p = _per_frame_psnr(a, b, data_range)
    s = _per_frame_ssim(a, b, data_range)
    return {
        "mse": float(((a - b) ** 2).mean()),
        "psnr_db": float(np.mean(p)),
        "ssim": float(np.mean(s)),
        "psnr_db_per_frame": p,
        "ssim_per_frame": s,
        "frames": int(a.shape[0]),
    }


_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS (Zhang et al. 2018, AlexNet variant) can run without any download, and why not.

    It needs the ``lpips`` package (which ships its linear-layer weights) and torchvision's AlexNet
    weights already in the torch hub cache (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``).
    """
    if importlib.util.find_spec("lpips") is None:
        return False, "LPIPS not computed: the 'lpips' package is not installed"
    if importlib.util.find_spec("torchvision") is None:
        return False, "LPIPS not computed: torchvision is not installed"
    weights = Path(torch.hub.get_dir()) / "checkpoints" / _ALEXNET_FILE
    if not weights.is_file():
        return False, f"LPIPS not computed: AlexNet weights not found at {weights} (never downloaded by accel)"
    return True, "LPIPS (AlexNet, v0.1) computed from local weights"


@functools.lru_cache(maxsize=1)
def _lpips_model():
    import lpips  # optional dependency, checked by lpips_status

    return lpips.LPIPS(net="alex", verbose=False).eval()


def lpips_distance(reference, test) -> float | None:
    """Mean LPIPS distance over frames of ``[F, H, W, 3]`` (or one ``[H, W, 3]``) in [0, 1]; ``None``
    when :func:`lpips_status` says it cannot run offline (nothing is ever downloaded)."""
    ok, _ = lpips_status()
    if not ok:
        return None
    a, b = _as_pair(reference, test, "lpips_distance")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"lpips_distance: expected [F, H, W, 3] or [H, W, 3] RGB in [0, 1], got shape {tuple(a.shape)}")
    to = lambda x: (x.permute(0, 3, 1, 2).float() * 2 - 1)  # noqa: E731 - [0,1] NHWC -> [-1,1] NCHW
    with torch.no_grad():
        return float(_lpips_model()(to(a), to(b)).mean())

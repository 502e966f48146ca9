"""Image and video fidelity metrics: MSE, PSNR, SSIM (scikit-image), and LPIPS when installed with its weights on disk.

Conventions (the layout diffusers returns with ``output_type="np"``):

- an *image* is ``[H, W]`` or ``[H, W, C]`` (channel last); it counts as one frame;
- a *video* is ``[F, H, W]`` or ``[F, H, W, C]`` (frames first);
- **one PSNR convention**: PSNR is computed per frame, ``10 * log10(data_range**2 / MSE of the frame)``
  over all pixels and channels of that frame, and a video's PSNR is the arithmetic mean of its frames'
  PSNR (a frame identical to its reference scores ``inf``, and so does the mean then). SSIM and LPIPS
  are likewise per frame, then averaged; ``mse`` is the one figure over every element at once;
- values are floats on a known scale, ``data_range`` = max - min of that scale (1.0 for [0, 1]
  images, 255 for uint8 images). Inputs may be numpy arrays, torch tensors or anything
  ``numpy.asarray`` accepts; all arithmetic is in float64.

PSNR and SSIM are scikit-image's (``skimage.metrics``; the ``eval`` extra installs it), called with the
SSIM of Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to structural
similarity", IEEE TIP 2004: an 11x11 Gaussian window with sigma 1.5 (``gaussian_weights=True,
sigma=1.5``: radius ``int(3.5 * 1.5 + 0.5) = 5``), K1 = 0.01, K2 = 0.03, population (biased) local
variances (``use_sample_covariance=False``); scikit-image averages the SSIM map over the positions where
the whole window lies inside the image (it crops 5 pixels at each border), and colour images average
the per-channel SSIM. ``benchmarks/metrics_library.py`` (``benchmarks/results/metrics_library.json``)
measured these calls against the papers' formulas as we had written them (now the test reference
``tests/eval/ssim_reference.py``): equal to 5e-15 on random and real frames, and SSIM 5.8-9.4x faster on
a loaded 2-core CPU (PSNR the same speed); so no metric of our own is kept.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np

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


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (torch is not needed to compute the metrics)
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _as_pair(reference, test, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_array(reference), _as_array(test)
    if a.shape != b.shape:
        raise ValueError(f"{name}: reference and test must have the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: inputs are empty (shape {a.shape})")
    return a, b


def _check_range(data_range: float) -> None:
    if not (isinstance(data_range, (int, float)) and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number (max - min of the value scale), got {data_range!r}")


def mse(reference, test) -> float:
    """Mean squared error over every element of two arrays of the same shape."""
    a, b = _as_pair(reference, test, "mse")
    return float(((a - b) ** 2).mean())


def _psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    # scikit-image divides by the MSE unchecked: identical frames give inf, with a numpy divide warning
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(a, b, data_range=data_range))


def psnr(reference, test, data_range: float = 1.0) -> float:
    """PSNR of one frame (an image of any shape, every element counted): ``10 * log10(data_range**2 / MSE)`` dB.

    For a video use :func:`video_psnr` (per frame, then averaged: the module's one PSNR convention).

    Args:
        reference: the reference image (any shape).
        test: the image to score, same shape.
        data_range: max - min of the value scale (1.0 for [0, 1]).

    Returns:
        PSNR in decibels; ``math.inf`` when the arrays are identical.
    """
    _check_range(data_range)
    a, b = _as_pair(reference, test, "psnr")
    return _psnr(a, b, float(data_range))


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


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float, image_ndim: int) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=data_range, channel_axis=-1 if image_ndim == 3 else None,
                                       gaussian_weights=True, sigma=SSIM_SIGMA, use_sample_covariance=False))


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
    return _ssim(a, b, float(data_range), nd)


def _per_frame_ssim(a: np.ndarray, b: np.ndarray, data_range: float, name: str = "video_ssim") -> list[float]:
    nd = _check_image_ndim(a.shape, name, 1)
    return [_ssim(x, y, data_range, nd) for x, y in zip(a, b, strict=True)]


def _per_frame_psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> list[float]:
    return [_psnr(x, y, data_range) for x, y in zip(a, b, strict=True)]


def _check_frames(a: np.ndarray, name: str) -> None:
    if a.ndim < 2:
        raise ValueError(f"{name}: expected frames first, [F, H, W] or [F, H, W, C], got shape {a.shape}")


def video_psnr(reference, test, data_range: float = 1.0) -> float:
    """PSNR (dB) of each frame, averaged over frames; ``[F, ...]`` inputs, frames first.

    A frame identical to its reference scores ``inf``, and so does the mean then.
    """
    _check_range(data_range)
    a, b = _as_pair(reference, test, "video_psnr")
    _check_frames(a, "video_psnr")
    return float(np.mean(_per_frame_psnr(a, b, float(data_range))))


def video_ssim(reference, test, data_range: float = 1.0) -> float:
    """SSIM of each frame (as :func:`ssim`), averaged over frames; ``[F, H, W]`` or ``[F, H, W, C]``."""
    _check_range(data_range)
    a, b = _as_pair(reference, test, "video_ssim")
    return float(np.mean(_per_frame_ssim(a, b, float(data_range))))


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
    _check_frames(a, "compare_frames")
    p = _per_frame_psnr(a, b, float(data_range))
    s = _per_frame_ssim(a, b, float(data_range), "compare_frames")
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

    It needs the ``lpips`` package (``pip install accel[lpips]``: lpips and torchvision; lpips ships its
    linear-layer weights) and torchvision's AlexNet weights already in the torch hub cache
    (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``; torchvision would download them on first
    use, accel never does).
    """
    if importlib.util.find_spec("lpips") is None:
        return False, "LPIPS not computed: the 'lpips' package is not installed"
    if importlib.util.find_spec("torchvision") is None:
        return False, "LPIPS not computed: torchvision is not installed"
    import torch

    weights = Path(torch.hub.get_dir()) / "checkpoints" / _ALEXNET_FILE
    if not weights.is_file():
        return False, f"LPIPS not computed: AlexNet weights not found at {weights} (never downloaded by accel)"
    return True, "LPIPS (AlexNet, v0.1) computed from local weights"


@functools.lru_cache(maxsize=1)
def _lpips_model():
    import lpips  # optional dependency, checked by lpips_status

    return lpips.LPIPS(net="alex", verbose=False).eval()


def lpips_distance(reference, test) -> float | None:
    """LPIPS distance of each frame of ``[F, H, W, 3]`` (or one ``[H, W, 3]``) RGB in [0, 1], averaged over
    frames; ``None`` when :func:`lpips_status` says it cannot run offline (nothing is ever downloaded)."""
    ok, _ = lpips_status()
    if not ok:
        return None
    import torch

    a, b = _as_pair(reference, test, "lpips_distance")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"lpips_distance: expected [F, H, W, 3] or [H, W, 3] RGB in [0, 1], got shape {tuple(a.shape)}")
    to = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float() * 2 - 1  # noqa: E731 - [0,1] NHWC -> [-1,1] NCHW
    with torch.no_grad():
        return float(_lpips_model()(to(a), to(b)).mean())  # one distance per frame, averaged

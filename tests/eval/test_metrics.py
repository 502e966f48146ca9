"""Metrics against hand-computed values and an independent implementation (scikit-image)."""

import math

import numpy as np
import pytest
import torch

from accel.eval import metrics


def _rng_image(shape, seed=0):
    return np.random.default_rng(seed).random(shape)


def test_psnr_of_known_uniform_perturbation():
    a = _rng_image((16, 16, 3))
    b = a + 0.1  # MSE = 0.01 exactly -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert metrics.mse(a, b) == pytest.approx(0.01)
    assert metrics.psnr(a, b) == pytest.approx(20.0)
    assert metrics.psnr(a * 255, b * 255, data_range=255) == pytest.approx(20.0)


def test_psnr_identical_is_inf():
    a = _rng_image((12, 12))
    assert metrics.psnr(a, a.copy()) == math.inf


def test_ssim_identical_is_one():
    a = _rng_image((20, 24, 3))
    assert metrics.ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images_matches_formula():
    # constant images: sigma = cov = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) exactly
    a, b = 0.3, 0.7
    c1 = (0.01 * 1.0) ** 2
    want = (2 * a * b + c1) / (a * a + b * b + c1)
    got = metrics.ssim(np.full((16, 16), a), np.full((16, 16), b))
    assert got == pytest.approx(want, rel=1e-12)


def test_ssim_matches_scikit_image_gaussian_window():
    skm = pytest.importorskip("skimage.metrics")
    a = _rng_image((32, 40, 3), 1)
    b = np.clip(a + 0.1 * _rng_image((32, 40, 3), 2) - 0.05, 0, 1)
    want = skm.structural_similarity(
        a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert metrics.ssim(a, b) == pytest.approx(want, abs=1e-10)
    want_gray = skm.structural_similarity(
        a[..., 0], b[..., 0], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert metrics.ssim(a[..., 0], b[..., 0]) == pytest.approx(want_gray, abs=1e-10)


def test_video_metrics_average_per_frame():
    ref = _rng_image((3, 16, 16, 3), 3)
    test = ref.copy()
    test[0] += 0.1   # 20 dB
    test[1] += 0.01  # 40 dB
    test[2] += 0.001  # 60 dB
    assert metrics.video_psnr(ref, test) == pytest.approx(40.0)
    per = [metrics.ssim(ref[i], test[i]) for i in range(3)]
    assert metrics.video_ssim(ref, test) == pytest.approx(sum(per) / 3, abs=1e-12)
    out = metrics.compare_frames(torch.from_numpy(ref), torch.from_numpy(test))
    assert out["frames"] == 3
    assert out["psnr_db_per_frame"] == pytest.approx([20.0, 40.0, 60.0])
    assert out["psnr_db"] == pytest.approx(40.0)
    assert out["ssim_per_frame"] == pytest.approx(per, abs=1e-12)
    assert out["mse"] == pytest.approx((0.01 + 1e-4 + 1e-6) / 3)


def test_bad_inputs_raise_naming_the_problem():
    a = _rng_image((16, 16))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(a, a[:15])
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(a, a, data_range=0)
    with pytest.raises(ValueError, match=">= 11"):
        metrics.ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(ValueError, match=r"image \[H, W\]"):
        metrics.ssim(a.ravel(), a.ravel())


def test_lpips_status_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    ok, reason = metrics.lpips_status()
    assert not ok and "LPIPS not computed" in reason
    assert metrics.lpips_distance(_rng_image((16, 16, 3)), _rng_image((16, 16, 3), 1)) is None

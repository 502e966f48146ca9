"""Metrics against hand-computed values and an independent implementation of the papers' formulas
(tests/eval/ssim_reference.py; accel computes them with scikit-image)."""

import math
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from accel.eval import metrics
from tests.eval import ssim_reference

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "embedded_sample.png"


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


def test_ssim_and_psnr_match_the_reference_on_random_images():
    a = _rng_image((32, 40, 3), 1)
    b = np.clip(a + 0.1 * _rng_image((32, 40, 3), 2) - 0.05, 0, 1)
    assert metrics.ssim(a, b) == pytest.approx(ssim_reference.ssim(a, b), abs=1e-12)
    assert metrics.ssim(a[..., 0], b[..., 0]) == pytest.approx(ssim_reference.ssim(a[..., 0], b[..., 0]), abs=1e-12)
    assert metrics.psnr(a, b) == pytest.approx(ssim_reference.psnr(a, b), abs=1e-12)
    assert metrics.ssim(a * 255, b * 255, data_range=255) == pytest.approx(ssim_reference.ssim(a * 255, b * 255, 255),
                                                                         abs=1e-12)


def _real_frames() -> np.ndarray:
    """The 10 frames of docs/embedded_sample.png (two clips of the embedded model, 5 frames each), [10, 256, 256, 3]."""
    from PIL import Image

    strip = np.asarray(Image.open(SAMPLE).convert("RGB"), dtype=np.float64) / 255.0
    rows = strip.reshape(2, 256, 5, 256, 3).transpose(0, 2, 1, 3, 4)
    return rows.reshape(10, 256, 256, 3)


def test_video_metrics_match_the_reference_on_real_frames():
    frames = _real_frames()
    first, second = frames[:5], frames[5:]  # two different clips: low SSIM; and a clip against its next frames
    for ref, test in ((first, second), (frames[:4], frames[1:5])):
        out = metrics.compare_frames(ref, test)
        want_ssim = [ssim_reference.ssim(r, t) for r, t in zip(ref, test, strict=True)]
        want_psnr = [ssim_reference.psnr(r, t) for r, t in zip(ref, test, strict=True)]
        assert out["ssim_per_frame"] == pytest.approx(want_ssim, abs=1e-12)
        assert out["psnr_db_per_frame"] == pytest.approx(want_psnr, abs=1e-12)
        assert out["ssim"] == pytest.approx(np.mean(want_ssim), abs=1e-12)
        assert out["psnr_db"] == pytest.approx(np.mean(want_psnr), abs=1e-12)  # per frame, then averaged


def test_identical_frames_give_inf_without_a_warning():
    a = _rng_image((2, 12, 12, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.video_psnr(a, a.copy()) == math.inf
        assert metrics.compare_frames(a, a.copy())["psnr_db_per_frame"] == [math.inf, math.inf]


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


def test_lpips_distance_feeds_the_library_minus_one_to_one_nchw_per_frame(monkeypatch, tmp_path):
    """The glue to the lpips package (pip install accel[lpips]): frames as [-1, 1] NCHW float32, one distance
    per frame averaged. A stand-in lpips module records what it is given (the real network needs weights
    that are never downloaded here)."""
    seen = []

    class FakeLPIPS(torch.nn.Module):
        def __init__(self, net, verbose):
            super().__init__()
            assert net == "alex"

        def forward(self, x, y):
            seen.append((x.clone(), y.clone()))
            return (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1], as lpips returns

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=FakeLPIPS))
    monkeypatch.setattr(metrics, "lpips_status", lambda: (True, "stand-in"))
    metrics._lpips_model.cache_clear()
    try:
        ref = _rng_image((3, 16, 12, 3), 5)
        test = np.clip(ref + 0.1, 0, 1)
        got = metrics.lpips_distance(ref, test)
    finally:
        metrics._lpips_model.cache_clear()
    x, y = seen[0]
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 3, 16, 12)
    np.testing.assert_allclose(x.numpy(), (ref.transpose(0, 3, 1, 2) * 2 - 1).astype(np.float32), atol=1e-6)
    np.testing.assert_allclose(y.numpy(), (test.transpose(0, 3, 1, 2) * 2 - 1).astype(np.float32), atol=1e-6)
    want = np.mean([np.abs(2 * (r - t)).mean() for r, t in zip(ref, test, strict=True)])
    assert got == pytest.approx(want, rel=1e-5)

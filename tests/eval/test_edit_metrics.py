"""PIE-Bench-style edit metrics: perfect scores for identical images, hand-computed values for known
perturbations, token-grid masks upsampled as documented, CLIP reported absent without a local model."""

import math

import numpy as np
import pytest
import torch

from accel.eval.edit_metrics import (
    background_metrics,
    clip_status,
    edit_scores,
    mask_to_pixels,
    object_iou,
    structure_similarity,
)


def _image(seed=0, size=32):
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3))
    img[8:24, 8:24] = 0.7            # a square: clear Canny edges
    img += rng.uniform(0, 0.05, img.shape)
    return img.clip(0, 0.9)


def _mask(size=32):
    m = np.zeros((size, size), dtype=bool)
    m[4:16, 4:16] = True
    return m


def test_identical_images_score_perfectly():
    img = _image()
    scores = edit_scores(img, img.copy(), _mask())
    assert scores["background"]["mse"] == 0.0 and scores["background"]["psnr_db"] == math.inf
    assert scores["background"]["ssim"] == pytest.approx(1.0)
    assert scores["structure_ssim"] == 1.0
    assert scores["clip_score"] is None


def test_changes_inside_the_mask_leave_the_background_perfect():
    img, mask = _image(), _mask()
    edited = img.copy()
    edited[mask] = 1.0 - edited[mask]
    bg = background_metrics(img, edited, mask)
    assert bg["mse"] == 0.0 and bg["psnr_db"] == math.inf and bg["ssim"] == pytest.approx(1.0)
    assert bg["background_fraction"] == pytest.approx(1 - 144 / 1024)


def test_known_background_offset_gives_hand_computed_values():
    img, mask = _image(), _mask()
    edited = img + 0.1 * ~mask[..., None]           # +0.1 on every background pixel, values stay in [0, 1]
    bg = background_metrics(img, edited, mask)
    assert bg["mse"] == pytest.approx(0.01, rel=1e-9)
    assert bg["psnr_db"] == pytest.approx(20.0, rel=1e-9)      # 10 log10(1 / 0.01)
    assert bg["ssim"] < 1.0
    # a constant offset moves no edge: the Canny structure is unchanged
    assert structure_similarity(img, img + 0.1) == 1.0
    shifted = np.roll(img, 5, axis=1)
    assert structure_similarity(img, shifted) < 0.9


def test_video_and_token_grid_masks():
    frames = np.stack([_image(s) for s in range(5)])          # [5, 32, 32, 3]
    grid = torch.zeros(2, 4, 4, dtype=torch.bool)             # token grid: 2 latent frames, 8x8-pixel tokens
    grid[1, 0, 0] = True
    pixels = mask_to_pixels(grid, 5, 32, 32)
    assert pixels.shape == (5, 32, 32)
    assert not pixels[0].any() and all(pixels[f, :8, :8].all() and pixels[f].sum() == 64 for f in range(1, 5))
    edited = frames.copy()
    edited[1:, :8, :8] = 0.0                                  # changed only inside the mask
    assert background_metrics(frames, edited, grid)["psnr_db"] == math.inf
    with pytest.raises(ValueError, match="divide"):
        mask_to_pixels(torch.ones(1, 5, 5, dtype=torch.bool), 1, 32, 32)
    with pytest.raises(ValueError, match="whole image"):
        background_metrics(frames[0], frames[0], np.ones((32, 32)))
    with pytest.raises(ValueError, match="same shape"):
        background_metrics(frames[0], frames[1, :16], _mask())


def test_clip_is_reported_absent_without_a_local_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ok, note = clip_status("/nonexistent/clip-model")
    assert not ok and "not computed" in note
    scores = edit_scores(_image(), _image(1), _mask(), "a red square", clip_model="/nonexistent/clip-model")
    assert scores["clip_score"] is None and "not computed" in scores["clip_note"]


def test_background_psnr_of_a_video_is_per_frame_then_averaged():
    """The one PSNR convention of accel.eval.metrics: frame 0's background off by 0.1 (20 dB), frame 1's by 0.01
    (40 dB) -> 30 dB (pooling all pixels would give 10 log10(2 / 0.0101) = 22.97 dB)."""
    src = np.full((2, 16, 16, 3), 0.5)
    edited = src.copy()
    edited[0] += 0.1
    edited[1] += 0.01
    mask = np.zeros((2, 16, 16), dtype=bool)
    mask[:, :4, :4] = True
    edited[mask] = 0.0  # the edit region changes freely
    assert background_metrics(src, edited, mask)["psnr_db"] == pytest.approx(30.0)


def test_object_iou_is_per_frame_then_averaged():
    src = np.zeros((3, 4, 4), dtype=bool)
    edt = np.zeros((3, 4, 4), dtype=bool)
    src[0, :2, :2] = True          # frame 0: 4 source pixels, 2 of them in the edit's 2 -> 2 / 4
    edt[0, :1, :2] = True
    src[1, :, :] = True            # frame 1: 16 vs 8 overlapping -> 8 / 16
    edt[1, :2, :] = True
    # frame 2: both empty -> skipped (not 0, not 1)
    assert object_iou(src, edt) == pytest.approx((2 / 4 + 8 / 16) / 2)
    assert object_iou(src[0], src[0]) == 1.0
    assert object_iou(src[2], edt[2]) is None
    assert object_iou(src, edt, per_frame=True) == pytest.approx([2 / 4, 8 / 16, None])
    with pytest.raises(ValueError, match="same shape"):
        object_iou(src, edt[:2])

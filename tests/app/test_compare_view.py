"""The frame-by-frame comparison pictures against differences computed here, pixel by pixel."""

import numpy as np
import pytest

from accel.app.compare_view import DIFF_GAIN, GAP, difference, frame_pictures, scale_note, side_by_side


def _clips(seed=0, shape=(5, 6, 8, 3)):
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)


def test_difference_is_the_amplified_absolute_difference():
    a, b = _clips()
    b[0] = a[0]  # an identical frame: black
    d = difference(a, b, gain=4.0)
    for f, y, x, c in [(1, 2, 3, 0), (4, 5, 7, 2), (0, 1, 1, 1), (2, 0, 0, 0)]:
        assert d[f, y, x, c] == pytest.approx(min(1.0, 4.0 * abs(float(a[f, y, x, c]) - float(b[f, y, x, c]))))
    assert (d[0] == 0).all()
    assert d.max() == 1.0  # random clips differ by more than 1/4 somewhere: clipped to white
    with pytest.raises(ValueError, match="gain must be a finite number > 0"):
        difference(a, b, gain=0)
    with pytest.raises(ValueError, match="frames and dense must both be"):
        difference(a, b[:3])


def test_frame_pictures_show_frame_i_of_each():
    a, b = _clips()
    m, dn, diff = frame_pictures(a, b, 3, target=24)  # 8 px wide -> 3x
    assert m.shape == dn.shape == diff.shape == (18, 24, 3) and m.dtype == np.uint8
    np.testing.assert_array_equal(m[::3, ::3], np.round(a[3] * 255).astype(np.uint8))
    np.testing.assert_array_equal(dn[::3, ::3], np.round(b[3] * 255).astype(np.uint8))
    expected = np.round(np.minimum(1.0, DIFF_GAIN * np.abs(a[3] - b[3])) * 255).astype(np.uint8)
    np.testing.assert_array_equal(diff[::3, ::3], expected)
    np.testing.assert_array_equal(diff[1::3, 2::3], expected)  # each pixel repeated 3 x 3
    assert frame_pictures(a, b, 4.0)[0].shape[1] == 256  # a slider's float value; default target
    for bad in (5, -1, 1.5, True):
        with pytest.raises(ValueError, match="frame must be a whole number from 0 to 4"):
            frame_pictures(a, b, bad)


def test_side_by_side_plays_the_three_in_step():
    a, b = _clips()
    clip = side_by_side(a, b)
    w = a.shape[2]
    assert clip.shape == (5, 6, 3 * w + 2 * GAP, 3)
    np.testing.assert_array_equal(clip[:, :, :w], a)
    np.testing.assert_array_equal(clip[:, :, w + GAP:2 * w + GAP], b)
    np.testing.assert_allclose(clip[:, :, 2 * w + 2 * GAP:], np.minimum(1, DIFF_GAIN * np.abs(a - b)), rtol=1e-6)
    assert (clip[:, :, w:w + GAP] == 1).all()


def test_scale_note_states_the_gain():
    assert "× 4" in scale_note(4.0) and "0.25 or more" in scale_note(4.0)

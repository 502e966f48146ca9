import numpy as np
import pytest

import accel
from accel.generate import build_method, parse_method_args, write_mp4, write_strip


def test_parse_method_args():
    assert parse_method_args(["window=3,9,9", "causal=false", "decay=0.2", "radius_t=none", "backend=flex"]) == {
        "window": (3, 9, 9), "causal": False, "decay": 0.2, "radius_t": None, "backend": "flex",
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_method_args(["window"])


def test_build_method():
    m = build_method("neighborhood", {"window": (3, 5, 5)})
    assert isinstance(m, accel.Neighborhood) and m.window == (3, 5, 5)
    assert build_method("none", {}) is None
    with pytest.raises(ValueError, match="--method must be one of"):
        build_method("sparse", {})
    with pytest.raises(ValueError, match="bad --method-arg for radial"):
        build_method("radial", {"windw": 3})


def test_mp4_and_strip_round_trip(tmp_path):
    import imageio.v2 as imageio

    rng = np.random.default_rng(0)
    frames = rng.random((9, 32, 48, 3)).astype(np.float32)
    path = tmp_path / "clip.mp4"
    write_mp4(frames, path, fps=8)
    back = imageio.mimread(path, format="FFMPEG")
    assert len(back) == 9 and back[0].shape == (32, 48, 3)
    assert not list(tmp_path.glob(".*partial*"))  # no temporary file left behind
    write_strip(frames, tmp_path / "strip.png", every=4, scale=2)
    strip = imageio.imread(tmp_path / "strip.png")
    assert strip.shape == (64, 3 * 96, 3)

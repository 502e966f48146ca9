import numpy as np
import pytest

from accel.render.media import partial_path, to_uint8, write_frames, write_mp4, write_png, write_strip


def test_to_uint8_rounds_and_clips():
    x = np.array([-0.5, 0.0, 0.5, 1.0, 2.0], dtype=np.float32)
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255]


def test_png_and_frames_round_trip(tmp_path):
    import imageio.v2 as imageio

    rng = np.random.default_rng(1)
    frames = (rng.random((3, 8, 12, 3)) * 255).astype(np.uint8)
    write_png(frames[0], tmp_path / "a.png")
    assert np.array_equal(imageio.imread(tmp_path / "a.png"), frames[0])
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "old.png").write_bytes(b"stale")  # replaced as a whole
    write_frames(frames, tmp_path / "clip")
    names = sorted(p.name for p in (tmp_path / "clip").iterdir())
    assert names == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    assert np.array_equal(imageio.imread(tmp_path / "clip" / "frame_0002.png"), frames[2])
    assert not list(tmp_path.glob(".*partial*"))


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "x.mp4"
    with pytest.raises(ValueError, match="frames must be"):
        write_mp4(np.zeros((4, 4, 3)), path, fps=8)
    with pytest.raises(ValueError, match="fps must be an int >= 1"):
        write_mp4(np.zeros((2, 4, 4, 3)), path, fps=0)
    assert not path.exists() and not partial_path(path).exists()


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

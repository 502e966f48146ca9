"""``accel edit`` on the tiny FLUX preset: generated and real-input edits write media, mask and scores."""

import json

import numpy as np
import pytest
from PIL import Image

from accel.cli import main as accel_main


def _run(*args):
    return accel_main(["edit", "--model", "tiny-flux", "--device", "cpu", *args])


def test_accel_edit_generated_and_real(tmp_path, capsys):
    out = tmp_path / "gen"
    assert _run("--source", "a red monkey", "--target", "a blue monkey", "--edit-words", "red", "--alpha", "color",
                "--out", str(out)) == 0
    scores = json.loads((out / "scores.json").read_text())
    assert scores["edit_words"] == ["red"] and scores["steps"] == 2
    assert "SSIM window" in scores["note"]        # 8x8 images are below the 11x11 SSIM window: said, not crashed
    source = np.asarray(Image.open(out / "source.png"))
    assert source.shape == (8, 8, 3) and (out / "target.png").is_file() and (out / "mask.png").is_file()

    Image.fromarray(source).save(tmp_path / "input.png")
    out2 = tmp_path / "real"
    assert _run("--input", str(tmp_path / "input.png"), "--source", "a red monkey", "--target", "a blue monkey",
                "--out", str(out2)) == 0
    assert np.asarray(Image.open(out2 / "target.png")).shape == (8, 8, 3)
    with pytest.raises(ValueError, match="'green' does not occur"):
        _run("--source", "a red monkey", "--target", "a blue monkey", "--edit-words", "green", "--out",
             str(tmp_path / "bad"))

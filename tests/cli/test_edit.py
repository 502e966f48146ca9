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
    assert np.asarray(Image.open(out2 / "source.png")).shape == (8, 8, 3)
    # alpha 0 is a strength of its own (no structure lock), not "use the default"
    assert _run("--source", "a red monkey", "--target", "a blue monkey", "--alpha", "0", "--out",
                str(tmp_path / "zero")) == 0
    assert json.loads((tmp_path / "zero" / "scores.json").read_text())["alpha"] == 0.0
    assert scores["alpha"] == "color"
    # ours: the scene-keeping options reach edit_generated (all steps following the source: target = source)
    kept = tmp_path / "kept"
    assert _run("--source", "a red monkey", "--target", "a blue monkey", "--edit-words", "red", "--keep-scene",
                "latents", "--mask-threshold", "0.5", "--source-steps", "2", "--out", str(kept)) == 0
    kept_scores = json.loads((kept / "scores.json").read_text())
    assert kept_scores["keep_scene"] == ["latents"] and kept_scores["source_steps"] == 2
    assert kept_scores["mask_threshold"] == 0.5
    assert np.array_equal(np.asarray(Image.open(kept / "source.png")), np.asarray(Image.open(kept / "target.png")))


@pytest.mark.parametrize("args, message", [
    (["--out", "__FILE__"], "--out '__FILE__' exists and is not a folder"),
    (["--input", "/etc/passwd"], "--input must be an image or a video (.png, .jpg, .jpeg, .webp, .bmp, .mp4, .mov, "
                                 ".webm, .gif, .mkv, .avi), got '/etc/passwd'"),
    (["--input", "__FAKE__"], "does not decode as an image"),
    (["--input", "__DIR__/none.png"], "does not exist or is not a regular file"),
    (["--mask", "__FAKE_MP4__"], "--mask must be an image (.png, .jpg, .jpeg, .webp, .bmp), got"),
    (["--alpha", "7"], "--alpha must be a number in [0, 1] or one of ['color', 'material', 'object', 'real', 'shape'], "
                       "got 7.0"),
    (["--alpha", "nan"], "--alpha must be a number in [0, 1] or one of"),
    (["--alpha=-inf"], "--alpha must be a number in [0, 1] or one of"),
    (["--alpha", "purple"], "got 'purple'"),
    (["--edit-words", "green"], "--edit-words: 'green' does not occur (case-sensitive) in the source prompt"),
    (["--seed", str(2**70)], f"--seed must be in [0, {2**64 - 1}], got {2**70}"),
    (["--steps", "0"], "--steps must be in [1, 2147483647], got 0"),
    (["--mask-threshold", "1.5"], "--mask-threshold must be a number in [0, 1], got 1.5"),
    (["--edit-words", "red", "--keep-scene", "background"], "--keep-scene takes distinct names among ['latents', "
                                                            "'cross_attention'], got ['background']"),
    (["--keep-scene", "latents"], "--keep-scene keeps the source outside the edit mask: give --edit-words or --mask"),
    (["--steps", "4", "--source-steps", "5"], "--source-steps must be in [0, --steps], got 5"),
    (["--input", "__DIR__/real.png", "--source-steps", "1"], "--keep-scene and --source-steps apply to generated"),
    (["--model", "someone/not-cached-model"], "model 'someone/not-cached-model' is not in the local Hugging Face "
                                              "cache and HF_HUB_OFFLINE is set"),
    pytest.param(["--device", "cuda"], "--device 'cuda': this PyTorch build", marks=pytest.mark.skipif(
        __import__("torch").version.cuda is not None, reason="needs a PyTorch build without CUDA")),
])
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    from accel.pipelines import loading

    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("loaded a model despite a bad argument"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "fake.png").write_bytes(b"<html><script>1</script></html>")
    (tmp_path / "fake.mp4").write_bytes(b"x")
    Image.new("RGB", (8, 8)).save(tmp_path / "real.png")
    subs = {"__FILE__": str(tmp_path / "file.txt"), "__FAKE__": str(tmp_path / "fake.png"),
            "__FAKE_MP4__": str(tmp_path / "fake.mp4"), "__DIR__": str(tmp_path)}
    for key, value in subs.items():
        args = [a.replace(key, value) for a in args]
        message = message.replace(key, value)
    argv = ["--source", "a red monkey", "--target", "a blue monkey", *args]
    if "--out" not in args:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exc:
        _run(*argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("accel edit: error: ")
    assert not (tmp_path / "out").exists()

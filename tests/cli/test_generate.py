"""``accel generate``: prompts from the command line through the render machinery (same file names,
manifest and resume); a manifest written before the method became a record still resumes."""

import hashlib
import json

import imageio.v2 as imageio
import numpy as np

from accel.cli import main


def _manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _old_settings_key(record) -> str:
    """The settings key as accel render computed it when the manifest held the method as text (``repr``)."""
    blob = json.dumps([record["model"], record["prompt"], record["negative_prompt"], record["seed"], record["image"],
                       record["settings"], "none", "none", record["format"]], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def test_generate_writes_render_files_manifest_and_strip_then_resumes(tmp_path, capsys):
    out = tmp_path / "g"
    argv = ["generate", "--model", "tiny-wan", "--prompt", "a red circle moving left", "--seed", "3", "--strip",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    (record,) = _manifest(out)
    assert record["name"] == "0000-a-red-circle-moving-left" and record["file"] == "0000-a-red-circle-moving-left.mp4"
    assert record["status"] == "ok" and record["seed"] == 3 and record["model"] == "tiny-wan"
    assert record["method"]["name"] == "none" and record["method"]["parameters"] == {}
    frames = imageio.mimread(out / record["file"], format="FFMPEG")
    assert len(frames) == 9 and frames[0].shape == (16, 16, 3)
    strip = imageio.imread(out / "0000-a-red-circle-moving-left.png")
    assert strip.shape == (32, 3 * 32, 3)  # frames 0, 4, 8 side by side, upscaled 2x
    assert np.array_equal(strip[::2, ::2][:, :16], np.asarray(frames[0])[..., :3])

    # a manifest of the earlier format (method and schedule as text) resumes: nothing is rendered again
    old = {k: v for k, v in record.items() if k != "method"}
    old.update(method="none", schedule="none", settings_key=_old_settings_key(record))
    (out / "manifest.jsonl").write_text(json.dumps(old) + "\n")
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 items: 1 already complete, 0 to render" in capsys.readouterr().out

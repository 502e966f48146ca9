"""`accel render` end to end on the tiny pipelines (2 steps, 16x16x9 video, 8x8 images)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from accel.cli import render as command
from accel.pipelines.tiny import tiny_pipeline
from accel.render import batch
from accel.render.manifest import MANIFEST_NAME
from accel.render.media import to_uint8

ROOT = Path(__file__).resolve().parents[2]


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / MANIFEST_NAME).read_text().splitlines()]


def _reference(family: str, prompt: str, seed: int, **overrides):
    """The same item rendered by calling the diffusers pipeline directly (independent of accel render)."""
    import torch

    pipe = tiny_pipeline(family)
    pipe.set_progress_bar_config(disable=True)
    kw = dict(prompt=prompt, num_inference_steps=2, output_type="np", generator=torch.Generator("cpu").manual_seed(seed))
    if family == "wan":
        kw.update(dict(height=16, width=16, num_frames=9, guidance_scale=6.0, max_sequence_length=16), **overrides)
        return pipe(**kw).frames[0]
    if family == "wan_i2v":
        kw.update(dict(height=16, width=16, num_frames=9, guidance_scale=6.0, max_sequence_length=16), **overrides)
        return pipe(**kw).frames[0]
    if family == "hunyuan_video":
        kw.update(dict(height=16, width=16, num_frames=9, guidance_scale=4.5, max_sequence_length=16,
                       prompt_template={"template": "{}", "crop_start": 0}), **overrides)
        return pipe(**kw).frames[0]
    kw.update(dict(height=8, width=8, guidance_scale=3.5, max_sequence_length=16), **overrides)
    return pipe(**kw).images[0]


def _run(*args) -> int:
    return command.main([*map(str, args), "--no-progress"])


def test_video_to_mp4_and_png_frames(tmp_path):
    import imageio.v2 as imageio

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle moving left\na blue square moving up\n")
    out = tmp_path / "mp4"
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out, "--seed", 5) == 0
    records = _manifest(out)
    assert [r["name"] for r in records] == ["0000-a-red-circle-moving-left", "0001-a-blue-square-moving-up"]
    for r, seed in zip(records, (5, 6), strict=True):
        assert r["status"] == "ok" and r["seed"] == seed and r["error"] is None and r["density"] == 1.0
        assert r["settings"] == {"height": 16, "width": 16, "frames": 9, "steps": 2, "guidance": 6.0, "fps": 8}
        assert r["model"] == "tiny-wan" and r["method"]["name"] == "none" and r["latency_s"] > 0
        frames = imageio.mimread(out / r["file"], format="FFMPEG")
        assert len(frames) == 9 and frames[0].shape == (16, 16, 3)
    assert not list(out.glob(".*"))  # no temporary or part file left

    # PNG frames are lossless: they equal a direct call of the pipeline with the same seed
    out = tmp_path / "png"
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out, "--seed", 5, "--format", "png") == 0
    first = _manifest(out)[0]
    pngs = sorted((out / first["file"]).iterdir())
    got = np.stack([imageio.imread(p) for p in pngs])
    assert np.array_equal(got, to_uint8(_reference("wan", "a red circle moving left", 5)))


def test_hunyuan_video_frames_equal_a_direct_call(tmp_path):
    import imageio.v2 as imageio

    prompts = tmp_path / "p.txt"
    prompts.write_text("a dancing monkey\n")
    out = tmp_path / "o"
    assert _run("--model", "tiny-hunyuan-video", "--prompts", prompts, "--out", out, "--format", "png", "--seed", 4) == 0
    (record,) = _manifest(out)
    got = np.stack([imageio.imread(p) for p in sorted((out / record["file"]).iterdir())])
    assert got.shape == (9, 16, 16, 3)
    assert np.array_equal(got, to_uint8(_reference("hunyuan_video", "a dancing monkey", 4)))


def test_image_to_video_reads_the_jsonl_image(tmp_path):
    import imageio.v2 as imageio
    from PIL import Image

    pytest.importorskip("ftfy")  # diffusers' Wan I2V pipeline cleans prompts with it
    rng = np.random.default_rng(0)
    picture = Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8))
    (tmp_path / "in").mkdir()
    picture.save(tmp_path / "in" / "start.png")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "it moves", "image": "in/start.png", "seed": 2, "name": "clip"}) + "\n"
                       + json.dumps({"prompt": "no image"}) + "\n")
    out = tmp_path / "o"
    assert _run("--model", "tiny-wan-i2v", "--prompts", prompts, "--out", out, "--format", "png") == 1
    clip, missing = _manifest(out)
    assert missing["status"] == "failed" and "needs an input image" in missing["error"]
    got = np.stack([imageio.imread(p) for p in sorted((out / clip["file"]).iterdir())])
    expected = _reference("wan_i2v", "it moves", 2, image=picture.convert("RGB").resize((16, 16)))
    assert np.array_equal(got, to_uint8(expected))


def test_image_model_to_png_with_method_and_jsonl(tmp_path):
    import imageio.v2 as imageio

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a tree", "seed": 11, "name": "tree", "height": 12, "width": 16}) + "\n")
    out = tmp_path / "o"
    assert _run("--model", "tiny-flux", "--prompts", prompts, "--out", out, "--method", "dense") == 0
    (record,) = _manifest(out)
    assert record["file"] == "tree.png" and record["method"]["class"] == "Dense" and record["density"] == 1.0
    image = imageio.imread(out / "tree.png")
    assert image.shape == (12, 16, 3)
    # accel.Dense is exact: same picture as upstream attention
    assert np.abs(image.astype(int) - to_uint8(_reference("flux", "a tree", 11, height=12, width=16))).max() <= 1


def test_bad_jsonl_line_is_recorded_and_the_batch_goes_on(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join([
        json.dumps({"prompt": "first"}),
        "{broken",
        json.dumps({"prompt": "odd size", "height": 24}),
        json.dumps({"prompt": "third", "steps": 1}),
    ]) + "\n")
    out = tmp_path / "o"
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out) == 1
    records = {r["index"]: r for r in _manifest(out)}
    assert [records[i]["status"] for i in range(4)] == ["ok", "failed", "failed", "ok"]
    assert "line 2: not valid JSON" in records[1]["error"]
    assert "line 3: height must be a multiple of 16" in records[2]["error"]
    assert records[3]["settings"]["steps"] == 1
    assert "2 ok, 2 failed, of 4 items" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--height", "24"], "--height must be a multiple of 16 for this model"),
    (["--frames", "8"], "--frames must be 1 + k * 4 for this model"),
    (["--model", "wan-9000"], "'wan-9000' is not a preset"),
    (["--method", "fast"], "--method must be one of"),
    (["--schedule", "dense=3"], "--schedule must be 'none' or comma-separated"),
    (["--model", "tiny-flux", "--frames", "9"], "--frames given but tiny-flux makes images"),
    (["--guidance", "inf"], "--guidance must be a finite number >= 0, got inf"),
    (["--guidance", "nan"], "--guidance must be a finite number >= 0, got nan"),
    (["--seed", str(2**70)], f"--seed must be in [0, {2**63 - 1}], got {2**70}"),
    (["--steps", str(2**40)], f"--steps must be in [1, {2**31 - 1}], got {2**40}"),
    (["--model", "someone/not-cached-model"], "model 'someone/not-cached-model' is not in the local Hugging Face "
                                              "cache and HF_HUB_OFFLINE is set, so it cannot be downloaded: "
                                              "download it first with `hf download someone/not-cached-model`"),
    pytest.param(["--device", "cuda"], "--device 'cuda': this PyTorch build", marks=pytest.mark.skipif(
        __import__("torch").version.cuda is not None, reason="needs a PyTorch build without CUDA")),
])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a prompt\n")
    from accel.pipelines import loading as load_module
    monkeypatch.setattr(load_module, "load", lambda *a, **k: pytest.fail("loaded a model despite bad arguments"))
    argv = ["--model", "tiny-wan", "--prompts", str(prompts), "--out", str(tmp_path / "o")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exc:
        command.main(argv + args)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert message in err, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("accel render: error: ")  # one line
    assert not (tmp_path / "o").exists()


def test_missing_prompt_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        command.main(["--prompts", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "none.txt' not found" in capsys.readouterr().err


def test_ctrl_c_leaves_a_consistent_manifest_and_rerun_resumes(tmp_path, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\nthree\n")
    out = tmp_path / "o"
    real = batch._render_one
    calls = []

    def interrupt_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(batch, "_render_one", interrupt_second)
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out) == 130
    assert [r["name"] for r in _manifest(out)] == ["0000-one"]
    assert sorted(p.name for p in out.iterdir()) == ["0000-one.mp4", MANIFEST_NAME]
    first_done = _manifest(out)[0]["finished_at"]

    monkeypatch.setattr(batch, "_render_one", real)
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out) == 0
    records = _manifest(out)
    assert [r["name"] for r in records] == ["0000-one", "0001-two", "0002-three"]
    assert records[0]["finished_at"] == first_done  # skipped, not redone

    # other settings: redone, still one record per item
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out, "--steps", "1") == 0
    records = _manifest(out)
    assert len(records) == 3 and all(r["settings"]["steps"] == 1 for r in records)


_CRASH = """
import os, sys
from accel.cli import render as command
from accel.render import media
real = media.write_mp4
count = [0]
def write_mp4(frames, path, fps):
    count[0] += 1
    if count[0] == 3:  # the third item dies in the middle of writing its file
        media.partial_path(path).write_bytes(b"half a file")
        os._exit(9)
    real(frames, path, fps)
media.write_mp4 = write_mp4
sys.exit(command.main(sys.argv[1:]))
"""


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRITON_INTERPRET="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _render_in_a_script(tmp_path, script: str, prompts_text: str):
    """Run ``accel render`` (tiny-wan, ``tmp_path/o``) through ``script`` in its own process; return
    ``(argv, out folder, completed process)``."""
    prompts = tmp_path / "p.txt"
    prompts.write_text(prompts_text)
    out = tmp_path / "o"
    argv = ["--model", "tiny-wan", "--prompts", str(prompts), "--out", str(out), "--no-progress"]
    done = subprocess.run([sys.executable, "-c", script, *argv], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    return argv, out, done


def test_resume_after_a_crash_mid_batch(tmp_path):
    argv, out, crashed = _render_in_a_script(tmp_path, _CRASH, "one\ntwo\nthree\nfour\n")
    assert crashed.returncode == 9, crashed.stderr[-2000:]
    assert (out / ".0002-three.partial.mp4").exists() and not (out / "0002-three.mp4").exists()
    assert not (out / MANIFEST_NAME).exists()  # records so far are in the part file

    assert command.main(argv) == 0
    records = _manifest(out)
    assert [r["name"] for r in records] == ["0000-one", "0001-two", "0002-three", "0003-four"]
    assert all(r["status"] == "ok" for r in records)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME] + [r["file"] for r in records])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_gloo_render_each_prompt_once(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(5)))
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "accel.cli", "render", "--model", "tiny-wan",
           "--prompts", str(prompts), "--out", str(out), "--no-progress"]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    records = _manifest(out)
    assert [r["name"] for r in records] == [f"{i:04d}-prompt-number-{i}" for i in range(5)]
    assert all(r["status"] == "ok" for r in records)
    assert {r["rank"] for r in records} == {0, 1}
    assert sorted(r["name"] for r in records if r["rank"] == 1) == ["0001-prompt-number-1", "0003-prompt-number-3"]
    assert not list(out.glob(".manifest.part-*"))
    assert run.stdout.count("5 ok, 0 failed, of 5 items") == 1  # one summary, from rank 0

    rerun = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "(5 already complete, skipped)" in rerun.stdout
    assert _manifest(out) == records


def test_reserved_item_name_is_refused_and_the_manifest_stays_a_file(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "evil", "name": "manifest.jsonl"}) + "\n"
                       + json.dumps({"prompt": "fine", "name": "fine"}) + "\n")
    out = tmp_path / "o"
    for _ in range(2):  # a rerun is not wedged either
        assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out, "--format", "png") == 1
        assert (out / MANIFEST_NAME).is_file()
        records = {r["index"]: r for r in _manifest(out)}
        assert records[0]["status"] == "failed" and "name 'manifest.jsonl' is reserved" in records[0]["error"]
        assert records[1]["status"] == "ok" and (out / "fine").is_dir()


_HOLD_LOCK = """
import sys, time
from accel.render.folder import FolderLock
FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_one_run_per_folder_and_a_killed_runs_lock_is_taken_over(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n")
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out) == 2
        err = capsys.readouterr().err
        assert f"another accel render is writing to {out} (process {holder.pid} on host {socket.gethostname()!r}" in err
        assert not list(out.glob("*.mp4")) and not (out / MANIFEST_NAME).exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up, the lock file stays behind naming a dead process
        holder.wait()
    assert (out / ".render.lock").is_file()
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out) == 0
    err = capsys.readouterr().err
    assert f"took over the lock of {out} left by process {holder.pid}" in err and "that process is gone" in err
    assert sorted(p.name for p in out.iterdir()) == ["0000-one.mp4", MANIFEST_NAME]  # lock removed at the end


_SIGTERM = """
import os, signal, sys
from accel.cli import render as command
from accel.render import batch
real = batch._render_one
count = [0]
def render_one(*a, **k):
    count[0] += 1
    if count[0] == 2:  # SIGTERM (what a scheduler or `kill` sends) while the second item renders
        os.kill(os.getpid(), signal.SIGTERM)
    return real(*a, **k)
batch._render_one = render_one
sys.exit(command.main(sys.argv[1:]))
"""


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    argv, out, done = _render_in_a_script(tmp_path, _SIGTERM, "one\ntwo\nthree\n")
    assert done.returncode == 143, done.stderr[-2000:]
    assert "interrupted by SIGTERM" in done.stderr
    assert [r["name"] for r in _manifest(out)] == ["0000-one"]  # the part file was merged
    assert sorted(p.name for p in out.iterdir()) == ["0000-one.mp4", MANIFEST_NAME]  # no part, lock or partial file
    assert command.main(argv) == 0 and [r["name"] for r in _manifest(out)] == ["0000-one", "0001-two", "0002-three"]


def test_resume_redoes_items_whose_file_is_gone_or_outside_the_folder(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\nthree\n")
    out = tmp_path / "o"
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out) == 0
    first = {r["name"]: r for r in _manifest(out)}
    (out / first["0000-one"]["file"]).unlink()  # deleted by hand after the run
    # a record that names a file of a sibling folder (out-evil next to out): not this folder's file
    evil = tmp_path / "o-evil"
    evil.mkdir()
    (out / first["0001-two"]["file"]).rename(evil / first["0001-two"]["file"])
    lines = [json.dumps(dict(r, file=f"../o-evil/{r['file']}") if r["name"] == "0001-two" else r)
             for r in first.values()]
    (out / MANIFEST_NAME).write_text("\n".join(lines) + "\n")
    assert _run("--model", "tiny-wan", "--prompts", prompts, "--out", out) == 0
    again = {r["name"]: r for r in _manifest(out)}
    assert again["0000-one"]["finished_at"] > first["0000-one"]["finished_at"]
    assert again["0001-two"]["finished_at"] > first["0001-two"]["finished_at"]
    assert again["0001-two"]["file"] == "0001-two.mp4" and (out / "0001-two.mp4").is_file()
    assert again["0002-three"]["finished_at"] == first["0002-three"]["finished_at"]  # still complete: skipped

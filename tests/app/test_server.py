"""``accel app``'s safe defaults, checked on the built (not launched) demo."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accel.app.http_guard import HttpGuard
from accel.app.models import ModelCache
from accel.app.server import create
from accel.render.folder import is_inside

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_gradio_env(monkeypatch, tmp_path):
    # create() sets these process-wide (it is meant to run first in its own process); undo after each test
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")


def _guard(kwargs):
    (middleware,) = kwargs["app_kwargs"]["middleware"]
    assert middleware.cls is HttpGuard
    return middleware.kwargs


def test_defaults_are_safe(tmp_path):
    out = tmp_path / "out"
    demo, kwargs = create(["--out", str(out)], models=ModelCache(warm_up=False))
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["share"] is False
    assert kwargs["allowed_paths"] == [str(out.resolve())]
    assert kwargs["max_file_size"] == 50 * 1024 * 1024
    assert kwargs["show_error"] is False
    assert demo._queue.max_size == 8 and demo._queue.default_concurrency_limit == 1
    assert out.is_dir()
    guard = _guard(kwargs)
    store = guard["store"]
    assert guard["loopback_only"] is True
    # uploads go to their own private folder, outside every served (allowed) path
    assert os.environ["GRADIO_TEMP_DIR"] == str(store.root) and store.root.is_dir()
    assert not is_inside(store.root, out.resolve()) and store.root.stat().st_mode & 0o077 == 0
    assert (store.quota_bytes, store.max_age_s, store.max_file_bytes) == (500 * 2**20, 3600.0, 50 * 2**20)


def test_opt_in_exposure_and_limits(tmp_path):
    demo, kwargs = create(["--out", str(tmp_path), "--host", "0.0.0.0", "--share", "--max-upload-mb", "2",
                           "--queue", "3", "--port", "8000"], models=ModelCache(warm_up=False))
    assert kwargs["server_name"] == "0.0.0.0" and kwargs["share"] is True and kwargs["server_port"] == 8000
    assert kwargs["max_file_size"] == 2 * 1024 * 1024 and demo._queue.max_size == 3
    assert _guard(kwargs)["loopback_only"] is False


def test_upload_folder_option(tmp_path):
    _demo, kwargs = create(["--out", str(tmp_path / "out"), "--uploads", str(tmp_path / "up"), "--upload-quota-mb",
                            "3", "--upload-keep-min", "0.5"], models=ModelCache(warm_up=False))
    store = _guard(kwargs)["store"]
    assert store.root == (tmp_path / "up").resolve() and os.environ["GRADIO_TEMP_DIR"] == str(store.root)
    assert (store.quota_bytes, store.max_age_s) == (3 * 2**20, 30.0)


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port must be in 1..65535, got 0"),
    (["--queue", "0"], "--queue must be >= 1, got 0"),
    (["--max-upload-mb", "-1"], "--max-upload-mb must be a finite number > 0, got -1.0"),
    (["--max-upload-mb", "inf"], "--max-upload-mb must be a finite number > 0, got inf"),
    (["--upload-quota-mb", "nan"], "--upload-quota-mb must be a finite number > 0, got nan"),
    (["--upload-keep-min", "0"], "--upload-keep-min must be a finite number > 0, got 0.0"),
    (["--uploads", "__OUT__/up"], "must lie outside the output folder --out"),
    (["--device", "gpu:x"], "--device must be a torch.device or a string like 'cpu', 'cuda' or 'cuda:1', got 'gpu:x'"),
    pytest.param(["--device", "cuda"], "--device 'cuda': this PyTorch build", marks=pytest.mark.skipif(
        torch.version.cuda is not None, reason="needs a PyTorch build without CUDA")),
])
def test_bad_arguments(tmp_path, capsys, args, message):
    args = [a.replace("__OUT__", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit):
        create(["--out", str(tmp_path), *args])
    assert message in capsys.readouterr().err


def test_cli_lists_the_command():
    done = subprocess.run([sys.executable, "-m", "accel.cli", "--help"], cwd=REPO, capture_output=True, text=True,
                          check=True)
    assert "app " in done.stdout and "Gradio demo" in done.stdout


def test_hub_presets_are_offered_only_when_cached(monkeypatch):
    import accel.app.models as app_models
    from accel.pipelines.presets import PRESETS

    monkeypatch.setattr(app_models, "weights_cached", lambda hub_id: False)
    offline = ["embedded", "tiny-wan", "tiny-hunyuan-video", "tiny-flux"]
    assert list(app_models.offered_models()) == offline
    cached = {"Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"}
    monkeypatch.setattr(app_models, "weights_cached", lambda hub_id: hub_id in cached)
    offered = app_models.offered_models()
    assert list(offered) == [*offline, "wan2.1-t2v-1.3b"]  # image-to-video is not offered
    entry, preset = offered["wan2.1-t2v-1.3b"], PRESETS["wan2.1-t2v-1.3b"]
    assert entry.defaults == dict(height=480, width=832, frames=81, steps=50)
    assert (entry.size_multiple, entry.frame_step, entry.kind) == (16, 4, "video")
    assert entry.extra_call_kwargs == dict(guidance_scale=preset.guidance, max_sequence_length=512)
    assert entry.call_kwargs(height=480, width=832, frames=81, steps=50) == dict(
        guidance_scale=5.0, max_sequence_length=512, height=480, width=832, num_inference_steps=50,
        output_type="np", num_frames=81)


def test_auth_file_gives_gradio_login_pairs(tmp_path):
    auth = tmp_path / "auth.txt"
    auth.write_text("# who may log in\nalice:s3cret:with:colons\n\n bob :pw\n")
    _demo, kwargs = create(["--out", str(tmp_path / "out"), "--auth", str(auth)], models=ModelCache(warm_up=False))
    assert kwargs["auth"] == [("alice", "s3cret:with:colons"), ("bob", "pw")]
    _demo, kwargs = create(["--out", str(tmp_path / "out")], models=ModelCache(warm_up=False))
    assert kwargs["auth"] is None


@pytest.mark.parametrize("content, message", [
    (None, "--auth: cannot read"),
    ("alice\n", "line 1 of"),
    ("# only a comment\n", "holds no user:password line"),
    ("alice:\n", "both non-empty"),
])
def test_bad_auth_file(tmp_path, capsys, content, message):
    auth = tmp_path / "auth.txt"
    if content is not None:
        auth.write_text(content)
    with pytest.raises(SystemExit):
        create(["--out", str(tmp_path / "out"), "--auth", str(auth)], models=ModelCache(warm_up=False))
    assert message in capsys.readouterr().err


def test_page_handlers_are_not_api_endpoints(tmp_path):
    demo, _kwargs = create(["--out", str(tmp_path / "out")], models=ModelCache(warm_up=False))
    info = demo.get_api_info()
    assert not info["named_endpoints"] and not info["unnamed_endpoints"], info

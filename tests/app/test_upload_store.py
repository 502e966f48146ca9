"""The upload folder's rules and the HTTP guard's header checks, called directly (no server)."""

import os
import time

import numpy as np
import pytest

from accel.app.http_guard import file_input_refusal, host_refusal, origin_refusal
from accel.app.logic import AppInputError
from accel.app.upload_store import UploadStore
from accel.render.folder import is_inside


@pytest.fixture
def store(tmp_path):
    return UploadStore(tmp_path / "uploads", quota_bytes=10_000, max_age_s=60, max_file_bytes=5_000)


def _write(path, content: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _png(path):
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.imwrite(path, np.zeros((4, 4, 3), np.uint8), format="PNG")
    return path


def test_sibling_folder_with_the_same_prefix_is_outside(tmp_path):
    root = (tmp_path / "out").resolve()
    (tmp_path / "out-evil").mkdir()
    assert not is_inside(tmp_path / "out-evil" / "x.png", root)
    assert not is_inside(tmp_path / "out" / ".." / "out-evil" / "x.png", root)
    assert is_inside(tmp_path / "out" / "a" / "x.png", root) and is_inside(root, root)


def test_admit_keeps_media_and_deletes_everything_of_a_refused_upload(store):
    image = _png(store.root / "h1" / "a.png")
    store.admit([image])
    assert image.is_file()
    other = _png(store.root / "h2" / "b.png")
    page = _write(store.root / "h3" / "c.png", b"<html><script>1</script></html>")
    with pytest.raises(AppInputError, match=r"upload refused: 'c.png' is not a readable image; the file was deleted"):
        store.admit([other, page])
    assert not other.exists() and not page.exists() and not (store.root / "h3").exists()
    svg = _write(store.root / "h4" / "d.svg", b"<svg><script>1</script></svg>")
    with pytest.raises(AppInputError, match="only images"):
        store.admit([svg])
    assert not svg.exists()


def test_admit_refuses_files_outside_the_folder_without_deleting_them(store, tmp_path):
    outside = _png(tmp_path / "uploads-evil" / "x.png")
    with pytest.raises(AppInputError, match="was not written to the upload folder"):
        store.admit([outside])
    assert outside.exists()


def test_quota_and_age(store):
    _write(store.root / "h" / "a.bin", b"x" * 6_000)
    store.room_for(4_000)
    with pytest.raises(AppInputError, match=r"the upload folder is full"):
        store.room_for(4_001)
    with pytest.raises(AppInputError, match=r"the upload folder is full"):
        store.room_for(2_000, pending=2_001)
    old = _write(store.root / "g" / "old.png", b"o")
    os.utime(old, (time.time() - 61, time.time() - 61))
    assert store.remove_expired() == [old] and not old.exists() and not old.parent.exists()
    assert store.usage() == 6_000


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan")])
def test_store_limits_must_be_positive_and_finite(tmp_path, value):
    with pytest.raises(ValueError, match="quota_bytes must be a positive finite number"):
        UploadStore(tmp_path, quota_bytes=value, max_age_s=1, max_file_bytes=1)


@pytest.mark.parametrize("headers, refused", [
    ({"host": "127.0.0.1:7860"}, None),  # no Origin, no Referer: not a browser page
    ({"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7860"}, None),
    ({"host": "app.example", "origin": "https://app.example"}, None),  # default port of the scheme
    ({"host": "127.0.0.1:7860", "referer": "http://127.0.0.1:7860/?x=1"}, None),
    ({"host": "127.0.0.1:7860", "origin": "http://127.0.0.1:7861"}, "http://127.0.0.1:7861"),
    ({"host": "127.0.0.1:7860", "origin": "http://localhost:7860"}, "http://localhost:7860"),
    ({"host": "127.0.0.1:7860", "origin": "http://127.0.0.1.evil.example:7860"}, "evil.example"),
    ({"host": "127.0.0.1:7860", "referer": "https://evil.example/a"}, "https://evil.example"),
    ({"host": "127.0.0.1:7860", "origin": "null"}, "without an origin"),
    ({"host": "127.0.0.1:7860", "origin": "garbage"}, "is not a URL"),
])
def test_origin_rule(headers, refused):
    reason = origin_refusal(headers)
    assert (reason is None) == (refused is None) and (refused is None or refused in reason), reason


def test_host_rule():
    for host in ("127.0.0.1:7860", "localhost", "[::1]:80", "LOCALHOST:1"):
        assert host_refusal(host) is None, host
    for host in ("evil.example:7860", "127.0.0.1.nip.io", "", None):
        assert "answers to localhost or 127.0.0.1" in host_refusal(host), host


def test_file_inputs_of_events(store, tmp_path):
    image = _png(store.root / "h" / "a.png")

    def body(path):
        import json

        return json.dumps({"data": [None, {"nested": [{"path": path, "meta": {"_type": "gradio.FileData"}}]}]}).encode()

    assert file_input_refusal(body(str(image)), store) is None
    assert "is a URL" in file_input_refusal(body("http://127.0.0.1:7860/x.png"), store)
    assert "is a URL" in file_input_refusal(body("data:image/png;base64,AAAA"), store)
    assert "not a file uploaded to this app" in file_input_refusal(body("/etc/passwd"), store)
    assert "not a file uploaded to this app" in file_input_refusal(body(str(store.root) + "-evil/a.png"), store)
    assert "is gone" in file_input_refusal(body(str(store.root / "h" / "b.png")), store)
    assert file_input_refusal(b"not json", store) is None  # left to Gradio
    plain = b'{"data": [{"path": "/etc/passwd"}]}'  # no FileData marker: Gradio does not read it as a file
    assert file_input_refusal(plain, store) is None

"""The output folder's rules: path containment, reserved names, the one-run lock (no model is run here)."""

import json
import os
import socket
import subprocess
import sys

import pytest

from accel.render.folder import LOCK_NAME, FolderBusyError, FolderLock, is_inside, reserved_name_problem


def test_containment_is_by_path_not_by_prefix(tmp_path):
    root = (tmp_path / "out").resolve()
    root.mkdir()
    assert is_inside(root / "a.mp4", root) and is_inside(root, root) and is_inside(root / "x" / ".." / "b", root)
    assert not is_inside(tmp_path / "out-evil" / "a.mp4", root)
    assert not is_inside(root / ".." / "out-evil" / "a.mp4", root)
    os.symlink(tmp_path, root / "link")
    assert not is_inside(root / "link" / "elsewhere.mp4", root)  # links are resolved


@pytest.mark.parametrize("name, reserved", [
    ("manifest.jsonl", True), ("Manifest.JSONL", True), ("manifest", False), ("manifest.jsonl2", False),
    ("cat", False), (".render.lock", True), (".manifest.part-3.jsonl", True),
])
def test_reserved_names(name, reserved):
    assert (reserved_name_problem(name) is not None) == reserved


def test_lock_refuses_a_second_holder_and_names_it(tmp_path):
    with FolderLock(tmp_path) as first:
        assert first.took_over is None
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(FolderBusyError, match=rf"another accel render is writing to .* \(process {os.getpid()} on "):
            FolderLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    with FolderLock(tmp_path):  # free again
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started_at": 0.0}))
    with FolderLock(tmp_path) as lock:
        assert lock.took_over.startswith(f"process {pid} on host ") and lock.took_over.endswith("that process is gone")
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_lock_file_of_another_host_is_not_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "other-node", "started_at": 0.0}))
    with pytest.raises(FolderBusyError, match="names a run of another host .* delete the file and rerun"):
        FolderLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "other-node"  # left as it was

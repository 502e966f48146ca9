"""Start ``accel app`` in its own process on a free loopback port (tests that talk to the running server)."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# flags that work for Debian's chromium in a container (see shared notes): no sandbox, no GPU, no network chatter
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """The Chromium executable to drive: ``$ACCEL_CHROMIUM``, else ``chromium`` or ``chromium-browser`` on the
    PATH; ``None`` when there is none (Playwright's own browser download is never used)."""
    for name in (os.environ.get("ACCEL_CHROMIUM"), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str) -> int:
    """The HTTP status of a GET of ``url`` (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@contextlib.contextmanager
def running_app(log_path: Path, *args: str, timeout_s: float = 120.0):
    """Run ``accel app --port <free> *args`` in its own process until the block ends; yields its base URL.

    The server's output goes to ``log_path``; a server that exits or does not answer within ``timeout_s``
    fails the test with the end of that log.
    """
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "accel.cli", "app", "--port", str(port), *args], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                pytest.fail(f"accel app exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if http_status(base + "/") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"accel app did not answer within {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()

"""A render output folder's rules: what lies inside it, the names its own files use, and the lock that
keeps a second run out.

The renderer owns three kinds of files next to the items' files: ``manifest.jsonl`` (the record of
every item), the part files ``.manifest.part-<rank>.jsonl`` and temporary ``.<name>.partial...`` files
(:mod:`accel.render.manifest`, :mod:`accel.render.media`), and the lock ``.render.lock``. An item
may not be named so that its file would be one of them (:func:`reserved_name_problem`).

The lock (:class:`FolderLock`) is an exclusive ``flock`` on ``.render.lock`` held for the whole run,
plus the holder's process id, host and start time written in the file. The operating system drops
the ``flock`` when its process dies, however it dies, so a lock left by a killed run never blocks
the next one; the recorded holder is what the refusal message of a second run names. A lock file
left by a run of this host is taken over (``flock`` is authoritative between processes of one host,
on every file system) and reported with whether its process is gone; one left by a run of another
host is refused, with what to do, because a file system shared between hosts may not share
``flock`` locks. POSIX only (``fcntl``).
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
import socket
from pathlib import Path

from .manifest import MANIFEST_NAME, PART_GLOB

__all__ = ["LOCK_NAME", "RESERVED_NAMES", "FolderBusyError", "FolderLock", "is_inside", "reserved_name_problem"]

LOCK_NAME = ".render.lock"
#: file names the renderer writes itself (compared without regard to case: some file systems ignore it)
RESERVED_NAMES = (MANIFEST_NAME, f".{MANIFEST_NAME}.partial", LOCK_NAME)


def is_inside(path: str | Path, root: Path) -> bool:
    """Whether ``path`` (after resolving links, ``~`` and ``..``) is ``root`` or lies below it.

    ``root`` must already be resolved. The test is on path components, so a sibling folder whose name
    merely starts with the same letters (``out-evil`` next to ``out``) is outside.
    """
    resolved = Path(path).expanduser().resolve()
    return resolved == root or root in resolved.parents


def reserved_name_problem(name: str) -> str | None:
    """Why an item may not be called ``name`` (its file, ``name``, ``name.mp4`` or ``name.png``, would be one
    of the renderer's own files), or ``None``."""
    for candidate in (name, f"{name}.mp4", f"{name}.png"):
        lower = candidate.lower()
        if lower in (r.lower() for r in RESERVED_NAMES) or fnmatch.fnmatch(lower, PART_GLOB):
            return (f"name {name!r} is reserved: its file would be the renderer's own {candidate!r}; choose another "
                    "name")
    return None


class FolderBusyError(RuntimeError):
    """Another run holds the output folder's lock (the message names it and says what to do)."""


def _holder_text(holder: dict) -> str:
    started = holder.get("started_at")
    when = (datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S")
            if isinstance(started, (int, float)) else "an unknown time")
    return f"process {holder.get('pid')} on host {holder.get('host')!r}, started {when}"


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """The exclusive lock of one output folder, for one run (see the module docstring).

    Args:
        folder: the output folder (must exist).

    Use as a context manager, or call :meth:`acquire` and :meth:`release`. :attr:`took_over` names the
    holder of a stale lock file that :meth:`acquire` replaced (``None`` otherwise).
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.took_over: str | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise.

        Raises:
            FolderBusyError: another run holds it (its process id, host and start time are named), or the
                lock file names a run of another host.
        """
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise FolderBusyError(
                    f"another accel render is writing to {self.path.parent} ({_holder_text(holder)}); wait for it "
                    "to finish or use another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # the previous holder removed it between our open and our lock
                same = False
            if same:
                break
            os.close(fd)
        try:
            holder = self._read(fd)
            if holder:
                if holder.get("host") != socket.gethostname():
                    raise FolderBusyError(
                        f"{self.path} names a run of another host that may still be writing ({_holder_text(holder)}) "
                        "and this host cannot see that host's lock; if that run is over, delete the file and rerun")
                state = "still running but no longer holding the lock" if _alive(holder.get("pid")) else "gone"
                self.took_over = f"{_holder_text(holder)}; that process is {state}"
            record = dict(pid=os.getpid(), host=socket.gethostname(),
                          started_at=datetime.datetime.now().timestamp())
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0)
            holder = json.loads(data.decode() or "{}")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still locked: nobody can lock the old file in between
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

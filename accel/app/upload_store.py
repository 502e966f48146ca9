"""The folder the app keeps uploaded files in: outside the output folder, checked on arrival, bounded.

Gradio's upload route writes each uploaded file to ``<root>/<content hash>/<name>``. This module
decides what may stay there:

- a file stays only if it is an image or a video (:func:`accel.app.uploads.read_media`: a media
  suffix, and the content decodes as such); anything else is deleted at once;
- the folder's total size stays under a quota (an upload that would pass it is refused before it is
  written);
- files older than a maximum age are deleted (checked on every upload).

The folder must not be one the server is told to serve freely (``allowed_paths``): Gradio serves files
from its upload folder inline only with a media type it considers safe, anything else as a download
(and :mod:`accel.app.http_guard` enforces the same for every file route).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from accel.render.folder import is_inside

from .logic import AppInputError
from .uploads import read_media

__all__ = ["UploadStore"]


class UploadStore:
    """The app's upload folder and its rules.

    Args:
        root: the folder (created if missing). Everything below it is temporary.
        quota_bytes: largest total size in bytes of all files below ``root``, new upload included.
        max_age_s: files last modified more than this many seconds ago are deleted by
            :meth:`remove_expired`.
        max_file_bytes: largest accepted single file in bytes.

    Raises:
        ValueError: a non-positive (or non-finite) quota, age or file limit.
    """

    def __init__(self, root: str | Path, *, quota_bytes: int, max_age_s: float, max_file_bytes: int) -> None:
        for name, value in (("quota_bytes", quota_bytes), ("max_age_s", max_age_s), ("max_file_bytes", max_file_bytes)):
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = int(quota_bytes)
        self.max_age_s = float(max_age_s)
        self.max_file_bytes = int(max_file_bytes)

    def contains(self, path: str | Path) -> bool:
        """Whether ``path`` (links and ``..`` resolved) lies inside the upload folder."""
        return is_inside(path, self.root)

    def _files(self):
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                path = Path(folder) / name
                try:
                    info = path.lstat()
                except FileNotFoundError:  # removed meanwhile
                    continue
                yield path, info

    def usage(self) -> int:
        """Total size in bytes of the files below the upload folder (links count as nothing)."""
        return sum(info.st_size for _path, info in self._files() if not stat.S_ISLNK(info.st_mode))

    def room_for(self, incoming: int, *, pending: int = 0) -> None:
        """Check that ``incoming`` more bytes (plus ``pending`` bytes of uploads still being written) fit.

        Raises:
            AppInputError: the quota would be exceeded; the message gives the figures.
        """
        used = self.usage()
        if used + pending + incoming > self.quota_bytes:
            raise AppInputError(
                f"the upload folder is full: {(used + pending) / 2**20:.1f} MB used of the "
                f"{self.quota_bytes / 2**20:.1f} MB quota, this upload is {incoming / 2**20:.1f} MB; uploads older "
                f"than {self.max_age_s / 60:g} min are deleted, try again later")

    def remove(self, path: str | Path) -> None:
        """Delete ``path`` (only if it lies inside the upload folder) and its folder if that is left empty."""
        p = Path(path)
        if not self.contains(p):
            return
        p = p.resolve()
        try:
            p.unlink()
        except (FileNotFoundError, IsADirectoryError):
            return
        parent = p.parent
        if parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty: another file of the same content hash folder
                pass

    def remove_expired(self, now: float | None = None) -> list[Path]:
        """Delete files last modified more than ``max_age_s`` seconds before ``now`` (default: the clock).

        Returns:
            the deleted paths.
        """
        now = time.time() if now is None else now
        old = [path for path, info in self._files() if now - info.st_mtime > self.max_age_s]
        for path in old:
            self.remove(path)
        return old

    def admit(self, paths: list[str | Path]) -> None:
        """Keep the just-uploaded ``paths`` only if every one is an image or a video; else delete them all.

        Each file must lie inside the upload folder, be at most ``max_file_bytes`` and decode as the image or
        video its suffix says (the first frame is decoded).

        Raises:
            AppInputError: naming the first refused file and why; every file of ``paths`` has been deleted.
        """
        try:
            for path in paths:
                name = Path(path).name
                if not self.contains(path):
                    raise AppInputError(f"{name!r} was not written to the upload folder")
                read_media(path, max_bytes=self.max_file_bytes, max_frames=1)
        except AppInputError as exc:
            for path in paths:
                self.remove(path)
            raise AppInputError(f"upload refused: {exc}; the file was deleted") from exc

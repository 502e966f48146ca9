"""A run directory: ``results.json`` written atomically after every completed record, plus files beside it.

An interrupted run leaves a readable ``results.json`` holding every record completed so far (each
write goes to a temporary file in the same directory, then ``os.replace`` renames it over the old
one, so a reader never sees half a file).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["RunDir", "open_run_dir", "json_safe"]


def json_safe(value):
    """``value`` with non-finite floats replaced by strings (``"inf"``, ``"-inf"``, ``"nan"``), recursively,
    and tuples turned into lists, so the JSON is standard (no ``Infinity`` tokens)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class RunDir:
    """The output directory of one evaluation run.

    Attributes:
        path: the directory.
        data: the dict written to ``results.json`` (``records`` is the list of completed records).
    """

    def __init__(self, path: Path, header: dict) -> None:
        self.path = path
        self.data = {**header, "records": [], "complete": False}
        self.save()

    def add(self, record: dict) -> None:
        """Append one completed record and rewrite ``results.json`` atomically."""
        self.data["records"].append(record)
        self.save()

    def set(self, key: str, value) -> None:
        """Set a top-level field of ``results.json`` and rewrite it atomically."""
        self.data[key] = value
        self.save()

    def save(self) -> None:
        """Write ``results.json`` atomically (temporary file + rename)."""
        self.write_text("results.json", json.dumps(json_safe(self.data), indent=2))

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` to ``path / name`` atomically; returns the file's path."""
        target = self.path / name
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def finish(self) -> None:
        """Mark the run complete in ``results.json``."""
        self.set("complete", True)


def open_run_dir(path, header: dict) -> RunDir:
    """Create (or reuse) directory ``path`` and start its ``results.json`` with ``header``.

    Raises:
        ValueError: ``path`` exists and is not a directory, or cannot be created or written (the
            message names the path and the reason).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output directory {str(path)!r} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", delete=True)
        probe.close()
    except OSError as exc:
        raise ValueError(f"output directory {str(path)!r} is not writable: {exc.strerror or exc}") from exc
    return RunDir(path, header)

"""The render manifest: ``manifest.jsonl`` in the output folder, one JSON record per item.

While rendering, each process appends the record of every finished item (rendered or failed) to
its own part file ``.manifest.part-<rank>.jsonl`` (flushed and fsynced, so a crash loses at most
the item in flight). :func:`merge_manifest` folds the parts into ``manifest.jsonl`` -- one record
per item name, the most recent (``finished_at``) wins -- writes it atomically and deletes the parts.
:func:`latest_records` reads the manifest and any leftover parts (a crashed or interrupted run), so
a rerun knows what is complete before the parts are merged.

Every line is strict JSON (RFC 8259): a non-finite number in a record (``NaN``, ``Infinity``, which
Python's ``json`` would write and most other readers refuse) is written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

__all__ = ["MANIFEST_NAME", "PART_GLOB", "part_path", "read_records", "record_line", "append_record",
           "latest_records", "merge_manifest"]

MANIFEST_NAME = "manifest.jsonl"
#: file names of the part files (``fnmatch`` / ``glob`` pattern)
PART_GLOB = ".manifest.part-*.jsonl"


def _finite(value):
    """``value`` with every non-finite float (at any depth of dicts, lists and tuples) replaced by ``None``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def record_line(record: dict) -> str:
    """``record`` as one line of strict JSON (keys sorted, non-finite numbers as ``null``), newline included."""
    return json.dumps(_finite(record), ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n"


def part_path(out_dir: Path, rank: int) -> Path:
    """The part file that process ``rank`` appends to."""
    return Path(out_dir) / f".manifest.part-{int(rank)}.jsonl"


def read_records(path: Path) -> list[dict]:
    """The records of one JSONL file, in file order; a missing file gives ``[]``.

    Lines that are not a JSON object with a string ``name`` (e.g. a line cut short by a crash) are
    skipped.
    """
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            out.append(record)
    return out


def append_record(path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line to ``path`` and force it to disk."""
    line = record_line(record)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _newer(a: dict, b: dict) -> bool:
    return float(a.get("finished_at") or 0.0) >= float(b.get("finished_at") or 0.0)


def latest_records(out_dir: Path) -> dict[str, dict]:
    """``{name: record}`` from ``manifest.jsonl`` and every part file; per name the latest record."""
    out_dir = Path(out_dir)
    latest: dict[str, dict] = {}
    sources = [out_dir / MANIFEST_NAME, *sorted(out_dir.glob(PART_GLOB))]
    for source in sources:
        for record in read_records(source):
            old = latest.get(record["name"])
            if old is None or _newer(record, old):
                latest[record["name"]] = record
    return latest


def merge_manifest(out_dir: Path) -> dict[str, dict]:
    """Fold the part files into ``manifest.jsonl`` (one record per name, sorted by item index, then
    name), written atomically; remove the merged part files. Returns the merged ``{name: record}``.

    Only one process may call this at a time (rank 0, after a barrier).
    """
    out_dir = Path(out_dir)
    parts = sorted(out_dir.glob(PART_GLOB))
    latest = latest_records(out_dir)
    ordered = sorted(latest.values(), key=lambda r: (r.get("index", 1 << 60), r["name"]))
    target = out_dir / MANIFEST_NAME
    tmp = out_dir / f".{MANIFEST_NAME}.partial"
    with open(tmp, "w", encoding="utf-8") as f:
        for record in ordered:
            f.write(record_line(record))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    for part in parts:
        part.unlink(missing_ok=True)
    return latest

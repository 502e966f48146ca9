import json

from accel.render.manifest import MANIFEST_NAME, append_record, latest_records, merge_manifest, part_path, read_records


def test_append_read_tolerates_a_cut_line(tmp_path):
    path = tmp_path / "m.jsonl"
    append_record(path, {"name": "a", "status": "ok"})
    with open(path, "a") as f:
        f.write('{"name": "b", "sta')  # a crash in the middle of a write
    assert read_records(path) == [{"name": "a", "status": "ok"}]
    assert read_records(tmp_path / "absent.jsonl") == []


def test_merge_keeps_latest_record_per_name_and_removes_parts(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text(
        json.dumps({"name": "b", "index": 1, "status": "failed", "finished_at": 1.0}) + "\n"
        + json.dumps({"name": "c", "index": 2, "status": "ok", "finished_at": 1.0}) + "\n")
    append_record(part_path(tmp_path, 1), {"name": "b", "index": 1, "status": "ok", "finished_at": 5.0})
    append_record(part_path(tmp_path, 0), {"name": "a", "index": 0, "status": "ok", "finished_at": 3.0})
    append_record(part_path(tmp_path, 3), {"name": "a", "index": 0, "status": "failed", "finished_at": 2.0})  # stale
    latest = latest_records(tmp_path)
    assert {k: v["status"] for k, v in latest.items()} == {"a": "ok", "b": "ok", "c": "ok"}
    merged = merge_manifest(tmp_path)
    assert merged.keys() == latest.keys()
    lines = [json.loads(x) for x in (tmp_path / MANIFEST_NAME).read_text().splitlines()]
    assert [r["name"] for r in lines] == ["a", "b", "c"]  # one per name, in item order
    assert [r["finished_at"] for r in lines] == [3.0, 5.0, 1.0]
    assert not list(tmp_path.glob(".manifest.part-*")) and not list(tmp_path.glob(".*partial*"))


def _strict(text: str):
    """Parse like a strict JSON reader (RFC 8259 has no NaN or Infinity)."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_manifest_is_strict_json_even_for_non_finite_numbers(tmp_path):
    part = part_path(tmp_path, 0)
    append_record(part, {"name": "a", "index": 0, "latency_s": float("inf"), "density": float("nan"),
                         "settings": {"guidance": float("-inf"), "steps": [1.0, float("nan")]}, "finished_at": 1.0})
    # a part line written by an older version with Python's non-standard constants
    with open(part, "a") as f:
        f.write('{"name": "b", "index": 1, "density": NaN, "latency_s": Infinity, "finished_at": 2.0}\n')
    for line in part.read_text().splitlines()[:1]:
        record = _strict(line)
        assert record["latency_s"] is None and record["density"] is None
        assert record["settings"] == {"guidance": None, "steps": [1.0, None]}
    merge_manifest(tmp_path)
    records = [_strict(line) for line in (tmp_path / MANIFEST_NAME).read_text().splitlines()]
    assert [r["name"] for r in records] == ["a", "b"]
    assert records[1]["density"] is None and records[1]["latency_s"] is None

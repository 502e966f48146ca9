"""benchmarks/gpu_check.py in its tiny interpreted CPU mode: the script the next GPU run uses cannot rot."""

import json

import pytest
import torch

from ..scripts import load_benchmark


@pytest.fixture
def gpu_check(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_TUNING_CACHE", str(tmp_path / "tuning.json"))
    monkeypatch.delenv("ACCEL_TRITON_CONFIG", raising=False)
    monkeypatch.delenv("ACCEL_TRITON_PORTABLE", raising=False)
    return load_benchmark("gpu_check")


def test_tiny_run_checks_every_path_then_times(gpu_check, tmp_path):
    assert gpu_check.main(["--tiny", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["status"] == "ok"
    records = data["records"]
    sections = [r["section"] for r in records]
    checks = [r for r in records if r["section"] == "correctness"]
    assert all(r["ok"] for r in checks)
    checked = {(r["kind"], r["path"]) for r in checks}
    kinds = {"full", "full+pad", "tiles", "window", "ellipsoid"}
    assert {(k, "portable default") for k in kinds} <= checked
    assert {(k, "tuned (dense)") for k in kinds} <= checked
    for path in ("persistent", "tma", "tma+warp_spec"):
        assert ("window", path) in checked
    # nothing is timed before it is checked: the first timing comes after the first checks, and the
    # sparse timings (with the tuned configuration) after that configuration's checks
    assert sections.index("dense") > max(i for i, s in enumerate(sections[:sections.index("dense")]) if s == "correctness")
    last_tuned_check = max(i for i, r in enumerate(records) if r.get("path") == "tuned (dense)")
    assert sections.index("sparse") > last_tuned_check
    sparse = [r for r in records if r["section"] == "sparse"]
    assert {r["kind"] for r in sparse} >= {"full-only", "tiles", "window", "ellipsoid", "full-only+pad"}
    assert all(r["ms"] > 0 and 0 < r["density"] <= 1 for r in sparse)
    assert any("full-only" in k for k in data["chosen_configs"])


def test_failing_check_stops_before_any_benchmark(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "reference_attention", lambda q, k, v, mask: torch.zeros_like(q, dtype=torch.float32) + 1)
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--tiny", "--out", str(tmp_path)])
    assert exit_info.value.code == 1
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["status"] == "failed"
    assert [r["section"] for r in data["records"]] == ["correctness"]
    assert not data["records"][0]["ok"]


def test_budget_stops_cleanly(gpu_check, tmp_path):
    assert gpu_check.main(["--tiny", "--out", str(tmp_path), "--budget-s", "0"]) == 0
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["status"] == "stopped: budget"
    assert "sparse" not in {r["section"] for r in data["records"]}

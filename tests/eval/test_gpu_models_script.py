"""benchmarks/gpu_models.py at --tiny scale on the CPU: the GPU script's code path runs and its JSON is consistent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_models_tiny_run(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_models.py"), "--tiny", "--no-kernels",
                           "--models", "wan_tiny", "flux_tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["tiny"] and "one block of each kind" in data["method"]
    models = {m["model"]: m for m in data["models"]}
    assert set(models) == {"wan_tiny", "flux_tiny"}
    for m in models.values():
        d = m["dense"]
        want = d["measured_ms"] + sum((n - 1) * d["block_ms"][k] for k, n in m["blocks"].items())
        assert d["full_ms"] == pytest.approx(want)
        names = [e["method"] for e in m["methods"]]
        assert names[-2:] == ["Rectified", "Agent"] and "ClearLocal" in names and "Neighborhood" in names
        assert ("Radial" in names) == (m["family"] != "flux")  # Radial has no FLUX preset
        for e in m["methods"]:
            assert "error" not in e, e
            assert e["speedup"] == pytest.approx(d["full_ms"] / e["full_ms"])

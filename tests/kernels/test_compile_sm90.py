"""The kernel compiles for Hopper (sm_90) with the installed Triton, on a CPU machine: every partial kind,
the fusions, TMA descriptors and warp specialisation, with Hopper matrix instructions and within the
shared memory of an SM (registers and spills are figures: benchmarks/kernel_compile_sm90.py).

The interpreter (what the other tests run) accepts code the compiler rejects (e.g. a loop variable
whose type changes), so this runs the real compiler in a subprocess without TRITON_INTERPRET."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _compile_available() -> bool:
    try:
        import triton.backends.nvidia  # noqa: F401
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.skipif(not _compile_available(), reason="the installed Triton has no NVIDIA backend / ptxas")
def test_kernel_compiles_for_hopper(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_compile_sm90.py"), "--probe"], env=env,
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    probe = lines.pop()["warp_spec_applies"]
    assert set(probe) == {"sm_90", "sm_100"} and all(isinstance(v, bool) for v in probe.values())
    results = {r["name"]: r for r in lines}
    assert len(results) == 5
    for name, r in results.items():
        assert r["ok"], (name, r.get("error"))
        assert r["wgmma"] > 0, name  # Hopper matrix instructions, not the mma.sync fallback
        assert r["ptxas_ok"] and r["registers"] is not None, name  # ptxas assembles it (spills are a figure)
        assert r["shared"] <= 232448, name  # fits a Hopper SM (227 KiB)
        assert r["tma"] == ("tma" in name), name  # the TMA engine exactly where descriptors are used

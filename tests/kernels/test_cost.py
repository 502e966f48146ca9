"""The kernel cost model: its constants are the fit the benchmark script writes, and the fit recovers
known coefficients."""

from __future__ import annotations

import json

import pytest

from accel.kernels.cost import H200

from ..scripts import ROOT, load_benchmark


def test_constants_are_the_published_fit():
    fit = json.loads((ROOT / "benchmarks" / "results" / "cost_model_h200.json").read_text())["models"]["hunyuan_video"]
    assert H200.full_ns == pytest.approx(fit["full_ns"], abs=0.05)
    assert H200.partial_ns == pytest.approx(fit["partial_ns"], abs=0.05)
    assert H200.call_ms == pytest.approx(fit["call_ms"], abs=0.05)
    assert H200.dense_ns == pytest.approx(fit["dense_ns_per_block_head"], abs=0.05)


def test_fit_recovers_known_costs_and_log_is_parsed():
    module = load_benchmark("cost_model_fit")
    rows = [(f, p, 24 * (f * 20.0 + p * 50.0) * 1e-6 + 7.0) for f, p in ((1000, 0), (500, 900), (20000, 3000), (7, 40000))]
    res = module.fit(rows, 24)
    assert res["full_ns"] == pytest.approx(20.0) and res["partial_ns"] == pytest.approx(50.0)
    assert res["call_ms"] == pytest.approx(7.0)
    calls, dense = module.parse_log((ROOT / "benchmarks" / "results" / "patterns_gpu_h200.log").read_text())
    assert dense["hunyuan_video"][:2] == (24, 119056)
    assert calls["wan"]["neighborhood preset"] == pytest.approx(86.8)


def test_prediction_and_errors():
    assert H200.call_ms_for(1000, 0, heads=2) == pytest.approx(2 * 1000 * 19.0e-6 + 16.9)
    assert H200.block_ms(0, 10, 5) == pytest.approx((10 * 45.8 + 5 * 19.0) * 1e-6)
    with pytest.raises(ValueError, match="block counts must be >= 0"):
        H200.block_ms(-1, 0)

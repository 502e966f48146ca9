"""Fit the kernel cost model (ns per visited full / partial block per head + a constant per call).

Reads the one H200 run (``benchmarks/results/patterns_gpu_h200.log``: whole method calls with the
Triton backend, all heads, against dense SDPA) and the block counts of the same configurations
(``benchmarks/results/patterns_cpu.json``, built by ``benchmarks/patterns.py`` from the same code),
and solves, per model, the least-squares fit

    call_ms = heads * (full_blocks * full_ns + partial_blocks * partial_ns) * 1e-6 + call_ms0

over that model's configurations (video x video blocks of 128 x 128; text, gathers and merges are in
the constant). Dense SDPA's cost per block-head is dense_ms / (heads * NB^2) with NB = ceil(S / 128).
Writes JSON (``--out``); the constants of :mod:`accel.kernels.cost` quote its output.

    .venv/bin/python benchmarks/cost_model_fit.py --out benchmarks/results/cost_model_h200.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
HEADS = {"hunyuan_video": 24, "wan": 40}
_CALL = re.compile(r"^\s+(\S.*?\S)\s+density ([\d.]+):\s+([\d.]+) ms")
_DENSE = re.compile(r"^(\w+)\s+dense SDPA \(all (\d+) heads, S=(\d+)\): ([\d.]+) ms")


def parse_log(text: str) -> tuple[dict, dict]:
    """({model: {config: method_ms}}, {model: (heads, S, dense_ms)}) from the GPU log."""
    calls, dense, model = {}, {}, None
    for line in text.splitlines():
        m = _DENSE.match(line)
        if m:
            model = m.group(1)
            dense[model] = (int(m.group(2)), int(m.group(3)), float(m.group(4)))
            continue
        m = _CALL.match(line)
        if m and model is not None:
            calls.setdefault(model, {})[m.group(1)] = float(m.group(3))
    return calls, dense


def fit(rows: list[tuple[int, int, float]], heads: int) -> dict:
    """Least squares of ms = heads * (full * f + partial * p) * 1e-6 + c over (full, partial, ms) rows."""
    a = torch.tensor([[heads * f * 1e-6, heads * p * 1e-6, 1.0] for f, p, _ in rows], dtype=torch.float64)
    y = torch.tensor([ms for _, _, ms in rows], dtype=torch.float64)
    sol = torch.linalg.lstsq(a, y[:, None]).solution[:, 0]
    resid = (a @ sol - y).tolist()
    return {"full_ns": float(sol[0]), "partial_ns": float(sol[1]), "call_ms": float(sol[2]),
            "max_abs_residual_ms": max(abs(r) for r in resid), "residuals_ms": resid}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--log", type=Path, default=RESULTS / "patterns_gpu_h200.log")
    p.add_argument("--counts", type=Path, default=RESULTS / "patterns_cpu.json")
    p.add_argument("--out", type=Path, default=Path("bench-results/cost_model_h200.json"))
    args = p.parse_args(argv)
    calls, dense = parse_log(args.log.read_text())
    counts = {(r["model"], r["config"]): r for r in json.loads(args.counts.read_text())["records"]}
    out = {"sources": {"times": str(args.log.name), "block_counts": str(args.counts.name)}, "models": {}}
    for model, heads in HEADS.items():
        rows, used = [], []
        for config, ms in calls.get(model, {}).items():
            rec = counts.get((model, config))
            if rec is None:
                continue
            rows.append((rec["full_blocks"], rec["partial_blocks"], ms))
            used.append({"config": config, "full_blocks": rec["full_blocks"], "partial_blocks": rec["partial_blocks"],
                         "method_ms": ms})
        h, s, dense_ms = dense[model]
        nb = math.ceil(s / 128)
        res = fit(rows, heads)
        res.update({"heads": heads, "configurations": used, "dense_sdpa_ms": dense_ms, "seq_len": s,
                    "dense_ns_per_block_head": dense_ms * 1e6 / (h * nb * nb)})
        out["models"][model] = res
        print(f"{model:13s} full {res['full_ns']:.1f} ns, partial {res['partial_ns']:.1f} ns per block-head, "
              f"call {res['call_ms']:.1f} ms (max residual {res['max_abs_residual_ms']:.1f} ms); dense SDPA "
              f"{res['dense_ns_per_block_head']:.1f} ns per block-head")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Our named options against the releases' defaults, at the attention level (issue 19).

For Radial and Rectified the default computes what the authors' release computes; where ours differs it
is a named option. This script measures both on the structured synthetic Q/K/V of
:func:`accel.eval.synthetic.synthetic_qkv` (no model): the relative L2 error of the output against dense
attention over sampled query rows, the dense-mass recall of the computed keys, and the executed density.

* Radial ``granularity``: ``"block"`` (release: the per-frame-pair column-density test) vs ``"cover"``
  (ours: every block holding an allowed pair) over a sweep of ``decay``; the report also gives, for each
  release point, ours interpolated at the same density (linear between the two nearest of our points).
* Rectified ``order`` (release ``"hilbert"``; ours ``"morton"``, ``"sequence"``), ``count_text``
  (release True; ours False, with 256 text keys), ``pooling`` on a grid that is not a multiple of the
  block (release ``"padded"``; ours ``"exact"``), at the release's ``tau`` and several ``drop``.
* Agent ``formation``: ``"tome"`` (AgentSD: merged tokens, N/16 agents, early and late phase) vs ``"pool"``
  (ours: pooled agents, full keys) with 49 agents and with as many agents as AgentSD forms, on an image
  grid and a video grid (full forward in fp64 against dense attention).

Run ``python benchmarks/faithful_options.py`` (about 10 minutes on 2 CPU threads); it writes
``benchmarks/results/faithful_options_cpu.json`` (``--out`` to change). ``--only agent`` (or ``radial``,
``rectified``) measures those sections only and replaces them in an existing output file, each section
with its own seconds and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import accel
from accel.eval.attention_bench import evaluate_method, sample_rows
from accel.eval.synthetic import synthetic_qkv

RADIAL_GRID = (32, 16, 30)     # 480 tokens per frame (>= 128), 15,360 tokens, 120 blocks of 128
RECTIFIED_GRID = (8, 24, 40)   # 7,680 tokens, 60 blocks
RAGGED_GRID = (5, 12, 20)      # 1,200 tokens: a last block of 48
TEXT_GRID, TEXT_LEN = (4, 16, 32), 256


def _interp(x, xs, ys):
    pts = sorted(zip(xs, ys, strict=True))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y0
    return None


def radial(rows: int, seed: int) -> dict:
    q, k, v = synthetic_qkv(RADIAL_GRID, heads=2, head_dim=64, seed=seed)
    sel = sample_rows(q.shape[1], rows, seed)
    points = {"block": [], "cover": []}
    for granularity in points:
        for decay in (0.1, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 8.0):
            m = accel.Radial(decay=decay, granularity=granularity)
            points[granularity].append({"decay": decay, **evaluate_method(m, q, k, v, RADIAL_GRID, sel)})
    cover = points["cover"]
    matched = []
    for p in points["block"]:
        err = _interp(p["density"], [c["density"] for c in cover], [c["rel_l2_error"] for c in cover])
        matched.append({"density": p["density"], "release_error": p["rel_l2_error"], "ours_error_at_density": err})
    return {"grid": RADIAL_GRID, "rows": rows, "points": points, "matched_density": matched}


def rectified(rows: int, seed: int) -> dict:
    q, k, v = synthetic_qkv(RECTIFIED_GRID, heads=2, head_dim=64, seed=seed)
    sel = sample_rows(q.shape[1], rows, seed)
    orders = []
    for drop in (0.75, 0.85, 0.9):
        for order in ("hilbert", "morton", "sequence"):
            m = accel.Rectified(drop=drop, order=order)
            orders.append({"drop": drop, "order": order, **evaluate_method(m, q, k, v, RECTIFIED_GRID, sel)})

    # count_text and pooling need the full forward (text keys, ragged blocks): dense reference in fp64
    def full_error(method, q_, k_, v_, tokens):
        out = method(q_, k_, v_, tokens).double()
        ref = torch.nn.functional.scaled_dot_product_attention(  # every key valid: plain dense attention
            *(x.double().transpose(1, 2) for x in (q_, k_, v_))).transpose(1, 2)
        vs = tokens.video_slice
        return float((out[:, vs] - ref[:, vs]).norm() / ref[:, vs].norm())

    qv, kv, vv = synthetic_qkv(TEXT_GRID, heads=2, head_dim=64, seed=seed)
    gen = torch.Generator().manual_seed(seed + 7)
    text = [0.5 * torch.randn(1, TEXT_LEN, 2, 64, generator=gen) for _ in range(3)]
    qt, kt, vt = (torch.cat([t, x], 1) for t, x in zip(text, (qv, kv, vv), strict=True))
    tokens = accel.TokenLayout(TEXT_GRID, TEXT_LEN, "first")
    with_text = []
    for drop in (0.75, 0.9):
        for count_text in (True, False):
            m = accel.Rectified(drop=drop, count_text=count_text, backend="reference")
            qc, kc, vc, curve = m.on_curve(qt, kt, vt, tokens)
            plan = m.plan(qc, kc, vc, curve)
            with_text.append({"drop": drop, "count_text": count_text,
                              "density": float(plan.selected.double().mean()),
                              "rel_l2_error": full_error(m, qt, kt, vt, tokens)})

    qr, kr, vr = synthetic_qkv(RAGGED_GRID, heads=2, head_dim=64, seed=seed)
    ragged_tokens = accel.TokenLayout(RAGGED_GRID)
    ragged = []
    for drop in (0.75, 0.9):
        for pooling in ("padded", "exact"):
            m = accel.Rectified(drop=drop, pooling=pooling, backend="reference")
            ragged.append({"drop": drop, "pooling": pooling, "rel_l2_error": full_error(m, qr, kr, vr, ragged_tokens)})
    return {"grid": RECTIFIED_GRID, "rows": rows, "order": orders,
            "count_text": {"grid": TEXT_GRID, "text_len": TEXT_LEN, "points": with_text},
            "pooling": {"grid": RAGGED_GRID, "points": ragged}}


AGENT_GRIDS = ((1, 48, 64), (4, 16, 24))   # an image (3,072 tokens) and a short video (1,536)


def _agent_error(method, qkv, ref, grid, late=False) -> float:
    from accel.grid import STEP_KEY

    tokens = accel.TokenLayout(grid)
    if late:  # the root hook's record of the step: past AgentSD's switch to its late phase
        tokens.cache[STEP_KEY] = (49, 50)
    out = method(*qkv, tokens).double()
    return float((out - ref).norm() / ref.norm())


def agent(seed: int) -> dict:
    points = []
    for grid in AGENT_GRIDS:
        qkv = synthetic_qkv(grid, heads=2, head_dim=64, seed=seed)
        ref = torch.nn.functional.scaled_dot_product_attention(
            *(x.double().transpose(1, 2) for x in qkv)).transpose(1, 2)
        q, k, v = qkv

        def error(method, late=False, qkv=qkv, ref=ref, grid=grid):
            return _agent_error(method, qkv, ref, grid, late)

        tome = accel.Agent(backend="reference")
        n_agents = tome.merge_plan(v, accel.TokenLayout(grid))[3]
        points.append({"grid": grid, "formation": "tome", "phase": "early (4x4, 0.95)", "agents": n_agents,
                       "rel_l2_error": error(tome)})
        points.append({"grid": grid, "formation": "tome", "phase": "late (2x2, 0.5): merged attention",
                       "agents": 0, "rel_l2_error": error(tome, late=True)})
        for agents in (49, n_agents):
            m = accel.Agent(formation="pool", agents=agents, backend="reference")
            points.append({"grid": grid, "formation": "pool", "agents": agents, "rel_l2_error": error(m)})
    return {"points": points}


SECTIONS = {"radial": lambda a: radial(a.rows, a.seed), "rectified": lambda a: rectified(a.rows, a.seed),
            "agent": lambda a: agent(a.seed)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "faithful_options_cpu.json"))
    p.add_argument("--rows", type=int, default=512, help="query rows sampled per evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=None,
                   help="measure these sections only, replacing them in an existing --out file")
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(a.out)
    result = {
        "what": "attention-level error vs dense: the releases' defaults and our named options (issue 19)",
        "data": "accel.eval.synthetic.synthetic_qkv, 2 heads, head_dim 64",
        "command": "python benchmarks/faithful_options.py",
    }
    if a.only and out.exists():
        result = {**json.loads(out.read_text()), **result}
    for name in a.only or list(SECTIONS):
        t0, load_before = time.time(), os.getloadavg()[0]
        section = SECTIONS[name](a)
        section["command"] = "python benchmarks/faithful_options.py" + (f" --only {name}" if a.only else "")
        section["seconds"] = time.time() - t0
        section["load_avg_1min"] = {"start": load_before, "end": os.getloadavg()[0]}
        result[name] = section
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: {"seconds": result[k]["seconds"], "load": result[k]["load_avg_1min"]}
                      for k in (a.only or list(SECTIONS))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

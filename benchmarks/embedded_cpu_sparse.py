"""The embedded model on CPU at its default size: dense vs a fully block-sparse method, end to end.

The embedded model (:mod:`accel.embedded`, a Wan 2.1-architecture ``WanPipeline``, float32) renders
17 x 128 x 128 clips: a 9 x 16 x 16 = 2,304-token self-attention in 3 layers x 20 steps x 2
(classifier-free guidance) = 120 attention calls per clip. The sparse method is Radial attention with
the Wan setting (``decay=0.2``, ``sink=True``, 128-token blocks, ``granularity="block"``): every visited
block is a full block, so the gather backend runs it without masks; it is applied at every step
(no dense warm-up steps) to show the largest gain the kernel can give.

Measured in one process, the configurations called in turn (order rotating each round), medians:

* ``attention``: one self-attention call at the model's shapes (q, k, v ``[1, 2304, 4, 32]`` float32):
  dense SDPA (what the stock pipeline runs) vs the method through each CPU backend;
* ``pipeline``: the whole clip (text encoder, 20 steps, VAE decode), stock vs ``accel.apply``-ed with
  the method on each backend; also the largest pixel difference to the stock clip.

Run: ``python benchmarks/embedded_cpu_sparse.py --out benchmarks/results/embedded_cpu_sparse.json``
(``--reps``, ``--threads``, ``--backends``, ``--parts``). Writes JSON with the 1-minute load average before and
after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

import accel
from accel.embedded.model import DEFAULT_GENERATION, TRANSFORMER_CONFIG, embedded, token_grid
from accel.eval.kernel_bench import _dense_sdpa, environment, time_alternating
from accel.kernels import block_sparse_attention
from accel.methods.radial import Radial

PROMPT = "a red circle moving left"


def sparse_method(backend: str) -> Radial:
    """The fully block-sparse method measured here (Radial, Wan setting) on ``backend``."""
    return Radial(decay=0.2, sink=True, granularity="block", backend=backend)


def attention_calls(backends, reps: int) -> dict:
    """One self-attention call at the embedded model's shapes: dense SDPA vs the method per backend."""
    grid = token_grid()
    n = grid[0] * grid[1] * grid[2]
    heads, d = TRANSFORMER_CONFIG["num_attention_heads"], TRANSFORMER_CONFIG["attention_head_dim"]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, heads, d, generator=g) for _ in range(3))
    layout = sparse_method("auto").build_block_layout(accel.TokenLayout(grid), batch=1, heads=heads,
                                                      device=torch.device("cpu"))
    fns = {"dense": lambda: _dense_sdpa(q, k, v)}
    for b in backends:
        fns[b] = lambda b=b: block_sparse_attention(q, k, v, layout, backend=b)
    for fn in fns.values():  # warm up (compiles flex)
        fn()
    load = os.getloadavg()[0]
    timing = time_alternating(fns, reps, baseline="dense")
    return {"tokens": n, "heads": heads, "head_dim": d, "density": layout.density(),
            "block_kinds": {"full": int((layout.block_kinds() == 1).sum()),
                            "partial": int((layout.block_kinds() == 2).sum())},
            **timing, "load_1min": [load, os.getloadavg()[0]]}


def pipeline_runs(backends, reps: int) -> dict:
    """The whole clip: stock pipeline vs the method through each backend (applied at every step)."""
    pipe = embedded()

    def render():
        return pipe(PROMPT, **DEFAULT_GENERATION, output_type="pt",
                    generator=torch.Generator().manual_seed(0)).frames[0]

    def with_method(b):
        def run():
            with accel.apply(pipe, sparse_method(b)):
                return render()
        return run

    fns = {"dense": render, **{b: with_method(b) for b in backends}}
    frames = {name: fn() for name, fn in fns.items()}  # warm up; keep the clips for the difference
    load = os.getloadavg()[0]
    timing = time_alternating(fns, reps, baseline="dense")
    diff = {b: float((frames[b] - frames["dense"]).abs().max()) for b in backends}
    return {"prompt": PROMPT, "generation": {k: v for k, v in DEFAULT_GENERATION.items()},
            "self_attention_calls_per_clip": TRANSFORMER_CONFIG["num_layers"]
            * DEFAULT_GENERATION["num_inference_steps"] * 2,
            **timing, "max_abs_pixel_difference_to_dense": diff, "load_1min": [load, os.getloadavg()[0]]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", nargs="+", default=["gather", "reference"],
                   help="CPU backends for the sparse method (gather, flex, reference, auto)")
    p.add_argument("--reps", type=int, default=5, help="rounds (medians)")
    p.add_argument("--attention-reps", type=int, default=30, help="rounds of the single attention call")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--parts", nargs="+", choices=["attention", "pipeline"], default=["attention", "pipeline"],
                   help="what to measure (the pipeline part renders 1 + reps clips per configuration)")
    p.add_argument("--out", type=Path, default=Path("bench-results/embedded_cpu_sparse.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    result = {
        "benchmark": "embedded_cpu_sparse",
        "command": "python benchmarks/embedded_cpu_sparse.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "method": repr(sparse_method("auto")),
        "units": {"ms": "wall milliseconds (median over rounds)", "cpu_ms": "process CPU milliseconds (median)",
                  "speedup": "median over rounds of dense ms / ms",
                  "load_1min": "1-minute load average before / after"},
        "environment": environment(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for part in args.parts:  # the file is rewritten after each part
        result[part] = attention_calls(args.backends, args.attention_reps) if part == "attention" else \
            pipeline_runs(args.backends, args.reps)
        result["wall_s"] = time.time() - t0
        args.out.write_text(json.dumps(result, indent=2))
    for part in args.parts:
        r = result[part]
        print(part, {n: f"{r['ms'][n]:.1f} ms (x{r['speedup'][n]:.2f})" for n in r["ms"]})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

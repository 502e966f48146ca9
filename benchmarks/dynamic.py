"""Dynamic methods (Rectified, Agent) at real sizes on CPU: selection cost vs attention saved, density, speed.

For HunyuanVideo 720p 129 frames (33 x 45 x 80 video tokens + 256 text tokens last, 200 valid) and Wan
720p 81 frames (21 x 45 x 80, no text), on structured inputs (:func:`accel.eval.synthetic.synthetic_qkv`:
smooth random fields + Wan's 3D RoPE, so attention decays with distance; ``--heads`` heads, head dim
128), this script measures per configuration:

* Rectified: the time of one call's pooling + selection (:meth:`Rectified.plan`, all heads) and of
  the block-layout build, the selected video block density and the compensated fraction;
* the attention those layouts run: compiled FlexAttention on a *query slice* (``--slice-blocks``
  query blocks from the middle) against dense SDPA on the same slice, alternating runs, scaled to
  the whole sequence; from that, the attention time saved per call and the selection cost relative
  to it (the issue's target: < 5%);
* the output error vs dense attention on the slice rows (Wan only: without text the slice needs no
  LSE merge), rectification included;
* Agent attention: one whole call (all rows) vs dense attention scaled from the slice.

Nothing here is a test; it writes JSON. Usage::

    .venv/bin/python benchmarks/dynamic.py --out bench-results/dynamic_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patterns import slice_rows, time_pair  # noqa: E402  (benchmarks/ is not a package)

from accel.eval.kernel_bench import environment  # noqa: E402
from accel.eval.synthetic import synthetic_qkv  # noqa: E402
from accel.grid import TokenLayout  # noqa: E402
from accel.kernels import BlockLayout, apply_block_affine  # noqa: E402
from accel.kernels.flex import flex_block_sparse_attention  # noqa: E402
from accel.methods.agent import Agent  # noqa: E402
from accel.methods.rectified import Rectified  # noqa: E402

MODELS = {
    "hunyuan_video": dict(grid=(33, 45, 80), text_len=256, text_valid=200, preset="hunyuan-video"),
    "wan": dict(grid=(21, 45, 80), text_len=0, text_valid=0, preset="wan2.1-t2v-1.3b"),
}


def inputs(model: str, heads: int, seed: int):
    """Structured q, k, v ``[1, S, heads, 128]`` float32 and the TokenLayout (text last for HunyuanVideo)."""
    cfg = MODELS[model]
    q, k, v = synthetic_qkv(cfg["grid"], heads=heads, head_dim=128, seed=seed)
    mask = None
    if cfg["text_len"]:
        g = torch.Generator().manual_seed(seed + 1)
        text = [torch.randn(1, cfg["text_len"], heads, 128, generator=g) for _ in range(3)]
        q, k, v = (torch.cat([x, t], 1) for x, t in zip((q, k, v), text, strict=True))
        mask = torch.zeros(1, cfg["text_len"], dtype=torch.bool)
        mask[:, : cfg["text_valid"]] = True
    layout = TokenLayout(cfg["grid"], cfg["text_len"], "last" if cfg["text_len"] else None, mask)
    return q, k, v, layout


def configurations(model: str) -> list[tuple[str, Rectified]]:
    """(name, Rectified) pairs: the class defaults, the released per-model preset, and plain top-k."""
    preset = Rectified.preset(MODELS[model]["preset"]).method
    return [
        ("rectified default", Rectified()),
        (f"rectified preset {MODELS[model]['preset']}", preset),
        ("plain dynamic top-k (gapr, rectify off)", Rectified(gapr=False, rectify=False)),
    ]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def run_rectified(model, q, k, v, layout, *, slice_blocks, reps, dtype, log=print) -> list[dict]:
    records = []
    vs = layout.video_slice
    n = layout.num_video_tokens
    heads = q.shape[2]
    for name, method in configurations(model):
        qv, kv, vv, lay = method.on_curve(q, k, v, layout)  # the order the selection runs in, as in a real call
        plan, t_plan = _timed(lambda: method.plan(qv, kv, vv, lay))  # noqa: B023
        bs = method.block_size
        video, t_build = _timed(lambda: BlockLayout.from_block_mask(plan.selected, bs, bs, n, n))  # noqa: B023
        density = float(plan.selected.float().mean())
        comp = float(plan.compensated.float().mean())
        nqb = video.num_q_blocks
        first = max(0, nqb // 2 - slice_blocks // 2)
        sub = slice_rows(video, first, slice_blocks)
        rows = slice(first * bs, first * bs + sub.q_len)
        qs = qv[:, vs][:, rows].to(dtype)
        kk, vvv = kv[:, vs].to(dtype), vv[:, vs].to(dtype)

        def dense(qs=qs, kk=kk, vvv=vvv):
            return F.scaled_dot_product_attention(qs.transpose(1, 2), kk.transpose(1, 2), vvv.transpose(1, 2)).transpose(1, 2)

        def sparse(qs=qs, kk=kk, vvv=vvv, sub=sub):
            return flex_block_sparse_attention(qs, kk, vvv, sub, 128 ** -0.5, False)

        sparse()  # compile once outside the timing
        t_dense, t_sparse, ratio = time_pair(dense, sparse, reps)
        scale_up = nqb / sub.num_q_blocks
        dense_call, sparse_call = t_dense * scale_up, t_sparse * scale_up
        saved = dense_call - sparse_call
        select_cost = t_plan + t_build
        rec = {
            "model": model, "config": name, "method": repr(method), "heads": heads, "video_tokens": n,
            "video_block_density": round(density, 4), "compensated_fraction": round(comp, 4),
            "plan_s": round(t_plan, 3), "layout_build_s": round(t_build, 3),
            "slice_query_blocks": sub.num_q_blocks, "dense_slice_s": round(t_dense, 3),
            "flex_slice_s": round(t_sparse, 3), "flex_speedup": round(ratio, 2), "ideal_speedup": round(1 / density, 2),
            "dense_call_est_s": round(dense_call, 2), "sparse_call_est_s": round(sparse_call, 2),
            "selection_cost_vs_saved": round(select_cost / saved, 4) if saved > 0 else None,
        }
        if not layout.text_len:  # error on the slice rows, rectification included
            want = dense().float()
            got = sparse()
            affine = method.rectification(plan)
            if affine is not None:
                got = apply_block_affine(got, tuple(a[:, :, first:first + sub.num_q_blocks] for a in affine), bs)
            rec["rel_l2_error_slice"] = round(float((got.float() - want).norm() / want.norm()), 4)
        log(json.dumps(rec))
        records.append(rec)
    return records


def run_agent(model, q, k, v, layout, dense_per_row_s: float, *, agents: int, log=print) -> dict:
    method = Agent(formation="pool", agents=agents, backend="reference")
    method(q[:, :4096], k[:, :4096], v[:, :4096], TokenLayout((1, 64, 64)))  # warm-up on a small grid
    _, t_call = _timed(lambda: method(q, k, v, layout))
    dense_call = dense_per_row_s * layout.num_video_tokens
    rec = {"model": model, "config": f"agent agents={agents}", "call_s": round(t_call, 3),
           "dense_call_est_s": round(dense_call, 2), "speedup_est": round(dense_call / t_call, 2)}
    log(json.dumps(rec))
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["wan", "hunyuan_video"])
    p.add_argument("--heads", type=int, default=2, help="heads in the inputs (default 2)")
    p.add_argument("--slice-blocks", type=int, default=16, help="query blocks in the timed slice (default 16)")
    p.add_argument("--reps", type=int, default=3, help="alternating dense/flex repetitions (median)")
    p.add_argument("--agents", type=int, default=49, help="Agent's agent count (default 49, the paper's SD setting)")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results/dynamic_cpu.json"))
    args = p.parse_args(argv)
    records = []
    for model in args.models:
        q, k, v, layout = inputs(model, args.heads, args.seed)
        recs = run_rectified(model, q, k, v, layout, slice_blocks=args.slice_blocks, reps=args.reps,
                             dtype=getattr(torch, args.dtype))
        records += recs
        per_row = recs[0]["dense_slice_s"] / (recs[0]["slice_query_blocks"] * 128)
        records.append(run_agent(model, q, k, v, layout, per_row, agents=args.agents))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": environment(), "args": vars(args) | {"out": str(args.out)},
                                        "records": records}, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0 if all(math.isfinite(r.get("call_s", 0.0)) for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())

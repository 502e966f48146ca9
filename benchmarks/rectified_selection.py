"""Rectified's selection cost: block pooling before/after the one-pass pooling, and selection vs attention.

For one attention call at a real size (default HunyuanVideo 720p: 33 x 45 x 80 video tokens + 256 text,
``--heads`` heads of 128), this script measures, alternating repeats in one process (medians):

* the block pooling of q, k and v as it was (float32 copy, padding copy, |x - mean| temporaries; kept
  below as ``previous_pool`` for the comparison) and as it is (:func:`accel.kernels.block_pool.block_pool`:
  a Triton kernel on CUDA, PyTorch elsewhere);
* the whole selection (``Rectified.plan``: pooling, pooled scores, selection, GAPR);
* the dense attention the call would otherwise run (on CPU: a query slice of ``--slice`` rows scaled
  to the sequence; on CUDA: SDPA in full), and the attention the selection saves (dense minus the
  selected blocks at the same per-block cost), to give ``selection / saved``.

Nothing here is a test; it writes JSON (``--out``)::

    .venv/bin/python benchmarks/rectified_selection.py --out bench-results/rectified_selection.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from accel.eval.kernel_bench import environment
from accel.grid import TokenLayout
from accel.kernels.block_pool import block_pool
from accel.methods.preset import MODEL_FAMILIES
from accel.methods.rectified import Rectified


def previous_pool(x: torch.Tensor, block: int, *, deviation: bool = True):
    """The pooling Rectified used before the one-pass kernel (for the comparison only)."""
    b, n, h, d = x.shape
    nb = -(-n // block)
    pad = nb * block - n
    counts = torch.full((nb,), block, dtype=torch.int64, device=x.device)
    counts[-1] = n - (nb - 1) * block
    xf = x.float()
    if pad:
        xf = torch.nn.functional.pad(xf, (0, 0, 0, 0, 0, pad))
    xb = xf.reshape(b, nb, block, h, d)
    denom = counts.to(torch.float32)[:, None, None]
    mean = xb.sum(2) / denom
    dev = None
    if deviation:
        valid = (torch.arange(nb * block, device=x.device) < n).reshape(nb, block)[:, :, None, None]
        dev = ((xb - mean[:, :, None]).abs() * valid).sum(2) / denom
        dev = dev.permute(0, 2, 1, 3)
    return mean.permute(0, 2, 1, 3), dev, counts


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", type=int, nargs=3, default=[33, 45, 80])
    p.add_argument("--text-len", type=int, default=256)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--preset", default="hunyuan-video", choices=sorted(m for m, f in MODEL_FAMILIES.items() if f),
                   help="the model whose Rectified release setting is used (Rectified.preset)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--slice", type=int, default=512, help="CPU: query rows of the timed dense slice")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("bench-results/rectified_selection.json"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    grid = tuple(args.grid)
    layout = TokenLayout(grid, args.text_len, "last" if args.text_len else None)
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, layout.seq_len, args.heads, args.head_dim, generator=g, device=device,
                           dtype=torch.bfloat16) for _ in range(3))
    method = Rectified.preset(args.preset).method
    bs = method.block_size
    vs = layout.video_slice
    old_pool = lambda: [previous_pool(x[:, vs], bs, deviation=i < 2) for i, x in enumerate((q, k, v))]  # noqa: E731
    new_pool = lambda: [block_pool(x[:, vs], bs, deviation=i < 2) for i, x in enumerate((q, k, v))]  # noqa: E731
    new_pool(), old_pool()  # warm-up (and compile the kernel on CUDA)
    old_t, new_t = [], []
    for _ in range(args.reps):
        old_t.append(_timed(old_pool, device))
        new_t.append(_timed(new_pool, device))
    ref, got = old_pool(), new_pool()
    pool_err = max(float((a - b).abs().max()) for r, n in zip(ref, got, strict=True)
                   for a, b in zip(r[:2], n[:2], strict=True) if a is not None)
    plan = method.plan(q, k, v, layout)
    plan_t = statistics.median(_timed(lambda: method.plan(q, k, v, layout), device) for _ in range(args.reps))
    n, s = layout.num_video_tokens, layout.seq_len
    nb = -(-n // bs)
    selected = float(plan.selected.float().mean())
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    if device.type == "cuda":
        f = lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)  # noqa: E731
        dense_s = statistics.median(_timed(f, device) for _ in range(args.reps))
    else:
        rows = slice(n // 2, n // 2 + args.slice)
        f = lambda: torch.nn.functional.scaled_dot_product_attention(qt[:, :, rows], kt, vt)  # noqa: E731
        dense_s = statistics.median(_timed(f, device) for _ in range(max(1, args.reps // 2))) * s / args.slice
    video_share = (n * n) / (s * s)  # the video x video part of the dense attention the selection acts on
    saved_s = dense_s * video_share * (1 - selected)
    rec = {
        "device": str(device), "grid": list(grid), "text_len": args.text_len, "heads": args.heads,
        "head_dim": args.head_dim, "preset": args.preset, "blocks_per_side": nb,
        "pool_previous_s": statistics.median(old_t), "pool_one_pass_s": statistics.median(new_t),
        "pool_speedup": statistics.median(old_t) / statistics.median(new_t), "pool_max_abs_diff": pool_err,
        "plan_s": plan_t, "selected_fraction": selected, "dense_attention_s": dense_s,
        "dense_attention_how": "SDPA, all rows" if device.type == "cuda" else f"SDPA on {args.slice} query rows, scaled",
        "attention_saved_s": saved_s, "selection_over_saved": plan_t / saved_s,
    }
    load = None
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    out = {"environment": environment() | {"loadavg": load}, "record": rec}
    print(json.dumps(rec, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

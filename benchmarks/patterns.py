"""Static patterns at real sizes: density with/without tiling, layout build time, CPU flex speedup.

For each model size (HunyuanVideo 720p 129 frames: 33 x 45 x 80 + 256 text; Wan 720p 81 frames:
21 x 45 x 80; FLUX 1024^2: 64 x 64 + 512 text) and each pattern preset (plus row-major variants
of the local patterns), this script

* builds the video x video block layout cold (caches cleared) and times the tile choice and the
  build;
* reports the layout's density (fraction of token pairs in visited blocks), the rule's mask density
  (pairs actually allowed), and full / partial block counts, in the tiled and the row-major order;
* measures, on CPU, compiled FlexAttention on that layout against dense SDPA for one head on a
  *query slice* (``--slice-blocks`` query blocks from the middle of the sequence against all keys;
  dense attention over 118,800 keys takes minutes per head on a CPU, so the full call is not timed),
  alternating the two runs so machine noise hits both alike;
* relates the build time to the attention time it serves: one call of all heads (estimated from the
  measured slice) and the whole generation (the layout is cached across layers and steps).

With ``--device cuda`` it instead checks the Triton backend against masked dense attention at a
mid size, then times whole method calls (all heads, text included, tiling gathers included) with the
Triton backend against dense SDPA (flash) at the real sizes.

Nothing here is a test; it writes JSON (``--out``). Usage::

    .venv/bin/python benchmarks/patterns.py --out bench-results/patterns.json
    .venv/bin/python benchmarks/patterns.py --quick   # FLUX only, a smoke run
    python3 benchmarks/patterns.py --device cuda --out $OUT/patterns_gpu.json   # on a GPU machine
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from accel.eval.kernel_bench import environment
from accel.grid import TokenLayout
from accel.kernels import BlockLayout
from accel.kernels.flex import flex_block_sparse_attention, to_flex_block_mask
from accel.methods.clear_local import ClearLocal
from accel.methods.neighborhood import Neighborhood
from accel.methods.radial import Radial

# model -> grid, text tokens, heads, head dim, self-attention layers, denoising steps (for amortisation)
MODELS = {
    "hunyuan_video": dict(grid=(33, 45, 80), text_len=256, heads=24, head_dim=128, layers=60, steps=50),
    "wan": dict(grid=(21, 45, 80), text_len=0, heads=40, head_dim=128, layers=40, steps=50),
    "flux": dict(grid=(1, 64, 64), text_len=512, heads=24, head_dim=128, layers=57, steps=28),
}


def configurations(model: str) -> list[tuple[str, object]]:
    """(name, method) pairs benchmarked for ``model``: the presets (tile-aligned for video), the exact
    token-level rule with the same parameters (tiled order), and row-major variants of the local ones."""
    out = []
    if model != "flux":
        out.append(("radial preset", Radial.preset(model).method))
    clear = ClearLocal.preset(model).method
    nat = Neighborhood.preset(model).method
    out.append(("clear_local preset", clear))
    if clear.granularity != "token":
        out.append(("clear_local exact", dataclasses.replace(clear, granularity="token", tiling=True)))
        out.append(("clear_local tile centres", dataclasses.replace(clear, granularity="tile")))
    out.append(("clear_local row-major", ClearLocal(radius=clear.radius, radius_t=clear.radius_t, tiling=False)))
    out.append(("neighborhood preset", nat))
    if nat.granularity != "token":
        out.append(("neighborhood exact", dataclasses.replace(nat, granularity="token", tiling=True)))
    out.append(("neighborhood row-major", Neighborhood(window=nat.window, stride=nat.stride, tiling=False)))
    small = Neighborhood(window=(3, 9, 9) if model != "flux" else (9, 9), tiling=True)
    out.append(("neighborhood 9x9 window", small))
    return out


def build_cold(method, grid, threads: int) -> tuple[BlockLayout, dict]:
    """Build the video layout from empty caches; returns it and the timings (seconds)."""
    method.clear_cache()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        layout = method.ordered_video_layout(grid)  # the tile choice and the token order
        c1, t1 = time.process_time(), time.perf_counter()
        video = method.video_block_layout(layout, batch=1, heads=1, device="cpu")
        c2, t2 = time.process_time(), time.perf_counter()
        _ = method.video_block_layout(layout, batch=1, heads=1, device="cpu")
        c3, t3 = time.process_time(), time.perf_counter()
    finally:
        torch.set_num_threads(saved)
    # CPU seconds of this process next to the wall seconds: on a shared machine the wall time includes waiting
    return video, {"tile_choice_s": t1 - t0, "build_s": t2 - t1, "cached_lookup_s": t3 - t2,
                   "tile_choice_cpu_s": c1 - c0, "build_cpu_s": c2 - c1, "cached_lookup_cpu_s": c3 - c2}


def slice_rows(layout: BlockLayout, first: int, count: int) -> BlockLayout:
    """The layout restricted to ``count`` query blocks starting at block ``first`` (all keys kept)."""
    sl = slice(first, first + count)
    q_len = min(count * layout.q_block, layout.q_len - first * layout.q_block)
    return BlockLayout(q_len, layout.kv_len, layout.q_block, layout.kv_block, layout.full_idx[:, :, sl].contiguous(),
                       layout.full_cnt[:, :, sl].contiguous(), layout.part_idx[:, :, sl].contiguous(),
                       layout.part_cnt[:, :, sl].contiguous(), layout.part_tile[:, :, sl].contiguous(), layout.tiles,
                       allow_empty_rows=True)


def time_pair(dense, sparse, reps: int) -> tuple[float, float, float]:
    d, s, r = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        dense()
        t1 = time.perf_counter()
        sparse()
        t2 = time.perf_counter()
        d.append(t1 - t0)
        s.append(t2 - t1)
        r.append((t1 - t0) / (t2 - t1))
    return statistics.median(d), statistics.median(s), statistics.median(r)


def run(models, *, slice_blocks: int, reps: int, threads: int, dtype, measure: bool, only: str | None = None,
        log=print) -> list:
    records = []
    for model in models:
        spec = MODELS[model]
        grid = spec["grid"]
        n = grid[0] * grid[1] * grid[2]
        g = torch.Generator().manual_seed(0)
        d = spec["head_dim"]
        q, k, v = (torch.randn(1, n, 1, d, generator=g).to(dtype) for _ in range(3))
        for name, method in configurations(model):
            if only is not None and only not in name:
                continue
            video, times = build_cold(method, grid, threads)
            info = method.describe(grid, text_len=spec["text_len"], heads=spec["heads"], head_dim=spec["head_dim"],
                                   file=None)
            rec = {
                "model": model, "grid": list(grid), "text_len": spec["text_len"], "config": name, "method": repr(method),
                "tile": method.tile_for(grid), "tile_aligned": info["tile_aligned"], "block": method.block_size,
                **times, "positions": info["positions"], "density": info["video_density"],
                "mask_density": info["mask_density"], "density_rowmajor": info["video_density_rowmajor"],
                "full_blocks": info["full_blocks"], "counted_blocks": info["counted_blocks"],
                "partial_blocks": info["partial_blocks"], "full_fraction": info["full_fraction"],
                "strict_full_fraction": info["full_blocks"] / max(1, info["full_blocks"] + info["counted_blocks"]
                                                                  + info["partial_blocks"]),
                "video_blocks": info["video_blocks"], "distinct_tiles": int(video.tiles.shape[0]),
                "predicted_kernel_ms": info["predicted_kernel_ms"], "predicted_dense_ms": info["predicted_dense_ms"],
            }
            rm = rec["density_rowmajor"]
            log(f"{model:13s} {name:24s} tile={str(rec['tile']):12s} density={rec['density']:.4f} "
                f"(row-major {'-' if rm is None else f'{rm:.4f}'}) mask={rec['mask_density']:.4f} "
                f"full={rec['full_blocks']} counted={rec['counted_blocks']} partial={rec['partial_blocks']} "
                f"({rec['full_fraction']:.1%} without a per-token rule, {rec['strict_full_fraction']:.1%} full) "
                f"predicted {rec['predicted_kernel_ms']:.1f} ms "
                f"choose={times['tile_choice_s']:.2f}s build={times['build_s']:.2f}s "
                f"lookup={times['cached_lookup_s'] * 1e3:.3f}ms (CPU: choose {times['tile_choice_cpu_s']:.2f}s "
                f"build {times['build_cpu_s']:.2f}s)")
            if measure:
                nq = video.num_q_blocks
                count = min(slice_blocks, nq)
                first = max(0, nq // 2 - count // 2)
                part = slice_rows(video, first, count)
                a, b = first * video.q_block, first * video.q_block + part.q_len
                perm = method.tile_permutation(grid)
                src = None if perm is None else torch.where(perm >= 0, perm, 0)  # padding positions copy token 0
                qq, kk, vv = (x if src is None else x.index_select(1, src) for x in (q, k, v))
                qs = qq[:, a:b]
                bm = to_flex_block_mask(part, 1, 1)
                scale = d ** -0.5

                dense = functools.partial(torch.nn.functional.scaled_dot_product_attention,
                                          qs.transpose(1, 2), kk.transpose(1, 2), vv.transpose(1, 2))
                sparse = functools.partial(flex_block_sparse_attention, qs, kk, vv, part, scale, False, block_mask=bm)

                t0 = time.perf_counter()
                sparse()
                compile_s = time.perf_counter() - t0
                dense_s, sparse_s, speedup = time_pair(dense, sparse, reps)
                sl_density = part.density()
                per_call = sparse_s * (n / part.q_len) * spec["heads"]  # one call, all heads (estimate)
                rec.update({
                    "slice_query_blocks": count, "slice_density": sl_density, "flex_compile_s": compile_s,
                    "dense_slice_s": dense_s, "flex_slice_s": sparse_s, "speedup": speedup,
                    "ideal_speedup": 1 / sl_density, "fraction_of_ideal": speedup * sl_density,
                    "est_cpu_call_all_heads_s": per_call,
                    "build_over_cpu_call": times["build_s"] / per_call,
                    "build_over_generation": times["build_s"] / (per_call * spec["layers"] * spec["steps"]),
                })
                log(f"{'':13s} slice of {count} query blocks (density {sl_density:.4f}): dense {dense_s:.2f}s "
                    f"flex {sparse_s:.2f}s -> x{speedup:.2f} (ideal x{1 / sl_density:.2f}); build = "
                    f"{rec['build_over_cpu_call']:.2%} of one CPU call, {rec['build_over_generation']:.4%} of a "
                    f"generation")
            records.append(rec)
    return records


def _cuda_time(fn, reps: int) -> float:
    """Median seconds of ``fn`` on CUDA over ``reps`` runs (after one warm-up)."""
    fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(start.elapsed_time(end) / 1e3)
    return statistics.median(out)


def check_cuda(log=print) -> list:
    """Triton backend on CUDA vs fp32 dense attention masked by the methods' own token rules (mid size)."""
    import torch.nn.functional as F

    recs = []
    grid, text_len = (5, 12, 20), 40
    g = torch.Generator(device="cuda").manual_seed(0)
    mask = torch.ones(2, text_len, dtype=torch.bool, device="cuda")
    mask[1, 25:] = False
    layout = TokenLayout(grid, text_len, "last", mask)
    s = layout.seq_len
    for method in (Radial(decay=0.3, block_size=64, sink=True, backend="triton"),
                   Radial(decay=0.3, block_size=64, granularity="token", backend="triton"),
                   ClearLocal(radius=4.5, radius_t=2, block_size=64, backend="triton"),
                   Neighborhood(window=(3, 7, 9), stride=(1, 2, 1), block_size=64, backend="triton")):
        q, k, v = (torch.randn(2, s, 4, 128, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        try:
            out = method(q, k, v, layout)
        except Exception as exc:
            recs.append({"check": type(method).__name__, "error": f"{type(exc).__name__}: {exc}", "ok": False})
            log(f"cuda check {type(method).__name__:12s} FAILED: {type(exc).__name__}: {exc}")
            continue
        m = method.token_mask(layout, batch=2, heads=4, device="cuda")
        want = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                              v.transpose(1, 2).float(), attn_mask=m).transpose(1, 2)
        err = float((out.float() - want).abs().max())
        recs.append({"check": type(method).__name__, "max_abs_err_bf16": err, "ok": err < 3e-2})
        log(f"cuda check {type(method).__name__:12s} max |err| {err:.2e} ({'ok' if err < 3e-2 else 'FAIL'})")
    return recs


def run_cuda(models, *, reps: int, budget_s: float, log=print) -> list:
    """Whole method calls (all heads, text included) with the Triton backend vs dense SDPA on CUDA."""
    import torch.nn.functional as F

    t_start = time.perf_counter()
    records = []
    for model in models:
        spec = MODELS[model]
        grid, text_len, heads, d = spec["grid"], spec["text_len"], spec["heads"], spec["head_dim"]
        n = grid[0] * grid[1] * grid[2]
        side = None if text_len == 0 else ("first" if model == "flux" else "last")
        layout = TokenLayout(grid, text_len, side)
        s = layout.seq_len
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(1, s, heads, d, generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
        dense_s = _cuda_time(functools.partial(F.scaled_dot_product_attention, qt, kt, vt), reps)
        log(f"{model:13s} dense SDPA (all {heads} heads, S={s}): {dense_s * 1e3:.1f} ms")
        for name, method in configurations(model):
            if time.perf_counter() - t_start > budget_s:
                log("time budget reached; stopping")
                return records
            method = dataclasses.replace(method, backend="triton")  # a new object: empty caches
            try:
                t0 = time.perf_counter()
                vlayout = method.ordered_video_layout(grid)  # the order key the method's forward uses
                method.video_block_layout(vlayout, batch=1, heads=heads, device="cuda")
                build_s = time.perf_counter() - t0
                first0 = time.perf_counter()
                method(q, k, v, layout)
                torch.cuda.synchronize()
                first_s = time.perf_counter() - first0
                call_s = _cuda_time(functools.partial(method, q, k, v, layout), reps)
            except Exception as exc:  # keep measuring the other configurations
                log(f"{'':13s} {name:24s} FAILED: {type(exc).__name__}: {exc}")
                records.append({"model": model, "config": name, "error": f"{type(exc).__name__}: {exc}"})
                continue
            info = method.describe(grid, text_len=text_len, heads=heads, head_dim=d, file=None, compare_rowmajor=False)
            dens = info["video_density"]
            pairs = dens * n * n + n * text_len + text_len * s
            joint = pairs / (s * s)
            rec = {
                "device": "cuda", "gpu": torch.cuda.get_device_name(), "model": model, "config": name,
                "method": repr(method), "grid": list(grid), "text_len": text_len, "heads": heads, "head_dim": d,
                "tile": method.tile_for(grid), "tile_aligned": info["tile_aligned"], "video_density": dens,
                "joint_density": joint, "full_fraction": info["full_fraction"],
                "predicted_kernel_ms": info["predicted_kernel_ms"],
                "dense_sdpa_ms": dense_s * 1e3, "method_ms": call_s * 1e3, "speedup": dense_s / call_s,
                "ideal_speedup": 1 / joint, "fraction_of_ideal": dense_s / call_s * joint,
                "layout_build_s": build_s, "first_call_s": first_s,
                "build_over_call": build_s / call_s,
                "build_over_generation": build_s / (call_s * spec["layers"] * spec["steps"]),
                "effective_tflops": 4 * heads * d * pairs / call_s / 1e12,
            }
            records.append(rec)
            log(f"{'':13s} {name:24s} density {joint:.3f}: {call_s * 1e3:8.1f} ms  x{rec['speedup']:.2f} "
                f"(ideal x{1 / joint:.2f}, {rec['fraction_of_ideal']:.2f} of ideal, "
                f"{rec['effective_tflops']:.0f} TFLOP/s useful); build {build_s:.2f}s = "
                f"{rec['build_over_generation']:.3%} of a generation")
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["hunyuan_video", "wan", "flux"])
    p.add_argument("--slice-blocks", type=int, default=32, help="query blocks in the timed slice (default 32)")
    p.add_argument("--reps", type=int, default=3, help="alternating dense/flex repetitions (median)")
    p.add_argument("--build-threads", type=int, default=1,
                   help="torch threads while building layouts (default 1: small ops, less noise on shared CPUs)")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--no-speed", action="store_true", help="layouts and densities only (no flex timing)")
    p.add_argument("--quick", action="store_true", help="FLUX only")
    p.add_argument("--only", default=None, help="cpu: configurations whose name contains this text (e.g. preset)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu: layouts + flex on a query slice; cuda: Triton method calls vs SDPA, all heads")
    p.add_argument("--budget-s", type=float, default=300, help="cuda: stop starting new configurations after this")
    p.add_argument("--out", type=Path, default=Path("bench-results/patterns.json"))
    args = p.parse_args(argv)
    models = ["flux"] if args.quick else args.models
    if args.device == "cuda":
        records = check_cuda() + run_cuda(models, reps=args.reps, budget_s=args.budget_s)
    else:
        records = run(models, slice_blocks=args.slice_blocks, reps=args.reps, threads=args.build_threads,
                      dtype=getattr(torch, args.dtype), measure=not args.no_speed, only=args.only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    load = open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None
    args.out.write_text(json.dumps({"environment": environment() | {"loadavg_at_end": load},
                                    "args": vars(args) | {"out": str(args.out)},
                                    "records": records}, indent=1, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

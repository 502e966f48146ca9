"""Kernel benchmark: block-sparse attention backends against dense SDPA, measured in one process.

CPU: our gather backend (PyTorch's CPU flash kernel on gathered blocks), compiled FlexAttention and the
dense masked reference vs dense ``scaled_dot_product_attention``, called in turn (the order rotates every
round) so that machine noise hits all alike; medians of the rounds, the 1-minute load average recorded
before and after every configuration, and the process CPU time next to the wall time (on a shared
machine the wall time also counts waiting for a core).
CUDA: our Triton kernel vs compiled FlexAttention vs the best of SDPA's flash / cuDNN backends.

Layouts are block-aligned bands with wrap-around: query block i visits key blocks
``(i + j) mod NKV`` for ``j`` in a window centred on 0, so every row has the same count and the
density is exactly ``count / NKV``. With ``partial_fraction > 0`` the outermost blocks of every row
are *partial* blocks with a lower-triangular tile (query offset r sees key offsets <= r), the costly
kind for every backend (a 2-D tile; key padding gives cheaper row-constant tiles). Figures are ratios
measured in the same process (these machines are noisy); every number is written to JSON with its unit.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from accel.eval.timing import Candidate, compare
from accel.kernels import BlockLayout, block_sparse_attention
from accel.kernels.block_layout import _pack_rows
from accel.kernels.flex import flex_block_sparse_attention, to_flex_block_mask
from accel.kernels.gather import gather_block_sparse_attention
from accel.kernels.reference import reference_attention

__all__ = ["band_layout", "random_layout", "run_cpu", "run_cuda", "environment", "main", "CPU_BACKENDS"]

#: what ``run_cpu`` can time: dense SDPA (the baseline, a different result) and three exact backends;
#: ``NAME-cold`` times NAME with the layout's derived data (gather plan, flex BlockMask, dense mask)
#: built anew in every call, as for layouts built per call (dynamic methods)
CPU_BACKENDS = ("dense", "gather", "flex", "reference", "gather-cold", "flex-cold", "reference-cold")


def band_layout(seq_len: int, block: int, density: float, device, *, partial_fraction: float = 0.0) -> BlockLayout:
    """A wrap-around band layout over ``ceil(seq_len/block)`` blocks with ``round(density * NKV)`` (>= 1)
    key blocks per query block.

    Args:
        seq_len: query and key length.
        block: block size (query and key).
        density: target fraction of key blocks per row, in (0, 1].
        device: device of the layout.
        partial_fraction: fraction in [0, 1] of each row's blocks that are partial (the outermost ones,
            alternately right and left of the centre), with a lower-triangular tile; the rest are full.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not 0 <= partial_fraction <= 1:
        raise ValueError(f"partial_fraction must be in [0, 1], got {partial_fraction}")
    nb = -(-seq_len // block)
    count = max(1, min(nb, round(density * nb)))
    offsets = torch.arange(count) - count // 2
    # outermost first: |offset| descending, the right side before the left at equal distance
    by_distance = sorted(range(count), key=lambda j: (-abs(int(offsets[j])), -int(offsets[j])))
    n_part = round(partial_fraction * count)
    is_part = torch.zeros(count, dtype=torch.bool)
    is_part[by_distance[:n_part]] = True
    rows = torch.arange(nb)[:, None]
    cols = (rows + offsets[None, :]) % nb
    full = torch.zeros(nb, nb, dtype=torch.bool)
    part = torch.zeros(nb, nb, dtype=torch.bool)
    full.scatter_(1, cols[:, ~is_part], True)
    part.scatter_(1, cols[:, is_part], True)
    if n_part == 0:
        return BlockLayout.from_block_mask(full.view(1, 1, nb, nb).to(device), block, block, seq_len, seq_len)
    full_idx, full_cnt = _pack_rows(full.view(1, 1, nb, nb))
    part_idx, part_cnt = _pack_rows(part.view(1, 1, nb, nb))
    tiles = torch.ones(block, block, dtype=torch.bool).tril().unsqueeze(0)
    return BlockLayout(seq_len, seq_len, block, block, full_idx, full_cnt, part_idx, part_cnt,
                       torch.zeros_like(part_idx), tiles, allow_empty_rows=True).to(device)


def random_layout(seq_len: int, block: int, density: float, heads: int, device, *, seed: int = 0) -> BlockLayout:
    """A per-head layout of full blocks where every (head, query block) visits its diagonal key block and
    ``round(density * NKV) - 1`` other key blocks drawn at random (the kind of layout dynamic selection
    methods build: no band, different per head).

    Args:
        seq_len: query and key length.
        block: block size (query and key).
        density: fraction of key blocks per row, in (0, 1].
        heads: number of heads (each its own draw).
        device: device of the layout.
        seed: seed of the draw.
    """
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    nb = -(-seq_len // block)
    count = max(1, min(nb, round(density * nb)))
    g = torch.Generator().manual_seed(seed)
    score = torch.rand(1, heads, nb, nb, generator=g)
    score[..., torch.arange(nb), torch.arange(nb)] = 2.0  # the diagonal first
    keep = torch.zeros(1, heads, nb, nb, dtype=torch.bool).scatter_(3, score.topk(count, dim=3).indices, True)
    return BlockLayout.from_block_mask(keep.to(device), block, block, seq_len, seq_len)


def environment() -> dict:
    """Versions and hardware of this run (recorded in every JSON)."""
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        env["diffusers"] = None
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    return env


def _load() -> float:
    return os.getloadavg()[0]


def time_alternating(fns: dict, reps: int, baseline: str | None = None, *,
                     clock: Callable[[], float] = time.perf_counter,
                     cpu_clock: Callable[[], float] = time.process_time) -> dict:
    """Call every function of ``fns`` once per round, ``reps`` rounds, the order rotating each round
    (:func:`accel.eval.timing.compare`, no warm-up: callers warm up and time the first call themselves).

    Returns ``{"ms": {name: median wall ms}, "cpu_ms": {name: median process CPU ms}, "warnings": [...]}``
    (the timing warnings: timer resolution, machine load) and, with a ``baseline`` name,
    ``"speedup": {name: median over rounds of baseline ms / name ms}`` (each round's pair of calls).
    ``clock`` / ``cpu_clock``: the wall and process CPU clocks in seconds (tests pass fake ones).
    """
    res = compare({n: Candidate(fn) for n, fn in fns.items()}, repeats=reps, warmup=0, clock=clock,
                  cpu_clock=cpu_clock)
    wall = {n: [t * 1e3 for t in ts] for n, ts in res.times.items()}
    cpu = {n: [t * 1e3 for t in ts] for n, ts in res.cpu_times.items()}
    out = {"ms": {n: statistics.median(wall[n]) for n in fns}, "cpu_ms": {n: statistics.median(cpu[n]) for n in fns},
           "warnings": res.warnings}
    if baseline is not None:
        out["speedup"] = {n: statistics.median(b / x for b, x in zip(wall[baseline], wall[n], strict=True)) for n in fns}
    return out


def _dense_sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(
        q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    ).permute(0, 2, 1, 3)


def _cold(lay, fn):
    """``fn(lay)`` run with the layout's cache of derived data emptied first (what a new layout costs);
    on a copy of ``lay``, so that the warm backends timed in turn keep their cached data."""
    own = dataclasses.replace(lay)

    def run():
        own._cache.clear()
        return fn(own)
    return run


def _cpu_backend_fns(q, k, v, lay, backends, heads):
    scale = q.shape[-1] ** -0.5
    fns = {}
    for name in backends:
        if name.endswith("-cold") and name in CPU_BACKENDS:
            fns[name] = _cold(lay, functools.partial(block_sparse_attention, q, k, v, scale=scale,
                                                     backend=name.removesuffix("-cold")))
        elif name == "dense":
            fns[name] = functools.partial(_dense_sdpa, q, k, v)
        elif name == "gather":
            fns[name] = functools.partial(gather_block_sparse_attention, q, k, v, lay, scale, False)
        elif name == "flex":
            bm = to_flex_block_mask(lay, q.shape[0], heads)
            fns[name] = functools.partial(flex_block_sparse_attention, q, k, v, lay, scale, False, block_mask=bm)
        elif name == "reference":
            fns[name] = functools.partial(reference_attention, q, k, v, lay, scale, False)
        else:
            raise ValueError(f"unknown CPU backend {name!r}; allowed: {CPU_BACKENDS}")
    return fns


def run_cpu(seq_lens, head_dims, densities, *, heads=4, block=128, dtype=torch.bfloat16, dtypes=None,
            partial_fractions=(0.0,), backends=("dense", "gather", "flex"), reference_max_seq=4096, reps=3,
            layout_kind="band", log=print) -> list:
    """Time CPU backends against dense SDPA; one record per (dtype, S, D, density, partial fraction).

    Args:
        seq_lens: sequence lengths (query = key length).
        head_dims: head dims.
        densities: block densities of the band layouts (see :func:`band_layout`).
        heads: number of heads (batch 1).
        block: block size.
        dtype: the dtype when ``dtypes`` is None.
        dtypes: dtypes to run (overrides ``dtype``).
        partial_fractions: fractions of partial blocks per row (see :func:`band_layout`; band layouts only).
        layout_kind: ``"band"`` (:func:`band_layout`) or ``"random"`` (:func:`random_layout`, per head,
            full blocks only).
        backends: names from :data:`CPU_BACKENDS`; ``"dense"`` is the baseline of the speedups.
        reference_max_seq: skip the reference backend above this length (it is dense masked attention).
        reps: rounds (medians over rounds).
        log: where progress lines go.
    """
    records = []
    for dt in dtypes or [dtype]:
        for s in seq_lens:
            for d in head_dims:
                g = torch.Generator().manual_seed(0)
                q, k, v = (torch.randn(1, s, heads, d, generator=g).to(dt) for _ in range(3))
                for dens in densities:
                    for pf in partial_fractions:
                        records.append(_cpu_record(q, k, v, dens, pf, backends, block, heads, reference_max_seq,
                                                   reps, log, layout_kind))
    return records


def _cpu_record(q, k, v, dens, pf, backends, block, heads, reference_max_seq, reps, log, layout_kind="band") -> dict:
    s, d, dt = q.shape[1], q.shape[3], q.dtype
    if layout_kind == "band":
        lay = band_layout(s, block, dens, "cpu", partial_fraction=pf)
    elif layout_kind == "random" and pf == 0:
        lay = random_layout(s, block, dens, heads, "cpu")
    else:
        raise ValueError(f"layout_kind must be 'band' or 'random' (random: partial fraction 0), got {layout_kind!r}, {pf}")
    names = [b for b in backends if b != "reference" or s <= reference_max_seq]
    if "dense" not in names:
        names.insert(0, "dense")
    fns = _cpu_backend_fns(q, k, v, lay, names, heads)
    load_before = _load()
    first = {}
    for name, fn in fns.items():  # compile (flex) / build the plan (gather) / warm up
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    timing = time_alternating(fns, reps, baseline="dense")
    density = lay.density()
    kinds = lay.block_kinds()
    partial_blocks = float((kinds == 2).sum() / (kinds > 0).sum())
    rec = {
        "device": "cpu", "dtype": str(dt).replace("torch.", ""), "batch": 1, "heads": heads,
        "seq_len": s, "head_dim": d, "block": block, "layout": layout_kind, "density": density,
        "partial_block_fraction": partial_blocks, "pairs": s * s,
        "ms": timing["ms"], "cpu_ms": timing["cpu_ms"], "speedup_vs_dense": timing["speedup"],
        "fraction_of_ideal": {n: x * density for n, x in timing["speedup"].items()},
        "ideal_speedup": 1 / density, "first_call_s": first, "reps": reps,
        "load_1min": [load_before, _load()], "timing_warnings": timing["warnings"],
    }
    line = "  ".join(f"{n} {rec['ms'][n]:8.1f} ms" + ("" if n == "dense" else f" x{rec['speedup_vs_dense'][n]:5.2f}")
                     for n in names)
    log(f"cpu {layout_kind} {rec['dtype']} S={s:6d} D={d:3d} density={density:.3f} partial={partial_blocks:.2f}: {line} "
        f"(ideal x{1 / density:5.2f}; load {load_before:.1f})")
    return rec


def run_cuda(seq_lens, densities, *, heads=24, head_dim=128, block=128, dtype=torch.bfloat16, log=print) -> list:
    """Triton vs compiled FlexAttention vs SDPA's best dense backend on CUDA; one record per (S, density)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    records = []
    for s in seq_lens:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(1, s, heads, head_dim, device="cuda", generator=g, dtype=dtype) for _ in range(3))
        dense_flops = 4.0 * heads * s * s * head_dim
        sdpa = {}
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                with sdpa_kernel([be]):
                    sdpa[name] = do_bench(functools.partial(_dense_sdpa, q, k, v))
            except RuntimeError as exc:  # backend not available for this build / shape
                log(f"sdpa {name} unavailable: {exc}")
        best_name = min(sdpa, key=sdpa.get)
        best_ms = sdpa[best_name]
        for dens in densities:
            lay = band_layout(s, block, dens, "cuda")
            density = lay.density()
            flops = dense_flops * density
            triton_ms = do_bench(functools.partial(block_sparse_attention, q, k, v, lay, backend="triton"))
            bm = to_flex_block_mask(lay, 1, heads)
            try:
                flex_ms = do_bench(
                    functools.partial(flex_block_sparse_attention, q, k, v, lay, head_dim**-0.5, False, block_mask=bm)
                )
            except Exception as exc:  # noqa: BLE001 - record and go on
                log(f"flex failed at S={s}: {exc}")
                flex_ms = math.nan
            rec = {
                "device": "cuda", "dtype": str(dtype).replace("torch.", ""), "batch": 1, "heads": heads,
                "seq_len": s, "head_dim": head_dim, "block": block, "density": density,
                "sdpa_ms": sdpa, "sdpa_best": best_name, "sdpa_best_ms": best_ms,
                "sdpa_best_tflops": dense_flops / best_ms / 1e9,
                "triton_ms": triton_ms, "triton_tflops": flops / triton_ms / 1e9,
                "flex_ms": flex_ms, "flex_tflops": flops / flex_ms / 1e9,
                "triton_speedup_vs_sdpa": best_ms / triton_ms, "flex_speedup_vs_sdpa": best_ms / flex_ms,
                "ideal_speedup": 1 / density,
                "triton_fraction_of_ideal": best_ms / triton_ms * density,
                "kernel_efficiency": (flops / triton_ms) / (dense_flops / best_ms),
            }
            records.append(rec)
            log(f"cuda S={s:6d} density={density:.3f}: sdpa-{best_name} {best_ms:8.2f} ms  triton {triton_ms:8.2f} ms "
                f"({rec['triton_tflops']:.0f} TFLOP/s, x{rec['triton_speedup_vs_sdpa']:.2f})  flex {flex_ms:8.2f} ms")
        del q, k, v
        torch.cuda.empty_cache()
    return records


def _targets(records) -> dict:
    out = {}
    cpu = [r for r in records if r["device"] == "cpu" and "gather" in r["ms"]]
    band = [r for r in cpu if r["seq_len"] >= 16384 and r["head_dim"] == 64 and r["dtype"] == "bfloat16"
            and r["partial_block_fraction"] == 0 and 0.09 <= r["density"] <= 0.11]
    if band:
        worst = min(r["fraction_of_ideal"]["gather"] for r in band)
        out["cpu_gather_fraction_of_ideal_S16k_d64_bf16_10pct_band"] = {
            "target": ">= 0.6", "worst": worst, "met": worst >= 0.6,
        }
    with_flex = [r for r in cpu if "flex" in r["ms"]]
    if with_flex:
        from accel.kernels.attention import cpu_auto_backend

        ratios = []
        for r in with_flex:
            chosen = cpu_auto_backend(r["seq_len"], r["seq_len"])
            if chosen in r["ms"]:
                ratios.append(r["ms"][chosen] / r["ms"]["flex"])
        if ratios:
            worst = max(ratios)
            out["cpu_auto_time_over_flex"] = {"target": "<= 1.05", "worst": worst, "met": worst <= 1.05,
                                              "records": len(ratios)}
    gpu = [r for r in records if r["device"] == "cuda"]
    if gpu:
        dense = [r for r in gpu if r["density"] >= 0.999]
        if dense:
            worst = min(r["triton_speedup_vs_sdpa"] for r in dense)
            out["triton_dense_vs_sdpa_best"] = {"target": ">= 0.9", "worst": worst, "met": worst >= 0.9}
        mid = [r for r in gpu if 0.1 - 1e-9 <= r["density"] <= 0.5 + 1e-9]
        if mid:
            worst = min(r["triton_fraction_of_ideal"] for r in mid)
            beats = all(r["triton_ms"] <= r["flex_ms"] or math.isnan(r["flex_ms"]) for r in mid)
            out["triton_fraction_of_ideal_density_10_50pct"] = {"target": ">= 0.85", "worst": worst, "met": worst >= 0.85}
            out["triton_beats_flex_density_10_50pct"] = {"met": beats}
    return out


def main(argv=None) -> int:
    """Command line: ``python benchmarks/kernels.py`` or ``accel bench kernels`` (same options)."""
    p = argparse.ArgumentParser(prog="accel bench kernels", description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                   help="cpu: gather / flex / reference vs SDPA; cuda: triton vs flex vs SDPA (auto: cuda if available)")
    p.add_argument("--seq-lens", type=int, nargs="+", default=None,
                   help="sequence lengths (default cpu: 4096 8192 16384; cuda: 32768 65536 118800)")
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128], help="CPU head dims (cuda uses 128)")
    p.add_argument("--densities", type=float, nargs="+", default=None,
                   help="block densities (default cpu: 0.05 0.1 0.2 0.3 0.5; cuda adds 1.0)")
    p.add_argument("--dtypes", choices=["bfloat16", "float32", "float16"], nargs="+", default=["bfloat16"],
                   help="CPU dtypes (cuda uses bfloat16)")
    p.add_argument("--partial-fractions", type=float, nargs="+", default=[0.0],
                   help="CPU: fractions of each row's blocks that are partial (lower-triangular tiles)")
    p.add_argument("--backends", choices=CPU_BACKENDS, nargs="+", default=["dense", "gather", "flex"],
                   help="CPU backends to time (dense SDPA is always timed: it is the baseline)")
    p.add_argument("--reference-max-seq", type=int, default=4096,
                   help="CPU: time the reference backend only up to this sequence length")
    p.add_argument("--heads", type=int, default=None, help="heads (default cpu 4, cuda 24)")
    p.add_argument("--reps", type=int, default=3, help="CPU timing rounds (medians)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="CPU: only S=4096, D=64, densities 0.1 0.3 (a smoke run)")
    p.add_argument("--out", type=Path, default=Path("bench-results/kernels.json"), help="JSON output file")
    args = p.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda given but no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    if device == "cpu":
        seq = args.seq_lens or ([4096] if args.quick else [4096, 8192, 16384])
        dims = [64] if args.quick else args.head_dims
        dens = args.densities or ([0.1, 0.3] if args.quick else [0.05, 0.1, 0.2, 0.3, 0.5])
        records = run_cpu(seq, dims, dens, heads=args.heads or 4, reps=args.reps,
                          dtypes=[getattr(torch, n) for n in args.dtypes], partial_fractions=args.partial_fractions,
                          backends=args.backends, reference_max_seq=args.reference_max_seq)
    else:
        seq = args.seq_lens or [32768, 65536, 118800]
        dens = args.densities or [0.1, 0.2, 0.3, 0.5, 1.0]
        records = run_cuda(seq, dens, heads=args.heads or 24)
    result = {
        "benchmark": "kernels", "units": {"*_ms": "milliseconds (median)", "*_tflops": "TFLOP/s counting computed pairs",
                                          "density": "fraction of query-key pairs computed",
                                          "cpu_ms": "process CPU time, milliseconds (median)",
                                          "load_1min": "1-minute load average before / after the record"},
        "command": "accel bench kernels " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment(), "records": records, "targets": _targets(records),
        "wall_s": time.time() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(json.dumps(result["targets"], indent=2))
    print(f"wrote {args.out}")
    return 0

"""The prepared GPU run of the Triton kernel: correctness of every path first, then the figures.

    python benchmarks/gpu_check.py --out DIR [--budget-s 290]          # on a CUDA machine
    python benchmarks/gpu_check.py --tiny --out DIR                   # CPU, interpreted, tiny sizes

Needs only torch + triton (no diffusers, no network, no pytest); run it from the repository root (it
puts the root on ``sys.path``). It writes ``DIR/gpu_check.json`` after every record (``status`` says
``running``, ``ok``, ``failed`` or ``stopped: budget``) and prints a summary table last.

Order (nothing is timed before it has been checked):

1. **correctness**: every partial kind (full-only with a ragged edge, key padding, tiles, window,
   ellipsoid) on the untuned default configuration, and the other kernel paths (persistent, tensor
   descriptors / TMA, warp specialisation, when the installed Triton offers them) on the window kind
   (it runs all three loops) -- each against an fp32 masked-dense reference whose mask is built here
   from the pattern's definition (not from the layout). A failing check writes the record, sets
   ``failed``, and exits 1 without running any benchmark. (Tuning also compares every candidate's
   output with the verified default's on the real problem, and drops the ones that differ.)
2. **dense**: at S = 119,056 (24 heads, HunyuanVideo 720p) and 75,600 (40 heads, Wan 720p), d = 128,
   bf16: SDPA with each backend (flash, efficient, cuDNN; the best is the baseline), xformers'
   memory-efficient attention when installed, and our kernel on a full layout (tuned on first use:
   the tuning time and every candidate's timing are recorded; the tuned path is verified first).
3. **sparse** (S = 119,056, 24 heads): block bands at 10/30/50% density as full-only blocks, as
   partial blocks with tiles, with a window and with an ellipsoid predicate (same blocks: the ratio
   to full-only is the cost of a partial block), a padded-text variant, and Neighborhood-like /
   CLEAR-like analytic layouts on the 33 x 45 x 80 grid in a tiled order; the configuration tuned for
   dense is verified on every kind at small size first.

``--budget-s`` stops cleanly between records (the JSON says what ran). ``--tiny`` runs the same code
under ``TRITON_INTERPRET=1`` at tiny sizes with a CPU timer (tests/kernels/test_gpu_check.py), so the
script cannot rot between GPU loans; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import statistics
import sys
import time

if "--tiny" in sys.argv:  # the interpreter must be chosen before any Triton kernel is defined
    os.environ.setdefault("TRITON_INTERPRET", "1")
ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from accel.kernels import (  # noqa: E402
    BlockLayout,
    EllipsoidPredicate,
    WindowPredicate,
    block_sparse_attention,
    ellipsoid_form,
)
from accel.kernels import triton_tuning as tuning  # noqa: E402

GRID_HV = (33, 45, 80)  # HunyuanVideo 720p, 129 frames: 118,800 video tokens (+ 256 text = 119,056)
TEXT_HV = 256


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of one mode."""

    block: int
    head_dim: int
    check_grid: tuple[int, int, int]
    check_text: int
    check_heads: int
    dense: tuple[tuple[str, int, int], ...]  # (label, S, heads)
    sparse_grid: tuple[int, int, int]
    sparse_text: int
    sparse_heads: int
    densities: tuple[float, ...]
    variant_blocks: tuple[int, int]  # program tile of the extra-path checks


GPU = Sizes(128, 128, (4, 12, 20), 80, 2, (("hunyuan_720p", 119_056, 24), ("wan_720p", 75_600, 40)),
            GRID_HV, TEXT_HV, 24, (0.1, 0.3, 0.5), (128, 64))
TINY = Sizes(32, 16, (2, 4, 6), 12, 1, (("tiny", 72, 1),), (2, 4, 6), 12, 1, (0.3,), (16, 16))


class Report:
    """The JSON file, rewritten after every record."""

    def __init__(self, path: pathlib.Path, budget_s: float, meta: dict):
        self.path, self.budget_s, self.t0 = path, budget_s, time.monotonic()
        self.data = {"status": "running", "meta": meta, "records": [], "chosen_configs": {}}
        self.write()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def over_budget(self) -> bool:
        return self.elapsed() > self.budget_s

    def add(self, section: str, **fields) -> dict:
        record = {"section": section, "t_s": round(self.elapsed(), 2), **fields}
        self.data["records"].append(record)
        self.write()
        print(json.dumps(record, default=str), flush=True)
        return record

    def write(self, status: str | None = None) -> None:
        if status is not None:
            self.data["status"] = status
        self.data["elapsed_s"] = round(self.elapsed(), 2)
        self.data["chosen_configs"] = tuning.chosen_configs()
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


class BudgetSpent(Exception):
    """Raised between records when --budget-s is exceeded."""


@contextlib.contextmanager
def forced(config: tuning.KernelConfig | None):
    """Run with ACCEL_TRITON_CONFIG set to ``config`` (None: the tuner decides)."""
    old = os.environ.get("ACCEL_TRITON_CONFIG")
    if config is None:
        os.environ.pop("ACCEL_TRITON_CONFIG", None)
    else:
        os.environ["ACCEL_TRITON_CONFIG"] = str(config)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ACCEL_TRITON_CONFIG", None)
        else:
            os.environ["ACCEL_TRITON_CONFIG"] = old


def grid_coords(grid) -> torch.Tensor:
    t, h, w = grid
    idx = torch.arange(t * h * w)
    return torch.stack((idx // (h * w), (idx // w) % h, idx % w), dim=1).to(torch.int32)


# ---------------------------------------------------------------------- the patterns, with independent masks
def check_cases(sizes: Sizes, device) -> dict:
    """name -> (layout, token mask [B|1, 1, S, S]) on a small ragged problem; masks from the definitions."""
    g = torch.Generator().manual_seed(0)
    c = grid_coords(sizes.check_grid)
    n, text, blk = c.shape[0], sizes.check_text, sizes.block
    s = n + text
    cases = {}
    ones = torch.ones(1, 1, s, s, dtype=torch.bool)
    cases["full"] = (BlockLayout.full(s, s, q_block=blk, kv_block=blk), ones)
    counts = torch.tensor([text // 3, text])  # batch 0: padded text; batch 1: none
    valid = torch.arange(s)[None, :] < (n + counts)[:, None]
    cases["full+pad"] = (BlockLayout.full(s, s, q_block=blk, kv_block=blk).with_key_padding(n + counts),
                         valid[:, None, None, :].expand(2, 1, s, s))
    tok = torch.rand(1, 1, s, s, generator=g) < 0.3
    band = (torch.arange(s)[:, None] // blk - torch.arange(s)[None, :] // blk).abs() <= 1
    tok |= band[None, None] & (torch.rand(1, 1, s, 1, generator=g) < 0.5)
    tok[..., 0] = True
    cases["tiles"] = (BlockLayout.from_token_mask(tok, blk, blk), tok)
    r = torch.tensor([1, 3, 3], dtype=torch.int32)
    win = ones.clone()
    win[0, 0, :n, :n] = ((c[:, None, :] - c[None, :, :]).abs() <= r).all(-1)
    cases["window"] = (BlockLayout.from_predicate(WindowPredicate(c - r, c + r, c), blk, blk, s, s), win)
    # ellipsoid radii (t, y, x) = (2, 4.5, 4.5): dt^2/4 + (dy^2 + dx^2)/20.25 < 1, i.e. 81 dt^2 + 16 (dy^2 + dx^2) < 324
    weights, limit = ellipsoid_form([2, 4.5, 4.5])
    d = c[:, None, :].long() - c[None, :, :].long()
    ell = ones.clone()
    ell[0, 0, :n, :n] = 81 * d[..., 0] ** 2 + 16 * (d[..., 1] ** 2 + d[..., 2] ** 2) < 324
    cases["ellipsoid"] = (BlockLayout.from_predicate(EllipsoidPredicate(c, c, weights, limit), blk, blk, s, s), ell)
    return {k: (lay.to(device), m.to(device)) for k, (lay, m) in cases.items()}


def reference_attention(q, k, v, mask):
    """fp32 masked softmax attention, [B, S, H, D]; rows with no allowed key give 0."""
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * q.shape[-1] ** -0.5
    s = s.masked_fill(~mask, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhd->bqhd", p, v.float())


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    if not bool(torch.isfinite(got).all()):
        return math.inf
    return float((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12))


def tolerance(dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 2e-2


def verify(report, sizes, device, dtype, cases, name, config, label) -> None:
    """One correctness record; exits the run (status failed, code 1) when it fails."""
    lay, mask = cases[name]
    s = lay.q_len
    bsz = lay.batch_heads[0]
    g = torch.Generator(device=device).manual_seed(len(report.data["records"]))
    q, k, v = (torch.randn(bsz, s, sizes.check_heads, sizes.head_dim, device=device, generator=g, dtype=dtype)
               for _ in range(3))
    want = reference_attention(q, k, v, mask)
    try:
        with forced(config):
            got = block_sparse_attention(q, k, v, lay, backend="triton")
        err = relative_error(got, want)
        error = None
    except Exception as exc:  # noqa: BLE001 - recorded, then the run stops
        err, error = math.inf, f"{type(exc).__name__}: {str(exc)[:300]}"
    ok = err <= tolerance(dtype)
    report.add("correctness", kind=name, path=label, config=str(config) if config else "tuned",
               rel_error=err, tolerance=tolerance(dtype), ok=ok, error=error, seq=s, batch=bsz)
    if not ok:
        report.write("failed")
        print(f"correctness FAILED: {name} / {label}: rel error {err} > {tolerance(dtype)} {error or ''}")
        sys.exit(1)


# ---------------------------------------------------------------------- timing
def timer(device, reps: int):
    """ms per call: CUDA events (median of ``reps`` after a warm-up) or perf_counter on CPU."""

    def measure(fn) -> float:
        fn()
        times = []
        for _ in range(reps):
            if device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    return measure


def sdpa_backends():
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}


def attention_flops(bsz, heads, s_q, s_k, d, density=1.0) -> float:
    return 4.0 * bsz * heads * s_q * s_k * d * density


def dense_section(report, sizes, device, dtype, measure):
    """SDPA backends, xformers, and our kernel on a full layout; returns {label: (triton ms, sdpa best ms)}."""
    results = {}
    for label, s, heads in sizes.dense:
        if report.over_budget():
            raise BudgetSpent
        results[label] = dense_one(report, sizes, device, dtype, measure, label, s, heads)
    return results


def dense_one(report, sizes, device, dtype, measure, label, s, heads):
    from torch.nn.attention import sdpa_kernel

    g = torch.Generator(device=device).manual_seed(1)
    q, k, v = (torch.randn(1, s, heads, sizes.head_dim, device=device, generator=g, dtype=dtype) for _ in range(3))
    flops = attention_flops(1, heads, s, s, sizes.head_dim)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))

    def sdpa():
        return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)

    best = (math.inf, None, None)
    for name, backend in (sdpa_backends().items() if device.type == "cuda" else [("default", None)]):
        try:
            with sdpa_kernel(backend) if backend is not None else contextlib.nullcontext():
                ms = measure(sdpa)
                out = sdpa().transpose(1, 2)
            report.add("dense", case=label, impl=f"sdpa-{name}", seq=s, heads=heads, ms=ms, tflops=flops / ms / 1e9)
            if ms < best[0]:
                best = (ms, name, out)
        except Exception as exc:  # noqa: BLE001 - a backend this build or GPU lacks
            report.add("dense", case=label, impl=f"sdpa-{name}", seq=s, heads=heads,
                       error=f"{type(exc).__name__}: {str(exc)[:200]}")
    try:
        import xformers.ops as xops

        ms = measure(lambda: xops.memory_efficient_attention(q, k, v))
        report.add("dense", case=label, impl="xformers-mem-efficient", seq=s, heads=heads, ms=ms,
                   tflops=flops / ms / 1e9, vs_sdpa_best=best[0] / ms)
    except ImportError:
        report.add("dense", case=label, impl="xformers-mem-efficient", note="not installed")
    except Exception as exc:  # noqa: BLE001
        report.add("dense", case=label, impl="xformers-mem-efficient", error=f"{type(exc).__name__}: {exc}"[:300])
    lay = BlockLayout.full(s, s, q_block=sizes.block, kv_block=sizes.block, device=device)

    def ours():
        return block_sparse_attention(q, k, v, lay, backend="triton")

    t = time.monotonic()
    out = ours()  # first call: tuning (persisted)
    first_s = time.monotonic() - t
    ms = measure(ours)
    err = relative_error(out, best[2]) if best[2] is not None else None
    report.add("dense", case=label, impl="triton", seq=s, heads=heads, ms=ms, tflops=flops / ms / 1e9,
               first_call_s=round(first_s, 2), vs_sdpa_best=best[0] / ms, sdpa_best=best[1],
               rel_error_vs_sdpa=err, ok=err is None or err <= tolerance(dtype))
    return ms, best[0]


def band_blocks(nb: int, density: float) -> torch.Tensor:
    """bool [1, 1, nb, nb]: a band of key blocks around the diagonal with about ``density`` of the blocks."""
    w = max(0, round((density * nb - 1) / 2))
    i = torch.arange(nb)
    return ((i[:, None] - i[None, :]).abs() <= w).view(1, 1, nb, nb)


def as_partial(full: BlockLayout, predicate=None, tiles=None, tile_of=None) -> BlockLayout:
    """The same visited blocks as ``full`` (full-only), every one of them partial."""
    zeros = torch.zeros_like(full.full_cnt)
    empty = torch.zeros_like(full.full_idx[..., :1])
    return BlockLayout(full.q_len, full.kv_len, full.q_block, full.kv_block, empty, zeros, full.full_idx,
                       full.full_cnt, tile_of, tiles, allow_empty_rows=True, predicate=predicate)


def sparse_layouts(sizes: Sizes, density: float, device):
    """name -> layout over the sparse problem (grid + text at the end), same band of blocks for each kind."""
    c = grid_coords(sizes.sparse_grid).to(device)
    n = c.shape[0]
    s = n + sizes.sparse_text
    blk = sizes.block
    nb = -(-s // blk)
    full = BlockLayout.from_block_mask(band_blocks(nb, density).to(device), blk, blk, s, s)
    g = torch.Generator(device=device).manual_seed(2)
    tiles = torch.rand(16, blk, blk, device=device, generator=g) < 0.7
    tile_of = torch.randint(0, 16, full.full_idx.shape, device=device, generator=g, dtype=torch.int32)
    lo = torch.zeros_like(c)
    hi = torch.full_like(c, 1 << 20)
    out = {
        "full-only": full,
        "tiles": as_partial(full, tiles=tiles, tile_of=tile_of),
        "window": as_partial(full, predicate=WindowPredicate(lo, hi, c)),
        "ellipsoid": as_partial(full, predicate=EllipsoidPredicate(c, c, (1, 1, 1), 2**31 - 1)),
        "full-only+pad": full.with_key_padding(s - sizes.sparse_text // 4),
    }
    return out


def analytic_layouts(sizes: Sizes, device):
    """Neighborhood-like and CLEAR-like layouts on the sparse grid in a tiled token order (text at the end)."""
    from accel.patterns.tiling import tile_order

    c = grid_coords(sizes.sparse_grid)
    tile = (2, 8, 8) if sizes.block == 128 else (1, 4, sizes.block // 4)
    perm = tile_order(c.long(), tile)
    c = c[perm].to(device)
    n = c.shape[0]
    s = n + sizes.sparse_text
    out = {}
    for name, r in (("neighborhood", (4, 8, 8)), ("neighborhood-small", (2, 4, 4))):
        rr = torch.tensor(r, dtype=torch.int32, device=device)
        out[name] = BlockLayout.from_predicate(WindowPredicate(c - rr, c + rr, c), sizes.block, sizes.block, s, s)
    weights, limit = ellipsoid_form([3, 12.5, 12.5])
    out["clear-ellipsoid"] = BlockLayout.from_predicate(EllipsoidPredicate(c, c, weights, limit), sizes.block,
                                                        sizes.block, s, s)
    return out


def sparse_section(report, sizes, device, dtype, measure, dense_ms: float | None, sdpa_ms: float | None):
    s = int(grid_coords(sizes.sparse_grid).shape[0]) + sizes.sparse_text
    heads, d = sizes.sparse_heads, sizes.head_dim
    g = torch.Generator(device=device).manual_seed(3)
    q, k, v = (torch.randn(1, s, heads, d, device=device, generator=g, dtype=dtype) for _ in range(3))

    def run(label, name, lay, base_ms=None):
        if report.over_budget():
            raise BudgetSpent
        ms = measure(lambda: block_sparse_attention(q, k, v, lay, backend="triton"))
        dens = lay.density()
        fields = dict(case=label, kind=name, partial_kind=lay.partial_kind, seq=s, heads=heads, density=dens,
                      ms=ms, tflops_effective=attention_flops(1, heads, s, s, d, dens) / ms / 1e9)
        if dense_ms:
            fields.update(speedup_vs_triton_dense=dense_ms / ms, ideal=1 / dens, fraction_of_ideal=dense_ms / ms * dens)
        if sdpa_ms:
            fields.update(speedup_vs_sdpa_best=sdpa_ms / ms)
        if base_ms:
            fields.update(cost_vs_full_only_same_blocks=ms / base_ms)
        report.add("sparse", **fields)
        return ms

    for density in sizes.densities:
        lays = sparse_layouts(sizes, density, device)
        base = run(f"band {density:.0%}", "full-only", lays.pop("full-only"))
        for name, lay in lays.items():
            run(f"band {density:.0%}", name, lay, base)
    for name, lay in analytic_layouts(sizes, device).items():
        run("grid", name, lay)


def extra_paths(sizes: Sizes, feats: dict, default: tuning.KernelConfig, tiny: bool) -> list:
    """(label, config) of the kernel paths besides the default: persistent, TMA, TMA + warp specialisation
    (the first such tuning candidate; sub-block program tiles in tiny mode)."""
    if tiny:
        bm, bn = sizes.variant_blocks
        cands = [tuning.KernelConfig(bm, bn, 4, 2, tma=True), tuning.KernelConfig(bm, bn, 4, 2, tma=True, warp_spec=True)]
    else:
        cands = tuning.candidates(sizes.head_dim, sizes.block, sizes.block, tma=feats["tma"],
                                  warp_spec=feats["warp_spec"])
    out = [("persistent", dataclasses.replace(default, persistent=True))]
    tma = [c for c in cands if c.tma and not c.warp_spec]
    ws = [c for c in cands if c.warp_spec]
    if feats["tma"] and tma:
        out.append(("tma", tma[0]))
    if feats["warp_spec"] and ws:
        out.append(("tma+warp_spec", ws[0]))
    return out


def tuned_dense_config() -> tuning.KernelConfig | None:
    """The configuration the tuner resolved for the dense (full-only) calls of this run."""
    for key, entry in tuning.chosen_configs().items():
        if "full-only" in key and "+pad" not in key and entry.get("how") != "forced":
            return tuning.parse_config(entry["config"])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-results", help="directory for gpu_check.json")
    parser.add_argument("--budget-s", type=float, default=290.0, help="stop cleanly after this many seconds")
    parser.add_argument("--tiny", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny sizes (tests)")
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tiny = args.tiny
    if not tiny and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or use --tiny (CPU, interpreted)")
    if tiny and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("--tiny needs TRITON_INTERPRET=1 before accel is imported (run it as a script)")
    device = torch.device("cpu" if tiny else "cuda")
    sizes = TINY if tiny else GPU
    dtype = torch.bfloat16
    import triton

    meta = {"torch": torch.__version__, "triton": triton.__version__, "tiny": tiny,
            "device": torch.cuda.get_device_name() if not tiny else "cpu (interpreter)",
            "env": {k: v for k, v in os.environ.items() if k.startswith("ACCEL_") or k == "TRITON_INTERPRET"},
            "loadavg": os.getloadavg(), "budget_s": args.budget_s}
    feats = {"tma": True, "warp_spec": True} if tiny else tuning.hopper_features(torch.cuda.current_device())
    if os.environ.get("ACCEL_TRITON_PORTABLE") == "1":
        feats = {"tma": False, "warp_spec": False}
    meta["hopper_features"] = feats
    if not tiny:
        props = torch.cuda.get_device_properties(0)
        meta.update(capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count,
                    memory_gb=round(props.total_memory / 2**30, 1))
        os.environ.setdefault("ACCEL_TRITON_TUNE_BUDGET_S", "75")
    report = Report(out_dir / "gpu_check.json", args.budget_s, meta)
    measure = timer(device, reps=3 if not tiny else 1)
    try:
        if not tiny:
            a = torch.randn(8192, 8192, device=device, dtype=dtype)
            ms = measure(lambda: a @ a)
            report.add("ceiling", what="bf16 matmul 8192^3", ms=ms, tflops=2 * 8192**3 / ms / 1e9)
            big = torch.empty(2**28, dtype=torch.uint8, device=device)
            ms = measure(lambda: big.clone())
            report.add("ceiling", what="device copy 256 MiB", ms=ms, gb_s=2 * 2**28 / ms / 1e6)
            del a, big
        cases = check_cases(sizes, device)
        default = tuning.candidates(sizes.head_dim, sizes.block, sizes.block, tma=False, warp_spec=False)[0]
        if tiny:
            default = tuning.KernelConfig(*sizes.variant_blocks, 4, 2)
        for name in cases:
            verify(report, sizes, device, dtype, cases, name, default, "portable default")
        variants = extra_paths(sizes, feats, default, tiny)
        for label, cfg in variants:  # the window kind runs every loop of the kernel (clean, edge, partial)
            verify(report, sizes, device, dtype, cases, "window", cfg, label)
        # the tuned path: tune on the first dense problem, verify it, then time
        dense = dense_section(report, sizes, device, dtype, measure)
        best = tuned_dense_config() or default
        for name in cases:
            verify(report, sizes, device, dtype, cases, name, best, "tuned (dense)")
        first = next(iter(dense.values()), (None, None))
        if sizes is GPU:  # the sparse problem is HunyuanVideo's: compare with its dense figures
            first = dense.get("hunyuan_720p", first)
        with forced(best):  # the dense figures were measured with the same configuration
            sparse_section(report, sizes, device, dtype, measure, first[0], first[1])
        status = "ok"
    except BudgetSpent:
        status = "stopped: budget"
    report.write(status)
    summary(report)
    return 0


def summary(report: Report) -> None:
    print(f"\n== gpu_check: {report.data['status']} after {report.elapsed():.0f} s ==")
    for key, entry in report.data["chosen_configs"].items():
        print(f"config  {entry.get('how', '?'):>12}  {entry.get('config')}  <- {key}")
    for r in report.data["records"]:
        if r["section"] == "correctness":
            print(f"check   {r['kind']:<12} {r['path']:<18} rel err {r['rel_error']:.2e}  {'ok' if r['ok'] else 'FAIL'}")
        elif r["section"] == "dense" and "ms" in r:
            extra = f"  x{r['vs_sdpa_best']:.2f} of SDPA best" if "vs_sdpa_best" in r else ""
            print(f"dense   {r['case']:<12} {r['impl']:<22} {r['ms']:9.2f} ms {r['tflops']:6.0f} TFLOP/s{extra}")
        elif r["section"] == "sparse":
            extra = f"  {r['fraction_of_ideal']:.2f} of ideal" if "fraction_of_ideal" in r else ""
            extra += f"  x{r['cost_vs_full_only_same_blocks']:.2f} of full-only" if "cost_vs_full_only_same_blocks" in r else ""
            print(f"sparse  {r['case']:<10} {r['kind']:<18} d={r['density']:.3f} {r['ms']:9.2f} ms{extra}")


if __name__ == "__main__":
    sys.exit(main())

"""CPU backends on the layouts of issue 24: the figures behind ``"auto"``'s CPU rule (writes JSON).

Times, in one process, the gather backend, compiled FlexAttention and the dense masked reference
against dense SDPA on block-aligned band layouts (``accel.eval.kernel_bench.run_cpu``: backends called
in turn, order rotating, medians, 1-minute load average before / after each record, process CPU time),
in groups that each run in a few minutes on a shared 2-core machine:

* ``target``: S = 16,384, D = 64, bf16, a 10% band of full blocks (the issue's target layout);
* ``s4096``: S = 4,096 (the old rule's flex threshold), D = 64 / 128, densities 10% / 30%, 0 / 50 / 100%
  of each row's blocks partial (lower-triangular tiles);
* ``small``: S = 1,024 / 2,304 (the embedded model's length), bf16 and fp32, where the old rule ran
  the reference;
* ``random``: S = 2,304 / 4,096, bf16, per-head layouts of full blocks at random (as dynamic
  selection methods build), densities 10% / 30%;
* ``tiny``: S = 256 / 512, fp32 (test sizes), also with the layout's derived data built in every call
  (``-cold``: layouts built per call by dynamic methods pay it each time).

Every record also names ``current``, the backend the previous CPU rule picked (flex from 4096 x 4096
query-key pairs, the reference below), and ``winner``, the fastest exact backend measured.

Run (one group per call; records are merged into the output file):
``python benchmarks/cpu_gather.py --group target --threads 2 --out benchmarks/results/cpu_gather.json``
(key = threads, layout kind, dtype, S, D, density, partial fraction).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from accel.eval.kernel_bench import environment, run_cpu

# group -> list of run_cpu calls (keyword arguments)
GROUPS = {
    "target": [dict(seq_lens=[16384], head_dims=[64], densities=[0.1], dtypes=[torch.bfloat16],
                    partial_fractions=[0.0], backends=("dense", "gather", "flex"))],
    "s4096": [dict(seq_lens=[4096], head_dims=[d], densities=[0.1, 0.3], dtypes=[torch.bfloat16],
                   partial_fractions=[0.0, 0.5, 1.0], backends=("dense", "gather", "flex", "reference"))
              for d in (64, 128)],
    "small": [dict(seq_lens=[1024, 2304], head_dims=[64], densities=[0.1, 0.3], dtypes=[dt],
                   partial_fractions=[0.0, 1.0], backends=("dense", "gather", "flex", "reference"))
              for dt in (torch.bfloat16, torch.float32)],
    "random": [dict(seq_lens=[2304, 4096], head_dims=[64], densities=[0.1, 0.3], dtypes=[torch.bfloat16],
                    layout_kind="random", backends=("dense", "gather", "flex", "reference"))],
    "tiny": [dict(seq_lens=[256, 512], head_dims=[64], densities=[0.3], dtypes=[torch.float32],
                  partial_fractions=[0.0, 1.0], backends=("dense", "gather", "reference", "gather-cold",
                                                          "reference-cold"))],
}

EXACT = ("gather", "flex", "reference")
OLD_FLEX_MIN_PAIRS = 4096 * 4096  # the previous CPU rule: flex from here on, the reference below


def _code_version() -> str:
    """The commit of the code measured (``+changes`` when the work tree differs from it)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "accel"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def _key(r) -> tuple:
    return (r["threads"], r.get("layout", "band"), r["dtype"], r["seq_len"], r["head_dim"], round(r["density"], 6),
            round(r["partial_block_fraction"], 6))


def annotate(rec: dict) -> dict:
    """Add ``current`` (the previous rule's backend) and, by wall time (``ms``) and by process CPU time
    (``cpu_ms``; with one thread on a loaded machine the steadier measure of the work done):
    ``winner`` (fastest exact backend, warm) and ``gather_over`` (gather's time over each other exact
    backend's, < 1: gather faster; ``-cold`` entries compare the cold variants)."""
    rec["current"] = "flex" if rec["seq_len"] ** 2 >= OLD_FLEX_MIN_PAIRS else "reference"
    for unit in ("ms", "cpu_ms"):
        t = rec[unit]
        warm = {n: x for n, x in t.items() if n in EXACT}
        over = {n: t["gather"] / x for n, x in warm.items() if n != "gather"}
        over.update({n: t["gather-cold"] / x for n, x in t.items() if n.endswith("-cold") and n != "gather-cold"
                     and "gather-cold" in t})
        rec.setdefault("winner", {})[unit] = min(warm, key=warm.get)
        rec.setdefault("gather_over", {})[unit] = over
    return rec


def summary(records) -> dict:
    """What ``"auto"``'s CPU rule (:func:`accel.kernels.attention.cpu_auto_backend`) picks in each record
    and how its time compares, per thread count: with the other exact backends (the fastest of them all?)
    and with ``current``, the previous rule's backend (time ratios, < 1: the rule's pick is faster)."""
    from accel.kernels.attention import cpu_auto_backend

    out = {}
    for threads in sorted({r["threads"] for r in records}):
        rows = [r for r in records if r["threads"] == threads]
        entry = {"records": len(rows)}
        for unit in ("ms", "cpu_ms"):
            over_flex, over_current, over_reference, fastest = [], [], [], 0
            for r in rows:
                pick = cpu_auto_backend(r["seq_len"], r["seq_len"])
                t = r[unit]
                if pick not in t:
                    continue
                fastest += t[pick] <= min(x for n, x in t.items() if n in EXACT)
                if "flex" in t:
                    over_flex.append(t[pick] / t["flex"])
                if "reference" in t:
                    over_reference.append(t[pick] / t["reference"])
                if r["current"] in t:
                    over_current.append(t[pick] / t[r["current"]])
            entry[unit] = {
                "rule_pick_is_fastest_exact": f"{fastest} of {len(rows)}",
                "rule_pick_over_flex": [min(over_flex), max(over_flex)] if over_flex else None,
                "rule_pick_over_reference": [min(over_reference), max(over_reference)] if over_reference else None,
                "rule_pick_over_previous_rule": [min(over_current), max(over_current)] if over_current else None,
            }
        out[f"threads={threads}"] = entry
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", choices=list(GROUPS), default=None,
                   help="which layouts to time (see the module doc); none: only recompute the summary")
    p.add_argument("--reps", type=int, default=3, help="timing rounds (medians)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path("bench-results/cpu_gather.json"),
                   help="JSON file; records already there are kept unless measured again")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/cpu_gather.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t0 = time.time()
    code = _code_version()
    records = []
    for call in GROUPS[args.group] if args.group else []:
        for rec in run_cpu(**call, reps=args.reps, reference_max_seq=1 << 30):
            rec["group"], rec["command"], rec["threads"] = args.group, command, args.threads
            rec["code"] = code
            rec["utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            records.append(annotate(rec))
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    fresh = {_key(r) for r in records}
    merged = [r for r in old.get("records", []) if _key(r) not in fresh] + records
    merged.sort(key=_key)
    result = {
        "benchmark": "cpu_gather",
        "units": {"ms": "wall milliseconds (median over rounds)", "cpu_ms": "process CPU milliseconds (median)",
                  "speedup_vs_dense": "median over rounds of dense ms / ms", "gather_over": "gather ms / other ms",
                  "load_1min": "1-minute load average before / after the record"},
        "commands": sorted({r["command"] for r in merged}),
        "environment": environment(),
        "summary": summary(merged),
        "records": merged,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(f"{len(records)} records in {time.time() - t0:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

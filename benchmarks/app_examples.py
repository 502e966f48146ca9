"""Candidate settings for the demo's examples, measured with the demo's own Generate logic.

Each candidate (a method, its parameters, a clip size, a step count) runs through
:func:`accel.app.logic.run_generate` with "compare with dense" on, exactly as the page's Generate button runs
it: the method's and the dense pipeline call that give the pictures and quality figures untimed first, then
method and dense calls alternated (:mod:`accel.eval.timing`), medians. Recorded per candidate: the
latencies, the speedup, PSNR and SSIM against dense, the executed density, the backend that ran, the
timing line and warnings the page shows, and the 1-minute load before and after.

A candidate is *kept* (offered as an example) when its speedup in wall time and in process CPU time are
both at least ``--min-speedup``, no warning calls the speedup impossible (above 1 / executed density), and
its PSNR and SSIM against dense reach ``--min-psnr`` / ``--min-ssim``. The page's examples
(:data:`accel.app.examples.EXAMPLES`) are copied from the kept records.

Run: ``python benchmarks/app_examples.py --out benchmarks/results/app_examples_cpu.json`` (``--threads``,
``--only NAME ...``, ``--repeats``, ``--append`` to add records to an existing file; each record names the
command that measured it). One candidate takes 1-10 minutes on one thread of the 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "a red circle moving left"

#: name -> (method, parameters, height, width, frames, steps, dense first steps)
CANDIDATES = {
    "radial-release-128": ("radial", "", 128, 128, 17, 8, 0),
    "radial-b64-128": ("radial", "block_size=64", 128, 128, 17, 8, 0),
    "radial-wan-b64-128": ("radial", "decay=0.2 sink=True block_size=64", 128, 128, 17, 8, 0),
    "radial-wan-b64-128-dense1": ("radial", "decay=0.2 sink=True block_size=64", 128, 128, 17, 8, 1),
    "radial-b64-192": ("radial", "block_size=64", 192, 192, 17, 8, 0),
    "radial-wan-b64-192-dense1": ("radial", "decay=0.2 sink=True block_size=64", 192, 192, 17, 8, 1),
    "rectified-128": ("rectified", "drop=0.5", 128, 128, 17, 8, 0),
    "neighborhood-192": ("neighborhood", "window=5,11,11", 192, 192, 17, 8, 0),
    "radial-wan-256": ("radial", "decay=0.2 sink=True", 256, 256, 17, 4, 0),
    "neighborhood-256-dense1": ("neighborhood", "window=5,11,11", 256, 256, 17, 4, 1),
}


def measure(name: str, models, outputs, repeats: int) -> dict:
    """One candidate through the page's logic; the figures the page shows, as a record."""
    from accel.app import logic
    from accel.eval.timing import machine_load

    method, params, height, width, frames, steps, dense_steps = CANDIDATES[name]
    settings = logic.GenerateSettings(model="embedded", prompt=PROMPT, height=height, width=width, frames=frames,
                                      steps=steps, seed=0, method=method, method_params=params, dense_steps=dense_steps,
                                      compare=True)
    load_before, cpus = machine_load()
    t0 = time.perf_counter()
    old = logic.TIMING_REPEATS
    logic.TIMING_REPEATS = repeats
    try:
        r = logic.run_generate(settings, models, outputs)
    finally:
        logic.TIMING_REPEATS = old
    wall = time.perf_counter() - t0
    load_after, _ = machine_load()
    return dict(name=name, settings=dataclasses.asdict(settings), method=r.method, speedup=r.speedup, cpu_speedup=r.cpu_speedup,
                latency_s=r.latency_s, dense_latency_s=r.dense_latency_s, psnr_db=r.psnr_db, ssim=r.ssim,
                density=r.density, grid=list(r.grid), backend=r.backend_text(), timing=r.timing,
                warnings=[*r.speedup_notes, *r.timing_warnings], request_wall_s=wall,
                load_1min=[load_before, load_after], cpus=cpus)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--only", nargs="*", choices=list(CANDIDATES), help="candidates to run (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--append", action="store_true", help="add the records to those already in --out")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per candidate (the page's is 3)")
    p.add_argument("--min-speedup", type=float, default=1.1)
    p.add_argument("--min-psnr", type=float, default=25.0)
    p.add_argument("--min-ssim", type=float, default=0.9)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from accel.app.models import ModelCache
    from accel.app.outputs import OutputFolder
    from accel.eval.kernel_bench import environment

    models = ModelCache()  # with the warm-up call, as the app
    previous = json.loads(args.out.read_text()) if args.append and args.out.exists() else {}
    records = previous.get("records", [])
    command = "python benchmarks/app_examples.py " + " ".join(sys.argv[1:] if argv is None else argv)
    commands = [*previous.get("commands", [previous["command"]] if "command" in previous else []), command]
    with tempfile.TemporaryDirectory() as tmp:
        outputs = OutputFolder(Path(tmp))
        for name in args.only or list(CANDIDATES):
            rec = measure(name, models, outputs, args.repeats)
            rec["command"] = command
            rec["kept"] = bool(min(rec["speedup"], rec["cpu_speedup"]) >= args.min_speedup
                               and rec["psnr_db"] >= args.min_psnr and (rec["ssim"] or 0.0) >= args.min_ssim
                               and not any("exceeds 1 / executed density" in w for w in rec["warnings"]))
            records.append(rec)
            print(json.dumps({k: rec[k] for k in ("name", "speedup", "cpu_speedup", "psnr_db", "ssim", "density", "backend",
                                                   "load_1min", "kept")}), flush=True)
            payload = dict(benchmark="app_examples", commands=commands,
                           environment=dict(environment(), cpu_threads=args.threads),
                rule=dict(min_speedup=args.min_speedup, min_psnr_db=args.min_psnr, min_ssim=args.min_ssim),
                prompt=PROMPT, records=records)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(payload, indent=2) + "\n")  # after every candidate: partial runs keep data
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The README's ConsistEdit example on the embedded model (yellow -> green square) and its background figures.

Runs the README's code (``edit_generated`` with edit words "yellow", alpha 1.0, 20 steps, seed 0) and scores it
with :func:`accel.eval.edit_metrics.background_metrics` (PSNR per frame over the background, then averaged;
SSIM with the edit region zeroed; MSE over all background pixels) and the adherence check. Writes JSON::

    .venv/bin/python benchmarks/embedded_edit_example.py --out benchmarks/results/embedded_edit_example.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch


def _reads(result) -> dict:
    """What the adherence check reads in a clip: its colour and direction."""
    return {"colour": result.analysis.colour, "direction": result.analysis.direction,
            "colour_ok": result.colour_ok, "direction_ok": result.direction_ok}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench-results/embedded_edit_example.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from accel.editing import edit_generated
    from accel.embedded import DEFAULT_GENERATION, embedded
    from accel.embedded.adherence import check_adherence
    from accel.eval.edit_metrics import background_metrics

    pipe = embedded()
    kw = {k: v for k, v in DEFAULT_GENERATION.items() if k != "num_inference_steps"}
    source, target = "a yellow square moving right", "a green square moving right"
    result = edit_generated(pipe, source, target, edit_words="yellow", alpha=1.0, steps=20, seed=0,
                            output_type="np", **kw)
    out = {"background": background_metrics(result.source, result.target, result.mask),
           "mask_fraction": float(result.mask.float().mean()),
           "source_reads": _reads(check_adherence(result.source, source)),
           "target_reads": _reads(check_adherence(result.target, target)),
           "threads": args.threads, "load_average": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

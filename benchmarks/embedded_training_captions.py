"""Adherence of the embedded model on 24 *training* captions, per sampling setting (the choice of defaults).

The held-out prompts (``python -m accel.embedded.adherence``) measure generalisation; the defaults of the
sampler (guidance scale, flow shift) and tricks such as a contrastive negative prompt were chosen here,
on captions the model was trained on, so that the held-out figures stay unbiased.

Captions: every colour x direction of :mod:`accel.embedded.data` (6 x 4 = 24), short form (no
background), the shape cycling through ``SHAPES`` (caption ``i`` uses ``SHAPES[i % 4]``); caption ``i``
uses seed ``1000 + i``. Each ``--config`` is ``guidance=G`` with optional ``,shift=S`` (the scheduler's
flow shift) and ``,negative=opposite`` (the caption with the opposite direction as the negative prompt).

    python benchmarks/embedded_training_captions.py --threads 2 \
        --config guidance=1.5 guidance=2.5 guidance=4 \
        --config guidance=3,negative=opposite guidance=6,negative=opposite \
        --config guidance=1.5,shift=5 guidance=1.5,shift=10 \
        --out benchmarks/results/embedded_training_captions.json

writes, per configuration, the colour / direction / both accuracies (``accel.embedded.adherence.summarize``),
the seconds it took and the machine's load, after every configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def captions() -> list[tuple[str, str]]:
    """``(caption, caption with the opposite direction)`` of the 24 training captions, in order."""
    from accel.embedded.data import COLOURS, DIRECTIONS, SHAPES, caption_for

    out = []
    for i, (colour, direction) in enumerate((c, d) for c in COLOURS for d in DIRECTIONS):
        shape = SHAPES[i % len(SHAPES)]
        out.append((caption_for(colour, shape, direction), caption_for(colour, shape, OPPOSITE[direction])))
    return out


def parse_config(text: str) -> dict:
    """``"guidance=3,negative=opposite"`` -> ``{"guidance": 3.0, "negative": "opposite"}``."""
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key == "guidance" or key == "shift":
            out[key] = float(value)
        elif key == "negative" and value == "opposite":
            out[key] = value
        else:
            raise argparse.ArgumentTypeError(f"config items are guidance=G, shift=S or negative=opposite, got {item!r}")
    if "guidance" not in out:
        raise argparse.ArgumentTypeError(f"a config needs guidance=G, got {text!r}")
    return out


def evaluate(pipe, config: dict, steps: int | None, batch: int, count: int | None = None) -> dict:
    """Accuracies of one configuration over the 24 captions (the first ``count`` of them when given)."""
    import torch
    from diffusers import UniPCMultistepScheduler

    from accel.embedded.adherence import check_adherence, summarize
    from accel.embedded.model import SCHEDULER_CONFIG, generation_kwargs

    overrides = {"guidance_scale": config["guidance"]}
    if steps is not None:
        overrides["num_inference_steps"] = steps
    kwargs = generation_kwargs(**overrides)
    pipe.scheduler = UniPCMultistepScheduler(**{**SCHEDULER_CONFIG, "flow_shift": config.get("shift",
                                                                                          SCHEDULER_CONFIG["flow_shift"])})
    pairs = captions()[:count]
    results, t0 = [], time.perf_counter()
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        call = dict(kwargs, prompt=[c for c, _ in chunk], output_type="np",
                    generator=[torch.Generator().manual_seed(1000 + start + i) for i in range(len(chunk))])
        if config.get("negative") == "opposite":
            call["negative_prompt"] = [o for _, o in chunk]
        frames = pipe(**call).frames
        results += [check_adherence(clip, c) for clip, (c, _) in zip(frames, chunk, strict=True)]
    summary = summarize(results)
    return {**summary, "seconds": round(time.perf_counter() - t0, 1), "load_1min_after": round(os.getloadavg()[0], 2),
            "settings": {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str))}}


def main(argv=None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=parse_config, nargs="+", action="extend", required=True)
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: the embedded default)")
    p.add_argument("--batch", type=int, default=4, help="captions per pipeline call")
    p.add_argument("--captions", type=int, default=None, choices=range(1, 25), metavar="N",
                   help="the first N of the 24 captions only (a timing estimate or a documented subset)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--weights", default=None, help="an exported pipeline folder instead of the shipped weights")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import torch

    from accel.embedded.model import SCHEDULER_CONFIG, embedded

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = embedded(weights=args.weights)
    command = "python benchmarks/embedded_training_captions.py " + " ".join(argv if argv is not None else sys.argv[1:])
    record = {"command": command.strip(), "captions": [c for c, _ in captions()[:args.captions]],
              "seeds": "1000 + caption index", "weights": args.weights or "shipped", "cpus": os.cpu_count(),
              "load_1min_before": round(os.getloadavg()[0], 2), "default_flow_shift": SCHEDULER_CONFIG["flow_shift"],
              "configs": []}
    for config in args.config:
        res = evaluate(pipe, config, args.steps, args.batch, args.captions)
        record["configs"].append({"config": config, **res})
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"{config}: colour {res['colour_accuracy']:.0%}, direction {res['direction_accuracy']:.0%}, "
              f"both {res['both_accuracy']:.0%} ({res['seconds']} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

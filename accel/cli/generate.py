"""``accel generate``: render clips with the embedded model, optionally through a sparse method.

A small, offline front door that needs no downloads: it loads the embedded text-to-video model
(:func:`accel.embedded.embedded`), applies the chosen accel method, and writes one MP4 (and
optionally a PNG strip of frames) per prompt. Files are written under a temporary name and renamed
when complete, so a file that exists is whole. Batch rendering (prompt files, presets for real
checkpoints, resume, many GPUs) is ``accel render``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from accel.methods.registry import METHODS, build_method, parse_method_args
from accel.render.media import write_mp4, write_strip
from accel.render.prompts import slug

__all__ = ["main"]


def main(argv=None) -> int:
    """Command line of ``accel generate`` (see ``--help``); returns the exit status."""
    p = argparse.ArgumentParser(prog="accel generate", description=__doc__.splitlines()[0])
    p.add_argument("--prompt", action="append", required=True,
                   help='a prompt, e.g. "a red circle moving left" (repeat for several clips)')
    p.add_argument("--out", type=Path, default=Path("renders"), help="output folder (created)")
    p.add_argument("--method", default="dense", help=f"one of {sorted(METHODS)} (default dense)")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="method parameter, e.g. window=3,9,9 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the first clip (+1 per clip)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--frames", type=int, default=None, help="frames (odd; default: the model's)")
    p.add_argument("--height", type=int, default=None, help="height in pixels (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="width in pixels (default: the model's)")
    p.add_argument("--fps", type=int, default=8, help="frames per second of the MP4 (default 8)")
    p.add_argument("--strip", action="store_true", help="also write a PNG strip of every 4th frame")
    args = p.parse_args(argv)
    try:
        method = build_method(args.method, parse_method_args(args.method_arg))
    except ValueError as exc:
        p.error(str(exc))
    for name in ("steps", "frames", "height", "width"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be >= 1, got {value}")

    from accel.embedded.model import embedded, generation_kwargs
    from accel.processors.apply import apply

    overrides = {k: v for k, v in {"num_inference_steps": args.steps, "num_frames": args.frames,
                                   "height": args.height, "width": args.width}.items() if v is not None}
    try:
        generation_kwargs(**overrides)
    except ValueError as exc:
        p.error(str(exc))
    t0 = time.perf_counter()
    pipe = embedded()
    print(f"loaded the embedded model in {time.perf_counter() - t0:.1f} s")
    handle = apply(pipe, method) if method is not None else None
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for i, prompt in enumerate(args.prompt):
            kwargs = generation_kwargs(**overrides)
            kwargs["generator"] = torch.Generator().manual_seed(args.seed + i)
            t0 = time.perf_counter()
            frames = pipe(prompt, **kwargs).frames[0]
            dt = time.perf_counter() - t0
            path = args.out / f"{i:03d}-{slug(prompt, 60, empty='clip')}.mp4"
            write_mp4(frames, path, args.fps)
            if args.strip:
                write_strip(frames, path.with_suffix(".png"))
            print(f"{path}  ({len(frames)} frames, {dt:.1f} s, method {args.method})")
    finally:
        if handle is not None:
            handle.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())

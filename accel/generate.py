"""``accel generate``: render clips with the embedded model, optionally through a sparse method.

A small, offline front door that needs no downloads: it loads the embedded text-to-video model
(:func:`accel.pipelines.embedded.embedded`), applies the chosen accel method, and writes one MP4 (and
optionally a PNG strip of frames) per prompt. Files are written under a temporary name and renamed
when complete, so a file that exists is whole. Batch rendering of real checkpoints is ``accel render``
(a later issue).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["METHODS", "parse_method_args", "build_method", "write_mp4", "write_strip", "main"]

# command-line name -> public class name in accel
METHODS = {
    "none": None,
    "dense": "Dense",
    "radial": "Radial",
    "clear-local": "ClearLocal",
    "neighborhood": "Neighborhood",
}


def _parse_value(text: str):
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(",") if part)
    low = text.lower()
    if low in {"true", "false"}:
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_method_args(items: list[str]) -> dict:
    """Turn ``["window=3,9,9", "causal=false"]`` into ``{"window": (3, 9, 9), "causal": False}``.

    Values are parsed as int, float, bool (``true``/``false``), ``none``, a comma-separated tuple of
    those, or else kept as a string.

    Raises:
        ValueError: an item is not ``key=value`` with a Python identifier as key.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ValueError(f"--method-arg must look like key=value (e.g. window=3,9,9), got {item!r}")
        out[key] = _parse_value(value)
    return out


def build_method(name: str, kwargs: dict):
    """The accel method object for a command-line method name (``None`` for ``"none"``).

    Args:
        name: one of :data:`METHODS` (``none``, ``dense``, ``radial``, ``clear-local``, ``neighborhood``).
        kwargs: keyword arguments of the method's dataclass (e.g. ``{"window": (3, 9, 9)}``).

    Raises:
        ValueError: unknown method name, or arguments the method does not accept.
    """
    if name not in METHODS:
        raise ValueError(f"--method must be one of {sorted(METHODS)}, got {name!r}")
    if METHODS[name] is None:
        if kwargs:
            raise ValueError("--method-arg given but --method is none")
        return None
    import accel

    cls = getattr(accel, METHODS[name])
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad --method-arg for {name}: {exc}") from exc


def _to_uint8(frames) -> np.ndarray:
    arr = frames.detach().cpu().float().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    return (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)


def write_mp4(frames, path: Path, fps: int) -> None:
    """Write ``frames`` (``[F, H, W, 3]`` floats in [0, 1] or uint8) to ``path`` as H.264 MP4, atomically.

    Args:
        frames: the clip, frame-major, RGB.
        path: destination file (its folder must exist); replaced only when the new file is complete.
        fps: frames per second stored in the file.
    """
    import imageio.v2 as imageio

    data = frames if getattr(frames, "dtype", None) == np.uint8 else _to_uint8(frames)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    # macro_block_size=1: keep the tiny sizes of the embedded model as they are (no resize)
    imageio.mimwrite(tmp, list(data), fps=fps, format="FFMPEG", codec="libx264", macro_block_size=1)
    os.replace(tmp, path)


def write_strip(frames, path: Path, every: int = 4, scale: int = 2) -> None:
    """Write every ``every``-th frame side by side as one PNG (nearest-neighbour upscaled by ``scale``), atomically."""
    import imageio.v2 as imageio

    data = _to_uint8(frames)[::every]
    strip = np.concatenate(list(data), axis=1).repeat(scale, 0).repeat(scale, 1)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    imageio.imwrite(tmp, strip, format="PNG")
    os.replace(tmp, path)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "clip"


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

    import accel
    from accel.pipelines.embedded import embedded, generation_kwargs

    overrides = {k: v for k, v in {"num_inference_steps": args.steps, "num_frames": args.frames,
                                   "height": args.height, "width": args.width}.items() if v is not None}
    try:
        generation_kwargs(**overrides)
    except ValueError as exc:
        p.error(str(exc))
    t0 = time.perf_counter()
    pipe = embedded()
    print(f"loaded the embedded model in {time.perf_counter() - t0:.1f} s")
    handle = accel.apply(pipe, method) if method is not None else None
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for i, prompt in enumerate(args.prompt):
            kwargs = generation_kwargs(**overrides)
            kwargs["generator"] = torch.Generator().manual_seed(args.seed + i)
            t0 = time.perf_counter()
            frames = pipe(prompt, **kwargs).frames[0]
            dt = time.perf_counter() - t0
            path = args.out / f"{i:03d}-{_slug(prompt)}.mp4"
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

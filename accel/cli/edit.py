"""``accel edit``: edit a generated or real image/video by attention control, from the command line.

::

    accel edit --source "a red circle moving left" --target "a blue circle moving left" \\
        --edit-words red --alpha color --out edits/blue        # the embedded model, offline
    accel edit --model flux.1-dev --input photo.png --source "a red car" --target "a blue car" --edit-words red

Writes to ``--out``: ``source`` and ``target`` (MP4 for video, PNG for images), ``mask.png`` (the token
mask, upsampled to the pixel size; absent for all-edit), and ``scores.json`` (background PSNR/SSIM/MSE
outside the mask, Canny-edge structure SSIM, CLIP score when a local CLIP model exists).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

__all__ = ["main", "build_parser"]


def _alpha(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def build_parser() -> argparse.ArgumentParser:
    """The ``accel edit`` argument parser."""
    p = argparse.ArgumentParser(prog="accel edit", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="embedded", help="preset name, folder or hub id (accel.pipelines.load); "
                                                        "default: the embedded offline model")
    p.add_argument("--source", required=True, help="source prompt (describes the input / the generated source)")
    p.add_argument("--target", required=True, help="target prompt (the edit)")
    p.add_argument("--edit-words", nargs="+", default=None, help="word(s) of the source prompt that define the mask")
    p.add_argument("--mask", type=Path, default=None, help="user mask image (white = edit), overrides --edit-words")
    p.add_argument("--input", type=Path, default=None, help="a real image (PNG/JPEG) or video (MP4) to edit; "
                                                             "without it the source is generated")
    p.add_argument("--alpha", type=_alpha, default=None,
                   help="consistency strength in [0, 1] or color/material/shape/object/real (default: shape for "
                        "generated sources, real for inputs)")
    p.add_argument("--rule", choices=("consistedit", "masactrl"), default="consistedit")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    return p


def _read_input(path: Path):
    if not path.is_file():
        raise SystemExit(f"accel edit: --input {path} does not exist")
    if path.suffix.lower() in (".mp4", ".mov", ".webm", ".gif"):
        import imageio.v2 as imageio

        frames = np.stack([np.asarray(f)[..., :3] for f in imageio.mimread(path, memtest=False)])
        return frames.astype(np.uint8)
    from PIL import Image

    return Image.open(path).convert("RGB")


def main(argv: list[str] | None = None) -> int:
    """Run ``accel edit``; returns the exit status."""
    args = build_parser().parse_args(argv)
    from accel.editing.pipeline import edit, edit_generated
    from accel.eval.edit_metrics import edit_scores, mask_to_pixels
    from accel.pipelines.loading import load
    from accel.render.media import write_mp4, write_png

    pipe = load(args.model, device=args.device)
    preset = pipe.accel_preset
    kwargs = preset.generation_kwargs()
    steps = args.steps if args.steps is not None else kwargs.pop("num_inference_steps")
    kwargs.pop("num_inference_steps", None)
    common = dict(edit_words=args.edit_words, steps=steps, seed=args.seed, rule=args.rule, output_type="np")
    if args.mask is not None:
        from PIL import Image

        common["mask"] = Image.open(args.mask)
    if args.input is None:
        result = edit_generated(pipe, args.source, args.target, alpha=args.alpha or "shape", **common, **kwargs)
    else:
        for key in ("height", "width", "num_frames"):
            kwargs.pop(key, None)
        result = edit(pipe, _read_input(args.input), args.source, args.target, alpha=args.alpha or "real",
                      **common, **kwargs)
    args.out.mkdir(parents=True, exist_ok=True)
    source, target = np.asarray(result.source), np.asarray(result.target)
    video = source.ndim == 4
    fps = preset.fps or 8
    for name, media in (("source", source), ("target", target)):
        if video:
            write_mp4(media, args.out / f"{name}.mp4", fps)
        else:
            write_png(media, args.out / f"{name}.png")
    frames = source if video else source[None]
    mask = np.ones(frames.shape[:3], dtype=bool) if result.mask is None else \
        mask_to_pixels(result.mask, frames.shape[0], frames.shape[1], frames.shape[2])
    if result.mask is not None:
        write_png(mask[0].astype(np.float32)[..., None].repeat(3, -1), args.out / "mask.png")
    try:
        scores = edit_scores(source, target, mask, args.target)
    except ValueError as exc:   # all-edit mask (no background), or images smaller than the SSIM window
        scores = {"note": f"scores not computed: {exc}"}
    scores.update(source=args.source, target=args.target, edit_words=args.edit_words, steps=steps, seed=args.seed,
                  rule=args.rule, model=args.model)
    (args.out / "scores.json").write_text(json.dumps(scores, indent=2, default=str))
    print(json.dumps(scores, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""``accel edit``: edit a generated or real image/video by attention control, from the command line.

::

    accel edit --source "a red circle moving left" --target "a blue circle moving left" \\
        --edit-words red --alpha color --out edits/blue        # the embedded model, offline
    accel edit --model flux.1-dev --input photo.png --source "a red car" --target "a blue car" --edit-words red

Writes to ``--out``: ``source`` and ``target`` (MP4 for video, PNG for images), ``mask.png`` (the token
mask, upsampled to the pixel size; absent for all-edit), and ``scores.json`` (background PSNR/SSIM/MSE
outside the mask, Canny-edge structure SSIM, CLIP score when a local CLIP model exists).

Every argument is checked before the model is loaded (``--out`` must be a folder or not exist yet,
``--input``/``--mask`` must decode as an image or video, ``--alpha`` in [0, 1] or a named strength,
the edit words must occur in ``--source``, numbers in range, the device usable, a hub model cached
when ``HF_HUB_OFFLINE`` is set): a bad one ends the command with exit status 2 and a one-line message
naming it. An edit that fails after loading ends with status 1 and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
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
    p.add_argument("--mask-threshold", type=float, default=None,
                   help="edit-mask threshold on the normalised attention to --edit-words, in [0, 1] (default 0.1, "
                        "the release's)")
    p.add_argument("--keep-scene", nargs="+", default=None, metavar="{latents,cross_attention}",
                   help="ours, not the release's: keep the source outside the edit mask by blending latents and/or "
                        "(Wan) cross-attention outputs; generated sources only, needs --edit-words or --mask")
    p.add_argument("--source-steps", type=int, default=0,
                   help="ours, not the release's: the target follows the source for its first N steps (whole frame); "
                        "generated sources only (default 0: off)")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    return p


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".gif", ".mkv", ".avi")


def _read_media(flag: str, path: Path, *, video: bool):
    """The image (PIL, RGB) or video (uint8 ``[F, H, W, 3]``) at ``path``.

    Raises:
        ValueError: naming ``flag``: a missing or non-regular file, a suffix that is not an image's (or a
            video's, when ``video``), or content that does not decode as one.
    """
    if not path.is_file():
        raise ValueError(f"{flag} {str(path)!r} does not exist or is not a regular file")
    suffix = path.suffix.lower()
    allowed = IMAGE_SUFFIXES + (VIDEO_SUFFIXES if video else ())
    if suffix not in allowed:
        kinds = "an image or a video" if video else "an image"
        raise ValueError(f"{flag} must be {kinds} ({', '.join(allowed)}), got {str(path)!r}")
    try:
        if suffix in VIDEO_SUFFIXES:
            import imageio.v2 as imageio

            frames = np.stack([np.asarray(f)[..., :3] for f in imageio.mimread(path, memtest=False)])
            return frames.astype(np.uint8)
        from PIL import Image

        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as exc:  # the decoder refuses the content
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{flag} {str(path)!r} does not decode as {'a video' if suffix in VIDEO_SUFFIXES else 'an image'}"
                         f" ({first})") from None


def _check(args) -> dict:
    """Everything that can be checked before loading the model; returns the decoded ``input`` and ``mask``.

    Raises:
        ValueError: the first bad argument, named in the message.
        OSError: a hub model that is not cached while ``HF_HUB_OFFLINE`` is set.

    Creates ``--out`` last, when everything else passed.
    """
    from accel.control.mask import find_word_spans
    from accel.editing.pipeline import ALPHA_DEFAULTS, KEEP_SCENE
    from accel.pipelines.loading import check_weights_available, parse_device
    from accel.render.prompts import MAX_COUNT, MAX_SEED

    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {str(args.out)!r} exists and is not a folder; give a folder (it is created if missing)")
    if isinstance(args.alpha, str) and args.alpha not in ALPHA_DEFAULTS:
        raise ValueError(f"--alpha must be a number in [0, 1] or one of {sorted(ALPHA_DEFAULTS)}, got {args.alpha!r}")
    if isinstance(args.alpha, float) and not (math.isfinite(args.alpha) and 0.0 <= args.alpha <= 1.0):
        raise ValueError(f"--alpha must be a number in [0, 1] or one of {sorted(ALPHA_DEFAULTS)}, got {args.alpha}")
    if args.steps is not None and not 1 <= args.steps <= MAX_COUNT:
        raise ValueError(f"--steps must be in [1, {MAX_COUNT}], got {args.steps}")
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    for flag, text in (("--source", args.source), ("--target", args.target)):
        if not text.strip():
            raise ValueError(f"{flag} must be a non-empty prompt")
    if args.mask_threshold is not None and not (math.isfinite(args.mask_threshold) and 0.0 <= args.mask_threshold <= 1.0):
        raise ValueError(f"--mask-threshold must be a number in [0, 1], got {args.mask_threshold}")
    if args.keep_scene is not None:
        bad = [k for k in args.keep_scene if k not in KEEP_SCENE]
        if bad or len(set(args.keep_scene)) != len(args.keep_scene):
            raise ValueError(f"--keep-scene takes distinct names among {list(KEEP_SCENE)}, got {args.keep_scene}")
        if args.edit_words is None and args.mask is None:
            raise ValueError("--keep-scene keeps the source outside the edit mask: give --edit-words or --mask")
    if args.source_steps < 0 or (args.steps is not None and args.source_steps > args.steps):
        raise ValueError(f"--source-steps must be in [0, --steps], got {args.source_steps}")
    if args.input is not None and (args.keep_scene is not None or args.source_steps):
        raise ValueError("--keep-scene and --source-steps apply to generated sources; drop them with --input")
    if args.edit_words is not None:
        try:
            find_word_spans(args.source, args.edit_words)
        except ValueError as exc:
            raise ValueError(f"--edit-words: {str(exc).removeprefix('edit_words: ')}") from None
    if args.device is not None:
        try:
            parse_device(args.device)
        except ValueError as exc:
            raise ValueError(f"--{exc}") from None
    check_weights_available(args.model)
    given = dict(input=None if args.input is None else _read_media("--input", args.input, video=True),
                 mask=None if args.mask is None else _read_media("--mask", args.mask, video=False))
    try:  # last: nothing is created for a command that is refused
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {str(args.out)!r} cannot be created: {exc}") from None
    return given


def main(argv: list[str] | None = None) -> int:
    """Run ``accel edit``; returns the exit status (0 done, 1 the edit failed, 2 a bad argument)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        given = _check(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    try:
        return _edit(args, given)
    except (ValueError, TypeError, OSError, ImportError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"accel edit: error: {first}", file=sys.stderr)
        return 1


def _edit(args, given: dict) -> int:
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
    if given["mask"] is not None:
        common["mask"] = given["mask"]
    if args.mask_threshold is not None:
        common["threshold"] = args.mask_threshold
    if given["input"] is None:
        alpha = "shape" if args.alpha is None else args.alpha
        keep = None if args.keep_scene is None else tuple(args.keep_scene)
        result = edit_generated(pipe, args.source, args.target, alpha=alpha, keep_scene=keep,
                                source_steps=args.source_steps, **common, **kwargs)
    else:
        for key in ("height", "width", "num_frames"):
            kwargs.pop(key, None)
        alpha = "real" if args.alpha is None else args.alpha
        result = edit(pipe, given["input"], args.source, args.target, alpha=alpha,
                      **common, **kwargs)
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
                  rule=args.rule, model=args.model, alpha=alpha, mask_threshold=args.mask_threshold,
                  keep_scene=args.keep_scene, source_steps=args.source_steps)
    (args.out / "scores.json").write_text(json.dumps(scores, indent=2, default=str))
    print(json.dumps(scores, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

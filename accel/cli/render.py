"""``accel render``: render a prompt file to MP4/PNG with an attention method, on one GPU or many.

::

    accel render --model embedded --prompts prompts.txt --out renders/
    accel render --model wan2.1-t2v-1.3b --prompts prompts.jsonl --method radial --out renders/
    torchrun --nproc_per_node 8 -m accel.cli render --model hunyuan-video --prompts p.jsonl --out renders/
    torchrun --nproc_per_node 8 -m accel.cli render --model hunyuan-video --prompts p.jsonl --cp-degree 2 --out renders/

Every item becomes one file in ``--out`` (MP4 for video models, PNG for image models; ``--format
png`` writes a video as a folder of PNG frames) and one record in ``--out/manifest.jsonl``. Files
are written under a temporary name and renamed when complete. Rerunning the same command skips
items whose record says ``ok`` for the same settings and whose file exists, and redoes the others.
A failing item is recorded with its error and the batch goes on; the exit status is 1 if any item
failed, 2 for bad arguments (checked before any work: numbers must be finite and in range, the device
usable on this machine, a hub model cached when HF_HUB_OFFLINE is set) or an output folder in use by
another run (one run per folder, see :mod:`accel.render.folder`), 130 after Ctrl-C and 143 after SIGTERM
(finished items are kept and recorded; rerun to continue).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

__all__ = ["main", "parser", "render_parsed", "parse_schedule", "current_names"]


def current_names(p: argparse.ArgumentParser, args) -> None:
    """Replace ``args.method`` and ``args.model`` by their current spellings (an old one, ``clear_local`` or
    ``tiny-hunyuan_video``, is accepted with a deprecation note); an unknown method is ``p.error``. A model
    that is no preset name (a folder, a hub id) is left as it is."""
    from accel.kernels.renamed import current_spelling
    from accel.methods.registry import method_name
    from accel.pipelines.presets import PRESETS

    try:
        args.method = method_name(args.method)
    except ValueError as exc:
        p.error(str(exc))
    model = getattr(args, "model", None)
    if isinstance(model, str):
        args.model = current_spelling(model, PRESETS, "model") or model


def parse_schedule(text: str):
    """``"dense_steps=12,dense_layers=1"`` -> ``accel.Schedule(dense_steps=12, dense_layers=1)``;
    ``"none"`` -> ``Schedule()``. Values with a ``.`` are fractions (floats), others counts (ints).

    Raises:
        ValueError: malformed text, unknown field or invalid value.
    """
    from accel.schedule import Schedule

    if text.strip().lower() == "none":
        return Schedule()
    fields = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in {"dense_steps", "dense_layers", "dense_last_steps"}:
            raise ValueError(f"--schedule must be 'none' or comma-separated dense_steps=N, dense_layers=N, "
                             f"dense_last_steps=N (N a count, or a fraction like 0.25), got {text!r}")
        try:
            fields[key] = float(value) if "." in value else int(value)
        except ValueError as exc:
            raise ValueError(f"--schedule {key} must be a number, got {value!r}") from exc
    try:
        return Schedule(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--schedule: {exc}") from exc


def parser(prog: str = "accel render", prompt_file: bool = True) -> argparse.ArgumentParser:
    """The ``accel render`` options; ``prompt_file=False`` leaves out ``--prompts`` and gives ``--out`` the default
    ``renders`` (``accel generate``, which takes its prompts on the command line)."""
    from accel.methods.registry import METHODS
    from accel.pipelines.presets import DEFAULT_PRESET, PRESETS

    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_PRESET,
                   help=f"preset name ({', '.join(PRESETS)}), a folder saved with save_pretrained, or a hub id "
                        f"(default {DEFAULT_PRESET}: the offline model)")
    if prompt_file:
        p.add_argument("--prompts", type=Path, required=True,
                       help="prompt file: text (one prompt a line) or .jsonl (prompt, negative_prompt, seed, height, "
                            "width, frames, steps, guidance, name, image)")
        p.add_argument("--out", type=Path, required=True,
                       help="output folder (created); holds the files and manifest.jsonl")
    else:
        p.add_argument("--out", type=Path, default=Path("renders"),
                       help="output folder (created; default renders); holds the files and manifest.jsonl")
    p.add_argument("--method", default="none", help=f"attention method, one of {sorted(METHODS)} (default none)")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="method field replacing the preset's published setting, e.g. window=3,9,9 (repeatable)")
    p.add_argument("--schedule", default=None,
                   help="dense schedule: 'none' or e.g. dense_steps=12,dense_layers=1 (default: the method's "
                        "published schedule for this model, else none)")
    p.add_argument("--height", type=int, help="height in pixels (default: the preset's)")
    p.add_argument("--width", type=int, help="width in pixels (default: the preset's)")
    p.add_argument("--frames", type=int, help="frames of a video (default: the preset's)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument("--guidance", type=float, help="guidance scale (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed of item i is SEED + i unless the line gives one (default 0)")
    p.add_argument("--fps", type=int, help="frames per second of MP4 files (default: the preset's)")
    p.add_argument("--format", choices=("auto", "mp4", "png"), default="auto",
                   help="auto: MP4 for video models, PNG for image models; png on a video: a folder of frames")
    p.add_argument("--dtype", default=None, help="bf16, fp16 or fp32 (default: bf16 for hub models on CUDA, else fp32)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda:LOCAL_RANK when available)")
    p.add_argument("--offload", action="store_true", help="model CPU offload (big models on small GPUs)")
    p.add_argument("--cp-degree", type=int, default=1, metavar="N",
                   help="GPUs per video (context parallelism, diffusers' Ulysses attention): groups of N consecutive "
                        "processes split each video and the groups share out the prompts; N must divide the number "
                        "of processes and the model's head count (default 1: each GPU renders whole videos)")
    p.add_argument("--vae-tiling", action="store_true", help="decode the VAE in tiles (less memory)")
    p.add_argument("--vae-slicing", action="store_true", help="decode batch entries one at a time")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _check_numbers(p, args) -> None:
    """Every number flag finite and in range (``p.error`` names the flag otherwise); flags that do not combine."""
    from accel.render.prompts import MAX_BASE_SEED, MAX_COUNT

    for name in ("height", "width", "frames", "steps", "fps", "cp_degree"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= MAX_COUNT:
            p.error(f"--{name.replace('_', '-')} must be in [1, {MAX_COUNT}], got {value}")
    if not 0 <= args.seed <= MAX_BASE_SEED:
        p.error(f"--seed must be in [0, {MAX_BASE_SEED}], got {args.seed}")
    if args.cp_degree > 1 and args.offload:
        p.error("--offload cannot be combined with --cp-degree (every GPU of a group holds the whole transformer)")
    if args.guidance is not None and not (math.isfinite(args.guidance) and args.guidance >= 0):
        p.error(f"--guidance must be a finite number >= 0, got {args.guidance}")


def main(argv=None) -> int:
    """Command line of ``accel render`` (see ``--help``); returns the exit status."""
    p = parser()
    return render_parsed(p, p.parse_args(argv))


def render_parsed(p: argparse.ArgumentParser, args) -> int:
    """Check the parsed command line ``args`` of parser ``p`` (:func:`parser`; ``args.prompts`` the prompt file)
    and render; returns the exit status (bad arguments: ``p.error``, which exits with status 2)."""
    current_names(p, args)
    _check_numbers(p, args)

    from accel.methods.registry import method_for_model, parse_method_args
    from accel.pipelines.loading import check_weights_available, parse_device, parse_dtype, resolve_model
    from accel.render.batch import run, static_problem
    from accel.render.prompts import read_prompt_file

    # ---- everything that can be checked before loading a model
    try:
        preset, _ = resolve_model(args.model)
        method_args = parse_method_args(args.method_arg)
        method_for_model(args.method, method_args, None)
        schedule = parse_schedule(args.schedule) if args.schedule is not None else None
        parse_dtype(args.dtype)
        if args.device is not None:
            parse_device(args.device)
        check_weights_available(args.model)
        items = read_prompt_file(args.prompts, base_seed=args.seed)
    except ValueError as exc:
        p.error(str(exc).replace("device ", "--device ", 1) if str(exc).startswith("device ") else str(exc))
    except OSError as exc:  # a missing prompt file; a hub model that is not cached while offline
        p.error(str(exc))
    if preset is not None:
        problem = static_problem(args, preset, preset.size_multiple, preset.frame_step)
        if problem:
            p.error(problem)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        p.error(f"--out {str(args.out)!r} cannot be created: {exc}")

    from accel.render.distributed import close, init_distributed

    ctx = init_distributed()
    try:
        return run(args, items, method_args, schedule, ctx, p.error)
    finally:
        close(ctx)


if __name__ == "__main__":
    sys.exit(main())

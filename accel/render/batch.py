"""The batch rendering behind ``accel render`` (:mod:`accel.cli.render` parses the command line).

:func:`run` renders a list of prompt items with a loaded pipeline, one file and one manifest record per
item, sharded over the processes of a ``torch.distributed`` job (over groups of ``--cp-degree``
processes that split each video between them, the first of each group writing); :func:`static_problem`
checks the requested size against a model before any work. Files are written under a temporary name and
renamed when complete. Items whose record says ``ok`` for the same settings and whose file exists inside
the output folder are skipped, the others redone. A failing item is recorded with its error and the batch
goes on.

One run at a time per output folder: rank 0 holds the folder's lock (:class:`~accel.render.folder.FolderLock`)
from before the model is loaded until the manifest is merged; a second run is refused with the first
one's process id, host and start time. SIGTERM is handled like Ctrl-C (SIGINT): the item in flight is
dropped, finished items are kept and, in a single-process run, the part file is merged into the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["run", "static_problem", "Terminated"]

_STATUS_OK, _STATUS_FAILED = "ok", "failed"
#: exit status after Ctrl-C (SIGINT) and after SIGTERM (128 + the signal number, as shells report them)
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM during the batch (handled like Ctrl-C)."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While inside: SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread; the
    previous handler is restored on exit. Nothing changes outside the main thread (signals go there only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(_signum, _frame):
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _size_problem(height, width, frames, multiple: int, frame_step: int | None, is_video: bool,
                  names=("height", "width", "frames")) -> str | None:
    """Why (height, width, frames) does not fit the model, or None; ``names`` name them in the message."""
    for key, value in ((names[0], height), (names[1], width)):
        if value % multiple:
            return f"{key} must be a multiple of {multiple} for this model (VAE scale x patch size), got {value}"
    if is_video and frame_step and (frames - 1) % frame_step:
        return (f"{names[2]} must be 1 + k * {frame_step} for this model (temporal VAE compression), got {frames}; "
                f"e.g. {frames - (frames - 1) % frame_step}")
    return None


def _item_settings(item, args, preset) -> dict:
    pick = lambda own, flag, default: own if own is not None else flag if flag is not None else default  # noqa: E731
    s = dict(
        height=pick(item.height, args.height, preset.height),
        width=pick(item.width, args.width, preset.width),
        steps=pick(item.steps, args.steps, preset.steps),
        guidance=pick(item.guidance, args.guidance, preset.guidance),
    )
    if preset.is_video:
        s["frames"] = pick(item.frames, args.frames, preset.num_frames)
        s["fps"] = args.fps if args.fps is not None else preset.fps
    if preset.guidance_2 is not None:
        s["guidance_2"] = preset.guidance_2
    return s


def _item_problem(item, settings, preset, multiple, frame_step) -> str | None:
    if item.error:
        return item.error
    if not preset.is_video and item.frames is not None:
        return f"line {item.line}: frames given for an image model"
    if preset.needs_image and item.image is None:
        return f"line {item.line}: this image-to-video model needs an input image (JSONL key 'image')"
    if not preset.needs_image and item.image is not None:
        return f"line {item.line}: image given but {preset.name} is not an image-to-video model"
    problem = _size_problem(settings["height"], settings["width"], settings.get("frames", 1), multiple, frame_step,
                            preset.is_video)
    return f"line {item.line}: {problem}" if problem else None


def _key(model: str, item, settings: dict, method: str, schedule: str, fmt: str) -> str:
    blob = json.dumps([model, item.prompt, item.negative_prompt, item.seed, item.image, settings, method, schedule,
                       fmt], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _is_complete(record: dict | None, key: str, out_dir: Path) -> bool:
    """Whether ``record`` says the item is done with these settings (``key``) and its file is still there,
    inside ``out_dir`` (a record naming a file elsewhere, e.g. ``../out-old/x.mp4``, does not count)."""
    from accel.render.folder import is_inside

    if record is None or record.get("status") != _STATUS_OK or record.get("settings_key") != key:
        return False
    if not isinstance(record.get("file"), str) or not record["file"]:
        return False
    path = out_dir / record["file"]
    return is_inside(path, out_dir.resolve()) and path.resolve() != out_dir.resolve() and path.exists()


def _call_kwargs(preset, item, settings) -> dict:
    import torch

    kw = preset.generation_kwargs()
    kw.update(height=settings["height"], width=settings["width"], num_inference_steps=settings["steps"],
              guidance_scale=settings["guidance"], prompt=item.prompt, output_type="np",
              generator=torch.Generator("cpu").manual_seed(item.seed))
    if preset.is_video:
        kw["num_frames"] = settings["frames"]
    if item.negative_prompt is not None:
        kw["negative_prompt"] = item.negative_prompt
    if item.image is not None:
        from PIL import Image

        with Image.open(item.image) as im:
            kw["image"] = im.convert("RGB").resize((settings["width"], settings["height"]))
    return kw


def _render_one(pipe, preset, item, settings, fmt, out_dir: Path, write: bool = True):
    """Render ``item``; return (relative file, seconds, token layout). ``write=False``: run the pipeline
    (a context-parallel group member other than the first) but write no file."""
    from accel.render.media import write_frames, write_mp4, write_png

    handle = pipe.accel_handle
    seen = {}

    def capture(_pipe, _i, _t, _kwargs):
        if handle is not None and "layout" not in seen:
            seen["layout"] = handle.token_layout
        return {}

    kw = _call_kwargs(preset, item, settings)
    kw["callback_on_step_end"] = capture
    t0 = time.perf_counter()
    out = pipe(**kw)
    seconds = time.perf_counter() - t0
    if not write:
        return None, seconds, seen.get("layout")
    if preset.is_video:
        frames = out.frames[0]
        if fmt == "mp4":
            rel = f"{item.name}.mp4"
            write_mp4(frames, out_dir / rel, settings["fps"])
        else:
            rel = item.name
            write_frames(frames, out_dir / rel)
    else:
        rel = f"{item.name}.png"
        write_png(out.images[0], out_dir / rel)
    return rel, seconds, seen.get("layout")


def _summary(records: list[dict], skipped: int, file=None) -> str:
    lines = [f"{'item':<40} {'status':<7} {'seconds':>8} {'density':>8}  file / error"]
    for r in records:
        density = "-" if r.get("density") is None else f"{r['density']:.3f}"
        seconds = "-" if r.get("latency_s") is None else f"{r['latency_s']:.1f}"
        tail = r.get("file") if r.get("status") == _STATUS_OK else r.get("error", "")
        lines.append(f"{r['name'][:40]:<40} {r.get('status', '?'):<7} {seconds:>8} {density:>8}  {tail}")
    ok = sum(r.get("status") == _STATUS_OK for r in records)
    lines.append(f"{ok} ok, {len(records) - ok} failed, of {len(records)} items ({skipped} already complete, skipped)")
    return "\n".join(lines)


def static_problem(args, preset, multiple: int, frame_step: int | None) -> str | None:
    """Why the command line's ``--format``/``--frames``/``--height``/``--width`` do not fit ``preset``
    (a :class:`~accel.pipelines.presets.ModelPreset`) with size rules ``multiple`` / ``frame_step``, or ``None``."""
    if args.format == "mp4" and not preset.is_video:
        return f"--format mp4 needs a video model; {preset.name} makes images (use png or auto)"
    if args.frames is not None and not preset.is_video:
        return f"--frames given but {preset.name} makes images"
    height = args.height if args.height is not None else preset.height
    width = args.width if args.width is not None else preset.width
    frames = args.frames if args.frames is not None else (preset.num_frames or 1)
    problem = _size_problem(height, width, frames, multiple, frame_step, preset.is_video,
                            names=("--height", "--width", "--frames"))
    return f"{problem} (model {preset.name})" if problem else None


def run(args, items, method_args, schedule, ctx, error) -> int:
    """Lock ``args.out``, load the model of ``args.model`` and render ``items``; returns the exit status: 0 all
    ok, 1 an item failed, 2 the folder is in use by another run, 130 after Ctrl-C, 143 after SIGTERM.

    Args:
        args: the parsed ``accel render`` command line (:func:`accel.cli.render.main`).
        items: the :class:`~accel.render.prompts.PromptItem` list of the prompt file.
        method_args: ``--method-arg`` fields; schedule: the ``--schedule`` (``None``: the method's published one).
        ctx: the :func:`~accel.render.distributed.init_distributed` context.
        error: called with a message for bad arguments found after loading; must not return
            (``argparse.ArgumentParser.error``).
    """
    from accel.render.distributed import main_says
    from accel.render.folder import FolderBusyError, FolderLock

    lock, busy = (FolderLock(args.out), None) if ctx.is_main else (None, None)
    if lock is not None:
        try:
            lock.acquire()
        except FolderBusyError as exc:
            busy = str(exc)
    if not main_says(ctx, busy is None):  # every rank stops when rank 0 could not lock the folder
        if busy is not None:
            print(f"accel render: error: {busy}", file=sys.stderr)
        return 2
    try:
        if lock is not None and lock.took_over:
            print(f"note: took over the lock of {args.out} left by {lock.took_over}", file=sys.stderr)
        return _run_locked(args, items, method_args, schedule, ctx, error)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(args, items, method_args, schedule, ctx, error) -> int:
    from tqdm.auto import tqdm

    from accel.methods.registry import method_record
    from accel.pipelines.loading import load, pipeline_size_rules
    from accel.render.density import effective_density
    from accel.render.distributed import barrier, shard
    from accel.render.manifest import MANIFEST_NAME, append_record, latest_records, merge_manifest, part_path

    out_dir = args.out
    say = print if ctx.is_main else (lambda *a, **k: None)
    cp_degree = getattr(args, "cp_degree", 1)
    if ctx.world_size % cp_degree:
        error(f"--cp-degree {cp_degree} must divide the number of processes ({ctx.world_size}); launch a multiple of "
              f"{cp_degree} processes (torchrun --nproc_per_node ...)")
    # context parallelism: ranks [gN, (g+1)N) render the same items together; the first of them writes
    leader = ctx.rank % cp_degree == 0
    manifest = out_dir / MANIFEST_NAME
    if manifest.exists() and not manifest.is_file():
        error(f"{manifest} is not a file (an item of an older accel render may have been named so); move it away "
              "and rerun")
    device = args.device
    if device is None or (ctx.world_size > 1 and str(device) == "cuda"):
        device = ctx.device()
    t0 = time.perf_counter()
    try:
        pipe = load(args.model, method=args.method, method_args=method_args, schedule=schedule, device=device,
                    dtype=args.dtype, offload=args.offload, vae_tiling=args.vae_tiling, vae_slicing=args.vae_slicing,
                    parallel=cp_degree if cp_degree > 1 else None)
    except (ValueError, TypeError, ImportError, RuntimeError, OSError) as exc:
        error(str(exc))
    preset = pipe.accel_preset
    multiple, frame_step = pipeline_size_rules(pipe)
    problem = static_problem(args, preset, multiple, frame_step)
    if problem:
        error(problem)
    fmt = args.format if args.format != "auto" else ("mp4" if preset.is_video else "png")
    handle = pipe.accel_handle
    # the settings key keeps the texts earlier versions hashed, so their manifests still resume
    method_text = "none" if handle is None else repr(handle.method)
    schedule_text = "none" if handle is None else repr(handle.schedule)
    method_info = method_record(handle.method if handle else None, handle.schedule if handle else None,
                                pipe.accel_method_source or None)
    num_layers = len(handle.layers.get(0, [])) if handle is not None else 0
    say(f"loaded {preset.name} ({type(pipe).__name__}) on {device} in {time.perf_counter() - t0:.1f} s; "
        f"method {method_text} ({pipe.accel_method_source or 'upstream attention'}), schedule {schedule_text}; "
        f"{ctx.world_size} process(es)" + (f" in {ctx.world_size // cp_degree} group(s) of {cp_degree} GPUs per video"
                                           if cp_degree > 1 else ""))

    # ---- what is already done (manifest + leftover parts of an interrupted run); everyone reads, then barrier
    latest = latest_records(out_dir)
    plan = []
    for item in items:
        settings = _item_settings(item, args, preset)
        key = _key(preset.name, item, settings, method_text, schedule_text, fmt)
        plan.append((item, settings, key))
    pending = [entry for entry in plan if not _is_complete(latest.get(entry[0].name), entry[2], out_dir)]
    skipped = len(plan) - len(pending)
    barrier(ctx)
    mine = shard(pending, ctx, cp_degree)
    say(f"{len(plan)} items: {skipped} already complete, {len(pending)} to render")

    part = part_path(out_dir, ctx.rank)
    failed = 0
    interrupted = None
    progress = not args.no_progress
    pipe.set_progress_bar_config(disable=not progress, leave=False, position=1 if ctx.world_size == 1 else ctx.rank)
    bar = tqdm(total=len(mine), desc="items" if ctx.world_size == 1 else f"rank {ctx.rank}", unit="item",
               disable=not progress, position=0 if ctx.world_size == 1 else ctx.rank, file=sys.stderr)
    try:
        with _sigterm_as_interrupt():
            for item, settings, key in mine:
                record = dict(name=item.name, index=item.index, line=item.line, prompt=item.prompt,
                              negative_prompt=item.negative_prompt, seed=item.seed, image=item.image,
                              settings=settings, model=preset.name, method=method_info,
                              format=fmt, settings_key=key, rank=ctx.rank, file=None, latency_s=None, density=None,
                              error=None)
                problem = _item_problem(item, settings, preset, multiple, frame_step)
                if problem is None:
                    if leader:
                        _remove_stale(out_dir, item.name)
                    try:
                        rel, seconds, layout = _render_one(pipe, preset, item, settings, fmt, out_dir, write=leader)
                        record.update(status=_STATUS_OK, file=rel, latency_s=round(seconds, 4),
                                      density=effective_density(handle.method if handle else None,
                                                                handle.schedule if handle else None, layout,
                                                                settings["steps"], num_layers))
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # one bad item must not stop the batch
                        if cp_degree > 1:
                            # the group's other ranks may wait in a collective this rank left: stop the job (the
                            # launcher ends the others); finished items are kept and a rerun resumes
                            raise
                        problem = f"{type(exc).__name__}: {exc}"
                if problem is not None:
                    failed += 1
                    record.update(status=_STATUS_FAILED, error=problem)
                    tqdm.write(f"failed: {item.name}: {problem}", file=sys.stderr)
                record["finished_at"] = time.time()
                if leader:
                    append_record(part, record)
                bar.update(1)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (Terminated)
        interrupted = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
    finally:
        bar.close()
    if interrupted:
        if ctx.world_size == 1:
            merge_manifest(out_dir)
        print(f"interrupted by {interrupted} (rank {ctx.rank}); finished items are kept - rerun the same command "
              "to resume", file=sys.stderr)
        return EXIT_TERMINATED if interrupted == "SIGTERM" else EXIT_INTERRUPTED

    barrier(ctx)
    if not ctx.is_main:
        return 1 if failed else 0
    merged = merge_manifest(out_dir)
    records = [merged.get(item.name, {"name": item.name, "status": "missing"}) for item in items]
    print(_summary(records, skipped))
    print(f"manifest: {out_dir / 'manifest.jsonl'}")
    return 0 if all(r.get("status") == _STATUS_OK for r in records) else 1


def _remove_stale(out_dir: Path, name: str) -> None:
    """Remove temporary files of ``name`` left by an interrupted write (the final files are replaced on write)."""
    from accel.render.media import partial_path

    for candidate in (out_dir / f"{name}.mp4", out_dir / f"{name}.png", out_dir / name):
        tmp = partial_path(candidate)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


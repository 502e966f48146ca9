"""End-to-end comparison: dense vs sparse methods on a pipeline, same prompts, seeds and scheduler.

For a pipeline (the embedded model, or a tiny random-weight pipeline), a prompt set and method
configurations (each with its :class:`~accel.Schedule`), :func:`run` generates the dense reference
(upstream diffusers attention, no accel installed) and every configuration with the same seeds
(prompt ``i`` uses ``torch.Generator().manual_seed(seed + i)``) and the pipeline's own scheduler, and
records per configuration and prompt:

* ``psnr_db``, ``ssim``, ``mse`` vs the dense frames (:mod:`accel.eval.metrics`: per frame, averaged;
  SSIM with an 11x11 Gaussian window, sigma 1.5), ``lpips`` when its weights are local (else ``None``,
  and the report says why);
* ``pipeline_s`` (wall time of the pipeline call) and ``transformer_s`` (sum of the wall times of the
  transformer's forward calls, timed by forward pre/post hooks; CUDA is synchronised at each), and the
  speedups ``dense / method`` of both. Timed by :mod:`accel.eval.timing`'s rules: per prompt, dense and
  every configuration first run once untimed (that call gives the frames, the density and the adherence,
  with the density recorder attached), then ``repeats`` rounds run each once, alternated with the order
  rotated per round; the figures are the medians; ``timing`` says how they were measured and
  ``timing_warnings`` lists timer-resolution, machine-load and impossible-speedup warnings;
* ``density`` (executed, from the kernel calls: :class:`~accel.eval.recorder.DensityRecorder`, pair-
  weighted over all self-attention calls) and its per (step, layer) map, ``attention_flops``;
* memory: on CUDA ``peak_mem_mib`` = ``torch.cuda.max_memory_allocated`` during the call; on CPU
  ``peak_rss_mib`` = the process's maximum resident set size after the call (``resource.getrusage``,
  a high-water mark of the whole process, so it only grows; ``tracemalloc`` does not see torch's
  allocations);
* fidelity that a blank or objectless output cannot win (PSNR and SSIM can: a grey frame scores well
  against a clip whose object is small): LPIPS when installed, and on the embedded model the adherence
  check (:func:`accel.embedded.adherence.check_adherence`): ``colour_ok`` / ``direction_ok`` against the
  prompt, ``colour`` and ``object_fraction`` seen, and ``object_lost``: the dense clip shows an object and
  this one shows none of the dense clip's colour, or less than half as many object pixels
  (:data:`OBJECT_LOST_RATIO`).

Configurations are labelled by the density they reached (``neighborhood@16%``), never by a target they
missed: :func:`method_configs` records the target(s) each stands for and whether it was reached
(:func:`accel.eval.matching.reached`); targets that give the same configuration run once.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from accel.eval import metrics
from accel.eval.matching import (
    METHOD_NAMES,
    auto_block,
    check_method_names,
    command_line_names,
    density_label,
    method_at_density,
    method_names_from_command_line,
    reached,
)
from accel.eval.recorder import DensityRecorder
from accel.eval.rundir import open_run_dir
from accel.eval.timing import Candidate, compare, speedup_warning
from accel.schedule import Schedule

__all__ = ["PIPELINES", "load_pipeline", "MethodConfig", "method_configs", "run", "main", "OBJECT_LOST_RATIO"]

#: a method's clip has lost the object when it shows less than this share of the dense clip's object pixels
OBJECT_LOST_RATIO = 0.5

#: The offline pipelines (preset names of :mod:`accel.pipelines.presets`) with the small call settings ``accel eval
#: e2e`` uses for them; any other preset, a folder saved with ``save_pretrained`` or a hub id also works.
PIPELINES = ("embedded", "tiny-wan", "tiny-hunyuan-video", "tiny-flux")
DEFAULT_PROMPTS = ("a red circle moving left", "a yellow square moving up")


class MethodConfig:
    """One configuration to compare with dense attention.

    Args:
        label: unique name in the report (e.g. ``"neighborhood@22%"``: the density it reached).
        method: the accel method.
        schedule: its :class:`~accel.Schedule` (default: no dense steps or layers).
        target: the target density it was matched to (``None`` if not matched); with several targets that
            gave this same configuration, the first.
        parameter: the searched parameter (for the report).
        density: the video x video density the matching reached (``None`` if not matched).
        targets: every target density this configuration stands for (default ``[target]``).
    """

    def __init__(self, label: str, method, schedule: Schedule | None = None, *, target: float | None = None,
                 parameter: dict | None = None, density: float | None = None, targets: list | None = None) -> None:
        self.label, self.method = label, method
        self.schedule = schedule if schedule is not None else Schedule()
        self.target, self.parameter = target, parameter or {}
        self.density = density
        self.targets = list(targets) if targets is not None else ([] if target is None else [target])
        self.name = label.split("@")[0]

    @property
    def unreached(self) -> list[float]:
        """The targets this configuration missed (:func:`accel.eval.matching.reached`)."""
        if self.density is None:
            return []
        return [t for t in self.targets if not reached(t, self.density)]


def load_pipeline(name: str, device: str = "cpu"):
    """``(pipe, call_kwargs)`` for a model; ``call_kwargs`` exclude prompt, generator and output type.

    Args:
        name: a preset name of :mod:`accel.pipelines.presets` (``"embedded"``, ``"tiny-wan"``,
            ``"wan2.1-t2v-1.3b"``, ...; old spellings such as ``"tiny-hunyuan_video"`` with a deprecation
            warning), a folder holding a diffusers ``model_index.json``, or a hub id (loaded by
            :func:`accel.pipelines.loading.load`, safetensors only). The offline models of :data:`PIPELINES`
            get small call settings (the embedded model's defaults; tiny ones: 2 steps at token grids
            ``(3, 8, 8)`` or ``(1, 16, 16)``); every other model its preset's settings (a folder or hub id
            that matches no preset: its pipeline's own call defaults).
        device: ``"cpu"``, ``"cuda"``, ...

    Raises:
        ValueError: not a preset, an existing folder or a hub id.
    """
    from accel.pipelines.loading import load, resolve_model

    preset, _ = resolve_model(name)
    if preset is not None and preset.name == "embedded":
        from accel.embedded.model import embedded, generation_kwargs

        return embedded(device=device), generation_kwargs()
    if preset is not None and preset.source == "tiny":
        from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

        family = preset.family
        pipe = tiny_pipeline(family).to(device)
        kw = tiny_call_kwargs(family, steps=2, size=32 if family == "flux" else 128)  # grids (1,16,16) / (3,8,8)
        for key in ("prompt", "generator", "output_type"):
            kw.pop(key, None)
        return pipe, kw
    pipe = load(name, device=device)
    return pipe, pipe.accel_preset.generation_kwargs()


def method_configs(names, densities, grid, *, schedule: Schedule | None = None, backend: str = "auto",
                   block_size: int | None = None) -> list[MethodConfig]:
    """One :class:`MethodConfig` per distinct configuration of (name, density), matched on ``grid``
    (``"dense"``: accel's Dense once).

    Each is labelled ``name@D%`` with ``D`` the density it *reached* (:func:`accel.eval.matching.density_label`),
    whatever the target; targets that give the same method configuration make one configuration (its
    ``targets`` lists them; :attr:`MethodConfig.unreached` the ones it missed by more than the tolerance).

    Raises:
        ValueError: unknown/empty names or a density outside (0, 1].
    """
    names = check_method_names(names)
    out, seen = [], {}
    for name in names:
        for d in ([1.0] if name == "dense" else densities):
            m = method_at_density(name, d, grid, backend=backend, block_size=block_size)
            key = (name, repr(m.method))
            if key in seen:
                seen[key].targets.append(d)
                continue
            label = f"{name}@{density_label(m.density)}"
            while any(c.label == label for c in out):  # two configurations that round to the same percent
                label += "'"
            cfg = MethodConfig(label, m.method, schedule, target=d, parameter=m.parameter, density=m.density)
            seen[key] = cfg
            out.append(cfg)
    return out


def _clock() -> float:
    """The clock of every timing here (seconds); tests replace it with a clock they move by hand."""
    return time.perf_counter()


class _Timer:
    """Wall time of a module's forward calls (pre/post hooks), CUDA-synchronised."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.total = 0.0
        self._t0 = None
        self._cuda = any(p.is_cuda for p in module.parameters())
        self._hooks = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _sync(self):
        if self._cuda:
            torch.cuda.synchronize()

    def _pre(self, *_):
        self._sync()
        self._t0 = _clock()

    def _post(self, *_):
        self._sync()
        self.total += _clock() - self._t0

    def remove(self):
        for h in self._hooks:
            h.remove()


def _frames(out) -> np.ndarray:
    """Pipeline output -> ``[F, H, W, 3]`` float in [0, 1] (one image -> one frame)."""
    x = out.frames[0] if hasattr(out, "frames") else out.images[0]
    x = np.asarray(x, dtype=np.float64)
    return x[None] if x.ndim == 3 else x


def _generate(pipe, prompt: str, seed: int, kwargs: dict) -> dict:
    """One pipeline call: its frames, the transformer's forward time and the memory high-water mark (the
    call's wall time is taken by :func:`accel.eval.timing.compare` around it)."""
    timer = _Timer(pipe.transformer)
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        with torch.no_grad():
            out = pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs)
    finally:
        timer.remove()
    mem = ({"peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20} if cuda
           else {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return {"frames": _frames(out), "transformer_s": timer.total, **mem}


def _one_step(pipe, prompt, kwargs) -> None:
    with torch.no_grad():
        pipe(prompt=prompt, generator=torch.Generator().manual_seed(0), output_type="np",
             **{**kwargs, "num_inference_steps": 1})


def _grid_of(pipe, prompt, kwargs) -> tuple[int, int, int]:
    """The self-attention token grid of this pipeline call, from a 1-step call with accel.Dense installed;
    then a 1-step upstream call, so that no timed call pays first-call costs."""
    from accel.methods.dense import Dense
    from accel.processors.apply import apply

    handle = apply(pipe, Dense())
    rec = DensityRecorder().attach(handle)
    try:
        _one_step(pipe, prompt, kwargs)
    finally:
        rec.detach()
        handle.remove()
    _one_step(pipe, prompt, kwargs)
    return tuple(rec.records[0]["grid"])


def run(out_dir, *, pipeline: str = "embedded", prompts=DEFAULT_PROMPTS, methods=METHOD_NAMES,
        densities=(0.1, 0.2, 0.3), configs: list[MethodConfig] | None = None, schedule: Schedule | None = None,
        steps: int | None = None, seed: int = 0, device: str = "cpu", progress: bool = True, draw: bool = True,
        pipe=None, call_kwargs: dict | None = None, repeats: int = 3) -> Path:
    """Run the comparison and write ``out_dir``: ``results.json`` (after every prompt), ``report.md``, PNGs.

    Args:
        out_dir: run directory (created; must be writable).
        pipeline: the model, as :func:`load_pipeline` takes it (only a label when ``pipe`` is given).
        prompts: non-empty list of prompts; prompt ``i`` uses seed ``seed + i``.
        methods: method names matched at each of ``densities`` on the call's token grid
            (:func:`accel.eval.matching.method_at_density`); ignored when ``configs`` is given.
        densities: target densities in (0, 1].
        configs: explicit :class:`MethodConfig` list instead of ``methods`` x ``densities``.
        schedule: schedule of the matched configurations (default: every step and layer sparse).
        steps: ``num_inference_steps`` (default: the pipeline's: 20 for the embedded model, 2 for tiny ones).
        seed: base seed.
        device: ``"cpu"`` or ``"cuda"``.
        progress: show a progress bar.
        draw: write PNG plots.
        pipe, call_kwargs: a ready pipeline and its call arguments (then ``pipeline`` is only a label).
        repeats: timed calls per configuration and prompt, alternated (an int >= 1); the times reported are
            their medians. Each configuration also runs once untimed before them (frames, density, adherence).

    Returns:
        the run directory's path.

    Raises:
        ValueError: empty prompt set, unknown pipeline or method name, bad density or step count, or an
            unwritable output directory.
    """
    from accel.eval import report
    from accel.eval.kernel_bench import environment

    prompts = list(prompts) if not isinstance(prompts, str) else [prompts]
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of non-empty strings, got {prompts!r}")
    if configs is None:
        check_method_names(methods)
        for d in densities:
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d <= 1:
                raise ValueError(f"densities must be numbers in (0, 1], got {d!r}")
    elif not configs:
        raise ValueError("configs must not be empty")
    if pipe is None:
        from accel.pipelines.loading import resolve_model

        resolve_model(pipeline)  # an unknown name fails before the run directory is made
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    lpips_ok, lpips_note = metrics.lpips_status()
    header = {
        "benchmark": "e2e", "pipeline": pipeline, "prompts": prompts, "seed": seed,
        "units": {"psnr_db": "dB (per frame, mean)", "ssim": "mean SSIM (Gaussian 11x11, sigma 1.5; per frame, mean)",
                  "pipeline_s": "seconds (wall), median of the timed calls (pipeline_s_all: each)",
                  "transformer_s": "seconds (sum of transformer forwards), median of the timed calls",
                  "speedup_*": "median dense time / median method time, same prompt, calls alternated",
                  "density": "fraction of (query, key) pairs computed",
                  "attention_flops": "FLOPs of the attention matmuls (4 * B * H * D * pairs)",
                  "peak_rss_mib": "MiB, process max RSS after the call (CPU, monotone)",
                  "peak_mem_mib": "MiB, torch.cuda.max_memory_allocated during the call"},
        "lpips": lpips_note, "environment": {**environment(), "device": device},
        "object_lost_ratio": OBJECT_LOST_RATIO, "repeats": repeats,
    }
    run_dir = open_run_dir(out_dir, header)  # fails before any model is loaded
    if pipe is None:
        pipe, call_kwargs = load_pipeline(pipeline, device)
    kwargs = dict(call_kwargs or {})
    if steps is not None:
        kwargs["num_inference_steps"] = steps
    run_dir.set("call_kwargs", {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))})
    grid = _grid_of(pipe, prompts[0], kwargs)
    if configs is None:
        configs = method_configs(methods, densities, grid, schedule=schedule, block_size=auto_block(math.prod(grid)))
    run_dir.set("grid", list(grid))
    run_dir.set("configs", [{"label": c.label, "method": repr(c.method), "schedule": repr(c.schedule),
                             "target_density": c.target, "targets": c.targets, "matched_density": c.density,
                             "unreached_targets": c.unreached, "parameter": c.parameter} for c in configs])
    bar = _bar(len(prompts) * (1 + len(configs)) * (1 + repeats), progress)
    samples = {}
    sync = torch.cuda.synchronize if pipe.device.type == "cuda" else None
    by_label = {c.label: c for c in configs}
    for i, prompt in enumerate(prompts):
        bar.set_description(f"prompt {i + 1}/{len(prompts)}: {prompt[:30]}")
        outputs: dict[str, dict] = {}
        candidates = {"dense": _candidate(pipe, None, prompt, seed + i, kwargs, outputs, "dense", bar)}
        for cfg in configs:
            candidates[cfg.label] = _candidate(pipe, cfg, prompt, seed + i, kwargs, outputs, cfg.label, bar)
        timed = compare(candidates, repeats=repeats, warmup=1, sync=sync, clock=_clock)
        dense = outputs["dense"]
        dense_seen = _analysis(dense["frames"], prompt) if pipeline == "embedded" else None
        for label in candidates:
            cfg = by_label.get(label)
            run_dir.add(_record(label, cfg, i, prompt, outputs[label], dense, timed, lpips_ok, dense_seen))
            if i == 0 and cfg is not None:
                samples[label] = outputs[label]["frames"]
        if i == 0:
            dense_first = dense["frames"]
    bar.close()
    report.write_e2e_report(run_dir, dense_frames=dense_first, samples=samples, configs=configs, grid=grid,
                            draw=draw)
    run_dir.finish()
    return run_dir.path


def _candidate(pipe, cfg: MethodConfig | None, prompt: str, seed: int, kwargs: dict, outputs: dict, label: str,
               bar) -> Candidate:
    """Dense (``cfg`` None: upstream attention) or one configuration as a :class:`~accel.eval.timing.Candidate`.

    Its untimed warm-up is the full call, with the density recorder attached: it gives the frames, the
    executed density and the adherence (``outputs[label]``); the timed calls run without the recorder (its
    bookkeeping would be timed) and append their transformer time and memory to ``outputs[label]["timed"]``.
    """
    from accel.processors.apply import apply

    state: dict = {}

    def setup():
        if cfg is not None:
            state["handle"] = apply(pipe, cfg.method, schedule=cfg.schedule)

    def teardown():
        recorder = state.pop("recorder", None)
        if recorder is not None:
            recorder.detach()
        handle = state.pop("handle", None)
        if handle is not None:
            handle.remove()

    def first():
        recorder = None
        if cfg is not None:
            recorder = state["recorder"] = DensityRecorder().attach(state["handle"])
        res = _generate(pipe, prompt, seed, kwargs)
        outputs[label] = {**res, "recorder": recorder, "timed": []}
        bar.update(1)

    def timed():
        res = _generate(pipe, prompt, seed, kwargs)
        res.pop("frames")
        outputs[label]["timed"].append(res)
        bar.update(1)

    return Candidate(timed, setup=setup, teardown=teardown, warmup=first)


def _analysis(frames, prompt: str):
    from accel.embedded.adherence import check_adherence

    return check_adherence(frames, prompt)


def _record(label: str, cfg: MethodConfig | None, i: int, prompt: str, out: dict, dense: dict, timed, lpips_ok: bool,
            dense_seen) -> dict:
    m = metrics.compare_frames(dense["frames"], out["frames"])
    transformer = [x["transformer_s"] for x in out["timed"]]
    dense_transformer = statistics.median(x["transformer_s"] for x in dense["timed"])
    record = {
        "config": label, "method": label.split("@")[0],
        "target_density": None if cfg is None else cfg.target,
        "targets": None if cfg is None else cfg.targets,
        "matched_density": None if cfg is None else cfg.density,
        "unreached_targets": None if cfg is None else cfg.unreached,
        "prompt_index": i, "prompt": prompt,
        "psnr_db": m["psnr_db"], "ssim": m["ssim"], "mse": m["mse"],
        "lpips": metrics.lpips_distance(dense["frames"], out["frames"]) if lpips_ok else None,
        "pipeline_s": timed.median(label), "pipeline_s_all": timed.times[label],
        "transformer_s": statistics.median(transformer), "transformer_s_all": transformer,
        "speedup_pipeline": timed.speedup("dense", label),
        "speedup_transformer": dense_transformer / statistics.median(transformer) if all(transformer) else None,
        "timing": timed.describe(),
    }
    for key in ("peak_rss_mib", "peak_mem_mib"):
        if key in out["timed"][0]:
            record[key] = max(x[key] for x in out["timed"])
    recorder = out["recorder"]
    if recorder is None:
        record.update(density=1.0, attention_flops=None, density_map=None)
    else:
        record["density"] = recorder.mean_density()
        record["attention_flops"] = recorder.total_flops()
        record["density_map"] = [[s, layer, d] for (s, layer), d in sorted(recorder.per_layer_step().items())]
    warnings = list(timed.warnings)
    for key in ("speedup_pipeline", "speedup_transformer"):
        w = speedup_warning(record[key], record["density"])
        if w:
            warnings.append(f"{key}: {w}")
    record["timing_warnings"] = warnings
    if dense_seen is not None:
        seen = _analysis(out["frames"], prompt) if cfg is not None else dense_seen
        a = seen.analysis
        record.update(colour_ok=bool(seen.colour_ok), direction_ok=bool(seen.direction_ok), colour=a.colour,
                      direction=a.direction, object_fraction=a.object_fraction,
                      object_lost=_object_lost(a, dense_seen.analysis))
    return record


def _object_lost(seen, dense) -> bool | None:
    """Whether a clip lost the dense clip's object: another dominant colour (or none), or fewer than
    :data:`OBJECT_LOST_RATIO` times its object pixels; ``None`` when the dense clip shows no object."""
    if dense.colour is None:
        return None
    return seen.colour != dense.colour or seen.object_fraction < OBJECT_LOST_RATIO * dense.object_fraction


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="gen", file=sys.stderr)


def main(argv=None) -> int:
    """Command line: ``accel eval`` / ``accel eval e2e`` (see ``--help``)."""
    from accel.kernels.renamed import renamed_option

    cli_methods = command_line_names(METHOD_NAMES)
    p = argparse.ArgumentParser(prog="accel eval e2e", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded",
                   help="preset name (accel render --model's; e.g. embedded, tiny-wan, tiny-hunyuan-video, tiny-flux, "
                        "wan2.1-t2v-1.3b), a folder saved with save_pretrained, or a hub id (default embedded)")
    p.add_argument("--pipeline", dest="model", action=renamed_option("--model"), help=argparse.SUPPRESS)
    p.add_argument("--prompt", dest="prompts", nargs="+", default=None, metavar="TEXT",
                   help="prompt text(s) (default: two embedded-model prompts)")
    p.add_argument("--prompts", dest="prompts", nargs="+", action=renamed_option("--prompt"), help=argparse.SUPPRESS)
    p.add_argument("--prompt-file", type=Path, default=None, help="file with one prompt per line")
    p.add_argument("--method", dest="methods", nargs="+", default=cli_methods, metavar="NAME",
                   help=f"methods to compare with dense, from dense {' '.join(cli_methods)} (default: all but dense)")
    p.add_argument("--methods", dest="methods", nargs="+", action=renamed_option("--method"), help=argparse.SUPPRESS)
    p.add_argument("--densities", nargs="+", type=float, default=None,
                   help="target densities (default 0.1 0.2 0.3; 0.2 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: the model's)")
    p.add_argument("--height", type=int, default=None, help="height in pixels (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="width in pixels (default: the model's)")
    p.add_argument("--frames", type=int, default=None, help="frames of a video (default: the model's)")
    p.add_argument("--dense-steps", type=int, default=0, help="first steps kept dense (Schedule.dense_steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3,
                   help="timed calls per configuration and prompt, alternated with dense; medians reported (default 3)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("eval-results/e2e"), help="run directory")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="a few-minute CPU run: first prompt only, density 20%% only, 8 steps (unless given; at 4 "
                        "steps the embedded model's dense clip of the first prompt does not show its colour yet)")
    args = p.parse_args(argv)
    try:
        methods = method_names_from_command_line(args.methods)
    except ValueError as exc:
        p.error(str(exc))
    for name in ("steps", "height", "width", "frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be >= 1, got {value}")
    if args.densities is None:
        args.densities = [0.2] if args.quick else [0.1, 0.2, 0.3]
    if args.quick:
        args.steps = args.steps or 8
    prompts = args.prompts
    if args.prompt_file is not None:
        try:
            prompts = [line.strip() for line in args.prompt_file.read_text().splitlines() if line.strip()]
        except OSError as exc:
            p.error(f"cannot read --prompt-file {args.prompt_file}: {exc.strerror}")
    if prompts is None:
        prompts = list(DEFAULT_PROMPTS)[:1] if args.quick else list(DEFAULT_PROMPTS)
    try:
        from accel.kernels.renamed import current_spelling
        from accel.pipelines.presets import PRESETS

        model = current_spelling(args.model, PRESETS, "model") or args.model  # an old spelling: one note
        pipe, call_kwargs = None, None
        sizes = {"height": args.height, "width": args.width, "num_frames": args.frames}
        if any(v is not None for v in sizes.values()):  # the model's call settings, with these replaced
            pipe, call_kwargs = load_pipeline(model, args.device)
            call_kwargs = {**call_kwargs, **{k: v for k, v in sizes.items() if v is not None}}
        path = run(args.out, pipeline=model, prompts=prompts, methods=methods, densities=args.densities,
                   schedule=Schedule(dense_steps=args.dense_steps), steps=args.steps, seed=args.seed,
                   device=args.device, draw=not args.no_plots, pipe=pipe, call_kwargs=call_kwargs,
                   repeats=args.repeats)
    except ValueError as exc:
        p.error(str(exc))
    print(f"wrote {path / 'results.json'} and {path / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

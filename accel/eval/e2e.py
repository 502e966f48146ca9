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
  speedups ``dense / method`` of both;
* ``density`` (executed, from the kernel calls: :class:`~accel.eval.recorder.DensityRecorder`, pair-
  weighted over all self-attention calls) and its per (step, layer) map, ``attention_flops``;
* memory: on CUDA ``peak_mem_mib`` = ``torch.cuda.max_memory_allocated`` during the call; on CPU
  ``peak_rss_mib`` = the process's maximum resident set size after the call (``resource.getrusage``,
  a high-water mark of the whole process, so it only grows; ``tracemalloc`` does not see torch's
  allocations);
* prompt adherence (embedded model only): :func:`accel.embedded.adherence.check_adherence` -- colour and
  direction correct.
"""

from __future__ import annotations

import argparse
import math
import resource
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
    method_at_density,
    method_names_from_command_line,
)
from accel.eval.recorder import DensityRecorder
from accel.eval.rundir import open_run_dir
from accel.schedule import Schedule

__all__ = ["PIPELINES", "load_pipeline", "MethodConfig", "method_configs", "run", "main"]

#: The offline pipelines (preset names of :mod:`accel.pipelines.presets`) with the small call settings ``accel eval
#: e2e`` uses for them; any other preset, a folder saved with ``save_pretrained`` or a hub id also works.
PIPELINES = ("embedded", "tiny-wan", "tiny-hunyuan-video", "tiny-flux")
DEFAULT_PROMPTS = ("a red circle moving left", "a yellow square moving up")


class MethodConfig:
    """One configuration to compare with dense attention.

    Args:
        label: unique name in the report (e.g. ``"neighborhood@20%"``).
        method: the accel method.
        schedule: its :class:`~accel.Schedule` (default: no dense steps or layers).
        target: the target density it was matched to (``None`` if not matched).
        parameter: the searched parameter (for the report).
    """

    def __init__(self, label: str, method, schedule: Schedule | None = None, *, target: float | None = None,
                 parameter: dict | None = None) -> None:
        self.label, self.method = label, method
        self.schedule = schedule if schedule is not None else Schedule()
        self.target, self.parameter = target, parameter or {}
        self.name = label.split("@")[0]


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
    """One :class:`MethodConfig` per (name, density), matched on ``grid`` (``"dense"``: accel's Dense once).

    Raises:
        ValueError: unknown/empty names or a density outside (0, 1].
    """
    names = check_method_names(names)
    out = []
    for name in names:
        for d in ([1.0] if name == "dense" else densities):
            m = method_at_density(name, d, grid, backend=backend, block_size=block_size)
            out.append(MethodConfig(f"{name}@{round(d * 100)}%", m.method, schedule, target=d, parameter=m.parameter))
    return out


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
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.total += time.perf_counter() - self._t0

    def remove(self):
        for h in self._hooks:
            h.remove()


def _frames(out) -> np.ndarray:
    """Pipeline output -> ``[F, H, W, 3]`` float in [0, 1] (one image -> one frame)."""
    x = out.frames[0] if hasattr(out, "frames") else out.images[0]
    x = np.asarray(x, dtype=np.float64)
    return x[None] if x.ndim == 3 else x


def _generate(pipe, prompt: str, seed: int, kwargs: dict) -> dict:
    """One timed pipeline call."""
    timer = _Timer(pipe.transformer)
    cuda = pipe.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            out = pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    finally:
        timer.remove()
    mem = ({"peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20} if cuda
           else {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    return {"frames": _frames(out), "pipeline_s": wall, "transformer_s": timer.total, **mem}


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
        pipe=None, call_kwargs: dict | None = None) -> Path:
    """Run the comparison and write ``out_dir``: ``results.json`` (after every generation), ``report.md``, PNGs.

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

    Returns:
        the run directory's path.

    Raises:
        ValueError: empty prompt set, unknown pipeline or method name, bad density or step count, or an
            unwritable output directory.
    """
    from accel.eval import report
    from accel.eval.kernel_bench import environment
    from accel.processors.apply import apply

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
    lpips_ok, lpips_note = metrics.lpips_status()
    header = {
        "benchmark": "e2e", "pipeline": pipeline, "prompts": prompts, "seed": seed,
        "units": {"psnr_db": "dB (per frame, mean)", "ssim": "mean SSIM (Gaussian 11x11, sigma 1.5; per frame, mean)",
                  "pipeline_s": "seconds (wall)", "transformer_s": "seconds (sum of transformer forwards)",
                  "speedup_*": "dense time / method time", "density": "fraction of (query, key) pairs computed",
                  "attention_flops": "FLOPs of the attention matmuls (4 * B * H * D * pairs)",
                  "peak_rss_mib": "MiB, process max RSS after the call (CPU, monotone)",
                  "peak_mem_mib": "MiB, torch.cuda.max_memory_allocated during the call"},
        "lpips": lpips_note, "environment": {**environment(), "device": device},
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
                             "target_density": c.target, "parameter": c.parameter} for c in configs])
    bar = _bar(len(prompts) * (1 + len(configs)), progress)
    dense = []
    for i, prompt in enumerate(prompts):
        bar.set_description(f"dense: {prompt[:30]}")
        res = _generate(pipe, prompt, seed + i, kwargs)
        dense.append(res)
        run_dir.add(_record("dense", None, i, prompt, res, res, None, pipeline, lpips_ok))
        bar.update(1)
    samples = {}
    for cfg in configs:
        handle = apply(pipe, cfg.method, schedule=cfg.schedule)
        rec = DensityRecorder().attach(handle)
        try:
            for i, prompt in enumerate(prompts):
                bar.set_description(f"{cfg.label}: {prompt[:30]}")
                rec.clear()
                res = _generate(pipe, prompt, seed + i, kwargs)
                run_dir.add(_record(cfg.label, cfg, i, prompt, res, dense[i], rec, pipeline, lpips_ok))
                if i == 0:
                    samples[cfg.label] = res["frames"]
                bar.update(1)
        finally:
            rec.detach()
            handle.remove()
    bar.close()
    report.write_e2e_report(run_dir, dense_frames=dense[0]["frames"], samples=samples, configs=configs, grid=grid,
                            draw=draw)
    run_dir.finish()
    return run_dir.path


def _record(label, cfg, i, prompt, res, dense, rec, pipeline, lpips_ok) -> dict:
    m = metrics.compare_frames(dense["frames"], res["frames"])
    out = {
        "config": label, "method": label.split("@")[0], "target_density": None if cfg is None else cfg.target,
        "prompt_index": i, "prompt": prompt,
        "psnr_db": m["psnr_db"], "ssim": m["ssim"], "mse": m["mse"],
        "lpips": metrics.lpips_distance(dense["frames"], res["frames"]) if lpips_ok else None,
        "pipeline_s": res["pipeline_s"], "transformer_s": res["transformer_s"],
        "speedup_pipeline": dense["pipeline_s"] / res["pipeline_s"],
        "speedup_transformer": dense["transformer_s"] / res["transformer_s"] if res["transformer_s"] else None,
        **{k: res[k] for k in ("peak_rss_mib", "peak_mem_mib") if k in res},
    }
    if rec is None:
        out.update(density=1.0, attention_flops=None, density_map=None)
    else:
        out["density"] = rec.mean_density()
        out["attention_flops"] = rec.total_flops()
        out["density_map"] = [[s, layer, d] for (s, layer), d in sorted(rec.per_layer_step().items())]
    if pipeline == "embedded":
        from accel.embedded.adherence import check_adherence

        a = check_adherence(res["frames"], prompt)
        out.update(colour_ok=bool(a.colour_ok), direction_ok=bool(a.direction_ok))
    return out


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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=Path("eval-results/e2e"), help="run directory")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="a few-minute CPU run: first prompt only, density 20%% only, 4 steps (unless given)")
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
        args.steps = args.steps or 4
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
                   device=args.device, draw=not args.no_plots, pipe=pipe, call_kwargs=call_kwargs)
    except ValueError as exc:
        p.error(str(exc))
    print(f"wrote {path / 'results.json'} and {path / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

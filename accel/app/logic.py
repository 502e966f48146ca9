"""The demo's work as plain functions: validate a request, run it, write its files, return its figures.

The Gradio page (:mod:`accel.app.ui`) only forwards the widgets' values to these functions and shows
what they return; tests call them directly.

Generate: the chosen model makes a clip (or image) with the chosen attention method and
:class:`~accel.Schedule`; with ``compare`` on, the same prompt and seed also run with the model's own
(upstream, dense) attention, and the result reports both latencies (wall time of a pipeline call, VAE
decoding included), the speedup ``dense latency / method latency``, PSNR and SSIM of the method's output
against the dense one, the executed attention density and a picture of the block layout.

Timing (with ``compare``) follows :mod:`accel.eval.timing`: the method's call with the layout recorder and
the dense call that give the pictures and figures run first, untimed (they are the warm-up: first-call
costs, layout caches); then up to :data:`TIMING_REPEATS` rounds of one method and one dense call each,
alternated, stopping early once the timed calls took :data:`TIMING_BUDGET_S`; latencies are medians. The
result carries how they were measured and any warning (machine loaded, too few rounds, a speedup larger
than the executed density allows). Without ``compare`` the one call is timed as it runs, first-call costs
included, and the page says so.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .layout_view import LayoutRecorder, block_kinds_image, video_block_kinds
from .models import ModelCache, ModelEntry
from .outputs import OutputFolder

__all__ = ["AppInputError", "GenerateSettings", "GenerateResult", "METHOD_CHOICES", "accepted_params", "backend_text",
           "check_param_keys", "check_size", "parse_method_params", "speedup_notes", "validate_generate", "run_generate"]

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 400
MAX_SEED = 2**31 - 1
FPS = 8
#: timed rounds (one method call and one dense call each) of a comparison, at most
TIMING_REPEATS = 3
#: no new timed round starts once the timed calls took this many seconds
TIMING_BUDGET_S = 60.0

def _method_names() -> tuple[str, ...]:
    from accel.methods.registry import METHODS

    return tuple(METHODS)


#: Method names offered by the demo (``accel generate``'s names): ``none`` is the model's own attention.
METHOD_CHOICES = _method_names()

Progress = Callable[[float, str], None]


class AppInputError(ValueError):
    """A request the demo refuses; the message is shown in the page as it is."""


@dataclasses.dataclass(frozen=True)
class GenerateSettings:
    """One Generate request, as the page sends it.

    Attributes:
        model: a model the app offers (:func:`accel.app.models.offered_models`: preset names of accel.pipelines.presets).
        prompt: the text prompt, 1 to 400 characters after stripping.
        height, width: output size in pixels, positive multiples of the model's ``size_multiple``,
            at most its ``max_side``.
        frames: frame count (odd, ``1 + 2k``, at most the model's ``max_frames``; ignored, and taken
            as 1, for image models).
        steps: denoising steps, 1 to the model's ``max_steps``.
        seed: initial-noise seed, 0 to 2**31 - 1; the dense comparison uses the same seed.
        method: one of :data:`METHOD_CHOICES`.
        method_params: the method's parameters as ``key=value`` items separated by spaces, newlines
            or semicolons; values as in :func:`accel.methods.registry.parse_method_args` (``window=3,5,5
            block_size=32``). Empty for the method's defaults.
        dense_steps, dense_layers, dense_last_steps: the :class:`~accel.Schedule` (ints >= 0).
        compare: also run the model's own dense attention and report speedup, PSNR and SSIM.
    """

    model: str
    prompt: str
    height: int
    width: int
    frames: int
    steps: int
    seed: int
    method: str
    method_params: str = ""
    dense_steps: int = 0
    dense_layers: int = 0
    dense_last_steps: int = 0
    compare: bool = True


@dataclasses.dataclass
class GenerateResult:
    """What one Generate request produced (paths are inside the app's output folder).

    Attributes:
        kind: ``"video"`` (MP4 files) or ``"image"`` (PNG files).
        output: the method's result file.
        dense_output: the dense result file, or ``None`` without ``compare``.
        side_by_side: with ``compare`` on a video model, an MP4 of every frame as ``method | dense |
            difference`` (:func:`accel.app.compare_view.side_by_side`: the three always show the same
            frame); else ``None``.
        layout_picture: PNG of the block layout: for static patterns the video x video layout at this
            grid; for data-dependent methods (Rectified, Agent) the first kernel layout of the first
            sparse call (batch element 0, head 0); ``None`` when no sparse call ran.
        latency_s: wall time of the method's pipeline call (seconds): with ``compare``, the median of the
            timed calls (see the module docstring); without, the one call.
        dense_latency_s: the same for the dense pipeline call, or ``None``.
        speedup: ``dense_latency_s / latency_s``, or ``None``.
        cpu_speedup: the same ratio of the medians of the timed calls' process CPU time (all threads;
            :attr:`accel.eval.timing.Comparison.cpu_times`), or ``None`` without ``compare``. Less
            sensitive than wall time to other work sharing the CPUs.
        psnr_db: PSNR (dB, data range 1) of the method's frames against the dense ones, per frame and
            averaged (:func:`accel.eval.metrics.compare_frames`); ``inf`` when identical; ``None``
            without ``compare``.
        ssim: SSIM against the dense frames (:func:`accel.eval.metrics.compare_frames`: Gaussian
            11 x 11 window, per frame, averaged), or ``None`` without ``compare`` or for frames
            smaller than the window.
        density: executed self-attention density of the method's pipeline call: computed (query, key)
            pairs over all pairs, summed over every self-attention call (dense steps and layers of the
            schedule count fully), as recorded by :class:`accel.eval.recorder.DensityRecorder`; 1.0
            for ``none``.
        block_size: tokens per block of the layout picture, or ``None``.
        grid: the self-attention token grid ``(T, H, W)``.
        frames: the method's output, float ``[F, H, W, 3]`` in [0, 1] (``F = 1`` for images).
        dense_frames: the dense output, or ``None``.
        method: text of the method configuration that ran (``"none"`` for upstream attention).
        timing: how the latencies were measured (one line).
        timing_warnings: warnings about the latencies (machine loaded, too few rounds, an impossible
            speedup); empty when none applies.
        backends: the block-sparse backends the method's (untimed figure) call ran, after ``"auto"`` was
            resolved (:func:`accel.kernels.backends_used`): ``{backend: {"calls", "pairs"}}``; empty for
            ``none`` and when every attention call ran upstream's dense attention.
        speedup_notes: plain warnings that no speedup is possible at this size on this device (the
            dense reference backend ran, nothing is skipped, no sparse call ran); empty when none applies.
    """

    kind: str
    output: Path
    dense_output: Path | None
    layout_picture: Path | None
    latency_s: float
    dense_latency_s: float | None
    speedup: float | None
    psnr_db: float | None
    ssim: float | None
    density: float | None
    block_size: int | None
    grid: tuple[int, int, int]
    frames: np.ndarray
    dense_frames: np.ndarray | None
    method: str
    timing: str = ""
    timing_warnings: list[str] = dataclasses.field(default_factory=list)
    side_by_side: Path | None = None
    backends: dict = dataclasses.field(default_factory=dict)
    cpu_speedup: float | None = None
    speedup_notes: list[str] = dataclasses.field(default_factory=list)

    def backend_text(self) -> str:
        """The backends that ran, largest share of the kernel calls' query-key pairs first:
        ``"gather (97% of the pairs), reference (3%)"``; ``"none (upstream attention)"`` when no
        accel kernel ran."""
        return backend_text(self.backends)

    def figures_markdown(self) -> str:
        """The figures as a small Markdown table (what the page shows)."""
        def fmt(value, spec, unit=""):
            if value is None:
                return "n/a"
            if isinstance(value, float) and math.isinf(value):
                return "∞ (identical)"
            return f"{value:{spec}}{unit}"

        rows = [
            ("latency (method)", fmt(self.latency_s, ".2f", " s")),
            ("latency (dense)", fmt(self.dense_latency_s, ".2f", " s")),
            ("speedup", fmt(self.speedup, ".2f", "×")),
            ("speedup (process CPU time)", fmt(self.cpu_speedup, ".2f", "×")),
            ("PSNR vs dense", fmt(self.psnr_db, ".2f", " dB")),
            ("SSIM vs dense", fmt(self.ssim, ".4f")),
            ("executed density", fmt(self.density, ".3f")),
            ("token grid (T, H, W)", "×".join(str(g) for g in self.grid)),
            ("attention backend", self.backend_text()),
        ]
        lines = ["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
        text = "\n".join(lines) + f"\n\nmethod: `{self.method}`"
        if self.timing:
            text += f"\n\ntiming: {self.timing}"
        for warning in [*self.speedup_notes, *self.timing_warnings]:
            text += f"\n\n**warning:** {warning}"
        return text


def backend_text(backends: dict) -> str:
    """``{backend: {"calls", "pairs"}}`` (:func:`accel.kernels.backends_used`) as one line, the largest share of
    query-key pairs first: ``"gather (97% of the pairs), reference (3%)"``; ``"none (upstream attention)"``
    when empty."""
    if not backends:
        return "none (upstream attention)"
    total = sum(entry["pairs"] for entry in backends.values()) or 1
    ranked = sorted(backends.items(), key=lambda item: -item[1]["pairs"])
    parts = [f"{name} ({100 * entry['pairs'] / total:.0f}%{' of the pairs' if i == 0 else ''})"
             for i, (name, entry) in enumerate(ranked)]
    return ", ".join(parts)


#: executed density from which the page says nothing is left to skip
NOTHING_SKIPPED_DENSITY = 0.95
#: executed density from which the page says how little can be gained (at most 1 / density in attention)
LITTLE_SKIPPED_DENSITY = 0.75


def speedup_notes(method, backends: dict, density: float | None, device: str) -> list[str]:
    """Plain warnings that the method cannot be faster than dense here, from what its call ran.

    Args:
        method: the method object (``None`` for upstream attention: no notes).
        backends: the backends its call ran (:func:`accel.kernels.backends_used`).
        density: its executed self-attention density.
        device: the device type (``"cpu"``, ``"cuda"``), named in the text.

    Returns:
        up to two sentences: no sparse kernel call ran (the schedule kept every call dense); most query-key
        pairs went through the ``reference`` backend (dense masked attention: every pair computed, so
        slower than dense); the executed density is at least :data:`NOTHING_SKIPPED_DENSITY` (nothing to
        gain), or at least :data:`LITTLE_SKIPPED_DENSITY` (attention at most ``1 / density`` faster).
    """
    if method is None:
        return []
    notes = []
    if not backends:
        notes.append("no sparse attention call ran (the dense schedule covers every call): no speedup is possible")
    else:
        main = max(backends.items(), key=lambda item: item[1]["pairs"])[0]
        if main == "reference":
            notes.append(f"at this size on {device} the method runs on the reference backend (dense attention with a "
                         "mask: every pair is computed), so it cannot be faster than dense; 'auto' picks a "
                         "block-sparse backend for larger attention calls (try a larger height, width or frame count)")
    if density is not None and density >= NOTHING_SKIPPED_DENSITY:
        notes.append(f"the method computes {100 * density:.0f}% of the attention pairs at this size: almost nothing "
                     "is skipped, so no speedup is possible")
    elif density is not None and density >= LITTLE_SKIPPED_DENSITY:
        notes.append(f"the method computes {100 * density:.0f}% of the attention pairs at this size: attention can be "
                     f"at most {1 / density:.2f}x faster, the whole call (text encoder, MLPs, VAE decoding) less; "
                     "a larger size or a sparser setting (see the examples) skips more")
    return notes


def accepted_params(method: str) -> list[str]:
    """The parameter names (``key`` of ``key=value``) the method of :data:`METHOD_CHOICES` takes, in order."""
    from accel.methods.registry import method_class

    cls = method_class(method)
    return [] if cls is None else [f.name for f in dataclasses.fields(cls) if f.init]


def check_param_keys(method: str, params: dict) -> None:
    """``AppInputError`` naming the keys ``method`` does not take and the ones it does."""
    accepted = accepted_params(method)
    unknown = [key for key in params if key not in accepted]
    if unknown:
        raise AppInputError(f"method parameters: {method} does not take {', '.join(unknown)}; it takes "
                            f"{', '.join(accepted) if accepted else 'no parameters'}")


def parse_method_params(text: str) -> dict:
    """``"window=3,5,5 block_size=32"`` -> ``{"window": (3, 5, 5), "block_size": 32}``.

    Items are separated by whitespace or semicolons; each is ``key=value`` parsed by
    :func:`accel.methods.registry.parse_method_args`.

    Raises:
        AppInputError: an item is not ``key=value``.
    """
    from accel.methods.registry import parse_method_args

    items = [item for item in re.split(r"[\s;]+", text or "") if item]
    try:
        return parse_method_args(items)
    except ValueError as exc:
        raise AppInputError(f"method parameters: each item must be key=value (e.g. window=3,5,5), got {text!r}") from exc


def _int_field(name: str, value, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AppInputError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise AppInputError(f"{name} must be between {low} and {high}, got {value}")
    return value


def check_size(entry: ModelEntry, height, width, frames) -> tuple[int, int, int]:
    """``(height, width, frames)`` checked against a model's size rules and the demo's limits.

    Height and width: whole multiples of ``entry.size_multiple`` up to ``entry.max_side``. Frames:
    ``1 + k * entry.frame_step`` up to ``entry.max_frames`` for video models; always 1 for image
    models (the value given is ignored).

    Raises:
        AppInputError: naming the field, the value and what is allowed.
    """
    m = entry.size_multiple
    out = []
    for name, value in (("height", height), ("width", width)):
        value = _int_field(name, value, m, entry.max_side)
        if value % m:
            raise AppInputError(f"{name} must be a multiple of {m} for {entry.name}, got {value}")
        out.append(value)
    if entry.kind != "video":
        return out[0], out[1], 1
    frames = _int_field("frames", frames, 1, entry.max_frames)
    step = entry.frame_step
    if (frames - 1) % step:
        raise AppInputError(f"frames must be 1 + k*{step} (1, {1 + step}, {1 + 2 * step}, ...) for {entry.name}, "
                            f"got {frames}")
    return out[0], out[1], frames


def validate_generate(settings: GenerateSettings, models: ModelCache) -> tuple[GenerateSettings, ModelEntry, object, object]:
    """Check a request; return it normalised, its model entry, the method object and the schedule.

    Raises:
        AppInputError: any field out of range or inconsistent; the message names the field, the
            value given and what is allowed.
    """
    from accel.methods.registry import build_method
    from accel.schedule import Schedule

    try:
        entry = models.entry(settings.model)
    except ValueError as exc:
        raise AppInputError(str(exc)) from exc
    prompt = (settings.prompt or "").strip()
    if not prompt or len(prompt) > MAX_PROMPT_CHARS:
        raise AppInputError(f"prompt must have 1 to {MAX_PROMPT_CHARS} characters, got {len(prompt)}")
    height, width, frames = check_size(entry, settings.height, settings.width, settings.frames)
    size = dict(height=height, width=width)
    steps = _int_field("steps", settings.steps, 1, entry.max_steps)
    seed = _int_field("seed", settings.seed, 0, MAX_SEED)
    if settings.method not in METHOD_CHOICES:
        raise AppInputError(f"method must be one of {list(METHOD_CHOICES)}, got {settings.method!r}")
    params = parse_method_params(settings.method_params)
    if settings.method == "none" and params:
        raise AppInputError("method 'none' (the model's own attention) takes no parameters; clear the parameters field")
    check_param_keys(settings.method, params)
    try:
        method = build_method(settings.method, params)
    except (ValueError, TypeError) as exc:
        raise AppInputError(f"method parameters for {settings.method}: {str(exc).replace('--method-arg', 'parameter')}"
                            ) from exc
    amounts = {name: _int_field(name, getattr(settings, name), 0, 1000)
               for name in ("dense_steps", "dense_layers", "dense_last_steps")}
    schedule = Schedule(**amounts)
    if method is None and not schedule.is_trivial:
        raise AppInputError("a dense schedule (dense steps/layers) needs an attention method; method is 'none'")
    normalised = dataclasses.replace(settings, prompt=prompt, frames=frames, steps=steps, seed=seed,
                                     dense_steps=amounts["dense_steps"], dense_layers=amounts["dense_layers"],
                                     dense_last_steps=amounts["dense_last_steps"], **size)
    return normalised, entry, method, schedule


def _frames_of(output, kind: str) -> np.ndarray:
    """The first sample of a pipeline output as float ``[F, H, W, 3]`` in [0, 1]."""
    data = output.frames[0] if kind == "video" else output.images[0][None]
    data = data.detach().cpu().float().numpy() if isinstance(data, torch.Tensor) else np.asarray(data, dtype=np.float32)
    return np.clip(data, 0.0, 1.0)


def _run_pipeline(pipe, entry: ModelEntry, s: GenerateSettings, progress: Progress | None, offset: float, share: float,
                  label: str, handle=None) -> tuple[np.ndarray, float, object]:
    """Run one pipeline call; return its frames, wall time and the token layout ``handle`` recorded
    (read at the end of a step: the pipeline clears it when the call ends)."""
    recorded = []

    def on_step(_pipe, step, _timestep, kwargs):
        if handle is not None and not recorded and handle.token_layout is not None:
            recorded.append(handle.token_layout)
        if progress is not None:
            progress(offset + share * (step + 1) / s.steps, f"{label}: step {step + 1} of {s.steps}")
        return kwargs

    kwargs = entry.call_kwargs(height=s.height, width=s.width, frames=s.frames, steps=s.steps)
    generator = torch.Generator().manual_seed(s.seed)
    t0 = time.perf_counter()
    out = pipe(prompt=s.prompt, generator=generator, callback_on_step_end=on_step, **kwargs)
    latency = time.perf_counter() - t0
    return _frames_of(out, entry.kind), latency, (recorded[0] if recorded else None)


def _write_result(frames: np.ndarray, folder: Path, stem: str, kind: str) -> Path:
    from accel.render.media import write_mp4

    if kind == "video":
        path = folder / f"{stem}.mp4"
        write_mp4(frames, path, FPS)
    else:
        path = folder / f"{stem}.png"
        _write_png((frames[0] * 255).round().astype(np.uint8), path)
    return path


def _write_png(image: np.ndarray, path: Path) -> None:
    import imageio.v2 as imageio

    imageio.imwrite(path, image, format="PNG")


def _compare(reference: np.ndarray, frames: np.ndarray) -> tuple[float, float | None]:
    """PSNR and SSIM of ``frames`` against ``reference`` (SSIM ``None`` below the SSIM window size)."""
    from accel.eval.metrics import SSIM_WINDOW, compare_frames, video_psnr

    if min(frames.shape[1:3]) < SSIM_WINDOW:
        return video_psnr(reference, frames), None
    figures = compare_frames(reference, frames)
    return figures["psnr_db"], figures["ssim"]


def run_generate(settings: GenerateSettings, models: ModelCache, outputs: OutputFolder,
                 progress: Progress | None = None) -> GenerateResult:
    """Validate and run one Generate request; write its files into a new folder of ``outputs``.

    Args:
        settings: the request (see :class:`GenerateSettings`).
        models: the app's loaded pipelines.
        outputs: the app's output folder.
        progress: called as ``progress(fraction, text)`` after each denoising step (fraction of the
            whole request in [0, 1]).

    Raises:
        AppInputError: an invalid request, including method parameters the token grid cannot take
            (e.g. a window larger than the grid).
    """
    from accel.kernels import backends_used
    from accel.processors.apply import apply, attach

    s, entry, method, schedule = validate_generate(settings, models)
    if progress is not None:
        progress(0.0, f"loading {entry.name}")
    pipe = models.pipeline(entry.name)
    folder = outputs.new_request_dir("generate")
    runs = 2 + 2 * TIMING_REPEATS if s.compare else 1  # progress: the two figure calls, then the timed rounds
    # upstream attention ("none") still gets the root hook, which only records the token layout
    handle = apply(pipe, method, schedule=schedule) if method is not None else attach(pipe)
    # the recorder's bookkeeping (cached per call for static patterns; Rectified re-plans its block selection
    # once more for it) runs in this call only, never in a timed one
    recorder = LayoutRecorder().attach(handle) if method is not None else None
    try:
        try:
            with backends_used() as backends:
                frames, latency, layout = _run_pipeline(pipe, entry, s, progress, 0.0, 1.0 / runs,
                                                        _run_label(1, runs, s.method), handle)
        except ValueError as exc:  # accel's API errors for this grid (window too large, ...)
            raise AppInputError(f"{s.method} cannot run at this size: {exc}") from exc
    finally:
        if recorder is not None:
            recorder.detach()
        handle.remove()
    density = recorder.mean_density() if recorder is not None else 1.0
    output = _write_result(frames, folder, "method", entry.kind)
    dense_frames = dense_output = side_by_side = dense_latency = speedup = cpu_speedup = psnr = ssim = None
    timing = "one call, timed as it ran (first-call costs included); turn on compare with dense for fair timing"
    timing_warnings: list[str] = []
    if s.compare:
        dense_frames, _, _ = _run_pipeline(pipe, entry, s, progress, 1.0 / runs, 1.0 / runs,
                                           _run_label(2, runs, "dense"))
        dense_output = _write_result(dense_frames, folder, "dense", entry.kind)
        if entry.kind == "video":
            from .compare_view import side_by_side as in_step

            side_by_side = _write_result(in_step(frames, dense_frames), folder, "side_by_side", entry.kind)
        psnr, ssim = _compare(dense_frames, frames)
        timed = _time_fairly(pipe, entry, s, method, schedule, progress, runs)
        latency, dense_latency = timed.median("method"), timed.median("dense")
        speedup = timed.speedup("dense", "method")
        cpu_speedup = statistics.median(timed.cpu_times["dense"]) / statistics.median(timed.cpu_times["method"])
        timing, timing_warnings = timed.describe(), list(timed.warnings)
        from accel.eval.timing import speedup_warning

        implausible = speedup_warning(speedup, density)
        if implausible:
            timing_warnings.append(implausible)
    picture = None
    kinds = video_block_kinds(method, layout)
    if kinds is None and recorder is not None and recorder.first_layout is not None:  # chosen from the data
        kinds = recorder.first_layout.block_kinds(), recorder.first_layout.q_block
    block = None
    if kinds is not None:
        kinds, block = kinds
        picture = folder / "layout.png"
        _write_png(block_kinds_image(kinds), picture)
    return GenerateResult(
        kind=entry.kind, output=output, dense_output=dense_output, layout_picture=picture, latency_s=latency,
        dense_latency_s=dense_latency, speedup=speedup, psnr_db=psnr, ssim=ssim, density=density, block_size=block,
        grid=tuple(layout.grid), frames=frames, dense_frames=dense_frames, method=repr(method) if method else "none",
        timing=timing, timing_warnings=timing_warnings, backends=backends, cpu_speedup=cpu_speedup,
        side_by_side=side_by_side,
        speedup_notes=speedup_notes(method, backends, density, pipe.device.type),
    )


def _run_label(index: int, runs: int, what: str) -> str:
    """The progress text's run part: ``"run 3 of 8 (radial, timed)"``."""
    return f"run {index} of {runs} ({what})"


def _time_fairly(pipe, entry: ModelEntry, s: GenerateSettings, method, schedule, progress: Progress | None, runs: int):
    """Method and dense calls alternated after the (untimed) figure calls: :func:`accel.eval.timing.compare`
    with no further warm-up, at most :data:`TIMING_REPEATS` rounds within :data:`TIMING_BUDGET_S`."""
    from accel.eval.timing import Candidate, compare
    from accel.processors.apply import apply

    state, done = {}, [2]

    def call(label):
        def run():
            _run_pipeline(pipe, entry, s, progress, done[0] / runs, 1.0 / runs,
                          _run_label(done[0] + 1, runs, f"{label}, timed"))
            done[0] += 1
        return run

    def install():
        if method is not None:
            state["handle"] = apply(pipe, method, schedule=schedule)

    def uninstall():
        handle = state.pop("handle", None)
        if handle is not None:
            handle.remove()

    sync = torch.cuda.synchronize if pipe.device.type == "cuda" else None
    return compare({"method": Candidate(call(s.method), setup=install, teardown=uninstall),
                    "dense": Candidate(call("dense"))}, repeats=TIMING_REPEATS, warmup=0, sync=sync,
                   budget_s=TIMING_BUDGET_S)


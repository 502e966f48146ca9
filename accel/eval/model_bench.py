"""Speed of one denoising step of the real diffusion transformers, dense vs each method's preset.

Speed does not depend on the weights, so each transformer is built with random weights, directly on
the target device (``with torch.device(device)``: a 13B model is never initialised on the CPU), in
bfloat16 (modules diffusers keeps in float32, ``_keep_in_fp32_modules``, stay float32 as
``from_pretrained(torch_dtype=torch.bfloat16)`` keeps them). To fit one GPU loan, a model is built
with only a few blocks of each kind (``built``, e.g. 2 dual-stream + 2 single-stream blocks) at the
real width, and the time of one transformer call of the real model is **scaled** from them::

    call_ms = forward_ms + sum_kind (blocks[kind] - built[kind]) * block_ms[kind]

where ``forward_ms`` is the measured forward of the built model, ``block_ms[kind]`` the median time of
one block of that kind measured inside the same forwards (CUDA events on the GPU, ``perf_counter`` on
the CPU) and ``blocks[kind]`` the real model's block count. Equivalently ``call_ms = overhead_ms +
sum_kind blocks[kind] * block_ms[kind]`` with ``overhead_ms`` the part of the forward outside the blocks
(embeddings, HunyuanVideo's token refiner, the final layer). ``step_ms = calls_per_step * call_ms``
(Wan samples with classifier-free guidance: two calls per step; HunyuanVideo and FLUX.1-dev are
guidance-distilled: one).

Dense is upstream diffusers attention (``torch.nn.functional.scaled_dot_product_attention``; the SDPA
backend PyTorch picks for each call shape is recorded). Each method runs at its preset
(``Method.preset(family)``) with every layer sparse while timed; the generation-equivalent speedup then
applies the preset's dense :class:`~accel.schedule.Schedule` over the pipeline's default step count: a
(step, layer) the schedule keeps dense costs the dense block time of its kind, every other one the
method's::

    gen_ms = calls_per_step * sum_step (overhead_ms + sum_layer (dense ? dense_block_ms : block_ms)[kind(layer)])
    gen_speedup = dense gen_ms / method gen_ms

The executed density is recorded from the block layouts the method's kernel calls visit
(:class:`~accel.eval.recorder.DensityRecorder`, on the first warm-up forward). Peak memory (CUDA) is
``torch.cuda.max_memory_allocated`` over the timed forwards of the built model;
``peak_mem_full_estimate_bytes`` adds the weights of the blocks not built (activations do not grow with
the block count in inference).

Records (dicts; :func:`run` hands each to ``emit`` as soon as it is made, the command line writes one
JSON line each): ``run`` (environment and arguments), ``model`` (built blocks, parameters, or the error
that stopped the model), ``measurement`` (one per model and method, ``"dense"`` first), ``skipped``
(what the time budget left out, with the estimate that did not fit) and ``end`` (``complete`` is true
only when nothing failed or was skipped). A run killed before its ``end`` record is incomplete too.

The models and how they are built: :mod:`accel.eval.model_specs`. Needs torch and diffusers (and
Triton on CUDA). Command line: ``benchmarks/gpu_models.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from accel.eval.model_specs import (
    FULL_MODELS,
    TINY_MODELS,
    ModelSpec,
    build_model,
    import_diffusers,
    make_inputs,
    tiny_overrides,
)

__all__ = ["METHODS", "Budget", "method_preset", "time_forwards", "scaled_call_ms", "generation_ms", "forward_flops",
           "kernel_configs", "run", "summarize", "read_records", "main"]

# the order methods are measured in (a tight budget measures the first ones)
METHODS = ("Radial", "Neighborhood", "Rectified", "ClearLocal", "Agent")


# ---------------------------------------------------------------------------------------------- timing
class _Clock:
    """CUDA events on a CUDA device (read after one synchronise), ``perf_counter`` elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class _BlockTimer:
    """Start/end marks of every block of the given kinds, per forward."""

    def __init__(self, model, kinds, clock: _Clock) -> None:
        self.clock = clock
        self.marks: dict[str, list] = {kind: [] for kind in kinds}
        self.enabled = False
        self._start = {}
        self._hooks = []
        for kind in kinds:
            for block in getattr(model, kind):
                self._hooks.append(block.register_forward_pre_hook(self._pre(kind)))
                self._hooks.append(block.register_forward_hook(self._post(kind)))

    def _pre(self, kind):
        def hook(*_):
            if self.enabled:
                self._start[kind] = self.clock.now()
        return hook

    def _post(self, kind):
        def hook(*_):
            if self.enabled:
                self.marks[kind].append((self._start.pop(kind), self.clock.now()))
        return hook

    def block_ms(self) -> dict[str, float]:
        """Median time (ms) of one block of each kind over everything recorded (call after a sync)."""
        return {kind: statistics.median(self.clock.ms(a, b) for a, b in pairs) for kind, pairs in self.marks.items()}

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


@contextlib.contextmanager
def _sdpa_probe(calls: dict):
    """Count the calls of ``torch.nn.functional.scaled_dot_product_attention`` by (query shape, key
    shape, mask or not, the backend PyTorch picks for them: ``torch._fused_sdp_choice``)."""
    from torch.nn.attention import SDPBackend

    names = {member.value: name for name, member in SDPBackend.__members__.items()}
    fn = torch.nn.functional.scaled_dot_product_attention

    def probe(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        try:
            choice = names.get(int(torch._fused_sdp_choice(query, key, value, attn_mask, dropout_p, is_causal,
                                                            scale=scale, **kwargs)), "unknown")
        except Exception as exc:  # noqa: BLE001 - a private function: record, never fail the run for it
            choice = f"unknown ({type(exc).__name__})"
        entry = (tuple(query.shape), tuple(key.shape), attn_mask is not None, choice)
        calls[entry] = calls.get(entry, 0) + 1
        return fn(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                  **kwargs)

    torch.nn.functional.scaled_dot_product_attention = probe
    try:
        yield calls
    finally:
        torch.nn.functional.scaled_dot_product_attention = fn


def time_forwards(model, inputs: dict, kinds, device: torch.device, *, warmup: int, reps: int,
                  first_warmup: Callable[[], contextlib.AbstractContextManager] | None = None) -> dict:
    """Time ``reps`` forwards of ``model(**inputs)`` after ``warmup`` untimed ones.

    ``first_warmup()`` gives a context manager entered around the first warm-up forward only (probes
    that must not be timed). Returns ``forward_ms`` (median forward), ``forwards_ms`` (all of them),
    ``block_ms`` (median block time per kind), ``peak_mem_bytes`` (CUDA: peak allocated during the timed
    forwards; else None).
    """
    clock = _Clock(device)
    timer = _BlockTimer(model, kinds, clock)
    totals = []
    try:
        with torch.no_grad():
            for i in range(warmup):
                with first_warmup() if (i == 0 and first_warmup) else contextlib.nullcontext():
                    model(**inputs)
            clock.sync()
            if clock.cuda:
                torch.cuda.reset_peak_memory_stats(device)
            timer.enabled = True
            for _ in range(reps):
                start = clock.now()
                model(**inputs)
                totals.append((start, clock.now()))
            clock.sync()
        forwards = [clock.ms(a, b) for a, b in totals]
        blocks = timer.block_ms()
    finally:
        timer.remove()
    peak = torch.cuda.max_memory_allocated(device) if clock.cuda else None
    return {"forward_ms": statistics.median(forwards), "forwards_ms": forwards, "block_ms": blocks,
            "peak_mem_bytes": peak}


# ---------------------------------------------------------------------------------------------- scaling
def scaled_call_ms(forward_ms: float, block_ms: dict[str, float], built: dict[str, int], blocks: dict[str, int]) -> float:
    """One call of the real model: ``forward_ms + sum_kind (blocks[kind] - built[kind]) * block_ms[kind]``."""
    return forward_ms + sum((blocks[k] - built[k]) * block_ms[k] for k in blocks)


def _layer_kinds(blocks: dict[str, int]) -> list[str]:
    """The block kind of each global self-attention layer index (kinds in forward order)."""
    return [kind for kind, n in blocks.items() for _ in range(n)]


def generation_ms(overhead_ms: float, block_ms: dict[str, float], dense_block_ms: dict[str, float],
                  blocks: dict[str, int], schedule, num_steps: int, calls_per_step: int) -> tuple[float, int]:
    """``(gen_ms, dense layer-steps)``: the transformer time of a ``num_steps`` generation with a method
    whose block times are ``block_ms`` under ``schedule`` (a (step, layer) it keeps dense costs
    ``dense_block_ms`` of the layer's kind), and how many of the ``num_steps * layers`` layer-steps run dense."""
    kinds = _layer_kinds(blocks)
    total, dense_count = 0.0, 0
    for step in range(num_steps):
        call = overhead_ms
        for layer, kind in enumerate(kinds):
            if schedule.is_dense(step, layer, num_steps, len(kinds)):
                call += dense_block_ms[kind]
                dense_count += 1
            else:
                call += block_ms[kind]
        total += calls_per_step * call
    return total, dense_count


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _weights(model, built: dict[str, int], blocks: dict[str, int]) -> dict:
    """Parameter bytes: of one block per kind, outside the blocks, and scaled to the real block counts."""
    per_block = {kind: _param_bytes(getattr(model, kind)[0]) for kind in built}
    outside = _param_bytes(model) - sum(per_block[k] * built[k] for k in built)
    return {"block_bytes": per_block, "outside_blocks_bytes": outside,
            "full_bytes": outside + sum(per_block[k] * blocks[k] for k in blocks),
            "full_params": sum(p.numel() for p in model.parameters()) + sum(
                sum(p.numel() for p in getattr(model, k)[0].parameters()) * (blocks[k] - built[k]) for k in blocks)}


def forward_flops(spec: ModelSpec, built: dict[str, int]) -> float:
    """Rough matmul FLOPs of one forward of the built model (2 x tokens x block parameters for the linear
    layers, 4 x S^2 x heads x head dim for each self-attention; outside the blocks ignored): used only to
    estimate how long a measurement will take."""
    cfg = spec.config
    width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    s = spec.self_attention_len()
    mlp = cfg.get("ffn_dim", width * 4)
    per_block_params = 4 * width * width + 2 * width * mlp + (4 * width * width if spec.family != "wan" else 2 * width * width)
    attention = 4.0 * s * s * width
    if spec.family == "wan":
        attention += 4.0 * s * spec.text_len * width
    return sum(n for n in built.values()) * (2.0 * s * per_block_params + attention)


# ---------------------------------------------------------------------------------------------- the run
class Budget:
    """Wall-clock budget of a run: what remains, and whether an estimated cost fits (with a reserve
    for writing the last records)."""

    def __init__(self, seconds: float, reserve_s: float = 5.0) -> None:
        self.deadline = time.monotonic() + seconds
        self.reserve_s = reserve_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, estimate_s: float) -> bool:
        return estimate_s <= self.remaining() - self.reserve_s


def method_preset(name: str, spec: ModelSpec, *, tiny: bool):
    """``<Method>.preset(spec.preset_model)``: the method's published setting for the checkpoint (its name in
    ``accel.pipelines.presets``, e.g. ``"wan2.1-t2v-14b"``), with :func:`tiny_overrides` when ``tiny``.

    Raises:
        ValueError: the method has no published setting for this checkpoint (Radial on FLUX images, Agent).
    """
    from accel.methods.agent import Agent
    from accel.methods.clear_local import ClearLocal
    from accel.methods.neighborhood import Neighborhood
    from accel.methods.radial import Radial
    from accel.methods.rectified import Rectified

    classes = {"Radial": Radial, "Neighborhood": Neighborhood, "Rectified": Rectified, "ClearLocal": ClearLocal,
               "Agent": Agent}
    return classes[name].preset(spec.preset_model, **(tiny_overrides(name, spec.family) if tiny else {}))


def _schedule_dict(schedule) -> dict:
    return dataclasses.asdict(schedule)


def _density(recorder) -> float | None:
    sparse = [r for r in recorder.records if r["kind"] == "sparse"]
    total = sum(r["seq_len"] ** 2 for r in sparse)
    return sum(r["pairs"] for r in sparse) / total if total else None


def _sdpa_list(calls: dict) -> list[dict]:
    return [{"query": list(q), "key": list(k), "mask": m, "backend": b, "calls": n} for (q, k, m, b), n in calls.items()]


def _measure(spec, model, inputs, built, device, *, method_name, preset, dense, warmup, reps,
             missing_weights_bytes: int) -> dict:
    """One measurement record (dense when ``preset`` is None); ``missing_weights_bytes``: the weights of the
    blocks the real model has and the built one has not (for the full model's peak-memory estimate)."""
    from accel.eval.recorder import DensityRecorder
    from accel.kernels import resolve_backend
    from accel.processors.apply import apply
    from accel.schedule import Schedule

    kinds = list(spec.blocks)
    sdpa: dict = {}
    rec = {"record": "measurement", "model": spec.name, "method": method_name}
    if preset is None:
        res = time_forwards(model, inputs, kinds, device, warmup=warmup, reps=reps,
                            first_warmup=lambda: _sdpa_probe(sdpa))
        rec.update(config="upstream diffusers attention (SDPA)", density=1.0)
    else:
        method = preset.method
        s = spec.self_attention_len()
        rec.update(config=repr(method), preset_source=preset.source, schedule=_schedule_dict(preset.schedule),
                   kernel_backend=resolve_backend(method.backend, device, s, s))
        recorder = DensityRecorder()

        @contextlib.contextmanager
        def probes():
            recorder.attach(handle)
            try:
                with _sdpa_probe(sdpa):
                    yield
            finally:
                recorder.detach()

        known = set(kernel_configs())
        with apply(model, method, schedule=Schedule()) as handle:
            res = time_forwards(model, inputs, kinds, device, warmup=warmup, reps=reps, first_warmup=probes)
        rec["density"] = _density(recorder)
        rec["kernel_configs_new"] = {k: v for k, v in kernel_configs().items() if k not in known}
    call_ms = scaled_call_ms(res["forward_ms"], res["block_ms"], built, spec.blocks)
    overhead = res["forward_ms"] - sum(built[k] * res["block_ms"][k] for k in kinds)
    rec.update(sdpa_calls=_sdpa_list(sdpa), forward_ms=res["forward_ms"], forwards_ms=res["forwards_ms"],
               block_ms=res["block_ms"], overhead_ms=overhead, call_ms=call_ms, step_ms=spec.calls_per_step * call_ms,
               peak_mem_bytes=res["peak_mem_bytes"],
               peak_mem_full_estimate_bytes=None if res["peak_mem_bytes"] is None
               else res["peak_mem_bytes"] + missing_weights_bytes)
    if preset is None:
        rec["gen_ms"] = spec.num_steps * spec.calls_per_step * call_ms
    elif dense is not None:
        gen, dense_ls = generation_ms(overhead, res["block_ms"], dense["block_ms"], spec.blocks, preset.schedule,
                                      spec.num_steps, spec.calls_per_step)
        layer_steps = spec.num_steps * sum(spec.blocks.values())
        rec.update(call_speedup=dense["call_ms"] / call_ms, gen_ms=gen, gen_speedup=dense["gen_ms"] / gen,
                   dense_layer_steps=dense_ls, layer_steps=layer_steps)
        if rec["density"] is not None:
            rec["density_with_schedule"] = (dense_ls + (layer_steps - dense_ls) * rec["density"]) / layer_steps
    return rec


def kernel_configs() -> dict[str, dict]:
    """The Triton kernel configurations resolved in this process so far, ``{key: {"config", "how"}}`` (how:
    forced / cached / tuned / default), from ``accel.kernels.triton_tuning`` where the kernel has it; ``{}``
    otherwise."""
    try:
        from accel.kernels.triton_tuning import chosen_configs
    except ImportError:
        return {}
    return {key: {"config": entry.get("config"), "how": entry.get("how")} for key, entry in chosen_configs().items()}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run(specs, *, device: torch.device, dtype: torch.dtype, budget: Budget, emit: Callable[[dict], None],
        warmup: int = 1, reps: int = 3, blocks_per_kind: int | None = None, methods=METHODS, tiny: bool = False,
        rate_flops: float | None = None, compile_allowance_s: float | None = None) -> bool:
    """Measure every model of ``specs`` (a list of :class:`ModelSpec`), dense then each method preset.

    Args:
        specs: the models, in measuring order.
        device: where to build and run them.
        dtype: parameter/activation dtype (modules kept in float32 excepted).
        budget: measurements whose estimated time does not fit are skipped (a ``skipped`` record).
        emit: called with every record as soon as it is made.
        warmup: untimed forwards per measurement (the first records the executed density and the SDPA
            backends); must be >= 1.
        reps: timed forwards per measurement, >= 1.
        blocks_per_kind: blocks built per kind (default each spec's ``built``).
        methods: which of :data:`METHODS` to measure.
        tiny: use the toy preset overrides (:func:`tiny_overrides`).
        rate_flops: assumed FLOP/s for estimating a model's first measurement (default 3e14 on CUDA,
            3e10 elsewhere).
        compile_allowance_s: seconds added to a method's estimate for kernel compilation and layout
            building (default 20 on CUDA, 2 elsewhere), until measurements show the largest such cost
            (a measurement's wall time minus its forwards), which is used from then on.

    Returns:
        True when every measurement was made (nothing failed, nothing skipped).
    """
    if warmup < 1 or reps < 1:
        raise ValueError(f"warmup and reps must be >= 1, got warmup={warmup!r}, reps={reps!r}")
    cuda = device.type == "cuda"
    rate = rate_flops or (3e14 if cuda else 3e10)
    allowance = compile_allowance_s if compile_allowance_s is not None else (20.0 if cuda else 2.0)
    seen_overheads: list[float] = []
    complete = True
    for spec in specs:
        built = spec.built_blocks(blocks_per_kind)
        forwards = warmup + reps
        est_forward_s = forward_flops(spec, built) / rate
        if not budget.fits(forwards * est_forward_s + allowance):
            emit({"record": "skipped", "model": spec.name, "method": "*", "reason": "time budget",
                  "estimate_s": forwards * est_forward_s + allowance, "remaining_s": budget.remaining()})
            complete = False
            continue
        t0 = time.monotonic()
        model = inputs = None
        try:
            model = build_model(spec, built, device, dtype)
            inputs = make_inputs(spec, device, dtype)
            weights = _weights(model, built, spec.blocks)
            emit({"record": "model", "model": spec.name, "family": spec.family, "title": spec.title,
                  "grid": list(spec.grid()), "text_len": spec.text_len, "self_attention_tokens": spec.self_attention_len(),
                  "blocks": spec.blocks, "built": built, "calls_per_step": spec.calls_per_step,
                  "num_steps": spec.num_steps, "dtype": str(dtype), **weights, "build_s": time.monotonic() - t0})
        except Exception as exc:  # noqa: BLE001 - one model's failure is recorded, the run goes on
            emit({"record": "model", "model": spec.name, "family": spec.family, "error": _error(exc)})
            complete = False
            model = inputs = None
            _free(device)
            continue
        dense = None
        for name in ("dense", *[m for m in METHODS if m in methods]):
            preset = None
            if name != "dense":
                try:
                    preset = method_preset(name, spec, tiny=tiny)
                except ValueError as exc:  # no preset for this family: not measured, not a failure
                    emit({"record": "measurement", "model": spec.name, "method": name, "no_preset": str(exc)})
                    continue
                except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                    emit({"record": "measurement", "model": spec.name, "method": name, "error": _error(exc)})
                    complete = False
                    continue
            if seen_overheads:
                allowance = max(seen_overheads)
            estimate = forwards * est_forward_s + (allowance if preset is not None else 0.0)
            if not budget.fits(estimate):
                emit({"record": "skipped", "model": spec.name, "method": name, "reason": "time budget",
                      "estimate_s": estimate, "remaining_s": budget.remaining()})
                complete = False
                continue
            t1 = time.monotonic()
            try:
                rec = _measure(spec, model, inputs, built, device, method_name=name, preset=preset, dense=dense,
                               warmup=warmup, reps=reps, missing_weights_bytes=sum(
                                   weights["block_bytes"][k] * (spec.blocks[k] - built[k]) for k in built))
            except Exception as exc:  # noqa: BLE001 - one method's failure is recorded, the run goes on
                rec = {"record": "measurement", "model": spec.name, "method": name, "error": _error(exc)}
                complete = False
            rec["wall_s"] = time.monotonic() - t1
            if preset is not None and "forwards_ms" in rec:
                seen_overheads.append(rec["wall_s"] - warmup * max(rec["forwards_ms"]) / 1e3 - sum(rec["forwards_ms"]) / 1e3)
            if name == "dense" and "error" not in rec:
                dense = rec
                # later estimates: this model's measured dense forward (sparse ones are not slower)
                est_forward_s = max(rec["forwards_ms"]) / 1e3
            emit(rec)
        del model, inputs
        _free(device)
    return complete


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- summary
def summarize(records: list[dict]) -> str:
    """A plain-text table of the measurements in ``records`` (works on a partial run's records)."""
    lines = []
    head = next((r for r in records if r.get("record") == "run"), {})
    env = head.get("environment", {})
    lines.append(f"transformer step speed: {env.get('gpu') or 'cpu'}, torch {env.get('torch')}, "
                 f"triton {env.get('triton')}, diffusers {env.get('diffusers')}, {head.get('dtype')}")
    lines.append(f"{'model':<20} {'method':<13} {'density':>7} {'call ms':>9} {'step ms':>9} {'x call':>6} "
                 f"{'x gen':>6} {'peak GiB':>8}  backend")
    for r in records:
        kind = r.get("record")
        if kind == "model" and "error" in r:
            lines.append(f"{r['model']:<20} MODEL FAILED: {r['error'][:150]}")
        elif kind == "skipped":
            lines.append(f"{r['model']:<20} {r['method']:<13} skipped ({r['reason']}: needs ~{r['estimate_s']:.0f} s, "
                         f"{r['remaining_s']:.0f} s left)")
        elif kind == "measurement" and "no_preset" in r:
            lines.append(f"{r['model']:<20} {r['method']:<13} not measured: {r['no_preset'][:100]}")
        elif kind == "measurement" and "error" in r:
            lines.append(f"{r['model']:<20} {r['method']:<13} FAILED: {r['error'][:150]}")
        elif kind == "measurement" and "call_ms" in r:
            backend = r.get("kernel_backend") or ",".join(sorted({c["backend"] for c in r.get("sdpa_calls", [])}))
            peak = r.get("peak_mem_bytes")
            dens = r.get("density")

            def fmt(value, spec):
                return format(value, spec) if value is not None else format("-", ">" + spec.split(".")[0])
            lines.append(f"{r['model']:<20} {r['method']:<13} {fmt(dens, '7.3f')} {r['call_ms']:9.1f} "
                         f"{r['step_ms']:9.1f} {fmt(r.get('call_speedup'), '6.2f')} {fmt(r.get('gen_speedup'), '6.2f')} "
                         f"{fmt(peak / 2**30 if peak else None, '8.1f')}  {backend}")
    end = next((r for r in records if r.get("record") == "end"), None)
    if end is None:
        lines.append("INCOMPLETE: no end record (the run was stopped before it finished)")
    elif not end.get("complete"):
        lines.append(f"INCOMPLETE: something failed or was skipped (run took {end.get('wall_s', 0):.0f} s)")
    else:
        lines.append(f"complete ({end.get('wall_s', 0):.0f} s)")
    lines.append("call = one transformer call scaled from the built blocks to the real block count; step = calls per "
                 "step x call; x gen = generation-equivalent speedup with the preset's dense schedule")
    return "\n".join(lines)


def read_records(path: Path) -> list[dict]:
    """The records of a JSON-lines file (a truncated last line, from a killed run, is ignored)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ---------------------------------------------------------------------------------------------- command line
def main(argv=None, *, bare_diffusers: bool = False) -> int:
    """``python benchmarks/gpu_models.py [--tiny] [--models ...] [--budget-s S] --out FILE.jsonl``.

    ``bare_diffusers``: import diffusers with its optional integrations hidden
    (:func:`~accel.eval.model_specs.import_diffusers`; the script does, so the GPU machine's peft and
    transformers never matter). Leave it False inside a process that imports diffusers' pipelines later:
    diffusers decides once, at import, which of them are available.

    Returns the exit status: 0 when every measurement was made, 2 when something failed or was skipped
    (the records say what); usage errors exit with 2 through argparse.
    """
    p = argparse.ArgumentParser(description="Transformer step time of the real model architectures, dense vs each "
                                "method's preset (random weights, a few blocks timed and scaled; JSON lines).")
    p.add_argument("--tiny", action="store_true", help="toy widths on the CPU: the same code path, for tests")
    p.add_argument("--models", nargs="+", default=None, help="model names (default: all, most important first)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to measure")
    p.add_argument("--budget-s", type=float, default=360.0,
                   help="wall-clock budget in seconds; what would not fit is skipped (default 360)")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards per measurement (default 1)")
    p.add_argument("--reps", type=int, default=3, help="timed forwards per measurement (default 3)")
    p.add_argument("--blocks", type=int, default=None, help="blocks built per kind (default: 2; tiny: 1-2)")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    p.add_argument("--out", type=Path, default=Path("bench-results/gpu_models.jsonl"), help="JSON-lines output")
    p.add_argument("--summarize", type=Path, default=None, metavar="JSONL",
                   help="only print the summary table of an existing output file")
    args = p.parse_args(argv)
    if args.summarize is not None:
        print(summarize(read_records(args.summarize)))
        return 0
    table = TINY_MODELS if args.tiny else FULL_MODELS
    names = args.models or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        p.error(f"unknown model(s) {unknown}; allowed: {', '.join(table)}")
    if args.warmup < 1 or args.reps < 1 or args.budget_s <= 0 or (args.blocks is not None and args.blocks < 1):
        p.error("--warmup, --reps and --blocks must be >= 1 and --budget-s > 0")
    if args.tiny:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        p.error("no CUDA device; use --tiny for the CPU run at toy sizes")
    budget = Budget(args.budget_s)
    start = time.monotonic()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    complete = False
    with args.out.open("w") as fh:
        def emit(record: dict) -> None:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            print(_line(record), flush=True)

        hidden = []
        try:
            if bare_diffusers:
                hidden = import_diffusers()
            else:
                import accel.processors  # noqa: F401 - diffusers and its models, as installed
        except Exception as exc:  # noqa: BLE001 - say so in the output file, not only on stderr
            emit({"record": "run", "error": f"diffusers could not be imported: {_error(exc)}"})
            emit({"record": "end", "complete": False, "wall_s": time.monotonic() - start})
            return 2
        from accel.eval.kernel_bench import environment

        dtype = getattr(torch, args.dtype)
        emit({"record": "run", "benchmark": "transformer step time (accel.eval.model_bench)", "environment": environment(),
              "device": str(device), "dtype": str(dtype), "tiny": args.tiny, "warmup": args.warmup, "reps": args.reps,
              "budget_s": args.budget_s, "models": names, "methods": args.methods,
              "optional_integrations_hidden": hidden,
              "scaling": ("a few blocks per kind built and timed; one call of the real model = measured forward + "
                          "(real - built blocks) x median block time of that kind"),
              "generation": ("gen_ms = calls_per_step x sum over num_steps steps of (overhead + per-layer block time), "
                             "a layer-step the preset's schedule keeps dense at the dense block time"),
              "units": {"*_ms": "milliseconds", "*_bytes": "bytes", "density": "executed (query, key) pairs / S^2"},
              "kernel_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("ACCEL_", "TRITON_"))}})
        try:
            complete = run([table[n] for n in names], device=device, dtype=dtype, budget=budget, emit=emit,
                           warmup=args.warmup, reps=args.reps, blocks_per_kind=args.blocks, methods=args.methods,
                           tiny=args.tiny)
        finally:
            emit({"record": "end", "complete": complete, "wall_s": time.monotonic() - start,
                  "kernel_configs": kernel_configs()})
    return 0 if complete else 2


def _line(r: dict) -> str:
    """One log line per record."""
    kind = r.get("record")
    if kind == "measurement" and "call_ms" in r:
        extra = f", x{r['call_speedup']:.2f} per call, x{r['gen_speedup']:.2f} generation" if "gen_speedup" in r else ""
        dens = f", density {r['density']:.3f}" if r.get("density") is not None else ""
        return f"  {r['model']} {r['method']}: call {r['call_ms']:.1f} ms{dens}{extra} ({r['wall_s']:.1f} s)"
    if kind == "model" and "error" not in r:
        return f"{r['model']}: built {r['built']} of {r['blocks']} in {r['build_s']:.1f} s"
    return f"  {json.dumps(r)[:300]}"

"""The GPU transformer-speed run (accel.eval.model_bench, benchmarks/gpu_models.py, benchmarks/gpu_run.sh) on
the CPU at toy widths: the same code path as on the GPU. Its records are checked against facts the test
derives itself: the published architectures (block counts, widths, parameter counts), the diffusers
pipelines' defaults (resolution, steps, classifier-free guidance), the block layouts the kernel calls
actually received, and the preset schedules' counts."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import accel
from accel.eval import model_bench, model_specs
from accel.eval.model_specs import FULL_MODELS, TINY_MODELS

ROOT = Path(__file__).resolve().parents[2]

# published block counts (dual-stream, single-stream) and hidden sizes of the real transformers:
# HunyuanVideo (arXiv 2412.03603: 20 dual + 40 single, 3072), Wan 2.1 (arXiv 2503.20314: 14B 40 layers of
# 5120, 1.3B 30 layers of 1536), FLUX.1-dev (19 double + 38 single blocks, 3072), and their sizes
PUBLISHED = {
    "hunyuan_video_720p": ({"transformer_blocks": 20, "single_transformer_blocks": 40}, 3072, 13e9),
    "wan14b_720p": ({"blocks": 40}, 5120, 14e9),
    "wan1.3b_480p": ({"blocks": 30}, 1536, 1.3e9),
    "flux_1024": ({"transformer_blocks": 19, "single_transformer_blocks": 38}, 3072, 12e9),
}
TINY_OF = {"hunyuan_video_tiny": "hunyuan_video_720p", "wan_tiny": "wan1.3b_480p", "flux_tiny": "flux_1024"}


def _pipeline_defaults(family):
    from diffusers import FluxPipeline, HunyuanVideoPipeline, WanPipeline

    cls = {"wan": WanPipeline, "hunyuan_video": HunyuanVideoPipeline, "flux": FluxPipeline}[family]
    return {k: p.default for k, p in inspect.signature(cls.__call__).parameters.items()}


def _published(method, spec):
    """``accel.<method>.preset`` for the toy model's checkpoint name; None when the method has none for it."""
    try:
        return getattr(accel, method).preset(spec.preset_model)
    except ValueError:
        return None


def _latent(frames, height, width):
    """The VAE latent of these three models: 4x temporal (first frame alone), 8x spatial compression."""
    return ((frames - 1) // 4 + 1, height // 8, width // 8)


@pytest.mark.parametrize("name", list(FULL_MODELS))
def test_full_models_are_the_published_architectures(name):
    spec = FULL_MODELS[name]
    blocks, hidden, params = PUBLISHED[name]
    assert spec.blocks == blocks
    assert spec.config["num_attention_heads"] * spec.config["attention_head_dim"] == hidden
    model = model_specs.build_model(spec, spec.blocks, "meta", torch.bfloat16)
    # created on the target device itself (the GPU run never initialises 13B parameters on the CPU)
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / params - 1) < 0.1, f"{name}: {n / 1e9:.2f}B parameters, published {params / 1e9}B"
    # the checkpoint the methods' presets are asked for, at the resolution accel's presets use for it
    from accel.pipelines.presets import PRESETS

    ckpt = PRESETS[spec.preset_model]
    assert ckpt.family == spec.family
    if spec.family == "flux":
        assert spec.size == (ckpt.height, ckpt.width)
    else:
        assert spec.size == _latent(ckpt.num_frames, ckpt.height, ckpt.width)
    # resolution, text length, steps and transformer calls per step: the diffusers pipeline's defaults
    d = _pipeline_defaults(spec.family)
    assert spec.num_steps == d["num_inference_steps"]
    assert spec.text_len == d["max_sequence_length"]
    cfg_calls = 2 if spec.family == "wan" and d["guidance_scale"] > 1 else 1  # true CFG off by default elsewhere
    if spec.family != "wan":
        assert d["true_cfg_scale"] <= 1
    assert spec.calls_per_step == cfg_calls
    if name == "hunyuan_video_720p":
        assert spec.size == _latent(d["num_frames"], d["height"], d["width"]) == (33, 90, 160)
        assert spec.self_attention_len() == 33 * 45 * 80 + 256 == 119_056
    elif name == "wan1.3b_480p":
        assert spec.size == _latent(d["num_frames"], d["height"], d["width"])
        assert spec.self_attention_len() == 21 * 30 * 52 == 32_760
    elif name == "wan14b_720p":
        assert spec.size == _latent(81, 720, 1280)
        assert spec.self_attention_len() == 21 * 45 * 80 == 75_600
    else:
        assert spec.self_attention_len() == (1024 // 16) ** 2 + 512 == 4_608


def _visited_pairs(layout) -> float:
    """(query, key) pairs inside the blocks a kernel call visits, averaged over the layout's batch and
    heads, counted from its raw index tensors (each visited block counts its in-bounds rows x columns)."""
    fi, fc, pi, pc = (t.cpu() for t in (layout.full_idx, layout.full_cnt, layout.part_idx, layout.part_cnt))
    b, h, nq = fc.shape
    total = 0
    for bi in range(b):
        for hi in range(h):
            for qb in range(nq):
                rows = min(layout.q_block, layout.q_len - qb * layout.q_block)
                kbs = set(fi[bi, hi, qb, :fc[bi, hi, qb]].tolist()) | set(pi[bi, hi, qb, :pc[bi, hi, qb]].tolist())
                total += sum(rows * min(layout.kv_block, layout.kv_len - kb * layout.kv_block) for kb in kbs)
    return total / (b * h)


#: planted block times (ms): every block of a kind costs COST_MS[kind] with upstream attention and
#: COST_MS[kind] * SPEED[method][kind] with a method installed; nothing else moves the run's clock
COST_MS = {"blocks": 10.0, "transformer_blocks": 12.0, "single_transformer_blocks": 5.0}
SPEED = {"Radial": {"blocks": 0.5, "transformer_blocks": 0.4, "single_transformer_blocks": 0.8},
         "Neighborhood": {"blocks": 0.25, "transformer_blocks": 0.3, "single_transformer_blocks": 0.6},
         "Rectified": {"blocks": 0.6, "transformer_blocks": 0.5, "single_transformer_blocks": 0.9},
         "ClearLocal": {"blocks": 0.3, "transformer_blocks": 0.35, "single_transformer_blocks": 0.7},
         "Agent": {"blocks": 0.7, "transformer_blocks": 0.45, "single_transformer_blocks": 0.95}}


def _block_method(block) -> str:
    """The accel method running in a transformer block ("dense": upstream attention)."""
    for module in block.modules():
        method = getattr(getattr(module, "processor", None), "method", None)
        if method is not None:
            return type(method).__name__
    return "dense"


@pytest.fixture(scope="module")
def tiny_run():
    """All toy models, all methods, 2 blocks of each kind, 1 warm-up + 2 timed forwards; with the
    (query, key) pairs of every kernel call that ran between two records. The run's clock is a fake one
    that only the blocks move, by the planted COST_MS x SPEED, so its figures can be checked against them."""
    import accel.kernels.attention as attention
    pairs, records, since = [0.0], [], {}
    original = attention.reference_attention
    now = [0.0]

    def counting(q, k, v, layout, scale, return_lse):
        pairs[0] += _visited_pairs(layout)
        return original(q, k, v, layout, scale, return_lse)

    def emit(record):
        since[id(record)] = pairs[0]
        pairs[0] = 0.0
        records.append(record)

    def build_with_planted_times(spec, built, device, dtype):
        model = model_specs.build_model(spec, built, device, dtype)
        for kind in built:
            for block in getattr(model, kind):
                def advance(module, *_, kind=kind):  # a post hook registered before the run's block timer's
                    method = _block_method(module)
                    now[0] += COST_MS[kind] * (1.0 if method == "dense" else SPEED[method][kind]) / 1e3
                block.register_forward_hook(advance)
        return model

    patch = pytest.MonkeyPatch()
    patch.setattr(attention, "reference_attention", counting)
    patch.setattr(model_bench, "build_model", build_with_planted_times)
    patch.setattr(model_bench._Clock, "now", lambda self: now[0])
    try:
        complete = model_bench.run(list(TINY_MODELS.values()), device=torch.device("cpu"), dtype=torch.bfloat16,
                                   budget=model_bench.Budget(3600), emit=emit, warmup=1, reps=2, blocks_per_kind=2,
                                   tiny=True)
    finally:
        patch.undo()
    return complete, records, {id(r): since[id(r)] for r in records}


def _measurements(records, model):
    return {r["method"]: r for r in records if r["record"] == "measurement" and r["model"] == model}


def test_tiny_run_measures_every_model_and_preset(tiny_run):
    complete, records, _ = tiny_run
    assert complete
    assert [r["model"] for r in records if r["record"] == "model"] == list(TINY_MODELS)
    for name, spec in TINY_MODELS.items():
        got = _measurements(records, name)
        expected = ["dense"]
        for method in model_bench.METHODS:
            if _published(method, spec) is not None:
                expected.append(method)
            else:  # Radial has no FLUX preset
                assert "no_preset" in got[method]
        assert [m for m in got if "no_preset" not in got[m]] == expected
        for m in expected:
            assert "error" not in got[m], got[m]


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_call_time_is_scaled_to_the_published_block_count(tiny_run, name):
    _, records, _ = tiny_run
    blocks = PUBLISHED[TINY_OF[name]][0]
    d = _pipeline_defaults(TINY_MODELS[name].family)
    calls = 2 if TINY_MODELS[name].family == "wan" and d["guidance_scale"] > 1 else 1
    for rec in _measurements(records, name).values():
        if "call_ms" not in rec:
            continue
        want = rec["forward_ms"] + sum((n - 2) * rec["block_ms"][kind] for kind, n in blocks.items())
        assert rec["call_ms"] == pytest.approx(want, rel=1e-12)
        assert rec["step_ms"] == pytest.approx(calls * want, rel=1e-12)


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_generation_speedup_from_the_preset_schedule(tiny_run, name):
    """Against the planted block times (not the record's own fields): a call of the real model costs its
    published block counts times the planted per-block times; a generation keeps the preset schedule's
    layer-steps dense (the first dense_steps and last dense_last_steps steps whole, the first dense_layers
    layers of every other step)."""
    _, records, _ = tiny_run
    spec = TINY_MODELS[name]
    blocks = PUBLISHED[TINY_OF[name]][0]
    kinds = [kind for kind, n in blocks.items() for _ in range(n)]
    steps = _pipeline_defaults(spec.family)["num_inference_steps"]
    got = _measurements(records, name)
    dense = got["dense"]
    dense_call = sum(n * COST_MS[k] for k, n in blocks.items())
    assert dense["call_ms"] == pytest.approx(dense_call, rel=1e-9)
    assert dense["block_ms"] == pytest.approx({k: COST_MS[k] for k in blocks}, rel=1e-9)
    checked = 0
    for method, rec in got.items():
        if method == "dense" or "call_ms" not in rec:
            continue
        sched = _published(method, spec).schedule
        ds, dl, dlast = sched.dense_steps, sched.dense_layers, sched.dense_last_steps
        dl_last = sched.dense_last_layers  # the last layers (Rectified's FLUX warm-up)
        assert all(isinstance(x, int) for x in (ds, dl, dlast, dl_last)), "presets give counts"
        sparse_cost = {k: COST_MS[k] * SPEED[method][k] for k in blocks}
        call = sum(n * sparse_cost[k] for k, n in blocks.items())
        assert rec["call_ms"] == pytest.approx(call, rel=1e-9)
        assert rec["call_speedup"] == pytest.approx(dense_call / call, rel=1e-9)
        dense_steps = min(steps, ds + dlast)
        dense_layer = [i < dl or i >= len(kinds) - dl_last for i in range(len(kinds))]
        mixed = sum(COST_MS[k] if dense_layer[i] else sparse_cost[k] for i, k in enumerate(kinds))
        gen = dense_steps * dense_call + (steps - dense_steps) * mixed
        assert rec["gen_speedup"] == pytest.approx(steps * dense_call / gen, rel=1e-9)
        assert rec["dense_layer_steps"] == dense_steps * len(kinds) + (steps - dense_steps) * sum(dense_layer)
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_density_is_what_the_kernel_calls_visited(tiny_run, name):
    _, records, pairs_between = tiny_run
    spec = TINY_MODELS[name]
    t, h, w = spec.size[-3:] if spec.family != "flux" else (1, *spec.size)
    if spec.family == "flux":
        tokens = (h // 16) * (w // 16) + spec.text_len
    elif spec.family == "wan":
        tokens = t * (h // 2) * (w // 2)  # patch (1, 2, 2); self-attention has no text
    else:
        tokens = t * h * w + spec.text_len  # patch 1; text joins the sequence
    layers = sum(min(2, n) for n in spec.blocks.values())  # self-attention calls per built forward
    forwards = 1 + 2
    got = _measurements(records, name)
    assert got["dense"]["density"] == 1.0
    for method, rec in got.items():
        if method == "dense" or "call_ms" not in rec:
            continue
        executed = pairs_between[id(rec)] / (forwards * layers * tokens ** 2)
        assert 0 < executed < 1
        assert rec["density"] == pytest.approx(executed, rel=1e-9), method


def test_weights_scaled_to_the_full_block_count(tiny_run):
    _, records, _ = tiny_run
    for rec in (r for r in records if r["record"] == "model"):
        spec = TINY_MODELS[rec["model"]]
        full = model_specs.build_model(spec, PUBLISHED[TINY_OF[spec.name]][0], "cpu", torch.bfloat16)
        assert rec["full_params"] == sum(p.numel() for p in full.parameters())
        assert rec["full_bytes"] == sum(p.numel() * p.element_size() for p in full.parameters())


def test_dense_records_the_sdpa_backend(tiny_run):
    _, records, _ = tiny_run
    for name in TINY_MODELS:
        dense = _measurements(records, name)["dense"]
        assert dense["sdpa_calls"] and all(c["backend"] != "unknown" for c in dense["sdpa_calls"])
    # HunyuanVideo's self-attention carries the text padding mask into SDPA
    hv = _measurements(records, "hunyuan_video_tiny")["dense"]["sdpa_calls"]
    assert any(c["mask"] and c["query"][2] == 4 * 8 * 8 + 8 for c in hv)


def test_keeps_the_float32_modules_diffusers_keeps():
    spec = TINY_MODELS["wan_tiny"]
    model = model_specs.build_model(spec, {"blocks": 1}, "cpu", torch.bfloat16)
    keep = set(type(model)._keep_in_fp32_modules)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    assert any(keep.intersection(name.split(".")) for name, _ in tensors)
    for name, t in tensors:
        want = torch.float32 if keep.intersection(name.split(".")) else torch.bfloat16
        assert t.dtype == want, name


def test_budget_skips_instead_of_overrunning_and_says_so(tmp_path):
    out = tmp_path / "m.jsonl"
    assert model_bench.main(["--tiny", "--models", "wan_tiny", "--budget-s", "0.001", "--out", str(out)]) == 2
    records = model_bench.read_records(out)
    assert [r["record"] for r in records] == ["run", "skipped", "end"]
    assert records[-1]["complete"] is False
    assert "INCOMPLETE" in model_bench.summarize(records)
    assert "INCOMPLETE: no end record" in model_bench.summarize(records[:-1])  # a killed run


def test_a_failing_model_is_recorded_and_the_run_goes_on(monkeypatch):
    real = model_bench.build_model

    def broken(spec, *args, **kwargs):
        if spec.family == "hunyuan_video":
            raise RuntimeError("CUDA out of memory (planted)")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(model_bench, "build_model", broken)
    records = []
    complete = model_bench.run([TINY_MODELS["hunyuan_video_tiny"], TINY_MODELS["flux_tiny"]], device=torch.device("cpu"),
                               dtype=torch.float32, budget=model_bench.Budget(600), emit=records.append, warmup=1,
                               reps=1, methods=("ClearLocal",), tiny=True)
    assert not complete
    assert records[0] == {"record": "model", "model": "hunyuan_video_tiny", "family": "hunyuan_video",
                          "error": "RuntimeError: CUDA out of memory (planted)"}
    flux = _measurements(records, "flux_tiny")
    assert set(flux) == {"dense", "ClearLocal"} and all("call_ms" in r for r in flux.values())
    assert "MODEL FAILED" in model_bench.summarize(records)


def test_gpu_run_script_on_cpu(tmp_path):
    """The one GPU-loan command, in its CPU mode: no wheels to install, no kernel check, toy models; what
    comes back in OUT fits the device tool's limit of 8 files."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PY": sys.executable, "GPU_WHEELS": str(tmp_path / "none")}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh"), "--tiny", "--models", "wan_tiny",
                           "--methods", "Radial"], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8
    records = [json.loads(x) for x in (tmp_path / "out" / "models.jsonl").read_text().splitlines()]
    assert records[-1] == {**records[-1], "record": "end", "complete": True}
    # the script imports diffusers without peft / transformers / accelerate (which the GPU machine's
    # image carries in versions nobody tested with the carried diffusers)
    assert records[0]["optional_integrations_hidden"] == ["peft", "transformers", "accelerate"]
    # the model run's kernel tuning is bounded per key and shares the kernel check's cache in OUT
    env_seen = records[0]["kernel_env"]
    assert env_seen["ACCEL_TRITON_TUNE_BUDGET_S"] == "8"
    assert env_seen["ACCEL_TUNING_CACHE"] == str(tmp_path / "out" / "triton_tuning.json")
    assert isinstance(records[-1]["kernel_configs"], dict)
    assert {(r["model"], r["method"]) for r in records if r["record"] == "measurement"} == {
        ("wan_tiny", "dense"), ("wan_tiny", "Radial")}
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "wan_tiny" in summary and "Radial" in summary
    if (ROOT / "benchmarks" / "gpu_check.py").exists():  # the kernel check, in its own --tiny mode
        assert "kernel check: passed, status: ok" in summary
        assert json.loads((tmp_path / "out" / "kernel_check" / "gpu_check.json").read_text())["status"] == "ok"
    else:
        assert "kernel check: not run (--tiny" in summary
    assert summary.strip().splitlines()[-1] in proc.stdout


def test_gpu_run_script_reports_a_failed_kernel_check(tmp_path):
    """A kernel check that fails (exit 1) makes the run fail and says the figures are not publishable."""
    check = tmp_path / "check.py"
    check.write_text("import sys\nprint('planted correctness failure')\nsys.exit(1)\n")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PY": sys.executable, "GPU_WHEELS": str(tmp_path / "none"),
           "GPU_CHECK_PY": str(check), "MODELS_S": "0"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh"), "--tiny"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode != 0
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "kernel check: FAILED (exit 1): the model figures below are not publishable" in summary
    assert "models: SKIPPED" in summary
    assert "planted correctness failure" in (tmp_path / "out" / "run.log").read_text()

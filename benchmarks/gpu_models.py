"""Transformer-forward speedup per method on full-size random-weight video/image transformers (one GPU).

Speed does not depend on the weights, so every model is built with random weights, directly on the
GPU (``with torch.device("cuda")``; nothing of the size of a 13B model is ever initialised on the
CPU), in bfloat16. To fit the whole run in under 8 minutes, each model is built with only **one block
of each kind** (Wan: 1 block; HunyuanVideo/FLUX: 1 dual-stream + 1 single-stream block) at the real
width, and the full forward time is **estimated** as::

    t_full = t_measured + sum over block kinds of (N_kind - 1) * t_block_kind

where ``t_block_kind`` is the time of that kind's block measured inside the same forward (CUDA events
around each block) and ``N_kind`` the real block count (recorded in the JSON as ``blocks``). Dense =
upstream diffusers attention (SDPA); each method is installed with ``accel.apply`` at its published /
documented preset, with every step and layer sparse (``Schedule()``), and the JSON also gives the
whole-generation estimate with the preset's dense steps:
``gen_speedup = 1 / (f_dense + (1 - f_dense) / speedup)`` for ``f_dense = dense_steps / 50``.

Models (latent token grids after patchify): HunyuanVideo 720p 129 frames (33 x 45 x 80, +256 text),
Wan 2.1 14B and 1.3B at 720p and 480p 81 frames (21 x 45 x 80, 21 x 30 x 52), FLUX.1 at 1024^2 and
2048^2 (64 x 64 and 128 x 128, +512 text). Then the CUDA kernel benchmark
(:mod:`accel.eval.kernel_bench`). ``--tiny`` runs the same code path at toy sizes on the CPU (tests).

Needs torch, triton and diffusers on the machine. Usage::

    python3 benchmarks/gpu_models.py --out $OUT/gpu_models.json          # GPU, < 8 minutes
    python3 benchmarks/gpu_models.py --tiny --out /tmp/gpu_models.json   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (family, config kwargs, full block counts {kind: N}, latent shape / image size, text length)
_FULL = {
    "hunyuan_video_720p": ("hunyuan_video", dict(
        in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=1,
        num_single_layers=1, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1, qk_norm="rms_norm",
        guidance_embeds=True, text_embed_dim=4096, pooled_projection_dim=768, rope_theta=256.0,
        rope_axes_dim=(16, 56, 56)), {"transformer_blocks": 20, "single_transformer_blocks": 40}, (33, 90, 160), 256),
    "wan14b_720p": ("wan", dict(
        patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6), {"blocks": 40}, (21, 90, 160), 512),
    "wan14b_480p": ("wan", "wan14b_720p", {"blocks": 40}, (21, 60, 104), 512),
    "wan1.3b_720p": ("wan", dict(
        patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
        text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6), {"blocks": 30}, (21, 90, 160), 512),
    "wan1.3b_480p": ("wan", "wan1.3b_720p", {"blocks": 30}, (21, 60, 104), 512),
    "flux_1024": ("flux", dict(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(16, 56, 56)), {"transformer_blocks": 19, "single_transformer_blocks": 38}, (1024, 1024), 512),
    "flux_2048": ("flux", "flux_1024", {"transformer_blocks": 19, "single_transformer_blocks": 38}, (2048, 2048), 512),
}
_TINY = {
    "hunyuan_video_tiny": ("hunyuan_video", dict(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=16, num_layers=1, num_single_layers=1,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
        pooled_projection_dim=8, rope_axes_dim=(4, 6, 6)), {"transformer_blocks": 20, "single_transformer_blocks": 40},
        (3, 8, 8), 8),
    "wan_tiny": ("wan", dict(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=1, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32), {"blocks": 30}, (3, 12, 12), 8),
    "flux_tiny": ("flux", dict(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
        {"transformer_blocks": 19, "single_transformer_blocks": 38}, (96, 96), 8),
}
_PRESET_MODEL = {"hunyuan_video": "hunyuan_video", "wan": "wan", "flux": "flux"}


def _config(table, name):
    family, cfg, blocks, size, text = table[name]
    if isinstance(cfg, str):
        cfg = table[cfg][1]
    return family, dict(cfg), blocks, size, text


def build_model(family: str, cfg: dict, device: torch.device, dtype: torch.dtype):
    """The transformer with random weights, initialised on ``device`` (never on the CPU for a GPU run)."""
    from diffusers import FluxTransformer2DModel, HunyuanVideoTransformer3DModel, WanTransformer3DModel

    cls = {"wan": WanTransformer3DModel, "hunyuan_video": HunyuanVideoTransformer3DModel,
           "flux": FluxTransformer2DModel}[family]
    with torch.device(device):
        model = cls(**cfg)
    return model.to(dtype).eval()


def make_inputs(family: str, cfg: dict, size, text_len: int, device, dtype) -> dict:
    """Random forward arguments of one transformer call at ``size`` (latent T, H, W or image H, W)."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    t = torch.tensor([500.0], device=device)
    if family == "wan":
        return dict(hidden_states=rnd(1, cfg["in_channels"], *size), timestep=t,
                    encoder_hidden_states=rnd(1, text_len, cfg["text_dim"]), return_dict=False)
    if family == "hunyuan_video":
        mask = torch.ones(1, text_len, dtype=torch.bool, device=device)
        mask[:, text_len * 3 // 4:] = False  # some padding, as real prompts have
        return dict(hidden_states=rnd(1, cfg["in_channels"], *size), timestep=t,
                    encoder_hidden_states=rnd(1, text_len, cfg["text_embed_dim"]), encoder_attention_mask=mask,
                    pooled_projections=rnd(1, cfg["pooled_projection_dim"]),
                    guidance=torch.tensor([6016.0], device=device), return_dict=False)
    h, w = size[0] // 16, size[1] // 16  # VAE 8x, then 2x2 packing
    img_ids = torch.zeros(h, w, 3, device=device)
    img_ids[..., 1] = torch.arange(h, device=device)[:, None]
    img_ids[..., 2] = torch.arange(w, device=device)[None, :]
    return dict(hidden_states=rnd(1, h * w, cfg["in_channels"]), encoder_hidden_states=rnd(1, text_len, cfg[
        "joint_attention_dim"]), pooled_projections=rnd(1, cfg["pooled_projection_dim"]), timestep=t / 1000,
        img_ids=img_ids.reshape(-1, 3), txt_ids=torch.zeros(text_len, 3, device=device),
        guidance=torch.tensor([3.5], device=device), return_dict=False)


class BlockTimer:
    """Per-block wall times inside one forward: CUDA events on GPU, perf_counter on CPU."""

    def __init__(self, model, kinds) -> None:
        self.cuda = next(model.parameters()).is_cuda
        self.times: dict[str, list] = {k: [] for k in kinds}
        self._hooks = []
        for kind in kinds:
            for block in getattr(model, kind):
                self._hooks.append(block.register_forward_pre_hook(self._pre(kind)))
                self._hooks.append(block.register_forward_hook(self._post(kind)))
        self._start = {}

    def _now(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def _pre(self, kind):
        def hook(*_):
            self._start[kind] = self._now()
        return hook

    def _post(self, kind):
        def hook(*_):
            self.times[kind].append((self._start[kind], self._now()))
        return hook

    def reset(self):
        for k in self.times:
            self.times[k] = []

    def block_ms(self) -> dict[str, float]:
        """Mean time of one block of each kind (ms), over the recorded forwards."""
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for k, pairs in self.times.items():
            ms = [a.elapsed_time(b) if self.cuda else (b - a) * 1e3 for a, b in pairs]
            out[k] = sum(ms) / len(ms)
        return out

    def remove(self):
        for h in self._hooks:
            h.remove()


def time_forward(model, inputs, kinds, reps: int) -> dict:
    """Median forward time (ms) and mean block times of ``reps`` timed calls after one warm-up."""
    cuda = next(model.parameters()).is_cuda
    timer = BlockTimer(model, kinds)
    try:
        with torch.no_grad():
            model(**inputs)  # warm-up (kernel compilation, layout construction)
            timer.reset()
            totals = []
            for _ in range(reps):
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(**inputs)
                if cuda:
                    torch.cuda.synchronize()
                totals.append((time.perf_counter() - t0) * 1e3)
        blocks = timer.block_ms()
    finally:
        timer.remove()
    totals.sort()
    return {"measured_ms": totals[len(totals) // 2], "block_ms": blocks}


def full_estimate(measured_ms: float, block_ms: dict, blocks: dict) -> float:
    """``t_measured + sum_kind (N_kind - 1) * t_block_kind`` (one block of each kind was built)."""
    return measured_ms + sum((blocks[k] - 1) * block_ms[k] for k in blocks)


def preset_methods(family: str, tiny: bool):
    """``[(name, method, preset dense_steps)]``: each method at its preset for this family (Radial has none
    for FLUX; Rectified and Agent at their defaults)."""
    import accel

    out = []
    for cls in (accel.Radial, accel.ClearLocal, accel.Neighborhood):
        try:
            p = cls.preset(_PRESET_MODEL[family])
        except ValueError:
            continue
        m = p.method
        if tiny:  # toy grids: smaller blocks and windows that fit
            m = _tiny_variant(m)
        out.append((type(m).__name__, m, p.schedule.dense_steps))
    kw = dict(block_size=16, backend="reference") if tiny else {}
    out.append(("Rectified", accel.Rectified(**kw), 0))
    out.append(("Agent", accel.Agent(**kw), 0))
    return out


def _tiny_variant(m):
    import dataclasses

    changes = {"block_size": 16, "backend": "reference"}  # no FlexAttention compiles in a smoke run
    if hasattr(m, "window"):
        changes.update(window=2, stride=1)
    if hasattr(m, "radius"):
        changes.update(radius=3, radius_t=None)
    return dataclasses.replace(m, **changes)


def run_models(names, table, device, dtype, reps, deadline, log=print) -> list:
    import accel

    records = []
    for name in names:
        if time.time() > deadline:
            records.append({"model": name, "skipped": "time budget exhausted"})
            continue
        family, cfg, blocks, size, text_len = _config(table, name)
        t0 = time.time()
        model = build_model(family, cfg, device, dtype)
        inputs = make_inputs(family, cfg, size, text_len, device, dtype)
        kinds = list(blocks)
        dense = time_forward(model, inputs, kinds, reps)
        dense_full = full_estimate(dense["measured_ms"], dense["block_ms"], blocks)
        rec = {"model": name, "family": family, "size": list(size), "text_len": text_len, "blocks": blocks,
               "dense": {**dense, "full_ms": dense_full}, "methods": [], "init_and_dense_s": time.time() - t0}
        log(f"{name}: dense {dense_full:.1f} ms (estimated full forward)")
        for mname, method, dense_steps in preset_methods(family, device.type != "cuda"):
            if time.time() > deadline:
                rec["methods"].append({"method": mname, "skipped": "time budget exhausted"})
                continue
            try:
                with accel.apply(model, method, schedule=accel.Schedule()):
                    res = time_forward(model, inputs, kinds, reps)
            except Exception as exc:  # noqa: BLE001 - record and go on (one method must not sink the run)
                rec["methods"].append({"method": mname, "config": repr(method), "error": f"{type(exc).__name__}: {exc}"})
                log(f"  {mname}: failed: {exc}")
                continue
            full = full_estimate(res["measured_ms"], res["block_ms"], blocks)
            speedup = dense_full / full
            f_dense = dense_steps / 50
            entry = {"method": mname, "config": repr(method), **res, "full_ms": full, "speedup": speedup,
                     "preset_dense_steps_of_50": dense_steps,
                     "gen_speedup_with_preset_schedule": 1 / (f_dense + (1 - f_dense) / speedup)}
            rec["methods"].append(entry)
            log(f"  {mname}: {full:.1f} ms, x{speedup:.2f} per forward")
        records.append(rec)
        del model, inputs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return records


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (a smoke run of the same code)")
    p.add_argument("--models", nargs="+", default=None, help="subset of the model names")
    p.add_argument("--reps", type=int, default=None, help="timed forwards per configuration (default GPU 3, tiny 1)")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting new models/methods after this")
    p.add_argument("--no-kernels", action="store_true", help="skip the kernel benchmark")
    p.add_argument("--out", type=Path, default=Path("bench-results/gpu_models.json"))
    args = p.parse_args(argv)
    if args.tiny:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device, dtype, table = torch.device("cpu"), torch.float32, _TINY
    else:
        if not torch.cuda.is_available():
            p.error("no CUDA device; use --tiny for a CPU smoke run")
        device, dtype, table = torch.device("cuda"), torch.bfloat16, _FULL
    names = args.models or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        p.error(f"unknown model(s) {unknown}; allowed: {', '.join(table)}")
    from accel.eval.kernel_bench import environment, run_cpu, run_cuda

    start = time.time()
    deadline = start + args.budget_s
    reps = args.reps or (1 if args.tiny else 3)
    result = {
        "benchmark": "gpu_models",
        "method": ("random-weight transformers built with one block of each kind at full width; full forward time "
                   "= measured + (N_kind - 1) * block time of that kind (blocks measured with CUDA events inside the "
                   "same forward); median of reps; dense = upstream SDPA; methods at presets, every step sparse"),
        "units": {"*_ms": "milliseconds", "speedup": "dense full_ms / method full_ms"},
        "environment": environment(), "dtype": str(dtype), "tiny": args.tiny, "reps": reps,
        "models": run_models(names, table, device, dtype, reps, deadline),
    }
    if not args.no_kernels:
        if args.tiny:
            result["kernels"] = run_cpu([512], [32], [0.25], heads=2, block=64, reps=1)
        elif time.time() < start + args.budget_s + 30:
            result["kernels"] = run_cuda([32768, 118800], [0.1, 0.2, 0.3, 1.0])
    result["wall_s"] = time.time() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

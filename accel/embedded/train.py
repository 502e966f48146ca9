"""Train the embedded text-to-video model from scratch on procedural clips (CPU is enough).

Run ``python -m accel.embedded.train`` (``--help`` for options). Stages, each resumable from
checkpoints in ``--work``:

1. ``vae``: train the tiny :class:`~diffusers.AutoencoderKLWan` on 64x64 crops of whole 17-frame clips
   (L1 + L2 reconstruction, object pixels weighted 5x, a weak KL term).
2. ``latents``: render ``--clips`` training clips (17 x 128 x 128, the object's path anywhere in the
   frame: :func:`~accel.embedded.data.sample_spec`), encode each once to its posterior mean,
   and measure per-channel latent mean/std (stored in the VAE config as Wan does); record where the
   object is on the latent grid (:func:`object_mask`); encode every training caption (and the empty
   negative prompt) with the frozen text encoder.
3. ``transformer``: train the :class:`~diffusers.WanTransformer3DModel` by rectified-flow matching
   (``x_t = (1 - s) x_0 + s e``, target ``e - x_0``, timestep ``1000 s``, ``s`` shifted like the
   scheduler's ``flow_shift``), object cells optionally weighted ``1 + --object-weight`` in the loss
   (:func:`weighted_flow_loss`; default 2), with 10% caption dropout for classifier-free guidance; the
   first ``--crop-steps`` steps (default 4,000 of 6,500) train on short windows around the object
   (:func:`object_crops`), the rest on whole clips; the export holds an exponential moving average of
   the weights.
4. ``export``: write the complete pipeline (safetensors + json) to ``--out``; also done every
   ``--export-every`` transformer steps, so an interrupted run still leaves usable weights.

Progress is printed as plain lines (step, loss, seconds per step, estimated time left). The defaults
reproduce the packaged weights (86 min for the transformer on 2 CPU threads, ~30 min for the VAE).

Why the object may be anywhere: Wan's transformer has no absolute position embedding (3D RoPE in
self-attention only, a stride = kernel patch convolution), so from pure noise it is translation
equivariant up to weak edge effects and cannot learn a fixed place in the frame. Training it on paths
centred in the frame (tried: jitter of 12% and 4% of the frame) made it paint the prompt's colour over
the whole frame under guidance (750 steps: colour 7/10, direction 0/10 held-out prompts); the data has
to be (nearly) translation invariant like the model, and one object must win by symmetry breaking.

Where the shipped weights still fail (``benchmarks/embedded_motion_probe.py``): started from a real clip
noised to sigma 0.95 they keep its direction (8/8 clips), from pure noise the direction is at chance; the
motion is lost in the first sampling steps (sigma 1 -> 0.95), where the model has to pick one trajectory.
The direction word is read, weakly (``benchmarks/embedded_caption_probe.py``: at sigma 0.97 a wrong direction
raises the error on the object's cells by 9%, a wrong colour by 167%); using the caption with the opposite
direction as the negative prompt (guidance 3 and 6, 24 training captions) read the direction for 42% / 46%
of them (chance 25%) but lost colour (83% / 71%; ``benchmarks/results/embedded_training_captions.json``).
Slower paths (0.20-0.30 of the frame instead of 0.35-0.50, so that a static matched filter
covers the whole path: 3D RoPE scores add a function of the frame offset to one of the spatial offset, so
one head cannot follow a diagonal through space-time) trained with these defaults gave colour 98%,
direction 22% on the held-out prompts and 8% on 24 training captions, with clips no cleaner: not adopted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import model as emb
from .data import object_track, render_clip, sample_spec, training_captions

STAGES = ("vae", "latents", "transformer", "export")
CLIP_FRAMES = 17
CLIP_SIZE = 128


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _to_model_range(frames: np.ndarray) -> torch.Tensor:
    """[F, H, W, 3] in [0, 1] -> [3, F, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).mul(2.0).sub(1.0)


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.1) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


# --------------------------------------------------------------------------------------------- stages


def train_vae(pipe, work: Path, *, steps: int, batch: int, seed: int, lr: float, log_every: int) -> None:
    """Stage 1: train ``pipe.vae`` in place (resuming from ``work/vae.pt``)."""
    vae = pipe.vae
    ckpt_path = work / "vae.pt"
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    start = 0
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location=_device_of(vae))
        vae.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start = ckpt["step"]
        _log(f"vae: resumed at step {start}")
    if start >= steps:
        return
    vae.train()
    rng = np.random.default_rng([seed, 11, start])
    # Whole 17-frame clips in time: the causal caches carry state from chunk to chunk, and a VAE trained
    # on shorter windows (5 or 9 frames were tried) breaks down on the chunks after them.
    crop, frames = 64, CLIP_FRAMES
    t0, ema = time.time(), None
    for step in range(start, steps):
        clips = []
        for j in range(batch):
            spec = sample_spec(seed + 1, step * batch + j, exclude_held_out=False)
            full = render_clip(spec, num_frames=CLIP_FRAMES, height=CLIP_SIZE, width=CLIP_SIZE)
            f0 = int(rng.integers(0, CLIP_FRAMES - frames + 1))
            if rng.random() < 0.8:
                # Most crops are centred (with jitter) on the object: it covers ~5% of a full frame and
                # would otherwise be nearly absent from the loss.
                cx, cy = object_track(spec, CLIP_FRAMES)[f0 + frames // 2]
                x0 = int(np.clip(cx - crop / 2 + rng.integers(-16, 17), 0, CLIP_SIZE - crop))
                y0 = int(np.clip(cy - crop / 2 + rng.integers(-16, 17), 0, CLIP_SIZE - crop))
            else:
                y0, x0 = (int(v) for v in rng.integers(0, CLIP_SIZE - crop + 1, size=2))
            clips.append(_to_model_range(full[f0:f0 + frames, y0:y0 + crop, x0:x0 + crop]))
        x = torch.stack(clips).to(_device_of(vae))
        # Object pixels (saturated) weigh 5x in the reconstruction loss.
        weight = 1.0 + 4.0 * ((x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) > 0.5).float()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=20)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        err = recon - x
        rec = (weight * (err.abs() + err.square())).mean() / weight.mean()
        kl = 0.5 * (posterior.mean.square() + posterior.var - 1.0 - posterior.logvar).mean()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        ema = rec.item() if ema is None else 0.95 * ema + 0.05 * rec.item()
        done = step + 1
        if done % log_every == 0 or done == steps:
            per = (time.time() - t0) / (done - start)
            _log(f"vae step {done}/{steps} recon {ema:.4f} kl {kl.item():.3f} {per:.2f}s/step "
                 f"eta {per * (steps - done) / 60:.1f} min")
        if done % 100 == 0 or done == steps:
            _save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": done}, ckpt_path)
    vae.eval()


def object_mask(frames: np.ndarray) -> torch.Tensor:
    """Where the object of one rendered clip is, on the latent grid.

    Args:
        frames: ``[17, 128, 128, 3]`` in ``[0, 1]`` as :func:`~accel.embedded.data.render_clip`
            returns it (grey background, saturated object).

    Returns:
        bool ``[9, 32, 32]``: latent cell ``(t, y, x)`` is true if any pixel it encodes (frame 0 for
        ``t = 0``, frames ``2t - 1`` and ``2t`` after it, as the causal VAE groups them; the 4x4 pixel
        block), or a neighbouring cell's, shows the object. Backgrounds are grey, so a pixel is object when
        its channels differ by more than 0.1.
    """
    spatial = emb.VAE_CONFIG["scale_factor_spatial"]
    obj = torch.from_numpy((frames.max(-1) - frames.min(-1)) > 0.1).float()  # [F, H, W]
    groups = [obj[:1]] + [obj[2 * t - 1:2 * t + 1] for t in range(1, (CLIP_FRAMES - 1) // 2 + 1)]
    per_latent = torch.stack([g.amax(0) for g in groups])  # [T, H, W]
    cells = torch.nn.functional.max_pool2d(per_latent[:, None], spatial)  # [T, 1, H/4, W/4]
    return torch.nn.functional.max_pool2d(cells, 3, stride=1, padding=1)[:, 0] > 0


def object_masks(seed: int, clips: int) -> torch.Tensor:
    """:func:`object_mask` of training clips ``0 .. clips - 1`` of dataset ``seed``, ``[clips, 9, 32, 32]``.

    Renders the clips again; for datasets encoded before the latents stage stored the masks itself.
    """
    return torch.stack([object_mask(render_clip(sample_spec(seed, i), num_frames=CLIP_FRAMES, height=CLIP_SIZE,
                                                width=CLIP_SIZE)) for i in range(clips)])


@torch.no_grad()
def encode_dataset(pipe, work: Path, *, clips: int, seed: int, chunk: int = 8) -> None:
    """Stage 2: encode ``clips`` training clips and all captions; writes ``work/latents_*.pt``."""
    vae = pipe.vae.eval()
    parts = work / "latent_parts"
    parts.mkdir(exist_ok=True)
    t0, done_now = time.time(), 0
    for first in range(0, clips, chunk):
        part = parts / f"{first:06d}.pt"
        if part.exists():
            continue
        idx = list(range(first, min(clips, first + chunk)))
        specs = [sample_spec(seed, i) for i in idx]
        frames = [render_clip(s, num_frames=CLIP_FRAMES, height=CLIP_SIZE, width=CLIP_SIZE) for s in specs]
        x = torch.stack([_to_model_range(f) for f in frames])
        z = vae.encode(x.to(_device_of(vae))).latent_dist.mode().cpu()
        _save_atomic({"latents": z.half(), "captions": [s.caption for s in specs],
                      "masks": torch.stack([object_mask(f) for f in frames])}, part)
        done_now += len(idx)
        per = (time.time() - t0) / done_now
        _log(f"latents {first + len(idx)}/{clips} {per:.2f}s/clip eta {per * (clips - first - len(idx)) / 60:.1f} min")
    files = sorted(parts.glob("*.pt"))
    data = [torch.load(f) for f in files]
    latents = torch.cat([d["latents"] for d in data])[:clips]
    captions = [c for d in data for c in d["captions"]][:clips]
    z = latents.float()
    mean = z.mean(dim=(0, 2, 3, 4))
    std = z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3)
    vae.register_to_config(latents_mean=[round(float(v), 5) for v in mean],
                           latents_std=[round(float(v), 5) for v in std])
    texts = sorted(set(training_captions()) | set(captions) | {""})
    embeds = {}
    for i in range(0, len(texts), 64):
        batch = texts[i:i + 64]
        pe, _ = pipe.encode_prompt(batch, do_classifier_free_guidance=False,
                                   max_sequence_length=emb.MAX_SEQUENCE_LENGTH)
        lengths = pipe.tokenizer(batch, padding="max_length", max_length=emb.MAX_SEQUENCE_LENGTH, truncation=True,
                                 add_special_tokens=True, return_attention_mask=True).attention_mask
        for text, e, m in zip(batch, pe, lengths, strict=True):
            embeds[text] = e[: int(sum(m))].cpu().clone()
    if all("masks" in d for d in data):
        masks = torch.cat([d["masks"] for d in data])[:clips]
    else:  # parts encoded before they stored masks
        masks = object_masks(seed, len(captions))
    _save_atomic({"latents": latents, "captions": captions, "mean": mean, "std": std, "embeds": embeds,
                  "masks": masks}, work / "dataset.pt")
    _log(f"dataset: {len(captions)} clips, latent {tuple(latents.shape[1:])}, "
         f"mean {mean.abs().mean():.3f} std {std.mean():.3f}, {len(embeds)} captions")


def train_transformer(pipe, work: Path, out: Path, *, steps: int, batch: int, seed: int, lr: float,
                      shift: float, cfg_drop: float, log_every: int, export_every: int,
                      max_minutes: float | None, ema_decay: float = 0.999, object_weight: float = 0.0,
                      crop_steps: int = 0, crop_batch: int = 16, crop_frames: int = 5, crop_cells: int = 16) -> dict:
    """Stage 3: train ``pipe.transformer`` (resuming from ``work/transformer.pt``).

    Keeps an exponential moving average of the weights (decay ``min(ema_decay, (1 + n) / (10 + n))`` after
    ``n`` averaged steps, the warm-up of Tensorflow's ``ExponentialMovingAverage`` with ``num_updates``);
    exports and the returned model hold the averaged weights. ``ema_decay=0`` disables the average.

    The squared error weighs ``1 + object_weight`` on latent cells that show the object
    (:func:`object_mask`) and 1 elsewhere, normalised by the mean weight. The object covers ~5% of a
    frame, so unweighted the loss is nearly all background and the caption (colour, direction) is
    learned last. Because the weight depends on the clean clip, the optimum leans towards drawing the
    object where it is likely, which is the commitment a sampler needs at high noise.

    The first ``crop_steps`` steps (a curriculum; 0 disables it) train on batches of ``crop_batch`` short
    windows around the object (:func:`object_crops`: ``crop_frames`` latent frames of ``crop_cells``
    cells square) instead of batches of ``batch`` whole clips. The model has no absolute positions, so what
    it learns there (shapes, colours, motion, reading the caption) holds on the whole grid; a window of
    5 x 16 x 16 cells is 320 tokens instead of 2,304 and a step of 16 windows costs a quarter of a step of 4
    whole clips on the CPU (0.34 s vs 1.36 s, 2 threads). The whole-clip steps after it teach what only
    the whole frame shows: one object in it. The learning-rate schedule spans all ``steps``.
    """
    data = torch.load(work / "dataset.pt")
    latents, captions, embeds = data["latents"], data["captions"], data["embeds"]
    need_masks = bool(object_weight or crop_steps)
    if need_masks and "masks" not in data:  # a dataset encoded before masks were stored
        data["masks"] = object_masks(seed, len(captions))
        _save_atomic(data, work / "dataset.pt")
    masks = data.get("masks")
    if need_masks and masks.shape != latents.shape[:1] + latents.shape[2:]:
        raise ValueError(f"dataset masks {tuple(masks.shape)} do not match the latent grid {tuple(latents.shape)}; "
                         "re-run the latents stage")
    mean = data["mean"].view(1, -1, 1, 1, 1)
    std = data["std"].view(1, -1, 1, 1, 1)
    model = pipe.transformer
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    ckpt_path = work / "transformer.pt"
    start, history, ckpt = 0, [], {}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location=_device_of(model))
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start, history = ckpt["step"], ckpt.get("history", [])
        _log(f"transformer: resumed at step {start}")
    ema_weights = ckpt.get("ema") or {k: v.detach().clone() for k, v in model.state_dict().items()}
    ema_count = int(ckpt.get("ema_count", 0))
    model.train()
    max_len = emb.MAX_SEQUENCE_LENGTH
    dim = next(iter(embeds.values())).shape[-1]
    t_start, ema, done = time.time(), None, start
    for step in range(start, steps):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        cropped = step < crop_steps
        n = crop_batch if cropped else batch
        idx = torch.randint(0, len(captions), (n,), generator=g)
        if cropped:
            x0, mask = object_crops(latents, masks, idx, g, frames=crop_frames, cells=crop_cells,
                                    jitter=crop_cells // 4)
        else:
            x0, mask = latents[idx], (masks[idx] if masks is not None else None)
        x0 = (x0.float() - mean) / std
        text = torch.zeros(n, max_len, dim)
        for b, i in enumerate(idx.tolist()):
            caption = "" if torch.rand((), generator=g).item() < cfg_drop else captions[i]
            e = embeds[caption]
            text[b, : e.shape[0]] = e
        u = torch.rand(n, generator=g)
        sigma = shift * u / (1.0 + (shift - 1.0) * u)
        noise = torch.randn(x0.shape, generator=g)
        s = sigma.view(-1, 1, 1, 1, 1)
        xt = (1.0 - s) * x0 + s * noise
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=50)
        # the batch is drawn on the CPU (same numbers on every device), then moved
        xt, sigma, text, noise, x0 = (t.to(_device_of(model)) for t in (xt, sigma, text, noise, x0))
        pred = model(hidden_states=xt, timestep=sigma * 1000.0, encoder_hidden_states=text, return_dict=False)[0]
        loss = weighted_flow_loss(pred, noise - x0, mask.to(pred.device) if object_weight else None, object_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema_decay > 0:
            ema_count += 1
            _ema_update(ema_weights, model, min(ema_decay, (1 + ema_count) / (10 + ema_count)))
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        done = step + 1
        elapsed = time.time() - t_start
        if done % log_every == 0 or done == steps:
            per = elapsed / (done - start)
            history.append((done, round(ema, 5)))
            _log(f"transformer step {done}/{steps} loss {ema:.4f} lr {opt.param_groups[0]['lr']:.2e} "
                 f"{per:.2f}s/step eta {per * (steps - done) / 60:.1f} min")
        stop = max_minutes is not None and elapsed > max_minutes * 60
        if done % 50 == 0 or done == steps or stop:
            _save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "step": done, "history": history,
                          "ema": ema_weights, "ema_count": ema_count}, ckpt_path)
        if export_every and (done % export_every == 0) and done != steps and not stop:
            with _averaged(model, ema_weights if ema_count else None):
                export(pipe, out, info={"transformer_steps": done, "loss_ema": ema, "ema_steps": ema_count,
                                        "partial": True})
        if stop:
            _log(f"transformer: --max-minutes reached at step {done}")
            break
    model.eval()
    if ema_count:
        model.load_state_dict(ema_weights)
    return {"transformer_steps": done, "loss_ema": ema, "ema_steps": ema_count, "ema_decay": ema_decay,
            "object_weight": object_weight, "crop_steps": crop_steps, "crop_batch": crop_batch,
            "crop_frames": crop_frames, "crop_cells": crop_cells, "history": history}


def object_crops(latents: torch.Tensor, masks: torch.Tensor, idx: torch.Tensor, generator: torch.Generator, *,
                 frames: int, cells: int, jitter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``cells x cells`` latent windows of the first ``frames`` latent frames around each clip's object.

    The VAE is causal, so latent frames ``0 .. frames - 1`` of a clip are exactly the encoding of its first
    ``2 * frames - 1`` video frames: a shorter, valid clip of the same caption. The window is centred on the
    centroid of the object's cells (``masks`` over those frames; the grid's centre if there are none; a
    half-cell tie goes to the larger index) moved by a uniform integer offset in ``[-jitter, jitter]`` per
    axis, then shifted to lie inside the grid.

    Args:
        latents: ``[N, C, T, H, W]`` the encoded clips.
        masks: bool ``[N, T, H, W]`` the object cells (:func:`object_mask`).
        idx: ``[B]`` long, which clips to crop.
        generator: draws the offsets (CPU).
        frames: latent frames to keep, ``1 <= frames <= T``.
        cells: window side in latent cells, ``1 <= cells <= min(H, W)``.
        jitter: largest offset in cells, ``>= 0``.

    Returns:
        ``(crops [B, C, frames, cells, cells], mask_crops [B, frames, cells, cells])``.
    """
    _, _, t_all, h, w = latents.shape
    if not (1 <= frames <= t_all and 1 <= cells <= min(h, w) and jitter >= 0):
        raise ValueError(f"crop of {frames} frames x {cells} cells (jitter {jitter}) does not fit a latent grid "
                         f"of {t_all} x {h} x {w}")
    offsets = torch.randint(-jitter, jitter + 1, (len(idx), 2), generator=generator)
    crops, mask_crops = [], []
    for b, i in enumerate(idx.tolist()):
        m = masks[i, :frames].any(0)
        ys, xs = m.nonzero(as_tuple=True)
        cy = float(ys.float().mean()) if len(ys) else (h - 1) / 2
        cx = float(xs.float().mean()) if len(xs) else (w - 1) / 2
        y0 = min(max(math.floor(cy + 1.0 - cells / 2) + int(offsets[b, 0]), 0), h - cells)
        x0 = min(max(math.floor(cx + 1.0 - cells / 2) + int(offsets[b, 1]), 0), w - cells)
        crops.append(latents[i, :, :frames, y0:y0 + cells, x0:x0 + cells])
        mask_crops.append(masks[i, :frames, y0:y0 + cells, x0:x0 + cells])
    return torch.stack(crops), torch.stack(mask_crops)


def weighted_flow_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
                       object_weight: float) -> torch.Tensor:
    """Mean squared error with weight ``1 + object_weight`` where ``mask`` is true, over the mean weight.

    Args:
        pred, target: ``[B, C, T, H, W]`` predicted and true velocities.
        mask: bool ``[B, T, H, W]`` (shared by all channels), or ``None`` for the plain mean.
        object_weight: extra weight (>= 0) on masked cells; 0 gives the plain mean.
    """
    err = (pred - target).square()
    if mask is None or not object_weight:
        return err.mean()
    weight = 1.0 + object_weight * mask.to(err.dtype).unsqueeze(1)
    return (err * weight).mean() / weight.mean()


@torch.no_grad()
def _ema_update(ema_weights: dict, model: torch.nn.Module, decay: float) -> None:
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            ema_weights[name].lerp_(value, 1.0 - decay)
        else:
            ema_weights[name].copy_(value)


class _averaged:
    """Context manager: ``model`` holds ``ema_weights`` inside, its own weights again after (None: no swap)."""

    def __init__(self, model: torch.nn.Module, ema_weights: dict | None) -> None:
        self.model, self.ema_weights, self.saved = model, ema_weights, None

    def __enter__(self):
        if self.ema_weights is not None:
            self.saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self.ema_weights)
        return self.model

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            self.model.load_state_dict(self.saved)


def export(pipe, out: Path, info: dict | None = None) -> None:
    """Stage 4: write the pipeline to ``out`` (replaced atomically), plus ``training_info.json``."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    if info is not None:
        (tmp / "training_info.json").write_text(json.dumps(info, indent=1, default=float) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    _log(f"exported pipeline to {out}")


# ----------------------------------------------------------------------------------------------- main


def build_parser(prog: str = "python -m accel.embedded.train") -> argparse.ArgumentParser:
    """The command-line options of :func:`main`; ``prog`` is the command shown in the usage line."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("embedded_work"),
                   help="folder for checkpoints and encoded data (default ./embedded_work); reruns resume from it")
    p.add_argument("--out", type=Path, default=emb.WEIGHTS_DIR,
                   help="where to write the trained pipeline (default: the packaged weights folder)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated subset of {','.join(STAGES)} (default: all, in order)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, data and noise (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice, all cores)")
    p.add_argument("--device", default="cpu",
                   help="where to train: cpu (default), cuda, cuda:N; the data and noise are drawn on the CPU either way")
    p.add_argument("--vae-steps", type=int, default=1450, help="VAE training steps (default 1450)")
    p.add_argument("--vae-batch", type=int, default=1, help="VAE batch size in 17x64x64 crops (default 1)")
    p.add_argument("--vae-lr", type=float, default=2e-3, help="VAE peak learning rate (default 2e-3)")
    p.add_argument("--clips", type=int, default=700, help="number of training clips to encode (default 700)")
    p.add_argument("--steps", type=int, default=6500,
                   help="transformer training steps, window steps included (default 6500)")
    p.add_argument("--batch", type=int, default=4, help="transformer batch size (default 4)")
    p.add_argument("--lr", type=float, default=1e-3, help="transformer peak learning rate (default 1e-3)")
    p.add_argument("--shift", type=float, default=emb.SCHEDULER_CONFIG["flow_shift"],
                   help="noise-level shift for training, matching the scheduler (default 2.0)")
    p.add_argument("--cfg-drop", type=float, default=0.1, help="probability of an empty caption (default 0.1)")
    p.add_argument("--object-weight", type=float, default=2.0,
                   help="extra loss weight on latent cells showing the object (1 + W there; default 2); 0 disables it")
    p.add_argument("--crop-steps", type=int, default=4000,
                   help="curriculum: the first N transformer steps train on short windows around the object "
                        "(--crop-frames latent frames of --crop-cells cells square) in batches of --crop-batch "
                        "(default 4000); 0 disables it")
    p.add_argument("--crop-batch", type=int, default=16, help="batch size of the window steps (default 16)")
    p.add_argument("--crop-frames", type=int, default=5,
                   help="latent frames per window, 1-9 (default 5 = the first 9 video frames)")
    p.add_argument("--crop-cells", type=int, default=16,
                   help="window side in latent cells, 2-32 and even (default 16 = 64 pixels)")
    p.add_argument("--ema-decay", type=float, default=0.999,
                   help="decay of the exported moving average of the transformer weights; 0 disables (default 0.999)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop transformer training after this many minutes (checkpointed and exported)")
    p.add_argument("--export-every", type=int, default=200, help="export weights every N transformer steps")
    p.add_argument("--log-every", type=int, default=10, help="print progress every N steps")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m accel.embedded.train") -> int:
    """Run the training stages; returns a process exit code (0 on success).

    Args:
        argv: command-line arguments without the program name (``None``: ``sys.argv[1:]``).
            See :func:`build_parser` or ``--help`` for every option.
        prog: the command shown in usage and error messages (``accel train-embedded`` from the ``accel`` command).

    Raises:
        ValueError: for an unknown stage name or a non-positive step/batch/clip count.
    """
    args = build_parser(prog).parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"--stages: unknown stage(s) {bad}; allowed: {list(STAGES)}")
    if args.object_weight < 0:
        raise ValueError(f"--object-weight must be >= 0, got {args.object_weight}")
    if not 0.0 <= args.ema_decay < 1.0:
        raise ValueError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if args.crop_steps < 0:
        raise ValueError(f"--crop-steps must be >= 0, got {args.crop_steps}")
    if not 1 <= args.crop_frames <= (CLIP_FRAMES - 1) // 2 + 1:
        raise ValueError(f"--crop-frames must be in 1..{(CLIP_FRAMES - 1) // 2 + 1}, got {args.crop_frames}")
    latent_side = CLIP_SIZE // emb.VAE_CONFIG["scale_factor_spatial"]
    if not (2 <= args.crop_cells <= latent_side and args.crop_cells % 2 == 0):
        raise ValueError(f"--crop-cells must be even and in 2..{latent_side} (the transformer's patch is 2 cells), "
                         f"got {args.crop_cells}")
    for name in ("vae_steps", "vae_batch", "clips", "steps", "batch", "crop_batch", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:  # only --threads may be None (torch's choice)
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    _log(f"training the embedded model: stages {stages}, work {work}, out {args.out}")
    try:
        device = torch.device(args.device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    pipe = emb.build_pipeline(seed=args.seed).to(device)
    pipe.set_progress_bar_config(disable=True)
    for p in pipe.text_encoder.parameters():
        p.requires_grad_(False)
    if "vae" in stages:
        train_vae(pipe, work, steps=args.vae_steps, batch=args.vae_batch, seed=args.seed, lr=args.vae_lr,
                  log_every=args.log_every)
    elif (work / "vae.pt").exists():
        pipe.vae.load_state_dict(torch.load(work / "vae.pt", weights_only=False, map_location=device)["model"])
    pipe.vae.eval()
    for p in pipe.vae.parameters():
        p.requires_grad_(False)
    if "latents" in stages:
        encode_dataset(pipe, work, clips=args.clips, seed=args.seed)
    if (work / "dataset.pt").exists():
        data = torch.load(work / "dataset.pt")
        pipe.vae.register_to_config(latents_mean=[round(float(v), 5) for v in data["mean"]],
                                    latents_std=[round(float(v), 5) for v in data["std"]])
    info = {"command": "python -m accel.embedded.train " + " ".join(argv if argv is not None else sys.argv[1:]),
            "seed": args.seed, "vae_steps": args.vae_steps, "clips": args.clips, "batch": args.batch}
    if "transformer" in stages:
        info.update(train_transformer(pipe, work, args.out, steps=args.steps, batch=args.batch, seed=args.seed,
                                      lr=args.lr, shift=args.shift, cfg_drop=args.cfg_drop,
                                      log_every=args.log_every, export_every=args.export_every,
                                      max_minutes=args.max_minutes, ema_decay=args.ema_decay,
                                      object_weight=args.object_weight, crop_steps=args.crop_steps,
                                      crop_batch=args.crop_batch, crop_frames=args.crop_frames,
                                      crop_cells=args.crop_cells))
    elif (work / "transformer.pt").exists():
        ckpt = torch.load(work / "transformer.pt", weights_only=False, map_location=device)
        pipe.transformer.load_state_dict(ckpt["ema"] if ckpt.get("ema_count") else ckpt["model"])
    if "export" in stages:
        info["seconds_this_run"] = round(time.time() - t0, 1)
        export(pipe, args.out, info=info)
    _log(f"done in {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

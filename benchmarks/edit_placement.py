"""Does an edit keep the source's objects in place? IoU of the edited object with the source's (issue 19).

For each (source, target) prompt pair, :func:`accel.editing.edit_generated` (ConsistEdit, the release's
defaults, mask from the edit word) generates the source and its edit together; the object pixels of both
(:func:`accel.embedded.adherence.object_mask`: saturated, bright pixels, one 3x3 erosion) give per frame

    IoU = |source object & target object| / |source object | target object|

(frames where both are empty are skipped), averaged over frames. The same pair generated without any
control (``pipe(prompt=[source, target])`` from the same seeds) is the baseline. Also recorded: the
colour the adherence check reads in the source and the target (:func:`accel.embedded.adherence.
analyze_clip`), the edit mask's share of the tokens, background MSE / PSNR / SSIM outside the mask
(:func:`accel.eval.edit_metrics.background_metrics`).

Models: the embedded model (a trained text-to-video model of coloured shapes) and the tiny random-weight
Wan / HunyuanVideo / FLUX pipelines (which draw no objects: there the "object" is whatever saturated
pixels the noise makes, so the IoU only says how much of the source's layout the edit keeps).

Run ``python benchmarks/edit_placement.py`` (an embedded pair took 17 minutes at load 15-20 on 2 cores;
idle, not measured); it writes ``benchmarks/results/edit_placement.json`` (``--out`` to change) after every
record, with ``"complete": false`` until the run ends. ``--pairs N``: the first N embedded pairs only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

EMBEDDED_PAIRS = [  # (source, target, edit word): the README's example first
    ("a yellow square moving right", "a green square moving right", "yellow"),
    ("a red circle moving left", "a blue circle moving left", "red"),
    ("a blue triangle moving up", "a red triangle moving up", "blue"),
    ("a green circle moving down", "a yellow circle moving down", "green"),
    ("a purple square moving left", "an orange square moving left", "purple"),
]
TINY_PAIR = ("a red monkey", "a blue monkey", "red")


def frame_iou(source: np.ndarray, target: np.ndarray) -> float | None:
    """Mean over frames of the IoU of two bool ``[F, H, W]`` masks (frames where both are empty skipped)."""
    scores = []
    for s, t in zip(source, target, strict=True):
        union = np.logical_or(s, t).sum()
        if union:
            scores.append(float(np.logical_and(s, t).sum() / union))
    return float(np.mean(scores)) if scores else None


def _frames(x) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().float() if hasattr(x, "detach") else x, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[1] == 3 and arr.shape[-1] != 3:  # [F, 3, H, W]
        arr = arr.transpose(0, 2, 3, 1)
    if arr.ndim == 3 and arr.shape[0] == 3:  # [3, H, W] image
        arr = arr.transpose(1, 2, 0)
    return arr


def _background(source, target, mask) -> dict | None:
    """Background preservation outside the token mask (:func:`accel.eval.edit_metrics.background_metrics`)."""
    from accel.eval.edit_metrics import background_metrics

    if mask is None or bool(mask.all()):
        return None
    return background_metrics(source, target, mask)


def measure(pipe, pairs, *, steps: int, seed: int, alpha: float, call: dict, out: list, save=lambda: None) -> list[dict]:
    """One record per (source, target, edit word) pair, appended to ``out`` as it is made (then ``save()``)."""
    from accel.editing import edit_generated
    from accel.embedded.adherence import analyze_clip, object_mask

    for source_prompt, target_prompt, word in pairs:
        t0 = time.time()
        res = edit_generated(pipe, source_prompt, target_prompt, edit_words=word, alpha=alpha, steps=steps, seed=seed,
                             **call)
        gens = [torch.Generator().manual_seed(seed) for _ in range(2)]
        kw = dict(call)
        if isinstance(kw.get("negative_prompt"), str):
            kw["negative_prompt"] = [kw["negative_prompt"]] * 2
        plain = pipe(prompt=[source_prompt, target_prompt], num_inference_steps=steps, generator=gens, **kw)
        media = plain.images if hasattr(plain, "images") else plain.frames
        src, tgt = _frames(res.source), _frames(res.target)
        src0, tgt0 = _frames(media[0]), _frames(media[1])
        rec = {
            "source": source_prompt, "target": target_prompt, "edit_word": word,
            "iou_edit": frame_iou(object_mask(src), object_mask(tgt)),
            "iou_without_control": frame_iou(object_mask(src0), object_mask(tgt0)),
            "source_colour": analyze_clip(src).colour, "target_colour": analyze_clip(tgt).colour,
            "mask_share": None if res.mask is None else float(res.mask.float().mean()),
            "background": _background(src, tgt, res.mask),
            "seconds": time.time() - t0,
        }
        print(json.dumps(rec), flush=True)
        out.append(rec)
        save()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "edit_placement.json"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pairs", type=int, default=None, help="only the first N embedded-model pairs (default: all 5)")
    a = p.parse_args(argv)
    if a.pairs is not None and not 1 <= a.pairs <= len(EMBEDDED_PAIRS):
        p.error(f"--pairs must be in [1, {len(EMBEDDED_PAIRS)}], got {a.pairs}")
    torch.set_num_threads(2)
    from accel.embedded import DEFAULT_GENERATION, embedded
    from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

    t0, load0 = time.time(), os.getloadavg()[0]
    out = Path(a.out)
    result = {"what": "IoU of the edited object with the source's, ConsistEdit defaults (issue 19)",
              "command": "python benchmarks/edit_placement.py" + (f" --pairs {a.pairs}" if a.pairs else ""),
              "steps": a.steps, "seed": a.seed, "alpha": 1.0, "complete": False, "embedded": [], "tiny": {}}

    def save():  # after every record: a cut-short run leaves its records, marked incomplete
        result["seconds"] = time.time() - t0
        result["load_avg_1min"] = {"start": load0, "now": os.getloadavg()[0]}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))

    pipe = embedded()
    call = {k: v for k, v in DEFAULT_GENERATION.items() if k != "num_inference_steps"}
    call["output_type"] = "np"
    measure(pipe, EMBEDDED_PAIRS[:a.pairs or None], steps=a.steps, seed=a.seed, alpha=1.0, call=call,
            out=result["embedded"], save=save)
    for family, size in (("wan", 32), ("hunyuan_video", 32), ("flux", 32)):
        tp = tiny_pipeline(family)
        tp.set_progress_bar_config(disable=True)
        kw = tiny_call_kwargs(family, steps=a.steps, size=size)
        for key in ("prompt", "generator", "num_inference_steps"):
            kw.pop(key, None)
        kw["output_type"] = "np"
        measure(tp, [TINY_PAIR], steps=4, seed=a.seed, alpha=1.0, call=kw, out=result["tiny"].setdefault(family, []),
                save=save)
    for name, recs in [("embedded", result["embedded"])] + [(f"tiny-{k}", v) for k, v in result["tiny"].items()]:
        vals = [r["iou_edit"] for r in recs if r["iou_edit"] is not None]
        base = [r["iou_without_control"] for r in recs if r["iou_without_control"] is not None]
        result.setdefault("summary", {})[name] = {"mean_iou_edit": float(np.mean(vals)) if vals else None,
                                                  "mean_iou_without_control": float(np.mean(base)) if base else None}
    result["complete"] = True
    save()
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

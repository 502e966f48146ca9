"""Does an edit keep the scene? ConsistEdit's rule alone vs the keep-the-scene options, on the embedded model.

For each colour edit (source prompt, target prompt, edit word) and each variant (a ``keep_scene`` choice, an
edit-mask threshold, ``source_steps``, or no mask at all), :func:`accel.editing.edit_generated` generates the
source and its edit together (alpha 1.0, the paper's value for colour edits; 20 steps; seed 0; the embedded
model's trained size). Recorded:

* ``object_iou``: :func:`accel.eval.edit_metrics.object_iou` of the object pixels
  (:func:`accel.embedded.adherence.object_mask`) of source and edit: does the edited object sit where the
  source's was (issue 27's goal: >= 0.7);
* ``mask_fraction``: the share of tokens the edit mask lets change (issue 27: background measured on >= 50%
  of the pixels means a mask below 0.5);
* ``background``: :func:`accel.eval.edit_metrics.background_metrics` outside the mask; ``structure_ssim``:
  :func:`accel.eval.edit_metrics.structure_similarity`;
* ``source_colour`` / ``edit_colour``: the dominant colour :func:`accel.embedded.adherence.analyze_clip` reads
  (did the colour change to the target's?); ``edit_object_colour``: the colour of the edit's object pixels
  inside the source's object pixels (:func:`accel.embedded.adherence.object_colour`), which coloured specks
  elsewhere in the frame do not outvote; ``object_iou_per_frame``: where the objects move.

* ``mask_covers_source_objects``: the share of the source's object pixels inside the edit mask (is the mask the
  objects' region in every frame?);

and once per edit pair, ``source_check``: the largest difference between the edit's source and a source-only
generation with the same seed (both branches start from the same noise; the source row is never changed).

The variant ``release`` is the ConsistEdit release's rule with the default mask threshold (0.1);
``qk-everywhere`` has no mask, so alpha 1.0 gives the target the source's Q and K in every self-attention layer
at every step (ConsistEdit's structure lock on all tokens) -- does that alone keep the objects in place?
``...-sourceK`` variants add ``source_steps=K`` (the target follows the source for its first K of 20 steps:
where are the objects' places, and the colour, decided?). Each edit
takes minutes on 2 CPU threads; ``--pairs`` (indices into :data:`PAIRS`) and ``--variants`` select a subset.
Writes JSON::

    .venv/bin/python benchmarks/edit_keep_scene.py --out benchmarks/results/edit_keep_scene.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

PAIRS = [  # (source, target, edit word): the README's example and the app's default first
    ("a yellow square moving right", "a green square moving right", "yellow"),
    ("a red circle moving left", "a blue circle moving left", "red"),
    ("a blue triangle moving up", "a red triangle moving up", "blue"),
]
_BOTH = ("latents", "cross_attention")
#: name -> (keep_scene, mask threshold (None: no mask, all-edit), source_steps)
VARIANTS = {
    "release": (None, 0.1, 0),
    "qk-everywhere": (None, None, 0),
    "release-mask0.5": (None, 0.5, 0),
    "latents-mask0.5": ("latents", 0.5, 0),
    "latents+cross-mask0.5": (_BOTH, 0.5, 0),
    "latents+cross-mask0.1": (_BOTH, 0.1, 0),
    "latents+cross-mask0.5-source4": (_BOTH, 0.5, 4),
    "latents+cross-mask0.5-source8": (_BOTH, 0.5, 8),
    "latents+cross-mask0.5-source10": (_BOTH, 0.5, 10),
}


def measure(pipe, pair, variant: str, *, steps: int, seed: int, call: dict) -> dict:
    """One edit of ``pair`` with ``variant``: the figures listed in the module docstring."""
    from accel.editing import edit_generated
    from accel.embedded.adherence import analyze_clip, object_colour, object_mask
    from accel.eval.edit_metrics import background_metrics, mask_to_pixels, object_iou, structure_similarity

    source_prompt, target_prompt, word = pair
    keep_scene, threshold, source_steps = VARIANTS[variant]
    masked = {"edit_words": word, "threshold": threshold} if threshold is not None else {}
    t0 = time.perf_counter()
    res = edit_generated(pipe, source_prompt, target_prompt, alpha=1.0, steps=steps, seed=seed, keep_scene=keep_scene,
                         source_steps=source_steps, output_type="np", **masked, **call)
    seconds = time.perf_counter() - t0
    src, edt = np.asarray(res.source), np.asarray(res.target)
    whole = res.mask is None or bool(res.mask.all())
    src_objects, edit_objects = object_mask(src), object_mask(edt)
    pixels = np.ones(src_objects.shape, dtype=bool) if res.mask is None else mask_to_pixels(res.mask, *src.shape[:3])
    return {
        "source": source_prompt, "target": target_prompt, "edit_word": word, "variant": variant,
        "keep_scene": keep_scene, "threshold": threshold, "source_steps": source_steps,
        "object_iou": object_iou(src_objects, edit_objects),
        "object_iou_per_frame": object_iou(src_objects, edit_objects, per_frame=True),
        "mask_fraction": 1.0 if res.mask is None else float(res.mask.float().mean()),
        "mask_covers_source_objects": float(pixels[src_objects].mean()) if src_objects.any() else None,
        "background": None if whole else background_metrics(src, edt, res.mask),
        "structure_ssim": structure_similarity(src, edt),
        "source_colour": analyze_clip(src).colour, "edit_colour": analyze_clip(edt).colour,
        "edit_object_colour": object_colour(edt, src_objects),
        "seconds": seconds, "load_average": os.getloadavg(),
    }


def source_check(pipe, pair, *, steps: int, seed: int, call: dict) -> dict:
    """Does the edit's source branch start from the same noise as a source-only generation (and stay it)?"""
    from accel.editing import edit_generated

    alone = pipe(prompt=pair[0], num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                 output_type="np", **call).frames[0]
    res = edit_generated(pipe, pair[0], pair[1], alpha=1.0, steps=steps, seed=seed, output_type="np", **call)
    return {"source": pair[0], "max_abs_difference": float(np.abs(np.asarray(res.source) - alone).max())}


def summarize(records: list[dict]) -> dict:
    """Per variant: mean object IoU, mean mask fraction, how many edits read the target's colour."""
    out = {}
    for variant in dict.fromkeys(r["variant"] for r in records):
        rs = [r for r in records if r["variant"] == variant]
        ious = [r["object_iou"] for r in rs if r["object_iou"] is not None]
        out[variant] = {
            "edits": len(rs),
            "mean_object_iou": float(np.mean(ious)) if ious else None,
            "mean_mask_fraction": float(np.mean([r["mask_fraction"] for r in rs])),
            "mean_structure_ssim": float(np.mean([r["structure_ssim"] for r in rs])),
            "edit_colour_is_target": sum(r["edit_colour"] is not None and r["edit_colour"] in r["target"].split()
                                         for r in rs),
            "edit_object_colour_is_target": sum(r.get("edit_object_colour") is not None
                                                and r["edit_object_colour"] in r["target"].split() for r in rs),
        }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, nargs="+", default=list(range(len(PAIRS))), choices=range(len(PAIRS)),
                   help=f"which colour edits (indices 0 to {len(PAIRS) - 1}; default all)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench-results/edit_keep_scene.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from accel.embedded import DEFAULT_GENERATION, embedded

    pipe = embedded()
    pipe.set_progress_bar_config(disable=True)
    call = {k: v for k, v in DEFAULT_GENERATION.items() if k != "num_inference_steps"}
    records = []
    result = {"command": "python benchmarks/edit_keep_scene.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "complete": False,
              "model": "embedded", "alpha": 1.0, "steps": args.steps, "seed": args.seed, "threads": args.threads,
              "generation": call, "records": records}
    checks = result["source_check"] = []
    for pair in [PAIRS[i] for i in args.pairs]:
        checks.append(source_check(pipe, pair, steps=args.steps, seed=args.seed, call=call))
        print(json.dumps(checks[-1]), flush=True)
        for variant in args.variants:
            records.append(measure(pipe, pair, variant, steps=args.steps, seed=args.seed, call=call))
            print(json.dumps(records[-1], default=str), flush=True)
            result["summary"] = summarize(records)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1, default=str))   # partial results survive a stop
    result["complete"] = True
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared tiny-pipeline helpers for the attention-control tests (module-scoped pipelines, fixed seeds)."""

import torch

from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

SOURCE, TARGET = "a red monkey", "a blue monkey"
STEPS = 2
# FLUX: 8x8 px -> 4x4 tokens; video: 32x32 px, 9 frames -> 3x2x2 (Wan) / 3x4x4 (HunyuanVideo) tokens
SIZES = {"flux": 8, "wan": 32, "hunyuan_video": 32}


def build(family: str):
    pipe = tiny_pipeline(family)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call_kwargs(family: str) -> dict:
    """The tiny call's pipeline arguments without prompt/generator/steps (edit functions set those)."""
    kw = tiny_call_kwargs(family, steps=STEPS, size=SIZES[family])
    for key in ("prompt", "generator", "num_inference_steps"):
        kw.pop(key)
    return kw


def stock_pair(pipe, family: str, source: str = SOURCE, target: str = TARGET, seed: int = 0):
    """The stock pipeline's output for prompt=[source, target] from the same noise in both rows."""
    kw = call_kwargs(family)
    if "negative_prompt" in kw:
        kw["negative_prompt"] = [kw["negative_prompt"]] * 2
    out = pipe(prompt=[source, target], num_inference_steps=STEPS,
               generator=[torch.Generator().manual_seed(seed) for _ in range(2)], **kw)
    media = out.images if hasattr(out, "images") else out.frames
    return media[0], media[1]

"""Editing the embedded (trained) Wan model at a small size: the source branch equals the stock
pipeline's output for the source prompt; the edit keeps the source where the mask says to keep it, measured
against the source itself and against the target prompt generated freely (the stock pipeline, same seed);
the mask lies on the token grid."""

import numpy as np
import torch

from accel.editing import edit_generated
from accel.editing.pipeline import token_grid
from accel.embedded.model import DEFAULT_GENERATION, MAX_SEQUENCE_LENGTH, embedded
from accel.eval.edit_metrics import background_metrics, mask_to_pixels

SIZE = dict(height=32, width=32, num_frames=5, guidance_scale=DEFAULT_GENERATION["guidance_scale"],
            max_sequence_length=MAX_SEQUENCE_LENGTH)
STEPS = 6


def test_embedded_colour_edit_keeps_the_source():
    pipe = embedded()
    source, target = "a yellow square moving right", "a green square moving right"
    result = edit_generated(pipe, source, target, edit_words="yellow", alpha=1.0, steps=STEPS, seed=0,
                            output_type="np", **SIZE)
    stock = pipe([source, target], num_inference_steps=STEPS, output_type="np",
                 generator=[torch.Generator().manual_seed(0) for _ in range(2)], **SIZE).frames
    assert np.array_equal(result.source, stock[0])
    assert tuple(result.mask.shape) == token_grid(pipe, height=32, width=32, num_frames=5)
    assert 0 < result.mask.float().mean() < 1  # some tokens are kept
    # outside the mask the edit stays close to the source: far closer than the target prompt drawn freely
    # (measured: 21.8 dB vs 12.8 dB)
    kept = background_metrics(result.source, result.target, result.mask)["psnr_db"]
    free = background_metrics(result.source, stock[1], result.mask)["psnr_db"]
    assert kept > free + 5, (kept, free)
    # and the edit is where the mask is: the change inside it is larger than outside it
    inside = mask_to_pixels(result.mask, 5, 32, 32)
    change = ((result.target - result.source) ** 2).mean(-1)
    assert change[inside].mean() > 2 * change[~inside].mean()

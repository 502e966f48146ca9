"""Editing the embedded (trained) Wan model at a small size: the source branch equals the stock
pipeline's output for the source prompt, the edit changes the target, and the mask lies on the token grid."""

import torch

from accel.editing import edit_generated
from accel.editing.pipeline import token_grid
from accel.embedded.model import MAX_SEQUENCE_LENGTH, embedded

SIZE = dict(height=32, width=32, num_frames=5, guidance_scale=4.0, max_sequence_length=MAX_SEQUENCE_LENGTH)


def test_embedded_colour_edit_keeps_the_source():
    pipe = embedded()
    source, target = "a yellow square moving right", "a green square moving right"
    result = edit_generated(pipe, source, target, edit_words="yellow", alpha=1.0, steps=3, seed=0, output_type="pt",
                            **SIZE)
    stock = pipe([source, target], num_inference_steps=3, output_type="pt",
                 generator=[torch.Generator().manual_seed(0) for _ in range(2)], **SIZE).frames
    assert torch.equal(result.source, stock[0])
    assert not torch.equal(result.target, stock[1])
    assert tuple(result.mask.shape) == token_grid(pipe, height=32, width=32, num_frames=5)

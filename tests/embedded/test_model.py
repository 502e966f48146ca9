"""The packaged embedded model loads offline as a stock WanPipeline and follows its prompts."""

import numpy as np
import pytest
import torch

from accel.embedded.adherence import check_adherence, held_out_prompts
from accel.embedded.model import (
    DEFAULT_GENERATION,
    WEIGHTS_DIR,
    embedded,
    generation_kwargs,
    token_grid,
)

pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / "model_index.json").is_file(), reason="embedded weights missing")

# Prompts never seen in training (held out), one per colour, all four directions.
_PROMPTS = [held_out_prompts()[i] for i in (0, 7, 15, 22, 35, 43)]


@pytest.fixture(scope="module")
def pipe():
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    try:
        yield embedded()
    finally:
        mp.undo()


def test_loads_as_stock_wan_pipeline(pipe):
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    assert type(pipe) is WanPipeline
    assert type(pipe.transformer) is WanTransformer3DModel and type(pipe.vae) is AutoencoderKLWan
    assert isinstance(pipe.text_encoder, UMT5EncoderModel)
    assert pipe.transformer.dtype == torch.float32
    t, h, w = token_grid(DEFAULT_GENERATION["height"], DEFAULT_GENERATION["width"], DEFAULT_GENERATION["num_frames"])
    assert t * h * w >= 2000


def test_weights_are_small():
    size = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert size < 12 * 2**20


def test_generated_clips_follow_the_prompts_colour(pipe):
    # The quality bar's check on a few samples: the dominant colour of clips for held-out prompts,
    # measured by the model-free adherence check (on the 50 held-out prompts the shipped weights get
    # colour 94%, direction 12%; see the embedded module docstring). Direction is reported, not asserted:
    # the model does not yet move its objects reliably.
    kwargs = generation_kwargs()
    generators = [torch.Generator().manual_seed(100 + i) for i in range(len(_PROMPTS))]
    frames = pipe(prompt=_PROMPTS, generator=generators, output_type="np", **kwargs).frames
    assert frames.shape == (len(_PROMPTS), kwargs["num_frames"], kwargs["height"], kwargs["width"], 3)
    assert np.isfinite(frames).all() and frames.min() >= 0.0 and frames.max() <= 1.0
    results = [check_adherence(clip, prompt) for clip, prompt in zip(frames, _PROMPTS, strict=True)]
    for r in results:
        print(f"{r.prompt!r}: saw {r.analysis.colour} moving {r.analysis.direction} "
              f"(object {r.analysis.object_fraction:.1%} of the frame)")
    # one object of the prompt's colour, not a frame flooded with it nor an empty one
    assert sum(r.colour_ok for r in results) >= len(_PROMPTS) - 1
    assert all(0.001 < r.analysis.object_fraction < 0.3 for r in results if r.colour_ok)


def test_bad_arguments():
    with pytest.raises(ValueError):
        embedded(dtype=torch.int8)
    with pytest.raises(ValueError):
        embedded(device="not-a-device")
    with pytest.raises(ValueError):
        generation_kwargs(height=100)
    with pytest.raises(ValueError):
        generation_kwargs(num_frames=16)

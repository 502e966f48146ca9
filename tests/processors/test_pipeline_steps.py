"""The root hook learns a pipeline call's number of steps from diffusers' public ``num_timesteps`` property
(HunyuanVideo and FLUX call the transformer without a cache context that would carry it)."""

import pytest
import torch

from accel.methods.dense import Dense
from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline
from accel.processors.apply import apply


@pytest.mark.parametrize("family", ["hunyuan_video", "flux"])
def test_handle_knows_the_number_of_steps_of_the_call(family):
    torch.manual_seed(0)
    pipe = tiny_pipeline(family)
    kwargs = tiny_call_kwargs(family, steps=3)
    seen = []
    with apply(pipe, Dense()) as handle:
        def record(_pipe, _i, _t, _kw):
            seen.append((handle.step, handle.num_inference_steps))
            return {}

        pipe(**kwargs, callback_on_step_end=record)
    assert seen == [(0, 3), (1, 3), (2, 3)]

"""``accel.apply(pipe, preset)``: a Preset installs its method with its schedule, exactly as the two-argument form."""

import pytest
import torch

from accel.methods.neighborhood import Neighborhood
from accel.methods.preset import Preset
from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline
from accel.processors.apply import apply
from accel.schedule import Schedule


def _frames(pipe):
    kw = tiny_call_kwargs("wan", steps=2, size=128)  # token grid (3, 8, 8)
    kw["generator"] = torch.Generator().manual_seed(0)
    return pipe(**kw).frames


def test_apply_preset_equals_method_with_its_schedule():
    pipe = tiny_pipeline("wan")
    preset = Preset(Neighborhood(window=(2, 3, 3), block_size=16, tiling=False), Schedule(dense_steps=1), "test")
    with apply(pipe, preset) as handle:
        assert handle.method == preset.method and handle.schedule == preset.schedule
        got = _frames(pipe)
    with apply(pipe, preset.method, schedule=preset.schedule):
        want = _frames(pipe)
    with apply(pipe, preset.method):  # no dense first step: a different picture, so the schedule was used
        other = _frames(pipe)
    assert torch.equal(got, want)
    assert not torch.equal(got, other)


def test_apply_preset_refuses_a_different_schedule():
    pipe = tiny_pipeline("wan")
    preset = Preset(Neighborhood(window=(2, 3, 3), block_size=16, tiling=False), Schedule(dense_steps=1), "test")
    with pytest.raises(ValueError, match="conflicts with the preset's schedule"):
        apply(pipe, preset, schedule=Schedule(dense_steps=2))
    apply(pipe, preset, schedule=Schedule(dense_steps=1)).remove()  # the same schedule is fine

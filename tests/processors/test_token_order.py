"""Permute once per forward: whole-model mode gives the per-layer result exactly, with no gather in the
attention calls, on the tiny Wan, HunyuanVideo and FLUX pipelines."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.methods.clear_local import ClearLocal
from accel.methods.neighborhood import Neighborhood
from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

SIZE = {"wan": 64, "hunyuan_video": 32, "flux": 16}  # grids 3x4x4 (+16 text last for HunyuanVideo), 1x8x8 (+16 first)
# tile-aligned configurations whose padded order has padding positions on these grids
METHODS = {
    "wan": lambda: Neighborhood(window=(2, 4, 2), stride=(2, 4, 2), tiling=(2, 4, 2), granularity="tile",
                                block_size=16, backend="reference"),  # 3x4x4 padded to 4x4x4
    "hunyuan_video": lambda: ClearLocal(radius=1, radius_t=1, tiling=(2, 4, 2), granularity="block", block_size=16,
                                        backend="reference"),
    "flux": lambda: Neighborhood(window=(16, 2), stride=(16, 2), tiling=(1, 16, 1), granularity="tile",
                                 block_size=16, backend="reference"),  # 1x8x8 padded to 1x16x8
}


def _spy(monkeypatch, method):
    """Record, per call of ``method.reorder_plan``, whether it asked for a gather."""
    seen = []
    cls = type(method)
    real = cls.reorder_plan

    def spy(self, layout, device):
        plan = real(self, layout, device)
        if self is method:
            seen.append(plan is not None)
        return plan

    monkeypatch.setattr(cls, "reorder_plan", spy)
    return seen


def _run(family, method, *, permute_once, schedule=None, layers=None, steps=2):
    pipe = tiny_pipeline(family)
    pipe.set_progress_bar_config(disable=True)
    kwargs = tiny_call_kwargs(family, size=SIZE[family], steps=steps)
    kwargs["output_type"] = "latent"
    with accel.apply(pipe, method, schedule=schedule, layers=layers, permute_once=permute_once):
        return pipe(**kwargs)[0]


@pytest.mark.parametrize("family", ["wan", "hunyuan_video", "flux"])
def test_whole_model_order_equals_per_layer(family, monkeypatch):
    per_layer_method = METHODS[family]()
    per_layer_seen = _spy(monkeypatch, per_layer_method)
    per_layer = _run(family, per_layer_method, permute_once=False)
    assert per_layer_seen and all(per_layer_seen)  # every attention call gathered

    whole_method = METHODS[family]()
    whole_seen = _spy(monkeypatch, whole_method)
    whole = _run(family, whole_method, permute_once=True)
    # one gather per transformer call (the first block's hook); every attention call found its order
    gathers = sum(whole_seen)
    assert gathers >= 1 and len(whole_seen) - gathers == len(per_layer_seen)
    assert torch.equal(whole, per_layer)


def test_falls_back_per_layer_when_not_every_layer_has_the_method(monkeypatch):
    method = METHODS["wan"]()
    seen = _spy(monkeypatch, method)
    _run("wan", method, permute_once=True, layers=[1])
    assert seen and all(seen)  # no whole-model gather: each attention call of layer 1 gathered itself


def test_dense_steps_run_upstream_then_whole_model(monkeypatch):
    """Schedule(dense_steps=1): step 0 is upstream attention everywhere (no order), step 1 whole-model;
    the result equals the per-layer version."""
    per_layer = _run("hunyuan_video", METHODS["hunyuan_video"](), permute_once=False,
                     schedule=accel.Schedule(dense_steps=1))
    whole = _run("hunyuan_video", METHODS["hunyuan_video"](), permute_once=True, schedule=accel.Schedule(dense_steps=1))
    assert torch.equal(whole, per_layer)


def test_permute_once_must_be_a_bool():
    pipe = tiny_pipeline("wan")
    with pytest.raises(TypeError, match="permute_once must be a bool"):
        accel.apply(pipe, METHODS["wan"](), permute_once="yes")

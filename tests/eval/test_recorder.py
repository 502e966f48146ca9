"""Executed density: the recorder's layouts equal the kernel calls' layouts; per-layer/step records on a pipeline."""

import pytest
import torch

import accel
import accel.methods.agent as agent_mod
import accel.methods.base as base_mod
import accel.methods.rectified as rect_mod
from accel.eval.recorder import DensityRecorder, kernel_pairs

_METHODS = [
    accel.Dense(backend="reference"),
    accel.Radial(decay=0.5, block_size=16, backend="reference"),
    accel.ClearLocal(radius=3, radius_t=1, block_size=16, backend="reference"),
    accel.Neighborhood(window=(2, 3, 5), block_size=16, backend="reference"),
    accel.Neighborhood(window=(2, 3, 5), block_size=16, tiling=False, backend="reference"),
    accel.Rectified(drop=0.6, tau=0.2, block_size=16, backend="reference"),
    accel.Rectified(drop=0.6, block_size=16, order="morton", count_text=False, backend="reference"),
    accel.Agent(formation="pool", agents=6, block_size=16, backend="reference"),
    accel.Agent(stride=(2, 2), block_size=16, backend="reference"),
]
_LAYOUTS = [
    ("video only", dict()),
    ("text last, padded", dict(text_len=7, text_side="last", text_mask=torch.tensor([[True] * 5 + [False] * 2]))),
    ("text first", dict(text_len=32, text_side="first")),
]


@pytest.fixture
def kernel_log(monkeypatch):
    """Every layout passed to the kernel entry point by the methods, with its computed pairs."""
    calls = []
    real = base_mod.block_sparse_attention

    def spy(q, k, v, layout, **kw):
        calls.append(layout.density() * layout.q_len * layout.kv_len)
        return real(q, k, v, layout, **kw)

    for mod in (base_mod, rect_mod, agent_mod):
        monkeypatch.setattr(mod, "block_sparse_attention", spy)
    return calls


@pytest.mark.parametrize("method", _METHODS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("text", _LAYOUTS, ids=lambda t: t[0])
def test_kernel_pairs_match_intercepted_kernel_calls(method, text, kernel_log):
    grid = (3, 6, 8)
    layout = accel.TokenLayout(grid, **text[1])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, layout.seq_len, 2, 16, generator=g) for _ in range(3))
    method(q, k, v, layout)
    pairs, calls = kernel_pairs(method, q, k, v, layout)
    assert calls == len(kernel_log)
    assert pairs == pytest.approx(sum(kernel_log), rel=1e-9)


def test_recorder_on_tiny_wan_records_every_layer_and_step():
    from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline("wan", num_layers=2)
    method = accel.Neighborhood(window=(2, 3, 3), block_size=16, backend="reference")
    handle = accel.apply(pipe, method, schedule=accel.Schedule(dense_steps=1))
    rec = DensityRecorder().attach(handle)
    pipe(**tiny_call_kwargs("wan", steps=3))
    rec.detach()
    handle.remove()
    per = rec.per_layer_step()
    assert sorted({s for s, _ in per}) == [0, 1, 2]
    assert sorted({layer for _, layer in per}) == [0, 1]
    from tests.eval.brute_density import brute_force_density

    want = brute_force_density(method, tuple(rec.records[-1]["grid"]))  # the token rule, brute force
    for (step, _), d in per.items():
        assert d == pytest.approx(1.0 if step == 0 else want)
    assert rec.records[0]["kind"] == "dense" and rec.records[-1]["kind"] == "sparse"
    assert rec.total_flops() == pytest.approx(sum(4 * r["pairs"] * _unit(pipe) for r in rec.records))


def _unit(pipe):
    attn = pipe.transformer.blocks[0].attn1
    return attn.heads * (attn.inner_dim // attn.heads)


def test_attach_without_accel_raises():
    with pytest.raises(ValueError, match="no accel installation"):
        DensityRecorder().attach(torch.nn.Linear(2, 2))

"""accel.apply on the tiny Wan / HunyuanVideo / FLUX pipelines, compared with stock diffusers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import accel
from accel.methods import Dense
from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline
from accel.processors import AccelFluxAttnProcessor, AccelHunyuanVideoAttnProcessor, AccelWanAttnProcessor

from ..methods.helpers import MaskedDenseReference, RandomVideoBlocks

FAMILIES = ["wan", "hunyuan_video", "flux"]
# sizes giving several 16-token blocks: Wan 3x4x4 video tokens, HunyuanVideo 3x4x4 + 16 text,
# FLUX 8x8 + 16 text
SPARSE_SIZE = {"wan": 64, "hunyuan_video": 32, "flux": 16}
CALLS_PER_STEP = {"wan": 2, "hunyuan_video": 2, "flux": 1}  # CFG: Wan and true-CFG HunyuanVideo
PROCESSOR = {"wan": AccelWanAttnProcessor, "hunyuan_video": AccelHunyuanVideoAttnProcessor,
             "flux": AccelFluxAttnProcessor}

_PIPES: dict = {}


def shared_pipe(family):
    """One pipeline per family for the module; every test leaves it as it found it."""
    if family not in _PIPES:
        _PIPES[family] = tiny_pipeline(family)
        _PIPES[family].set_progress_bar_config(disable=True)
    return _PIPES[family]


def run(pipe, family, **kwargs):
    call = tiny_call_kwargs(family, **{k: kwargs.pop(k) for k in ("steps", "size", "seed") if k in kwargs})
    call.update(kwargs)
    out = pipe(**call)
    if kwargs.get("output_type") == "latent":
        return out[0]
    return out.images if family == "flux" else out.frames


@dataclasses.dataclass(frozen=True, eq=False)
class Spy(Dense):
    """Dense that logs (step, grid, text_len, batch) of every call it serves."""

    log: list = dataclasses.field(default_factory=list)
    handle_box: list = dataclasses.field(default_factory=list)

    def forward(self, q, k, v, layout, *, scale=None):
        step = self.handle_box[0].step if self.handle_box else None
        self.log.append((step, layout.grid, layout.text_len, q.shape[0]))
        return super().forward(q, k, v, layout, scale=scale)


def apply_spy(pipe, **kwargs):
    spy = Spy()
    handle = accel.apply(pipe, spy, **kwargs)
    spy.handle_box.append(handle)
    return spy, handle


def num_self_attn(family, pipe):
    t = pipe.transformer
    return len(t.blocks) if family == "wan" else len(t.transformer_blocks) + len(t.single_transformer_blocks)


# ---------------------------------------------------------------------- equality with upstream
@pytest.mark.parametrize("family", FAMILIES)
def test_dense_equals_stock_pipeline(family):
    pipe = shared_pipe(family)
    stock = run(pipe, family)
    spy, handle = apply_spy(pipe)
    with handle:
        out = run(pipe, family)
    assert len(spy.log) == 2 * CALLS_PER_STEP[family] * num_self_attn(family, pipe)  # really routed
    if family == "hunyuan_video":  # text padding: masked kernel path vs SDPA with a bool mask
        torch.testing.assert_close(out, stock, atol=1e-5, rtol=0)
    else:  # same SDPA call as diffusers' native backend
        assert torch.equal(out, stock)


@pytest.mark.parametrize("family", FAMILIES)
def test_sparse_layout_on_some_layers_matches_masked_dense_reference(family):
    pipe = shared_pipe(family)
    size = SPARSE_SIZE[family]
    stock = run(pipe, family, size=size, output_type="latent")
    method = RandomVideoBlocks(seed=5, density=0.35, block_size=16, backend="reference")
    with accel.apply(pipe, method, layers=[1]) as handle:
        sparse = run(pipe, family, size=size, output_type="latent")
        assert len(handle.layers[0]) == 1
    with accel.apply(pipe, MaskedDenseReference(of=method), layers=[1]):
        reference = run(pipe, family, size=size, output_type="latent")
    assert (sparse - stock).abs().max() > 1e-3, "the sparse layout should change the output"
    torch.testing.assert_close(sparse, reference, atol=1e-4, rtol=1e-4)


def test_wan_image_to_video_dense_equals_stock_and_keeps_cross_attention():
    pipe = tiny_pipeline("wan_i2v")
    pipe.set_progress_bar_config(disable=True)
    stock = run(pipe, "wan_i2v")
    with accel.apply(pipe, Dense()):
        procs = pipe.transformer.attn_processors
        assert all(type(p) is AccelWanAttnProcessor for n, p in procs.items() if ".attn1." in n)
        assert all(type(p).__name__ == "WanAttnProcessor" for n, p in procs.items() if ".attn2." in n)
        out = run(pipe, "wan_i2v")
    assert torch.equal(out, stock)


# ---------------------------------------------------------------------- steps, batches, shapes
@pytest.mark.parametrize("family", FAMILIES)
def test_step_counting_under_cfg_and_reset_per_call(family):
    pipe = shared_pipe(family)
    spy, handle = apply_spy(pipe)
    per_step = CALLS_PER_STEP[family] * num_self_attn(family, pipe)
    with handle:
        ends = []
        run(pipe, family, steps=3, callback_on_step_end=lambda p, i, t, kw: (ends.append(handle.step), kw)[1])
        assert ends == [0, 1, 2]
        assert [s for s, *_ in spy.log] == [0] * per_step + [1] * per_step + [2] * per_step
        assert handle.step == -1  # reset by the pipeline at the end of the call
        spy.log.clear()
        run(pipe, family, steps=2)
        assert [s for s, *_ in spy.log] == [0] * per_step + [1] * per_step


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_schedule_keeps_first_steps_and_layers_dense(family):
    pipe = shared_pipe(family)
    n = num_self_attn(family, pipe)
    spy, handle = apply_spy(pipe, schedule=accel.Schedule(dense_steps=1, dense_layers=1, dense_last_steps=1))
    with handle:
        stock_like = run(pipe, family, steps=4)
    # steps 1 and 2 run the method, in layers 1.. only
    assert [s for s, *_ in spy.log] == [1] * (CALLS_PER_STEP[family] * (n - 1)) + [2] * (CALLS_PER_STEP[family] * (n - 1))
    assert torch.isfinite(stock_like).all()


def test_fraction_schedule_needs_steps_from_pipeline():
    pipe = shared_pipe("flux")
    with accel.apply(pipe.transformer, Dense(), schedule=accel.Schedule(dense_last_steps=0.5)):
        with pytest.raises(ValueError, match="needs the number of inference steps"):
            run(pipe, "flux")
    spy, handle = apply_spy(pipe, schedule=accel.Schedule(dense_last_steps=0.5))  # the pipeline is known
    with handle:
        run(pipe, "flux", steps=4)
    assert sorted({s for s, *_ in spy.log}) == [0, 1]


def test_direct_transformer_calls_count_distinct_timesteps():
    pipe = shared_pipe("wan")
    transformer = pipe.transformer
    spy, handle = apply_spy(transformer)
    x = torch.randn(1, 16, 2, 4, 4)
    text = torch.randn(1, 5, 32)
    with handle, torch.no_grad():
        for t in (999.0, 999.0, 500.0, 500.0, 10.0):
            transformer(x, torch.tensor([t]), text)
        assert sorted({s for s, *_ in spy.log}) == [0, 1, 2]
        handle.reset()
        transformer(x, torch.tensor([10.0]), text)
        assert spy.log[-1][0] == 0


@pytest.mark.parametrize("family", ["wan", "hunyuan_video"])
def test_batch_of_two_matches_stock(family):
    pipe = shared_pipe(family)
    # two prompts of different lengths: HunyuanVideo pads them differently (per-sample text mask)
    kwargs = dict(prompt=["dance monkey", "a cat"], negative_prompt=["negative", "bad"])
    stock = run(pipe, family, **kwargs)
    spy, handle = apply_spy(pipe)
    with handle:
        out = run(pipe, family, **kwargs)
    assert out.shape[0] == 2 and all(b == 2 for *_, b in spy.log)
    torch.testing.assert_close(out, stock, atol=1e-5, rtol=0)


def test_shape_change_between_calls_builds_a_new_layout():
    pipe = shared_pipe("flux")
    stock_small, stock_big = run(pipe, "flux", size=8), run(pipe, "flux", size=16)
    spy, handle = apply_spy(pipe)
    with handle:
        small, big = run(pipe, "flux", size=8), run(pipe, "flux", size=16)
    assert {g for _, g, *_ in spy.log} == {(1, 4, 4), (1, 8, 8)}
    assert torch.equal(small, stock_small) and torch.equal(big, stock_big)


def test_two_pipelines_in_one_process_do_not_interfere():
    a, b = shared_pipe("wan"), tiny_pipeline("wan", seed=1)
    b.set_progress_bar_config(disable=True)
    method_b = RandomVideoBlocks(seed=2, density=0.3, block_size=16, backend="reference")
    with accel.apply(b, method_b):
        solo_b = run(b, "wan", size=64, output_type="latent")
    stock_a = run(a, "wan", size=64, output_type="latent")
    spy, handle_a = apply_spy(a, schedule=accel.Schedule(dense_steps=1))
    with handle_a, accel.apply(b, method_b) as handle_b:
        out_a = run(a, "wan", size=64, output_type="latent")
        ends = []
        out_b = run(b, "wan", size=64, output_type="latent", callback_on_step_end=lambda p, i, t, kw: (
            ends.append((handle_a.step, handle_b.step)), kw)[1])
        assert ends == [(-1, 0), (-1, 1)]  # a's counter was reset after its call; b counts its own
    assert torch.equal(out_a, stock_a) and torch.equal(out_b, solo_b)
    assert {s for s, *_ in spy.log} == {1}


# ---------------------------------------------------------------------- install / remove
@pytest.mark.parametrize("family", FAMILIES)
def test_remove_restores_processors_exactly(family):
    pipe = shared_pipe(family)
    transformer = pipe.transformer
    before = dict(transformer.attn_processors)
    handle = accel.apply(pipe, Dense(), layers="single_transformer_blocks|blocks")
    changed = {n for n, p in transformer.attn_processors.items() if p is not before[n]}
    assert changed and all(isinstance(transformer.attn_processors[n], PROCESSOR[family]) for n in changed)
    assert all(".attn1." in n for n in changed) if family == "wan" else all("refiner" not in n for n in changed)
    with pytest.raises(ValueError, match="already installed"):
        accel.apply(pipe, Dense())
    handle.remove()
    handle.remove()  # idempotent
    after = transformer.attn_processors
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert not any(hasattr(m, "_accel_binding") for m in transformer.modules())
    assert transformer._diffusers_hook.get_hook("accel_root") is None
    assert accel.remove(pipe) is False
    accel.apply(pipe, Dense())
    assert accel.remove(pipe) is True
    assert all(transformer.attn_processors[n] is before[n] for n in before)


def test_set_attn_processor_by_hand_needs_attach():
    pipe = shared_pipe("wan")
    transformer = pipe.transformer
    stock = run(pipe, "wan")
    before = dict(transformer.attn_processors)
    procs = {n: AccelWanAttnProcessor(Dense()) if ".attn1." in n else p for n, p in before.items()}
    transformer.set_attn_processor(procs)
    try:
        with pytest.raises(RuntimeError, match=r"accel\.processors\.attach\(transformer\)"):
            run(pipe, "wan")
        with accel.processors.attach(pipe):
            assert torch.equal(run(pipe, "wan"), stock)
    finally:
        transformer.set_attn_processor(dict(before))


# ---------------------------------------------------------------------- bad input
def test_unsupported_model_lists_supported_ones():
    with pytest.raises(TypeError, match="supported transformers: WanTransformer3DModel, "
                                        "HunyuanVideoTransformer3DModel, FluxTransformer2DModel"):
        accel.apply(torch.nn.Linear(2, 2), Dense())
    with pytest.raises(TypeError, match="needs a diffusers pipeline"):
        accel.apply(object(), Dense())
    with pytest.raises(TypeError, match="method must be an accel attention method"):
        accel.apply(shared_pipe("wan"), "dense")
    with pytest.raises(TypeError, match="schedule must be an accel.Schedule"):
        accel.apply(shared_pipe("wan"), Dense(), schedule=3)


def test_layer_filters():
    pipe = shared_pipe("hunyuan_video")
    with pytest.raises(ValueError, match="matches none of the 2 self-attention layers"):
        accel.apply(pipe, Dense(), layers="no_such_block")
    with pytest.raises(ValueError, match=r"layers \[7\] are out of range"):
        accel.apply(pipe, Dense(), layers=[0, 7])
    with pytest.raises(ValueError, match="not a valid regular expression"):
        accel.apply(pipe, Dense(), layers="(")
    with pytest.raises(TypeError, match="layers must hold ints"):
        accel.apply(pipe, Dense(), layers=["0"])
    assert not any(hasattr(m, "_accel_binding") for m in pipe.transformer.modules())  # nothing left behind
    with accel.apply(pipe, Dense(), layers=lambda index, name: index == 1) as handle:
        assert handle.layers[0] == ["single_transformer_blocks.0.attn"]


def test_sequence_not_matching_recorded_layout():
    pipe = shared_pipe("wan")
    with accel.apply(pipe, Dense()) as handle:
        handle._runs[0].layout = accel.TokenLayout((1, 2, 3))  # a stale layout: 6 tokens
        attn = pipe.transformer.blocks[0].attn1
        with pytest.raises(ValueError, match="q has 12 tokens but the token layout describes 6"):
            attn(torch.randn(1, 12, attn.inner_dim))

"""accel with what users already run: torch.compile, caching hooks, LoRA, model offloading (GPU)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing

import accel
from accel.methods import Dense
from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

from ..methods.helpers import RandomVideoBlocks
from .test_pipelines import Spy, apply_spy, run, shared_pipe


def _transformer_inputs(family, pipe):
    g = torch.Generator().manual_seed(0)
    if family == "wan":
        return dict(hidden_states=torch.randn(1, 16, 2, 8, 8, generator=g), timestep=torch.tensor([500.0]),
                    encoder_hidden_states=torch.randn(1, 6, 32, generator=g))
    if family == "hunyuan_video":
        mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
        return dict(hidden_states=torch.randn(1, 4, 2, 4, 4, generator=g), timestep=torch.tensor([500]),
                    encoder_hidden_states=torch.randn(1, 6, 16, generator=g), encoder_attention_mask=mask,
                    pooled_projections=torch.randn(1, 8, generator=g), guidance=torch.tensor([3500.0]))
    ids = torch.zeros(64, 3)
    ids[:, 1], ids[:, 2] = torch.arange(64) // 8, torch.arange(64) % 8
    return dict(hidden_states=torch.randn(1, 64, 4, generator=g), encoder_hidden_states=torch.randn(1, 6, 32, generator=g),
                pooled_projections=torch.randn(1, 32, generator=g), timestep=torch.tensor([0.5]),
                img_ids=ids, txt_ids=torch.zeros(6, 3))


@pytest.mark.parametrize("family, backend", [("wan", "inductor"), ("hunyuan_video", "aot_eager"), ("flux", "aot_eager")])
def test_torch_compile_fullgraph_of_the_transformer(family, backend):
    pipe = tiny_pipeline(family, num_layers=1)
    transformer = pipe.transformer
    inputs = _transformer_inputs(family, pipe)
    with torch.no_grad():
        stock = transformer(**inputs, return_dict=False)[0]
    method = Dense() if family != "flux" else RandomVideoBlocks(seed=0, density=0.5, block_size=16)
    with accel.apply(transformer, method) as handle, torch.no_grad():
        torch._dynamo.reset()
        compiled = torch.compile(transformer, fullgraph=True, backend=backend)
        if family == "flux":  # img_ids cannot be read inside the graph: the grid must be known
            with pytest.raises(Exception, match="set_image_grid"):
                compiled(**inputs, return_dict=False)
            handle.set_image_grid(8, 8)
            torch._dynamo.reset()
        out = compiled(**inputs, return_dict=False)[0]
        eager = transformer(**inputs, return_dict=False)[0]
    if family == "flux":
        assert (eager - stock).abs().max() > 1e-4
    else:
        torch.testing.assert_close(eager, stock, atol=1e-5, rtol=0)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)


def test_compiled_pipeline_recompiles_only_at_schedule_boundaries():
    pipe = shared_pipe("wan")
    stock = run(pipe, "wan", steps=3)
    original = pipe.transformer
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    torch._dynamo.reset()
    with accel.apply(pipe, Dense(), schedule=accel.Schedule(dense_steps=1)) as handle:
        try:
            pipe.transformer = torch.compile(original, fullgraph=True, backend=counter)
            ends = []
            out = run(pipe, "wan", steps=3, callback_on_step_end=lambda p, i, t, kw: (ends.append(handle.step), kw)[1])
        finally:
            pipe.transformer = original
    assert ends == [0, 1, 2]
    assert counter.frame_count == 2  # dense step 0, then the method for steps 1-2 (cond + uncond share)
    assert torch.equal(out, stock)


def test_compiled_transformer_outside_a_pipeline_with_step_schedule_explains_the_fix():
    pipe = tiny_pipeline("wan", num_layers=1)
    transformer = pipe.transformer
    inputs = _transformer_inputs("wan", pipe)
    torch._dynamo.reset()
    with accel.apply(transformer, Dense(), schedule=accel.Schedule(dense_steps=1)) as handle, torch.no_grad():
        compiled = torch.compile(transformer, fullgraph=True, backend="eager")
        with pytest.raises(Exception, match="cache_context"):
            compiled(**inputs)
        handle.set_step(3)  # the documented way out: steps set by hand, or a cache context
        torch._dynamo.reset()
        with transformer.cache_context("cond"):
            compiled(**inputs)
        assert handle.step == 4


def test_survives_forward_swapping_hooks_installed_after_apply():
    """The order users write -- enable_model_cpu_offload() then accel.apply() -- with accelerate's hook
    removed and re-added around every call, as diffusers' offloading does (emulated on CPU)."""
    from accelerate.hooks import ModelHook as AccelerateHook
    from accelerate.hooks import add_hook_to_module, remove_hook_from_module

    pipe = shared_pipe("wan")
    stock = run(pipe, "wan")
    add_hook_to_module(pipe.transformer, AccelerateHook())
    try:
        spy, handle = apply_spy(pipe)
        with handle:
            for _ in range(2):
                out = run(pipe, "wan")
                remove_hook_from_module(pipe.transformer)
                add_hook_to_module(pipe.transformer, AccelerateHook())
    finally:
        remove_hook_from_module(pipe.transformer)
    assert torch.equal(out, stock)
    assert [s for s, *_ in spy.log] == ([0] * 4 + [1] * 4) * 2  # 2 layers x (cond, uncond)


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_first_block_cache_composes(family):
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    pipe = tiny_pipeline(family)
    pipe.set_progress_bar_config(disable=True)
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(threshold=0.5))
    spy, handle = apply_spy(pipe, schedule=accel.Schedule(dense_steps=1))
    with handle:
        ends = []
        out = run(pipe, family, steps=4, callback_on_step_end=lambda p, i, t, kw: (ends.append(handle.step), kw)[1])
        assert ends == [0, 1, 2, 3]
        assert {s for s, *_ in spy.log} <= {1, 2, 3} and spy.log
        assert torch.isfinite(out).all()
        again = run(pipe, family, steps=4)  # state of both hooks resets per call
        assert torch.equal(again, out)
    assert pipe.transformer._diffusers_hook.get_hook("accel_root") is None
    assert torch.isfinite(run(pipe, family, steps=2)).all()  # the cache hook still works alone


def test_lora_loaded_weights_compose():
    peft = pytest.importorskip("peft")
    pipe = tiny_pipeline("flux")
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    config = peft.LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    transformer.add_adapter(config, adapter_name="tiny")
    stock = run(pipe, "flux")
    with accel.apply(pipe, Dense()):
        out = run(pipe, "flux")
    assert torch.equal(out, stock)
    transformer.disable_adapters()
    assert (run(pipe, "flux") - stock).abs().max() > 0  # the adapter did something


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["wan", "hunyuan_video", "flux"])
def test_model_cpu_offload_on_gpu(family):
    pipe = tiny_pipeline(family)
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_model_cpu_offload()
    kwargs = dict(output_type="latent", size={"wan": 64, "hunyuan_video": 32, "flux": 16}[family])
    stock = run(pipe, family, **kwargs)
    with accel.apply(pipe, Dense()):
        dense = run(pipe, family, **kwargs)
    torch.testing.assert_close(dense, stock, atol=2e-3, rtol=2e-3)
    spy = Spy()
    with accel.apply(pipe, spy):
        run(pipe, family, **kwargs)
    assert spy.log
    method = RandomVideoBlocks(seed=1, density=0.4, block_size=16, backend="triton")
    with accel.apply(pipe, method, layers=[1]):
        sparse = run(pipe, family, **kwargs)
    assert torch.isfinite(sparse).all() and (sparse - stock).abs().max() > 1e-4


def test_tiny_call_kwargs_are_fresh():
    a, b = tiny_call_kwargs("flux"), tiny_call_kwargs("flux")
    assert a["generator"] is not b["generator"]

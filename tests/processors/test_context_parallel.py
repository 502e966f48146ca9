"""accel methods under diffusers' own context parallelism (Ulysses), on CPU: 2 processes joined by Gloo.

What runs here is diffusers' real machinery end to end -- ``enable_parallelism``, the ``_cp_plan``
split/gather hooks (accel's plan for HunyuanVideo), the Ulysses all-to-alls of
``_templated_context_parallel_attention`` over Gloo -- on the tiny pipelines. One deviation: diffusers
0.42.1 computes ``rank % torch.accelerator.device_count()`` while resolving the config, which divides
by zero on a CPU-only torch, so the workers report one device. What only a multi-GPU run shows:
NCCL's all-to-all, bf16/fp16 numerics, the Triton kernel (here the dense reference backend computes
the block layouts) and speed.

Every output is compared with the single-process output of the same method, schedule and seed,
computed in the same worker.
"""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch

from ..distributed import run_gloo

FAMILIES = ("wan", "hunyuan_video", "flux")
SIZE = {"wan": 64, "hunyuan_video": 32, "flux": 16}  # several 16-token blocks, shares divisible by 2
METHODS = ("dense", "radial", "neighborhood", "clear_local", "rectified", "agent", "agent_pool")
TOLERANCE = 1e-5


def _method(name: str):
    import accel

    return {
        "dense": lambda: accel.Dense(backend="reference"),
        "radial": lambda: accel.Radial(decay=0.01, block_size=16, granularity="token", backend="reference"),
        "neighborhood": lambda: accel.Neighborhood(window=3, block_size=16, backend="reference"),
        "clear_local": lambda: accel.ClearLocal(radius=1.5, block_size=16, backend="reference"),
        "rectified": lambda: accel.Rectified(drop=0.75, tau=0.1, block_size=16, keep_neighbors=False, backend="reference"),
        "agent": lambda: accel.Agent(block_size=16, backend="reference"),  # AgentSD's token merging (the default)
        "agent_pool": lambda: accel.Agent(agents=8, formation="pool", block_size=16, backend="reference"),
    }[name]()


def _run(pipe, family: str, size: int | None = None) -> torch.Tensor:
    from accel.pipelines.tiny import tiny_call_kwargs

    kwargs = tiny_call_kwargs(family, size=size or SIZE[family])
    kwargs["output_type"] = "latent"
    return pipe(**kwargs)[0]


def _with_transformer(pipe, transformer):
    """A pipeline sharing ``pipe``'s components but ``transformer``."""
    return type(pipe)(**{**pipe.components, "transformer": transformer})


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _measure(compute):
    """``compute()``, or the text of the exception it raised (an error fails only its own test; errors
    raised here come from checks both ranks make alike, so the ranks stay in step)."""
    try:
        return compute()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"


def _close(value) -> bool:
    return isinstance(value, float) and value < TOLERANCE


def _family_cases(family: str, config) -> dict:
    """Every comparison for one family: {case: max |CP output - single-process output|}."""
    import accel
    from accel.pipelines.tiny import tiny_pipeline
    from accel.processors import enable_context_parallel

    ref = tiny_pipeline(family)
    ref.set_progress_bar_config(disable=True)
    pristine = copy.deepcopy(ref.transformer)
    schedule = accel.Schedule(dense_layers=1)  # layer 0 dense (diffusers' Ulysses), the others the method
    out: dict = {}
    stock = _run(ref, family)
    reference = {}
    for name in METHODS:
        with accel.apply(ref, _method(name), schedule=schedule):
            reference[name] = _run(ref, family)
        out[("changes", name)] = _diff(reference[name], stock)

    # parallelism first, accel.apply afterwards (each method in turn on the same pipeline)
    first = _with_transformer(ref, copy.deepcopy(pristine))
    enable_context_parallel(first, config)
    for name in METHODS:
        with accel.apply(first, _method(name), schedule=schedule):
            out[("enable_then_apply", name)] = _measure(lambda n=name: _diff(_run(first, family), reference[n]))
    # the case that used to be silently wrong: every layer dense, so only processors accel installed
    # after enable_parallelism compute the attention
    with accel.apply(first, accel.Dense(), schedule=accel.Schedule(dense_steps=2)):
        out[("enable_then_apply_all_dense", "dense")] = _measure(lambda: _diff(_run(first, family), stock))

    # accel.apply first, parallelism afterwards: a fresh transformer per method
    for name in METHODS:
        pipe = _with_transformer(ref, copy.deepcopy(pristine))
        handle = accel.apply(pipe, _method(name), schedule=schedule)
        enable_context_parallel(pipe, config)
        out[("apply_then_enable", name)] = _measure(lambda p=pipe, n=name: _diff(_run(p, family), reference[n]))
    handle.remove()  # the restored upstream processors must keep the parallel config
    out[("apply_enable_remove", "none")] = _measure(lambda: _diff(_run(pipe, family), stock))
    return out


def _refusals() -> dict:
    """Ring attention refused at apply and at the first call; ranks passing different latents refused."""
    from diffusers import ContextParallelConfig

    import accel
    from accel.pipelines.tiny import tiny_pipeline
    from accel.processors import enable_context_parallel

    out = {}
    wan = tiny_pipeline("wan")
    ring = ContextParallelConfig(ring_degree=2)
    t = copy.deepcopy(wan.transformer)
    enable_context_parallel(t, ring)
    try:
        accel.apply(t, _method("radial"))
        out["ring_at_apply"] = "no error"
    except ValueError as exc:
        out["ring_at_apply"] = str(exc)
    t = copy.deepcopy(wan.transformer)
    accel.apply(t, _method("radial"))
    enable_context_parallel(t, ContextParallelConfig(ring_degree=2))
    try:
        with torch.no_grad():
            t(torch.randn(1, 16, 3, 8, 8), torch.tensor([500.0]), torch.randn(1, 8, 32))
        out["ring_at_call"] = "no error"
    except ValueError as exc:
        out["ring_at_call"] = str(exc)

    # ranks that draw different noise (a different seed per rank) are told, not silently mixed
    t = copy.deepcopy(wan.transformer)
    enable_context_parallel(t, 2)
    accel.apply(t, _method("radial"))
    noise = torch.randn(1, 16, 3, 8, 8, generator=torch.Generator().manual_seed(torch.distributed.get_rank()))
    out["different_noise"] = _measure(lambda: t(noise, torch.tensor([500.0]), torch.randn(1, 8, 32)) and "no error")

    return out


def _worker(rank: int, world_size: int) -> dict:
    from accel.processors import ulysses_config

    # diffusers 0.42.1 resolves the device as rank % torch.accelerator.device_count(): 0 on CPU
    with mock.patch.object(torch.accelerator, "device_count", return_value=1), torch.no_grad():
        config = ulysses_config(world_size)
        results = {}
        for family in FAMILIES:
            results.update({(family, *case): value for case, value in _family_cases(family, config).items()})
        results.update(_refusals())
        return results


@pytest.fixture(scope="module")
def results() -> list[dict]:
    return run_gloo(_worker, 2, timeout=1200)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("order", ["enable_then_apply", "apply_then_enable"])
def test_ulysses_equals_single_process_for_every_method(results, family, order):
    for rank, got in enumerate(results):
        for name in METHODS:
            assert _close(got[(family, order, name)]), (rank, family, order, name, got[(family, order, name)])
    # the comparison is not vacuous: each sparse method changes the output of the tiny pipeline (Radial
    # on a single frame, FLUX, keeps every pair: its window spans the whole image; see test_radial.py)
    for name in METHODS[1:]:
        if (family, name) != ("flux", "radial"):
            assert results[0][(family, "changes", name)] > 1e-4, (family, name)


@pytest.mark.parametrize("family", FAMILIES)
def test_processors_installed_after_enable_parallelism_attend_to_the_whole_sequence(results, family):
    """accel.apply after enable_parallelism used to install processors without the parallel config:
    dense layers then attended to their rank's share only, with no error."""
    for got in results:
        value = got[(family, "enable_then_apply_all_dense", "dense")]
        assert _close(value), value


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_after_enable_keeps_the_parallel_config(results, family):
    for got in results:
        value = got[(family, "apply_enable_remove", "none")]
        assert _close(value), value


def test_ring_attention_is_refused_naming_ulysses(results):
    for got in results:
        for case in ("ring_at_apply", "ring_at_call"):
            assert "ring attention" in got[case] and "ulysses_degree" in got[case], (case, got[case])



# ---------------------------------------------------------------------- single-process rules
@pytest.mark.parametrize("uneven", [False, True])
@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("grid, text_len, side", [((3, 4, 4), 0, None), ((1, 6, 8), 12, "first"),
                                                  ((3, 4, 2), 24, "last")])
def test_gathered_positions_follow_diffusers_split_and_all_to_all(grid, text_len, side, world, uneven):
    """Simulate diffusers: each span cut by ``chunk`` / ``tensor_split`` (its two sharders), each rank's joint
    sequence built on the layout's text side, the all-to-all output = the ranks' sequences in rank order."""
    from accel.grid import TokenLayout
    from accel.processors.context_parallel import gathered_positions

    layout = TokenLayout(grid, text_len, side)
    n_video = layout.num_video_tokens
    if not uneven and (n_video % world or text_len % world):
        pytest.skip("diffusers' default sharder needs divisible spans")
    positions = torch.arange(layout.seq_len)
    video, text = positions[layout.video_slice], positions[layout.text_slice]
    split = (lambda x: x.tensor_split(world)) if uneven else (lambda x: x.chunk(world))
    text_parts = split(text) if text_len else [text[:0]] * world
    ranks = [torch.cat((t, v) if side == "first" else (v, t)) for t, v in zip(text_parts, split(video), strict=True)]
    want = torch.cat(ranks)
    got, order = gathered_positions(layout, world, uneven, "cpu")
    assert torch.equal(got, want)
    assert torch.equal(got[order], positions)


def test_uneven_spans_need_ulysses_anything():
    from accel.processors.context_parallel import chunk_sizes

    assert chunk_sizes(12, 4, False) == [3, 3, 3, 3]
    assert chunk_sizes(13, 4, True) == [4, 3, 3, 3]
    with pytest.raises(ValueError, match="13 tokens cannot be split evenly over 4"):
        chunk_sizes(13, 4, False)


def _faked_parallel_config(**cp):
    """A ParallelConfig as enable_parallelism records it on the model, without a process group (the
    checks below run before anything would communicate)."""
    from diffusers import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig

    return ParallelConfig(context_parallel_config=ContextParallelConfig(**cp))


def test_apply_refuses_ring_attention_and_heads_ulysses_cannot_split():
    import accel
    from accel.pipelines.tiny import tiny_pipeline

    pipe = tiny_pipeline("wan")  # 2 heads
    before = dict(pipe.transformer.attn_processors)
    for cp, message in ((dict(ring_degree=2), r"ring attention \(ring_degree=2.*ulysses_degree=N"),
                        (dict(ring_degree=2, ulysses_degree=2), "ring attention"),
                        (dict(ulysses_degree=4), "has 2 attention heads, which ulysses_degree=4 does not divide")):
        pipe.transformer._parallel_config = _faked_parallel_config(**cp)
        with pytest.raises(ValueError, match=message):
            accel.apply(pipe, _method("radial"))
        assert all(pipe.transformer.attn_processors[n] is p for n, p in before.items())  # nothing left behind
        assert not hasattr(pipe.transformer, "_accel_handle")


def test_replacing_a_processor_keeps_its_backend_and_parallel_config():
    import accel
    from accel.pipelines.tiny import tiny_pipeline

    pipe = tiny_pipeline("flux")
    attn = pipe.transformer.transformer_blocks[0].attn
    config = _faked_parallel_config(ulysses_degree=2)
    attn.processor._attention_backend, attn.processor._parallel_config = "native", config
    upstream = attn.processor
    handle = accel.apply(pipe, _method("dense"), layers=[0])
    assert attn.processor is not upstream
    assert (attn.processor._attention_backend, attn.processor._parallel_config) == ("native", config)
    attn.processor._attention_backend = "_native_math"  # e.g. set_attention_backend while accel is installed
    handle.remove()
    assert attn.processor is upstream and upstream._attention_backend == "_native_math"


def test_attention_controllers_refuse_context_parallelism():
    from types import SimpleNamespace

    from accel.processors.base import Route, route_attention

    q = torch.randn(1, 4, 2, 8)
    route = Route(None, binding=None, control=object(), mask=None)
    with pytest.raises(NotImplementedError, match="controllers .* do not support diffusers' context parallelism"):
        route_attention(q, q, q, route, parallel_config=SimpleNamespace(context_parallel_config=object()))


def test_enable_context_parallel_needs_an_accelerator():
    from accel.pipelines.tiny import tiny_pipeline
    from accel.processors import enable_context_parallel

    with pytest.raises(RuntimeError, match="needs an accelerator"):
        enable_context_parallel(tiny_pipeline("flux"), 2)


def test_ranks_with_different_noise_are_refused(results):
    for got in results:
        assert got["different_noise"].startswith("ValueError: the ranks of a context-parallel group called the "
                                                 "transformer with different inputs"), got["different_noise"]

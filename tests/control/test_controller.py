"""The controller on the tiny FLUX / Wan / HunyuanVideo pipelines: bit-identity with the stock pipeline,
source never modified, identical prompts, step counting under CFG, composition, refusals."""

import pytest
import torch

import accel
from accel.control import ConsistEdit, Controller, MutualSelfAttention, Rule
from accel.editing import edit_generated
from accel.editing.pipeline import token_grid
from tests.control.helpers import SOURCE, STEPS, TARGET, build, call_kwargs, stock_pair

FAMILIES = ["flux", "wan", "hunyuan_video"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_pipe(request):
    pipe = build(request.param)
    return request.param, pipe, stock_pair(pipe, request.param)


def _processors(pipe):
    return {k: type(v) for k, v in pipe.transformer.attn_processors.items()}


def test_inactive_or_all_edit_without_lock_is_bit_identical(family_pipe):
    family, pipe, (src_ref, tgt_ref) = family_pipe
    before = _processors(pipe)
    for kwargs in (dict(alpha=0.0), dict(alpha=0.0, layers=None), dict(alpha=1.0, steps_window=(STEPS, STEPS))):
        window = kwargs.pop("steps_window", None)
        if window is None:
            result = edit_generated(pipe, SOURCE, TARGET, steps=STEPS, seed=0, **kwargs, **call_kwargs(family))
            src, tgt = result.source, result.target
        else:   # a controller whose step window is empty never acts
            controller = Controller([ConsistEdit(**kwargs)], steps=window, num_steps=STEPS)
            with controller.install(pipe):
                src, tgt = stock_pair(pipe, family)
        assert torch.equal(src, src_ref) and torch.equal(tgt, tgt_ref), kwargs
    # an explicit all-edit mask with the structure window closed
    kw = call_kwargs(family)
    grid_all = torch.ones(token_grid(pipe, height=kw["height"], width=kw["width"], num_frames=kw.get("num_frames")),
                          dtype=torch.bool)
    result = edit_generated(pipe, SOURCE, TARGET, mask=grid_all, alpha=0.0, steps=STEPS, seed=0, **kw)
    assert torch.equal(result.source, src_ref) and torch.equal(result.target, tgt_ref)
    assert _processors(pipe) == before, "processors must be restored after editing"


def test_source_never_modified_and_target_changes(family_pipe):
    family, pipe, (src_ref, tgt_ref) = family_pipe
    kw = call_kwargs(family)
    grid = token_grid(pipe, height=kw["height"], width=kw["width"], num_frames=kw.get("num_frames"))
    mask = torch.zeros(grid, dtype=torch.bool)
    mask.view(-1)[::2] = True
    for rule in ("consistedit", "masactrl"):
        result = edit_generated(pipe, SOURCE, TARGET, mask=mask, alpha=0.5, steps=STEPS, seed=0, rule=rule,
                                layers=None, **kw)
        assert torch.equal(result.source, src_ref), rule
        assert not torch.equal(result.target, tgt_ref), rule   # the rule did act on the target


def test_identical_prompts_give_identical_branches(family_pipe):
    family, pipe, _ = family_pipe
    kw = call_kwargs(family)
    grid = token_grid(pipe, height=kw["height"], width=kw["width"], num_frames=kw.get("num_frames"))
    mask = torch.rand(grid, generator=torch.Generator().manual_seed(0)) > 0.5
    for alpha in (0.0, 0.5, 1.0):
        result = edit_generated(pipe, SOURCE, SOURCE, mask=mask, alpha=alpha, steps=STEPS, seed=3, layers=None, **kw)
        # same inputs in both rows; batched kernels may round rows differently by ~1 ulp
        torch.testing.assert_close(result.target, result.source, rtol=0, atol=1e-5)


class _Recorder(Rule):
    def __init__(self):
        self.calls = []

    def observe(self, call, q, k, v):
        self.calls.append((call.step, call.layer, call.context, q.shape[0]))


@pytest.mark.parametrize("family", ["wan", "hunyuan_video"])
def test_steps_counted_not_calls_under_cfg(family):
    pipe = build(family)
    rec = _Recorder()
    with Controller([rec], layers=[0], num_steps=STEPS).install(pipe):
        stock_pair(pipe, family)
    # guidance runs two transformer calls per step (cond, uncond), each holding the (source, target) pair
    assert [(s, c, b) for s, _, c, b in rec.calls] == [(0, "cond", 2), (0, "uncond", 2), (1, "cond", 2),
                                                       (1, "uncond", 2)]


def test_composes_with_an_applied_sparse_method():
    family = "flux"
    pipe = build(family)
    handle = accel.apply(pipe, accel.Neighborhood(window=(-1, 3, 3), backend="reference"))
    try:
        src_ref, _ = stock_pair(pipe, family)
        rec = _Recorder()
        with Controller([rec, ConsistEdit(alpha=1.0)], num_steps=STEPS).install(pipe):
            src, tgt = stock_pair(pipe, family)
        assert rec.calls and all(layer == 1 for _, layer, _, _ in rec.calls)   # FLUX default: single-stream block
        assert torch.equal(src, src_ref)
        assert all(type(p).__name__ == "AccelFluxAttnProcessor" for p in pipe.transformer.attn_processors.values())
    finally:
        handle.remove()


def test_refuses_layer_skipping_cache_hooks():
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    pipe = build("flux")
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(threshold=0.05))
    with pytest.raises(ValueError, match="FirstBlockCache"):
        Controller([ConsistEdit()]).install(pipe)
    assert all(type(p).__name__ == "FluxAttnProcessor" for p in pipe.transformer.attn_processors.values())


def test_controller_argument_errors():
    with pytest.raises(TypeError, match="rules"):
        Controller([])
    with pytest.raises(ValueError, match="steps"):
        Controller([MutualSelfAttention()], steps=(3, 1))
    with pytest.raises(ValueError, match="num_steps"):
        Controller([MutualSelfAttention()], num_steps=0)
    with pytest.raises(TypeError, match="does not support"):
        Controller([ConsistEdit()]).install(torch.nn.Linear(2, 2))

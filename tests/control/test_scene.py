"""The keep-the-scene rules (accel.control.scene): latent and cross-attention blending outside the edit mask,
against per-position loops on raw tensors, and end to end on the tiny pipelines against the source itself
(nothing editable -> the target must be the source exactly) and upstream's output (everything editable)."""

import numpy as np
import pytest
import torch

from accel.control import AttentionCall, ConsistEdit, Controller
from accel.control.scene import CrossAttentionBlend, LatentBlend, SourceStart, latent_mask
from accel.editing import edit_generated
from accel.grid import TokenLayout
from tests.control.helpers import SOURCE, STEPS, TARGET, build, call_kwargs, stock_pair


def _random(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _random_mask(grid, seed=1):
    return torch.rand(grid, generator=torch.Generator().manual_seed(seed)) > 0.5


def test_latent_blend_on_video_latents_matches_a_loop():
    grid, size = (3, 2, 2), (3, 4, 6)          # each token covers 1 x 2 x 3 latent positions
    mask = _random_mask(grid)
    latents = _random((4, 5, *size), seed=0)    # two (source, target) pairs, 5 channels
    out = LatentBlend(mask).blend_latents(0, latents)
    expected = latents.clone()
    for pair in range(2):
        for t in range(size[0]):
            for y in range(size[1]):
                for x in range(size[2]):
                    if not mask[t, y // 2, x // 3]:
                        expected[2 * pair + 1, :, t, y, x] = latents[2 * pair, :, t, y, x]
    assert torch.equal(out, expected)
    assert not torch.equal(out, latents)        # the random mask keeps some positions


def test_latent_blend_on_packed_flux_latents_matches_a_loop():
    grid = (1, 3, 4)
    mask = _random_mask(grid, seed=2)
    latents = _random((2, 12, 7), seed=3)
    out = LatentBlend(mask).blend_latents(5, latents)
    expected = latents.clone()
    for i in range(12):                         # token i = row-major (y, x) = (i // 4, i % 4)
        if not mask[0, i // 4, i % 4]:
            expected[1, i] = latents[0, i]
    assert torch.equal(out, expected)


def test_latent_blend_steps_window():
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    latents = _random((2, 4, 1, 2, 2), seed=4)
    rule = LatentBlend(mask, steps=range(2, 4))
    assert torch.equal(rule.blend_latents(1, latents), latents)
    assert torch.equal(rule.blend_latents(3, latents)[1], latents[0])


def test_cross_attention_blend_matches_a_loop():
    layout = TokenLayout((2, 2, 3))
    mask = _random_mask(layout.grid, seed=5)
    out = _random((4, 12, 6), seed=6)
    call = AttentionCall(0, 2, 0, "blocks.0.attn2", layout, "wan", None, True)
    blended = CrossAttentionBlend(mask).blend_cross_output(call, out)
    expected = out.clone()
    flat = mask.reshape(-1)
    for pair in range(2):
        for j in range(12):
            if not flat[j]:
                expected[2 * pair + 1, j] = out[2 * pair, j]
    assert torch.equal(blended, expected)


def test_bad_masks_and_shapes_are_refused():
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        LatentBlend(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        CrossAttentionBlend(np.zeros((1, 2, 2), dtype=bool))
    with pytest.raises(ValueError, match="steps must be None"):
        LatentBlend(torch.zeros(1, 2, 2, dtype=torch.bool), steps=[1, 2])
    with pytest.raises(ValueError, match="does not divide the latent grid"):
        latent_mask(torch.zeros(1, 3, 3, dtype=torch.bool), torch.zeros(2, 4, 1, 4, 4))
    with pytest.raises(ValueError, match="packed latents hold 5 tokens"):
        latent_mask(torch.zeros(1, 2, 2, dtype=torch.bool), torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="pairs"):
        LatentBlend(torch.zeros(1, 2, 2, dtype=torch.bool)).blend_latents(0, torch.zeros(3, 4, 1, 2, 2))


@pytest.fixture(scope="module")
def wan():
    return build("wan")


def _nothing_editable(pipe, family):
    kw = call_kwargs(family)
    from accel.editing.pipeline import token_grid

    return torch.zeros(token_grid(pipe, height=kw["height"], width=kw["width"], num_frames=kw.get("num_frames")),
                       dtype=torch.bool), kw


def test_wan_cross_attention_blend_with_nothing_editable_gives_the_source(wan):
    """ConsistEdit with an all-keep mask takes the source's self-attention Q/K/V, but Wan's cross-attention still
    reads the target prompt: only with CrossAttentionBlend is the target exactly the source."""
    mask, kw = _nothing_editable(wan, "wan")
    alone = edit_generated(wan, SOURCE, TARGET, mask=mask.numpy(), alpha=1.0, steps=STEPS, **kw)
    assert not torch.allclose(alone.source, alone.target, atol=1e-4)
    kept = edit_generated(wan, SOURCE, TARGET, mask=mask.numpy(), alpha=1.0, steps=STEPS,
                          keep_scene="cross_attention", **kw)
    assert torch.allclose(kept.source, kept.target, atol=1e-6)
    assert torch.allclose(kept.source, alone.source, atol=1e-6)   # the source row is never touched


def test_cross_attention_blend_with_everything_editable_is_upstream(wan):
    kw = call_kwargs("wan")
    mask = _nothing_editable(wan, "wan")[0] | True
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    controller = Controller([ConsistEdit(alpha=0.0, mask=mask), CrossAttentionBlend(mask)], num_steps=STEPS)
    with controller.install(wan):
        out = wan(prompt=[SOURCE, TARGET], num_inference_steps=STEPS, generator=gens, **kw).frames
    source, target = stock_pair(wan, "wan")
    assert torch.allclose(out[0], source, atol=1e-5) and torch.allclose(out[1], target, atol=1e-5)


@pytest.mark.parametrize("family", ["flux", "hunyuan_video", "wan"])
def test_latent_blend_with_nothing_editable_gives_the_source(family):
    pipe = build(family)
    mask, kw = _nothing_editable(pipe, family)
    result = edit_generated(pipe, SOURCE, TARGET, mask=mask.numpy(), alpha=0.0, steps=STEPS, keep_scene="latents",
                            **kw)
    assert torch.allclose(torch.as_tensor(np.asarray(result.source)), torch.as_tensor(np.asarray(result.target)),
                          atol=1e-6)
    source, _ = stock_pair(pipe, family)
    assert torch.allclose(torch.as_tensor(np.asarray(result.source)), torch.as_tensor(np.asarray(source)), atol=1e-5)


def test_keep_scene_is_checked_before_any_denoising(wan):
    kw = call_kwargs("wan")
    with pytest.raises(ValueError, match="keep_scene must be None, one of"):
        edit_generated(wan, SOURCE, TARGET, edit_words="red", keep_scene="background", steps=STEPS, **kw)
    with pytest.raises(ValueError, match="keep_scene must be None, one of"):
        edit_generated(wan, SOURCE, TARGET, edit_words="red", keep_scene=("latents", "latents"), steps=STEPS, **kw)
    with pytest.raises(ValueError, match="this edit has none"):
        edit_generated(wan, SOURCE, TARGET, keep_scene="latents", steps=STEPS, **kw)


def test_source_start_copies_the_source_rows_before_its_step_only():
    latents = _random((4, 3, 2, 2, 2), seed=7)            # two (source, target) pairs
    rule = SourceStart(2)
    for step in (0, 1):
        out = rule.blend_latents(step, latents)
        for pair in range(2):                             # reference: row by row
            assert torch.equal(out[2 * pair + 1], latents[2 * pair])
            assert torch.equal(out[2 * pair], latents[2 * pair])
    assert torch.equal(rule.blend_latents(2, latents), latents)   # its own denoising from step 2 on
    assert torch.equal(SourceStart(0).blend_latents(0, latents), latents)
    with pytest.raises(ValueError, match="steps .* must be an int >= 0"):
        SourceStart(-1)
    with pytest.raises(ValueError, match="pairs"):
        rule.blend_latents(0, latents[:3])


def test_source_steps_all_steps_gives_the_source_and_none_leaves_the_edit(wan):
    """source_steps=steps: the target is the source (upstream's source generation); source_steps=0: the edit
    is untouched (the same as not passing it)."""
    kw = call_kwargs("wan")
    held = edit_generated(wan, SOURCE, TARGET, edit_words="red", alpha=0.3, steps=STEPS, source_steps=STEPS, **kw)
    source, _ = stock_pair(wan, "wan")
    assert torch.allclose(held.target, held.source, atol=1e-6)
    assert torch.allclose(held.source, source, atol=1e-5)
    plain = edit_generated(wan, SOURCE, TARGET, edit_words="red", alpha=0.3, steps=STEPS, **kw)
    off = edit_generated(wan, SOURCE, TARGET, edit_words="red", alpha=0.3, steps=STEPS, source_steps=0, **kw)
    assert torch.equal(off.target, plain.target)
    assert not torch.allclose(plain.target, plain.source, atol=1e-4)
    part = edit_generated(wan, SOURCE, TARGET, edit_words="red", alpha=0.3, steps=STEPS, source_steps=STEPS - 1, **kw)
    assert not torch.allclose(part.target, part.source, atol=1e-6)   # the last step is the target's own
    for bad in (-1, STEPS + 1, True, 1.0):
        with pytest.raises(ValueError, match="source_steps must be an int"):
            edit_generated(wan, SOURCE, TARGET, edit_words="red", steps=STEPS, source_steps=bad, **kw)

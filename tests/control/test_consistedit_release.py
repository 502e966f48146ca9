"""ConsistEdit's defaults compute what its release computes (issue 19): the FLUX edit mask (softmax over
every joint key, single-stream blocks), int(T * alpha), the real-image path's Q/K recorded during the
UniInv inversion and replayed in the source rows.

References: tests/control/consistedit_release.py (ports written from the research notes).
"""

from __future__ import annotations

import pytest
import torch

from accel.control import AttentionCall, ConsistEdit, Controller, EditMaskObserver, Rule, SourceQK
from accel.control.mask import normalise_per_frame
from accel.editing.inversion import InversionScheduler
from accel.grid import TokenLayout

from .consistedit_release import attended_mask, flux_mask, uniinv
from .helpers import SOURCE, STEPS, build, call_kwargs

FLUX = TokenLayout((1, 3, 4), text_len=5, text_side="first")


def _call(layout, family="flux", step=0, layer=0, context=None):
    return AttentionCall(step, 10, layer, "single_transformer_blocks.0.attn", layout, family, context, False)


def test_flux_mask_is_the_release_joint_softmax():
    g = torch.Generator().manual_seed(0)
    calls = [tuple(torch.randn(1, FLUX.seq_len, 3, 8, generator=g) * 1.5 for _ in range(2)) for _ in range(4)]
    observer = EditMaskObserver([1, 2], rows="all", query_chunk=5)
    for step, (q, k) in enumerate(calls):
        observer.observe(_call(FLUX, step=step), q, k, k)
    heat, mask = flux_mask(calls, [1, 2], FLUX.text_len, FLUX.grid)
    torch.testing.assert_close(observer.heatmap(), heat, atol=1e-5, rtol=1e-5)
    assert torch.equal(observer.mask(), mask)
    ours = EditMaskObserver([1, 2], rows="all", softmax="text")   # the text-only softmax differs
    for step, (q, k) in enumerate(calls):
        ours.observe(_call(FLUX, step=step), q, k, k)
    assert (ours.heatmap() - heat).abs().max() > 1e-2


# HunyuanVideo-like: text last, per-sample padding that the model's attention never sees
PADDED = TokenLayout((2, 3, 4), text_len=6, text_side="last",
                     text_mask=torch.tensor([[True, True, True, False, False, False], [True] * 5 + [False]]))


def _padded_calls(seed, n=3):
    """Q/K whose padded text keys would take much of the softmax if they were in it (so leaving them in
    changes the map)."""
    g = torch.Generator().manual_seed(seed)
    calls = []
    for _ in range(n):
        q, k = (torch.randn(2, PADDED.seq_len, 2, 8, generator=g) for _ in range(2))
        for b in range(2):
            pad = PADDED.text_start + torch.nonzero(~PADDED.text_mask[b]).flatten()
            k[b, pad] += 2.0 * q[b, PADDED.video_slice].mean(0)
        calls.append((q, k))
    return calls


@pytest.mark.parametrize("softmax", [None, "text", "joint"])
def test_mask_softmax_leaves_out_the_padded_text_keys(softmax):
    """A model that masks its padded text (HunyuanVideo) never attends those keys, so they are not in its
    attention map: the observer's softmax (the default video rule "text", and "joint") runs over the valid
    keys only (reference: tests/control/consistedit_release.attended_mask)."""
    calls = _padded_calls(2)
    observer = EditMaskObserver([0, 2], rows="all", softmax=softmax, query_chunk=7)
    for step, (q, k) in enumerate(calls):
        observer.observe(_call(PADDED, family="hunyuan_video", step=step), q, k, k)
    heat, mask = attended_mask(calls, [0, 2], PADDED, softmax or "text")
    torch.testing.assert_close(observer.heatmap(), heat, atol=1e-5, rtol=1e-5)
    assert torch.equal(observer.mask(), mask)
    every_key = attended_mask(calls, [0, 2], PADDED.with_text_mask(None), softmax or "text")[0]
    assert (every_key - heat).abs().max() > 0.05   # the inputs tell the two rules apart


def test_normalisation_adds_the_release_epsilon():
    """``(x - min) / (max - min + 1e-6)`` per frame: on a map whose range is a few 1e-6 the epsilon matters
    (hand-computed: range 4e-6 -> the maximum maps to 0.8, not 1; 0.5e-6 above the minimum -> 0.1, not
    above the 0.1 threshold)."""
    frame = torch.tensor([[[0.0, 0.5e-6], [2e-6, 4e-6]], [[3.0, 3.0], [3.0, 3.0]]])
    want = torch.tensor([[[0.0, 0.1], [0.4, 0.8]], [[0.0, 0.0], [0.0, 0.0]]])
    torch.testing.assert_close(normalise_per_frame(frame), want, atol=1e-6, rtol=0)


def test_flux_mask_of_a_near_uniform_map_is_the_release_one():
    """Small queries make the attention almost uniform, so the edit tokens' map spans about 1e-6: the
    release's ``+ 1e-6`` halves it and the 0.1 threshold then marks another set than without the epsilon."""
    g = torch.Generator().manual_seed(1)
    calls = [(torch.randn(1, FLUX.seq_len, 3, 8, generator=g) * 3e-5, torch.randn(1, FLUX.seq_len, 3, 8, generator=g))
             for _ in range(2)]
    observer = EditMaskObserver([1, 2], rows="all")
    for step, (q, k) in enumerate(calls):
        observer.observe(_call(FLUX, step=step), q, k, k)
    heat, mask = flux_mask(calls, [1, 2], FLUX.text_len, FLUX.grid)
    flat = heat.flatten()
    assert 0.2 < float(flat.max()) < 0.9    # the epsilon is comparable to the map's range
    torch.testing.assert_close(observer.heatmap(), heat, atol=0.02, rtol=0)
    clear = (flat - 0.1).abs() > 0.02       # points float32 can decide
    assert torch.equal(observer.mask().flatten()[clear], mask.flatten()[clear])


def test_flux_mask_is_observed_in_the_single_stream_blocks():
    flux = build("flux")
    observer = EditMaskObserver([1], rows="all")
    with Controller([observer], num_steps=STEPS).install(flux):   # layers="auto": the observer's
        flux(prompt=SOURCE, num_inference_steps=STEPS, output_type="latent", **{
            k: v for k, v in call_kwargs("flux").items() if k != "output_type"})
    assert observer.count == STEPS * len(flux.transformer.single_transformer_blocks)


def test_flux_edit_mask_keeps_the_padded_t5_keys_in_the_softmax():
    """FLUX attends every T5 token, padding included (no text mask), and so does the release's mask softmax
    (all 512 text keys): edit_generated's mask pass on tiny FLUX (16 text tokens, "a red monkey" padded)
    equals the release's map computed from the Q/K of the observed calls."""
    from accel.editing import edit_generated

    flux = build("flux")
    spy = _Spy()
    original = Controller.install

    def install(self, pipe):
        self.rules.append(spy)
        return original(self, pipe)

    Controller.install = install
    try:
        result = edit_generated(flux, SOURCE, "a blue monkey", edit_words="red", alpha=1.0, steps=STEPS, seed=0,
                                **call_kwargs("flux"))
    finally:
        Controller.install = original
    ids = flux.tokenizer_2(SOURCE, max_length=16, truncation=True)["input_ids"]
    word = flux.tokenizer_2("red", add_special_tokens=False)["input_ids"]   # the tiny T5: one token a character
    start = next(i for i in range(len(ids)) if ids[i:i + len(word)] == word)
    red = list(range(start, start + len(word)))
    assert len(ids) < 16   # the prompt is padded: 16 - len(ids) padded keys
    observed = [(q, k) for kind, _, _, q, k in spy.seen if kind == "observe" and q.shape[0] == 1]
    assert len(observed) == STEPS * len(flux.transformer.single_transformer_blocks)
    heat, mask = flux_mask(observed, red, 16, tuple(result.heatmap.shape))
    torch.testing.assert_close(result.heatmap, heat, atol=1e-5, rtol=1e-5)
    valid_only = attended_mask(observed, red, TokenLayout(tuple(result.heatmap.shape), 16, "first", torch.tensor(
        [[i < len(ids) for i in range(16)]])), "joint")[0]
    assert (valid_only - heat).abs().max() > 1e-3   # leaving the padding out would change the map here


def test_lock_steps_are_int_of_t_times_alpha():
    assert ConsistEdit(alpha=0.29).structure_steps(100) == int(100 * 0.29) == 28   # not round(28.999..) = 29
    assert ConsistEdit(alpha=0.1).structure_steps(28) == 2


def test_uniinv_is_the_release_scheme():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    wrapper = InversionScheduler(sched, "uniinv")
    wrapper.set_timesteps(num_inference_steps=6)
    down = [float(s) for s in sched.sigmas[:6]]
    assert len(wrapper.timesteps) == 7

    def velocity(x, sigma):  # any smooth field of x and sigma
        return torch.sin(3 * x) * (1 + sigma) - 0.5 * x * sigma

    x0 = torch.randn(2, 5, generator=torch.Generator().manual_seed(3))
    sample = x0
    for i, t in enumerate(wrapper.timesteps):
        sample = wrapper.step(velocity(sample, float(wrapper.sigmas[i])), t, sample)[0]
    want = uniinv(x0, down, velocity)
    assert len(wrapper.trajectory) == len(want) == 6
    for got, ref in zip(wrapper.trajectory, want, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sample, want[-1], atol=1e-6, rtol=1e-6)


class _Spy(Rule):
    """Records the Q/K a rule chain hands on (runs after SourceQK in rewrite order)."""

    def __init__(self):
        self.seen = []

    def observe(self, call, q, k, v):
        self.seen.append(("observe", call.step, call.layer, q.clone(), k.clone()))

    def rewrite_qkv(self, call, q, k, v):
        self.seen.append(("rewrite", call.step, call.layer, q.clone(), k.clone()))
        return q, k, v


def test_source_qk_pairs_inversion_call_c_with_step_t_minus_1_minus_c():
    layout = FLUX
    steps = 3
    qk = SourceQK(steps).recording()
    g = torch.Generator().manual_seed(1)
    recorded = {}
    for c in range(steps + 1):  # UniInv: T + 1 inversion calls
        q, k = (torch.randn(1, layout.seq_len, 2, 4, generator=g) for _ in range(2))
        qk.observe(_call(layout, step=c, layer=7), q, k, k)
        recorded[c] = (q, k)
    assert sorted(qk.store) == [(s, 7) for s in range(steps)]
    qk.replaying()
    vs = layout.video_slice
    for step in range(steps):
        q, k, v = (torch.randn(2, layout.seq_len, 2, 4, generator=g) for _ in range(3))
        q2, k2, v2 = qk.rewrite_qkv(_call(layout, step=step, layer=7), q, k, v)
        src_q, src_k = recorded[steps - 1 - step]
        assert torch.equal(q2[0, vs], src_q[0, vs]) and torch.equal(k2[0, vs], src_k[0, vs])
        assert torch.equal(q2[1], q[1]) and torch.equal(q2[0, layout.text_slice], q[0, layout.text_slice])
        assert v2 is v
        unc = qk.rewrite_qkv(_call(layout, step=step, layer=7, context="uncond"), q, k, v)
        assert unc[0] is q
    with pytest.raises(RuntimeError, match="no source Q/K was recorded for step 0, layer 3"):
        qk.rewrite_qkv(_call(layout, step=0, layer=3), q, k, v)


def test_real_edit_replays_the_inversion_qk_in_the_source_rows():
    """edit()'s default on tiny FLUX: the source rows' vision Q/K in every controlled call are the ones the
    UniInv inversion recorded for that step (the controller runs SourceQK's rewrite before the others)."""
    from accel.editing import edit

    flux = build("flux")
    spy = _Spy()
    original = Controller.install

    def install(self, pipe):  # add the spy to every controller edit() installs
        self.rules.append(spy)
        return original(self, pipe)

    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(4))
    Controller.install = install
    try:
        result = edit(flux, image, SOURCE, "a blue monkey", edit_words="red", steps=STEPS, max_sequence_length=16)
    finally:
        Controller.install = original
    assert result.inversion.method == "uniinv" and len(result.inversion.trajectory) == STEPS
    inverting = [s for s in spy.seen if s[0] == "observe" and s[3].shape[0] == 1]
    editing = [s for s in spy.seen if s[0] == "rewrite" and s[3].shape[0] == 2]
    layers = {s[2] for s in editing}
    assert len(layers) == len(flux.transformer.single_transformer_blocks)
    assert {(s[1], s[2]) for s in inverting} == {(c, layer) for c in range(STEPS + 1) for layer in layers}
    vs = slice(16, None)  # text first (16 tokens), then the 4 x 4 image tokens
    for _, step, layer, q, k in editing:
        _, _, _, q_inv, k_inv = next(s for s in inverting if s[1] == STEPS - 1 - step and s[2] == layer)
        assert torch.equal(q[0, vs], q_inv[0, vs]) and torch.equal(k[0, vs], k_inv[0, vs])
    assert result.heatmap is not None and tuple(result.mask.shape) == (1, 4, 4)

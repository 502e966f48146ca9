"""Rules on raw tensors: ConsistEdit's fusion, MasaCtrl's mutual attention and the edit-mask observer,
each against a hand-written reference (explicit per-token loops / plain softmax attention)."""

import math

import pytest
import torch

from accel.control import AttentionCall, ConsistEdit, EditMaskObserver, MutualSelfAttention
from accel.grid import TokenLayout

GRID = (2, 2, 3)  # 12 vision tokens
LAYOUTS = {
    "flux": TokenLayout((1, 3, 4), text_len=5, text_side="first"),
    "hunyuan_video": TokenLayout(GRID, text_len=4, text_side="last",
                                 text_mask=torch.tensor([[True, True, True, False]] * 4)),
    "wan": TokenLayout(GRID),
}


def _call(family, step=0, num_steps=10, context=None, cross=False):
    return AttentionCall(step, num_steps, 0, "x", LAYOUTS[family], family, context, cross)


def _qkv(layout, batch=4, heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, layout.seq_len, heads, dim, generator=g) for _ in range(3)]


def _random_mask(layout, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(layout.grid, generator=g) > 0.5


def _reference_fusion(x, layout, mask, take_source_everywhere):
    """Per-token reference: target vision token j gets the source's unless (not locked and mask[j])."""
    out = x.clone()
    flat = mask.reshape(-1)
    for pair in range(x.shape[0] // 2):
        for j in range(layout.num_video_tokens):
            pos = layout.video_start + j
            use_target = (not take_source_everywhere) and bool(flat[j])
            out[2 * pair + 1, pos] = x[2 * pair + 1, pos] if use_target else x[2 * pair, pos]
    return out


@pytest.mark.parametrize("family", sorted(LAYOUTS))
@pytest.mark.parametrize("step", [0, 2, 3, 9])
def test_consistedit_fusion_matches_reference(family, step):
    layout = LAYOUTS[family]
    q, k, v = _qkv(layout)
    mask = _random_mask(layout)
    rule = ConsistEdit(alpha=0.3, mask=mask)   # floor(0.3 * 10) = 3 locked steps
    q2, k2, v2 = rule.rewrite_qkv(_call(family, step), q, k, v)
    locked = step < 3
    assert torch.equal(q2, _reference_fusion(q, layout, mask, locked))
    assert torch.equal(k2, _reference_fusion(k, layout, mask, locked))
    assert torch.equal(v2, _reference_fusion(v, layout, mask, False))
    # source rows and text tokens are never touched; inputs are not modified in place
    for new, old in ((q2, q), (k2, k), (v2, v)):
        assert torch.equal(new[0::2], old[0::2])
        assert torch.equal(new[:, layout.text_slice], old[:, layout.text_slice])
    assert torch.equal(q, _qkv(layout)[0])


def test_consistedit_lock_window_is_floor_alpha_t():
    assert [ConsistEdit(alpha=a).structure_steps(10) for a in (0.0, 0.1, 0.29, 0.3, 1.0)] == [0, 1, 2, 3, 10]
    assert ConsistEdit(alpha=0.1).structure_steps(28) == 2


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "0.3", True])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha"):
        ConsistEdit(alpha=alpha)


def test_consistedit_refuses_mask_of_wrong_grid():
    layout = LAYOUTS["wan"]
    q, k, v = _qkv(layout)
    rule = ConsistEdit(alpha=0.0, mask=torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="token grid"):
        rule.rewrite_qkv(_call("wan", 5), q, k, v)


def _attention(q, k, v, key_valid=None):
    """Plain softmax attention [B, S, H, D] (the independent reference operator)."""
    scores = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(q.shape[-1])
    if key_valid is not None:
        scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    return torch.einsum("bhst,bthd->bshd", scores.softmax(-1), v)


@pytest.mark.parametrize("family", ["flux", "wan"])
def test_masactrl_target_vision_queries_attend_source_kv(family):
    layout = LAYOUTS[family]
    q, k, v = _qkv(layout, seed=3)
    out = MutualSelfAttention(start_step=1).attention(_call(family, step=1), q, k, v, _attention)
    vis, txt = layout.video_slice, layout.text_slice
    for pair in range(2):
        s, t = 2 * pair, 2 * pair + 1
        keys = k[t].clone()
        vals = v[t].clone()
        keys[vis], vals[vis] = k[s, vis], v[s, vis]      # source vision K/V, the target's own text K/V
        expected = _attention(q[t:t + 1, vis], keys[None], vals[None])[0]
        torch.testing.assert_close(out[t, vis], expected, rtol=1e-5, atol=1e-6)
        own = _attention(q[t:t + 1], k[t:t + 1], v[t:t + 1])[0]
        torch.testing.assert_close(out[t, txt], own[txt], rtol=1e-5, atol=1e-6)   # text queries unchanged
        torch.testing.assert_close(out[s], _attention(q[s:s + 1], k[s:s + 1], v[s:s + 1])[0], rtol=1e-5, atol=1e-6)
    before = MutualSelfAttention(start_step=2).attention(_call(family, step=1), q, k, v, _attention)
    torch.testing.assert_close(before, _attention(q, k, v))


def _planted(layout, region, word_pos, batch=4, heads=2, dim=16, scale=8.0):
    """q/k where only the vision queries in ``region`` attend the key at text position ``word_pos``."""
    q = torch.zeros(batch, layout.seq_len, heads, dim)
    k = torch.zeros(batch, layout.seq_len, heads, dim)
    text = list(range(layout.text_start, layout.text_start + layout.text_len))
    for i, pos in enumerate(text):
        k[:, pos, :, 1 + i] = scale                       # text key i points along axis 1+i
    k[:, text[word_pos], :, 0] = scale                    # the edit word's key also along axis 0
    flat = region.reshape(-1)
    for j in range(layout.num_video_tokens):
        axis = 0 if flat[j] else 1 + (word_pos + 1) % layout.text_len
        q[:, layout.video_start + j, :, axis] = scale
    return q, k


@pytest.mark.parametrize("family", ["flux", "hunyuan_video"])
def test_mask_recovers_planted_region(family):
    layout = LAYOUTS[family]
    region = torch.zeros(layout.grid, dtype=torch.bool)
    region.view(-1)[[1, 2, 5, 6]] = True
    if layout.grid[0] > 1:
        region[1].view(-1)[[0, 4]] = True   # a different region in the second latent frame
    q, k = _planted(layout, region, word_pos=1)
    obs = EditMaskObserver([1], rows="all", head_chunk=1, query_chunk=5)   # chunked softmax: same result
    for step in range(3):
        obs.observe(_call(family, step), q, k, k)
    assert obs.count == 3
    assert torch.equal(obs.mask(), region)
    heat = obs.heatmap()
    assert heat.amin() >= 0 and heat.amax() <= 1
    whole = EditMaskObserver([1], rows="all")
    whole.observe(_call(family), q, k, k)
    torch.testing.assert_close(whole.heatmap(), heat)


def test_mask_excludes_padding_and_uncond_calls():
    layout = LAYOUTS["hunyuan_video"]   # the last text token is padding
    region = torch.zeros(layout.grid, dtype=torch.bool)
    region.view(-1)[[0, 7]] = True
    q, k = _planted(layout, region, word_pos=1)
    pad = layout.text_start + 3
    k[:, pad, :, :] = 50.0     # a padding key every query would prefer -- must be ignored
    q_bad = q.clone()
    q_bad[:, layout.video_slice] = 0
    obs = EditMaskObserver([1], rows="all")
    obs.observe(_call("hunyuan_video"), q, k, k)
    obs.observe(_call("hunyuan_video", context="uncond"), q_bad, k, k)   # CFG's negative-prompt call: skipped
    assert obs.count == 1
    assert torch.equal(obs.mask(), region)


def test_mask_from_wan_cross_attention_and_source_rows():
    layout = LAYOUTS["wan"]
    region = torch.zeros(GRID, dtype=torch.bool)
    region.view(-1)[[3, 4, 10]] = True
    text_layout = TokenLayout(GRID, text_len=6, text_side="last")
    q, k = _planted(text_layout, region, word_pos=2, batch=4)
    qv, kt = q[:, text_layout.video_slice], k[:, text_layout.text_slice]
    qv[1::2] = torch.flip(qv[1::2], dims=[1])   # target rows attend elsewhere: ignored with rows="source"
    obs = EditMaskObserver([2], valid_text_len=6, rows="source")
    obs.observe(_call("wan"), *_qkv(layout))    # Wan self-attention has no text: nothing to observe
    assert obs.count == 0
    obs.observe_cross(_call("wan", cross=True), qv, kt)
    assert torch.equal(obs.mask(), region)
    assert layout.text_len == 0

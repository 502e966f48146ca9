"""accel.Rectified: our named options against an independent fp64 brute force (token-level selection mask
from the pooled scores, rectified output computed densely), exact special cases, backends, and through
accel.apply. The defaults (the release's) are checked in test_rectified_release.py."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import accel
from accel.grid import TokenLayout
from accel.methods.base import AttentionMethod
from accel.methods.rectified import Rectified, morton_order, top_k_blocks

from .helpers import tiny_latent_runner
from .method_checks import qkv, text_layouts
from .rectified_release import release_attention

BLOCK = 16
MARGIN = 1e-5  # brute-force decisions this close to a threshold are ambiguous in float32: skipped
# our options, which the brute force below implements: blocks in the caller's order, no neighbours, the
# text keys outside the top-k count, the own block always, a ragged block pooled over its real tokens
OURS = dict(order="sequence", keep_neighbors=False, count_text=False, keep_own_block=True, pooling="exact")


@st.composite
def video_grids(draw):
    t = draw(st.integers(1, 4))
    h = draw(st.integers(1, 4))
    w = draw(st.integers(1, max(1, 96 // (t * h))))
    return (t, h, w)


def brute_force(q, k, v, layout, *, drop, tau, gapr, rectify, block=BLOCK, check_margins=True):
    """fp64 reference built token by token. Returns the output [B, S, H, D] (q's dtype)."""
    q, k, v = q.double(), k.double(), v.double()
    bsz, s_len, heads, dim = q.shape
    scale = 1 / math.sqrt(dim)
    n = layout.num_video_tokens
    v0 = layout.video_start
    t0 = layout.text_start
    blocks = [list(range(v0 + a, v0 + min(a + block, n))) for a in range(0, n, block)]
    nb = len(blocks)
    top_k = int((1 - drop) * nb)
    text_valid = [[True] * layout.text_len for _ in range(bsz)]
    if layout.text_mask is not None:
        text_valid = [layout.text_mask[b % layout.text_mask.shape[0]].tolist() for b in range(bsz)]
    out = torch.zeros_like(q)
    for b in range(bsz):
        valid_text = [t0 + t for t in range(layout.text_len) if text_valid[b][t]]
        key_ok = torch.zeros(s_len, dtype=torch.bool)
        key_ok[layout.video_slice] = True
        key_ok[valid_text] = True
        for h in range(heads):
            qb = [q[b, idx, h].mean(0) for idx in blocks]
            kb = [k[b, idx, h].mean(0) for idx in blocks]
            vb = [v[b, idx, h].mean(0) for idx in blocks]
            dq = [(q[b, idx, h] - qb[i]).abs().mean(0) for i, idx in enumerate(blocks)]
            dk = [(k[b, idx, h] - kb[i]).abs().mean(0) for i, idx in enumerate(blocks)]
            mask = key_ok.repeat(s_len, 1)  # text queries: every valid key
            rect = {}
            for i, qidx in enumerate(blocks):
                w = [len(blocks[j]) * math.exp(scale * float(qb[i] @ kb[j])) for j in range(nb)]
                z = sum(w) + sum(math.exp(scale * float(qb[i] @ k[b, t, h])) for t in valid_text)
                p = [x / z for x in w]
                order = sorted(range(nb), key=lambda j: -p[j])
                cum, count = 0.0, 0
                for j in order:
                    cum += p[j]
                    if check_margins:
                        assume(abs(cum - tau) > MARGIN)
                    count += cum <= tau
                n_i = min(nb, max(top_k, 1 + count))
                if check_margins and n_i < nb:
                    assume(p[order[n_i - 1]] - p[order[n_i]] > MARGIN)
                sel = set(order[:n_i]) | {i}
                comp = []
                if rectify:
                    for j in range(nb):
                        if j in sel:
                            continue
                        gain = abs(float(qb[i] @ kb[j]))
                        noise = abs(float(dq[i] @ kb[j])) + abs(float(qb[i] @ dk[j]))
                        if gapr and check_margins:
                            assume(abs(gain - noise) > MARGIN * (1 + gain))
                        if not gapr or gain > noise:
                            comp.append(j)
                row = torch.zeros(s_len, dtype=torch.bool)
                row[valid_text] = True
                for j in sel:
                    row[blocks[j]] = True
                mask[qidx] = row
                r = 1 - sum(p[j] for j in comp)
                assert -1e-9 <= r <= 1 + 1e-9
                rect[i] = (r, sum((p[j] * vb[j] for j in comp), torch.zeros(dim, dtype=torch.float64)))
            att = (scale * q[b, :, h] @ k[b, :, h].T).masked_fill(~mask, float("-inf")).softmax(-1)
            o = att @ v[b, :, h]
            for i, qidx in enumerate(blocks):
                r, c = rect[i]
                o[qidx] = r * o[qidx] + c
            out[b, :, h] = o
    return out.float()


@settings(max_examples=30)
@given(data=st.data())
def test_equals_brute_force(data):
    grid = data.draw(video_grids())
    batch = data.draw(st.integers(1, 2))
    layout = data.draw(text_layouts(grid, batch))
    drop = data.draw(st.sampled_from([0.0, 0.5, 0.75, 0.9]))
    tau = data.draw(st.sampled_from([0.0, 0.1, 0.3, 0.6, 1.0]))
    gapr, rectify = data.draw(st.booleans()), data.draw(st.booleans())
    q, k, v = qkv((batch, layout.seq_len, 2, 8), data.draw(st.integers(0, 1000)))
    want = brute_force(q, k, v, layout, drop=drop, tau=tau, gapr=gapr, rectify=rectify)
    method = Rectified(drop=drop, tau=tau, gapr=gapr, rectify=rectify, block_size=BLOCK, backend="reference", **OURS)
    torch.testing.assert_close(method(q, k, v, layout), want, atol=2e-5, rtol=1e-4)


def test_plain_dynamic_sparse_equals_masked_dense():
    """gapr=False, rectify=False: exactly dense attention masked by the selected blocks (+ text)."""
    layout = TokenLayout((3, 4, 8), 16, "first")
    q, k, v = qkv((2, layout.seq_len, 2, 16), 1)
    method = Rectified(drop=0.75, tau=0.2, gapr=False, rectify=False, block_size=BLOCK, backend="reference", **OURS)
    plan = method.plan(q, k, v, layout)
    assert not plan.compensated.any() and not plan.selected.all()
    tok = plan.selected.repeat_interleave(BLOCK, 2).repeat_interleave(BLOCK, 3)  # 96 video tokens = 6 blocks
    mask = torch.ones(2, 2, layout.seq_len, layout.seq_len, dtype=torch.bool)
    mask[:, :, 16:, 16:] = tok
    ref = F.scaled_dot_product_attention(*(t.transpose(1, 2).double() for t in (q, k, v)), attn_mask=mask)
    torch.testing.assert_close(method(q, k, v, layout), ref.transpose(1, 2).float(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("gapr", [True, False])
@pytest.mark.parametrize("text", [None, "first", "last"])
def test_every_block_selected_is_dense(gapr, text):
    layout = TokenLayout((2, 3, 7)) if text is None else TokenLayout(
        (2, 3, 7), 5, text, torch.tensor([[True, False, True, True, False]]))
    q, k, v = qkv((2, layout.seq_len, 2, 16), 2)
    dense = accel.Dense(block_size=BLOCK, backend="reference")(q, k, v, layout)
    for kwargs in (dict(drop=0.0, **OURS), dict(drop=0.9, tau=1.0), dict(drop=0.9, tau=1.0, **OURS)):
        out = Rectified(**kwargs, gapr=gapr, block_size=BLOCK, backend="reference")(q, k, v, layout)
        torch.testing.assert_close(out, dense, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("text", [None, "last"])
def test_block_constant_qk_is_dense_for_any_selection(text):
    """Q and K constant inside each block: the pooled estimate is exact, so rectified == dense."""
    grid = (2, 4, 5)  # 40 video tokens: blocks of 16, 16 and a ragged 8
    layout = TokenLayout(grid) if text is None else TokenLayout(grid, 6, text)
    n = layout.num_video_tokens
    q, k, v = qkv((1, layout.seq_len, 2, 16), 3)
    g = torch.Generator().manual_seed(4)
    for x in (q, k):
        per_block = torch.randn(1, 3, 2, 16, generator=g)
        x[:, layout.video_slice] = per_block.repeat_interleave(BLOCK, 1)[:, :n]
    method = Rectified(drop=0.9, tau=0.0, block_size=BLOCK, backend="reference", **OURS)
    plan = method.plan(q, k, v, layout)
    assert not plan.selected.all() and plan.compensated.any()
    dense = accel.Dense(block_size=BLOCK, backend="reference")(q, k, v, layout)
    torch.testing.assert_close(method(q, k, v, layout), dense, atol=2e-5, rtol=1e-4)


def test_gapr_rejecting_every_block_is_plain_block_sparse():
    """Query blocks with mean 0 fail the GAPR test everywhere: nothing is compensated."""
    layout = TokenLayout((4, 4, 4), 8, "last")  # 64 video tokens, 4 blocks
    q, k, v = qkv((2, layout.seq_len, 2, 16), 5)
    half = q[:, 0:64:2].clone()
    q[:, 0:64:2], q[:, 1:64:2] = half, -half  # every block of 16 tokens has mean exactly 0
    rect = Rectified(drop=0.75, tau=0.0, gapr=True, rectify=True, block_size=BLOCK, backend="reference", **OURS)
    plain = Rectified(drop=0.75, tau=0.0, gapr=False, rectify=False, block_size=BLOCK, backend="reference", **OURS)
    plan = rect.plan(q, k, v, layout)
    assert not plan.compensated.any() and not plan.selected.all()
    torch.testing.assert_close(rect(q, k, v, layout), plain(q, k, v, layout), atol=0, rtol=0)


@settings(max_examples=15)
@given(grid=video_grids(), seed=st.integers(0, 1000), drop=st.sampled_from([0.5, 0.8]),
       tau=st.sampled_from([0.0, 0.3]))
def test_plan_invariants(grid, seed, drop, tau):
    layout = TokenLayout(grid, 5, "first", torch.tensor([[True, True, False, True, True]]))
    q, k, v = qkv((2, layout.seq_len, 3, 8), seed)
    plan = Rectified(drop=drop, tau=tau, block_size=BLOCK, **OURS).plan(q, k, v, layout)
    nb = plan.p_hat.shape[-1]
    torch.testing.assert_close(plan.p_hat.sum(-1) + plan.p_text, torch.ones_like(plan.p_text))
    r = 1 - (plan.p_hat * plan.compensated).sum(-1)
    assert (r >= -1e-6).all() and (r <= 1 + 1e-6).all()
    assert plan.selected.diagonal(dim1=-2, dim2=-1).all()
    assert (plan.selected.sum(-1) >= top_k_blocks(drop, nb)).all()
    assert not (plan.selected & plan.compensated).any()
    assert (plan.p_text > 0).all()


@pytest.mark.parametrize("text", [None, "first", "last"])
def test_morton_order_round_trips(text):
    """order="morton" == the brute force on the Morton-gathered tokens, scattered back to the caller's order."""
    grid = (2, 4, 6)
    layout = TokenLayout(grid) if text is None else TokenLayout(grid, 5, text, torch.tensor([[True] * 4 + [False]]))
    q, k, v = qkv((2, layout.seq_len, 2, 8), 8)
    perm = morton_order(grid).tolist()
    vs = layout.video_slice
    video_pos = list(range(vs.start, vs.stop))
    gather = list(range(layout.seq_len))
    for i, p in enumerate(perm):
        gather[video_pos[i]] = video_pos[p]
    kwargs = dict(drop=0.75, tau=0.2, gapr=True, rectify=True)
    want_gathered = brute_force(q[:, gather], k[:, gather], v[:, gather], layout, **kwargs, check_margins=False)
    want = torch.empty_like(want_gathered)
    want[:, gather] = want_gathered
    out = Rectified(**kwargs, block_size=BLOCK, backend="reference", **{**OURS, "order": "morton"})(q, k, v, layout)
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-4)
    plain = Rectified(**kwargs, block_size=BLOCK, backend="reference", **OURS)(q, k, v, layout)
    assert (plain - out).abs().max() > 1e-4  # a different blocking


def test_morton_order_is_a_permutation_with_compact_blocks():
    grid = (2, 8, 8)
    perm = morton_order(grid)
    assert sorted(perm.tolist()) == list(range(128))
    t, y, x = perm // 64, (perm // 8) % 8, perm % 8
    for b in range(0, 128, 16):  # every 16 consecutive curve tokens fill a 2 x 2 x 4 box
        span = [(c[b:b + 16].max() - c[b:b + 16].min() + 1).item() for c in (t, y, x)]
        assert span[0] * span[1] * span[2] == 16
    odd = morton_order((3, 5, 7))
    assert sorted(odd.tolist()) == list(range(105))


@pytest.mark.parametrize("gapr", [False, True])
def test_triton_interpreted_equals_reference(gapr):
    """The kernel's fused epilogue against the reference backend on a case whose correction is far from the
    identity (checked first: a rescale R well below 1 and a compensation C far from 0 on some blocks), so
    the test fails when the kernel skips the epilogue, the rescale or the compensation."""
    layout = TokenLayout((2, 8, 8), 16, "last", torch.tensor([[True] * 10 + [False] * 6]))
    q, k, v = qkv((1, layout.seq_len, 2, 16), 6)
    kwargs = dict(drop=0.75, tau=0.1, block_size=BLOCK, gapr=gapr, **OURS)  # the options brute_force implements
    ref = Rectified(**kwargs, backend="reference")
    vs = layout.video_slice
    plan = ref.plan(q, k, v, layout)
    scale, shift = ref.rectification(plan)
    assert plan.compensated.any() and scale.min() < 0.9 and shift.abs().max() > 0.05
    want = ref(q, k, v, layout)
    got = Rectified(**kwargs, backend="triton")(q, k, v, layout)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # and the reference backend itself is the brute-force definition (the correction included)
    brute = brute_force(q, k, v, layout, drop=0.75, tau=0.1, gapr=gapr, rectify=True, check_margins=False)
    torch.testing.assert_close(want[:, vs], brute[:, vs], atol=2e-5, rtol=1e-4)


def test_half_precision_runs():
    layout = TokenLayout((2, 4, 4), 4, "first")
    q, k, v = (t.to(torch.bfloat16) for t in qkv((1, layout.seq_len, 2, 16), 7))
    out = Rectified(block_size=BLOCK, backend="reference")(q, k, v, layout)
    want = release_attention(q.float(), k.float(), v.float(), layout, drop=0.8, tau=0.3, block=BLOCK)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(drop=1.0), r"drop must be a number in \[0, 1\), got 1.0"),
        (dict(drop=-0.1), r"drop must be a number in \[0, 1\)"),
        (dict(drop=True), "drop must be a number"),
        (dict(tau=1.5), r"tau must be a number in \[0, 1\], got 1.5"),
        (dict(tau=float("nan")), "tau must be a number"),
        (dict(gapr=1), "gapr must be a bool, got 1"),
        (dict(rectify="yes"), "rectify must be a bool"),
        (dict(order="zigzag"), r"order must be one of \('hilbert', 'morton', 'sequence'\), got 'zigzag'"),
        (dict(pooling="mean"), "pooling must be one of"),
        (dict(count_text=None), "count_text must be a bool, got None"),
        (dict(dense_first_blocks=1), "dense_first_blocks must be a bool, got 1"),
        (dict(block_size=100), "block_size must be a power of two >= 16, got 100"),
        (dict(backend="cuda"), "backend must be one of"),
    ],
)
def test_construction_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Rectified(**kwargs)


def test_token_mask_is_undefined():
    with pytest.raises(TypeError, match="dynamic"):
        Rectified().token_mask(TokenLayout((1, 4, 4)), batch=1, heads=1)


# ---------------------------------------------------------------------- through accel.apply
@dataclasses.dataclass(frozen=True, eq=False)
class ReleaseRectified(AttentionMethod):
    """The fp64 port of the release as an attention method (reference for pipeline runs)."""

    kwargs: dict = None

    def forward(self, q, k, v, layout, *, scale=None):
        return release_attention(q, k, v, layout, block=BLOCK, **self.kwargs).to(q.dtype)


@pytest.mark.parametrize("family, per_prompt", [("wan", 1), ("wan", 2), ("hunyuan_video", 1), ("flux", 1)])
def test_apply_tiny_pipeline(family, per_prompt):
    """CFG is on in both tiny pipelines (two transformer calls per step); ``per_prompt=2`` makes batch 2."""
    pipe, run = tiny_latent_runner(family, per_prompt)
    kwargs = dict(drop=0.75, tau=0.1)  # tiny grids are all curve neighbours: leave them out to stay sparse

    stock = run()
    assert stock.shape[0] == per_prompt
    method = Rectified(**kwargs, keep_neighbors=False, block_size=BLOCK, backend="reference")
    with accel.apply(pipe, method, layers=[1]):
        sparse = run()
    with accel.apply(pipe, ReleaseRectified(kwargs={**kwargs, "neighbours": False}), layers=[1]):
        reference = run()
    torch.testing.assert_close(sparse, reference, atol=1e-4, rtol=1e-4)
    assert (sparse - stock).abs().max() > 1e-4, "the sparse method should change the output"


@pytest.mark.parametrize("grid", [(1, 5, 7), (3, 4, 5), (2, 1, 9)])
@pytest.mark.parametrize("morton", [False, True])
def test_neighbor_blocks_equal_brute_force(grid, morton):
    from accel.methods.rectified import morton_order, neighbor_blocks

    perm = morton_order(grid) if morton else None
    layout = TokenLayout(grid, permutation=perm)
    bs = 16
    t, h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 3)
    order = perm if perm is not None else torch.arange(t * h * w)
    seq_coords = coords[order]  # coordinates of the token at each sequence position
    near_tok = (seq_coords[:, None] - seq_coords[None]).abs().amax(-1) <= 1
    nb = -(-t * h * w // bs)
    want = torch.zeros(nb, nb, dtype=torch.bool)
    for i in range(nb):
        for j in range(nb):
            want[i, j] = near_tok[i * bs:(i + 1) * bs, j * bs:(j + 1) * bs].any()
    assert torch.equal(neighbor_blocks(layout, bs), want)


def test_keep_neighbors_adds_exactly_the_neighbor_blocks():
    from accel.methods.rectified import neighbor_blocks

    layout = TokenLayout((2, 6, 8))
    q, k, v = qkv((1, layout.seq_len, 2, 16), 7)
    base = Rectified(drop=0.9, tau=0.0, block_size=BLOCK, backend="reference", **OURS)
    plain = base.plan(q, k, v, layout)
    near = Rectified(drop=0.9, tau=0.0, block_size=BLOCK, backend="reference",
                     **{**OURS, "keep_neighbors": True}).plan(q, k, v, layout)
    assert torch.equal(near.selected, plain.selected | neighbor_blocks(layout, BLOCK))
    assert bool((near.selected & near.compensated).any()) is False


def test_presets_construct():
    from accel.methods.preset import MODEL_FAMILIES

    found = 0
    for name in MODEL_FAMILIES:
        if Rectified.published(name) is None:
            continue
        method = Rectified.preset(name).method
        assert 0.75 <= method.drop <= 0.9 and method.tau == 0.3, name
        assert method.order == "hilbert" and method.keep_neighbors and method.count_text, name
        assert method.dense_first_blocks == name.startswith("wan"), name
        found += 1
    assert found == 8  # HunyuanVideo, four Wan 2.1, two Wan 2.2, FLUX.1-dev
    # the release scripts' dense warm-ups (rectified_spaattn/*_attn.py processors)
    assert Rectified.preset("hunyuan-video").schedule == accel.Schedule()
    assert Rectified.preset("flux.1-dev").schedule == accel.Schedule(dense_last_layers=20)
    assert Rectified.preset("wan2.1-t2v-14b").schedule == accel.Schedule(dense_steps=5, dense_layers=2)
    assert Rectified.preset("wan2.1-i2v-14b-720p").schedule == accel.Schedule(dense_layers=2)
    assert Rectified.preset("wan2.2-t2v-a14b").schedule == accel.Schedule(dense_steps=3, dense_layers=2)

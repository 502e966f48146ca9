"""accel.Agent(formation="pool") (our pooled agents): against a naive fp64 einsum reference (agents pooled
by explicit loops), the special cases (one agent, constant keys, group-constant Q == dense), and through
accel.apply. The default (AgentSD's token merging) is checked in test_agent_release.py."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel.grid import TokenLayout
from accel.methods.agent import Agent, agent_grid
from accel.methods.base import AttentionMethod

from .helpers import tiny_latent_runner
from .method_checks import qkv, text_layouts

BLOCK = 16


@st.composite
def video_grids(draw):
    t = draw(st.integers(1, 4))
    h = draw(st.integers(1, 5))
    w = draw(st.integers(1, max(1, 80 // (t * h))))
    return (t, h, w)


def pooled_agents(q, layout, cells):
    """fp64 [B, n, H, D]: mean of the video queries in each adaptive-pooling cell (explicit loops)."""
    t, hh, w = layout.grid
    qv = q[:, layout.video_slice].double()
    perm = layout.permutation.tolist() if layout.permutation is not None else list(range(t * hh * w))
    pos = {rm: i for i, rm in enumerate(perm)}  # row-major index -> video position

    def spans(length, count):
        return [(math.floor(c * length / count), math.ceil((c + 1) * length / count)) for c in range(count)]

    out = []
    for t0, t1 in spans(t, cells[0]):
        for y0, y1 in spans(hh, cells[1]):
            for x0, x1 in spans(w, cells[2]):
                idx = [pos[(a * hh + y) * w + x] for a in range(t0, t1) for y in range(y0, y1) for x in range(x0, x1)]
                out.append(qv[:, idx].mean(1))
    return torch.stack(out, 1)


def naive(q, k, v, layout, *, agents, k_scale2, k_shortcut, scale=None):
    """Agent attention with einsums in fp64 (materialises n x S and N x n score matrices)."""
    bsz, s_len, heads, dim = q.shape
    s = 1 / math.sqrt(dim) if scale is None else scale
    a = pooled_agents(q, layout, agent_grid(agents, layout.grid))
    qd, kd, vd = q.double(), k.double(), v.double()
    valid = layout.key_padding_mask(bsz)
    valid = torch.ones(bsz, s_len, dtype=torch.bool) if valid is None else valid
    agg = (s * torch.einsum("bnhd,bshd->bhns", a, kd)).masked_fill(~valid[:, None, None], float("-inf")).softmax(-1)
    v_a = torch.einsum("bhns,bshd->bnhd", agg, vd)
    vs = layout.video_slice
    bc = (s ** k_scale2 * torch.einsum("bihd,bnhd->bhin", qd[:, vs], a)).softmax(-1)
    out = (s * torch.einsum("bihd,bshd->bhis", qd, kd)).masked_fill(~valid[:, None, None], float("-inf"))
    out = torch.einsum("bhis,bshd->bihd", out.softmax(-1), vd)
    out[:, vs] = torch.einsum("bhin,bnhd->bihd", bc, v_a) + k_shortcut * vd[:, vs]
    return out


@settings(max_examples=30)
@given(data=st.data())
def test_equals_naive_reference(data):
    grid = data.draw(video_grids())
    batch = data.draw(st.integers(1, 2))
    layout = data.draw(text_layouts(grid, batch))
    if data.draw(st.booleans()):
        perm = torch.randperm(layout.num_video_tokens, generator=torch.Generator().manual_seed(1))
        layout = TokenLayout(layout.grid, layout.text_len, layout.text_side, layout.text_mask, perm)
    agents = data.draw(st.one_of(st.integers(1, 20), st.tuples(*(st.integers(1, 6) for _ in range(3)))))
    k_scale2 = data.draw(st.sampled_from([0.3, 1.0, -0.5]))
    k_shortcut = data.draw(st.sampled_from([0.075, 0.0, 1.0]))
    q, k, v = qkv((batch, layout.seq_len, 2, 8), data.draw(st.integers(0, 1000)))
    method = Agent(formation="pool", agents=agents, k_scale2=k_scale2, k_shortcut=k_shortcut, block_size=BLOCK,
                   backend="reference")
    want = naive(q, k, v, layout, agents=agents, k_scale2=k_scale2, k_shortcut=k_shortcut)
    torch.testing.assert_close(method(q, k, v, layout), want.float(), atol=2e-5, rtol=1e-4)


def test_one_agent_rows_identical():
    layout = TokenLayout((2, 3, 5), 4, "first")
    q, k, v = qkv((2, layout.seq_len, 2, 16), 1)
    out = Agent(formation="pool", agents=1, k_shortcut=0.0, block_size=BLOCK, backend="reference")(q, k, v, layout)
    video = out[:, layout.video_slice]
    torch.testing.assert_close(video, video[:, :1].expand_as(video))


@pytest.mark.parametrize("shortcut", [0.0, 0.075])
def test_constant_keys_give_mean_value(shortcut):
    layout = TokenLayout((2, 4, 4), 6, "last", torch.tensor([[True, True, False, True, False, True]]))
    q, _, v = qkv((1, layout.seq_len, 2, 16), 2)
    k = torch.randn(1, 1, 2, 16).expand(1, layout.seq_len, 2, 16).contiguous()
    out = Agent(formation="pool", agents=6, k_shortcut=shortcut, block_size=BLOCK, backend="reference")(q, k, v, layout)
    valid = layout.key_padding_mask(1)[0]
    mean = v[:, valid].mean(1, keepdim=True)
    vs = layout.video_slice
    torch.testing.assert_close(out[:, vs], mean.expand_as(out[:, vs]) + shortcut * v[:, vs], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("text", [None, "first"])
def test_group_constant_queries_and_large_scale_equal_dense(text):
    """Q constant over each pooling cell: agents are the cell means (= those queries), the aggregation
    is each group's exact attention, and a sharp broadcast (large s^κ, κ < 0) picks the own agent."""
    grid = (2, 4, 6)
    layout = TokenLayout(grid) if text is None else TokenLayout(grid, 5, text)
    g = torch.Generator().manual_seed(3)
    cells = torch.nn.functional.normalize(torch.randn(1, 2 * 2 * 3, 2, 16, generator=g), dim=-1) * 2
    cell_of = torch.tensor([(t // 1) * 6 + (y // 2) * 3 + (x // 2) for t in range(2) for y in range(4) for x in range(6)])
    _, k, v = qkv((1, layout.seq_len, 2, 16), 4)
    q = torch.randn(1, layout.seq_len, 2, 16, generator=g)
    q[:, layout.video_slice] = cells[:, cell_of]
    method = Agent(formation="pool", agents=(2, 2, 3), k_scale2=-12.0, k_shortcut=0.0, block_size=BLOCK,
                   backend="reference")
    dense = accel.Dense(block_size=BLOCK, backend="reference")(q, k, v, layout)
    torch.testing.assert_close(method(q, k, v, layout), dense, atol=1e-5, rtol=1e-4)


def test_agent_grid():
    assert agent_grid(49, (1, 30, 45)) == (1, 7, 7)
    assert agent_grid(64, (13, 30, 52)) == (2, 4, 8)
    assert agent_grid(1, (3, 4, 5)) == (1, 1, 1)
    assert agent_grid(1000, (1, 4, 5)) == (1, 4, 5)  # capped at the grid
    assert agent_grid((3, 9, 2), (2, 4, 5)) == (2, 4, 2)
    for n, grid in [(12, (3, 4, 4)), (16, (1, 8, 8)), (30, (5, 6, 7))]:
        a = agent_grid(n, grid)
        assert a[0] * a[1] * a[2] == n and all(x <= g for x, g in zip(a, grid, strict=True))


def test_triton_interpreted_equals_reference():
    layout = TokenLayout((2, 4, 5), 16, "last", torch.tensor([[True] * 10 + [False] * 6]))
    q, k, v = qkv((1, layout.seq_len, 2, 16), 6)
    want = Agent(formation="pool", agents=8, block_size=BLOCK, backend="reference")(q, k, v, layout)
    got = Agent(formation="pool", agents=8, block_size=BLOCK, backend="triton")(q, k, v, layout)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(formation="pool", agents=0),
         r"agents must be an int >= 1 or a tuple \(a_t, a_h, a_w\) of three ints >= 1, got 0"),
        (dict(formation="pool", agents=(2, 2)), "agents must be an int >= 1 or a tuple"),
        (dict(formation="pool", agents=True), "agents must be"),
        (dict(agents=16), "agents=16 applies to formation='pool'"),
        (dict(k_scale2=float("inf")), "k_scale2 must be a finite number, got inf"),
        (dict(k_shortcut="x"), "k_shortcut must be a finite number"),
        (dict(block_size=8), "block_size must be a power of two >= 16, got 8"),
        (dict(formation="merge"), "formation must be one of"),
        (dict(stride=(4,)), r"stride must be a tuple \(sy, sx\) of two ints >= 1"),
        (dict(ratio=1.0), r"ratio must be a number in \[0, 1\), got 1.0"),
        (dict(switch_step=-1), "switch_step must be None, an int >= 0"),
        (dict(switch_step=1.5), "switch_step must be None, an int >= 0"),
    ],
)
def test_construction_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Agent(**kwargs)


# ---------------------------------------------------------------------- through accel.apply
@dataclasses.dataclass(frozen=True, eq=False)
class NaiveAgent(AttentionMethod):
    kwargs: dict = None

    def forward(self, q, k, v, layout, *, scale=None):
        return naive(q, k, v, layout, scale=scale, **self.kwargs).to(q.dtype)


@pytest.mark.parametrize("family, per_prompt", [("wan", 1), ("wan", 2), ("hunyuan_video", 1), ("flux", 1)])
def test_apply_tiny_pipeline(family, per_prompt):
    pipe, run = tiny_latent_runner(family, per_prompt)
    kwargs = dict(agents=8, k_scale2=0.3, k_shortcut=0.075)

    stock = run()
    assert stock.shape[0] == per_prompt
    with accel.apply(pipe, Agent(formation="pool", **kwargs, block_size=BLOCK, backend="reference"), layers=[1]):
        out = run()
    with accel.apply(pipe, NaiveAgent(kwargs=kwargs), layers=[1]):
        reference = run()
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    assert (out - stock).abs().max() > 1e-4, "agent attention should change the output"

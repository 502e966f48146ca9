"""Agent's default computes AgentSD's attention (issue 19): token merging by bipartite soft matching to
N/16 agents, merged Q/K/V, the fallback to ordinary attention, the two-phase schedule.

Reference: tests/methods/agentsd_release.py, an fp64 port of the release written from the notes.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel.grid import STEP_KEY, TokenLayout
from accel.methods.agent import Agent
from accel.methods.base import AttentionMethod

from .agentsd_release import agentsd_attention
from .helpers import tiny_latent_runner
from .method_checks import qkv, text_layouts

BLOCK = 16


@st.composite
def image_or_video_grids(draw):
    t = draw(st.integers(1, 3))
    h = draw(st.integers(2, 9))
    w = draw(st.integers(2, max(2, 96 // (t * h))))
    return (t, h, w)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_default_is_agentsd(data):
    grid = data.draw(image_or_video_grids())
    batch = data.draw(st.integers(1, 2))
    tokens = data.draw(text_layouts(grid, batch))
    stride = data.draw(st.sampled_from([(4, 4), (2, 2), (3, 2)]))
    ratio = data.draw(st.sampled_from([0.4, 0.0, 0.6]))
    agent_ratio = data.draw(st.sampled_from([0.95, 0.5, 0.7]))
    q, k, v = qkv((batch, tokens.seq_len, 2, 8), data.draw(st.integers(0, 1000)))
    method = Agent(stride=stride, ratio=ratio, agent_ratio=agent_ratio, block_size=BLOCK, backend="reference")
    want = agentsd_attention(q, k, v, tokens, stride=stride, ratio=ratio, agent_ratio=agent_ratio)
    torch.testing.assert_close(method(q, k, v, tokens), want, atol=2e-5, rtol=1e-4)


def test_sixteenth_of_the_tokens_become_agents():
    tokens = TokenLayout((1, 16, 24))  # 384 tokens, 24 regions of 4 x 4
    _, _, v = qkv((1, 384, 2, 8), 1)
    groups, m, agent_groups, n = Agent(block_size=BLOCK).merge_plan(v, tokens)
    assert n == 384 // 16 and m == 384 - int(384 * 0.4)
    assert int(agent_groups.max()) + 1 == n and int(groups.max()) + 1 == m


def test_late_phase_falls_back_to_merged_attention():
    """2 x 2 regions and agent_ratio 0.5 (AgentSD's late steps): N/2 agents are not fewer than half of the
    0.6 N merged tokens, so the call is ordinary attention over the merged tokens."""
    tokens = TokenLayout((1, 8, 12), 6, "last", torch.tensor([[True] * 4 + [False] * 2]))
    q, k, v = qkv((1, tokens.seq_len, 2, 8), 2)
    method = Agent(block_size=BLOCK, backend="reference")
    assert method.merge_plan(v, tokens)[2] is None or method.phase(tokens) == ((4, 4), 0.95)
    tokens.cache[STEP_KEY] = (25, 50)  # past switch_step 0.4 of 50 steps = 20
    assert method.phase(tokens) == ((2, 2), 0.5) and method.merge_plan(v, tokens)[2] is None
    want = agentsd_attention(q, k, v, tokens, stride=(2, 2), agent_ratio=0.5)
    torch.testing.assert_close(method(q, k, v, tokens), want, atol=2e-5, rtol=1e-4)
    tokens.cache[STEP_KEY] = (19, 50)
    want = agentsd_attention(q, k, v, tokens, stride=(4, 4), agent_ratio=0.95)
    torch.testing.assert_close(method(q, k, v, tokens), want, atol=2e-5, rtol=1e-4)


# ---------------------------------------------------------------------- through accel.apply
@dataclasses.dataclass(frozen=True, eq=False)
class StepSpy(AttentionMethod):
    """Dense attention that records the step the root hook gives each call."""

    seen: list = dataclasses.field(default_factory=list)

    def forward(self, q, k, v, tokens, *, scale=None):
        self.seen.append(tokens.cache.get(STEP_KEY))
        return accel.Dense(backend="reference")(q, k, v, tokens, scale=scale)


@pytest.mark.parametrize("family", ["wan", "flux"])
def test_root_hook_gives_the_step(family):
    pipe, run = tiny_latent_runner(family, 1)
    spy = StepSpy()
    with accel.apply(pipe, spy, layers=[0]):
        run()
    steps = sorted({s for s, _ in spy.seen})
    assert steps == list(range(len(steps))) and len(steps) >= 2
    assert {n for _, n in spy.seen} == {len(steps)}


@dataclasses.dataclass(frozen=True, eq=False)
class PortedAgentSD(AttentionMethod):
    """The port with AgentSD's two phases switched at step 1 (read from the root hook's record)."""

    def forward(self, q, k, v, tokens, *, scale=None):
        late = tokens.cache[STEP_KEY][0] >= 1
        kw = dict(stride=(1, 2), agent_ratio=0.5) if late else dict(stride=(2, 2), agent_ratio=0.95)
        return agentsd_attention(q, k, v, tokens, **kw).to(q.dtype)


@pytest.mark.parametrize("family", ["wan", "hunyuan_video", "flux"])
def test_apply_tiny_pipeline(family):
    pipe, run = tiny_latent_runner(family, 1)
    stock = run()
    method = Agent(stride=(2, 2), switch_step=1, late_stride=(1, 2), block_size=BLOCK, backend="reference")
    with accel.apply(pipe, method, layers=[1]):
        out = run()
    with accel.apply(pipe, PortedAgentSD(), layers=[1]):
        reference = run()
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    assert (out - stock).abs().max() > 1e-4

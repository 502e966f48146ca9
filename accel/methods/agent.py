"""`Agent`: training-free Agent attention (softmax attention through a few agent tokens), as AgentSD runs it.

Reference: D. Han, T. Ye, Y. Han, Z. Xia, S. Pan, P. Wan, S. Song, G. Huang, "Agent Attention: On the
Integration of Softmax and Linear Attention", ECCV 2024 (arXiv 2312.08874), and its training-free
Stable Diffusion release AgentSD (github.com/LeapLabTHU/Agent-Attention, ``agentsd/`` at commit 207ce3e,
read for its rules; no code taken from it). By default the agents are formed and the tokens merged as
AgentSD does (:mod:`accel.methods.tome`); ``formation="pool"`` is the trained ViT variant's pooling.
Cost ``O(N·n·D)`` for ``N`` video tokens and ``n`` agents, as calls of
:func:`accel.kernels.block_sparse_attention` (no ``N x N`` tensor; the merge's matching costs
``O(N²/16·D)`` with the release's stride).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from accel.grid import HEAD_GROUP_KEY, STEP_KEY, TokenLayout, is_int
from accel.kernels import BlockLayout, block_sparse_attention, validate_block_size
from accel.methods.base import AttentionMethod, _padded_full_layout
from accel.methods.tome import bipartite_ranking, destinations, group_mean, merge_groups

__all__ = ["Agent", "agent_grid", "FORMATIONS"]

#: how agents are formed (``Agent.formation``)
FORMATIONS = ("tome", "pool")


def _phase_start(switch, num_steps: int | None) -> int | None:
    """The first step of the late phase: ``switch`` (an int step index, or a fraction of ``num_steps``
    rounded half up), or None when it cannot be known or there is no late phase."""
    if switch is None:
        return None
    if isinstance(switch, float):
        return None if num_steps is None else int(math.floor(switch * num_steps + 0.5))
    return switch


@functools.lru_cache(maxsize=256)
def agent_grid(agents, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    """The per-dimension agent counts ``(a_t, a_h, a_w)`` that ``agents`` stands for on ``grid``.

    * ``agents`` a tuple ``(a_t, a_h, a_w)`` of ints >= 1: each is capped at the grid's size in that
      dimension (``min(a_d, grid_d)``).
    * ``agents`` an int >= 1: among all ``(a_t, a_h, a_w)`` with ``1 <= a_d <= grid_d``, the one whose
      product is closest to ``agents`` (in ``|log(product / agents)|``; exact when possible), then
      whose pooling cells ``grid_d / a_d`` are most even (smallest ``max - min`` of
      ``log(grid_d / a_d)`` over the dimensions with ``grid_d > 1``), then the lexicographically
      smallest. E.g. 49 agents on a ``(1, 30, 45)`` grid -> ``(1, 7, 7)``.
    """
    grid = tuple(grid)
    if isinstance(agents, tuple):
        return tuple(min(a, g) for a, g in zip(agents, grid, strict=True))
    best_key, best = None, None
    for at in range(1, grid[0] + 1):
        for ah in range(1, grid[1] + 1):
            rest = agents / (at * ah)
            # only the two a_w values around the exact quotient can be closest in product
            for aw in {max(1, min(grid[2], math.floor(rest))), max(1, min(grid[2], math.ceil(rest)))}:
                a = (at, ah, aw)
                logs = [math.log(g / x) for g, x in zip(grid, a, strict=True) if g > 1]
                spread = max(logs) - min(logs) if logs else 0.0
                key = (round(abs(math.log(at * ah * aw / agents)), 12), round(spread, 12), a)
                if best_key is None or key < best_key:
                    best_key, best = key, a
    return best


def _all_heads(x: torch.Tensor, group) -> torch.Tensor:
    """``x`` ``[B, N, h, D]`` (this rank's ``h`` heads), with the heads of every rank of ``group`` appended
    along dim 2 (``group=None``: ``x``). Under Ulysses context parallelism each rank holds a share of the
    heads; the merge metric concatenates all of them, so every rank must see all of them to merge as a
    single process does (the order of the heads does not change a cosine similarity). Shares may differ
    in size (``ulysses_anything``): they are padded to the largest, gathered, and trimmed."""
    if group is None:
        return x
    world = torch.distributed.get_world_size(group)
    count = torch.tensor([x.shape[2]], dtype=torch.int64, device=x.device)
    counts = [torch.empty_like(count) for _ in range(world)]
    torch.distributed.all_gather(counts, count, group=group)
    counts = [int(c) for c in counts]
    widest = max(counts)
    padded = F.pad(x, (0, 0, 0, widest - x.shape[2])).contiguous()
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded, group=group)
    return torch.cat([p[:, :, :c] for p, c in zip(parts, counts, strict=True)], dim=2)


@dataclasses.dataclass(frozen=True, eq=False)
class Agent(AttentionMethod):
    """Agent attention for the video tokens (text queries dense), training-free; by default AgentSD's.

    With ``s = scale`` (default ``1/sqrt(D)``), per batch element (``formation="tome"``, the default):

    * **Merge** (:mod:`accel.methods.tome`): destinations are the top-left tokens of the ``stride``
      regions of every frame; the similarity metric is the video **values** ``v`` (all heads
      concatenated; under Ulysses context parallelism gathered from every rank) -- AgentSD uses the
      transformer block's input hidden states, which an attention call does not see; ``v`` is their
      nearest linear image here (no QK-norm, no RoPE). Merging
      ``r = int(N·ratio)`` sources gives the groups of the merged queries, keys and values ``Q', K', V'``
      (group means, ``M = N - r`` of them); merging ``int(N·agent_ratio)`` sources gives the agent
      groups, and the agents ``A`` are the group means of ``q`` (``n`` of them).
    * **Agent attention** when ``2n < M``: ``V_A = softmax(s·A·K'ᵀ)·V'`` and
      ``O' = softmax(s^κ·Q'·Aᵀ)·V_A + β·V'``; otherwise (AgentSD's fallback) ordinary softmax attention
      ``O' = softmax(s·Q'·K'ᵀ)·V'``. The valid text keys (FLUX, HunyuanVideo) join ``K', V'`` unmerged (an
      extension: AgentSD's self-attention holds no text).
    * **Unmerge**: every video query gets its group's row of ``O'``. Text queries attend every valid
      key (dense softmax attention).
    * **Phases** (AgentSD's schedule): from step ``switch_step`` on, ``late_stride`` and
      ``late_agent_ratio`` replace ``stride`` and ``agent_ratio`` (AgentSD: 4x4 regions and 0.95 for the
      first 20 of 50 steps, then 2x2 and 0.5, where the fallback makes it token merging only). The step
      comes from accel's root hook (``accel.apply``); a direct call on tensors runs the early phase.

    ``formation="pool"`` (the trained ViT variant, ours before): no merging; ``agents`` agents by adaptive
    average pooling of the video queries over the ``(T, H, W)`` grid (cell ``c`` of dimension ``d`` spans
    grid indices ``[floor(c·L/a), ceil((c+1)·L/a))``, :func:`agent_grid`); ``V_A = softmax(s·A·Kᵀ)·V`` over
    every valid key; ``O_i = softmax(s^κ·q_i·Aᵀ)·V_A + β·v_i``; no fallback, no phases.

    Args:
        formation: ``"tome"`` (default, AgentSD's) or ``"pool"`` (see above).
        stride: ``(sy, sx)`` destination regions, two ints >= 1 (default ``(4, 4)``, AgentSD's early steps).
        ratio: share of the tokens merged away for ``Q', K', V'``, in ``[0, 1)`` (default 0.4, AgentSD's).
        agent_ratio: share merged away to form the agents, in ``[0, 1)`` (default 0.95, AgentSD's early
            steps: with 4x4 regions every source merges, ``n = N/16``).
        switch_step: first step of the late phase: an int step index, a float fraction of the steps
            (rounded half up), or ``None`` (no late phase). Default 0.4 (AgentSD: step 20 of 50).
        late_stride, late_agent_ratio: the late phase's stride and agent ratio (default ``(2, 2)`` and 0.5,
            AgentSD's).
        agents: ``formation="pool"`` only: the number of agents, an int >= 1 factorised over the grid by
            :func:`agent_grid`, or a tuple ``(a_t, a_h, a_w)`` of ints >= 1; ``None`` (default): 49 with
            ``"pool"``. With ``"tome"`` it must stay ``None`` (the merge sets the agents).
        k_scale2: ``κ``, exponent of the broadcast logit scale ``s^κ``, a finite number (default 0.3,
            AgentSD's).
        k_shortcut: ``β``, weight of the value shortcut, a finite number (default 0.075, AgentSD's).
        block_size: block size of the kernel layouts, a power of two >= 16 (default 128). Only
            affects speed and rounding.
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    AgentSD always picks the top-left token of a region as its destination when the batch is odd (its
    default randomises it for even batches, e.g. batched classifier-free guidance); we always do.

    Raises:
        ValueError: a parameter is out of range (naming it, its value and what is allowed).
    """

    formation: str = "tome"
    stride: tuple[int, int] = (4, 4)
    ratio: float = 0.4
    agent_ratio: float = 0.95
    switch_step: int | float | None = 0.4
    late_stride: tuple[int, int] = (2, 2)
    late_agent_ratio: float = 0.5
    agents: int | tuple[int, int, int] | None = None
    k_scale2: float = 0.3
    k_shortcut: float = 0.075
    block_size: int = 128

    def __post_init__(self) -> None:
        if self.formation not in FORMATIONS:
            raise ValueError(f"formation must be one of {FORMATIONS}, got {self.formation!r}")
        for name in ("stride", "late_stride"):
            x = getattr(self, name)
            if isinstance(x, list):
                x = tuple(x)
                object.__setattr__(self, name, x)
            if not (isinstance(x, tuple) and len(x) == 2 and all(is_int(e) and e >= 1 for e in x)):
                raise ValueError(f"{name} must be a tuple (sy, sx) of two ints >= 1, got {x!r}")
        for name in ("ratio", "agent_ratio", "late_agent_ratio"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x < 1:
                raise ValueError(f"{name} must be a number in [0, 1), got {x!r}")
        sw = self.switch_step
        if not (sw is None or (is_int(sw) and sw >= 0) or (isinstance(sw, float) and 0.0 <= sw <= 1.0)):
            raise ValueError(f"switch_step must be None, an int >= 0 (a step) or a float in [0, 1] (a fraction of "
                             f"the steps), got {sw!r}")
        a = self.agents
        if isinstance(a, list):
            a = tuple(a)
            object.__setattr__(self, "agents", a)
        if a is not None and self.formation == "tome":
            raise ValueError(f"agents={a!r} applies to formation='pool'; formation='tome' (AgentSD) forms its agents "
                             "by merging (see stride and agent_ratio)")
        ok = a is None or (is_int(a) and a >= 1) or (
            isinstance(a, tuple) and len(a) == 3 and all(is_int(x) and x >= 1 for x in a))
        if not ok:
            raise ValueError(f"agents must be an int >= 1 or a tuple (a_t, a_h, a_w) of three ints >= 1, got {a!r}")
        for name in ("k_scale2", "k_shortcut"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise ValueError(f"{name} must be a finite number, got {x!r}")
        validate_block_size("block_size", self.block_size)
        super().__post_init__()

    # ------------------------------------------------------------------ AgentSD (formation="tome")
    def phase(self, tokens: TokenLayout) -> tuple[tuple[int, int], float]:
        """``(stride, agent_ratio)`` of the call: the late phase's from ``switch_step`` on (module docstring)."""
        step, num_steps = tokens.cache.get(STEP_KEY, (None, None))
        start = _phase_start(self.switch_step, num_steps)
        if step is not None and start is not None and step >= start:
            return self.late_stride, self.late_agent_ratio
        return self.stride, self.agent_ratio

    def merge_plan(self, v: torch.Tensor, tokens: TokenLayout):
        """Per batch element, the token groups of the merged ``Q', K', V'`` and of the agents.

        Returns:
            ``(groups, m, agent_groups, n)``: int64 ``[B, N]`` group of every video token (sequence order)
            and the number of groups ``m``; int64 ``[B, N]`` agent group of every video token and the
            number of agents ``n``, or ``(None, 0)`` when AgentSD forms no agents (``2n >= m``).
        """
        stride, agent_ratio = self.phase(tokens)
        n = tokens.num_video_tokens
        dst = destinations(tokens.grid, stride, v.device)
        if tokens.permutation is not None:  # the destinations in sequence order
            dst = dst[tokens.permutation.to(v.device)]
        if not bool(dst.any()):  # a grid smaller than one region: nothing to merge into
            dst = torch.zeros_like(dst)
            dst[0] = True
        r, agent_r = int(n * self.ratio), int(n * agent_ratio)
        groups, agent_groups = [], []
        m = na = 0
        metric = _all_heads(v[:, tokens.video_slice], tokens.cache.get(HEAD_GROUP_KEY)).flatten(2)
        for b in range(v.shape[0]):
            ranking = bipartite_ranking(metric[b], dst)
            g, m = merge_groups(ranking, r, n)
            ga, na = merge_groups(ranking, agent_r, n)
            groups.append(g)
            agent_groups.append(ga)
        if 2 * na >= m:
            return torch.stack(groups), m, None, 0
        return torch.stack(groups), m, torch.stack(agent_groups), na

    def _merged(self, x, groups, m):
        return torch.stack([group_mean(x[b], groups[b], m) for b in range(x.shape[0])]).to(x.dtype)

    def _forward_tome(self, q, k, v, tokens, s):
        batch, _, heads, _ = q.shape
        vs = tokens.video_slice
        groups, m, agent_groups, n_agents = self.merge_plan(v, tokens)
        qm, km, vm = (self._merged(x[:, vs], groups, m) for x in (q, k, v))
        if tokens.text_len:  # the valid text keys join the merged keys, unmerged
            km = torch.cat([km, k[:, tokens.text_slice]], 1)
            vt = torch.cat([vm, v[:, tokens.text_slice]], 1)
            valid = tokens.text_mask
            if valid is not None:
                valid = torch.cat([torch.ones(valid.shape[0], m, dtype=torch.bool, device=valid.device), valid], 1)
        else:
            vt, valid = vm, None
        kv_len = km.shape[1]
        shape = self.block_shape()
        if agent_groups is None:  # AgentSD's fallback: ordinary attention on the merged tokens
            full = self._cached(tokens, ("tome_dense", m, kv_len), batch, heads, q.device,
                                lambda: _padded_full_layout(m, kv_len, valid, batch, q.device, shape))
            om = block_sparse_attention(qm, km, vt, full, scale=s, backend=self.backend)
        else:
            agents = self._merged(q[:, vs], agent_groups, n_agents)
            keys = self._cached(tokens, ("tome_agent_keys", n_agents, kv_len), batch, heads, q.device,
                                lambda: _padded_full_layout(n_agents, kv_len, valid, batch, q.device, shape))
            v_agents = block_sparse_attention(agents, km, vt, keys, scale=s, backend=self.backend)
            bcast = self._cached(tokens, ("tome_broadcast", m, n_agents), batch, heads, q.device,
                                 lambda: BlockLayout.full(m, n_agents, q_block=shape[0], kv_block=shape[1],
                                                          device=q.device))
            om = block_sparse_attention(qm, agents, v_agents, bcast, scale=s ** self.k_scale2, backend=self.backend)
            if self.k_shortcut:
                om = (om.float() + self.k_shortcut * vm.float()).to(q.dtype)
        o_video = torch.stack([om[b].index_select(0, groups[b]) for b in range(batch)])
        return self._with_dense_text_queries(o_video, q, k, v, tokens, scale=s)

    # ------------------------------------------------------------------ pooled agents (formation="pool")
    def agent_tokens(self, q: torch.Tensor, tokens: TokenLayout) -> torch.Tensor:
        """``formation="pool"``: the agents ``[B, n, H, D]`` (q's dtype, pooled in float32) of the video
        queries of ``q`` ``[B, S, H, D]``."""
        b, _, h, d = q.shape
        t, hh, w = tokens.grid
        at, ah, aw = agent_grid(49 if self.agents is None else self.agents, tokens.grid)
        qv = q[:, tokens.video_slice]
        if tokens.permutation is not None:  # back to row-major grid order
            qv = torch.empty_like(qv).index_copy_(1, tokens.permutation.to(q.device), qv)
        x = qv.float().permute(0, 2, 3, 1).reshape(b * h, d, t, hh, w)
        a = F.adaptive_avg_pool3d(x, (at, ah, aw)).reshape(b, h, d, at * ah * aw)
        return a.permute(0, 3, 1, 2).to(q.dtype).contiguous()

    def forward(self, q, k, v, tokens, *, scale=None):
        """Agent attention for the video queries (see the class), dense attention for text queries."""
        batch, _, heads, dim = q.shape
        s = 1.0 / math.sqrt(dim) if scale is None else float(scale)
        if self.formation == "tome":
            return self._forward_tome(q, k, v, tokens, s)
        agents = self.agent_tokens(q, tokens)
        n_agents = agents.shape[1]
        shape = self.block_shape()
        keys = self._cached(
            tokens, ("agent_keys", n_agents), batch, heads, q.device,
            lambda: _padded_full_layout(n_agents, tokens.seq_len, tokens.key_padding_mask(), batch, q.device, shape),
        )
        v_agents = block_sparse_attention(agents, k, v, keys, scale=s, backend=self.backend)
        n = tokens.num_video_tokens
        vs = tokens.video_slice
        bcast = self._cached(
            tokens, ("agent_broadcast", n_agents), batch, heads, q.device,
            lambda: BlockLayout.full(n, n_agents, q_block=shape[0], kv_block=shape[1], device=q.device),
        )
        o_video = block_sparse_attention(q[:, vs], agents, v_agents, bcast, scale=s ** self.k_scale2,
                                         backend=self.backend)
        if self.k_shortcut:
            o_video = (o_video.float() + self.k_shortcut * v[:, vs].float()).to(q.dtype)
        return self._with_dense_text_queries(o_video, q, k, v, tokens, scale=s)

    def video_token_mask(self, tokens, *, batch, heads, device="cpu"):
        """Not defined: agent attention is not a masked softmax over token pairs."""
        raise TypeError("Agent attention is not a masked softmax attention; it has no token mask")

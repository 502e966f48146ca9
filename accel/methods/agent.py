"""`Agent`: training-free Agent attention (softmax attention through a few pooled agent tokens).

Reference: D. Han, T. Ye, Y. Han, Z. Xia, S. Pan, P. Wan, S. Song, G. Huang, "Agent Attention: On the
Integration of Softmax and Linear Attention", ECCV 2024 (arXiv 2312.08874), and its training-free
Stable Diffusion use (AgentSD). Implemented from the paper's description; no code taken from the
release. Cost ``O(N·n·D)`` for ``N`` video tokens and ``n`` agents, as two calls of
:func:`accel.kernels.block_sparse_attention` (no ``N x N`` tensor).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
import torch.nn.functional as F

from accel.grid import TokenLayout, is_int
from accel.kernels import BlockLayout, block_sparse_attention, validate_block_size
from accel.methods.base import AttentionMethod, _padded_full_layout

__all__ = ["Agent", "agent_grid"]


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


@dataclasses.dataclass(frozen=True, eq=False)
class Agent(AttentionMethod):
    """Agent attention for the video tokens (text queries dense), training-free.

    With ``s = scale`` (default ``1/sqrt(D)``), per batch and head:

    * **Agents** ``A`` (``n = a_t·a_h·a_w`` tokens, :func:`agent_grid`): adaptive average pooling
      of the video queries over the ``(T, H, W)`` grid (cell ``c`` of dimension ``d`` spans grid
      indices ``[floor(c·L/a), ceil((c+1)·L/a))``, as ``torch.nn.functional.adaptive_avg_pool3d``),
      in row-major grid order whatever the sequence order (``TokenLayout.permutation``).
    * **Aggregation** ``V_A = softmax(s·A·Kᵀ)·V`` over every valid key: video keys and the valid text
      keys (padded text keys never).
    * **Broadcast** for every video query ``i``: ``O_i = softmax(s^κ·q_i·Aᵀ)·V_A + β·v_i``.
    * Text queries attend every valid key (dense softmax attention).

    Args:
        agents: the number of agents: an int >= 1, factorised over the grid by :func:`agent_grid`
            (default 49 -- a 7 x 7 grid on images), or a tuple ``(a_t, a_h, a_w)`` of ints >= 1 (each
            capped at the grid's size in its dimension).
        k_scale2: ``κ``, exponent of the broadcast logit scale ``s^κ``, a finite number (default 0.3,
            AgentSD's training-free setting; ``κ = 1`` uses the plain softmax scale).
        k_shortcut: ``β``, weight of the value shortcut, a finite number (default 0.075, AgentSD's).
        block_size: block size of the kernel layouts, a power of two >= 16 (default 128). Only
            affects speed and rounding.
        backend: kernel backend, keyword-only (see :class:`accel.methods.base.AttentionMethod`).

    Raises:
        ValueError: a parameter is out of range (naming it, its value and what is allowed).

    AgentSD applies agent attention only in the early steps (about the first 40%); use a
    :class:`~accel.Schedule` to restrict it (the schedule's dense steps/layers run dense attention).
    """

    agents: int | tuple[int, int, int] = 49
    k_scale2: float = 0.3
    k_shortcut: float = 0.075
    block_size: int = 128

    def __post_init__(self) -> None:
        a = self.agents
        if isinstance(a, list):
            a = tuple(a)
            object.__setattr__(self, "agents", a)
        ok = (is_int(a) and a >= 1) or (isinstance(a, tuple) and len(a) == 3 and all(is_int(x) and x >= 1 for x in a))
        if not ok:
            raise ValueError(f"agents must be an int >= 1 or a tuple (a_t, a_h, a_w) of three ints >= 1, got {a!r}")
        for name in ("k_scale2", "k_shortcut"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise ValueError(f"{name} must be a finite number, got {x!r}")
        validate_block_size("block_size", self.block_size)
        super().__post_init__()

    def agent_tokens(self, q: torch.Tensor, tokens: TokenLayout) -> torch.Tensor:
        """The agents ``[B, n, H, D]`` (q's dtype, pooled in float32) of the video queries of ``q`` ``[B, S, H, D]``."""
        b, _, h, d = q.shape
        t, hh, w = tokens.grid
        at, ah, aw = agent_grid(self.agents, tokens.grid)
        qv = q[:, tokens.video_slice]
        if tokens.permutation is not None:  # back to row-major grid order
            qv = torch.empty_like(qv).index_copy_(1, tokens.permutation.to(q.device), qv)
        x = qv.float().permute(0, 2, 3, 1).reshape(b * h, d, t, hh, w)
        a = F.adaptive_avg_pool3d(x, (at, ah, aw)).reshape(b, h, d, at * ah * aw)
        return a.permute(0, 3, 1, 2).to(q.dtype).contiguous()

    def forward(self, q, k, v, tokens, *, scale=None):
        """Agent aggregation and broadcast for the video queries, dense attention for text queries."""
        batch, _, heads, dim = q.shape
        s = 1.0 / math.sqrt(dim) if scale is None else float(scale)
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

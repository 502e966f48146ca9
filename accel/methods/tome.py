"""Token merging by bipartite soft matching (ToMe for Stable Diffusion), as AgentSD uses it.

Reference: D. Bolya, J. Hoffman, "Token Merging for Fast Stable Diffusion", CVPRW 2023, and the AgentSD
release (github.com/LeapLabTHU/Agent-Attention, ``agentsd/merge.py`` at commit 207ce3e, read for its
rule; no code taken from it).

The rule, on ``N`` tokens of a ``(T, H, W)`` grid with a similarity metric per token:

1. **Destinations**: in every frame, the grid is cut into ``sy x sx`` regions from the top-left corner
   (``H // sy`` rows of ``W // sx`` regions; leftover rows and columns belong to no region); each region's
   top-left token is a destination, every other token a source.
2. **Matching**: each source's best destination is the one of highest cosine similarity of the metric;
   sources are ranked by that similarity, highest first.
3. **Merging** ``r`` tokens: the first ``r`` ranked sources (at most the number of sources) join their
   best destination; each destination becomes the mean of itself and the sources that joined it, every
   other source stays alone.

:func:`merge_groups` returns the resulting partition as a group index per token; merging means averaging
over each group, and "unmerging" an output copies each group's result to all its tokens.
"""

from __future__ import annotations

import torch

__all__ = ["destinations", "bipartite_ranking", "merge_groups", "group_mean"]

_CHUNK = 4096  # source rows per similarity chunk (bounds memory at chunk x destinations)


def destinations(grid: tuple[int, int, int], stride: tuple[int, int], device="cpu") -> torch.Tensor:
    """bool ``[T*H*W]`` in row-major order: True for the top-left token of every full ``sy x sx`` region of
    every frame (``stride = (sy, sx)``)."""
    t, h, w = grid
    sy, sx = stride
    dst = torch.zeros(t, h, w, dtype=torch.bool, device=device)
    dst[:, : (h // sy) * sy: sy, : (w // sx) * sx: sx] = True
    return dst.reshape(-1)


def bipartite_ranking(metric: torch.Tensor, is_dst: torch.Tensor):
    """Match every source to its most similar destination and rank the sources.

    Args:
        metric: ``[N, C]`` float per-token features (cosine similarity is used).
        is_dst: bool ``[N]``, True for destinations (at least one).

    Returns:
        ``(src, best, dst)``: ``src`` int64 ``[n_src]`` the source token indices ranked by their best
        similarity (highest first, ties by index), ``best[i]`` the position in ``dst`` of ``src[i]``'s best
        destination, ``dst`` int64 ``[n_dst]`` the destination token indices (increasing).
    """
    dst = is_dst.nonzero().flatten()
    src = (~is_dst).nonzero().flatten()
    m = metric.float()
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    md = m[dst]
    sim = torch.empty(len(src), device=metric.device)
    best = torch.empty(len(src), dtype=torch.int64, device=metric.device)
    for i in range(0, len(src), _CHUNK):
        s, b = (m[src[i:i + _CHUNK]] @ md.T).max(dim=-1)
        sim[i:i + _CHUNK], best[i:i + _CHUNK] = s, b
    order = torch.sort(sim, descending=True, stable=True).indices
    return src[order], best[order], dst


def merge_groups(ranking, r: int, n: int) -> tuple[torch.Tensor, int]:
    """The partition after merging the first ``r`` ranked sources (module docstring, step 3).

    Args:
        ranking: ``(src, best, dst)`` from :func:`bipartite_ranking`.
        r: number of sources to merge (capped at the number of sources; ``<= 0``: none).
        n: number of tokens.

    Returns:
        ``(group, m)``: int64 ``[n]`` group index per token in ``[0, m)`` -- the sources left alone first
        (in ranked order), then the destinations (in index order) -- and the number of groups ``m``.
    """
    src, best, dst = ranking
    r = max(0, min(int(r), len(src)))
    alone = src[r:]
    group = torch.empty(n, dtype=torch.int64, device=src.device)
    group[alone] = torch.arange(len(alone), device=src.device)
    group[dst] = len(alone) + torch.arange(len(dst), device=src.device)
    group[src[:r]] = len(alone) + best[:r]
    return group, len(alone) + len(dst)


def group_mean(x: torch.Tensor, group: torch.Tensor, m: int) -> torch.Tensor:
    """Mean of ``x`` ``[N, ...]`` over each of the ``m`` groups of ``group`` ``[N]``: ``[m, ...]`` (float32)."""
    xf = x.float()
    total = torch.zeros(m, *x.shape[1:], dtype=torch.float32, device=x.device).index_add_(0, group, xf)
    count = torch.zeros(m, dtype=torch.float32, device=x.device).index_add_(0, group, torch.ones_like(group, dtype=torch.float32))
    return total / count.view(m, *([1] * (x.dim() - 1)))

"""Tiled token orders: permutations that lay 3D/2D tiles of tokens out contiguously.

In row-major ``(t, y, x)`` order a block of 128 consecutive tokens is a strip of one or two grid
rows, so a local window (CLEAR disc, neighbourhood box) cuts through almost every block it touches
and the block layout is mostly *partial* blocks and visits many tokens it then masks. Laying the
tokens out tile by tile -- a tile is a ``(tt, th, tw)`` box with ``tt * th * tw == block_size`` --
makes every block a compact box, so a window covers whole blocks: more blocks are full, fewer are
visited (this is the idea of Sliding Tile Attention, Zhang et al. 2025, and of NATTEN's
multi-dimensional tiling, Hassani et al. 2025).

Order produced by :func:`tile_order`: tiles that hold a full ``tt * th * tw`` tokens first, in
row-major order of their tile index, so each is exactly one block; then the ragged tiles (cut by the
grid border, or by dilation-group holes) in row-major tile order, packed together. Inside a tile,
tokens are in row-major order.

The methods permute q/k/v once into this order (one gather each), run the kernel and scatter the
output back; :class:`accel.TokenLayout` records the order as its ``permutation``.
"""

from __future__ import annotations

import itertools

import torch

from .blocks import GridRule

__all__ = ["tile_order", "tile_candidates", "choose_tile", "grid_coords", "inverse_permutation"]


def grid_coords(grid: tuple[int, int, int], permutation: torch.Tensor | None = None) -> torch.Tensor:
    """int64 ``[T*H*W, 3]``: ``(t, y, x)`` of the token at each position (``permutation[i]`` = row-major
    index of the token at position ``i``; ``None`` = row-major)."""
    t, h, w = grid
    idx = torch.arange(t * h * w) if permutation is None else permutation.to("cpu", torch.int64)
    return torch.stack((idx // (h * w), (idx // w) % h, idx % w), dim=1)


def inverse_permutation(permutation: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``inv[permutation[i]] = i`` (so ``x[:, perm][:, inv] == x``)."""
    inv = torch.empty_like(permutation)
    inv[permutation] = torch.arange(permutation.shape[0], device=permutation.device)
    return inv


def tile_order(coords: torch.Tensor, tile: tuple[int, int, int]) -> torch.Tensor:
    """Permutation that lays tokens out tile by tile (see the module docstring for the order).

    Args:
        coords: int64 ``[N, 3]`` coordinates of the tokens in row-major order (grid coordinates, or
            a rule's coordinate space such as Neighborhood's dilation-grouped one); non-negative.
        tile: ``(tt, th, tw)``, three ints >= 1.

    Returns:
        int64 ``[N]``: ``perm[i]`` is the row-major index of the token placed at position ``i``.
    """
    if not (isinstance(tile, tuple) and len(tile) == 3 and all(isinstance(v, int) and v >= 1 for v in tile)):
        raise ValueError(f"tile must be a tuple of three ints >= 1 (tt, th, tw), got {tile!r}")
    c = coords.to("cpu", torch.int64)
    size = torch.tensor(tile)
    tidx = c // size  # [N, 3] tile coordinates
    off = c % size
    ntiles = tidx.amax(0) + 1
    tile_id = (tidx[:, 0] * ntiles[1] + tidx[:, 1]) * ntiles[2] + tidx[:, 2]
    counts = torch.bincount(tile_id, minlength=int(ntiles.prod()))
    ragged = (counts[tile_id] < tile[0] * tile[1] * tile[2]).long()
    offset = (off[:, 0] * tile[1] + off[:, 1]) * tile[2] + off[:, 2]
    volume = tile[0] * tile[1] * tile[2]
    key = (ragged * int(ntiles.prod()) + tile_id) * volume + offset
    return torch.argsort(key)


def tile_candidates(extent: tuple[int, int, int], block_size: int) -> list[tuple[int, int, int]]:
    """All ``(tt, th, tw)`` of powers of two with ``tt * th * tw == block_size`` and each side at most
    its axis extent (so that full tiles exist); if there is none (the grid is too small), the single
    tile of the next powers of two of the extents."""
    def cap(n):
        return 1 << max(0, (n - 1).bit_length())

    out = []
    e = block_size.bit_length() - 1
    for a, b in itertools.product(range(e + 1), repeat=2):
        c = e - a - b
        if c < 0:
            continue
        tile = (1 << a, 1 << b, 1 << c)
        if all(tile[i] <= extent[i] for i in range(3)):
            out.append(tile)
    if not out:  # the grid holds fewer tokens than a block: any tile covering it works
        out.append(tuple(cap(n) for n in extent))
    return out


#: extra cost of a partial block relative to a full one in the tile choice (a partial block loads
#: and applies a token tile; on GPU kernels this costs roughly a quarter more than a full block)
PARTIAL_PENALTY = 0.25


def _estimated_density(rule: GridRule, tile: tuple[int, int, int], samples: int) -> float:
    """Estimated cost of the tile order: the fraction of token pairs in visited blocks, partial blocks
    weighted ``1 + PARTIAL_PENALTY``, when blocks are the tiles' boxes.

    ``samples`` evenly spread query tiles are tested (bounding boxes only, no token-level work)
    against every key tile; pairs are weighted by the tiles' volumes.
    """
    ext = torch.tensor(rule.extent)
    size = torch.tensor(tile)
    counts = (ext + size - 1) // size
    grids = torch.meshgrid(*[torch.arange(int(c)) for c in counts], indexing="ij")
    idx = torch.stack([g.reshape(-1) for g in grids], dim=1)
    lo = idx * size
    hi = torch.minimum(lo + size, ext) - 1
    vol = (hi - lo + 1).prod(1).double()
    nt = lo.shape[0]
    pick = torch.linspace(0, nt - 1, min(samples, nt)).round().long().unique()
    any_, all_ = rule.box_relation(lo[pick, None], hi[pick, None], lo[None], hi[None])
    w = vol[pick, None] * vol[None, :]
    partial = (any_ & ~all_).double()
    return float(((any_.double() + PARTIAL_PENALTY * partial) * w).sum() / w.sum())


def choose_tile(rule: GridRule, block_size: int, *, samples: int = 128) -> tuple[int, int, int]:
    """Pick the tile shape (among :func:`tile_candidates`) whose blocks the rule visits least.

    A heuristic on bounding boxes of ``samples`` query tiles (see :func:`_estimated_density`), so
    it costs milliseconds per candidate; the layout built with the chosen order is exact whatever
    the tile. Ties go to the first candidate in :func:`tile_candidates` order.
    """
    best, best_score = None, None
    for tile in tile_candidates(rule.extent, block_size):
        score = _estimated_density(rule, tile, samples)
        if best_score is None or score < best_score - 1e-12:
            best, best_score = tile, score
    return best

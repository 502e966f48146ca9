"""Densities from brute-force token masks (tests only): the independent reference for the densities that
accel.eval matches, records and reports.

A static pattern method computes every (query, key) pair of the key blocks it visits, and it must visit
exactly the blocks that hold an allowed pair of its token rule. So the density it executes is
``pairs in the blocks of size `block` (in the method's token order) that hold an allowed pair / N**2``,
with the rule taken from tests/patterns/reference.py (Python ints and sets, no code shared with accel).
"""

from __future__ import annotations

import math

import torch

from tests.patterns import reference as ref


def _per_axis(value, name):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3


def token_mask(method, grid) -> list[list[bool]]:
    """The brute-force token mask of a Neighborhood, ClearLocal or Radial method on ``grid``, in the method's
    own token order (tiled where it tiles)."""
    order = method.tile_permutation(tuple(grid)) if hasattr(method, "tile_permutation") else None
    order = None if order is None else order.tolist()
    kind = type(method).__name__
    if kind == "Neighborhood":
        return ref.natten_mask(grid, _per_axis(method.window, "window"), _per_axis(method.stride, "stride"),
                               _per_axis(method.dilation, "dilation"), _per_axis(method.causal, "causal"), order)
    if kind == "ClearLocal":
        return ref.clear_mask(grid, method.radius, method.radius_t, order)
    if kind == "Radial":
        return ref.radial_mask(grid, method.decay, method.block_size, method.sink, order)
    raise TypeError(f"no brute-force rule for {kind}")


def visited_block_density(mask, block: int) -> float:
    """Pairs in the ``block x block`` tiles of a token mask that hold an allowed pair, over all pairs."""
    m = torch.tensor(mask, dtype=torch.bool)
    n = m.shape[0]
    nb = math.ceil(n / block)
    padded = torch.zeros(nb * block, nb * block, dtype=torch.bool)
    padded[:n, :n] = m
    visited = padded.view(nb, block, nb, block).any(dim=3).any(dim=1)
    sizes = torch.tensor([min(block, n - i * block) for i in range(nb)], dtype=torch.float64)
    pairs = (visited.double() * sizes[:, None] * sizes[None, :]).sum()
    return float(pairs) / (n * n)


def brute_force_density(method, grid) -> float:
    """The video x video density ``method`` must execute on ``grid`` (see the module docstring)."""
    return visited_block_density(token_mask(method, grid), method.block_size)

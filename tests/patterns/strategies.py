"""Hypothesis strategies for grids, pattern parameters and token orders (tests only)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from accel.patterns import ClearLocalRule, NeighborhoodRule, RadialRule, grid_coords, tile_order


@st.composite
def grids(draw, max_tokens=160):
    """(T, H, W) grids that are 1D, 2D or 3D, at most ``max_tokens`` tokens."""
    kind = draw(st.sampled_from(["1d", "2d", "3d"]))
    if kind == "1d":
        return (1, 1, draw(st.integers(2, max_tokens)))
    if kind == "2d":
        h = draw(st.integers(1, 12))
        return (1, h, draw(st.integers(2, max(2, max_tokens // h))))
    t = draw(st.integers(2, 5))
    h = draw(st.integers(1, 6))
    return (t, h, draw(st.integers(1, max(1, max_tokens // (t * h)))))


@st.composite
def natten_axis_params(draw, n):
    if n == 1:
        return (draw(st.sampled_from([-1, 3])), 1, 1, False)
    d = draw(st.integers(1, max(1, n // 2)))
    choices = [-1] + list(range(2, n // d + 1))
    w = draw(st.sampled_from(choices))
    s = 1 if w == -1 else draw(st.integers(1, w))
    return (w, s, d, draw(st.booleans()))


@st.composite
def neighborhood_rules(draw, grid):
    axes = [draw(natten_axis_params(n)) for n in grid]
    return NeighborhoodRule(grid, *[tuple(a[i] for a in axes) for i in range(4)])


@st.composite
def clear_rules(draw, grid):
    radius = draw(st.sampled_from([0.5, 1, 1.5, 2, 2.5, 3, 4.2, 7, 100]))
    radius_t = draw(st.sampled_from([None, None, 0.5, 1, 1.7, 3]))
    return ClearLocalRule(grid, radius, radius_t)


@st.composite
def radial_rules(draw, grid, block=16):
    decay = draw(st.sampled_from([0.01, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0]))
    return RadialRule(grid, decay, block, draw(st.booleans()))


@st.composite
def orders(draw, rule):
    """None (row-major), a tile order, or a random permutation of the grid's tokens."""
    kind = draw(st.sampled_from(["rowmajor", "tiled", "tiled", "random"]))
    t, h, w = rule.grid
    if kind == "rowmajor":
        return None
    if kind == "random":
        seed = draw(st.integers(0, 2**16))
        return torch.randperm(t * h * w, generator=torch.Generator().manual_seed(seed))
    tile = tuple(draw(st.sampled_from([1, 2, 4, 8])) for _ in range(3))
    return tile_order(rule.rule_coords(grid_coords(rule.grid)), tile)

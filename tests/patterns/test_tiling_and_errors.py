"""Tile orders, tile choice, density with/without tiling, and parameter errors."""

from __future__ import annotations

import pytest
import torch

from accel.patterns import (
    ClearLocalRule,
    NeighborhoodRule,
    RadialRule,
    block_kind_counts,
    build_grid_layout,
    choose_tile,
    grid_coords,
    inverse_permutation,
    neighborhood_axis_bounds,
    tile_order,
)
from accel.patterns.tiling import tile_candidates


def test_tile_order_is_a_permutation_with_full_tiles_first():
    grid = (3, 10, 13)
    coords = grid_coords(grid)
    perm = tile_order(coords, (1, 4, 4))
    n = 3 * 10 * 13
    assert sorted(perm.tolist()) == list(range(n))
    placed = coords[perm]
    # full 1x4x4 tiles: 3 frames x 2 tile rows x 3 tile columns = 18 tiles = 288 tokens, each a box
    for b in range(18):
        box = placed[b * 16:(b + 1) * 16]
        assert (box.amax(0) - box.amin(0)).tolist() == [0, 3, 3]
    inv = inverse_permutation(perm)
    assert torch.equal(perm[inv], torch.arange(n))


def test_tiling_reduces_visited_blocks_of_local_patterns():
    for rule in (ClearLocalRule((4, 32, 32), 5.0, 1.5), NeighborhoodRule((4, 32, 32), (3, 9, 9))):
        coords = grid_coords(rule.grid)
        rowmajor = block_kind_counts(rule, coords, 64, 64)
        tile = choose_tile(rule, 64)
        tiled = block_kind_counts(rule, coords[tile_order(rule.rule_coords(coords), tile)], 64, 64)
        assert tiled["density"] < 0.8 * rowmajor["density"], (rule, tile, tiled, rowmajor)


def test_blocked_neighborhood_with_aligned_tiles_is_all_full():
    rule = NeighborhoodRule((4, 16, 16), (2, 8, 8), (2, 8, 8))  # blocked attention, windows of 2x8x8 = 128
    coords = grid_coords(rule.grid)
    layout = build_grid_layout(rule, coords[tile_order(coords, (2, 8, 8))], 128, 128)
    kinds = layout.block_kinds()
    assert int((kinds == 2).sum()) == 0
    assert layout.density() == pytest.approx(1 / 8)


def test_dilation_groups_become_contiguous_in_tile_order():
    rule = NeighborhoodRule((1, 16, 16), (-1, 4, 4), (1, 4, 4), (1, 2, 2))  # blocked, dilated
    coords = grid_coords(rule.grid)
    perm = tile_order(rule.rule_coords(coords), (1, 4, 4))
    layout = build_grid_layout(rule, coords[perm], 16, 16)
    assert int((layout.block_kinds() == 2).sum()) == 0


def test_tile_candidates():
    c = tile_candidates((33, 45, 80), 128)
    assert (1, 8, 16) in c and (2, 8, 8) in c
    assert all(a * b * d == 128 for a, b, d in c)
    assert tile_candidates((1, 64, 64), 128) == [(1, 2, 64), (1, 4, 32), (1, 8, 16), (1, 16, 8), (1, 32, 4),
                                                 (1, 64, 2)]
    assert tile_candidates((1, 2, 3), 128) == [(1, 2, 4)]  # grid smaller than a block


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(window=(1, 3, 3)), r"window on axis T must be -1 \(whole axis\) or >= 2, got 1"),
        (dict(window=(3, 3, 9)), r"window \* dilation on axis W must be <= the axis length 8: window=9, dilation=1 "
         r"\(allowed window: 2..8 or -1\)"),
        (dict(window=(3, 3, 3), stride=(1, 4, 1)), r"stride on axis H must be in \[1, window=3\], got 4"),
        (dict(window=(3, 3, 3), dilation=(1, 1, 3)), "window \\* dilation on axis W"),
        (dict(window=(3, 3, 3), dilation=(1, 0, 1)), r"dilation on axis H must be in \[1, 6\]"),
    ],
)
def test_neighborhood_errors_name_parameter_value_and_range(kwargs, message):
    kwargs = {k: tuple(v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        NeighborhoodRule((4, 6, 8), **kwargs)


def test_neighborhood_clamped():
    r = NeighborhoodRule.clamped((4, 6, 8), window=(9, 9, 9), stride=(9, 2, 9))
    assert r.window == (4, 6, 8) and r.stride == (4, 2, 8)
    r = NeighborhoodRule.clamped((1, 6, 8), window=(5, 5))  # 2-tuple: T whole; T = 1 ignored anyway
    assert r.window == (-1, 5, 5)
    with pytest.raises(ValueError, match="dilation on axis W must leave groups of at least 2 tokens"):
        NeighborhoodRule.clamped((1, 6, 8), window=3, dilation=(1, 1, 5))
    with pytest.raises(ValueError, match="window must be an int or a tuple of 2"):
        NeighborhoodRule.clamped((1, 6, 8), window=(1, 2, 3, 4))


def test_axis_bounds_validate():
    with pytest.raises(ValueError, match="window"):
        neighborhood_axis_bounds(5, 6)
    lo, hi = neighborhood_axis_bounds(5, 3)
    assert lo.tolist() == [0, 0, 1, 2, 2] and hi.tolist() == [2, 2, 3, 4, 4]


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_clear_and_radial_errors(bad):
    with pytest.raises(ValueError, match="radius must be a finite number > 0"):
        ClearLocalRule((1, 4, 4), bad)
    with pytest.raises(ValueError, match="radius_t must be a finite number > 0 or None"):
        ClearLocalRule((1, 4, 4), 2, bad)
    with pytest.raises(ValueError, match="decay must be a finite number > 0"):
        RadialRule((2, 4, 4), bad)


def test_radial_block_size_error():
    with pytest.raises(ValueError, match="block_size must be a power of two >= 16, got 24"):
        RadialRule((2, 4, 4), 1.0, 24)
    with pytest.raises(ValueError, match="granularity"):
        build_grid_layout(RadialRule((2, 4, 4), 1.0, 16), grid_coords((2, 4, 4)), 16, 16, granularity="tile")

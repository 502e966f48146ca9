"""The analytic block layouts reproduce the independent token rules exactly (property-based)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.kernels import BlockLayout
from accel.patterns import (
    ClearLocalRule,
    NeighborhoodRule,
    block_kind_counts,
    build_grid_layout,
    grid_coords,
)

from . import reference as ref
from .strategies import clear_rules, grids, neighborhood_rules, orders, radial_rules

BLOCKS = st.sampled_from([(16, 16), (16, 32), (32, 16)])


def _check(layout: BlockLayout, expected: list[list[bool]]):
    want = torch.tensor(expected, dtype=torch.bool)
    got = layout.to_dense_mask()[0, 0]
    assert got.shape == want.shape
    mismatch = (got != want).nonzero()
    assert mismatch.shape[0] == 0, f"{mismatch.shape[0]} pairs differ, first {mismatch[:5].tolist()}"
    # every partial block really is mixed, every full block really is all-True
    kinds = layout.block_kinds()[0, 0]
    n = want.shape[0]
    qb, kb = layout.q_block, layout.kv_block
    for i, j in (kinds == 1).nonzero().tolist():
        assert bool(want[i * qb:(i + 1) * qb, j * kb:(j + 1) * kb].all())
    for i, j in (kinds == 2).nonzero().tolist():
        blk = want[i * qb:(i + 1) * qb, j * kb:(j + 1) * kb]
        assert bool(blk.any()) and not bool(blk.all()), (i, j, n)


@settings(max_examples=60)
@given(data=st.data())
def test_neighborhood_layout_matches_rule(data):
    grid = data.draw(grids())
    rule = data.draw(neighborhood_rules(grid))
    order = data.draw(orders(rule))
    qb, kb = data.draw(BLOCKS)
    layout = build_grid_layout(rule, grid_coords(grid, order), qb, kb)
    _check(layout, ref.natten_mask(grid, rule.window, rule.stride, rule.dilation, rule.causal, order))


@settings(max_examples=60)
@given(data=st.data())
def test_clear_layout_matches_rule(data):
    grid = data.draw(grids())
    rule = data.draw(clear_rules(grid))
    order = data.draw(orders(rule))
    qb, kb = data.draw(BLOCKS)
    layout = build_grid_layout(rule, grid_coords(grid, order), qb, kb)
    _check(layout, ref.clear_mask(grid, rule.radius, rule.radius_t, order))


@settings(max_examples=60)
@given(data=st.data())
def test_radial_layout_matches_rule(data):
    grid = data.draw(grids())
    rule = data.draw(radial_rules(grid))
    order = data.draw(st.one_of(st.none(), orders(rule)))
    granularity = data.draw(st.sampled_from(["token", "block"]))
    coords = grid_coords(grid, order)
    layout = build_grid_layout(rule, coords, 16, 16, granularity=granularity)
    expected = ref.radial_mask(grid, rule.decay, rule.block_size, rule.sink, order)
    if granularity == "block":
        expected = ref.round_up_to_blocks(expected, 16)
        assert int(layout.part_cnt.sum()) == 0  # block granularity: full blocks only
    _check(layout, expected)


@settings(max_examples=25)
@given(data=st.data())
def test_kind_counts_match_layout(data):
    grid = data.draw(grids())
    rule = data.draw(st.one_of(neighborhood_rules(grid), clear_rules(grid), radial_rules(grid)))
    order = data.draw(orders(rule))
    coords = grid_coords(grid, order)
    layout = build_grid_layout(rule, coords, 16, 16)
    counts = block_kind_counts(rule, coords, 16, 16)
    kinds = layout.block_kinds()
    assert counts["full"] == int((kinds == 1).sum())
    assert counts["partial"] == int((kinds == 2).sum())
    assert counts["density"] == pytest.approx(layout.density(), abs=1e-12)


def test_layout_shapes_and_broadcast():
    rule = ClearLocalRule((2, 5, 7), 2.0)
    layout = build_grid_layout(rule, grid_coords(rule.grid), 16, 16)
    assert layout.q_len == layout.kv_len == 70
    assert layout.batch_heads == (1, 1)
    assert layout.tiles.shape[1:] == (16, 16)


def test_layouts_use_no_quadratic_memory():
    """A 3D grid of 100k tokens builds without anything of size S x S (10^10 booleans would not fit)."""
    rule = NeighborhoodRule((10, 100, 100), (3, 9, 9), (1, 3, 3))
    from accel.patterns import tile_order

    coords = grid_coords(rule.grid)
    perm = tile_order(rule.rule_coords(coords), (2, 8, 8))
    counts = block_kind_counts(rule, coords[perm], 128, 128)
    assert 0 < counts["density"] < 0.05

"""Tile-aligned rules and their padded layouts against independent brute-force definitions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.patterns.tiled import (
    PaddedTiles,
    TiledClearLocalRule,
    TiledNeighborhoodRule,
    aligned_tiles,
    ball_tile,
    build_tile_layout,
    fitting_tiles,
    tile_layout_counts,
)

from . import reference as ref
from .strategies import grids

BLOCK = 16


@st.composite
def padded_tiles(draw, max_tokens=120):
    grid = draw(grids(max_tokens=max_tokens))
    return PaddedTiles(grid, draw(st.sampled_from(fitting_tiles(grid, BLOCK))))


@st.composite
def tiled_neighborhood_rules(draw):
    tiles = draw(padded_tiles())
    window, stride, causal = [], [], []
    for m in tiles.tile_grid:
        w = draw(st.sampled_from([-1] + list(range(1, m + 1))))
        window.append(w)
        stride.append(draw(st.integers(1, m if w == -1 else w)))
        causal.append(draw(st.booleans()))
    return TiledNeighborhoodRule(tiles, tuple(window), tuple(stride), tuple(causal))


@st.composite
def tiled_clear_rules(draw):
    tiles = draw(padded_tiles(max_tokens=80))
    radius = draw(st.sampled_from([0.5, 1, 2, 3, 4.5, 9]))
    radius_t = draw(st.sampled_from([None, 0.5, 1, 2.5]))
    return TiledClearLocalRule(tiles, radius, radius_t, draw(st.sampled_from(["any", "centre"])))


def reference_mask(rule):
    """The brute-force token rule of ``rule`` over the real tokens in row-major order."""
    g, t = rule.tiles.grid, rule.tiles.tile
    if isinstance(rule, TiledNeighborhoodRule):
        return ref.tiled_natten_mask(g, t, rule.window, rule.stride, rule.causal)
    make = ref.clear_tile_any_mask if rule.mode == "any" else ref.clear_tile_centre_mask
    return make(g, t, rule.radius, rule.radius_t)


def real_token_mask(layout, tiles):
    """The layout's token mask restricted to real tokens, rows/columns in row-major grid order; and
    whether any query attends a padding key."""
    dense = layout.to_dense_mask()[0, 0]
    pos = tiles.token_positions()
    pad = torch.tensor(ref.padded_order(tiles.grid, tiles.tile)) < 0
    return dense[pos][:, pos], bool(dense[:, pad].any())


@pytest.mark.parametrize("grid, tile", [((3, 5, 7), (2, 2, 4)), ((1, 9, 6), (1, 4, 4)), ((4, 1, 3), (4, 1, 4))])
def test_padded_order_matches_reference(grid, tile):
    tiles = PaddedTiles(grid, tile)
    order = tiles.order()
    assert order.tolist() == ref.padded_order(grid, tile)
    counts = tiles.valid_counts()
    for i, c in enumerate(counts.tolist()):  # real tokens are a prefix of each block
        block = order[i * tiles.volume:(i + 1) * tiles.volume]
        assert bool((block[:c] >= 0).all()) and bool((block[c:] < 0).all())
    assert int(counts.sum()) == tiles.num_tokens


@settings(max_examples=60, deadline=None)
@given(rule=st.one_of(tiled_neighborhood_rules(), tiled_clear_rules()))
def test_tile_layout_is_exact_and_fully_block_sparse(rule):
    layout = build_tile_layout(rule, BLOCK)
    got, pad_attended = real_token_mask(layout, rule.tiles)
    want = torch.tensor(reference_mask(rule), dtype=torch.bool)
    assert torch.equal(got, want), f"{int((got != want).sum())} pairs differ"
    assert not pad_attended
    # the only partial blocks are border key tiles, masked to a prefix of their real tokens
    counts = rule.tiles.valid_counts()
    kinds, tmap = layout.block_kinds()[0, 0], layout.tile_map()[0, 0]
    for i, j in (kinds == 2).nonzero().tolist():
        assert counts[j] < BLOCK
        tile = layout.tiles[tmap[i, j]]
        assert torch.equal(tile, (torch.arange(BLOCK) < counts[j]).expand(BLOCK, BLOCK))
    for _, j in (kinds == 1).nonzero().tolist():
        assert counts[j] == BLOCK
    figures = tile_layout_counts(rule)
    assert figures["full"] == int((kinds == 1).sum()) and figures["counted"] == int((kinds == 2).sum())
    n = rule.tiles.num_tokens
    assert figures["density"] == pytest.approx(float(want.sum()) / (n * n))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_odd_tile_windows_equal_gna_on_the_padded_grid(data):
    """With an odd number of tiles per window (or a tile of 1), the non-causal tile rule is GNA (NATTEN's
    rule) with window/stride in tokens on the padded grid, keys restricted to real tokens. (Causal
    tile rules admit the whole diagonal tile, GNA only the keys up to the query.)"""
    tiles = data.draw(padded_tiles())
    window, stride, causal = [], [], []
    for m, t in zip(tiles.tile_grid, tiles.tile, strict=True):
        odd = [w for w in range(1, m + 1) if w % 2 or t == 1]
        w = data.draw(st.sampled_from([-1] + odd))
        window.append(w)
        stride.append(data.draw(st.integers(1, m if w == -1 else w)) if w != 1 else 1)
        causal.append(False)
    rule = TiledNeighborhoodRule(tiles, tuple(window), tuple(stride), tuple(causal))
    padded = tiles.padded_grid
    tok_w = tuple(-1 if w == -1 else w * t for w, t in zip(window, tiles.tile, strict=True))
    tok_s = tuple(s * t for s, t in zip(stride, tiles.tile, strict=True))
    if any(p > 1 and w != -1 and w < 2 for p, w in zip(padded, tok_w, strict=True)):
        return  # a one-token window is not a NATTEN window
    gna = ref.natten_mask(padded, tok_w, tok_s, (1, 1, 1), tuple(causal))
    real = [i for i, (z, y, x) in enumerate(ref.coords_of(padded)) if z < tiles.grid[0] and y < tiles.grid[1]
            and x < tiles.grid[2]]
    want = [[gna[i][j] for j in real] for i in real]
    assert reference_mask(rule) == want


def test_rule_parameter_errors():
    tiles = PaddedTiles((4, 6, 8), (1, 4, 4))
    with pytest.raises(ValueError, match=r"window on axis H must be -1 or in \[1, 2\] tiles"):
        TiledNeighborhoodRule(tiles, (1, 3, 1))
    with pytest.raises(ValueError, match=r"stride on axis W must be in \[1, window=1\] tiles, got 2"):
        TiledNeighborhoodRule(tiles, (1, 1, 1), (1, 1, 2))
    with pytest.raises(ValueError, match="mode must be one of"):
        TiledClearLocalRule(tiles, 2.0, None, "nearest")
    with pytest.raises(ValueError, match="tile must be a tuple of three ints >= 1"):
        PaddedTiles((4, 6, 8), (0, 4, 4))
    with pytest.raises(ValueError, match=r"the tile \(1, 4, 4\) holds 16 positions but block_size is 32"):
        build_tile_layout(TiledNeighborhoodRule(tiles, (1, 1, 1)), 32)


def test_tile_choice():
    # HunyuanVideo 720p with the STA-like window: only (2, 8, 8) divides (18, 24, 24) / (6, 8, 8)
    assert aligned_tiles((33, 45, 80), (18, 24, 24), (6, 8, 8), 128) == [(2, 8, 8)]
    # Wan 720p window (12, 24, 24) / (4, 8, 8): (2, 8, 8) pads least
    assert aligned_tiles((21, 45, 80), (12, 24, 24), (4, 8, 8), 128)[0] == (2, 8, 8)
    assert aligned_tiles((1, 64, 64), (1, 32, 32), (1, 16, 16), 128)[:2] in ([(1, 8, 16), (1, 16, 8)],
                                                                             [(1, 16, 8), (1, 8, 16)])
    # CLEAR's ellipsoid radius 16 / radius_t 4 measures a frame as 4 tokens: (2, 8, 8) is a ball
    assert ball_tile((33, 45, 80), 128, (4.0, 1.0, 1.0)) == (2, 8, 8)
    assert ball_tile((1, 64, 64), 128, (0.0, 1.0, 1.0)) in ((1, 8, 16), (1, 16, 8))


def test_720p_neighborhood_layouts_visit_only_full_or_counted_blocks():
    for grid, window, stride in (((33, 45, 80), (9, 3, 3), (3, 1, 1)), ((21, 45, 80), (6, 3, 3), (2, 1, 1))):
        rule = TiledNeighborhoodRule(PaddedTiles(grid, (2, 8, 8)), window, stride)
        layout = build_tile_layout(rule, 128)
        c = tile_layout_counts(rule)
        assert c["partial"] == 0 and c["full"] + c["counted"] == int((layout.block_kinds() > 0).sum())
        # every query tile sees window[0] * window[1] * window[2] key tiles (windows are shifted, never cut)
        assert int(layout.full_cnt.sum() + layout.part_cnt.sum()) == rule.tiles.num_tiles * math.prod(window)

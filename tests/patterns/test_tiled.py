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


def gna_starts_on_tile_borders(w: int, s: int, t: int) -> bool:
    """GNA's non-causal window start (x // S) * S + S // 2 - W // 2 with S = s*t, W = w*t is a tile
    border for every x exactly when S // 2 - W // 2 == t * (s // 2 - w // 2)."""
    return (s * t) // 2 - (w * t) // 2 == t * (s // 2 - w // 2)


@st.composite
def border_aligned_rules(draw):
    """Non-causal tile rules whose windows GNA would also start on tile borders."""
    tiles = draw(padded_tiles())
    window, stride = [], []
    for m, t, p in zip(tiles.tile_grid, tiles.tile, tiles.padded_grid, strict=True):
        pairs = [(w, s) for w in range(1, m + 1) for s in range(1, w + 1)
                 if gna_starts_on_tile_borders(w, s, t) and (p == 1 or w * t >= 2)]
        w, s = draw(st.sampled_from(pairs))
        window.append(w)
        stride.append(s)
    return TiledNeighborhoodRule(tiles, tuple(window), tuple(stride))


@settings(max_examples=60, deadline=None)
@given(rule=border_aligned_rules())
def test_tile_rule_equals_gna_on_the_padded_grid_when_windows_start_on_tile_borders(rule):
    """Non-causal, with GNA's window starts on tile borders (e.g. odd window and stride in tiles), the
    tile rule is GNA (NATTEN's rule) with window/stride in tokens on the padded grid, keys restricted to
    real tokens. (Causal tile rules admit the whole diagonal tile, GNA only the keys up to the query.)"""
    tiles = rule.tiles
    padded = tiles.padded_grid
    window = tuple(m if w == -1 else w for w, m in zip(rule.window, tiles.tile_grid, strict=True))
    tok_w = tuple(w * t for w, t in zip(window, tiles.tile, strict=True))
    tok_s = tuple(s * t for s, t in zip(rule.stride, tiles.tile, strict=True))
    gna = ref.natten_mask(padded, tok_w, tok_s, (1, 1, 1), (False,) * 3)
    real = [i for i, (z, y, x) in enumerate(ref.coords_of(padded)) if z < tiles.grid[0] and y < tiles.grid[1]
            and x < tiles.grid[2]]
    want = [[gna[i][j] for j in real] for i in real]
    assert reference_mask(rule) == want


def test_sta_window_on_hunyuan_video_is_gna_on_the_padded_grid():
    """The HunyuanVideo tile-aligned preset's parameters: (2, 8, 8) tiles, window (9, 3, 3), stride
    (3, 1, 1) tiles -- GNA window (18, 24, 24), stride (6, 8, 8) tokens -- have tile-border starts."""
    assert all(gna_starts_on_tile_borders(w, s, t) for w, s, t in zip((9, 3, 3), (3, 1, 1), (2, 8, 8), strict=True))
    assert all(gna_starts_on_tile_borders(w, s, t) for w, s, t in zip((6, 3, 3), (2, 1, 1), (2, 8, 8), strict=True))


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

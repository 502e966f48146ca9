"""Radial's default computes mit-han-lab/radial-attention's masks (issue 19).

The reference is tests/patterns/radial_release.py, a literal port of the release's procedure written
from the research notes; accel computes the same masks analytically (band counts per frame pair).
"""

from __future__ import annotations

import pytest
import torch

from accel.patterns import grid_coords
from accel.patterns.radial import RadialRule, build_radial_layout, radial_block_mask

from . import radial_release as release

# >= 128 tokens per frame; 192 and 320 put frame starts off the block grid (row/column offsets); with
# T = 10 the thinning drops distances 3, 5, 6, 7 and 9 (s = 128)
TOKEN_GRIDS = [(6, 8, 16), (7, 12, 16), (10, 8, 16), (5, 16, 20)]
GRIDS = TOKEN_GRIDS + [(10, 16, 16), (9, 16, 20)]
# widths that are not multiples of the block (1.3, 2.5) make the release's density test differ from
# "any allowed pair" rounding
DECAYS = [0.05, 0.2, 0.95, 1.3, 2.5]


@pytest.mark.parametrize("grid", TOKEN_GRIDS)
@pytest.mark.parametrize("sink", [False, True])
@pytest.mark.parametrize("block", [128, 64])
def test_token_rule_is_the_release_rule(grid, sink, block):
    coords = grid_coords(grid)
    for decay in DECAYS:
        ours = RadialRule(grid, decay, block, sink).token_mask(coords)
        assert torch.equal(ours, release.token_mask(grid, decay, block, sink)), (grid, decay, block, sink)


@pytest.mark.parametrize("grid", [(6, 4, 8), (9, 6, 10)])
@pytest.mark.parametrize("sink", [False, True])
def test_frames_under_128_tokens_thin_adjacent_frames(grid, sink):
    """Frames of < 128 tokens: the release thins even d = 1 (undecayed width P/2 < 128); here s = 32 / 60,
    P = 64, so d = 1 has L = 32, m = 4 and is dropped, while d = 0 (L = 64, m = 2) is kept."""
    t, h, w = grid
    s = h * w
    coords = grid_coords(grid)
    for decay in DECAYS:
        ours = RadialRule(grid, decay, 64, sink).token_mask(coords)
        assert torch.equal(ours, release.token_mask(grid, decay, 64, sink)), (grid, decay, sink)
        # frame 2 -> frame 3 (d = 1): nothing; frame 2 -> frame 2 (d = 0): every pair
        assert not ours[2 * s:3 * s, 3 * s:4 * s].any()
        assert ours[2 * s:3 * s, 2 * s:3 * s].all()


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("sink", [False, True])
@pytest.mark.parametrize("block", [128, 64])
def test_block_selection_is_the_release_selection(grid, sink, block):
    for decay in DECAYS:
        ours = radial_block_mask(RadialRule(grid, decay, block, sink))
        assert torch.equal(ours, release.block_mask(grid, decay, block, sink)), (grid, decay, block, sink)


def test_executed_layout_is_the_block_selection():
    rule = RadialRule((5, 16, 20), 1.3, 128, True)
    layout = build_radial_layout(rule, granularity="block")
    n = 5 * 16 * 20
    blocks = release.block_mask(rule.grid, 1.3, 128, True)
    assert not torch.equal(layout.to_dense_mask()[0, 0], build_radial_layout(rule, granularity="cover").to_dense_mask()[0, 0])
    tokens = blocks.repeat_interleave(128, 0).repeat_interleave(128, 1)[:n, :n]
    assert int(layout.part_cnt.sum()) == 0
    assert torch.equal(layout.to_dense_mask()[0, 0], tokens)


def test_allowed_pairs_counts_the_token_rule():
    for grid, sink in [((10, 8, 16), True), ((7, 12, 16), False)]:
        for decay in (0.2, 1.0):
            rule = RadialRule(grid, decay, 128, sink)
            assert rule.allowed_pairs() == int(release.token_mask(grid, decay, 128, sink).sum())


@pytest.mark.parametrize("grid, decay, sink, sparsity", [
    ((18, 48, 80), 0.2, True, 0.713),    # Wan 2.1 script: 768x1280, 69 frames
    ((30, 48, 80), 0.95, False, 0.725),  # HunyuanVideo script: 768x1280, 117 frames
])
def test_release_scripts_sparsity(grid, decay, sink, sparsity):
    ours = radial_block_mask(RadialRule(grid, decay, 128, sink))
    assert torch.equal(ours, release.block_mask(grid, decay, 128, sink))
    assert round(1 - ours.double().mean().item(), 3) == sparsity


def test_block_selection_refuses_a_grid_it_leaves_empty():
    rule = RadialRule((8, 4, 4), 1.0, 128, False)  # 16 tokens per frame: no block passes the density test
    with pytest.raises(ValueError, match="keeps no key block for query block 0"):
        build_radial_layout(rule, granularity="block")
    assert build_radial_layout(rule, granularity="cover").num_q_blocks == 1

"""Hand-written neighbourhoods that pin the rules themselves (not only their two implementations)."""

from __future__ import annotations

import pytest
import torch

from accel.patterns import ClearLocalRule, NeighborhoodRule, RadialRule, neighborhood_token_mask, radial_half_widths

from .reference import natten_axis

# 1-D axis of 7, window 3: the key sets of queries x = 0..6, worked out by hand from the rule
# (L = 1; non-causal lead = floor(x/s)*s + floor(s/2), causal lead = floor(x/s)*s + s - 1,
# counted inside each dilation group).
HAND = {
    # (stride, dilation, causal): keys of x = 0 .. 6
    (1, 1, False): [{0, 1, 2}, {0, 1, 2}, {1, 2, 3}, {2, 3, 4}, {3, 4, 5}, {4, 5, 6}, {4, 5, 6}],
    (2, 1, False): [{0, 1, 2}, {0, 1, 2}, {2, 3, 4}, {2, 3, 4}, {4, 5, 6}, {4, 5, 6}, {4, 5, 6}],
    (3, 1, False): [{0, 1, 2}, {0, 1, 2}, {0, 1, 2}, {3, 4, 5}, {3, 4, 5}, {3, 4, 5}, {4, 5, 6}],
    (1, 2, False): [{0, 2, 4}, {1, 3, 5}, {0, 2, 4}, {1, 3, 5}, {2, 4, 6}, {1, 3, 5}, {2, 4, 6}],
    (2, 2, False): [{0, 2, 4}, {1, 3, 5}, {0, 2, 4}, {1, 3, 5}, {2, 4, 6}, {1, 3, 5}, {2, 4, 6}],
    (3, 2, False): [{0, 2, 4}, {1, 3, 5}, {0, 2, 4}, {1, 3, 5}, {0, 2, 4}, {1, 3, 5}, {2, 4, 6}],
    (1, 1, True): [{0}, {0, 1}, {0, 1, 2}, {1, 2, 3}, {2, 3, 4}, {3, 4, 5}, {4, 5, 6}],
    (2, 1, True): [{0}, {0, 1}, {1, 2}, {1, 2, 3}, {3, 4}, {3, 4, 5}, {4, 5, 6}],
    (3, 1, True): [{0}, {0, 1}, {0, 1, 2}, {3}, {3, 4}, {3, 4, 5}, {4, 5, 6}],
    (1, 2, True): [{0}, {1}, {0, 2}, {1, 3}, {0, 2, 4}, {1, 3, 5}, {2, 4, 6}],
    (2, 2, True): [{0}, {1}, {0, 2}, {1, 3}, {2, 4}, {1, 3, 5}, {2, 4, 6}],
    (3, 2, True): [{0}, {1}, {0, 2}, {1, 3}, {0, 2, 4}, {1, 3, 5}, {2, 4, 6}],
}


def _rows(mask):
    return [set(torch.nonzero(row).flatten().tolist()) for row in mask]


@pytest.mark.parametrize("key", sorted(HAND))
def test_axis_of_7_window_3(key):
    stride, dilation, causal = key
    for axis in range(3):  # the same rule on T, H or W
        grid = [1, 1, 1]
        grid[axis] = 7
        rule = NeighborhoodRule(tuple(grid), (3, 3, 3), (stride,) * 3, (dilation,) * 3, (causal,) * 3)
        assert _rows(neighborhood_token_mask(rule)) == HAND[key]
        assert _rows(rule.token_mask(torch.tensor([[0, 0, 0]]).repeat(7, 1).index_put_(
            (torch.arange(7), torch.full((7,), axis)), torch.arange(7)))) == HAND[key]
    assert natten_axis(7, 3, stride, dilation, causal) == HAND[key]  # the test reference agrees too


def test_every_query_sees_exactly_w_keys_when_not_causal():
    for n in range(2, 12):
        for w in range(2, n + 1):
            for s in range(1, w + 1):
                rule = NeighborhoodRule((1, 1, n), (-1, -1, w), (1, 1, s))
                assert neighborhood_token_mask(rule).sum(1).tolist() == [w] * n


def test_full_axis_and_blocked():
    full = NeighborhoodRule((1, 1, 5), (-1, -1, -1))
    assert bool(neighborhood_token_mask(full).all())
    causal_full = NeighborhoodRule((1, 1, 5), (-1, -1, -1), causal=(False, False, True))
    assert torch.equal(neighborhood_token_mask(causal_full), torch.ones(5, 5, dtype=torch.bool).tril())
    blocked = NeighborhoodRule((1, 1, 6), (-1, -1, 3), (1, 1, 3))  # s == w: non-overlapping windows
    assert _rows(neighborhood_token_mask(blocked)) == [{0, 1, 2}] * 3 + [{3, 4, 5}] * 3


def test_clear_disc_is_strict_and_cut_at_borders():
    rule = ClearLocalRule((1, 5, 5), radius=2)  # dy^2 + dx^2 < 4
    mask = rule.token_mask(torch.tensor([[0, y, x] for y in range(5) for x in range(5)]))
    centre = mask[12].reshape(5, 5).int().tolist()
    assert centre == [[0, 0, 0, 0, 0],
                      [0, 1, 1, 1, 0],
                      [0, 1, 1, 1, 0],
                      [0, 1, 1, 1, 0],
                      [0, 0, 0, 0, 0]]
    corner = mask[0].reshape(5, 5).int().tolist()  # cut, not shifted: only 4 keys
    assert corner == [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0]] + [[0] * 5] * 3


def test_clear_ellipsoid_time_axis():
    # r = 2, r_t = 2: (dt)^2 + dy^2 + dx^2 < 4 ; at dt = 1 the disc has dy^2 + dx^2 < 3
    rule = ClearLocalRule((3, 3, 3), radius=2, radius_t=2)
    assert rule.spatial_limits().tolist() == [3, 2, -1]  # dt = 2: 4 + 0 < 4 is false
    tube = ClearLocalRule((3, 3, 3), radius=2)
    assert tube.spatial_limits().tolist() == [3, 3, 3]


def test_radial_half_widths_by_hand():
    # s = 128 tokens per frame: P = 256. Thinning (undecayed L = 256 / 2**bit_length(d), fixed 128):
    # d = 0, 1: L = 256, 128 -> kept; d = 2, 3: L = 64 -> every 2nd; d = 4..7: L = 32 -> every 4th;
    # d = 8..15: L = 16 -> every 8th; d = 16..19: L = 8 -> every 16th.
    # Window (decay 1, floor 16): d = 2: 256 / 4 = 64; d = 4: 32; d = 8: 16; d = 16: max(8, 16) = 16.
    hw = radial_half_widths(20, 128, 1.0, 16)
    assert hw == [127, 127, 64, -1, 32, -1, -1, -1, 16] + [-1] * 7 + [16, -1, -1, -1]
    # decay scales the window only, never which distances are kept
    hw = radial_half_widths(20, 128, 0.5, 16)
    assert hw == [127, 127, 32, -1, 16, -1, -1, -1, 16] + [-1] * 7 + [16, -1, -1, -1]


def test_radial_sink_and_small_frames():
    rule = RadialRule((6, 4, 4), decay=0.01, block_size=16, sink=True)
    coords = torch.tensor([[t, y, x] for t in range(6) for y in range(4) for x in range(4)])
    mask = rule.token_mask(coords).reshape(6, 16, 6, 16)
    frames = mask.any(3).any(1)
    # 16 tokens per frame: P = 32 < 128, so even d = 1 is thinned (L = 16 -> every 8th distance): only
    # d = 0 and the sink remain
    expected = torch.zeros(6, 6, dtype=torch.bool)
    for i in range(6):
        for j in range(6):
            expected[i, j] = i == j or j == 0
    assert torch.equal(frames, expected)
    assert bool(mask[:, :, 0, :].all())

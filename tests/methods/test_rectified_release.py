"""Rectified's defaults compute the Rectified SpaAttn release's attention (issue 19).

References: tests/methods/rectified_release.py (an fp64 port of the release's selection and
rectification) and tests/patterns/gilbert_release.py (the release's per-cell curve index).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from accel.grid import TokenLayout
from accel.methods.rectified import Rectified, top_k_blocks
from accel.patterns.curves import hilbert_order

from ..patterns.gilbert_release import release_order
from .method_checks import qkv, text_layouts
from .rectified_release import release_attention

BLOCK = 16
MARGIN = 1e-5


def decidable(x):
    assume(abs(x) > MARGIN)


@st.composite
def video_grids(draw):
    """Grids the release's curve is defined on (a width of at least 2)."""
    t = draw(st.integers(1, 4))
    h = draw(st.integers(1, 5))
    w = draw(st.integers(2, max(2, 112 // (t * h))))
    return (t, h, w)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_default_is_the_release(data):
    grid = data.draw(video_grids())
    batch = data.draw(st.integers(1, 2))
    layout = data.draw(text_layouts(grid, batch))
    drop = data.draw(st.sampled_from([0.5, 0.75, 0.8, 0.9]))
    tau = data.draw(st.sampled_from([0.0, 0.1, 0.3, 0.6]))
    first = data.draw(st.booleans())
    q, k, v = qkv((batch, layout.seq_len, 2, 8), data.draw(st.integers(0, 1000)))
    want = release_attention(q, k, v, layout, drop=drop, tau=tau, block=BLOCK, first_blocks=first,
                             on_margin=decidable)
    method = Rectified(drop=drop, tau=tau, block_size=BLOCK, dense_first_blocks=first, backend="reference")
    torch.testing.assert_close(method(q, k, v, layout), want, atol=2e-5, rtol=1e-4)


def _text_heavy(seed):
    """A layout and inputs whose text keys take much of the pooled mass (so the text column ranks high)."""
    layout = TokenLayout((2, 4, 8), 8, "last", torch.tensor([[True] * 6 + [False] * 2]))
    q, k, v = qkv((1, layout.seq_len, 2, 16), seed)
    u = torch.ones(16)
    q[:, layout.video_slice] += u
    k[:, layout.text_slice] += 0.5 * u
    return layout, q, k, v


def test_text_column_takes_a_place_in_the_selection():
    layout, q, k, v = _text_heavy(3)
    kw = dict(drop=0.75, tau=0.0, keep_neighbors=False, block_size=BLOCK, backend="reference")
    joint = Rectified(**kw).plan(q, k, v, layout)
    apart = Rectified(**kw, count_text=False).plan(q, k, v, layout)
    nb = joint.selected.shape[-1]
    top = top_k_blocks(0.75, nb)
    text_first = (joint.p_hat > joint.p_text[..., None]).sum(-1) < top  # text among the top_k columns
    assert bool(text_first.any()) and top >= 1
    assert torch.equal(joint.selected.sum(-1)[text_first], torch.full_like(joint.selected.sum(-1)[text_first], top - 1))
    assert bool((apart.selected.sum(-1) == top).all())
    want = release_attention(q, k, v, layout, drop=0.75, tau=0.0, block=BLOCK)
    torch.testing.assert_close(Rectified(drop=0.75, tau=0.0, block_size=BLOCK, backend="reference")(q, k, v, layout),
                               want, atol=2e-5, rtol=1e-4)


def test_top_k_truncates_like_the_release():
    assert top_k_blocks(0.8, 900) == 179  # (1 - 0.8) * 900 = 179.99999999999997 in floats
    assert top_k_blocks(0.75, 8) == 2 and top_k_blocks(0.9, 9) == 0 and top_k_blocks(0.0, 7) == 7


@pytest.mark.parametrize("grid", [(1, 16, 16), (1, 9, 14), (3, 5, 8), (5, 6, 7), (4, 12, 20), (2, 1, 9)])
def test_hilbert_order_is_the_release_curve(grid):
    perm = hilbert_order(grid)
    assert perm.tolist() == release_order(grid)
    t, h, w = grid
    if t % 2 == 0 and h % 2 == 0 and w % 2 == 0 or grid == (1, 16, 16):
        cells = torch.stack([perm // (h * w), (perm // w) % h, perm % w], -1)
        assert bool(((cells[1:] - cells[:-1]).abs().sum(-1) == 1).all())  # one step along one axis


def test_hilbert_order_without_a_wide_major_axis():
    # width 1: the release's construction does not terminate; ours takes the height as the major edge
    perm = hilbert_order((4, 6, 1))
    assert perm.tolist() == release_order((4, 6, 1), ("h", "w", "t"))
    cells = torch.stack([perm // 6, perm % 6], -1)
    assert bool(((cells[1:] - cells[:-1]).abs().sum(-1) == 1).all())


def test_hilbert_order_errors():
    with pytest.raises(ValueError, match="axis_order must be a permutation"):
        hilbert_order((2, 4, 4), ("w", "w", "t"))
    with pytest.raises(ValueError, match="grid must be three ints"):
        hilbert_order((2, 0, 4))


@pytest.mark.parametrize("grid", [(4, 4, 6), (3, 5, 8)])  # NB / T = 6 / 4 and 8 / 3: floor and ceil differ
def test_wan_first_blocks_are_floor_of_nb_over_t(grid):
    """``dense_first_blocks`` selects the first ``floor(NB / T)`` blocks on the curve for each other (the release's
    ``first_frame_blocks = NB // T``), not ``ceil``: with one selected column per row (drop 0.9, tau 0, no
    neighbours) and every row's top column the last block, the rows below ``floor(NB / T)`` select exactly
    the first blocks and the last one, every other row the last block only."""
    layout = TokenLayout(grid)
    n = layout.num_video_tokens
    nb = -(-n // BLOCK)
    floor_first, ceil_first = nb // grid[0], -(-nb // grid[0])
    assert floor_first < ceil_first < nb - 1   # the two roundings select different blocks, apart from the last
    perm = hilbert_order(grid)
    q, k, v = qkv((1, n, 2, 8), 5)
    u = torch.ones(8)
    q += u
    k[:, perm[(nb - 1) * BLOCK:]] += 4 * u    # the last block on the curve: every row's largest pooled column
    method = Rectified(drop=0.9, tau=0.0, block_size=BLOCK, keep_neighbors=False, dense_first_blocks=True,
                       backend="reference")
    plan = method.plan(*method.on_curve(q, k, v, layout))
    want = torch.zeros(nb, nb, dtype=torch.bool)
    want[:, nb - 1] = True
    want[:floor_first, :floor_first] = True
    assert torch.equal(plan.selected, want.expand_as(plan.selected))
    ref = release_attention(q, k, v, layout, drop=0.9, tau=0.0, block=BLOCK, first_blocks=True, neighbours=False)
    torch.testing.assert_close(method(q, k, v, layout), ref, atol=2e-5, rtol=1e-4)

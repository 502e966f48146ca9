"""Partial-block kinds: bit-packed tiles, window and ellipsoid predicates, key padding, against brute force."""

import itertools
from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from accel.kernels import BlockLayout, EllipsoidPredicate, WindowPredicate, ellipsoid_form
from accel.kernels.mask_kinds import pack_tile_bits, unpack_tile_bits
from accel.patterns.clear_local import ClearLocalRule, clear_local_token_mask
from accel.patterns.neighborhood import NeighborhoodRule, neighborhood_token_mask
from accel.patterns.tiling import grid_coords, tile_order

from .helpers import block_mask_to_token_mask


@given(seed=st.integers(0, 2**31 - 1), kb=st.sampled_from([16, 32, 64, 128]), n=st.integers(1, 3))
def test_tile_bits_follow_the_documented_layout(seed, kb, n):
    g = torch.Generator().manual_seed(seed)
    tiles = torch.rand(n, 16, kb, generator=g) < 0.5
    bits = pack_tile_bits(tiles)
    assert bits.dtype == torch.int32 and bits.shape == (n, 16, -(-kb // 32))
    # brute force: bit j % 32 of word j // 32, two's complement
    for t, i, j in itertools.product(range(n), range(16), range(kb)):
        word = int(bits[t, i, j // 32]) & 0xFFFFFFFF
        assert bool((word >> (j % 32)) & 1) == bool(tiles[t, i, j])
    assert torch.equal(unpack_tile_bits(bits, kb), tiles)


def _fraction_inside(d, radii):
    return sum((Fraction(x) / Fraction(r)) ** 2 for x, r in zip(d, radii, strict=True) if r is not None) < 1


@pytest.mark.parametrize("radii", [(8, 8), (12.5, 12.5), (3, 12.5, 12.5), (None, 5, 5), (2.25, 0.75, 7)])
def test_ellipsoid_form_is_exact(radii):
    weights, limit = ellipsoid_form(radii)
    span = [0 if r is None else int(r) + 2 for r in radii]
    for d in itertools.product(*(range(-s, s + 1) for s in span)):
        integer = sum(w * x * x for w, x in zip(weights, d, strict=True)) <= limit
        assert integer == _fraction_inside(d, radii), (d, weights, limit)


def test_ellipsoid_form_documented_example_and_errors():
    assert ellipsoid_form([3, 12.5, 12.5]) == ((625, 36, 36), 5624)
    assert ellipsoid_form([8, 8]) == ((1, 1), 63)
    with pytest.raises(ValueError, match="beyond int32"):
        ellipsoid_form([0.1, 0.1])
    with pytest.raises(ValueError, match="finite numbers > 0"):
        ellipsoid_form([0, 3])
    with pytest.raises(ValueError, match="at least one finite radius"):
        ellipsoid_form([None, None])


def _window_mask_brute(q_lo, q_hi, k_coord, q_start, k_start, q_len, kv_len):
    """Independent loops over pairs (tiny sizes)."""
    m = torch.ones(q_len, kv_len, dtype=torch.bool)
    for i in range(q_start, q_start + q_lo.shape[0]):
        for j in range(k_start, k_start + k_coord.shape[0]):
            lo, hi, c = q_lo[i - q_start], q_hi[i - q_start], k_coord[j - k_start]
            m[i, j] = bool(((lo <= c) & (c <= hi)).all())
    return m


def _grid_tokens(t, h, w, order=None):
    c = grid_coords((t, h, w), order)
    return c.to(torch.int32)


@pytest.mark.parametrize(("q_start", "k_start", "extra"), [(0, 0, 0), (0, 0, 20), (24, 24, 0), (0, 11, 13)])
def test_window_layout_is_exact_with_uncovered_tokens(q_start, k_start, extra):
    g = torch.Generator().manual_seed(1)
    c = _grid_tokens(2, 6, 7)  # 84 grid tokens
    n = c.shape[0]
    radius = torch.randint(0, 3, (n, 3), generator=g, dtype=torch.int32)
    pred = WindowPredicate(c - radius, c + radius.flip(1), c, q_start=q_start, k_start=k_start)
    q_len = q_start + n + extra
    kv_len = k_start + n + extra
    lay = BlockLayout.from_predicate(pred, 16, 32, q_len, kv_len, allow_empty_rows=True)
    want = _window_mask_brute(pred.q_lo, pred.q_hi, pred.k_coord, q_start, k_start, q_len, kv_len)
    assert lay.partial_kind == "window"
    assert torch.equal(lay.to_dense_mask()[0, 0], want)
    assert lay.mask_density() == pytest.approx(want.double().mean().item(), abs=1e-12)
    # block kinds: a full block is all allowed, a skipped block has no allowed pair
    kinds = lay.block_kinds()[0, 0]
    for qb, kb in itertools.product(range(lay.num_q_blocks), range(lay.num_kv_blocks)):
        sl = want[qb * 16:(qb + 1) * 16, kb * 32:(kb + 1) * 32]
        if kinds[qb, kb] == 1:
            assert sl.all()
        if kinds[qb, kb] == 0:
            assert not sl.any()


@pytest.mark.parametrize("order", [None, "tiled"])
@pytest.mark.parametrize(("window", "stride", "dilation", "causal"), [
    ((3, 5, 5), (1, 1, 1), (1, 1, 1), (False, False, False)),
    ((2, 3, 4), (1, 2, 4), (1, 2, 1), (False, False, True)),
])
def test_window_predicate_reproduces_neighborhood_attention(order, window, stride, dilation, causal):
    """The recipe of KERNEL_API.md: NeighborhoodRule's rule-space coordinates and (lo, hi) features."""
    grid = (3, 8, 10)
    rule = NeighborhoodRule(grid, window, stride, dilation, causal)
    perm = None if order is None else tile_order(grid_coords(grid), (1, 4, 4))
    c = rule.rule_coords(grid_coords(grid, perm))
    f = rule.query_features(c)
    pred = WindowPredicate(f[:, 0::2].to(torch.int32), f[:, 1::2].to(torch.int32), c.to(torch.int32))
    n = c.shape[0]
    lay = BlockLayout.from_predicate(pred, 16, 16, n, n, allow_empty_rows=True)
    assert torch.equal(lay.to_dense_mask()[0, 0], neighborhood_token_mask(rule, perm))


@pytest.mark.parametrize(("radius", "radius_t"), [(3, None), (2.5, 1.5), (4, 2)])
def test_ellipsoid_predicate_reproduces_clear_local(radius, radius_t):
    """CLEAR's rule through ellipsoid_form: (t, y, x) radii (radius_t, radius, radius)."""
    grid = (3, 7, 9)
    rule = ClearLocalRule(grid, radius, radius_t)
    c = grid_coords(grid).to(torch.int32)
    weights, limit = ellipsoid_form([radius_t, radius, radius])
    pred = EllipsoidPredicate(c, c, weights, limit)
    n = c.shape[0]
    lay = BlockLayout.from_predicate(pred, 16, 32, n, n)
    assert lay.partial_kind == "ellipsoid"
    assert torch.equal(lay.to_dense_mask()[0, 0], clear_local_token_mask(rule))


def test_ellipsoid_per_query_limits_and_ranges():
    g = torch.Generator().manual_seed(3)
    c = _grid_tokens(1, 5, 9)
    n = c.shape[0]
    limit = torch.randint(-1, 12, (n,), generator=g, dtype=torch.int32)
    pred = EllipsoidPredicate(c[:, 1:], c[:, 1:], (2, 1), limit, q_start=5, k_start=0)
    lay = BlockLayout.from_predicate(pred, 16, 16, n + 5, n + 7, allow_empty_rows=True)
    want = torch.ones(n + 5, n + 7, dtype=torch.bool)
    d = (c[:, None, 1:].long() - c[None, :, 1:].long())
    want[5:, :n] = (2 * d[..., 0] ** 2 + d[..., 1] ** 2) <= limit[:, None].long()
    assert torch.equal(lay.to_dense_mask()[0, 0], want)


def test_key_padding_interval_keeps_blocks_full():
    g = torch.Generator().manual_seed(4)
    q_len, kv_len = 50, 100
    bm = torch.rand(1, 2, 4, 4, generator=g) < 0.7
    bm[..., 0] = True
    valid = torch.ones(3, kv_len, dtype=torch.bool)
    valid[0, 70:] = False  # text padding at the end
    valid[1, 20:45] = False  # padding inside (text first, then video)
    lay = BlockLayout.from_block_mask(bm, 16, 32, q_len, kv_len, key_padding_mask=valid)
    assert lay.key_pad is not None and lay.key_pad.tolist() == [[70, 100], [20, 45], [100, 100]]
    assert lay.partial_kind == "none"
    want = block_mask_to_token_mask(bm, 16, 32, q_len, kv_len) & valid[:, None, None, :]
    assert torch.equal(lay.to_dense_mask(), want)
    assert lay.mask_density() == pytest.approx(want.double().mean().item(), abs=1e-12)
    assert lay.batch_heads == (3, 2)
    assert not lay.is_dense
    # key block 3 (keys 96..99) is all padding for batch 0: dropped from the lists
    assert not (lay.block_kinds()[0, :, :, 3] > 0).any()
    # a non-contiguous padding still gets tiles
    valid[2, 5] = valid[2, 9] = False
    tiles = BlockLayout.from_block_mask(bm, 16, 32, q_len, kv_len, key_padding_mask=valid)
    assert tiles.key_pad is None and tiles.partial_kind == "tiles"
    assert torch.equal(tiles.to_dense_mask(), block_mask_to_token_mask(bm, 16, 32, q_len, kv_len) & valid[:, None, None, :])


def test_with_key_padding_on_a_tile_layout_and_block_masks():
    g = torch.Generator().manual_seed(5)
    mask = torch.rand(1, 1, 40, 70, generator=g) < 0.4
    mask[..., 0] = True
    lay = BlockLayout.from_token_mask(mask, 16, 16).with_key_padding(torch.tensor([50, 60]), 66)
    valid = torch.ones(2, 70, dtype=torch.bool)
    valid[0, 50:66] = False
    valid[1, 60:66] = False
    want = mask & valid[:, None, None, :]
    assert torch.equal(lay.to_dense_mask(), want)
    assert lay.mask_density() == pytest.approx(want.double().mean().item(), abs=1e-12)
    b, qb, kb = torch.meshgrid(torch.arange(2), torch.arange(3), torch.arange(5), indexing="ij")
    blocks = lay.block_masks(b.flatten(), torch.zeros_like(b.flatten()), qb.flatten(), kb.flatten())
    rebuilt = torch.zeros(2, 48, 80, dtype=torch.bool)
    for i, (bi, qi, ki) in enumerate(zip(b.flatten(), qb.flatten(), kb.flatten(), strict=True)):
        rebuilt[bi, qi * 16:(qi + 1) * 16, ki * 16:(ki + 1) * 16] = blocks[i]
    assert torch.equal(rebuilt[:, :40, :70], want[:, 0])


def test_schedule_orders_clean_blocks_first_and_rows_by_work():
    bm = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    bm[0, 0, 0, :] = True  # 4 blocks
    bm[0, 0, 1, 1] = True  # 1 block
    bm[0, 0, 2, 1:3] = True  # 2 blocks
    bm[0, 0, 3, 0] = True
    lay = BlockLayout.from_block_mask(bm, 16, 16, 64, 60).with_key_padding(20, 40)  # ragged last block
    s = lay.schedule
    assert s.row_order[0, 0].tolist() == [0, 2, 1, 3]
    # row 0: block 0 clean; block 1 (keys 16..31) overlaps the padding; block 2 (32..47) too; block 3 ragged
    assert s.clean_cnt[0, 0].tolist() == [1, 0, 0, 1]
    assert s.full_cnt[0, 0].tolist() == [4, 1, 2, 1]
    assert s.full_idx[0, 0, 0, :4].tolist() == [0, 1, 2, 3]
    assert s.has_edge and not s.has_partial
    dead = BlockLayout.from_block_mask(bm, 16, 16, 64, 64, allow_empty_rows=True).with_key_padding(16, 32)
    assert dead.schedule.full_cnt[0, 0].tolist() == [3, 0, 1, 1]


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda c: WindowPredicate(c.long(), c, c), "q_lo must be an int32"),
        (lambda c: WindowPredicate(c, c[:, :2], c), "q_hi has 2 axes"),
        (lambda c: WindowPredicate(c[:5], c, c), "q_lo .* and q_hi .* must have the same shape"),
        (lambda c: WindowPredicate(c, c, c, q_start=-1), "q_start must be an int >= 0"),
        (lambda c: WindowPredicate(c - 2**30, c, c), "q_lo values must lie in"),
        (lambda c: EllipsoidPredicate(c, c, (1, 1), 3), "weights must be 3 ints"),
        (lambda c: EllipsoidPredicate(c, c, (1, 1, -1), 3), "weights must be 3 ints"),
        (lambda c: EllipsoidPredicate(c, c, (1, 1, 1), torch.zeros(3, dtype=torch.int32)), "limit must be"),
        (lambda c: EllipsoidPredicate(c * 30000, c, (1, 1, 1), 3), "over 2\\*\\*31 - 1"),
    ],
)
def test_bad_predicates_raise(build, needle):
    c = _grid_tokens(1, 4, 4)
    with pytest.raises(ValueError, match=needle):
        build(c)


def test_layout_checks_predicate_and_padding_ranges():
    c = _grid_tokens(1, 4, 4)
    pred = WindowPredicate(c, c, c, q_start=10)
    with pytest.raises(ValueError, match="covers queries \\[10, 26\\) but q_len is 20"):
        BlockLayout.from_predicate(pred, 16, 16, 20, 20)
    lay = BlockLayout.full(20, 30, q_block=16, kv_block=16)
    with pytest.raises(ValueError, match="key_pad intervals"):
        lay.with_key_padding(25, 31)
    with pytest.raises(ValueError, match="key_pad intervals"):
        lay.with_key_padding(20, 10)
    with pytest.raises(ValueError, match="only padding keys"):
        BlockLayout.full(20, 30, q_block=16, kv_block=16).with_key_padding(0)
    assert BlockLayout.full(20, 30, q_block=16, kv_block=16, ).with_key_padding(30).is_dense

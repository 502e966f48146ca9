import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from accel.kernels import BlockLayout

from .helpers import block_mask_to_token_mask


def _random_mask(seed, b, h, q_len, kv_len, p):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, q_len, kv_len, generator=g) < p


@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.sampled_from([1, 2]),
    h=st.sampled_from([1, 3]),
    q_len=st.integers(1, 90),
    kv_len=st.integers(1, 90),
    q_block=st.sampled_from([16, 32]),
    kv_block=st.sampled_from([16, 32, 64]),
    p=st.sampled_from([0.0, 0.05, 0.5, 1.0]),
)
def test_from_token_mask_round_trips_and_counts(seed, b, h, q_len, kv_len, q_block, kv_block, p):
    mask = _random_mask(seed, b, h, q_len, kv_len, p)
    # structured part: a block of all-True pairs so full blocks occur too
    mask[..., : q_len // 2, : kv_len // 2] = True
    lay = BlockLayout.from_token_mask(mask, q_block, kv_block, allow_empty_rows=True)
    assert torch.equal(lay.to_dense_mask(), mask)
    # mask_density is the allowed fraction, brute force
    assert lay.mask_density() == pytest.approx(mask.double().mean().item(), abs=1e-12)
    # density: pairs inside visited blocks, brute force over blocks
    visited = 0
    for qb in range(lay.num_q_blocks):
        for kb in range(lay.num_kv_blocks):
            sl = mask[..., qb * q_block : (qb + 1) * q_block, kb * kv_block : (kb + 1) * kv_block]
            visited += sl.any(-1).any(-1).double() * sl.shape[-1] * sl.shape[-2]
    assert lay.density() == pytest.approx((visited / (q_len * kv_len)).mean().item(), abs=1e-12)
    # full blocks are exactly the blocks whose in-bounds pairs are all allowed
    kinds = lay.block_kinds()
    for qb in range(lay.num_q_blocks):
        for kb in range(lay.num_kv_blocks):
            sl = mask[..., qb * q_block : (qb + 1) * q_block, kb * kv_block : (kb + 1) * kv_block]
            want = torch.where(sl.all(-1).all(-1), 1, torch.where(sl.any(-1).any(-1), 2, 0))
            assert torch.equal(kinds[..., qb, kb].long(), want.long())


def test_full_layout_is_dense():
    lay = BlockLayout.full(100, 300, q_block=32, kv_block=64)
    assert lay.is_dense
    assert lay.density() == 1.0 and lay.mask_density() == 1.0
    assert lay.to_dense_mask().all()
    assert lay.to_dense_mask().shape == (1, 1, 100, 300)


def test_from_block_mask_matches_expansion():
    g = torch.Generator().manual_seed(1)
    bm = torch.rand(2, 3, 4, 5, generator=g) < 0.5
    bm[..., 0] = True  # every row visits a block
    lay = BlockLayout.from_block_mask(bm, 16, 32, 60, 150)
    assert torch.equal(lay.to_dense_mask(), block_mask_to_token_mask(bm, 16, 32, 60, 150))
    assert not lay.part_cnt.any()


def test_from_block_mask_with_key_padding():
    g = torch.Generator().manual_seed(2)
    q_len, kv_len = 50, 70
    bm = torch.ones(1, 2, 4, 3, dtype=torch.bool)
    bm[:, 1, :, 1] = False
    valid = torch.rand(3, kv_len, generator=g) < 0.7
    valid[:, 32:64] = True  # one fully valid block -> stays full
    lay = BlockLayout.from_block_mask(bm, 16, 32, q_len, kv_len, key_padding_mask=valid)
    want = block_mask_to_token_mask(bm, 16, 32, q_len, kv_len) & valid[:, None, None, :]
    assert torch.equal(lay.to_dense_mask(), want)
    assert lay.batch_heads == (3, 2)
    # the all-valid middle block is full for head 0
    assert (lay.block_kinds()[:, 0, :, 1] == 1).all()


def test_from_block_mask_padding_empties_block():
    valid = torch.ones(1, 64, dtype=torch.bool)
    valid[0, 32:] = False
    bm = torch.ones(1, 1, 1, 2, dtype=torch.bool)
    lay = BlockLayout.from_block_mask(bm, 16, 32, 16, 64, key_padding_mask=valid)
    # the all-padding key block is skipped entirely
    assert lay.block_kinds()[0, 0, 0].tolist() == [1, 0]


def test_tiles_are_deduplicated():
    mask = torch.ones(1, 1, 64, 64, dtype=torch.bool).tril()
    lay = BlockLayout.from_token_mask(mask, 16, 16)
    assert lay.tiles.shape[0] == 1  # the four diagonal blocks share one tile
    assert torch.equal(lay.to_dense_mask(), mask)


def _valid_parts():
    lay = BlockLayout.full(40, 40, q_block=16, kv_block=16)
    return {f: getattr(lay, f) for f in ("full_idx", "full_cnt", "part_idx", "part_cnt", "part_tile", "tiles")}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda p: p.update(full_idx=p["full_idx"] + 5), "full_idx"),
        (lambda p: p.update(full_cnt=p["full_cnt"] + 1), "full_cnt"),
        (lambda p: p.update(full_cnt=p["full_cnt"].long()), "full_cnt"),
        (lambda p: p.update(tiles=p["tiles"][:, :8]), "tiles"),
        (lambda p: p.update(part_cnt=p["part_cnt"] + 1), "more than once"),
        (lambda p: p.update(full_cnt=p["full_cnt"] * 0), "visits no key block"),
        (lambda p: p.update(part_tile=p["part_tile"] + 3, part_cnt=p["part_cnt"] * 0 + 1,
                            full_cnt=p["full_cnt"] - 1), "part_tile"),
        (lambda p: p.update(full_idx=p["full_idx"][..., None]), "full_idx"),
    ],
)
def test_invalid_layouts_raise(change, needle):
    parts = _valid_parts()
    change(parts)
    with pytest.raises(ValueError, match=needle):
        BlockLayout(40, 40, 16, 16, **parts)


@pytest.mark.parametrize("bad", [8, 24, 0, -16, 16.0, True])
def test_block_size_validation(bad):
    with pytest.raises(ValueError, match="q_block must be a power of two >= 16"):
        BlockLayout.full(32, 32, q_block=bad)


@pytest.mark.parametrize(("q_len", "kv_len", "needle"), [
    (10.5, 64, "q_len must be a positive int, got 10.5"), (64, 0, "kv_len must be a positive int, got 0"),
    (True, 64, "q_len must be a positive int, got True"), (64, float("nan"), "kv_len must be a positive int, got nan"),
])
def test_lengths_are_checked_before_building(q_len, kv_len, needle):
    with pytest.raises(ValueError, match=needle):
        BlockLayout.full(q_len, kv_len, q_block=16, kv_block=16)
    with pytest.raises(ValueError, match=needle):
        BlockLayout.from_block_mask(torch.ones(1, 1, 4, 4, dtype=torch.bool), 16, 16, q_len, kv_len)


def test_from_block_mask_shape_error():
    with pytest.raises(ValueError, match=r"block_mask must have shape \[B\|1, H\|1, 2, 2\]"):
        BlockLayout.from_block_mask(torch.ones(1, 1, 3, 2, dtype=torch.bool), 16, 16, 32, 32)


def test_key_padding_mask_shape_error():
    with pytest.raises(ValueError, match="key_padding_mask"):
        BlockLayout.from_block_mask(
            torch.ones(1, 1, 2, 2, dtype=torch.bool), 16, 16, 32, 32, key_padding_mask=torch.ones(1, 31, dtype=torch.bool)
        )


def _brute_kinds(mask, qb, kb):
    """Block kinds of a bool [q_len, kv_len] token mask, worked out pair by pair."""
    q_len, kv_len = mask.shape
    rows = []
    for i in range(0, q_len, qb):
        line = ""
        for j in range(0, kv_len, kb):
            cells = mask[i:i + qb, j:j + kb]
            line += "#" if bool(cells.all()) else "+" if bool(cells.any()) else "."
        rows.append(line)
    return rows


def test_str_draws_the_block_map_and_counts():
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(40, 70, generator=g) < 0.02
    mask[:16, :32] = True  # one full block
    mask[20:25, 50:52] = True
    lay = BlockLayout.from_token_mask(mask[None, None], 16, 32, allow_empty_rows=True)
    expected = _brute_kinds(mask, 16, 32)
    assert lay.draw().splitlines() == expected
    text = "".join(expected)
    counts = {"full": text.count("#"), "partial": text.count("+"), "skipped": text.count("."), "blocks": len(text)}
    assert lay.block_counts() == counts and counts["full"] >= 1 and counts["partial"] >= 1
    first, *rest = str(lay).splitlines()
    assert rest == expected
    assert first.startswith("BlockLayout 40 x 70 tokens in blocks of 16 x 32, batch_heads=(1, 1): "
                            f"{counts['full']} full (#) + {counts['partial']} partial (+) of {counts['blocks']} blocks")


def test_draw_truncates_big_maps_and_indexes_batch_and_heads():
    big = BlockLayout.full(16 * 60, 16 * 130, q_block=16, kv_block=16)
    lines = big.draw(max_rows=4, max_cols=10).splitlines()
    assert lines == ["#" * 10 + " ... (+120)"] * 4 + ["... (56 more query blocks)"]
    assert len(str(big).splitlines()) == 1 + 48 + 1  # summary, the default 48 rows, the "more" line
    block_mask = torch.zeros(2, 3, 2, 2, dtype=torch.bool)
    block_mask[1, 2, 0, 1] = block_mask[1, 2, 1, 0] = True
    block_mask[0, :, :, 0] = True
    block_mask[1, :2, :, 1] = True
    lay = BlockLayout.from_block_mask(block_mask, 16, 16, 32, 32)
    assert lay.draw(1, 2).splitlines() == [".#", "#."]
    assert lay.block_counts(0, 1) == {"full": 2, "partial": 0, "skipped": 2, "blocks": 4}
    with pytest.raises(IndexError, match="head 3 out of range"):
        lay.draw(0, 3)
    broadcast = BlockLayout.full(32, 32, q_block=16, kv_block=16)
    assert broadcast.draw(5, 7) == "##\n##"  # broadcast dimensions serve every index

"""The gather backend (CPU flash attention on gathered / strided blocks) against the fp64 masked reference."""

import pytest
import torch
from hypothesis import given, settings

from accel.kernels import BlockLayout, block_sparse_attention, resolve_backend
from accel.kernels import gather as gather_mod
from accel.kernels.attention import cpu_auto_backend

from .helpers import TOL, block_mask_to_token_mask, dense_masked_attention, make_qkv
from .test_backends import _case, _check, case_strategy


@given(**case_strategy)
@settings(max_examples=60, deadline=None)
def test_gather_matches_dense_random_layouts(**kw):
    """Random token masks (full, partial and skipped blocks, empty rows, broadcast layouts, strided inputs)."""
    _check("gather", *_case(**kw))


def _band(nq, nkv, width, *, wrap=False):
    """Block mask of a band: query block i visits key blocks within ``width`` of its centre ``i * nkv // nq``."""
    i = torch.arange(nq)[:, None]
    j = torch.arange(nkv)[None]
    centre = (i * nkv) // nq
    if wrap:
        return (j - centre + width) % nkv <= 2 * width
    return (j - centre).abs() <= width


def _run(q, k, v, lay, mask, scale=None):
    d = q.shape[-1]
    s = scale if scale is not None else d**-0.5
    want, want_lse = dense_masked_attention(q, k, v, mask, s)
    out, lse = block_sparse_attention(q, k, v, lay, backend="gather", return_lse=True, scale=scale)
    tol = TOL[q.dtype]
    assert out.shape == q.shape and out.dtype == q.dtype and lse.dtype == torch.float32
    torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    torch.testing.assert_close(lse.double()[finite], want_lse[finite], atol=1e-4, rtol=1e-4)
    assert (out.double()[~finite] == 0).all()
    plain = block_sparse_attention(q, k, v, lay, backend="gather", scale=scale)
    torch.testing.assert_close(plain.double(), want, atol=tol, rtol=tol)
    plain.mul_(1)  # the output owns its memory (not a broadcast view of one row): in-place use works


def _plan(lay, batch):
    return lay.cached(("gather_plan", batch), lambda: None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "q_len,kv_len,q_block,kv_block,width,wrap,strided",
    [
        (256, 256, 32, 32, 1, False, True),  # step 1
        (500, 470, 32, 32, 2, False, True),  # ragged query and key blocks
        (256, 256, 32, 32, 2, True, True),  # wrap-around: interior rows strided, the rest gathered
        (256, 512, 32, 32, 1, False, True),  # Sq != Skv: step 2 blocks
        (512, 256, 32, 32, 1, False, True),  # Sq != Skv: pairs of query blocks share keys (units of 2, step 1)
        (300, 300, 16, 64, 1, False, True),  # q_block < kv_block: runs of step 0
    ],
)
def test_strided_runs_match_dense(dtype, q_len, kv_len, q_block, kv_block, width, wrap, strided):
    g = torch.Generator().manual_seed(q_len + kv_len)
    nq, nkv = -(-q_len // q_block), -(-kv_len // kv_block)
    bm = _band(nq, nkv, width, wrap=wrap).view(1, 1, nq, nkv)
    lay = BlockLayout.from_block_mask(bm, q_block, kv_block, q_len, kv_len)
    q, k, v = make_qkv(2, q_len, kv_len, 3, 16, dtype, g)
    _run(q, k, v, lay, block_mask_to_token_mask(bm, q_block, kv_block, q_len, kv_len))
    plan = _plan(lay, 2)
    assert any(isinstance(e, gather_mod._Strided) for e in plan.entries) == strided  # the path under test ran


def test_rows_seeing_every_key_run_as_one_sequence():
    """Rows visiting every key block (text queries) share their keys: one long query sequence (step 0)."""
    g = torch.Generator().manual_seed(1)
    q_len, kv_len = 200, 170
    bm = torch.ones(1, 1, 7, 6, dtype=torch.bool)
    bm[..., 5:, :3] = False  # the last two query blocks see fewer key blocks
    lay = BlockLayout.from_block_mask(bm, 32, 32, q_len, kv_len)
    q, k, v = make_qkv(1, q_len, kv_len, 2, 8, torch.float32, g, "bhsd")
    _run(q, k, v, lay, block_mask_to_token_mask(bm, 32, 32, q_len, kv_len))
    steps = [e.step for e in _plan(lay, 1).entries if isinstance(e, gather_mod._Strided)]
    assert steps == [0]


@pytest.mark.parametrize("kind", ["contiguous", "bhsd", "sliced", "strided_d"])
def test_per_head_and_per_batch_layouts(kind):
    """Different blocks per (batch, head): the per-head path; strided inputs of every kind."""
    g = torch.Generator().manual_seed(2)
    bsz, heads, q_len, kv_len, qb = 2, 3, 190, 230, 32
    nq, nkv = -(-q_len // qb), -(-kv_len // qb)
    bm = torch.stack([torch.stack([torch.roll(_band(nq, nkv, 1), b + h, 1) for h in range(heads)])
                      for b in range(bsz)])
    bm[1, 2, :, :] = torch.rand(nq, nkv, generator=g) < 0.4
    bm[1, 2, :, 0] = True
    lay = BlockLayout.from_block_mask(bm, qb, qb, q_len, kv_len)
    q, k, v = make_qkv(bsz, q_len, kv_len, heads, 24, torch.bfloat16, g, kind)
    _run(q, k, v, lay, block_mask_to_token_mask(bm, qb, qb, q_len, kv_len))
    assert _plan(lay, bsz).per_head


def test_batch_broadcast_layout_with_key_padding():
    """Key padding: partial blocks with row-constant tiles (the broadcast mask), layout batch 2."""
    g = torch.Generator().manual_seed(3)
    bsz, heads, q_len, kv_len = 2, 2, 160, 150
    bm = _band(5, 5, 1).view(1, 1, 5, 5)
    valid = torch.rand(bsz, kv_len, generator=g) < 0.7
    valid[:, 0] = True
    lay = BlockLayout.from_block_mask(bm, 32, 32, q_len, kv_len, key_padding_mask=valid)
    q, k, v = make_qkv(bsz, q_len, kv_len, heads, 16, torch.float32, g)
    mask = block_mask_to_token_mask(bm, 32, 32, q_len, kv_len) & valid[:, None, None, :]
    _run(q, k, v, lay, mask)
    masks = [e.mask for e in _plan(lay, bsz).entries if getattr(e, "mask", None) is not None]
    assert masks and all(m.shape[2] == 1 for m in masks)  # broadcast over queries


def test_partial_tiles_with_empty_query_rows():
    """2-D tiles where some query rows of a block allow no key, and rows with no key at all."""
    g = torch.Generator().manual_seed(4)
    q_len, kv_len = 100, 90
    mask = torch.rand(1, 2, q_len, kv_len, generator=g) < 0.3
    mask[..., 40:60, :] = False  # query rows with no key at all -> out 0, LSE -inf
    mask[..., :, 70:] = True  # full blocks next to partial ones
    mask[..., 40:60, :] = False
    lay = BlockLayout.from_token_mask(mask, 16, 16, allow_empty_rows=True)
    q, k, v = make_qkv(1, q_len, kv_len, 2, 16, torch.float32, g)
    _run(q, k, v, lay, mask)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("empty", [slice(2, 4), slice(5, 6), slice(0, 6)])
def test_query_blocks_with_no_key_block(empty, heads):
    """Empty query blocks in the middle, or the last one (the other rows' results then come out in row
    order, and the empty row must still be added), or every query block (no SDPA call at all; the output
    must still be a tensor of its own, not a broadcast zero). Layouts shared by the heads, or per head."""
    g = torch.Generator().manual_seed(5)
    bm = torch.ones(1, heads, 6, 6, dtype=torch.bool)
    bm[..., empty, :] = False
    lay = BlockLayout.from_block_mask(bm, 32, 32, 180, 180, allow_empty_rows=True)
    q, k, v = make_qkv(1, 180, 180, 2, 16, torch.bfloat16, g)
    _run(q, k, v, lay, block_mask_to_token_mask(bm, 32, 32, 180, 180))


def test_partial_heavy_band_layout():
    from accel.eval.kernel_bench import band_layout

    g = torch.Generator().manual_seed(6)
    lay = band_layout(500, 32, 0.3, "cpu", partial_fraction=0.6)
    assert bool(lay.part_cnt.any()) and bool(lay.full_cnt.any())
    q, k, v = make_qkv(1, 500, 500, 2, 32, torch.bfloat16, g)
    _run(q, k, v, lay, lay.to_dense_mask())


def test_gathered_chunks(monkeypatch):
    """Gathered groups split into many chunks (a tiny chunk budget) give the same result."""
    monkeypatch.setattr(gather_mod, "_GATHER_CHUNK_BYTES", 1)
    monkeypatch.setattr(gather_mod, "_MIN_STRIDED_RUN", 10**9)  # everything gathered
    g = torch.Generator().manual_seed(7)
    bm = torch.rand(1, 2, 8, 8, generator=g) < 0.5
    bm[..., 0] = True
    lay = BlockLayout.from_block_mask(bm, 16, 16, 120, 128)
    q, k, v = make_qkv(2, 120, 128, 2, 16, torch.float32, g)
    _run(q, k, v, lay, block_mask_to_token_mask(bm, 16, 16, 120, 128))


def test_prior_and_affine_with_gather():
    """The prior merge and the affine epilogue wrap the gather backend like the others."""
    g = torch.Generator().manual_seed(8)
    q, k, v = make_qkv(1, 96, 96, 2, 16, torch.float32, g)
    k2, v2 = make_qkv(1, 96, 40, 2, 16, torch.float32, g)[1:]
    bm = _band(3, 3, 0).view(1, 1, 3, 3)
    lay = BlockLayout.from_block_mask(bm, 32, 32, 96, 96)
    prior = dense_masked_attention(q, k2, v2, torch.ones(1, 1, 96, 40, dtype=torch.bool), 0.25)
    prior = (prior[0].float(), prior[1].float())
    out, lse = block_sparse_attention(q, k, v, lay, backend="gather", scale=0.25, return_lse=True, prior=prior)
    mask = torch.cat([block_mask_to_token_mask(bm, 32, 32, 96, 96), torch.ones(1, 1, 96, 40, dtype=torch.bool)], -1)
    want, want_lse = dense_masked_attention(q, torch.cat([k, k2], 1), torch.cat([v, v2], 1), mask, 0.25)
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-5, rtol=1e-5)


def test_cpu_auto_rule():
    """The measured rule (accel/kernels/attention.py, benchmarks/results/cpu_gather.json): gather from
    AUTO_GATHER_MIN_PAIRS query-key pairs on, the reference below and for dense layouts."""
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu, 100, 100, dense_layout=True) == "reference"
    assert resolve_backend("auto", cpu, 16384, 16384, dense_layout=True) == "reference"
    assert resolve_backend("gather", torch.device("cuda"), 10, 10) == "gather"  # explicit names pass through
    assert resolve_backend("auto", cpu, 256, 256) == "reference"
    assert resolve_backend("auto", cpu, 512, 512) == "gather"
    assert resolve_backend("auto", cpu, 256, 1024) == "gather"  # pairs, not lengths
    for q_len in (1024, 2304, 16384):
        assert resolve_backend("auto", cpu, q_len, q_len) == cpu_auto_backend(q_len, q_len) == "gather"


def test_auto_equals_its_choice_on_cpu():
    """`auto` runs exactly the backend it names (the reference at 256 tokens, gather at 512): identical
    results, not just close ones."""
    g = torch.Generator().manual_seed(9)
    for n in (256, 512):
        nb = n // 32
        lay = BlockLayout.from_block_mask(_band(nb, nb, 1).view(1, 1, nb, nb), 32, 32, n, n)
        q, k, v = make_qkv(1, n, n, 2, 16, torch.bfloat16, g)
        chosen = resolve_backend("auto", q.device, n, n)
        assert torch.equal(block_sparse_attention(q, k, v, lay), block_sparse_attention(q, k, v, lay, backend=chosen))


@pytest.mark.parametrize("per_head", [False, True])
def test_one_gathered_group_in_row_order(per_head):
    """Every row visits the same number of scattered blocks: one group, results already in row order."""
    g = torch.Generator().manual_seed(10)
    heads, nb = 3, 8
    lh = heads if per_head else 1
    picks = torch.rand(1, lh, nb, nb, generator=g).argsort(-1)[..., :3]
    bm = torch.zeros(1, lh, nb, nb, dtype=torch.bool).scatter_(-1, picks, True)
    lay = BlockLayout.from_block_mask(bm, 16, 16, 128, 128)
    q, k, v = make_qkv(2, 128, 128, heads, 16, torch.float32, g)
    _run(q, k, v, lay, block_mask_to_token_mask(bm, 16, 16, 128, 128))
    assert len(_plan(lay, 2).assembly) == 1  # already in row order: no reordering


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("tiles,same_count", [("full", False), ("full", True), ("key_padding", False), ("2d", False)])
def test_units_of_identical_query_blocks(tiles, same_count, chunked, monkeypatch):
    """Consecutive query blocks with the same key blocks and tiles (per-frame video patterns) run as one
    longer query sequence; scattered key blocks (gathered), full or partial blocks; one unit per chunk;
    with the same count everywhere the units' queries are read in place."""
    if chunked:
        monkeypatch.setattr(gather_mod, "_GATHER_CHUNK_BYTES", 1)
    g = torch.Generator().manual_seed(11)
    qb, frames, per_frame = 16, 5, 2  # a "frame" of 2 query blocks
    n = qb * per_frame * frames
    q_len, kv_len = (n - 5, n) if same_count else (n, n - 5)  # ragged queries / keys
    nq = -(-q_len // qb)
    if same_count:
        picks = torch.rand(1, 2, frames, nq, generator=g).argsort(-1)[..., :3]
        frame_mask = torch.zeros(1, 2, frames, nq, dtype=torch.bool).scatter_(-1, picks, True)
    else:
        frame_mask = torch.rand(1, 2, frames, nq, generator=g) < 0.4
        frame_mask[..., 0] = True  # a sink block
    bm = frame_mask.repeat_interleave(per_frame, 2)[:, :, :nq]
    mask = block_mask_to_token_mask(bm, qb, qb, q_len, kv_len)
    if tiles == "key_padding":
        mask = mask & (torch.arange(kv_len) % 5 != 3)
    elif tiles == "2d":
        mask = mask & ((torch.arange(q_len)[:, None] % qb) >= (torch.arange(kv_len)[None, :] % qb))
    lay = BlockLayout.from_token_mask(mask, qb, qb, allow_empty_rows=True)
    q, k, v = make_qkv(1, q_len, kv_len, 2, 16, torch.float32, g)
    _run(q, k, v, lay, mask)
    assert any(getattr(e, "m", 1) == per_frame for e in _plan(lay, 1).entries)


def test_analytic_partial_kinds_and_key_padding():
    """Window / ellipsoid predicates and key padding (layouts that have them) through the gather backend."""
    import accel.kernels as kernels

    if not hasattr(kernels, "WindowPredicate"):
        pytest.skip("this BlockLayout has no analytic partial kinds")
    g = torch.Generator().manual_seed(12)
    x = torch.arange(300, dtype=torch.int32)[:, None]
    window = BlockLayout.from_predicate(kernels.WindowPredicate(x - 40, x + 40, x), 32, 32, 330, 330)
    c = torch.stack(torch.meshgrid(torch.arange(4), torch.arange(8), torch.arange(8), indexing="ij"), -1)
    c = c.reshape(-1, 3).int()
    weights, limit = kernels.ellipsoid_form([None, 3, 3])
    ellipsoid = BlockLayout.from_predicate(kernels.EllipsoidPredicate(c, c, weights, limit), 32, 32, 256, 256)
    valid = torch.ones(2, 256, dtype=torch.bool)
    valid[0, 200:] = False
    valid[1, 250:] = False
    dense_padded = BlockLayout.from_block_mask(torch.ones(1, 1, 8, 8, dtype=torch.bool), 32, 32, 256, 256,
                                               key_padding_mask=valid)
    cases = [(window, 1), (window.with_key_padding(torch.tensor([310, 330])), 2), (ellipsoid, 1),
             (ellipsoid.with_key_padding(torch.tensor([200, 256])), 2), (dense_padded, 2)]
    for lay, bsz in cases:
        q, k, v = make_qkv(bsz, lay.q_len, lay.kv_len, 2, 16, torch.float32, g)
        _run(q, k, v, lay, lay.to_dense_mask())


@pytest.mark.parametrize("batch", [1, 3])
def test_mask_bytes_counts_the_plans_masks(batch):
    """mask_bytes (what auto's memory guard reads) equals the bytes of the masks the plan keeps, for 2-D
    tiles (masks not constant along the queries) on a layout without ragged blocks."""
    from accel.eval.kernel_bench import band_layout

    lay = band_layout(512, 32, 0.4, "cpu", partial_fraction=0.3)
    plan = gather_mod._plan(lay, batch)
    kept = sum(e.mask.numel() for e in plan.entries if isinstance(e, gather_mod._Gathered) and e.mask is not None)
    assert kept == gather_mod.mask_bytes(lay, batch) > 0
    assert gather_mod.mask_bytes(band_layout(512, 32, 0.4, "cpu"), batch) == 0


def test_auto_leaves_large_masks_to_the_rule_without_gather(monkeypatch):
    import accel.kernels.attention as att

    assert cpu_auto_backend(8192, 8192, gather_mask_bytes=att.AUTO_GATHER_MAX_MASK_BYTES + 1) == "flex"
    assert cpu_auto_backend(1024, 1024, gather_mask_bytes=att.AUTO_GATHER_MAX_MASK_BYTES + 1) == "reference"
    assert cpu_auto_backend(1024, 1024, gather_mask_bytes=att.AUTO_GATHER_MAX_MASK_BYTES) == "gather"
    from accel.eval.kernel_bench import band_layout

    monkeypatch.setattr(att, "AUTO_GATHER_MAX_MASK_BYTES", 0)
    g = torch.Generator().manual_seed(13)
    q, k, v = make_qkv(1, 512, 512, 2, 16, torch.float32, g)
    for pf, expected in ((0.5, "reference"), (0.0, "gather")):  # partial blocks: masks > 0 bytes
        lay = band_layout(512, 32, 0.3, "cpu", partial_fraction=pf)
        assert torch.equal(block_sparse_attention(q, k, v, lay), block_sparse_attention(q, k, v, lay, backend=expected))

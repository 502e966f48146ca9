"""Every partial kind and key padding through every backend, with program tiles smaller than the layout's
blocks and each kernel path (portable, persistent, TMA descriptors, warp specialisation), against an fp64
masked-dense reference whose mask is built here by brute force (not by the layout)."""

import pytest
import torch

from accel.kernels import BlockLayout, EllipsoidPredicate, WindowPredicate, block_sparse_attention

from .helpers import TOL, dense_masked_attention, make_qkv

Q_BLOCK, KV_BLOCK = 32, 64

# (config, what it exercises); block sizes below the layout's 32 x 64 blocks
CONFIGS = [
    pytest.param("block_m=16,block_n=16,num_warps=4,num_stages=2", id="sub-m-sub-n"),
    pytest.param("block_m=32,block_n=32,num_warps=4,num_stages=2,persistent=1", id="persistent-sub-n"),
    pytest.param("block_m=16,block_n=32,num_warps=4,num_stages=3,tma=1", id="tma-sub-m"),
    pytest.param("block_m=32,block_n=16,num_warps=4,num_stages=2,tma=1,warp_spec=1,persistent=1", id="tma-ws"),
]


def _grid(t, h, w):
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt, yy, xx], -1).reshape(-1, 3).to(torch.int32)


def _case(kind, seed=0, dtype=torch.float32):
    """(q, k, v, token mask [B|1, H|1, Sq, Skv] by brute force, layout)."""
    g = torch.Generator().manual_seed(seed)
    # interpreted kernels cost milliseconds per block step: small, with a batch of 2 only for padding
    bsz, heads, d = (2, 1, 16) if kind.endswith("pad") else (1, 2, 16)
    if kind == "tiles":
        q_len, kv_len = 64, 130
        mask = torch.rand(1, heads, q_len, kv_len, generator=g) < 0.35
        mask[..., :, 64:128] |= torch.rand(1, heads, q_len, 1, generator=g) < 0.5  # whole rows of a block
        mask[..., :Q_BLOCK, 64:128] = True  # a full block (its sub-tiles run in the full loop)
        mask[..., 0] = True
        lay = BlockLayout.from_token_mask(mask, Q_BLOCK, KV_BLOCK)
    elif kind in ("window", "window+pad"):
        c = _grid(2, 4, 8) - 3  # 64 grid tokens (negative coordinates too), then 20 text tokens (unconstrained)
        n, text = c.shape[0], 20
        q_len = kv_len = n + text
        r = torch.tensor([1, 2, 3], dtype=torch.int32)
        lo, hi = c - r, c + r
        lo[::3, 0] = hi[::3, 0] = c[::3, 0]  # every 3rd query sees its own frame only (the t axis decides)
        hi[::7, 1] = lo[::7, 1] - 1  # every 7th query has an empty window (it still sees the text)
        pred = WindowPredicate(lo, hi, c)
        mask = torch.ones(1, 1, q_len, kv_len, dtype=torch.bool)
        mask[0, 0, :n, :n] = ((lo[:, None, :] <= c[None, :, :]) & (c[None, :, :] <= hi[:, None, :])).all(-1)
        lay = BlockLayout.from_predicate(pred, Q_BLOCK, KV_BLOCK, q_len, kv_len)
        if kind == "window+pad":
            valid = torch.ones(bsz, kv_len, dtype=torch.bool)
            valid[0, n + 7:] = False
            valid[1, n + 15:] = False
            lay = lay.with_key_padding(torch.tensor([n + 7, n + 15]))
            mask = mask & valid[:, None, None, :]
    elif kind == "ellipsoid":
        c = _grid(2, 6, 6)  # 72 grid tokens starting at position 12 (12 text tokens first)
        n, text = c.shape[0], 12
        q_len = kv_len = n + text
        limit = torch.randint(2, 9, (n,), generator=g, dtype=torch.int32)
        pred = EllipsoidPredicate(c, c, (4, 1, 1), limit, q_start=text, k_start=text)
        diff = c[:, None, :].long() - c[None, :, :].long()
        dist = 4 * diff[..., 0] ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2
        mask = torch.ones(1, 1, q_len, kv_len, dtype=torch.bool)
        mask[0, 0, text:, text:] = dist <= limit[:, None].long()
        lay = BlockLayout.from_predicate(pred, Q_BLOCK, KV_BLOCK, q_len, kv_len)
    elif kind == "pad":
        q_len, kv_len = 40, 140
        valid = torch.ones(bsz, kv_len, dtype=torch.bool)
        valid[0, 100:] = False
        valid[1, 30:64] = False  # padding in the middle (text first); block 0 overlaps it, stays full
        lay = BlockLayout.from_block_mask(torch.ones(1, 1, 2, 3, dtype=torch.bool), Q_BLOCK, KV_BLOCK, q_len,
                                          kv_len, key_padding_mask=valid)
        assert lay.key_pad is not None and lay.partial_kind == "none"
        mask = valid[:, None, None, :].expand(bsz, 1, q_len, kv_len)
    else:
        raise AssertionError(kind)
    q, k, v = make_qkv(bsz, q_len, kv_len, heads, d, dtype, g)
    return q, k, v, mask, lay


def _check(q, k, v, mask, lay, backend="triton"):
    want, want_lse = dense_masked_attention(q, k, v, mask, q.shape[-1] ** -0.5)
    out, lse = block_sparse_attention(q, k, v, lay, backend=backend, return_lse=True)
    tol = TOL[q.dtype]
    torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), finite)
    torch.testing.assert_close(lse.double()[finite], want_lse[finite], atol=1e-4, rtol=1e-4)


KINDS = ["tiles", "window", "window+pad", "ellipsoid", "pad"]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("kind", KINDS)
def test_triton_program_tiles_smaller_than_layout_blocks(kind, config, monkeypatch):
    monkeypatch.setenv("ACCEL_TRITON_CONFIG", config)
    q, k, v, mask, lay = _case(kind, seed=KINDS.index(kind))
    assert lay.partial_kind == {"pad": "none"}.get(kind, kind.split("+")[0])
    _check(q, k, v, mask, lay)


@pytest.mark.parametrize("kind", KINDS)
def test_triton_default_config_half_precision(kind):
    q, k, v, mask, lay = _case(kind, seed=10 + KINDS.index(kind), dtype=torch.bfloat16)
    _check(q, k, v, mask, lay)


@pytest.mark.parametrize("kind", KINDS)
def test_reference_backend(kind):
    q, k, v, mask, lay = _case(kind, seed=20 + KINDS.index(kind))
    _check(q, k, v, mask, lay, backend="reference")


def test_portable_switch_refuses_forced_hopper_paths(monkeypatch):
    monkeypatch.setenv("ACCEL_TRITON_CONFIG", "block_m=32,block_n=32,tma=1")
    monkeypatch.setenv("ACCEL_TRITON_PORTABLE", "1")
    q, k, v, mask, lay = _case("window")
    with pytest.raises(ValueError, match="ACCEL_TRITON_PORTABLE=1"):
        block_sparse_attention(q, k, v, lay, backend="triton")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tiles", "window+pad", "ellipsoid"])
def test_flex_backend(kind):
    q, k, v, mask, lay = _case(kind, seed=30 + KINDS.index(kind))
    want, _ = dense_masked_attention(q, k, v, mask, q.shape[-1] ** -0.5)
    out = block_sparse_attention(q, k, v, lay, backend="flex")
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=2e-5)


def test_flex_block_mask_mod_matches_the_brute_force_mask():
    """The BlockMask's block structure and mask_mod, evaluated on every pair (no compile needed)."""
    from accel.kernels import to_flex_block_mask

    for kind in ("tiles", "window+pad", "ellipsoid", "pad"):
        q, k, v, mask, lay = _case(kind)
        bsz, q_len, heads, _ = q.shape
        kv_len = k.shape[1]
        bm = to_flex_block_mask(lay, bsz, heads)
        dense = bm.to_dense().bool()[..., : lay.num_q_blocks, : lay.num_kv_blocks]
        b, h, qi, ki = torch.meshgrid(torch.arange(bsz), torch.arange(heads), torch.arange(q_len),
                                      torch.arange(kv_len), indexing="ij")
        visited = dense[b, h, qi // Q_BLOCK, ki // KV_BLOCK]
        full_blocks = torch.zeros_like(dense)
        fi, fc = bm.full_kv_indices, bm.full_kv_num_blocks
        for bb in range(bsz):
            for hh in range(heads):
                for r in range(fc.shape[2]):
                    full_blocks[bb, hh, r, fi[bb, hh, r, : fc[bb, hh, r]].long()] = True
        is_full = full_blocks[b, h, qi // Q_BLOCK, ki // KV_BLOCK]
        token = visited & (is_full | (bm.mask_mod(b, h, qi, ki) if bm.mask_mod is not None else True))
        assert torch.equal(token, mask.expand(bsz, heads, -1, -1)), kind

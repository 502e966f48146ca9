"""The kernel's fused prior merge and per-query-block affine epilogue, against an fp64 brute force."""

import pytest
import torch

from accel.kernels import BlockLayout, apply_block_affine, block_sparse_attention

from .helpers import TOL, block_mask_to_token_mask, dense_masked_attention, make_qkv


def _case(seed, *, bsz=2, q_len=80, kv_len=72, text_len=20, heads=2, d=32, blk=16, dtype=torch.float32,
          kind="contiguous", empty_rows=False):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = make_qkv(bsz, q_len, kv_len, heads, d, dtype, gen, kind)
    _, kt, vt = make_qkv(bsz, q_len, text_len, heads, d, dtype, gen, kind)
    nq, nk = -(-q_len // blk), -(-kv_len // blk)
    block_mask = torch.rand(bsz, heads, nq, nk, generator=gen) < 0.5
    if empty_rows:
        block_mask[:, :, 1] = False  # query block 1 sees no video key at all
    else:
        block_mask[..., 0] = True
    layout = BlockLayout.from_block_mask(block_mask, blk, blk, q_len, kv_len, allow_empty_rows=empty_rows)
    token_mask = block_mask_to_token_mask(block_mask, blk, blk, q_len, kv_len)
    a_scale = torch.rand(bsz, heads, nq, generator=gen) + 0.25
    a_shift = torch.randn(bsz, heads, nq, d, generator=gen)
    return q, k, v, kt, vt, layout, token_mask, (a_scale, a_shift)


def _brute(q, k, v, kt, vt, token_mask, affine, blk, *, with_text=True, with_affine=True):
    """fp64: attention over [text keys (all valid); video keys allowed by the mask], then the affine step."""
    bsz, q_len, heads, _ = q.shape
    if with_text:
        keys, vals = torch.cat([kt, k], 1), torch.cat([vt, v], 1)
        full = torch.ones(bsz, heads, q_len, kt.shape[1], dtype=torch.bool)
        mask = torch.cat([full, token_mask.expand(bsz, heads, -1, -1)], -1)
    else:
        keys, vals, mask = k, v, token_mask
    out, lse = dense_masked_attention(q, keys, vals, mask, q.shape[-1] ** -0.5)
    if with_affine:
        rows = torch.arange(q_len) // blk
        s, t = affine
        out = s.double()[:, :, rows].permute(0, 2, 1)[..., None] * out + t.double()[:, :, rows].permute(0, 2, 1, 3)
    return out, lse


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kind", ["contiguous", "bhsd"])
def test_prior_and_affine_equal_brute_force(backend, dtype, kind):
    q, k, v, kt, vt, layout, tmask, affine = _case(1, dtype=dtype, kind=kind)
    text_layout = BlockLayout.full(q.shape[1], kt.shape[1], q_block=16, kv_block=16, device="cpu")
    prior = block_sparse_attention(q, kt, vt, text_layout, backend="reference", return_lse=True)
    out, lse = block_sparse_attention(q, k, v, layout, backend=backend, return_lse=True, prior=prior, affine=affine)
    want, want_lse = _brute(q, k, v, kt, vt, tmask, affine, 16)
    tol = TOL[dtype] * 4
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_affine_alone_and_rows_without_keys(backend):
    q, k, v, kt, vt, layout, tmask, affine = _case(2, empty_rows=True)
    out, lse = block_sparse_attention(q, k, v, layout, backend=backend, return_lse=True, affine=affine)
    want, want_lse = _brute(q, k, v, kt, vt, tmask, affine, 16, with_text=False)
    torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=1e-4)
    # rows of query block 1 saw nothing: output is exactly the shift, LSE -inf
    assert torch.isinf(lse[:, 16:32]).all()
    torch.testing.assert_close(out[:, 16:32], affine[1][:, :, 1][:, None].expand(-1, 16, -1, -1))


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_prior_alone_equals_union_and_empty_prior_rows(backend):
    q, k, v, kt, vt, layout, tmask, affine = _case(3, empty_rows=True)
    text_layout = BlockLayout.full(q.shape[1], kt.shape[1], q_block=16, kv_block=16, device="cpu")
    p_out, p_lse = block_sparse_attention(q, kt, vt, text_layout, backend="reference", return_lse=True)
    p_lse = p_lse.clone()
    p_lse[:, :8] = float("-inf")  # these rows have no prior keys: the prior must be ignored there
    p_out = p_out.clone()
    p_out[:, :8] = 123.0
    out, lse = block_sparse_attention(q, k, v, layout, backend=backend, return_lse=True, prior=(p_out, p_lse))
    want, want_lse = _brute(q, k, v, kt, vt, tmask, affine, 16, with_affine=False)
    only_video, only_video_lse = _brute(q, k, v, kt, vt, tmask, affine, 16, with_text=False, with_affine=False)
    torch.testing.assert_close(out[:, 8:].double(), want[:, 8:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[:, :8].double(), only_video[:, :8], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lse[:, :8].double(), only_video_lse[:, :8], atol=1e-4, rtol=1e-4)


def test_apply_block_affine_broadcasts_heads_and_batch():
    out = torch.randn(2, 40, 3, 8)
    s = torch.tensor([[[2.0, 3.0, 4.0]]])  # [1, 1, 3]: blocks of 16 rows
    t = torch.zeros(1, 1, 3, 8)
    t[..., 2, :] = 1.0
    got = apply_block_affine(out, (s, t), 16)
    torch.testing.assert_close(got[:, :16], 2 * out[:, :16])
    torch.testing.assert_close(got[:, 16:32], 3 * out[:, 16:32])
    torch.testing.assert_close(got[:, 32:], 4 * out[:, 32:] + 1)


def test_bad_prior_and_affine_are_rejected():
    q, k, v, kt, vt, layout, _, (a_scale, a_shift) = _case(4)
    with pytest.raises(ValueError, match="affine shapes"):
        block_sparse_attention(q, k, v, layout, affine=(a_scale[..., :-1], a_shift[..., :-1, :]))
    with pytest.raises(ValueError, match="affine shapes"):
        block_sparse_attention(q, k, v, layout, affine=(a_scale, a_shift[..., :-1]))
    with pytest.raises(TypeError, match="affine must be a pair"):
        block_sparse_attention(q, k, v, layout, affine=a_scale)
    with pytest.raises(ValueError, match="prior shapes"):
        block_sparse_attention(q, k, v, layout, prior=(q[:, :-1], q[:, :-1, :, 0]))
    with pytest.raises(TypeError, match="prior must be a pair"):
        block_sparse_attention(q, k, v, layout, prior=(q,))

"""Compiled FlexAttention backend on CPU (each test compiles once: 10-30 s on 2 cores)."""

import logging

import pytest
import torch

from accel.kernels import BlockLayout, block_sparse_attention, to_flex_block_mask

from .helpers import TOL, block_mask_to_token_mask, dense_masked_attention, make_qkv

pytestmark = pytest.mark.slow


def test_flex_random_token_mask_ragged_padded_head_dim():
    g = torch.Generator().manual_seed(11)
    bsz, heads, q_len, kv_len, d = 2, 2, 150, 200, 24
    q, k, v = make_qkv(bsz, q_len, kv_len, heads, d, torch.float32, g, "bhsd")
    mask = torch.rand(bsz, 1, q_len, kv_len, generator=g) < 0.3
    mask[..., :40, :] = False  # empty rows
    mask[..., 100:, 64:128] = True  # full blocks mixed with partial ones
    lay = BlockLayout.from_token_mask(mask, 32, 32, allow_empty_rows=True)
    want, _ = dense_masked_attention(q, k, v, mask, d**-0.5)
    out = block_sparse_attention(q, k, v, lay, backend="flex")
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=2e-5)


def test_flex_rows_with_only_full_blocks_bf16():
    g = torch.Generator().manual_seed(12)
    bsz, heads, s, d = 1, 2, 256, 64
    q, k, v = make_qkv(bsz, s, s, heads, d, torch.bfloat16, g)
    nb = s // 64
    i = torch.arange(nb)
    bm = ((i[:, None] - i[None, :]).abs() <= 1).view(1, 1, nb, nb)  # band: every row only full blocks
    lay = BlockLayout.from_block_mask(bm, 64, 64, s, s)
    assert not lay.part_cnt.any()
    want, _ = dense_masked_attention(q, k, v, block_mask_to_token_mask(bm, 64, 64, s, s), d**-0.5)
    out = block_sparse_attention(q, k, v, lay, backend="flex")
    torch.testing.assert_close(out.double(), want, atol=TOL[torch.bfloat16], rtol=TOL[torch.bfloat16])


def test_flex_block_mask_translation_is_exact():
    g = torch.Generator().manual_seed(13)
    mask = torch.rand(2, 3, 70, 90, generator=g) < 0.2
    lay = BlockLayout.from_token_mask(mask, 16, 32, allow_empty_rows=True)
    bm = to_flex_block_mask(lay, 2, 3)
    dense = bm.to_dense()  # flex's block-level view: full + partial blocks
    assert torch.equal(dense.bool()[..., : lay.num_q_blocks, : lay.num_kv_blocks], lay.block_kinds() > 0)
    # token level: evaluate the mask_mod on every pair of the partial blocks
    b, h, qi, ki = torch.meshgrid(torch.arange(2), torch.arange(3), torch.arange(70), torch.arange(90), indexing="ij")
    kinds = lay.block_kinds().long()[b, h, qi // 16, ki // 32]
    mm = bm.mask_mod(b, h, qi, ki)
    token = torch.where(kinds == 1, True, torch.where(kinds == 2, mm, False))
    assert torch.equal(token, mask)


def test_flex_return_lse_on_cpu_falls_back_to_reference(caplog):
    g = torch.Generator().manual_seed(14)
    q, k, v = make_qkv(1, 40, 40, 1, 16, torch.float32, g)
    mask = torch.rand(1, 1, 40, 40, generator=g) < 0.5
    mask[..., 0] = True
    lay = BlockLayout.from_token_mask(mask, 16, 16)
    with caplog.at_level(logging.WARNING):
        out, lse = block_sparse_attention(q, k, v, lay, backend="flex", return_lse=True)
    want, want_lse = dense_masked_attention(q, k, v, mask, 0.25)
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(lse.double(), want_lse, atol=2e-5, rtol=2e-5)

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from accel.kernels import BlockLayout, block_sparse_attention, merge_attention

from .helpers import dense_masked_attention


@given(seed=st.integers(0, 2**31 - 1), n_parts=st.integers(1, 4), kv_len=st.integers(4, 60))
def test_merge_of_disjoint_key_sets_equals_one_dense_call(seed, n_parts, kv_len):
    g = torch.Generator().manual_seed(seed)
    bsz, q_len, heads, d = 2, 19, 2, 8
    q = torch.randn(bsz, q_len, heads, d, generator=g)
    k = torch.randn(bsz, kv_len, heads, d, generator=g)
    v = torch.randn(bsz, kv_len, heads, d, generator=g)
    owner = torch.randint(0, n_parts, (kv_len,), generator=g)  # which part each key belongs to
    parts = []
    for i in range(n_parts):
        mask = (owner == i).view(1, 1, 1, kv_len).expand(1, 1, q_len, kv_len)
        lay = BlockLayout.from_token_mask(mask.contiguous(), 16, 16, allow_empty_rows=True)
        parts.append(block_sparse_attention(q, k, v, lay, backend="reference", return_lse=True))
    out, lse = merge_attention(parts)
    want, want_lse = dense_masked_attention(q, k, v, torch.ones(1, 1, q_len, kv_len, dtype=torch.bool), d**-0.5)
    torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), want_lse, atol=1e-5, rtol=1e-5)


def test_merge_all_empty_rows():
    o = torch.zeros(1, 3, 1, 4)
    lse = torch.full((1, 3, 1), float("-inf"))
    out, m = merge_attention([(o, lse), (o.clone(), lse.clone())])
    assert (out == 0).all() and torch.isneginf(m).all()


def test_merge_bad_input():
    with pytest.raises(ValueError, match="parts"):
        merge_attention([])
    with pytest.raises(ValueError, match=r"parts\[1\] lse"):
        merge_attention([(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1)), (torch.zeros(1, 2, 1, 4), torch.zeros(1, 2))])

"""Every backend against an independent fp64 masked-attention reference."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.kernels import BlockLayout, block_sparse_attention

from .helpers import TOL, block_mask_to_token_mask, dense_masked_attention, make_qkv

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _case(seed, bsz, heads, q_len, kv_len, d, dtype, q_block, kv_block, p, bcast_b, bcast_h, kind, empty_rows):
    g = torch.Generator().manual_seed(seed)
    q, k, v = make_qkv(bsz, q_len, kv_len, heads, d, dtype, g, kind)
    mask = torch.rand(1 if bcast_b else bsz, 1 if bcast_h else heads, q_len, kv_len, generator=g) < p
    mask[..., :, : max(1, kv_len // 3)] |= torch.rand(mask.shape[:-1] + (1,), generator=g) < 0.5  # some full blocks
    if empty_rows:
        mask[..., : q_len // 2, :] = False
    else:
        mask[..., 0] = True  # every query sees at least one key
    lay = BlockLayout.from_token_mask(mask, q_block, kv_block, allow_empty_rows=empty_rows)
    return q, k, v, mask, lay


case_strategy = dict(
    seed=st.integers(0, 2**31 - 1),
    bsz=st.sampled_from([1, 2]),
    heads=st.sampled_from([1, 2]),
    q_len=st.integers(1, 70),
    kv_len=st.integers(1, 70),
    d=st.sampled_from([8, 10, 12, 16, 24, 64]),
    dtype=st.sampled_from(DTYPES),
    q_block=st.sampled_from([16, 32]),
    kv_block=st.sampled_from([16, 32]),
    p=st.sampled_from([0.1, 0.4, 0.9]),
    bcast_b=st.booleans(),
    bcast_h=st.booleans(),
    kind=st.sampled_from(["contiguous", "bhsd", "sliced", "strided_d"]),
    empty_rows=st.booleans(),
)


def _check(backend, q, k, v, mask, lay, scale=None):
    d = q.shape[-1]
    s = scale if scale is not None else d**-0.5
    want, want_lse = dense_masked_attention(q, k, v, mask, s)
    out, lse = block_sparse_attention(q, k, v, lay, backend=backend, return_lse=True, scale=scale)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    tol = TOL[q.dtype]
    torch.testing.assert_close(out.double(), want, atol=tol, rtol=tol)
    finite = torch.isfinite(want_lse)
    assert torch.equal(torch.isfinite(lse), finite)  # -inf exactly on empty rows
    torch.testing.assert_close(lse.double()[finite], want_lse[finite], atol=1e-4, rtol=1e-4)
    assert (out[~finite.unsqueeze(-1).expand_as(out)] == 0).all()  # empty rows give zeros
    # the plain call (no LSE) gives the same output
    out2 = block_sparse_attention(q, k, v, lay, backend=backend, scale=scale)
    torch.testing.assert_close(out2.double(), want, atol=tol, rtol=tol)


@given(**case_strategy)
@settings(max_examples=60)
def test_reference_backend_matches_dense(**kw):
    _check("reference", *_case(**kw))


@given(**case_strategy)
@settings(max_examples=25)
def test_triton_interpreted_matches_dense(**kw):
    _check("triton", *_case(**kw))


@pytest.mark.parametrize("d", [64, 128, 96, 256])
def test_triton_head_dims(d):
    q, k, v, mask, lay = _case(3, 1, 1, 40, 50, d, torch.float16, 32, 32, 0.3, True, True, "contiguous", False)
    _check("triton", q, k, v, mask, lay)


def test_triton_custom_scale_and_large_values():
    q, k, v, mask, lay = _case(5, 2, 2, 33, 47, 16, torch.float32, 16, 16, 0.5, False, False, "bhsd", False)
    _check("triton", q * 30, k * 30, v, mask, lay, scale=0.37)


def test_triton_block_mask_layout_with_padding():
    g = torch.Generator().manual_seed(7)
    bsz, heads, q_len, kv_len, d = 2, 2, 45, 77, 32
    q, k, v = make_qkv(bsz, q_len, kv_len, heads, d, torch.float32, g)
    bm = torch.rand(1, heads, 3, 3, generator=g) < 0.6
    bm[..., 0] = True
    valid = torch.rand(bsz, kv_len, generator=g) < 0.8
    valid[:, 0] = True
    lay = BlockLayout.from_block_mask(bm, 16, 32, q_len, kv_len, key_padding_mask=valid)
    mask = block_mask_to_token_mask(bm, 16, 32, q_len, kv_len) & valid[:, None, None, :]
    _check("triton", q, k, v, mask, lay)
    _check("reference", q, k, v, mask, lay)


def test_dense_layout_reference_is_sdpa_bit_exact():
    g = torch.Generator().manual_seed(0)
    q, k, v = make_qkv(2, 37, 41, 3, 12, torch.float32, g, "bhsd")
    lay = BlockLayout.full(37, 41, q_block=16, kv_block=16)
    out = block_sparse_attention(q, k, v, lay, backend="reference")
    sdpa = torch.nn.functional.scaled_dot_product_attention(
        q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)
    ).permute(0, 2, 1, 3)
    assert torch.equal(out, sdpa)


def test_auto_picks_reference_for_small_cpu_inputs():
    from accel.kernels import resolve_backend

    assert resolve_backend("auto", torch.device("cpu"), 200, 200) == "reference"
    assert resolve_backend("auto", torch.device("cpu"), 8192, 8192) == "gather"  # see tests/kernels/test_gather.py
    assert resolve_backend("auto", torch.device("cuda"), 10, 10) == "triton"
    assert resolve_backend("flex", torch.device("cpu"), 10, 10) == "flex"
    assert resolve_backend("auto", torch.device("cpu"), 8192, 8192, dense_layout=True) == "reference"


def test_backends_used_counts_the_backend_that_really_ran(monkeypatch):
    """The tally names the backend function that was called (observed by wrapping the backends themselves),
    per call and with the call's Sq * Skv, inside the block only and for its thread only."""
    import threading

    from accel.kernels import attention, backends_used

    seen = []
    for name, attr in (("gather", "gather_block_sparse_attention"), ("reference", "reference_attention"),
                       ("flex", "flex_block_sparse_attention")):
        real = getattr(attention, attr)

        def wrapped(*args, _real=real, _name=name):
            seen.append((_name, args[0].shape[1] * args[1].shape[1]))
            return _real(*args)
        monkeypatch.setattr(attention, attr, wrapped)

    def run(n, backend="auto"):
        q = k = v = torch.randn(1, n, 1, 16)
        mask = torch.zeros(1, 1, n // 64, n // 64, dtype=torch.bool)
        mask[..., 0] = True  # sparse: first key block only
        block_sparse_attention(q, k, v, BlockLayout.from_block_mask(mask, 64, 64, n, n), backend=backend)

    run(256)  # outside a block: not counted anywhere
    with backends_used() as tally:
        run(1024)   # 1024^2 pairs: "auto" on CPU picks a block-sparse backend
        run(256)    # small: the reference
        run(256)
        run(256, backend="reference")
        worker = threading.Thread(target=run, args=(1024,))  # another thread's calls are not this block's
        worker.start()
        worker.join()
    expected = {}
    for name, pairs in seen[1:5]:
        entry = expected.setdefault(name, {"calls": 0, "pairs": 0})
        entry["calls"] += 1
        entry["pairs"] += pairs
    assert tally == expected
    assert tally["reference"] == {"calls": 3, "pairs": 3 * 256 * 256}
    assert sum(e["calls"] for e in tally.values()) == 4

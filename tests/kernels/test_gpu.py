"""CUDA-only kernel checks (skipped without a GPU; run by benchmarks/gpu_check.sh on a GPU machine)."""

import pytest
import torch

from accel.kernels import BlockLayout, block_sparse_attention

from .helpers import block_mask_to_token_mask, dense_masked_attention

pytestmark = pytest.mark.gpu


def _band(nb, width, heads=1):
    i = torch.arange(nb)
    return ((i[:, None] - i[None, :]).abs() <= width).view(1, 1, nb, nb).expand(1, heads, nb, nb).contiguous()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 128, 96])
def test_triton_gpu_matches_reference(dtype, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    bsz, heads, s = 2, 4, 1000
    q, k, v = (torch.randn(bsz, s, heads, d, device="cuda", generator=g, dtype=dtype) for _ in range(3))
    mask = torch.rand(bsz, heads, s, s, device="cuda", generator=g) < 0.2
    mask[..., :300, :200] = True
    mask[..., 0] = True
    lay = BlockLayout.from_token_mask(mask, 128, 128)
    want, want_lse = dense_masked_attention(q, k, v, mask, d**-0.5)
    out, lse = block_sparse_attention(q, k, v, lay, backend="triton", return_lse=True)
    torch.testing.assert_close(out.double(), want, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse.double(), want_lse, atol=2e-2, rtol=2e-2)


def test_triton_gpu_fp32_and_empty_rows():
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(1, 300, 2, 64, device="cuda", generator=g) for _ in range(3))
    bm = _band(3, 0, 2)
    bm[..., 0, :] = False
    lay = BlockLayout.from_block_mask(bm, 128, 128, 300, 300, allow_empty_rows=True)
    want, _ = dense_masked_attention(q, k, v, block_mask_to_token_mask(bm, 128, 128, 300, 300), 0.125)
    out = block_sparse_attention(q, k, v, lay, backend="triton")
    torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=1e-4)
    assert (out[:, :128] == 0).all()


def test_triton_gpu_compiled_and_flex_agree():
    g = torch.Generator(device="cuda").manual_seed(2)
    q, k, v = (torch.randn(1, 4096, 8, 128, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    lay = BlockLayout.from_block_mask(_band(32, 3), 128, 128, 4096, 4096)
    compiled = torch.compile(lambda a, b, c: block_sparse_attention(a, b, c, lay, backend="triton"), fullgraph=True)
    out_t = compiled(q, k, v)
    out_f = block_sparse_attention(q, k, v, lay, backend="flex")
    torch.testing.assert_close(out_t.float(), out_f.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_gpu_fused_prior_and_affine(dtype):
    g = torch.Generator(device="cuda").manual_seed(2)
    bsz, heads, s, text, d = 2, 4, 1000, 77, 128
    q, k, v = (torch.randn(bsz, s, heads, d, device="cuda", generator=g, dtype=dtype) for _ in range(3))
    kt, vt = (torch.randn(bsz, text, heads, d, device="cuda", generator=g, dtype=dtype) for _ in range(2))
    nb = -(-s // 128)
    bm = torch.rand(bsz, heads, nb, nb, device="cuda", generator=g) < 0.4
    bm[..., 0] = True
    lay = BlockLayout.from_block_mask(bm, 128, 128, s, s)
    a_scale = torch.rand(bsz, heads, nb, device="cuda", generator=g) + 0.5
    a_shift = torch.randn(bsz, heads, nb, d, device="cuda", generator=g)
    prior = block_sparse_attention(q, kt, vt, BlockLayout.full(s, text, device="cuda"), backend="triton", return_lse=True)
    out, lse = block_sparse_attention(q, k, v, lay, backend="triton", return_lse=True, prior=prior, affine=(a_scale, a_shift))
    mask = torch.cat([torch.ones(bsz, heads, s, text, dtype=torch.bool, device="cuda"),
                      block_mask_to_token_mask(bm, 128, 128, s, s)], -1)
    want, want_lse = dense_masked_attention(q, torch.cat([kt, k], 1), torch.cat([vt, v], 1), mask, d**-0.5)
    rows = torch.arange(s, device="cuda") // 128
    want = a_scale.double()[:, :, rows].permute(0, 2, 1)[..., None] * want + a_shift.double()[:, :, rows].permute(0, 2, 1, 3)
    torch.testing.assert_close(out.double(), want, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(lse.double(), want_lse, atol=2e-2, rtol=2e-2)

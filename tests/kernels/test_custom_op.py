"""The Triton kernel is a torch custom op: opcheck and torch.compile(fullgraph=True) composition."""

import pytest
import torch

from accel.kernels import BlockLayout, block_sparse_attention

from .helpers import dense_masked_attention


def _layout_and_inputs():
    g = torch.Generator().manual_seed(21)
    q = torch.randn(1, 40, 2, 16, generator=g)
    k = torch.randn(1, 50, 2, 16, generator=g)
    v = torch.randn(1, 50, 2, 16, generator=g)
    mask = torch.rand(1, 2, 40, 50, generator=g) < 0.4
    mask[..., 0] = True
    return q, k, v, mask, BlockLayout.from_token_mask(mask, 16, 16)


def test_opcheck():
    from accel.kernels.triton_fwd import op_arguments

    q, k, v, _, lay = _layout_and_inputs()
    padded = lay.with_key_padding(torch.tensor([40, 45, 50])[:1], 50)
    for layout in (lay, padded):
        torch.library.opcheck(torch.ops.accel.block_sparse_attn.default, op_arguments(q, k, v, layout, 0.25),
                              test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@pytest.mark.slow
def test_compile_fullgraph_with_triton_backend():
    q, k, v, mask, lay = _layout_and_inputs()

    def f(q, k, v):
        return block_sparse_attention(q * 1.5, k, v, lay, backend="triton") + 1.0

    compiled = torch.compile(f, fullgraph=True)
    out = compiled(q, k, v)
    want, _ = dense_masked_attention(q * 1.5, k, v, mask, 0.25)
    torch.testing.assert_close(out.double(), want + 1.0, atol=2e-5, rtol=2e-5)

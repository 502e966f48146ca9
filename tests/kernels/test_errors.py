"""Bad input raises a clear error at the API boundary, naming the parameter."""

import pytest
import torch

from accel.kernels import BlockLayout, block_sparse_attention


def _ok():
    q = torch.randn(1, 20, 2, 16)
    k = torch.randn(1, 30, 2, 16)
    return q, k, k.clone(), BlockLayout.full(20, 30, q_block=16, kv_block=16)


@pytest.mark.parametrize(
    ("mutate", "exc", "needle"),
    [
        (lambda a: a.update(q=a["q"][0]), ValueError, "q must be 4-D"),
        (lambda a: a.update(k=a["k"].double()), ValueError, "k has dtype torch.float64"),
        (lambda a: a.update(v=a["v"].half()), ValueError, "q, k, v must share a dtype"),
        (lambda a: a.update(v=a["v"][:, :29]), ValueError, "k and v must have the same shape"),
        (lambda a: a.update(k=a["k"][:, :, :1], v=a["v"][:, :, :1]), ValueError, "does not match q shape"),
        (lambda a: a.update(q=torch.randn(1, 20, 2, 300), k=torch.randn(1, 30, 2, 300), v=torch.randn(1, 30, 2, 300)),
         ValueError, r"head dim \(q.shape\[3\]\) must be in \[1, 256\]"),
        (lambda a: a.update(q=torch.randn(1, 21, 2, 16)), ValueError, "blocks is for q_len=20"),
        (lambda a: a.update(blocks="dense"), TypeError, "blocks must be an accel.kernels.BlockLayout"),
        (lambda a: a.update(q=[1, 2]), TypeError, "q must be a torch.Tensor"),
        (lambda a: a.update(backend="cuda"), ValueError, "backend must be one of"),
        (lambda a: a.update(scale=-1.0), ValueError, "scale must be a positive finite float"),
        (lambda a: a.update(blocks=BlockLayout.from_block_mask(torch.ones(1, 3, 2, 2, dtype=torch.bool), 16, 16, 20, 30)),
         ValueError, "blocks batch/heads"),
    ],
)
def test_bad_input(mutate, exc, needle):
    q, k, v, lay = _ok()
    args = dict(q=q, k=k, v=v, blocks=lay, backend="reference", scale=None)
    mutate(args)
    with pytest.raises(exc, match=needle):
        block_sparse_attention(args["q"], args["k"], args["v"], args["blocks"], backend=args["backend"],
                               scale=args["scale"])


def test_triton_on_cpu_without_interpreter_is_refused(monkeypatch):
    import accel.kernels.attention as attention

    monkeypatch.setattr(attention, "INTERPRET", False)
    q, k, v, lay = _ok()
    with pytest.raises(ValueError, match="backend='triton' needs CUDA tensors"):
        block_sparse_attention(q, k, v, lay, backend="triton")


def test_blocks_keyword_and_its_deprecated_name():
    """``blocks=`` is the name; the old ``layout=`` gives the same result with a DeprecationWarning."""
    q, k, v, lay = _ok()
    ref = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    out = block_sparse_attention(q, k, v, blocks=lay, backend="reference")
    torch.testing.assert_close(out, ref.transpose(1, 2))
    with pytest.warns(DeprecationWarning, match=r"block_sparse_attention\(\): the keyword layout= is deprecated"):
        old = block_sparse_attention(q, k, v, layout=lay, backend="reference")
    torch.testing.assert_close(old, out, rtol=0, atol=0)
    with pytest.raises(TypeError, match="got both blocks= and its deprecated name layout="):
        block_sparse_attention(q, k, v, lay, layout=lay)
    with pytest.raises(TypeError, match="missing required argument: 'blocks'"):
        block_sparse_attention(q, k, v)

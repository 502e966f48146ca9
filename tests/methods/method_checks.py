"""Shared checks for the method tests (tests/methods/test_radial.py, test_clear_local.py, test_neighborhood.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import strategies as st

import accel
from accel.grid import TokenLayout

from ..patterns import reference as ref


def qkv(shape, seed):
    """Three independent standard-normal tensors of ``shape`` from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g) for _ in range(3))


def dense_masked(q, k, v, mask_rows):
    """fp64 SDPA of ``[B, S, H, D]`` tensors with a bool mask given as ``[B][S][S]`` or ``[S][S]`` lists."""
    mask = torch.tensor(mask_rows, dtype=torch.bool)
    if mask.dim() == 2:
        mask = mask[None]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2).double(), k.transpose(1, 2).double(), v.transpose(1, 2).double(), attn_mask=mask[:, None]
    )
    return out.transpose(1, 2).to(q.dtype)


@st.composite
def text_layouts(draw, grid, batch):
    """A TokenLayout on ``grid`` with no text, text first (FLUX-like) or text last with padding."""
    side = draw(st.sampled_from([None, "first", "last"]))
    if side is None:
        return TokenLayout(grid)
    text_len = draw(st.one_of(st.integers(1, 12), st.sampled_from([16, 32])))  # 16k: fused with the video
    mask = None
    if draw(st.booleans()):
        bits = draw(st.lists(st.lists(st.booleans(), min_size=text_len, max_size=text_len),
                             min_size=batch, max_size=batch))
        mask = torch.tensor(bits, dtype=torch.bool)
    return TokenLayout(grid, text_len, side, mask)


def expected_mask(video_mask, layout: TokenLayout, batch: int):
    """Per-sample joint masks (list of [S][S]) around the reference video mask."""
    out = []
    for b in range(batch):
        valid = None if layout.text_mask is None else layout.text_mask[b % layout.text_mask.shape[0]].tolist()
        out.append(ref.joint_mask(video_mask, layout.grid, layout.text_len, layout.text_side, valid))
    return out


def check_method(method, layout: TokenLayout, video_mask, *, batch=1, heads=2, dim=16, seed=0, atol=2e-5):
    """method(q, k, v, layout) equals dense attention masked by the reference rule."""
    g = torch.Generator().manual_seed(seed)
    s = layout.seq_len
    q, k, v = (torch.randn(batch, s, heads, dim, generator=g) for _ in range(3))
    out = method(q, k, v, layout)
    want = dense_masked(q, k, v, expected_mask(video_mask, layout, batch))
    torch.testing.assert_close(out, want, atol=atol, rtol=1e-4)
    return out


def apply_to_tiny_pipeline(family, method, *, expect_change=True):
    """Run a tiny pipeline with ``method`` on one layer; it must equal the masked-dense reference of the
    method's own token rule, and (if ``expect_change``) differ from stock diffusers."""
    from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

    from .helpers import MaskedDenseReference

    size = {"wan": 64, "hunyuan_video": 32, "flux": 16}[family]
    pipe = tiny_pipeline(family)
    pipe.set_progress_bar_config(disable=True)

    def run():
        kwargs = tiny_call_kwargs(family, size=size)
        kwargs["output_type"] = "latent"
        return pipe(**kwargs)[0]

    stock = run()
    with accel.apply(pipe, method, layers=[1]):
        sparse = run()
    with accel.apply(pipe, MaskedDenseReference(of=method), layers=[1]):
        reference = run()
    torch.testing.assert_close(sparse, reference, atol=1e-4, rtol=1e-4)
    if expect_change:
        assert (sparse - stock).abs().max() > 1e-3, "the sparse pattern should change the output"
    else:
        torch.testing.assert_close(sparse, stock, atol=1e-4, rtol=1e-4)

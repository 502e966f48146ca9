"""Methods on raw tensors: Dense vs SDPA, the default text rule vs its token-level definition, errors,
and the torch.compile boundary."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel.grid import TokenLayout
from accel.methods import AttentionMethod, Dense

from .helpers import MaskedDenseReference, RandomVideoBlocks


def _sdpa(q, k, v, mask=None):
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2).double(), k.transpose(1, 2).double(), v.transpose(1, 2).double(), attn_mask=mask
    )
    return out.transpose(1, 2)


def _qkv(b, s, h, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, s, h, d, generator=g, dtype=dtype) for _ in range(3)]


@st.composite
def layouts(draw):
    grid = (draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    side = draw(st.sampled_from([None, "first", "last"]))
    text_len = 0 if side is None else draw(st.integers(1, 20))
    batch = draw(st.integers(1, 2))
    mask = None
    if side is not None and draw(st.booleans()):
        valid = [draw(st.integers(0, text_len)) for _ in range(batch)]
        mask = torch.arange(text_len)[None, :] < torch.tensor(valid)[:, None]
    return TokenLayout(grid, text_len, side, mask), batch


@settings(max_examples=25)
@given(layouts(), st.sampled_from([16, 32]), st.integers(1, 3))
def test_dense_equals_masked_sdpa(case, block, heads):
    layout, batch = case
    q, k, v = _qkv(batch, layout.seq_len, heads, 8)
    out = Dense(block_size=block)(q, k, v, layout)
    valid = layout.key_padding_mask(batch)
    mask = None if valid is None else valid[:, None, None, :]
    ref = _sdpa(q, k, v, mask)
    # rows whose keys are all padding cannot occur: video keys are always valid
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)


def test_dense_bit_exact_without_mask():
    q, k, v = _qkv(2, 72, 2, 12)
    out = Dense()(q, k, v, TokenLayout((2, 6, 6)))
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    assert torch.equal(out, ref)


@settings(max_examples=20)
@given(layouts(), st.integers(0, 1000), st.booleans())
def test_default_text_rule_matches_token_definition(case, seed, per_head):
    layout, batch = case
    method = RandomVideoBlocks(seed=seed, density=0.4, per_head=per_head, backend="reference")
    q, k, v = _qkv(batch, layout.seq_len, 2, 8, seed=seed)
    out = method(q, k, v, layout)
    mask = method.token_mask(layout, batch=batch, heads=2)
    ref = _sdpa(q, k, v, mask)
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=2e-5)
    # the test reference method agrees with itself through the same entry point
    torch.testing.assert_close(MaskedDenseReference(of=method)(q, k, v, layout).double(), ref, atol=1e-6, rtol=1e-6)


def test_token_mask_text_rule_explicit():
    layout = TokenLayout((1, 2, 2), 2, "first", torch.tensor([[True, False]]))
    method = RandomVideoBlocks(density=0.0)  # one video block: only the diagonal -> all video pairs
    m = method.token_mask(layout, batch=1, heads=1)[0, 0]
    assert m.shape == (6, 6)
    assert not m[:, 1].any()  # padded text key never attended
    assert m[:, 0].all() and m[:, 2:].all()


def test_sparse_layout_differs_from_dense():
    layout = TokenLayout((2, 4, 8), 16, "last")
    method = RandomVideoBlocks(seed=3, density=0.3)
    q, k, v = _qkv(1, layout.seq_len, 2, 8)
    assert (method(q, k, v, layout) - Dense()(q, k, v, layout)).abs().max() > 1e-3


def test_functional_api_is_exported():
    assert accel.Dense is Dense
    assert accel.TokenLayout is TokenLayout
    layout = accel.TokenLayout(grid=(1, 4, 4), text_len=4, text_side="first")
    q, k, v = _qkv(1, 20, 2, 16)
    assert accel.Dense()(q, k, v, layout).shape == q.shape


def test_tokens_keyword_and_its_deprecated_name():
    """``tokens=`` is the name; the old ``layout=`` gives the same result with a DeprecationWarning."""
    tokens = TokenLayout((1, 4, 4), 4, "first")
    q, k, v = _qkv(1, 20, 2, 16)
    out = Dense(backend="reference")(q, k, v, tokens=tokens)
    torch.testing.assert_close(out, _sdpa(q, k, v).float())
    with pytest.warns(DeprecationWarning, match=r"Dense\(\): the keyword layout= is deprecated, use tokens="):
        old = Dense(backend="reference")(q, k, v, layout=tokens)
    torch.testing.assert_close(old, out, rtol=0, atol=0)
    with pytest.raises(TypeError, match="got both tokens= and its deprecated name layout="):
        Dense()(q, k, v, tokens, layout=tokens)
    with pytest.raises(TypeError, match="missing required argument: 'tokens'"):
        Dense()(q, k, v)


# ---------------------------------------------------------------------- errors
def test_bad_inputs():
    layout = TokenLayout((1, 4, 4))
    q, k, v = _qkv(1, 16, 2, 8)
    with pytest.raises(ValueError, match="q has 17 tokens but the token layout describes 16"):
        Dense()(*_qkv(1, 17, 2, 8), layout)
    with pytest.raises(TypeError, match="tokens must be an accel.TokenLayout"):
        Dense()(q, k, v, (1, 4, 4))
    with pytest.raises(ValueError, match=r"q must be 4-D"):
        Dense()(q[0], k, v, layout)
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        Dense()(q, k, v[:, :, :1], layout)
    with pytest.raises(ValueError, match="scale must be a positive float"):
        Dense()(q, k, v, layout, scale=-1.0)
    with pytest.raises(ValueError, match="block_size must be a power of two"):
        Dense(block_size=24)
    with pytest.raises(ValueError, match="backend must be one of"):
        Dense(backend="cuda")
    masked = TokenLayout((1, 4, 4), 4, "first", torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="text_mask has batch 3"):
        Dense()(*_qkv(2, 20, 2, 8), masked)


def test_scale_is_honoured():
    layout = TokenLayout((1, 4, 4))
    q, k, v = _qkv(1, 16, 2, 8)
    out = Dense()(q, k, v, layout, scale=0.1)
    ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=0.1)
    torch.testing.assert_close(out, ref.transpose(1, 2))


def test_subclass_without_super_post_init_fails_clearly_under_compile():
    @dataclasses.dataclass(frozen=True, eq=False)
    class Forgetful(AttentionMethod):
        def __post_init__(self):
            pass

    layout = TokenLayout((1, 4, 4))
    q, k, v = _qkv(1, 16, 2, 8)
    assert Forgetful()(q, k, v, layout).shape == q.shape  # eager works
    fn = torch.compile(lambda q, k, v: Forgetful()(q, k, v, layout), fullgraph=True, backend="eager")
    with pytest.raises(Exception, match="did not call super"):
        fn(q, k, v)


def test_compiled_fullgraph_uses_the_custom_op():
    layout = TokenLayout((2, 4, 4), 8, "last", torch.tensor([[True] * 5 + [False] * 3]))
    method = RandomVideoBlocks(seed=1, density=0.5)
    q, k, v = _qkv(1, layout.seq_len, 2, 8)

    def f(q, k, v, mask):
        return method(q, k, v, layout.with_text_mask(mask)) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v, layout.text_mask), f(q, k, v, layout.text_mask))

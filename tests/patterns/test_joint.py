"""Joint (video + text) layouts: one layout for the default text rule, against a brute-force mask."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.kernels import BlockLayout
from accel.patterns.joint import joint_text_layout, with_key_validity

B = 16


def expected(video_mask: torch.Tensor, text_len: int, side: str | None, key_valid: torch.Tensor | None):
    """Default text rule, written out: text rows and columns allowed, video x video from ``video_mask``,
    invalid keys removed. Returns bool [Bk, S, S]."""
    nv = video_mask.shape[0]
    s = nv + text_len
    v0 = text_len if side == "first" else 0
    m = torch.ones(s, s, dtype=torch.bool)
    m[v0:v0 + nv, v0:v0 + nv] = video_mask
    if key_valid is None:
        return m[None]
    return m[None] & key_valid[:, None, :]


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_joint_layout_equals_default_text_rule(data):
    nv = data.draw(st.integers(1, 70))
    side = data.draw(st.sampled_from([None, "first", "last"]))
    text_len = 0 if side is None else data.draw(st.sampled_from([1, 5, 16, 21, 32]))
    seed = data.draw(st.integers(0, 10**6))
    g = torch.Generator().manual_seed(seed)
    density = data.draw(st.sampled_from([0.0, 0.3, 0.8, 1.0]))
    video_mask = torch.rand(nv, nv, generator=g) < density
    if data.draw(st.booleans()):  # block-structured masks give full blocks too
        nb = -(-nv // B)
        blocks = torch.rand(nb, nb, generator=g) < 0.5
        video_mask |= blocks.repeat_interleave(B, 0).repeat_interleave(B, 1)[:nv, :nv]
    video = BlockLayout.from_token_mask(video_mask[None, None], B, B, allow_empty_rows=True)
    joint = joint_text_layout(video, text_len, side)
    if side == "first" and text_len % B:
        assert joint is None
        return
    batch = data.draw(st.integers(1, 2))
    key_valid = None
    if data.draw(st.booleans()):
        key_valid = torch.rand(batch, nv + text_len, generator=g) < data.draw(st.sampled_from([0.2, 0.7, 0.95]))
    out = with_key_validity(joint, key_valid)
    want = expected(video_mask, text_len, side, key_valid)
    got = out.to_dense_mask()[:, 0]
    assert torch.equal(got.expand_as(want) if got.shape[0] == 1 else got, want.expand_as(got)
                       if want.shape[0] == 1 else want)


def test_text_last_straddling_block_has_few_tiles():
    """HunyuanVideo-like: video ends 3 tokens into a block, text fills the rest; tiles stay few."""
    nv, text_len = 4 * B + 3, 2 * B
    video = BlockLayout.full(nv, nv, q_block=B, kv_block=B)
    joint = joint_text_layout(video, text_len, "last")
    assert joint.is_dense and joint.q_len == nv + text_len
    mask = torch.zeros(nv, nv, dtype=torch.bool)
    mask[:, : 2 * B] = True
    sparse = joint_text_layout(BlockLayout.from_token_mask(mask[None, None], B, B), text_len, "last")
    assert sparse.tiles.shape[0] <= 4  # the video layout's placeholder tile + row, column and corner composites
    torch.testing.assert_close(sparse.to_dense_mask()[0, 0].float(), expected(mask, text_len, "last", None)[0].float())


def test_errors():
    video = BlockLayout.full(40, 40, q_block=16, kv_block=16)
    with pytest.raises(ValueError, match=r"key_valid must have shape \[B\|1, kv_len=40\]"):
        with_key_validity(video, torch.ones(1, 41, dtype=torch.bool))
    with pytest.raises(ValueError, match="must be square"):
        joint_text_layout(BlockLayout.full(40, 20, q_block=16, kv_block=16), 4, "last")

"""One kernel launch per attention call: video and text tokens go through a single block-sparse call."""

from __future__ import annotations

import pytest
import torch

import accel.kernels.attention as kernel_entry
from accel.grid import TokenLayout
from accel.methods.clear_local import ClearLocal
from accel.methods.dense import Dense
from accel.methods.neighborhood import Neighborhood
from accel.methods.radial import Radial

from ..patterns import reference as ref
from .method_checks import check_method

GRID = (3, 5, 7)  # 105 video tokens: not a multiple of the 16-token block, so text last starts mid-block
METHODS = {
    "dense": lambda: Dense(backend="reference"),
    "radial": lambda: Radial(decay=0.5, block_size=16, backend="reference"),
    "clear_local": lambda: ClearLocal(radius=2.5, radius_t=1.5, block_size=16, backend="reference"),
    "clear_local_block": lambda: ClearLocal(radius=2.5, radius_t=1.5, block_size=16, granularity="block",
                                            backend="reference"),
    "clear_local_tile": lambda: ClearLocal(radius=4, radius_t=2, block_size=16, granularity="tile", backend="reference"),
    "neighborhood": lambda: Neighborhood(window=(2, 3, 5), block_size=16, backend="reference"),
    "neighborhood_tile": lambda: Neighborhood(window=(2, 8, 8), stride=(1, 4, 4), block_size=16, tiling=(1, 4, 4),
                                              granularity="tile", backend="reference"),
}
LAYOUTS = {
    "no text": lambda: TokenLayout(GRID),
    "text first (FLUX-like, whole blocks)": lambda: TokenLayout(GRID, 32, "first"),
    "text last, padded (HunyuanVideo-like)": lambda: TokenLayout(GRID, 12, "last",
                                                                  torch.tensor([[True] * 9 + [False] * 3,
                                                                                [True] * 5 + [False] * 7])),
}


@pytest.fixture
def launches(monkeypatch):
    """Counts kernel launches: every backend call of ``block_sparse_attention`` (reference backend here)."""
    calls = []
    real = kernel_entry.reference_attention

    def counted(*args, **kwargs):
        calls.append(args[3])  # the BlockLayout
        return real(*args, **kwargs)

    monkeypatch.setattr(kernel_entry, "reference_attention", counted)
    return calls


@pytest.mark.parametrize("layout_name", list(LAYOUTS))
@pytest.mark.parametrize("method_name", list(METHODS))
def test_one_launch_per_attention_call(launches, method_name, layout_name):
    method, layout = METHODS[method_name](), LAYOUTS[layout_name]()
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, layout.seq_len, 2, 16, generator=g) for _ in range(3))
    method(q, k, v, layout)
    assert len(launches) == 1, f"{len(launches)} kernel launches"
    assert launches[0].q_len >= layout.seq_len  # the whole joint sequence (padded video positions included)


def test_text_first_off_block_falls_back_to_three_launches(launches):
    """Text first whose length is not a multiple of the block size: video blocks would not line up, so the
    default text rule runs as three calls merged by log-sum-exp (documented fallback)."""
    layout = TokenLayout(GRID, 5, "first")
    q = torch.randn(1, layout.seq_len, 1, 16)
    Radial(decay=0.5, block_size=16, backend="reference")(q, q, q, layout)
    assert len(launches) == 3


PADDED = {  # method, its reference video mask on GRID (natural token order)
    "neighborhood": (lambda: Neighborhood(window=(2, 3, 5), block_size=16, backend="reference"),
                     lambda: ref.natten_mask(GRID, (2, 3, 5), (1, 1, 1), (1, 1, 1), (False,) * 3)),
    "neighborhood_tile": (METHODS["neighborhood_tile"],
                          lambda: ref.tiled_natten_mask(GRID, (1, 4, 4), (2, 8, 8), (1, 4, 4), (False,) * 3)),
    "clear_local_block": (METHODS["clear_local_block"], lambda: ref.clear_tile_any_mask(GRID, (2, 2, 4), 2.5, 1.5)),
}


@pytest.mark.parametrize("side", ["first", "last"])
@pytest.mark.parametrize("method_name", list(PADDED))
def test_padded_text_is_key_padding_not_partial_blocks(launches, method_name, side):
    """Text padded at its end (a valid prefix per row, as tokenizers pad) is the kernel's key padding: one
    interval per batch element, the blocks those keys fall in stay as they are without the padding (no
    partial block added), and the output is the brute-force masked reference's."""
    make, video_mask = PADDED[method_name]
    counts = [5, 0, 32]  # valid text tokens per batch element: some, none, all
    mask = torch.arange(32)[None, :] < torch.tensor(counts)[:, None]
    layout = TokenLayout(GRID, 32, side, mask)
    check_method(make(), layout, video_mask(), batch=3)
    padded = launches[-1]
    launches.clear()
    unpadded = TokenLayout(GRID, 32, side)
    q = torch.randn(3, unpadded.seq_len, 1, 16)
    make()(q, q, q, unpadded)
    assert padded.key_pad is not None and launches[-1].key_pad is None
    start = (0 if side == "first" else padded.kv_len - 32) + torch.tensor(counts)  # kv_len: padded video order
    assert padded.key_pad[:, 0].tolist() == start.tolist()
    assert padded.key_pad[:, 1].tolist() == [start[2].item()] * 3  # the end of the text span
    plain = launches[-1]
    kinds = plain.block_kinds()[0, 0]
    for bi in range(3):  # per batch element: key blocks made only of padding dropped, nothing else changed
        lo = torch.arange(plain.num_kv_blocks) * plain.kv_block
        hi = (lo + plain.kv_block).clamp(max=plain.kv_len)
        dead = (lo >= start[bi]) & (hi <= padded.key_pad[bi, 1])
        want = torch.where(dead[None, :], 0, kinds)
        assert torch.equal(padded.block_kinds()[bi, 0], want), bi

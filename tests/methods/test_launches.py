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

"""Block pooling (Rectified's selection input): Triton kernel (interpreted) and PyTorch against a
float64 brute-force loop."""

from __future__ import annotations

import pytest
import torch

from accel.kernels.block_pool import block_pool


def brute_force(x: torch.Tensor, block: int):
    b, n, h, d = x.shape
    nb = -(-n // block)
    mean = torch.zeros(b, h, nb, d, dtype=torch.float64)
    dev = torch.zeros_like(mean)
    xd = x.double()
    for i in range(nb):
        rows = xd[:, i * block:min(n, (i + 1) * block)]  # [B, n_i, H, D]
        m = rows.mean(1)
        mean[:, :, i] = m
        dev[:, :, i] = (rows - m[:, None]).abs().mean(1)
    return mean, dev


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dtype, n, block, d, strided", [
    (torch.float32, 70, 16, 12, False),
    (torch.float16, 64, 32, 16, True),
    (torch.bfloat16, 33, 16, 24, False),
    (torch.float32, 5, 16, 8, True),
])
def test_matches_brute_force(backend, dtype, n, block, d, strided):
    g = torch.Generator().manual_seed(n + d)
    x = torch.randn(2, n, 3, d, generator=g).to(dtype)
    if strided:  # a view with non-contiguous strides, as q/k/v slices of a joint sequence are
        x = torch.randn(2, n + 5, 3, 2 * d, generator=g).to(dtype)[:, 5:, :, ::2]
    mean, dev, counts = block_pool(x, block, backend=backend)
    want_mean, want_dev = brute_force(x, block)
    assert mean.dtype == torch.float32 and mean.shape == want_mean.shape
    torch.testing.assert_close(mean.double(), want_mean, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(dev.double(), want_dev, atol=2e-6, rtol=1e-5)
    assert counts.tolist() == [min(block, n - i * block) for i in range(-(-n // block))]
    m2, d2, _ = block_pool(x, block, deviation=False, backend=backend)
    assert d2 is None and torch.equal(m2, mean)


def test_errors():
    x = torch.zeros(1, 8, 1, 4)
    with pytest.raises(ValueError, match="block must be a power of two >= 1, got 12"):
        block_pool(x, 12)
    with pytest.raises(ValueError, match="backend must be one of"):
        block_pool(x, 4, backend="cuda")
    with pytest.raises(ValueError, match=r"x must be a tensor \[B, N >= 1, H, D\]"):
        block_pool(torch.zeros(8, 4), 4)

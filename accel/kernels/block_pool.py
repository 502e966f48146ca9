"""Block pooling: per-block means and mean absolute deviations of ``[B, N, H, D]`` tensors.

Dynamic block-sparse methods (Rectified sparse attention) score key blocks from pooled queries and
keys. The pooling reads the whole tensor, so it must cost one pass over it: on CUDA a Triton kernel
reads each block of ``block`` tokens of one (batch, head) once into registers (fp32 accumulation),
writes its mean and, in a second pass over the same block, its mean absolute deviation -- no fp32
copy of the input, no padding copy, no temporaries of the input's size. Elsewhere the same numbers
come from PyTorch (:func:`block_pool_torch`).

Definition, for block ``i`` holding tokens ``t`` of ``[i * block, min((i + 1) * block, N))`` (the
last block may be ragged, ``n_i`` tokens) and every batch ``b``, head ``h``, channel ``d``:

* ``mean[b, h, i, d] = (1 / n_i) * sum_t x[b, t, h, d]``
* ``dev[b, h, i, d] = (1 / n_i) * sum_t |x[b, t, h, d] - mean[b, h, i, d]|``

in float32 whatever the input dtype.
"""

from __future__ import annotations

import torch

from .triton_fwd import HAVE_TRITON, INTERPRET

if HAVE_TRITON:
    import triton
    import triton.language as tl

__all__ = ["block_pool", "block_pool_torch", "POOL_BACKENDS"]

POOL_BACKENDS = ("auto", "triton", "torch")


def _counts(n: int, block: int, device) -> torch.Tensor:
    nb = -(-n // block)
    counts = torch.full((nb,), block, dtype=torch.int64, device=device)
    counts[-1] = n - (nb - 1) * block
    return counts


def block_pool_torch(x: torch.Tensor, block: int, *, deviation: bool = True):
    """The PyTorch definition of :func:`block_pool` (same arguments and results)."""
    b, n, h, d = x.shape
    counts = _counts(n, block, x.device)
    whole = (n // block) * block
    means, devs = [], []
    parts = [x[:, :whole].reshape(b, n // block, block, h, d)] if whole else []
    if whole < n:
        parts.append(x[:, whole:].reshape(b, 1, n - whole, h, d))
    for part in parts:
        xf = part.float()
        mean = xf.mean(2)  # [B, nb_part, H, D]
        means.append(mean)
        if deviation:
            devs.append((xf - mean[:, :, None]).abs_().mean(2))
    mean = torch.cat(means, 1).permute(0, 2, 1, 3)
    dev = torch.cat(devs, 1).permute(0, 2, 1, 3) if deviation else None
    return mean, dev, counts


if HAVE_TRITON:

    @triton.jit
    def _block_pool_kernel(
        X, MEAN, DEV,
        stride_xb, stride_xs, stride_xh, stride_xd,
        stride_mb, stride_mh, stride_mq, stride_md,
        n_tokens, num_heads,
        BLOCK: tl.constexpr, CHUNK: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
        DEVIATION: tl.constexpr,
    ):
        qb = tl.program_id(0).to(tl.int64)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // num_heads
        h = pid_bh % num_heads
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d < HEAD_DIM
        start = qb * BLOCK
        count = tl.minimum(n_tokens - start, BLOCK).to(tl.float32)
        base = X + b * stride_xb + h * stride_xh
        total = tl.zeros([BLOCK_D], dtype=tl.float32)
        for c in range(0, BLOCK // CHUNK):
            offs_t = start + c * CHUNK + tl.arange(0, CHUNK)
            ok = (offs_t < n_tokens)[:, None] & d_ok[None, :]
            x = tl.load(base + offs_t[:, None] * stride_xs + offs_d[None, :] * stride_xd, mask=ok, other=0.0)
            total += tl.sum(x.to(tl.float32), 0)
        mean = total / count
        out = b * stride_mb + h * stride_mh + qb * stride_mq + offs_d * stride_md
        tl.store(MEAN + out, mean, mask=d_ok)
        if DEVIATION:
            spread = tl.zeros([BLOCK_D], dtype=tl.float32)
            for c in range(0, BLOCK // CHUNK):
                offs_t = start + c * CHUNK + tl.arange(0, CHUNK)
                ok = (offs_t < n_tokens)[:, None] & d_ok[None, :]
                x = tl.load(base + offs_t[:, None] * stride_xs + offs_d[None, :] * stride_xd, mask=ok, other=0.0)
                spread += tl.sum(tl.where(ok, tl.abs(x.to(tl.float32) - mean[None, :]), 0.0), 0)
            tl.store(DEV + out, spread / count, mask=d_ok)


def _block_pool_triton(x: torch.Tensor, block: int, deviation: bool):
    b, n, h, d = x.shape
    nb = -(-n // block)
    mean = torch.empty(b, h, nb, d, dtype=torch.float32, device=x.device)
    dev = torch.empty_like(mean) if deviation else mean
    block_d = max(16, 1 << (d - 1).bit_length())
    chunk = min(block, max(16, 8192 // block_d))  # at most 8K fp32 values of x in registers at once
    _block_pool_kernel[(nb, b * h)](
        x, mean, dev, *x.stride(), *mean.stride(), n, h,
        BLOCK=block, CHUNK=chunk, HEAD_DIM=d, BLOCK_D=block_d, DEVIATION=deviation,
        num_warps=4 if INTERPRET else 8,
    )
    return mean, (dev if deviation else None), _counts(n, block, x.device)


def block_pool(x: torch.Tensor, block: int, *, deviation: bool = True, backend: str = "auto"):
    """Block means and mean absolute deviations of ``x`` (exact definition in the module docstring).

    Args:
        x: ``[B, N, H, D]`` float32 / float16 / bfloat16, any strides, ``N >= 1``.
        block: tokens per block, a power of two >= 1 (the last block holds the remaining ``N mod
            block`` tokens when that is not 0).
        deviation: also compute the mean absolute deviations (default True).
        backend: ``"auto"`` (Triton on CUDA, PyTorch elsewhere), ``"triton"`` (CUDA, or CPU under
            ``TRITON_INTERPRET=1``) or ``"torch"``.

    Returns:
        ``(mean [B, H, NB, D], dev [B, H, NB, D] or None, counts [NB] int64)``, float32,
        ``NB = ceil(N / block)``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] < 1:
        raise ValueError(f"x must be a tensor [B, N >= 1, H, D], got {getattr(x, 'shape', type(x).__name__)}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 1, got {block!r}")
    if backend not in POOL_BACKENDS:
        raise ValueError(f"backend must be one of {POOL_BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "triton" if (x.device.type == "cuda" and HAVE_TRITON) else "torch"
    if backend == "torch":
        return block_pool_torch(x, block, deviation=deviation)
    if not HAVE_TRITON or (x.device.type != "cuda" and not INTERPRET):
        raise ValueError(f"backend='triton' needs triton and CUDA tensors (or TRITON_INTERPRET=1), got {x.device}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"x must be float32, float16 or bfloat16 for backend='triton', got {x.dtype}")
    return _block_pool_triton(x, block, deviation)

"""Deterministic structured Q/K/V on a (T, H, W) token grid whose attention decays with distance.

Per head, ``F`` and ``G`` are smooth random fields: i.i.d. normal values on a coarse grid (one
value every ``smooth`` tokens per axis) upsampled trilinearly to the token grid, then normalised to
unit variance per channel. Then::

    q = rope(F + noise * N1),   k = rope(F + noise * N2),   v = G + noise * N3

with independent standard normal ``N1, N2, N3`` and ``rope`` the 3D rotary embedding of Wan 2.1
(the head dimension split into a temporal part of ``D - 4 * (D // 6)`` channels and two spatial parts
of ``2 * (D // 6)`` channels each; frequencies ``10000 ** (-2i / d_axis)``, as diffusers'
``WanRotaryPosEmbed``). Nearby tokens share their field values (large ``q . k``) and RoPE rotates
distant keys away, so dense attention mass decays with spatio-temporal distance, as in video DiTs.
``sharpness`` multiplies ``q`` (a softmax temperature). Everything is a function of the seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["synthetic_qkv", "rope_3d"]


def _smooth_field(grid, heads: int, dim: int, smooth: float, gen: torch.Generator) -> torch.Tensor:
    """``[T*H*W, heads, dim]`` unit-variance smooth random field."""
    coarse = tuple(max(2, math.ceil(g / smooth) + 1) if g > 1 else 1 for g in grid)
    x = torch.randn(1, heads * dim, *coarse, generator=gen)
    x = F.interpolate(x, size=tuple(grid), mode="trilinear", align_corners=True)
    x = x.reshape(heads, dim, -1).permute(2, 0, 1)
    x = x - x.mean(0, keepdim=True)
    return x / x.std(0, keepdim=True).clamp_min(1e-6)


def rope_3d(x: torch.Tensor, grid: tuple[int, int, int], theta: float = 10000.0) -> torch.Tensor:
    """Rotary embedding of ``x`` ``[N, H, D]`` (tokens in row-major grid order), Wan 2.1's 3D split.

    Channel pairs ``(2i, 2i+1)`` of each axis part are rotated by ``pos * theta ** (-2i / d_axis)``
    (see the module docstring for the split). ``D`` must be even and >= 6.
    """
    n, h, d = x.shape
    if d % 2 or d < 6:
        raise ValueError(f"head_dim must be even and >= 6 for the 3D rotary embedding, got {d}")
    ds = 2 * (d // 6)
    parts = (d - 2 * ds, ds, ds)
    coords = torch.stack(torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij"), -1).reshape(-1, 3)
    angles = []
    for axis, dp in enumerate(parts):
        freqs = theta ** (-torch.arange(0, dp, 2, dtype=torch.float64) / dp)
        angles.append(coords[:, axis, None].double() * freqs[None])
    ang = torch.cat(angles, dim=1).float()  # [N, D/2]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    xr = x.reshape(n, h, d // 2, 2)
    a, b = xr[..., 0], xr[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), -1).reshape(n, h, d)


def synthetic_qkv(grid: tuple[int, int, int], *, heads: int = 2, head_dim: int = 64, seed: int = 0,
                  smooth: float = 6.0, noise: float = 0.5, sharpness: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Structured ``q, k, v`` ``[1, T*H*W, heads, head_dim]`` float32 (see the module docstring).

    Args:
        grid: ``(T, H, W)`` ints >= 1; tokens in row-major order.
        heads: number of heads (>= 1), each with its own fields.
        head_dim: head dimension, even and >= 6.
        seed: the only source of randomness.
        smooth: correlation length of the fields in tokens (> 0).
        noise: weight of the independent per-token noise (>= 0).
        sharpness: multiplier of ``q`` (> 0); larger concentrates attention.

    Raises:
        ValueError: for an argument outside the ranges above (naming it).
    """
    if len(grid) != 3 or any(not isinstance(g, int) or g < 1 for g in grid):
        raise ValueError(f"grid must be three ints >= 1 (T, H, W), got {grid!r}")
    if not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be an int >= 1, got {heads!r}")
    for name, val, ok in (("smooth", smooth, smooth > 0), ("noise", noise, noise >= 0),
                          ("sharpness", sharpness, sharpness > 0)):
        if not ok:
            raise ValueError(f"{name} out of range, got {val!r}")
    gen = torch.Generator().manual_seed(seed)
    grid = tuple(grid)
    f = _smooth_field(grid, heads, head_dim, smooth, gen)
    g = _smooth_field(grid, heads, head_dim, smooth, gen)
    n1, n2, n3 = (torch.randn(f.shape, generator=gen) for _ in range(3))
    q = rope_3d(f + noise * n1, grid) * sharpness
    k = rope_3d(f + noise * n2, grid)
    v = g + noise * n3
    return q[None].contiguous(), k[None].contiguous(), v[None].contiguous()

"""CLEAR local window: a disc (image) or ellipsoid (video) around every query.

Reference: S. Liu, Z. Tan, X. Wang, "CLEAR: Conv-Like Linearization Revs Pre-Trained Diffusion
Transformers Up", 2024 (arXiv 2412.16112). Written from the paper's definition.

On the grid, a query at ``(t, y, x)`` attends the key at ``(t', y', x')`` iff

* ``radius_t is None`` (default): ``(y - y')^2 + (x - x')^2 < radius^2`` -- a disc per frame, the
  same for every key frame (a tube through all frames; for images, ``T = 1``, CLEAR's disc);
* otherwise the ellipsoid ``((t - t') * radius / radius_t)^2 + (y - y')^2 + (x - x')^2 < radius^2``.

The inequality is strict and evaluated exactly (rational arithmetic on the parameters, integer
arithmetic on the distances): for each frame distance ``dt`` the largest allowed squared spatial
distance ``S(dt)`` is precomputed, and the rule is ``dy^2 + dx^2 <= S(|dt|)``. The window is *cut*
at the grid border, not shifted: border queries see fewer keys. Text tokens follow the default
text rule of :class:`accel.methods.base.AttentionMethod` (image/video queries see all valid text,
text queries see every valid key).

Draw it: ``python -m accel.patterns.clear_local`` (``--help`` for the options).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import torch

from accel.kernels import BlockLayout

from .blocks import GridRule, build_grid_layout
from .tiling import grid_coords

__all__ = ["ClearLocalRule", "clear_local_token_mask", "build_clear_local_layout", "check_radius"]


def check_radius(name: str, value, *, allow_none: bool = False):
    """Validate a radius: a finite int or float > 0 (or ``None`` when ``allow_none``); return it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        allowed = "a finite number > 0" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class ClearLocalRule(GridRule):
    """The CLEAR rule on one grid (exact semantics in the module docstring).

    Args:
        grid: ``(T, H, W)``, three ints >= 1.
        radius: spatial radius ``r`` in tokens (finite, > 0); a key at spatial distance ``>= r`` is
            never attended. A radius larger than the grid's diagonal makes the disc cover the frame.
        radius_t: temporal semi-axis ``r_t`` in frames (finite, > 0), or ``None`` for no temporal
            limit (every frame, same disc).
    """

    grid: tuple[int, int, int]
    radius: float
    radius_t: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.grid, tuple) and len(self.grid) == 3
                and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in self.grid)):
            raise ValueError(f"grid must be a tuple of three ints >= 1, got {self.grid!r}")
        check_radius("radius", self.radius)
        check_radius("radius_t", self.radius_t, allow_none=True)

    def key(self) -> tuple:
        return ("clear_local", self.grid, float(self.radius), None if self.radius_t is None else float(self.radius_t))

    @property
    def ignored_axes(self) -> tuple[int, ...]:
        return (0,) if self.radius_t is None else ()

    def spatial_limits(self) -> torch.Tensor:
        """int64 ``[T]``: ``S(dt)``, the largest allowed ``dy^2 + dx^2`` at frame distance ``dt`` (-1: none)."""
        cached = getattr(self, "_limits", None)
        if cached is not None:
            return cached
        r2 = Fraction(self.radius) ** 2
        out = []
        for dt in range(self.grid[0]):
            bound = r2 if self.radius_t is None else r2 * (1 - Fraction(dt) ** 2 / Fraction(self.radius_t) ** 2)
            out.append(max(-1, math.ceil(bound) - 1))
        limits = torch.tensor(out, dtype=torch.int64)
        object.__setattr__(self, "_limits", limits)
        return limits

    def pair_mask(self, qf, kc):
        s = self.spatial_limits().to(qf.dtype)
        dy = qf[..., 1] - kc[..., 1]
        dx = qf[..., 2] - kc[..., 2]
        dist = dy.mul_(dy).add_(dx * dx)
        if self.radius_t is None:
            return dist <= s[0]
        return dist <= s[(qf[..., 0] - kc[..., 0]).abs_().long()]

    def box_relation(self, qlo, qhi, klo, khi):
        s = self.spatial_limits()
        gap = torch.maximum(torch.maximum(klo - qhi, qlo - khi), torch.zeros_like(qlo))
        far = torch.maximum(khi - qlo, qhi - klo)
        any_ = gap[..., 1] ** 2 + gap[..., 2] ** 2 <= s[gap[..., 0]]
        all_ = far[..., 1] ** 2 + far[..., 2] ** 2 <= s[far[..., 0]]
        return any_, all_


def clear_local_token_mask(rule: ClearLocalRule, permutation: torch.Tensor | None = None) -> torch.Tensor:
    """bool ``[N, N]`` token mask of ``rule`` (tests / tiny sizes only), tokens in ``permutation`` order."""
    c = grid_coords(rule.grid, permutation)
    return rule.token_mask(c)


def build_clear_local_layout(rule: ClearLocalRule, permutation: torch.Tensor | None = None, *,
                             block_size: int = 128, device: torch.device | str | None = None) -> BlockLayout:
    """Exact block layout of ``rule`` over the video tokens (built analytically; not cached: the methods cache).

    Args:
        rule: the validated rule.
        permutation: the token order (``TokenLayout.permutation``; ``None`` = row-major).
        block_size: query and key block size (power of two >= 16).
        device: device of the layout (default CPU).
    """
    return build_grid_layout(rule, grid_coords(rule.grid, permutation), block_size, block_size, device=device)


if __name__ == "__main__":  # python -m accel.patterns.clear_local [options]: draw a small mask and its block map
    import sys

    from accel.patterns.draw import main

    sys.exit(main(pattern="clear_local"))

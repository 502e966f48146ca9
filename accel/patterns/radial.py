"""Radial attention: spatial windows that shrink with temporal distance, at block granularity.

Reference: X. Li, M. Li et al., "Radial Attention: O(n log n) Sparse Attention with Energy Decay
for Long Video Generation", 2025 (arXiv 2506.19852). Written from the paper's description; the
constants below follow the paper's published mask (width base, block threshold, frame-0 sink).

Token rule. The video has ``T`` latent frames of ``s = H * W`` tokens; a token's *spatial index* is
``l = y * W + x``. For a query in frame ``i`` at spatial index ``k`` and a key in frame ``j`` at
spatial index ``l``, with ``d = |i - j|``:

* ``d <= 1``: allowed (neighbouring frames are dense);
* ``d >= 2``: band ``r = floor(log2 d)``; the raw half-width is
  ``h(d) = decay * P / 2 ** (r + 1)`` with ``P = 2 ** bit_length(s)`` (the smallest power of two
  greater than ``s``), so the window's width ``2 h`` is about ``decay * s / 2 ** r`` and halves
  with every doubling of the frame distance;

  * if ``h(d) >= block_size``: allowed iff ``|k - l| <= floor(h(d))``;
  * otherwise (window narrower than a block) *diagonal-frequency reduction*: with
    ``m = floor(block_size / h(d))``, the frame pair is kept only when ``d % m == 0``, and then with
    a window of one block: allowed iff ``d % m == 0 and |k - l| <= block_size``;
* ``sink=True``: additionally every query attends every key of frame 0.

All thresholds are computed exactly (rational arithmetic on ``decay``).

Block granularity (``granularity="block"``, the default, as the paper executes it): the sequence is
cut into blocks of ``block_size`` tokens (in sequence order) and a (query block, key block) pair is
computed *in full* iff the token rule allows at least one of its pairs. The result is a superset
of the token rule, rounded up to whole blocks -- the paper instead drops blocks whose share of
allowed pairs is small (a density threshold), which is not exact with respect to any token rule;
ours never drops an allowed pair. ``granularity="token"`` visits the same blocks but applies the
token rule inside them (partial blocks), for a mask equal to the rule.

Text tokens follow the default text rule (dense), as in the paper.

Draw it: ``python -m accel.patterns.radial`` (``--help`` for the options).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import torch

from accel.kernels import BlockLayout, validate_block_size

from .blocks import GridRule, build_grid_layout
from .tiling import grid_coords

__all__ = ["RadialRule", "radial_token_mask", "build_radial_layout", "radial_half_widths"]

GRANULARITIES = ("block", "token")


def radial_half_widths(frames: int, tokens_per_frame: int, decay: float, block_size: int) -> list[int]:
    """The per-frame-distance window of the token rule: ``hw[d]`` for ``d`` in ``[0, frames)``.

    ``hw[d] = -1`` means no key of a frame at distance ``d`` is allowed; otherwise keys with
    ``|k - l| <= hw[d]`` are (``s - 1`` for dense frame pairs). See the module docstring.
    """
    s = tokens_per_frame
    p = 1 << s.bit_length()
    dec = Fraction(decay)
    out = []
    for d in range(frames):
        if d <= 1:
            out.append(s - 1)
            continue
        h = dec * p / (1 << d.bit_length())  # 2 ** (floor(log2 d) + 1)
        if h >= block_size:
            out.append(min(s - 1, math.floor(h)))
            continue
        m = math.floor(Fraction(block_size) / h)
        out.append(min(s - 1, block_size) if d % m == 0 else -1)
    return out


@dataclasses.dataclass(frozen=True)
class RadialRule(GridRule):
    """The Radial token rule on one grid (exact semantics in the module docstring).

    Args:
        grid: ``(T, H, W)``, three ints >= 1.
        decay: window scale (finite, > 0): 1.0 gives the paper's widths, smaller is sparser.
        block_size: the block size of the reduction threshold (power of two >= 16); also the block
            size of the layouts built for it.
        sink: if True every query also attends all of frame 0.
    """

    grid: tuple[int, int, int]
    decay: float
    block_size: int = 128
    sink: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.grid, tuple) and len(self.grid) == 3
                and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in self.grid)):
            raise ValueError(f"grid must be a tuple of three ints >= 1, got {self.grid!r}")
        d = self.decay
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0:
            raise ValueError(f"decay must be a finite number > 0, got {d!r}")
        validate_block_size("block_size", self.block_size)
        if not isinstance(self.sink, bool):
            raise ValueError(f"sink must be a bool, got {self.sink!r}")

    def key(self) -> tuple:
        return ("radial", self.grid, float(self.decay), self.block_size, self.sink)

    def half_widths(self) -> torch.Tensor:
        """int64 ``[T]``, see :func:`radial_half_widths`."""
        hw = getattr(self, "_hw", None)
        if hw is None:
            t, h, w = self.grid
            hw = torch.tensor(radial_half_widths(t, h * w, self.decay, self.block_size), dtype=torch.int64)
            object.__setattr__(self, "_hw", hw)
        return hw

    def _range_tables(self):
        tabs = getattr(self, "_ranges", None)
        if tabs is None:
            hw = self.half_widths()
            t = hw.shape[0]
            upper = torch.arange(t)[None, :] >= torch.arange(t)[:, None]
            big = 1 << 40
            rmax = torch.cummax(torch.where(upper, hw[None, :], -big), dim=1).values
            rmin = torch.cummin(torch.where(upper, hw[None, :], big), dim=1).values
            tabs = (rmax, rmin)
            object.__setattr__(self, "_ranges", tabs)
        return tabs

    # rule space: (t, 0, l) with l = y * W + x, so a row-major run of a frame is one exact interval
    @property
    def extent(self) -> tuple[int, int, int]:
        t, h, w = self.grid
        return (t, 1, h * w)

    @property
    def ignored_axes(self) -> tuple[int, ...]:
        return (1,)

    def rule_coords(self, coords):
        w = self.grid[2]
        return torch.stack([coords[..., 0], torch.zeros_like(coords[..., 0]), coords[..., 1] * w + coords[..., 2]], -1)

    def key_flags(self, coords):
        return (coords[..., :1] == 0).long() if self.sink else None

    def pair_mask(self, qf, kc):
        hw = self.half_widths().to(qf.dtype)
        dl = qf[..., 2] - kc[..., 2]
        dt = qf[..., 0] - kc[..., 0]
        ok = dl.abs_() <= hw[dt.abs_().long()]
        if self.sink:
            ok = ok | (kc[..., 0] == 0)
        return ok

    def box_relation(self, qlo, qhi, klo, khi):
        rmax, rmin = self._range_tables()
        ql0, ql1, kl0, kl1 = qlo[..., 2], qhi[..., 2], klo[..., 2], khi[..., 2]
        lgap = torch.maximum(torch.maximum(kl0 - ql1, ql0 - kl1), torch.zeros_like(ql0))
        lfar = torch.maximum(kl1 - ql0, ql1 - kl0)
        a, b, c, e = qlo[..., 0], qhi[..., 0], klo[..., 0], khi[..., 0]

        def dist_range(c_):
            dmin = torch.maximum(torch.maximum(c_ - b, a - e), torch.zeros_like(a))
            dmax = torch.maximum(e - a, b - c_)
            return dmin, dmax

        dmin, dmax = dist_range(c)
        any_ = rmax[dmin, dmax] >= lgap
        if not self.sink:
            return any_, rmin[dmin, dmax] >= lfar
        any_ = any_ | (c == 0)
        c1 = torch.maximum(c, torch.ones_like(c))
        only_frame0 = c1 > e
        dmin1, dmax1 = dist_range(c1)
        dmin1, dmax1 = torch.where(only_frame0, 0, dmin1), torch.where(only_frame0, 0, dmax1)
        all_ = only_frame0 | (rmin[dmin1, dmax1] >= lfar)
        return any_, all_


def radial_token_mask(rule: RadialRule, permutation: torch.Tensor | None = None) -> torch.Tensor:
    """bool ``[N, N]``: the Radial *token* rule (tests / tiny sizes only), tokens in ``permutation`` order.

    The block-granular method attends the block-rounded version of this mask (see the module docstring).
    """
    return rule.token_mask(grid_coords(rule.grid, permutation))


def build_radial_layout(rule: RadialRule, permutation: torch.Tensor | None = None, *, granularity: str = "block",
                        device: torch.device | str | None = None) -> BlockLayout:
    """Block layout of ``rule`` over the video tokens (blocks of ``rule.block_size``); not cached (the method caches).

    Args:
        rule: the validated rule.
        permutation: the token order (``TokenLayout.permutation``; ``None`` = row-major, the paper's).
        granularity: ``"block"`` (default): every block pair holding an allowed pair is a full block;
            ``"token"``: the same blocks, masked to the token rule.
        device: device of the layout (default CPU).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")

    return build_grid_layout(rule, grid_coords(rule.grid, permutation), rule.block_size, rule.block_size,
                             granularity=granularity, device=device)


if __name__ == "__main__":  # python -m accel.patterns.radial [options]: draw a small mask and its block map
    import sys

    from accel.patterns.draw import main

    sys.exit(main(pattern="radial"))

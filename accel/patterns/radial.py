"""Radial attention: spatial windows that shrink with temporal distance, as mit-han-lab/radial-attention runs it.

Reference: X. Li, M. Li et al., "Radial Attention: O(n log n) Sparse Attention with Energy Decay
for Long Video Generation", 2025 (arXiv 2506.19852), and the authors' release
(github.com/mit-han-lab/radial-attention, ``radial_attn/attn_mask.py`` at commit 72788d4, read for
its rules; no code taken from it).

Token rule. The video has ``T`` latent frames of ``s = H * W`` tokens; a token's *spatial index* is
``l = y * W + x``. For a query in frame ``i`` at spatial index ``k`` and a key in frame ``j`` at
spatial index ``l``, with ``d = |i - j|``, ``P = 2 ** bit_length(s)`` (the smallest power of two
greater than ``s``) and ``g = bit_length(d)`` (``floor(log2 d) + 1``; 0 for ``d = 0``), the pair is
allowed iff both

* **window**: ``d <= 1`` (neighbouring frames are dense), or ``|k - l| <= max(decay * P / 2**g,
  block_size)``: the window's half-width halves with every doubling of the frame distance, scaled by
  ``decay``, and never falls below one block; and
* **diagonal thinning**: with ``L = P / 2**g`` (the *undecayed* width), ``L >= 128``, or ``d % m ==
  0`` with ``m = floor(128 / L)``: once the undecayed width is narrower than 128 tokens, only every
  m-th frame distance is kept. The threshold is 128 whatever ``block_size`` is, and ``decay`` does
  not enter it (as in the release). The thinning applies at every ``d``: when ``s < 128`` even
  adjacent frames (``d = 1``) can be dropped;

and, with ``sink=True`` (the release's Wan models), every query also attends all of frame 0.
All thresholds are computed exactly (rational arithmetic on ``decay``).

Granularity (what the kernel executes). The video tokens are cut into blocks of ``block_size``
consecutive tokens in row-major (frame-major) order.

* ``"block"`` (default, the release's): the block map is built **per frame pair** ``(i, j)``: the
  pair's ``s x s`` token mask is placed at row offset ``(i*s) % b`` and column offset ``(j*s) % b`` of
  a grid of ``ceil(s/b) x ceil(s/b)`` blocks (tokens beyond that grid are not looked at for this pair);
  in each of those blocks, a key column is *non-empty* if one of the block's ``b`` query rows may attend
  it and *dense* if more than a third of them may; the block is kept iff more than 60% of its non-empty
  columns are dense; kept blocks are OR-ed into the map at block ``((i*s)//b, (j*s)//b)``. When the
  number of video tokens is not a multiple of ``b``, the last (partial) block row and column are dense.
  Kept blocks are computed in full. This is not a superset of the token rule (sparse block corners are
  dropped) nor a subset.
* ``"cover"`` (ours): every block holding at least one allowed pair is computed in full -- the
  smallest block layout that never drops an allowed pair.
* ``"token"``: the blocks of ``"cover"``, masked to the token rule exactly (partial blocks).

Text tokens follow the default text rule (dense), as in the release.

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

__all__ = [
    "RadialRule",
    "radial_token_mask",
    "build_radial_layout",
    "radial_block_mask",
    "radial_half_widths",
    "THINNING_THRESHOLD",
]

GRANULARITIES = ("block", "cover", "token")

#: the undecayed window width below which frame distances are thinned (the release's fixed 128)
THINNING_THRESHOLD = 128


def _keeps_distance(d: int, tokens_per_frame: int) -> bool:
    """The diagonal thinning: whether frame distance ``d`` is kept (module docstring)."""
    width = Fraction(1 << tokens_per_frame.bit_length(), 1 << d.bit_length())  # P / 2**g, undecayed
    if width >= THINNING_THRESHOLD:
        return True
    return d % math.floor(THINNING_THRESHOLD / width) == 0


def radial_half_widths(frames: int, tokens_per_frame: int, decay: float, block_size: int) -> list[int]:
    """The per-frame-distance window of the token rule: ``hw[d]`` for ``d`` in ``[0, frames)``.

    ``hw[d] = -1`` means no key of a frame at distance ``d`` is allowed (thinned out); otherwise keys
    with ``|k - l| <= hw[d]`` are (``s - 1`` for a dense frame pair). The sink is not included. See the
    module docstring.
    """
    s = tokens_per_frame
    p = 1 << s.bit_length()
    dec = Fraction(decay)
    out = []
    for d in range(frames):
        if not _keeps_distance(d, s):
            out.append(-1)
        elif d <= 1:
            out.append(s - 1)
        else:
            width = max(dec * p / (1 << d.bit_length()), Fraction(block_size))
            out.append(min(s - 1, math.floor(width)))
    return out


def _band_pairs(s: int, hw: int) -> int:
    """Number of ``(k, l)`` in ``[0, s)^2`` with ``|k - l| <= hw`` (0 for ``hw < 0``)."""
    if hw < 0:
        return 0
    hw = min(hw, s - 1)
    return s + 2 * (hw * s - hw * (hw + 1) // 2)


@dataclasses.dataclass(frozen=True)
class RadialRule(GridRule):
    """The Radial token rule on one grid (exact semantics in the module docstring).

    Args:
        grid: ``(T, H, W)``, three ints >= 1.
        decay: window scale (finite, > 0): 1.0 gives the paper's widths, smaller is sparser.
        block_size: the smallest window half-width (power of two >= 16); also the block size of the
            layouts built for it. The thinning threshold is 128 whatever it is.
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

    def allowed_pairs(self) -> int:
        """Number of (query, key) video token pairs the token rule allows, counted exactly (no ``S x S``)."""
        t, h, w = self.grid
        s = h * w
        band = [_band_pairs(s, int(x)) for x in self.half_widths()]
        total = t * band[0] + sum(2 * (t - d) * band[d] for d in range(1, t))
        if self.sink:  # key frame 0 is allowed in full for every query frame
            total += sum(s * s - band[i] for i in range(t))
        return total

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

    The default (``"block"``) granularity executes :func:`radial_block_mask` instead (module docstring).
    """
    return rule.token_mask(grid_coords(rule.grid, permutation))


def _frame_pair_blocks(s: int, b: int, hw: int, row_offset: int, col_offset: int) -> torch.Tensor:
    """bool ``[m, m]`` (``m = ceil(s / b)``): the blocks one frame pair keeps (module docstring, ``"block"``).

    The pair allows ``|k - l| <= hw`` (``hw >= s - 1``: every pair); its tokens start ``row_offset`` /
    ``col_offset`` tokens into the first block row / column. Counts allowed rows per key column
    directly from the band's bounds.
    """
    m = -(-s // b)
    starts = torch.arange(m)[:, None] * b
    row_lo = (starts - row_offset).clamp(0, s)  # [m, 1]: local query rows [row_lo, row_hi) of block row a
    row_hi = (starts + b - row_offset).clamp(0, s)
    cols = (torch.arange(m)[:, None] * b - col_offset + torch.arange(b)[None, :])  # [m, b]: local key index
    valid = (cols >= 0) & (cols < s)
    lo = torch.maximum(row_lo[:, :, None], (cols - hw)[None])  # [m(a), m(c), b]
    hi = torch.minimum(row_hi[:, :, None], (cols + hw + 1)[None])
    count = (hi - lo).clamp(min=0) * valid[None]
    nonempty = (count > 0).sum(-1)
    dense = (3 * count > b).sum(-1)  # more than a third of the block's b rows
    return 5 * dense > 3 * nonempty  # more than 60% of the non-empty columns


def radial_block_mask(rule: RadialRule) -> torch.Tensor:
    """bool ``[NB, NB]`` (``NB = ceil(N / block_size)``): the blocks the release's block selection keeps.

    See the module docstring (``granularity="block"``); row-major token order. Built from per-frame-pair
    counts, never an ``N x N`` tensor; frame pairs with the same window and block offsets share one result.
    """
    t, h, w = rule.grid
    s, b = h * w, rule.block_size
    n = t * s
    nb = -(-n // b)
    hw = [int(x) for x in rule.half_widths()]
    out = torch.zeros(nb, nb, dtype=torch.bool)
    memo: dict[tuple, torch.Tensor] = {}
    for i in range(t):
        for j in range(t):
            width = s if rule.sink and j == 0 else hw[abs(i - j)]
            if width < 0:
                continue
            key = (min(width, s), (i * s) % b, (j * s) % b)
            blocks = memo.get(key)
            if blocks is None:
                blocks = memo[key] = _frame_pair_blocks(s, b, *key)
            r0, c0 = (i * s) // b, (j * s) // b
            r1, c1 = min(nb, r0 + blocks.shape[0]), min(nb, c0 + blocks.shape[1])
            out[r0:r1, c0:c1] |= blocks[:r1 - r0, :c1 - c0]
    if n % b:
        out[n // b:, :] = True
        out[:, n // b:] = True
    return out


def build_radial_layout(rule: RadialRule, permutation: torch.Tensor | None = None, *, granularity: str = "block",
                        device: torch.device | str | None = None) -> BlockLayout:
    """Block layout of ``rule`` over the video tokens (blocks of ``rule.block_size``); not cached (the method caches).

    Args:
        rule: the validated rule.
        permutation: the token order (``TokenLayout.permutation``; ``None`` = row-major, the release's).
            ``"block"`` is defined on row-major blocks only.
        granularity: ``"block"`` (default): the release's block selection (:func:`radial_block_mask`),
            full blocks; ``"cover"``: every block pair holding an allowed pair, full blocks; ``"token"``:
            the ``"cover"`` blocks masked to the token rule.
        device: device of the layout (default CPU).

    Raises:
        ValueError: an unknown granularity; ``"block"`` with a permutation; ``"block"`` on a grid where
            the release's selection leaves a query block with no key block (frames much smaller than a
            block: use ``"cover"`` or a smaller ``block_size``).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    n = rule.grid[0] * rule.grid[1] * rule.grid[2]
    if granularity == "block":
        if permutation is not None:
            raise ValueError("granularity='block' (the release's block selection) is defined on row-major blocks; "
                             "got a token permutation: use granularity='cover' or 'token'")
        mask = radial_block_mask(rule)
        empty = (~mask.any(1)).nonzero().flatten()
        if empty.numel():
            raise ValueError(
                f"Radial's block selection (granularity='block') keeps no key block for query block "
                f"{int(empty[0])} on grid {rule.grid} with block_size {rule.block_size} (frames of "
                f"{rule.grid[1] * rule.grid[2]} tokens are too small for it); use granularity='cover' or 'token', "
                "or a smaller block_size")
        return BlockLayout.from_block_mask(mask[None, None].to(device or "cpu"), rule.block_size, rule.block_size,
                                           n, n)
    return build_grid_layout(rule, grid_coords(rule.grid, permutation), rule.block_size, rule.block_size,
                             granularity="block" if granularity == "cover" else "token", device=device)


if __name__ == "__main__":  # python -m accel.patterns.radial [options]: draw a small mask and its block map
    import sys

    from accel.patterns.draw import main

    sys.exit(main(pattern="radial"))

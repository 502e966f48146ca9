"""Generalized Neighborhood Attention (GNA) on a (T, H, W) grid, with NATTEN 0.21's rules.

Reference: A. Hassani et al., "Generalized Neighborhood Attention: Multi-dimensional Sparse
Attention at the Speed of Light", 2025 (arXiv 2504.16922), as implemented in NATTEN 0.21
(https://github.com/SHI-Labs/NATTEN). This module is written from the published rules, not from
NATTEN's code.

The rule is a product over the axes ``(t, y, x)``: a query attends a key iff, on every axis, the
key's coordinate lies in the query's *axis neighbourhood*. On one axis of length ``n`` with window
``w``, stride ``s``, dilation ``d`` and a causal flag:

* **Dilation** splits the axis into ``d`` interleaved groups (coordinates ``x`` with the same
  ``x mod d``); a query attends only keys of its own group. Inside a group, coordinates are counted
  in the group: ``xg = x // d``, and the group's length is ``ng = ceil((n - x mod d) / d)``.
* **Non-causal**: ``L = w // 2``, ``lead = min((xg // s) * s + s // 2, ng - 1)``,
  ``start = clamp(lead - L, 0, ng - w)``; the keys are the group coordinates ``[start, start + w)``.
  The window is *shifted* to stay inside the axis, never truncated, so every query sees exactly
  ``w`` keys on the axis. Queries in one stride group (same ``xg // s``) share a window; ``s = w``
  gives blocked (non-overlapping window) attention, ``s = 1`` classic neighbourhood attention.
* **Causal**: ``lead = min((xg // s) * s + s - 1, ng - 1)``; the keys are the group coordinates
  ``[max(lead - w + 1, 0), xg]`` (never a key after the query).
* ``w = -1`` means the whole axis (the group's full length ``ng``); with ``causal`` it means all
  keys up to the query.
* An axis of length 1 imposes nothing (its parameters are ignored), so image grids ``(1, H, W)``
  may be given 3-D parameters.

Valid parameters on an axis of length ``n > 1``: ``w == -1`` or ``2 <= w`` with ``w * d <= n``;
``1 <= s <= w`` (any ``s >= 1`` when ``w == -1``); ``1 <= d <= n``.

Block layouts: the rule re-embeds each axis so that dilation groups are contiguous ranges
(``x -> (x mod d) * ceil(n / d) + x // d``); in that space a neighbourhood is an interval, so box
tests are exact and a tiled token order (:mod:`accel.patterns.tiling`) makes most blocks full.

Draw it: ``python -m accel.patterns.neighborhood`` (``--help`` for the options).
"""

from __future__ import annotations

import dataclasses

import torch

from accel.grid import is_int
from accel.kernels import BlockLayout

from .blocks import GridRule, build_grid_layout

__all__ = [
    "NeighborhoodRule",
    "neighborhood_axis_bounds",
    "neighborhood_token_mask",
    "build_neighborhood_layout",
    "normalize_per_axis",
]

_AXES = ("T", "H", "W")
_BIG = 1 << 40


def normalize_per_axis(name: str, value, *, default_t, kind: type = int) -> tuple:
    """Turn an int/bool or a 2- or 3-tuple into a ``(T, H, W)`` tuple.

    A scalar applies to all three axes; a 2-tuple gives ``(H, W)`` and ``default_t`` for T; a
    3-tuple gives ``(T, H, W)``. Raises ``ValueError`` naming ``name`` for anything else.
    """
    ok = (lambda v: isinstance(v, bool)) if kind is bool else is_int
    if ok(value):
        return (value, value, value)
    if isinstance(value, (tuple, list)) and len(value) in (2, 3) and all(ok(v) for v in value):
        return tuple(value) if len(value) == 3 else (default_t, *value)
    what, article = ("bool", "a") if kind is bool else ("int", "an")
    raise ValueError(f"{name} must be {article} {what} or a tuple of 2 (H, W) or 3 (T, H, W) {what}s, got {value!r}")


def _check_axis(axis: str, n: int, w: int, s: int, d: int) -> None:
    if n == 1:
        return
    if not (1 <= d <= n):
        raise ValueError(f"dilation on axis {axis} must be in [1, {n}] (axis length {n}), got {d}")
    if w == -1:
        if s < 1:
            raise ValueError(f"stride on axis {axis} must be >= 1, got {s}")
        return
    if w < 2:
        raise ValueError(f"window on axis {axis} must be -1 (whole axis) or >= 2, got {w}")
    if w * d > n:
        raise ValueError(
            f"window * dilation on axis {axis} must be <= the axis length {n}: window={w}, dilation={d} "
            f"(allowed window: 2..{n // d} or -1)"
        )
    if not (1 <= s <= w):
        raise ValueError(f"stride on axis {axis} must be in [1, window={w}], got {s}")


def neighborhood_axis_bounds(n: int, window: int, stride: int = 1, dilation: int = 1, causal: bool = False
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query neighbourhood on one axis, as absolute coordinates.

    Args:
        n: axis length (>= 1).
        window: ``w`` (-1 = whole axis), stride ``s``, dilation ``d``, causal flag: see the module
            docstring for the exact rule and the valid ranges (checked; ``ValueError`` otherwise).

    Returns:
        int64 ``(lo, hi)``, each ``[n]``: query ``x`` attends exactly the keys ``k`` with
        ``lo[x] <= k <= hi[x]`` and ``k % d == x % d``.
    """
    _check_axis("axis", n, window, stride, dilation)
    return axis_bounds_unchecked(n, window, stride, dilation, causal)


def axis_bounds_unchecked(n: int, window: int, stride: int = 1, dilation: int = 1, causal: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`neighborhood_axis_bounds` without the parameter check, so that also ``window == 1``
    (a query sees only its own stride group's single coordinate) is computed by the same formulas;
    the tile-level rules of :mod:`accel.patterns.tiled` use it with windows counted in tiles."""
    x = torch.arange(n, dtype=torch.int64)
    if n == 1:
        return x.clone(), x.clone()
    d, s = dilation, stride
    g, xg = x % d, x // d
    ng = (n - g + d - 1) // d
    w = ng if window == -1 else torch.full_like(x, window)
    if causal:
        lead = torch.minimum((xg // s) * s + s - 1, ng - 1)
        start = (lead - w + 1).clamp_min(0)
        end = xg
    else:
        lead = torch.minimum((xg // s) * s + s // 2, ng - 1)
        start = torch.minimum((lead - w // 2).clamp_min(0), ng - w)
        end = start + w - 1
    return g + d * start, g + d * end


@dataclasses.dataclass(frozen=True)
class NeighborhoodRule(GridRule):
    """The GNA rule on one grid (see the module docstring for the exact semantics).

    Args:
        grid: ``(T, H, W)``, three ints >= 1.
        window: per-axis window ``(wT, wH, wW)``; -1 = whole axis.
        stride: per-axis stride (ints >= 1).
        dilation: per-axis dilation (ints >= 1).
        causal: per-axis causal flags (bools).

    Parameters are validated strictly (``ValueError`` naming the axis, the value and the allowed
    range); use :meth:`clamped` to fit oversized windows to a grid first.
    """

    grid: tuple[int, int, int]
    window: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)
    dilation: tuple[int, int, int] = (1, 1, 1)
    causal: tuple[bool, bool, bool] = (False, False, False)

    feature_axes = (0, 0, 1, 1, 2, 2)
    separable = True  # the rule is a product over axes (see GridRule.axis_mask)

    def __post_init__(self) -> None:
        if not (isinstance(self.grid, tuple) and len(self.grid) == 3 and all(is_int(g) and g >= 1 for g in self.grid)):
            raise ValueError(f"grid must be a tuple of three ints >= 1, got {self.grid!r}")
        for name in ("window", "stride", "dilation"):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 3 and all(is_int(e) for e in v)):
                raise ValueError(f"{name} must be a tuple of three ints (T, H, W), got {v!r}")
        if not (isinstance(self.causal, tuple) and len(self.causal) == 3 and all(isinstance(c, bool) for c in self.causal)):
            raise ValueError(f"causal must be a tuple of three bools (T, H, W), got {self.causal!r}")
        for a in range(3):
            _check_axis(_AXES[a], self.grid[a], self.window[a], self.stride[a], self.dilation[a])

    @classmethod
    def clamped(cls, grid, window, stride=1, dilation=1, causal=False) -> NeighborhoodRule:
        """Build a rule, fitting per-axis windows larger than the grid allows.

        Parameters may be ints or 2-/3-tuples (see :func:`normalize_per_axis`; a 2-tuple leaves T
        whole, ``-1``). On an axis of length ``n > 1``, a window ``w > n // d`` becomes ``n // d``
        (the largest legal window) and the stride becomes ``min(s, w)``. Still raises
        ``ValueError`` for values no clamping can fix (dilation larger than ``n // 2``, window < 2).
        """
        w = normalize_per_axis("window", window, default_t=-1)
        s = normalize_per_axis("stride", stride, default_t=1)
        d = normalize_per_axis("dilation", dilation, default_t=1)
        c = normalize_per_axis("causal", causal, default_t=False, kind=bool)
        grid = tuple(int(g) for g in grid)
        w2, s2 = list(w), list(s)
        for a in range(3):
            n = grid[a]
            if n == 1 or w[a] == -1:
                continue
            if d[a] >= 1 and n // d[a] < 2:
                raise ValueError(
                    f"dilation on axis {_AXES[a]} must leave groups of at least 2 tokens: axis length {n}, "
                    f"dilation {d[a]} (allowed: 1..{n // 2})"
                )
            if d[a] >= 1 and w[a] > n // d[a]:
                w2[a] = n // d[a]
            if w2[a] >= 2:
                s2[a] = min(s[a], w2[a])
        return cls(grid, tuple(w2), tuple(s2), d, c)

    def key(self) -> tuple:
        return ("neighborhood", self.grid, self.window, self.stride, self.dilation, self.causal)

    # ------------------------------------------------------------------ rule space
    def _group_len(self, a: int) -> int:
        return -(-self.grid[a] // self.dilation[a]) if self.grid[a] > 1 else 1

    @property
    def extent(self) -> tuple[int, int, int]:
        return tuple(self.dilation[a] * self._group_len(a) if self.grid[a] > 1 else 1 for a in range(3))

    @property
    def ignored_axes(self) -> tuple[int, ...]:
        return tuple(a for a in range(3)
                     if self.grid[a] == 1 or (self.window[a] == -1 and self.dilation[a] == 1 and not self.causal[a]))

    def rule_coords(self, coords: torch.Tensor) -> torch.Tensor:
        cols = []
        for a in range(3):
            x = coords[..., a]
            if self.grid[a] == 1:
                cols.append(torch.zeros_like(x))
            else:
                d = self.dilation[a]
                cols.append((x % d) * self._group_len(a) + x // d)
        return torch.stack(cols, dim=-1)

    def _axis_tables(self, a: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) over the rule-space axis ``[0, extent)``, holes (no token) marked with lo > hi."""
        ext = self.extent[a]
        lo_r = torch.full((ext,), _BIG, dtype=torch.int64)
        hi_r = torch.full((ext,), -_BIG, dtype=torch.int64)
        n = self.grid[a]
        if n == 1:
            return torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
        lo, hi = neighborhood_axis_bounds(n, self.window[a], self.stride[a], self.dilation[a], self.causal[a])
        x = torch.arange(n)
        d, m = self.dilation[a], self._group_len(a)
        pos = (x % d) * m + x // d
        # lo/hi are absolute coordinates of the query's own group: map them to rule space
        lo_r[pos] = (x % d) * m + lo // d
        hi_r[pos] = (x % d) * m + hi // d
        return lo_r, hi_r

    def query_features(self, coords: torch.Tensor) -> torch.Tensor:
        tables = getattr(self, "_tables_cache", None)
        if tables is None:
            tables = [self._axis_tables(a) for a in range(3)]
            object.__setattr__(self, "_tables_cache", tables)
        cols = []
        for a in range(3):
            lo, hi = tables[a]
            cols += [lo[coords[..., a]], hi[coords[..., a]]]
        return torch.stack(cols, dim=-1)

    def axis_mask(self, a: int, qf_axis: torch.Tensor, kc_axis: torch.Tensor) -> torch.Tensor:
        """The rule on axis ``a`` alone: ``qf_axis[..., :2]`` = (lo, hi) features, ``kc_axis`` key coordinate."""
        return (qf_axis[..., 0] <= kc_axis) & (kc_axis <= qf_axis[..., 1])

    def pair_mask(self, qf: torch.Tensor, kc: torch.Tensor) -> torch.Tensor:
        out = None
        for a in range(3):
            if self.grid[a] == 1:
                continue
            k = kc[..., a]
            m = (qf[..., 2 * a] <= k) & (k <= qf[..., 2 * a + 1])
            out = m if out is None else out & m
        if out is None:
            return torch.ones(torch.broadcast_shapes(qf.shape[:-1], kc.shape[:-1]), dtype=torch.bool)
        return out

    def _sparse_tables(self):
        st = getattr(self, "_sparse_cache", None)
        if st is not None:
            return st
        st = []
        for a in range(3):
            lo, hi = self._axis_tables(a)
            hole = lo > hi
            arrays = {
                "maxhi": torch.where(hole, -_BIG, hi),
                "minlo": torch.where(hole, _BIG, lo),
                "maxlo": torch.where(hole, -_BIG, lo),
                "minhi": torch.where(hole, _BIG, hi),
            }
            st.append({k: _build_sparse(v, k.startswith("max")) for k, v in arrays.items()})
        object.__setattr__(self, "_sparse_cache", st)
        return st

    def box_relation(self, qlo, qhi, klo, khi):
        st = self._sparse_tables()
        any_ = all_ = None
        for a in range(3):
            if self.grid[a] == 1:
                continue
            q0, q1, k0, k1 = qlo[..., a], qhi[..., a], klo[..., a], khi[..., a]
            t = st[a]
            a_any = (_range_query(t["maxhi"], q0, q1, True) >= k0) & (_range_query(t["minlo"], q0, q1, False) <= k1)
            a_all = (_range_query(t["maxlo"], q0, q1, True) <= k0) & (_range_query(t["minhi"], q0, q1, False) >= k1)
            any_ = a_any if any_ is None else any_ & a_any
            all_ = a_all if all_ is None else all_ & a_all
        if any_ is None:
            shape = torch.broadcast_shapes(qlo.shape[:-1], klo.shape[:-1])
            return torch.ones(shape, dtype=torch.bool), torch.ones(shape, dtype=torch.bool)
        return any_, all_


def _build_sparse(values: torch.Tensor, is_max: bool) -> torch.Tensor:
    """Sparse table ``[levels, n]``: level j holds the max/min over windows of 2**j starting at i."""
    levels = [values]
    n = values.shape[0]
    j = 1
    while (1 << j) <= n:
        prev = levels[-1]
        half = 1 << (j - 1)
        shifted = torch.cat([prev[half:], prev[-1:].expand(half)])
        levels.append(torch.maximum(prev, shifted) if is_max else torch.minimum(prev, shifted))
        j += 1
    return torch.stack(levels)


def _range_query(table: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, is_max: bool) -> torch.Tensor:
    lo, hi = torch.broadcast_tensors(lo, hi)
    length = hi - lo + 1
    level = torch.floor(torch.log2(length.double())).long().clamp(max=table.shape[0] - 1)
    a = table[level, lo]
    b = table[level, hi - (1 << level) + 1]
    return torch.maximum(a, b) if is_max else torch.minimum(a, b)


def neighborhood_token_mask(rule: NeighborhoodRule, permutation: torch.Tensor | None = None) -> torch.Tensor:
    """bool ``[N, N]`` token mask of ``rule`` over the grid's video tokens (tests / tiny sizes only).

    ``permutation`` (int64 ``[N]``, as :class:`accel.TokenLayout`'s) orders the tokens; ``None`` =
    row-major. Computed directly from :func:`neighborhood_axis_bounds` (per-axis tables), not from the
    block machinery.
    """
    t, h, w = rule.grid
    idx = torch.arange(t * h * w) if permutation is None else permutation.to("cpu", torch.int64)
    coords = torch.stack((idx // (h * w), (idx // w) % h, idx % w), dim=1)
    mask = torch.ones(idx.shape[0], idx.shape[0], dtype=torch.bool)
    for a in range(3):
        n = rule.grid[a]
        if n == 1:
            continue
        lo, hi = neighborhood_axis_bounds(n, rule.window[a], rule.stride[a], rule.dilation[a], rule.causal[a])
        q, k = coords[:, a][:, None], coords[:, a][None, :]
        mask &= (lo[q] <= k) & (k <= hi[q]) & ((k - q) % rule.dilation[a] == 0)
    return mask


def build_neighborhood_layout(rule: NeighborhoodRule, permutation: torch.Tensor | None = None, *,
                              block_size: int = 128, device: torch.device | str | None = None) -> BlockLayout:
    """Exact block layout of ``rule`` over the video tokens (built analytically; not cached: the methods cache).

    Args:
        rule: the validated rule (grid and parameters).
        permutation: the token order (``TokenLayout.permutation``; ``None`` = row-major).
        block_size: query and key block size (power of two >= 16).
        device: device of the layout (default CPU).
    """
    t, h, w = rule.grid
    idx = torch.arange(t * h * w) if permutation is None else permutation.to("cpu", torch.int64)
    coords = torch.stack((idx // (h * w), (idx // w) % h, idx % w), dim=1)
    return build_grid_layout(rule, coords, block_size, block_size, device=device)


if __name__ == "__main__":  # python -m accel.patterns.neighborhood [options]: draw a small mask and its block map
    import sys

    from accel.patterns.draw import main

    sys.exit(main(pattern="neighborhood"))

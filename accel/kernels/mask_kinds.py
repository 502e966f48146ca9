"""Token-level predicates of partial blocks: bit-packed tiles and analytic coordinate rules.

A partial block of a :class:`~accel.kernels.BlockLayout` needs a per-pair test. It comes in one of
three kinds (the layout's :attr:`~accel.kernels.BlockLayout.partial_kind`):

* ``"tiles"``: an arbitrary boolean tile per block (the layout's ``tiles``); the kernel reads it
  bit-packed (:func:`pack_tile_bits`, 32 key columns per int32 word), one load per 32 pairs;
* ``"window"`` (:class:`WindowPredicate`): per-query window bounds on each coordinate axis and a
  per-key coordinate; the pair is allowed when the key's coordinate lies in the query's window on
  every axis (Neighborhood / NATTEN windows, any token order);
* ``"ellipsoid"`` (:class:`EllipsoidPredicate`): per-token coordinates, integer axis weights and a
  per-query limit; the pair is allowed when ``sum_a w_a * (q_a - k_a)^2 <= limit`` (CLEAR's local
  disc or ellipsoid; :func:`ellipsoid_form` turns radii into exact integer weights).

Analytic predicates are evaluated from coordinates in the kernel's registers; nothing per block is
loaded. They cover a range of query positions ``[q_start, q_start + n_q)`` and key positions
``[k_start, k_start + n_k)`` (the grid tokens of a joint text + video sequence); a pair whose query or
key lies outside its range is unconstrained (allowed). All arithmetic is int32 and exact; the
constructors check that no intermediate value can overflow, so the kernel, FlexAttention's
``mask_mod`` and :meth:`evaluate` agree on every pair.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from fractions import Fraction

import torch

__all__ = [
    "EllipsoidPredicate",
    "WindowPredicate",
    "ellipsoid_form",
    "pack_tile_bits",
    "unpack_tile_bits",
]

_INT32_MAX = 2**31 - 1
_WINDOW_LIMIT = 2**30
MAX_AXES = 3


def pack_tile_bits(tiles: torch.Tensor) -> torch.Tensor:
    """bool ``[n, q_block, kv_block]`` -> int32 ``[n, q_block, ceil(kv_block / 32)]``.

    Bit ``j % 32`` of word ``j // 32`` in row ``i`` is ``tiles[t, i, j]`` (two's complement: bit 31 is
    the sign bit). Columns past ``kv_block`` in the last word are 0.
    """
    n, rows, cols = tiles.shape
    words = -(-cols // 32)
    weights = torch.bitwise_left_shift(torch.ones(32, dtype=torch.int64, device=tiles.device),
                                       torch.arange(32, device=tiles.device))
    out = torch.empty(n, rows, words, dtype=torch.int32, device=tiles.device)
    step = max(1, (1 << 22) // max(1, rows * words * 32))  # bounded int64 temporaries
    for s in range(0, n, step):
        chunk = tiles[s:s + step]
        padded = torch.zeros(chunk.shape[0], rows, words * 32, dtype=torch.int64, device=tiles.device)
        padded[..., :cols] = chunk.to(torch.int64)
        packed = (padded.view(-1, rows, words, 32) * weights).sum(-1)
        out[s:s + step] = torch.where(packed > _INT32_MAX, packed - 2**32, packed).to(torch.int32)
    return out


def unpack_tile_bits(bits: torch.Tensor, kv_block: int) -> torch.Tensor:
    """Inverse of :func:`pack_tile_bits`: int32 ``[n, q_block, words]`` -> bool ``[n, q_block, kv_block]``."""
    shifts = torch.arange(32, device=bits.device, dtype=torch.int32)
    b = torch.bitwise_and(torch.bitwise_right_shift(bits[..., None], shifts), 1).bool()
    return b.reshape(*bits.shape[:2], -1)[..., :kv_block].contiguous()


def _check_coords(name: str, t, n_axes: int | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.dtype != torch.int32:
        raise ValueError(f"{name} must be an int32 tensor [n, axes], got "
                         f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    if not 1 <= t.shape[1] <= MAX_AXES or t.shape[0] < 1:
        raise ValueError(f"{name} must have shape [n >= 1, axes in 1..{MAX_AXES}], got {tuple(t.shape)}")
    if n_axes is not None and t.shape[1] != n_axes:
        raise ValueError(f"{name} has {t.shape[1]} axes, expected {n_axes} (like the other coordinate tensors)")
    return t


def _check_start(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


def _in_range(pos: torch.Tensor, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inside, clamped local index) for absolute positions ``pos`` and the range ``[start, start + n)``."""
    local = pos - start
    inside = (local >= 0) & (local < n)
    return inside, local.clamp(0, n - 1)


class _Predicate:
    """Shared behaviour of the analytic predicates (frozen dataclasses below)."""

    kind: str
    q_start: int
    k_start: int
    k_coord: torch.Tensor
    #: the per-query tensor whose length is n_q, and every tensor field (moved by :meth:`to`)
    _q_field: str
    _tensor_fields: tuple[str, ...]

    @property
    def n_q(self) -> int:
        """Number of query positions the predicate covers."""
        return int(getattr(self, self._q_field).shape[0])

    @property
    def n_k(self) -> int:
        """Number of key positions the predicate covers."""
        return int(self.k_coord.shape[0])

    @property
    def n_axes(self) -> int:
        """Number of coordinate axes (1..3)."""
        return int(self.k_coord.shape[1])

    @property
    def device(self) -> torch.device:
        """Device of the predicate's tensors."""
        return self.k_coord.device

    def to(self, device):
        """The same predicate with its tensors on ``device``."""
        device = torch.device(device)
        return dataclasses.replace(self, **{n: getattr(self, n).to(device) for n in self._tensor_fields})

    def _pairs(self, ql: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """bool, the broadcast of ``rows`` and ``cols`` (absolute query / key positions, any int dtype):
        may query ``rows`` attend key ``cols``? Positions outside the covered ranges are allowed."""
        q_in, ql = _in_range(rows.long(), self.q_start, self.n_q)
        k_in, kl = _in_range(cols.long(), self.k_start, self.n_k)
        return self._pairs(ql, kl) | ~q_in | ~k_in

    def dense(self, q_len: int, kv_len: int) -> torch.Tensor:
        """bool ``[q_len, kv_len]``: :meth:`evaluate` on every pair (tests and small sizes only)."""
        rows = torch.arange(q_len, device=self.device)[:, None]
        cols = torch.arange(kv_len, device=self.device)[None, :]
        return self.evaluate(rows, cols)

    def check_lengths(self, q_len: int, kv_len: int) -> None:
        """Raise ``ValueError`` unless the covered ranges lie inside ``[0, q_len)`` and ``[0, kv_len)``."""
        if self.q_start + self.n_q > q_len:
            raise ValueError(f"{self.kind} predicate covers queries [{self.q_start}, {self.q_start + self.n_q}) "
                             f"but q_len is {q_len}")
        if self.k_start + self.n_k > kv_len:
            raise ValueError(f"{self.kind} predicate covers keys [{self.k_start}, {self.k_start + self.n_k}) "
                             f"but kv_len is {kv_len}")


@dataclasses.dataclass(frozen=True, eq=False)
class WindowPredicate(_Predicate):
    """Per-axis windows: query ``i`` may attend key ``j`` iff, on every axis ``a``,
    ``q_lo[i - q_start, a] <= k_coord[j - k_start, a] <= q_hi[i - q_start, a]``.

    Args:
        q_lo: int32 ``[n_q, A]`` (``1 <= A <= 3``): the lowest allowed key coordinate per query and axis.
        q_hi: int32 ``[n_q, A]``: the highest allowed key coordinate (inclusive; ``q_hi < q_lo`` on
            some axis means the query attends no covered key).
        k_coord: int32 ``[n_k, A]``: the coordinate of each key.

    All values must lie in ``(-2**30, 2**30)`` (the kernel compares differences in 32 bits).
        q_start: sequence position of the first covered query (default 0).
        k_start: sequence position of the first covered key (default 0).

    A pair whose query is outside ``[q_start, q_start + n_q)`` or whose key is outside
    ``[k_start, k_start + n_k)`` is allowed (e.g. text tokens of a joint sequence). Dilated windows
    become intervals once each dilation group is laid out contiguously along its axis (as
    ``NeighborhoodRule.rule_coords`` does), so pass those coordinates.

    Example: a 1-D window of radius 2 over 100 tokens::

        x = torch.arange(100, dtype=torch.int32)[:, None]
        WindowPredicate(q_lo=x - 2, q_hi=x + 2, k_coord=x)
    """

    q_lo: torch.Tensor
    q_hi: torch.Tensor
    k_coord: torch.Tensor
    q_start: int = 0
    k_start: int = 0
    kind = "window"
    _q_field = "q_lo"
    _tensor_fields = ("q_lo", "q_hi", "k_coord")

    def __post_init__(self) -> None:
        k = _check_coords("k_coord", self.k_coord)
        _check_coords("q_lo", self.q_lo, k.shape[1])
        _check_coords("q_hi", self.q_hi, k.shape[1])
        if self.q_lo.shape != self.q_hi.shape:
            raise ValueError(f"q_lo {tuple(self.q_lo.shape)} and q_hi {tuple(self.q_hi.shape)} must have the same shape")
        if not (self.q_lo.device == self.q_hi.device == k.device):
            raise ValueError("q_lo, q_hi and k_coord must share a device")
        for name in ("q_lo", "q_hi", "k_coord"):  # the kernel compares differences in 32 bits
            t = getattr(self, name)
            if bool((t.abs() >= _WINDOW_LIMIT).any()):
                raise ValueError(f"{name} values must lie in (-2**30, 2**30), got a value of magnitude "
                                 f"{int(t.abs().max())}")
        _check_start("q_start", self.q_start)
        _check_start("k_start", self.k_start)

    def _pairs(self, ql, kl):
        lo, hi, kc = self.q_lo[ql], self.q_hi[ql], self.k_coord[kl]
        return ((lo <= kc) & (kc <= hi)).all(-1)

    def box_relation(self, q_rows: torch.Tensor, k_cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For query blocks ``q_rows`` int64 ``[NQ, qb]`` and key blocks ``k_cols`` ``[NK, kb]`` (absolute
        positions, -1 = padding slot): bool ``(any, all)`` ``[NQ, NK]``. ``all`` is exact (every in-range
        pair allowed); ``any`` is conservative (True whenever some pair may be allowed)."""
        qlo, qhi, q_free = _block_stats(q_rows, self.q_start, self.n_q, (self.q_lo, self.q_hi))
        (klo, khi), k_free = _block_minmax(k_cols, self.k_start, self.n_k, self.k_coord)
        lo_min, lo_max = qlo
        hi_min, hi_max = qhi
        all_ = ((lo_max[:, None] <= klo[None]) & (khi[None] <= hi_min[:, None])).all(-1)
        any_ = ((lo_min[:, None] <= khi[None]) & (klo[None] <= hi_max[:, None])).all(-1)
        return any_ | q_free[:, None] | k_free[None], all_ | _all_free(q_rows, k_cols, self)


@dataclasses.dataclass(frozen=True, eq=False)
class EllipsoidPredicate(_Predicate):
    """Weighted squared distance: query ``i`` may attend key ``j`` iff
    ``sum_a weights[a] * (q_coord[i - q_start, a] - k_coord[j - k_start, a])^2 <= limit[i - q_start]``.

    Args:
        q_coord: int32 ``[n_q, A]`` (``1 <= A <= 3``): query coordinates.
        k_coord: int32 ``[n_k, A]``: key coordinates.
        weights: ``A`` ints >= 0 (an axis of weight 0 is ignored).
        limit: int32 ``[n_q]``, the largest allowed weighted squared distance per query (-1 allows
            nothing), or one int for every query.
        q_start, k_start: sequence positions of the first covered query / key (default 0).

    Pairs outside the covered ranges are allowed (as for :class:`WindowPredicate`). Every weighted
    sum the coordinates can produce must stay below 2**31 (checked). :func:`ellipsoid_form` gives the
    weights and limit of ``sum_a ((q_a - k_a) / r_a)^2 < 1`` exactly.

    Example: CLEAR's disc of radius 8 on a 1 x 32 x 32 grid (row-major tokens)::

        yx = torch.stack(torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij"), -1)
        yx = yx.reshape(-1, 2).to(torch.int32)
        weights, limit = ellipsoid_form([8, 8])  # (1, 1), 63: dy^2 + dx^2 < 64
        EllipsoidPredicate(q_coord=yx, k_coord=yx, weights=weights, limit=limit)
    """

    q_coord: torch.Tensor
    k_coord: torch.Tensor
    weights: tuple[int, ...]
    limit: torch.Tensor | int
    q_start: int = 0
    k_start: int = 0
    kind = "ellipsoid"
    _q_field = "q_coord"
    _tensor_fields = ("q_coord", "k_coord", "limit")

    def __post_init__(self) -> None:
        k = _check_coords("k_coord", self.k_coord)
        q = _check_coords("q_coord", self.q_coord, k.shape[1])
        if q.device != k.device:
            raise ValueError("q_coord and k_coord must share a device")
        w = tuple(self.weights) if isinstance(self.weights, (tuple, list)) else None
        if w is None or len(w) != k.shape[1] or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                         for x in w):
            raise ValueError(f"weights must be {k.shape[1]} ints >= 0 (one per axis), got {self.weights!r}")
        object.__setattr__(self, "weights", w)
        limit = self.limit
        if isinstance(limit, int) and not isinstance(limit, bool):
            if not -1 <= limit <= _INT32_MAX:
                raise ValueError(f"limit must be in [-1, 2**31 - 1], got {limit}")
            limit = torch.full((q.shape[0],), limit, dtype=torch.int32, device=q.device)
        if not isinstance(limit, torch.Tensor) or limit.dtype != torch.int32 or limit.shape != (q.shape[0],):
            raise ValueError(f"limit must be an int or an int32 tensor [n_q={q.shape[0]}], got {self.limit!r}")
        if limit.device != q.device:
            raise ValueError(f"limit is on {limit.device}, q_coord on {q.device}")
        if bool((limit < -1).any()):
            raise ValueError("limit values must be >= -1")
        object.__setattr__(self, "limit", limit.contiguous())
        _check_start("q_start", self.q_start)
        _check_start("k_start", self.k_start)
        span = torch.maximum(q.amax(0).long() - k.amin(0).long(), k.amax(0).long() - q.amin(0).long())
        worst = sum(wa * int(s) ** 2 for wa, s in zip(w, span.tolist(), strict=True))
        if worst > _INT32_MAX or any(wa * int(s) ** 2 > _INT32_MAX for wa, s in zip(w, span.tolist(), strict=True)):
            raise ValueError(
                f"weights {w} with coordinate spans {span.tolist()} give weighted distances up to {worst}, over "
                "2**31 - 1 (int32 in the kernel); use smaller weights or a bit-packed tile layout"
            )

    def _pairs(self, ql, kl):
        d = self.q_coord[ql].long() - self.k_coord[kl].long()
        w = torch.tensor(self.weights, dtype=torch.int64, device=d.device)
        return (d * d * w).sum(-1) <= self.limit[ql].long()

    def box_relation(self, q_rows: torch.Tensor, k_cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`WindowPredicate.box_relation`; both answers are conservative here (``all`` True
        only when every pair is allowed, ``any`` True whenever some pair may be)."""
        (qmin, qmax), (lmin, lmax), q_free = _block_stats(q_rows, self.q_start, self.n_q,
                                                          (self.q_coord, self.limit[:, None]))
        (kmin, kmax), k_free = _block_minmax(k_cols, self.k_start, self.n_k, self.k_coord)
        w = torch.tensor(self.weights, dtype=torch.int64, device=qmin.device)
        gap = torch.clamp(torch.maximum(kmin[None] - qmax[:, None], qmin[:, None] - kmax[None]), min=0)
        far = torch.maximum(kmax[None] - qmin[:, None], qmax[:, None] - kmin[None])
        any_ = (gap * gap * w).sum(-1) <= lmax[:, 0][:, None]
        all_ = (far * far * w).sum(-1) <= lmin[:, 0][:, None]
        return any_ | q_free[:, None] | k_free[None], all_ | _all_free(q_rows, k_cols, self)


def _block_minmax(pos: torch.Tensor, start: int, n: int, values: torch.Tensor):
    """Per block (row of ``pos``, -1 = padding slot): (min, max) of ``values`` over its covered
    positions, and whether the block has an uncovered (unconstrained) real position."""
    real = pos >= 0
    inside, local = _in_range(pos.clamp_min(0), start, n)
    v = values[local].long()  # [NB, b, A]
    cov = (inside & real)[..., None]
    big = torch.iinfo(torch.int64).max // 4
    vmin = torch.where(cov, v, big).amin(1)
    vmax = torch.where(cov, v, -big).amax(1)
    free = (real & ~inside).any(1)
    return (vmin, vmax), free


def _block_stats(pos, start, n, tensors):
    """:func:`_block_minmax` of several per-query tensors: ``((min, max), ..., free)``."""
    out = []
    free = None
    for t in tensors:
        mm, free = _block_minmax(pos, start, n, t)
        out.append(mm)
    return (*out, free)


def _all_free(q_rows, k_cols, pred) -> torch.Tensor:
    """[NQ, NK]: True where every real query of the block or every real key of the block is uncovered."""
    q_inside, _ = _in_range(q_rows.clamp_min(0), pred.q_start, pred.n_q)
    k_inside, _ = _in_range(k_cols.clamp_min(0), pred.k_start, pred.n_k)
    q_all_free = ~((q_rows >= 0) & q_inside).any(1)
    k_all_free = ~((k_cols >= 0) & k_inside).any(1)
    return q_all_free[:, None] | k_all_free[None]


def ellipsoid_form(radii: Sequence[float | int | Fraction | None]) -> tuple[tuple[int, ...], int]:
    """Exact integer form of ``sum_a ((q_a - k_a) / r_a)^2 < 1`` for integer coordinates.

    Args:
        radii: one radius per axis (finite numbers > 0, taken at their exact binary value), or
            ``None`` for an axis that is not limited.

    Returns:
        ``(weights, limit)`` such that, for all integer coordinate differences ``d``,
        ``sum_a (d_a / r_a)^2 < 1`` iff ``sum_a weights[a] * d_a^2 <= limit``.

    Raises:
        ValueError: a radius is not a finite number > 0 (or None), every radius is None, or the
            exact integers exceed int32 (e.g. radii like 0.1 whose binary value has a huge
            denominator); use a bit-packed tile layout then.

    Example: CLEAR's ellipsoid with ``radius = 12.5`` tokens and ``radius_t = 3`` frames over
    ``(t, y, x)``: ``ellipsoid_form([3, 12.5, 12.5])`` is ``((625, 36, 36), 5624)``.
    """
    fracs = []
    for r in radii:
        if r is None:
            fracs.append(None)
            continue
        if isinstance(r, bool) or not isinstance(r, (int, float, Fraction)) or not math.isfinite(r) or r <= 0:
            raise ValueError(f"radii must be finite numbers > 0 or None, got {r!r}")
        fracs.append(1 / Fraction(r) ** 2)
    if all(f is None for f in fracs):
        raise ValueError("ellipsoid_form needs at least one finite radius")
    den = 1
    for f in fracs:
        if f is not None:
            den = den * f.denominator // math.gcd(den, f.denominator)
    weights = tuple(0 if f is None else int(f * den) for f in fracs)
    limit = den - 1
    if limit > _INT32_MAX or max(weights) > _INT32_MAX:
        raise ValueError(f"radii {list(radii)} need integers beyond int32 (weights {weights}, limit {limit}); "
                         "use a bit-packed tile layout instead")
    return weights, limit

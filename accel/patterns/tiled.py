"""Tile-aligned patterns: rules decided between whole tiles, on a grid padded to whole tiles.

A block-sparse kernel runs a *full* block (every query/key pair allowed) about 2.4x faster than a
*partial* one (a per-token mask; measured on an H200, ``shared/notes/gpu-h200.md``). Token-exact
local windows (NATTEN's neighbourhoods, CLEAR's disc) cut through most blocks they touch, whatever
the token order. The patterns here are instead decided between whole *tiles*: the grid ``(T, H, W)``
is cut into boxes of ``tile = (tt, th, tw)`` tokens with ``tt * th * tw`` equal to the kernel's
block size, each tile is laid out as exactly one block, and a query tile either attends a key tile
entirely or not at all. Every visited block is then full, except that tiles cut by the grid border
hold fewer real tokens: the grid is padded up to whole tiles and the padding positions are
excluded from the keys by a per-block *valid-key count* (no per-token mask).

This is the construction of Sliding Tile Attention (P. Zhang et al., "Fast Video Generation with
Sliding Tile Attention", ICML 2025, arXiv 2502.04507: windows moved tile by tile, tiles of 6x8x8
tokens, "only dense and empty blocks") and of NATTEN's fully block-sparse Generalized Neighborhood
Attention (A. Hassani et al., arXiv 2504.16922: stride equal to the tile shape). Written from the
papers' descriptions; no code is taken from either project.

Padded tile order (:class:`PaddedTiles`). The grid is padded to ``(Tp, Hp, Wp)``, the multiples of
the tile at or above ``(T, H, W)``. Sequence position ``p`` belongs to tile ``p // volume`` (tiles
in row-major order of their tile coordinates); inside a tile the real tokens come first, in
row-major order, then its padding positions. So block ``i`` of the sequence is tile ``i`` and its
valid keys are a prefix of the block.

Rules (:class:`TileRule`): a predicate on pairs of tile coordinates. A token attends a token iff
the rule allows their tiles; padding positions are never keys. Three rules are defined here:

* :class:`TiledNeighborhoodRule` -- NATTEN's axis rule applied to tile coordinates, with windows
  and strides counted in tiles;
* :class:`TiledClearLocalRule` with ``mode="any"`` -- the exact CLEAR disc/ellipsoid *rounded up to
  whole tiles*: a tile pair is attended iff some real token pair of the two tiles is within the
  radius (like Radial attention's block granularity, arXiv 2506.19852);
* :class:`TiledClearLocalRule` with ``mode="centre"`` -- the CLEAR inequality evaluated between the
  tiles' centres: a tile-aligned disc/ellipsoid.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch

from accel.kernels import BlockLayout, validate_block_size

from .clear_local import ClearLocalRule, check_radius
from .joint import layout_from_kinds
from .neighborhood import axis_bounds_unchecked

__all__ = [
    "PaddedTiles",
    "TileRule",
    "TiledNeighborhoodRule",
    "TiledClearLocalRule",
    "CLEAR_TILE_MODES",
    "build_tile_layout",
    "tile_layout_counts",
    "padded_tile_candidates",
    "fitting_tiles",
    "aligned_tiles",
    "ball_tile",
]

CLEAR_TILE_MODES = ("any", "centre")
_PAIRS_PER_CHUNK = 1 << 22


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_triple(name: str, value, minimum: int = 1) -> tuple[int, int, int]:
    if not (isinstance(value, tuple) and len(value) == 3 and all(_is_int(v) and v >= minimum for v in value)):
        raise ValueError(f"{name} must be a tuple of three ints >= {minimum} (T, H, W), got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class PaddedTiles:
    """A ``(T, H, W)`` grid cut into tiles of ``(tt, th, tw)`` tokens, padded up to whole tiles.

    Args:
        grid: ``(T, H, W)``, three ints >= 1.
        tile: ``(tt, th, tw)``, three ints >= 1 (for a block layout their product must equal the
            block size).

    See the module docstring for the order of positions.
    """

    grid: tuple[int, int, int]
    tile: tuple[int, int, int]

    def __post_init__(self) -> None:
        _check_triple("grid", self.grid)
        _check_triple("tile", self.tile)

    @property
    def tile_grid(self) -> tuple[int, int, int]:
        """Number of tiles per axis, ``ceil(n / tile)``."""
        return tuple(-(-n // t) for n, t in zip(self.grid, self.tile, strict=True))

    @property
    def padded_grid(self) -> tuple[int, int, int]:
        """``(Tp, Hp, Wp)``: the grid rounded up to whole tiles."""
        return tuple(m * t for m, t in zip(self.tile_grid, self.tile, strict=True))

    @property
    def volume(self) -> int:
        """Positions per tile, ``tt * th * tw``."""
        return math.prod(self.tile)

    @property
    def num_tiles(self) -> int:
        """Number of tiles (= blocks of the padded sequence)."""
        return math.prod(self.tile_grid)

    @property
    def num_positions(self) -> int:
        """Length of the padded sequence, ``num_tiles * volume``."""
        return self.num_tiles * self.volume

    @property
    def num_tokens(self) -> int:
        """Real tokens, ``T * H * W``."""
        return math.prod(self.grid)

    def key(self) -> tuple:
        """Hashable identity (grid and tile)."""
        return ("padded_tiles", self.grid, self.tile)

    def tile_coords(self) -> torch.Tensor:
        """int64 ``[num_tiles, 3]``: the tile coordinate of each tile, in sequence (row-major) order."""
        m = self.tile_grid
        idx = torch.arange(self.num_tiles)
        return torch.stack((idx // (m[1] * m[2]), (idx // m[2]) % m[1], idx % m[2]), dim=1)

    def valid_counts(self) -> torch.Tensor:
        """int64 ``[num_tiles]``: real tokens in each tile (>= 1; ``volume`` except at the far borders)."""
        c = self.tile_coords()
        size = torch.tensor(self.tile)
        extent = torch.minimum((c + 1) * size, torch.tensor(self.grid)) - c * size
        return extent.prod(1)

    def real_boxes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """int64 ``([num_tiles, 3], [num_tiles, 3])``: inclusive corners of each tile's real tokens."""
        c = self.tile_coords()
        size = torch.tensor(self.tile)
        lo = c * size
        return lo, torch.minimum(lo + size, torch.tensor(self.grid)) - 1

    def order(self) -> torch.Tensor:
        """int64 ``[num_positions]``: the row-major grid index of the token at each position, -1 for
        padding positions (the module docstring gives the order; a ``TokenLayout.permutation``). Cached."""
        cached = getattr(self, "_order", None)
        if cached is None:
            cached = self._build_order()
            object.__setattr__(self, "_order", cached)
        return cached

    def _build_order(self) -> torch.Tensor:
        tp, hp, wp = self.padded_grid
        t, h, w = self.grid
        tt, th, tw = self.tile
        m = self.tile_grid
        z, y, x = torch.meshgrid(torch.arange(tp), torch.arange(hp), torch.arange(wp), indexing="ij")
        z, y, x = z.reshape(-1), y.reshape(-1), x.reshape(-1)
        tile_id = ((z // tt) * m[1] + y // th) * m[2] + x // tw
        offset = ((z % tt) * th + y % th) * tw + x % tw
        pad = (z >= t) | (y >= h) | (x >= w)
        position_key = (tile_id * 2 + pad.long()) * self.volume + offset
        perm = torch.argsort(position_key)
        index = torch.where(pad, -1, (z * h + y) * w + x)
        return index[perm]

    def token_positions(self) -> torch.Tensor:
        """int64 ``[T*H*W]``: the position of every real token (row-major grid index -> position)."""
        order = self.order()
        pos = torch.empty(self.num_tokens, dtype=torch.int64)
        real = order >= 0
        pos[order[real]] = torch.arange(order.shape[0])[real]
        return pos


class TileRule:
    """A pattern decided between whole tiles of a :class:`PaddedTiles` (see the module docstring).

    Subclasses are frozen dataclasses with a ``tiles`` field; they implement :meth:`tile_mask` and
    :meth:`key`.
    """

    tiles: PaddedTiles

    def tile_mask(self, qt: torch.Tensor, kt: torch.Tensor) -> torch.Tensor:
        """bool, the broadcast of ``qt[..., 0]`` and ``kt[..., 0]``: may query tile ``qt`` attend key
        tile ``kt`` (int64 tile coordinates ``[..., 3]``)?"""
        raise NotImplementedError

    def key(self) -> tuple:
        """Hashable identity of the rule (parameters, grid and tile)."""
        raise NotImplementedError

    @property
    def grid(self) -> tuple[int, int, int]:
        """The token grid ``(T, H, W)``."""
        return self.tiles.grid

    def tile_pairs(self) -> torch.Tensor:
        """bool ``[num_tiles, num_tiles]``: the rule on every (query tile, key tile) pair (cached)."""
        cached = getattr(self, "_tile_pairs", None)
        if cached is not None:
            return cached
        c = self.tiles.tile_coords()
        n = c.shape[0]
        out = torch.empty(n, n, dtype=torch.bool)
        step = max(1, _PAIRS_PER_CHUNK // n)
        for i in range(0, n, step):
            out[i:i + step] = self.tile_mask(c[i:i + step, None, :], c[None, :, :])
        object.__setattr__(self, "_tile_pairs", out)
        return out

    def token_mask(self, coords: torch.Tensor) -> torch.Tensor:
        """bool ``[N, N]``: the rule on every pair of real tokens at grid ``coords`` ``[N, 3]`` (tests
        and tiny sizes only)."""
        tc = coords.to(torch.int64) // torch.tensor(self.tiles.tile)
        return self.tile_mask(tc[:, None, :], tc[None, :, :])


@dataclasses.dataclass(frozen=True)
class TiledNeighborhoodRule(TileRule):
    """NATTEN's neighbourhood rule on tile coordinates: windows and strides counted in whole tiles.

    On each axis with ``m`` tiles, query tile ``i`` attends the key tiles of the (non-dilated)
    NATTEN neighbourhood of ``i`` on an axis of length ``m`` with window ``window[a]`` and stride
    ``stride[a]`` (both in tiles; see :mod:`accel.patterns.neighborhood`): non-causal windows are
    shifted to stay inside the tile grid, never truncated; causal ones end at the query's tile (which
    is attended whole: *tile-causal*, not token-causal).

    In tokens this is GNA with window ``window * tile`` and stride ``stride * tile`` whose windows
    start and end on tile borders. Without causal axes it equals GNA with those token parameters on
    the padded grid, keys restricted to real tokens, whenever GNA's own window starts fall on tile
    borders (``(s*t)//2 - (w*t)//2 == t*(s//2 - w//2)`` on every axis, e.g. odd ``window`` and
    ``stride`` or ``tile == 1``; tests check it); otherwise GNA's windows would start half a tile off
    the borders. ``stride == 1`` tile is GNA's fully block-sparse case (stride equal to the tile).

    Args:
        tiles: the padded tiling of the grid.
        window: per-axis window in tiles, each ``-1`` (the whole axis) or ``1 .. m`` (``m`` tiles on
            that axis); values above ``m`` raise ``ValueError`` (clamp them first).
        stride: per-axis stride in tiles, ``1 .. window`` (any ``>= 1`` for a whole-axis window).
        causal: per-axis causal flags.
    """

    tiles: PaddedTiles
    window: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)
    causal: tuple[bool, bool, bool] = (False, False, False)

    def __post_init__(self) -> None:
        if not isinstance(self.tiles, PaddedTiles):
            raise TypeError(f"tiles must be a PaddedTiles, got {type(self.tiles).__name__}")
        for name in ("window", "stride"):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 3 and all(_is_int(e) for e in v)):
                raise ValueError(f"{name} must be a tuple of three ints (T, H, W) in tiles, got {v!r}")
        if not (isinstance(self.causal, tuple) and len(self.causal) == 3 and all(isinstance(c, bool) for c in self.causal)):
            raise ValueError(f"causal must be a tuple of three bools (T, H, W), got {self.causal!r}")
        for a, axis in enumerate("THW"):
            m, w, s = self.tiles.tile_grid[a], self.window[a], self.stride[a]
            if not (w == -1 or 1 <= w <= m):
                raise ValueError(f"window on axis {axis} must be -1 or in [1, {m}] tiles ({m} tiles of "
                                 f"{self.tiles.tile[a]} on that axis), got {w}")
            if not (s >= 1 and (w == -1 or s <= w)):
                raise ValueError(f"stride on axis {axis} must be in [1, window={w}] tiles, got {s}")

    def key(self) -> tuple:
        return ("tiled_neighborhood", self.tiles.key(), self.window, self.stride, self.causal)

    def axis_bounds(self, a: int) -> tuple[torch.Tensor, torch.Tensor]:
        """int64 ``(lo, hi)`` ``[m]``: the key tiles ``lo[i] .. hi[i]`` of query tile ``i`` on axis ``a``."""
        m, w = self.tiles.tile_grid[a], self.window[a]
        return axis_bounds_unchecked(m, m if w == -1 else w, self.stride[a], 1, self.causal[a])

    def tile_mask(self, qt, kt):
        out = None
        for a in range(3):
            lo, hi = self.axis_bounds(a)
            q = qt[..., a]
            k = kt[..., a]
            m = (lo[q] <= k) & (k <= hi[q])
            out = m if out is None else out & m
        return out


@dataclasses.dataclass(frozen=True)
class TiledClearLocalRule(TileRule):
    """CLEAR's disc (or ellipsoid) decided per tile pair.

    Args:
        tiles: the padded tiling of the grid.
        radius, radius_t: CLEAR's radii (see :mod:`accel.patterns.clear_local`).
        mode: ``"any"``: a query tile attends a key tile iff some real token pair of the two tiles
            satisfies CLEAR's rule (the exact rule rounded up to whole tiles); ``"centre"``: iff the
            tiles' centres do, i.e. ``((dt * radius / radius_t)^2 + dy^2 + dx^2 < radius^2`` with
            ``(dt, dy, dx) = (tile index difference) * tile`` (``dt`` ignored when ``radius_t`` is
            None) -- a disc/ellipsoid of whole tiles.
    """

    tiles: PaddedTiles
    radius: float
    radius_t: float | None = None
    mode: str = "any"

    def __post_init__(self) -> None:
        if not isinstance(self.tiles, PaddedTiles):
            raise TypeError(f"tiles must be a PaddedTiles, got {type(self.tiles).__name__}")
        check_radius("radius", self.radius)
        check_radius("radius_t", self.radius_t, allow_none=True)
        if self.mode not in CLEAR_TILE_MODES:
            raise ValueError(f"mode must be one of {CLEAR_TILE_MODES}, got {self.mode!r}")

    def key(self) -> tuple:
        rt = None if self.radius_t is None else float(self.radius_t)
        return ("tiled_clear_local", self.tiles.key(), float(self.radius), rt, self.mode)

    def _token_rule(self) -> ClearLocalRule:
        # CLEAR's exact limits S(dt) for every frame distance of the padded grid
        rule = getattr(self, "_rule", None)
        if rule is None:
            rule = ClearLocalRule(self.tiles.padded_grid, self.radius, self.radius_t)
            object.__setattr__(self, "_rule", rule)
        return rule

    def tile_mask(self, qt, kt):
        s = self._token_rule().spatial_limits()
        size = torch.tensor(self.tiles.tile)
        steps = (qt - kt).abs()
        if self.mode == "any":
            # the closest real token pair of two tiles `steps` tiles apart is `(steps - 1) * tile + 1` apart
            # per axis (0 for the same tile); a ragged border tile is always the later one, so its missing
            # tokens never shorten that gap
            d = torch.where(steps > 0, (steps - 1) * size + 1, 0)
        else:
            d = steps * size  # between tile centres
        dist = d[..., 1] ** 2 + d[..., 2] ** 2
        if self.radius_t is None:
            return dist <= s[0]
        return dist <= s[d[..., 0]]


# ---------------------------------------------------------------------- layouts
def build_tile_layout(rule: TileRule, block_size: int, *, device: torch.device | str | None = None) -> BlockLayout:
    """The block layout of ``rule`` over the padded tile order (one block per tile).

    Args:
        rule: the tile rule; ``rule.tiles.volume`` must equal ``block_size``.
        block_size: query and key block size (power of two >= 16).
        device: device of the returned layout (default CPU).

    Returns:
        A :class:`~accel.kernels.BlockLayout` with ``q_len == kv_len == rule.tiles.num_positions``
        and broadcast batch/head dimensions: block pair ``(i, j)`` is visited iff the rule allows
        tiles ``i`` and ``j``. Key tiles that hold ``volume`` real tokens are full blocks; a border
        tile with ``c`` real tokens attends its first ``c`` keys only (the valid-key count of the
        module docstring, expressed today as a partial block with a key-prefix tile, one tile per
        distinct count). Padding query rows get the same keys as their tile (their outputs are
        meaningless and dropped by the methods).
    """
    validate_block_size("block_size", block_size)
    tiles = rule.tiles
    if tiles.volume != block_size:
        raise ValueError(f"the tile {tiles.tile} holds {tiles.volume} positions but block_size is {block_size}; "
                         "a tile must be exactly one block")
    n = tiles.num_positions
    counts = tiles.valid_counts()
    ragged = counts < block_size
    pairs = rule.tile_pairs()
    kinds = torch.where(ragged[None, :], 2, 1).to(torch.int8) * pairs
    # one key-prefix tile per distinct count of real tokens (real tokens come first in every tile)
    distinct, tile_of_count = torch.unique(counts, return_inverse=True)
    prefix = (torch.arange(block_size)[None, :] < distinct[:, None])[:, None, :].expand(-1, block_size, -1)
    tmap = tile_of_count[None, :].expand(pairs.shape[0], -1)
    layout = layout_from_kinds(kinds[None, None], tmap[None, None], prefix, n, n, block_size)
    return layout if device is None else layout.to(device)


def tile_layout_counts(rule: TileRule) -> dict:
    """Figures of :func:`build_tile_layout`'s layout, over the real tokens.

    Returns a dict: ``full`` (visited block pairs whose key tile is all real tokens), ``counted``
    (visited pairs whose key tile is a border tile, limited by its valid-key count), ``partial``
    (always 0: no per-token mask), ``blocks`` (``num_tiles ** 2``), ``density`` (real token pairs
    computed / ``N^2``; every computed pair is allowed, so it is also the mask density).
    """
    pairs = rule.tile_pairs()
    counts = rule.tiles.valid_counts()
    ragged = counts < rule.tiles.volume
    c = counts.double()
    n = rule.tiles.num_tokens
    return {
        "full": int((pairs & ~ragged[None, :]).sum()),
        "counted": int((pairs & ragged[None, :]).sum()),
        "partial": 0,
        "blocks": int(pairs.numel()),
        "density": float(c @ pairs.double() @ c) / (n * n),
    }


# ---------------------------------------------------------------------- tile choice
def padded_tile_candidates(block_size: int) -> list[tuple[int, int, int]]:
    """Every ``(tt, th, tw)`` of powers of two with ``tt * th * tw == block_size``."""
    e = block_size.bit_length() - 1
    return [(1 << a, 1 << b, 1 << (e - a - b)) for a, b in itertools.product(range(e + 1), repeat=2) if a + b <= e]


def fitting_tiles(grid, block_size: int) -> list[tuple[int, int, int]]:
    """The :func:`padded_tile_candidates` that do not overshoot an axis by a whole tile (a side below
    twice the axis length; 1 on axes of length 1); when there is none (a grid of fewer tokens than a
    block), the single candidate with the fewest padding positions."""
    cands = padded_tile_candidates(block_size)
    out = [t for t in cands if all(s == 1 if n == 1 else s < 2 * n for s, n in zip(t, grid, strict=True))]
    return out or [min(cands, key=lambda t: PaddedTiles(tuple(grid), t).num_positions)]


def aligned_tiles(grid, window, stride, block_size: int) -> list[tuple[int, int, int]]:
    """Tiles (of :func:`fitting_tiles`) that divide ``window`` and ``stride`` on every axis of ``grid``
    longer than 1 (a window of ``-1``, the whole axis, fits any tile, whatever its stride), fewest
    padding positions first (ties: candidate order)."""
    out = []
    for tile in fitting_tiles(grid, block_size):
        ok = all(n == 1 or w == -1 or (w % t == 0 and s % t == 0)
                 for n, w, s, t in zip(grid, window, stride, tile, strict=True))
        if ok:
            out.append(tile)
    return sorted(out, key=lambda t: PaddedTiles(tuple(grid), t).num_positions)


def ball_tile(grid, block_size: int, scale: tuple[float, float, float]) -> tuple[int, int, int]:
    """The tile (of :func:`padded_tile_candidates`) closest to a ball in a metric that weighs axis
    ``a`` by ``scale[a]`` (0 = the axis is not measured): smallest ratio between its largest and
    smallest measured side, then fewest padding positions, then candidate order.

    CLEAR's ellipsoid measures time in units of ``radius / radius_t`` tokens, so with ``radius=16,
    radius_t=4`` a ``(2, 8, 8)`` tile is a ball.
    """
    best, best_key = None, None
    for tile in fitting_tiles(grid, block_size):
        sides = [t * s for t, s, n in zip(tile, scale, grid, strict=True) if s > 0 and n > 1]
        ratio = max(sides) / min(sides) if sides else 1.0
        key = (round(ratio, 9), PaddedTiles(tuple(grid), tile).num_positions)
        if best_key is None or key < best_key:
            best, best_key = tile, key
    return best

"""Method configurations at a matched attention density, found from layouts alone (no attention runs).

Comparing sparse methods is only fair at equal work, so every benchmark asks for "method X at density
d" and this module picks X's parameter. *Density* is the fraction of video x video (query, key) pairs
the kernel computes (:meth:`accel.kernels.BlockLayout.density`: every pair of a visited block counts).

Parameter searched per method (the others keep their defaults):

* ``radial``: ``decay`` (log-scale bisection in [1e-3, 8]); block granularity as published.
* ``clear_local``: ``radius`` with ``radius_t = radius / 4`` (the ratio of our video preset,
  16 / 4), bisection in [0.5, 2 * max(H, W)].
* ``neighborhood``: window ``(a*T, a*H, a*W)`` rounded, each in ``[2, axis]``, stride 1; bisection on
  ``a`` in (0, 1].
* ``neighborhood_tile``: the tile-aligned variant (``granularity="tile"``) on the tile of the video
  presets (:func:`accel.patterns.tiled.ball_tile` with time weighted 4: ``(2, 8, 8)`` at 720p, a
  ``(1, 8, 16)``-like tile on images), stride one tile, and per-axis windows (whole tiles) whose
  density -- a product of per-axis factors for this separable rule -- is near the target with even
  per-axis fractions (every combination scored: relative density error + half the fractions' spread).
* ``clear_local_block`` / ``clear_local_tile``: as ``clear_local`` with ``granularity="block"`` (the
  disc rounded up to whole tiles) / ``"tile"`` (the disc between tile centres).
* ``rectified``: ``tau = 0`` (pure top-k) and no curve neighbours (``keep_neighbors=False``: they add a
  grid-dependent share), ``drop`` such that ``top_k_blocks(drop, NB) / NB`` (the top-k share) is the
  closest to the target; the release's other rules stay (Hilbert order; with text, the text column can
  take one of the top-k places, so the executed video density can be ``1 / NB`` lower).
  Data-independent because ``tau = 0``.
* ``agent``: our pooled variant (``formation="pool"``; AgentSD's merging has fixed shares, no density
  knob) with ``agents = round(d * N / 2)``: agent attention computes ``n x N`` (aggregation) plus
  ``N x n`` (broadcast) pairs, ``2 n / N`` of the ``N x N`` of dense attention.
* ``dense``: always density 1.

Bisections (first in a bracket around an analytic guess where there is one) stop after a fixed
number of layout evaluations and return the best configuration seen
(densities are step functions of the parameters, so exact hits are not always possible); the
achieved density is returned with the method. A method cannot reach every density on every grid (Radial
on a small grid keeps at least its own frames dense): :func:`reached` says whether the achieved density is
within :data:`REACH_TOLERANCE` of the target, and reports label a configuration by the density it reached
(:func:`density_label`), never by the target.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from accel.methods.agent import Agent, agent_grid
from accel.methods.base import DEFAULT_BLOCK, AttentionMethod
from accel.methods.clear_local import ClearLocal
from accel.methods.dense import Dense
from accel.methods.neighborhood import Neighborhood
from accel.methods.radial import Radial
from accel.methods.rectified import Rectified, top_k_blocks
from accel.patterns.tiled import PaddedTiles, TiledNeighborhoodRule, ball_tile

__all__ = ["METHOD_NAMES", "TILE_VARIANTS", "Matched", "method_at_density", "static_video_density", "check_method_names",
           "auto_block", "command_line_names", "method_names_from_command_line", "REACH_TOLERANCE", "reached",
           "density_label"]

METHOD_NAMES = ("radial", "clear_local", "neighborhood", "rectified", "agent")
#: tile-aligned variants of the local patterns (every visited block full); the video presets use them
TILE_VARIANTS = ("clear_local_block", "clear_local_tile", "neighborhood_tile")
_ALL_NAMES = ("dense",) + METHOD_NAMES + TILE_VARIANTS
_STEPS = 6
#: a target density counts as reached when the achieved density is within this fraction of it
REACH_TOLERANCE = 0.15


def reached(target: float, density: float, tolerance: float = REACH_TOLERANCE) -> bool:
    """Whether ``density`` is within ``tolerance * target`` of ``target``."""
    return abs(density - target) <= tolerance * target


def density_label(density: float) -> str:
    """A density as a label's percentage, rounded half up: whole percents from 9.5%, one decimal below
    (``0.625 -> "63%"``, ``0.0421 -> "4.2%"``)."""
    pct = 100 * density
    return f"{math.floor(pct + 0.5)}%" if pct >= 9.5 else f"{math.floor(pct * 10 + 0.5) / 10}%"


class Matched(NamedTuple):
    """A method configured for a target density.

    Attributes:
        name: the method name (one of :data:`METHOD_NAMES` or ``"dense"``).
        method: the configured :class:`~accel.methods.base.AttentionMethod`.
        target: the requested density.
        density: the achieved video x video density (for ``rectified``: the top-k share, a lower
            bound of what runs; the executed density is measured per call).
        parameter: ``{parameter name: value}`` that was searched.
    """

    name: str
    method: AttentionMethod
    target: float
    density: float
    parameter: dict


def check_method_names(names) -> list[str]:
    """Validate a list of method names; returns it as a list.

    Raises:
        ValueError: for an empty list or an unknown name (listing the allowed ones).
    """
    names = list(names)
    if not names:
        raise ValueError(f"methods must name at least one of {_ALL_NAMES}, got an empty list")
    for n in names:
        if n not in _ALL_NAMES:
            raise ValueError(f"unknown method {n!r}; allowed: {', '.join(_ALL_NAMES)}")
    return names


def auto_block(num_tokens: int) -> int:
    """The block size used for a sequence of ``num_tokens`` video tokens: 128 (the default) when that
    gives at least 16 blocks, else the largest power of two >= 16 that does (16 at the least)."""
    block = DEFAULT_BLOCK
    while block > 16 and math.ceil(num_tokens / block) < 16:
        block //= 2
    return block


def static_video_density(method: AttentionMethod, grid: tuple[int, int, int]) -> float:
    """Video x video density of a static-pattern method on ``grid`` (its own token order, e.g. tiled)."""
    return float(method.describe(tuple(grid), file=None, compare_rowmajor=False)["video_density"])


def _tile_windows_at_density(grid, tile, target: float) -> tuple[int, int, int]:
    """Token windows (whole tiles, stride one tile) of the tile-aligned neighbourhood with a density near
    ``target`` and even per-axis window fractions (like the ``a * grid`` windows of ``neighborhood``). The
    rule is a product over axes, so the density is the product of per-axis factors ``c^T M c / n^2``
    (``c``: real tokens per tile, ``M``: the axis's tile mask); every combination of per-axis windows is
    scored by its relative density error plus half the spread (max - min) of its per-axis fractions."""
    tiles = PaddedTiles(tuple(grid), tuple(tile))
    factors = []
    for a, (n, t, m) in enumerate(zip(grid, tile, tiles.tile_grid, strict=True)):
        if n == 1:
            factors.append(torch.ones(1, dtype=torch.float64))
            continue
        c = torch.tensor([min(t, n - i * t) for i in range(m)], dtype=torch.float64)
        row = []
        for w in range(1, m + 1):
            lo, hi = TiledNeighborhoodRule(tiles, tuple(w if b == a else -1 for b in range(3))).axis_bounds(a)
            mask = (lo[:, None] <= torch.arange(m)) & (torch.arange(m) <= hi[:, None])
            row.append(float(c @ mask.double() @ c) / (n * n))
        factors.append(torch.tensor(row, dtype=torch.float64))
    dens = factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
    frac = torch.meshgrid(*[torch.arange(1, len(f) + 1, dtype=torch.float64) / len(f) for f in factors], indexing="ij")
    spread = torch.stack(frac).amax(0) - torch.stack(frac).amin(0)
    score = (dens - target).abs() / target + 0.5 * spread  # as even as the exact sweep's a * grid, near the target
    i, j, k = (int(x) for x in torch.unravel_index(torch.argmin(score), dens.shape))
    return tuple(-1 if n == 1 else (w + 1) * t for n, w, t in zip(grid, (i, j, k), tile, strict=True))


def _bisect(build, lo: float, hi: float, target: float, grid, *, log_scale: bool, guess: float | None = None
            ) -> tuple[AttentionMethod, float, float]:
    """Bisection on a parameter whose density increases with it; returns (method, density, parameter).

    With a ``guess`` (an analytic estimate), the search first runs in ``[guess / 2, guess * 3 / 2]``
    (fewer layout evaluations: each costs seconds at 720p sizes) and falls back to ``[lo, hi]`` when the
    best density found there is more than 15% off the target.
    """
    if guess is not None:
        m, d, p = _bisect(build, max(lo, guess / 2), min(hi, guess * 1.5), target, grid, log_scale=log_scale)
        if abs(d - target) <= 0.15 * target:
            return m, d, p
    seen = []
    for _ in range(_STEPS):
        mid = math.sqrt(lo * hi) if log_scale else (lo + hi) / 2
        try:
            m = build(mid)
            d = static_video_density(m, grid)
        except ValueError:  # the grid cannot take this parameter: treat as too large
            hi = mid
            continue
        seen.append((abs(d - target), d, mid, m))
        if d < target:
            lo = mid
        else:
            hi = mid
    if not seen:
        raise ValueError(f"no parameter in the search range fits grid {tuple(grid)}")
    _, d, p, m = min(seen, key=lambda s: s[0])
    return m, d, p


def method_at_density(name: str, target: float, grid: tuple[int, int, int], *, block_size: int | None = None,
                      backend: str = "auto") -> Matched:
    """``name`` configured so that its video x video density on ``grid`` is as close to ``target`` as found.

    Args:
        name: one of ``"dense"``, ``"radial"``, ``"clear_local"``, ``"neighborhood"``, ``"rectified"``,
            ``"agent"``.
        target: the density wanted, in (0, 1].
        grid: the ``(T, H, W)`` video token grid.
        block_size: kernel block size (power of two >= 16); ``None``: :func:`auto_block` of ``T*H*W``.
        backend: kernel backend of the method (see :class:`accel.methods.base.AttentionMethod`).

    Returns:
        a :class:`Matched`; the search is described in the module docstring.

    Raises:
        ValueError: unknown ``name``, ``target`` outside (0, 1], or a malformed ``grid``.
    """
    check_method_names([name])
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise ValueError(f"target density must be a number in (0, 1], got {target!r}")
    if len(grid) != 3 or any(not isinstance(g, int) or g < 1 for g in grid):
        raise ValueError(f"grid must be three ints >= 1 (T, H, W), got {grid!r}")
    grid = tuple(grid)
    n = grid[0] * grid[1] * grid[2]
    bs = auto_block(n) if block_size is None else block_size
    if name == "dense":
        return Matched(name, Dense(backend=backend), target, 1.0, {})
    if name == "radial":
        m, d, p = _bisect(lambda x: Radial(decay=x, block_size=bs, backend=backend), 1e-3, 8.0, target, grid,
                          log_scale=True)
        return Matched(name, m, target, d, {"decay": p})
    if name.startswith("clear_local"):
        granularity = {"clear_local": "token", "clear_local_block": "block", "clear_local_tile": "tile"}[name]
        # ellipsoid volume (4/3) pi r^2 (r/4) = (pi/3) r^3 tokens when it fits in the grid
        guess = (3 * target * n / math.pi) ** (1 / 3) if grid[0] > 1 else math.sqrt(target * n / math.pi)
        m, d, p = _bisect(lambda x: ClearLocal(radius=x, radius_t=x / 4, block_size=bs, granularity=granularity,
                                               backend=backend),
                          0.5, 2.0 * max(grid[1], grid[2]), target, grid, log_scale=True, guess=guess)
        return Matched(name, m, target, d, {"radius": p, "radius_t": p / 4})
    if name == "neighborhood_tile":
        tile = ball_tile(grid, bs, (4.0, 1.0, 1.0))
        window = _tile_windows_at_density(grid, tile, target)
        m = Neighborhood(window=window, stride=tile, tiling=tile, granularity="tile", block_size=bs, backend=backend)
        return Matched(name, m, target, static_video_density(m, grid), {"window": list(window), "tile": list(tile)})
    if name == "neighborhood":
        def window(a):
            return tuple(-1 if g < 3 else min(g, max(2, round(a * g))) for g in grid)  # -1: whole axis

        dims = sum(g >= 3 for g in grid) or 1
        m, d, p = _bisect(lambda a: Neighborhood(window=window(a), block_size=bs, backend=backend), 0.0, 1.0, target,
                          grid, log_scale=False, guess=target ** (1 / dims))
        return Matched(name, m, target, d, {"window": list(m.window)})
    if name == "rectified":
        nb = math.ceil(n / bs)
        keep = max(1, min(nb, round(target * nb)))
        drop = min(max(1.0 - (keep + 0.5) / nb, 0.0), 1.0 - 1e-9)  # int((1 - drop) * nb) == keep
        m = Rectified(drop=drop, tau=0.0, keep_neighbors=False, block_size=bs, backend=backend)
        return Matched(name, m, target, top_k_blocks(drop, nb) / nb, {"drop": drop, "tau": 0.0})
    # agent
    agents = max(1, round(target * n / 2))
    a = agent_grid(agents, grid)
    count = a[0] * a[1] * a[2]
    return Matched(name, Agent(formation="pool", agents=a, block_size=bs, backend=backend), target,
                   min(1.0, 2 * count / n),
                   {"agents": list(a)})


def command_line_names(names) -> list[str]:
    """The command-line spelling of method names of this module: ``-`` for ``_`` (``clear_local`` ->
    ``clear-local``, as ``accel render --method`` spells it)."""
    return [name.replace("_", "-") for name in names]


def method_names_from_command_line(names) -> list[str]:
    """Command-line method names (``clear-local``; the old spelling ``clear_local`` is accepted with a
    :class:`~accel.kernels.renamed.RenamedWarning`) -> the names of this module (``clear_local``).

    Raises:
        ValueError: an unknown name (the message lists the allowed ones).
    """
    from accel.kernels.renamed import current_spelling

    allowed = command_line_names(_ALL_NAMES)
    out = []
    for name in names:
        current = current_spelling(name, allowed, "method")
        if current is None:
            raise ValueError(f"unknown method {name!r}; allowed: {', '.join(allowed)}")
        out.append(current.replace("-", "_"))
    return out

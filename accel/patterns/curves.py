"""Space-filling-curve token orders over a ``(T, H, W)`` grid: generalised Hilbert ("gilbert") and Morton.

Both return a ``TokenLayout.permutation``: ``perm[p]`` is the row-major index ``t*H*W + y*W + x`` of
the token placed at sequence position ``p``.

**Generalised Hilbert curve** (:func:`hilbert_order`). J. Červený's "gilbert" construction of a
Hilbert-like curve on arbitrary (not power-of-two) boxes, in 3D: a box is given by its corner and three
edge vectors ``a`` (major axis), ``b``, ``c``; a box that is one cell thick in two directions is walked
along the third; otherwise it is split (halves rounded to even lengths where the edge is longer than 2)

* along ``a`` only when ``2|a| > 3|b|`` and ``2|a| > 3|c|`` (two sub-boxes);
* else, when ``3|b| > 4|c|``, in ``a`` and ``b`` but not ``c`` (three sub-boxes);
* else, when ``3|c| > 4|b|``, in ``a`` and ``c`` but not ``b`` (three sub-boxes);
* else in all three (five sub-boxes),

with each sub-box's edge vectors rotated/reflected so that consecutive sub-boxes join. This is the curve
the Rectified SpaAttn release orders video (and FLUX image) tokens by, with axis order ``("w", "h",
"t")``: ``a`` along the width, ``b`` along the height, ``c`` along time. Consecutive cells are adjacent
(one step along one axis) when the box's sides are even; odd sides can force one diagonal step. The
construction needs a major edge longer than one cell when another edge is (it never terminates
otherwise); on such grids (e.g. width 1 with ``("w", "h", "t")``) the first axis longer than one cell
is taken as the major edge instead, the others keeping their order -- an extension of ours (the
release's grids always have a wide major axis).

**Morton (Z-order)** (:func:`morton_order`): coordinates bit-interleaved, ``t`` most significant at
each bit level (ours; not the release's).
"""

from __future__ import annotations

import functools

import torch

__all__ = ["hilbert_order", "morton_order", "AXIS_ORDERS"]

#: allowed ``axis_order`` values of :func:`hilbert_order` (major, middle, minor edge of the first box)
AXIS_ORDERS = tuple((a, b, c) for a in "wht" for b in "wht" for c in "wht" if len({a, b, c}) == 3)


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _walk(out: list, x, y, z, ax, ay, az, bx, by, bz, cx, cy, cz) -> None:
    """Append the cells of the box (corner ``(x, y, z)``, edges ``a, b, c``) to ``out`` in curve order."""
    w, h, d = abs(ax + ay + az), abs(bx + by + bz), abs(cx + cy + cz)
    dax, day, daz = _sign(ax), _sign(ay), _sign(az)
    dbx, dby, dbz = _sign(bx), _sign(by), _sign(bz)
    dcx, dcy, dcz = _sign(cx), _sign(cy), _sign(cz)
    if h == 1 and d == 1:
        out.extend((x + i * dax, y + i * day, z + i * daz) for i in range(w))
        return
    if w == 1 and d == 1:
        out.extend((x + i * dbx, y + i * dby, z + i * dbz) for i in range(h))
        return
    if w == 1 and h == 1:
        out.extend((x + i * dcx, y + i * dcy, z + i * dcz) for i in range(d))
        return
    ax2, ay2, az2 = ax // 2, ay // 2, az // 2
    bx2, by2, bz2 = bx // 2, by // 2, bz // 2
    cx2, cy2, cz2 = cx // 2, cy // 2, cz // 2
    if abs(ax2 + ay2 + az2) % 2 and w > 2:  # prefer even halves
        ax2, ay2, az2 = ax2 + dax, ay2 + day, az2 + daz
    if abs(bx2 + by2 + bz2) % 2 and h > 2:
        bx2, by2, bz2 = bx2 + dbx, by2 + dby, bz2 + dbz
    if abs(cx2 + cy2 + cz2) % 2 and d > 2:
        cx2, cy2, cz2 = cx2 + dcx, cy2 + dcy, cz2 + dcz
    if 2 * w > 3 * h and 2 * w > 3 * d:  # long box: split the major edge only
        _walk(out, x, y, z, ax2, ay2, az2, bx, by, bz, cx, cy, cz)
        _walk(out, x + ax2, y + ay2, z + az2, ax - ax2, ay - ay2, az - az2, bx, by, bz, cx, cy, cz)
    elif 3 * h > 4 * d:  # flat in c: split a and b
        _walk(out, x, y, z, bx2, by2, bz2, cx, cy, cz, ax2, ay2, az2)
        _walk(out, x + bx2, y + by2, z + bz2, ax, ay, az, bx - bx2, by - by2, bz - bz2, cx, cy, cz)
        _walk(out, x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby), z + (az - daz) + (bz2 - dbz),
              -bx2, -by2, -bz2, cx, cy, cz, -(ax - ax2), -(ay - ay2), -(az - az2))
    elif 3 * d > 4 * h:  # flat in b: split a and c
        _walk(out, x, y, z, cx2, cy2, cz2, ax2, ay2, az2, bx, by, bz)
        _walk(out, x + cx2, y + cy2, z + cz2, ax, ay, az, bx, by, bz, cx - cx2, cy - cy2, cz - cz2)
        _walk(out, x + (ax - dax) + (cx2 - dcx), y + (ay - day) + (cy2 - dcy), z + (az - daz) + (cz2 - dcz),
              -cx2, -cy2, -cz2, -(ax - ax2), -(ay - ay2), -(az - az2), bx, by, bz)
    else:  # split all three edges
        _walk(out, x, y, z, bx2, by2, bz2, cx2, cy2, cz2, ax2, ay2, az2)
        _walk(out, x + bx2, y + by2, z + bz2, cx, cy, cz, ax2, ay2, az2, bx - bx2, by - by2, bz - bz2)
        _walk(out, x + (bx2 - dbx) + (cx - dcx), y + (by2 - dby) + (cy - dcy), z + (bz2 - dbz) + (cz - dcz),
              ax, ay, az, -bx2, -by2, -bz2, -(cx - cx2), -(cy - cy2), -(cz - cz2))
        _walk(out, x + (ax - dax) + bx2 + (cx - dcx), y + (ay - day) + by2 + (cy - dcy),
              z + (az - daz) + bz2 + (cz - dcz), -cx, -cy, -cz, -(ax - ax2), -(ay - ay2), -(az - az2),
              bx - bx2, by - by2, bz - bz2)
        _walk(out, x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby), z + (az - daz) + (bz2 - dbz),
              -bx2, -by2, -bz2, cx2, cy2, cz2, -(ax - ax2), -(ay - ay2), -(az - az2))


@functools.lru_cache(maxsize=32)
def _hilbert_cpu(grid: tuple[int, int, int], axis_order: tuple[str, str, str]) -> torch.Tensor:
    t, h, w = grid
    size = {"w": w, "h": h, "t": t}
    if size[axis_order[0]] == 1:  # no major edge: promote the first longer axis (module docstring)
        longer = [a for a in axis_order if size[a] > 1]
        if longer:
            axis_order = (longer[0],) + tuple(a for a in axis_order if a != longer[0])
    unit = {"w": (1, 0, 0), "h": (0, 1, 0), "t": (0, 0, 1)}
    edges = [tuple(size[axis] * u for u in unit[axis]) for axis in axis_order]
    cells: list = []
    _walk(cells, 0, 0, 0, *edges[0], *edges[1], *edges[2])
    xyz = torch.tensor(cells, dtype=torch.int64)  # (x, y, t)
    return xyz[:, 2] * (h * w) + xyz[:, 1] * w + xyz[:, 0]


def hilbert_order(grid: tuple[int, int, int], axis_order: tuple[str, str, str] = ("w", "h", "t"),
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 ``[T*H*W]``: the row-major indices of the grid's cells along the generalised Hilbert curve.

    Args:
        grid: ``(T, H, W)``, three ints >= 1.
        axis_order: which grid axis the curve's first box takes as its major, middle and minor edge: a
            permutation of ``("w", "h", "t")`` (default ``("w", "h", "t")``, the Rectified SpaAttn
            release's).
        device: device of the result (computed on the CPU once per grid and cached).

    Raises:
        ValueError: a malformed grid or axis order.
    """
    grid = tuple(grid)
    if len(grid) != 3 or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid):
        raise ValueError(f"grid must be three ints >= 1 (T, H, W), got {grid!r}")
    axis_order = tuple(axis_order)
    if axis_order not in AXIS_ORDERS:
        raise ValueError(f"axis_order must be a permutation of ('w', 'h', 't'), got {axis_order!r}")
    return _hilbert_cpu(grid, axis_order).to(device)


@functools.lru_cache(maxsize=32)
def _morton_cpu(grid: tuple[int, int, int]) -> torch.Tensor:
    t, h, w = grid
    idx = torch.arange(t * h * w)
    coords = (idx // (h * w), (idx // w) % h, idx % w)
    key = torch.zeros_like(idx)
    bits = max(max(grid) - 1, 1).bit_length()
    for bit in range(bits):
        for axis, c in enumerate(coords):  # bit-interleave t, y, x (t most significant at each level)
            key |= ((c >> bit) & 1) << (3 * bit + 2 - axis)
    return torch.argsort(key, stable=True)


def morton_order(grid: tuple[int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 ``[T*H*W]``: the row-major ``(t, y, x)`` indices of the video tokens in 3D Morton (Z-order)
    order. Coordinates are bit-interleaved (``t`` most significant at each bit level); the grid need not
    be a power of two."""
    return _morton_cpu(tuple(grid)).to(device)

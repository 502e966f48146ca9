"""An independent port of the release's per-cell gilbert index (tests only).

The Rectified SpaAttn release (utils/jenga_gilbert.py, ``gilbert_xyz2d``) computes, for each cell, its
index along the generalised Hilbert curve by descending into the sub-box that holds the cell and adding
the volumes of the sub-boxes before it. Written here from the research notes as "list the children of a
box in order, then descend": a different shape from accel's generator, same split rules.
"""

from __future__ import annotations


def _sgn(v):
    return (v > 0) - (v < 0)


def _add(*vs):
    return tuple(sum(c) for c in zip(*vs, strict=True))


def _neg(v):
    return tuple(-c for c in v)


def _half(v, length):
    """Half of edge v (floor division per component), made even when the edge is longer than 2."""
    h = tuple(c // 2 for c in v)
    if abs(sum(h)) % 2 and length > 2:
        h = _add(h, tuple(_sgn(c) for c in v))
    return h


def children(box):
    """The sub-boxes (origin, a, b, c) of a box in curve order, or None for a one-cell-thick line."""
    o, a, b, c = box
    w, h, d = abs(sum(a)), abs(sum(b)), abs(sum(c))
    if (h == 1 and d == 1) or (w == 1 and d == 1) or (w == 1 and h == 1):
        return None
    da, db, dc = (tuple(_sgn(x) for x in v) for v in (a, b, c))
    a2, b2, c2 = _half(a, w), _half(b, h), _half(c, d)
    ra, rb, rc = _add(a, _neg(a2)), _add(b, _neg(b2)), _add(c, _neg(c2))  # the remainders
    if 2 * w > 3 * h and 2 * w > 3 * d:
        return [(o, a2, b, c), (_add(o, a2), ra, b, c)]
    if 3 * h > 4 * d:
        return [(o, b2, c, a2), (_add(o, b2), a, rb, c),
                (_add(o, a, _neg(da), b2, _neg(db)), _neg(b2), c, _neg(ra))]
    if 3 * d > 4 * h:
        return [(o, c2, a2, b), (_add(o, c2), a, b, rc),
                (_add(o, a, _neg(da), c2, _neg(dc)), _neg(c2), _neg(ra), b)]
    return [(o, b2, c2, a2), (_add(o, b2), c, a2, rb),
            (_add(o, b2, _neg(db), c, _neg(dc)), a, _neg(b2), _neg(rc)),
            (_add(o, a, _neg(da), b2, c, _neg(dc)), _neg(c), _neg(ra), rb),
            (_add(o, a, _neg(da), b2, _neg(db)), _neg(b2), c2, _neg(ra))]


def _contains(box, p):
    o, a, b, c = box
    for axis in range(3):
        span = a[axis] + b[axis] + c[axis]
        lo, hi = (o[axis], o[axis] + span) if span >= 0 else (o[axis] + span + 1, o[axis] + 1)
        if not lo <= p[axis] < hi:
            return False
    return True


def _volume(box):
    _, a, b, c = box
    return abs(sum(a)) * abs(sum(b)) * abs(sum(c))


def curve_index(p, box):
    """Position of cell p = (x, y, t) along the curve of ``box``."""
    kids = children(box)
    if kids is None:  # a line: the distance from the origin along its only long edge
        o = box[0]
        return sum(abs(p[i] - o[i]) for i in range(3))
    before = 0
    for kid in kids:
        if _contains(kid, p):
            return before + curve_index(p, kid)
        before += _volume(kid)
    raise AssertionError(f"{p} is in no sub-box of {box}")


def release_order(grid, axis_order=("w", "h", "t")):
    """Row-major indices sorted by the curve index (the release's ``HILBERT_ORDER``)."""
    t, h, w = grid
    size = {"w": w, "h": h, "t": t}
    unit = {"w": (1, 0, 0), "h": (0, 1, 0), "t": (0, 0, 1)}
    edges = [tuple(size[k] * u for u in unit[k]) for k in axis_order]
    box = ((0, 0, 0), *edges)
    index = {}
    for z in range(t):
        for y in range(h):
            for x in range(w):
                index[z * h * w + y * w + x] = curve_index((x, y, z), box)
    return sorted(index, key=index.get)

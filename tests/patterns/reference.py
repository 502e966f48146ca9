"""Independent brute-force definitions of the three token rules (tests only).

Written directly from the issue's wording with Python ints, sets and Fractions -- no tensors, no
code shared with accel.patterns -- so that tests compare two implementations of the rule.
"""

from __future__ import annotations

from fractions import Fraction


def natten_axis(n, w, s=1, d=1, causal=False):
    """List over queries x of the set of key coordinates on one axis (NATTEN 0.21 rule)."""
    if n == 1:
        return [{0}]
    out = []
    for x in range(n):
        g, xg = x % d, x // d
        ng = len(range(g, n, d))
        ww = ng if w == -1 else w
        if causal:
            lead = min((xg // s) * s + s - 1, ng - 1)
            lo, hi = max(lead - ww + 1, 0), xg
        else:
            lead = min((xg // s) * s + s // 2, ng - 1)
            lo = min(max(lead - ww // 2, 0), ng - ww)
            hi = lo + ww - 1
        out.append({g + d * j for j in range(lo, hi + 1)})
    return out


def coords_of(grid, order=None):
    """(t, y, x) of the token at each position; ``order[i]`` = row-major index at position i."""
    t, h, w = grid
    n = t * h * w
    order = list(range(n)) if order is None else [int(i) for i in order]
    return [(i // (h * w), (i // w) % h, i % w) for i in order]


def natten_mask(grid, window, stride, dilation, causal, order=None):
    axes = [natten_axis(grid[a], window[a], stride[a], dilation[a], causal[a]) for a in range(3)]
    cs = coords_of(grid, order)
    return [[all(k[a] in axes[a][q[a]] for a in range(3)) for k in cs] for q in cs]


def clear_mask(grid, radius, radius_t, order=None):
    cs = coords_of(grid, order)
    r = Fraction(radius)
    rt = None if radius_t is None else Fraction(radius_t)

    def ok(q, k):
        dt, dy, dx = q[0] - k[0], q[1] - k[1], q[2] - k[2]
        v = Fraction(dy * dy + dx * dx)
        if rt is not None:
            v += (Fraction(dt) * r / rt) ** 2
        return v < r * r

    return [[ok(q, k) for k in cs] for q in cs]


def radial_allowed(i, k, j, m, s, decay, block, sink):
    """Query (frame i, spatial index k) vs key (frame j, spatial index m), frames of s tokens.

    The rule of mit-han-lab/radial-attention (``get_window_width`` AND ``get_diagonal_split_mask``):
    the window never narrower than ``block``; the thinning on the undecayed width against a fixed 128.
    """
    if sink and j == 0:
        return True
    d = abs(i - j)
    p = 2 ** s.bit_length()  # smallest power of two > s
    undecayed = Fraction(p, 2 ** d.bit_length())
    if undecayed < 128 and d % int(128 / undecayed) != 0:
        return False
    if d <= 1:
        return True
    return abs(k - m) <= max(undecayed * Fraction(decay), block)


def radial_mask(grid, decay, block, sink, order=None):
    t, hh, w = grid
    cs = coords_of(grid, order)
    s = hh * w
    return [[radial_allowed(q[0], q[1] * w + q[2], k[0], k[1] * w + k[2], s, decay, block, sink) for k in cs]
            for q in cs]


def round_up_to_blocks(mask, block):
    """Every (query block, key block) with an allowed pair becomes all-allowed (sequence order)."""
    n = len(mask)
    nb = -(-n // block)
    keep = [[False] * nb for _ in range(nb)]
    for i in range(n):
        row = mask[i]
        for j in range(n):
            if row[j]:
                keep[i // block][j // block] = True
    return [[keep[i // block][j // block] for j in range(n)] for i in range(n)]


def joint_mask(video, grid, text_len, text_side, text_valid):
    """Default text rule around a video mask: text queries see all valid keys; video queries see all
    valid text keys plus ``video``; ``text_valid`` is a list of bools (or None = all valid)."""
    n = grid[0] * grid[1] * grid[2]
    s = n + text_len
    v0 = text_len if text_side == "first" else 0
    t0 = 0 if text_side == "first" else n
    valid = [True] * s
    if text_valid is not None:
        for i, ok in enumerate(text_valid):
            valid[t0 + i] = bool(ok)
    out = []
    for i in range(s):
        qi_video = v0 <= i < v0 + n
        row = []
        for j in range(s):
            kj_video = v0 <= j < v0 + n
            if not valid[j]:
                row.append(False)
            elif qi_video and kj_video:
                row.append(video[i - v0][j - v0])
            else:
                row.append(True)
        out.append(row)
    return out


# ---------------------------------------------------------------------- tile-aligned rules
def tile_of(coord, tile):
    return tuple(c // t for c, t in zip(coord, tile, strict=True))


def tile_counts(grid, tile):
    """Number of tiles per axis (the grid padded up to whole tiles)."""
    return tuple(-(-n // t) for n, t in zip(grid, tile, strict=True))


def padded_order(grid, tile):
    """Positions of the padded tile order: row-major grid index of each position, -1 for padding.

    Tiles in row-major tile order; inside a tile its real tokens (row-major) then its padding."""
    t, h, w = grid
    m = tile_counts(grid, tile)
    out = []
    for a in range(m[0]):
        for b in range(m[1]):
            for c in range(m[2]):
                real, pad = [], []
                for z in range(a * tile[0], (a + 1) * tile[0]):
                    for y in range(b * tile[1], (b + 1) * tile[1]):
                        for x in range(c * tile[2], (c + 1) * tile[2]):
                            if z < t and y < h and x < w:
                                real.append((z * h + y) * w + x)
                            else:
                                pad.append(-1)
                out += real + pad
    return out


def tiled_natten_mask(grid, tile, window, stride, causal, order=None):
    """NATTEN's axis rule on tile coordinates (window, stride in tiles), over the real tokens."""
    m = tile_counts(grid, tile)
    axes = [natten_axis(m[a], m[a] if window[a] == -1 else window[a], stride[a], 1, causal[a]) if m[a] > 1
            else [{0}] for a in range(3)]
    cs = coords_of(grid, order)
    ts = [tile_of(c, tile) for c in cs]
    return [[all(k[a] in axes[a][q[a]] for a in range(3)) for k in ts] for q in ts]


def clear_tile_any_mask(grid, tile, radius, radius_t, order=None):
    """CLEAR's token rule rounded up to whole tiles: a tile pair is allowed iff one real pair is."""
    cs = coords_of(grid)
    token = clear_mask(grid, radius, radius_t)
    keep = set()
    for i, q in enumerate(cs):
        for j, k in enumerate(cs):
            if token[i][j]:
                keep.add((tile_of(q, tile), tile_of(k, tile)))
    cs = coords_of(grid, order)
    return [[(tile_of(q, tile), tile_of(k, tile)) in keep for k in cs] for q in cs]


def clear_tile_centre_mask(grid, tile, radius, radius_t, order=None):
    """CLEAR's inequality between tile centres (offsets = tile index difference x tile size)."""
    r = Fraction(radius)
    rt = None if radius_t is None else Fraction(radius_t)
    cs = coords_of(grid, order)

    def ok(q, k):
        qt, kt = tile_of(q, tile), tile_of(k, tile)
        dt, dy, dx = ((qt[a] - kt[a]) * tile[a] for a in range(3))
        v = Fraction(dy * dy + dx * dx)
        if rt is not None:
            v += (Fraction(dt) * r / rt) ** 2
        return v < r * r

    return [[ok(q, k) for k in cs] for q in cs]

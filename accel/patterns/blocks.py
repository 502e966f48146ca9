"""Analytic block layouts of token rules on a (T, H, W) grid, without any S x S tensor.

A static sparse pattern (Radial, CLEAR, Neighborhood) is a :class:`GridRule`: a token-level
predicate "query at grid coordinate q may attend key at grid coordinate k". The video tokens of a
sequence sit at known grid coordinates (row-major or permuted, see :class:`accel.TokenLayout`),
and the sequence is cut into query blocks of ``q_block`` tokens and key blocks of ``kv_block``
tokens. :func:`build_grid_layout` turns the rule into the exact :class:`~accel.kernels.BlockLayout`
in three steps, each far cheaper than the ``S x S`` mask:

1. **Bounding boxes.** Every block gets the bounding box of its tokens' coordinates. The rule
   answers, for every (query block, key block) pair at once, whether *some* pair of points of the two
   boxes is allowed (``any``) and whether *every* pair is (``all``). Boxes contain the blocks'
   tokens, so ``not any`` proves the block pair empty and ``all`` proves it full; the answers only
   need to be conservative. Cost ``O(NQ * NKV)``.
2. **Signatures.** The remaining ("uncertain") pairs are grouped by a signature that determines
   their token tile exactly: the query block's rule features relative to its first token, the key
   block's coordinates relative to its first token, and the offset between those first tokens. This
   is valid because every rule here depends on coordinates only through differences (translation
   invariance), except for per-token key flags (e.g. "frame 0" for the Radial sink) that are part of
   the key signature. Interior blocks of a regular grid share a handful of signatures.
3. **Tiles.** One representative pair per signature is evaluated token by token (``q_block x
   kv_block`` booleans), classified as empty / full / partial, and partial tiles are deduplicated by
   content.

The result is exact: the layout's token mask equals the rule on every in-bounds pair (tests check
it against brute force). Layouts are built on the CPU and moved to the requested device.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import threading
from collections.abc import Callable

import torch

from accel.kernels import BlockLayout, validate_block_size

__all__ = [
    "GridRule",
    "build_grid_layout",
    "block_kind_counts",
    "lru_memo",
    "order_key",
    "prepend_text_blocks",
]

# number of (query, key) token pairs evaluated at once when materialising tiles
_PAIRS_PER_CHUNK = 1 << 22
# number of block pairs tested at once in the bounding-box step
_BOX_PAIRS_PER_CHUNK = 1 << 20


class GridRule:
    """A token-level attention rule over the video tokens of a ``(T, H, W)`` grid.

    Subclasses are frozen dataclasses holding the rule's validated parameters and the grid. They
    implement:

    * :meth:`query_features` -- int64 features of query tokens (for instance the grid coordinate, or
      the window bounds of a neighbourhood) such that :meth:`pair_mask` depends on features and key
      coordinates only through differences along the axes named by :attr:`feature_axes`
      (translation invariance). Padding rows are never evaluated as real tokens.
    * :meth:`key_flags` -- optional per-key features that do *not* shift with translation (e.g.
      "key is in frame 0"); ``None`` when the rule is fully translation invariant.
    * :meth:`pair_mask` -- the exact predicate on broadcastable feature / coordinate tensors.
    * :meth:`box_relation` -- conservative ``(any, all)`` answers for pairs of coordinate boxes.
    * :meth:`key` -- a hashable key of the parameters (for caching).

    :attr:`ignored_axes` lists coordinate axes the rule does not look at (e.g. time for a CLEAR
    tube); signatures drop them, so blocks that differ only along them share tiles.
    """

    grid: tuple[int, int, int]

    #: for each column of :meth:`query_features`, the coordinate axis (0 = t, 1 = y, 2 = x) it moves with
    feature_axes: tuple[int, ...] = (0, 1, 2)

    @property
    def ignored_axes(self) -> tuple[int, ...]:
        """Coordinate axes the predicate never reads (default: none)."""
        return ()

    @property
    def extent(self) -> tuple[int, int, int]:
        """Size of the rule's coordinate space per axis (default: the grid). Every value returned by
        :meth:`rule_coords` lies in ``[0, extent[a])`` along axis ``a``."""
        return self.grid

    def rule_coords(self, coords: torch.Tensor) -> torch.Tensor:
        """Map grid coordinates ``[..., 3]`` to the rule's coordinate space (default: identity).

        A rule may re-embed the grid so that its predicate becomes translation invariant with
        simple boxes (Neighborhood's dilation moves each dilation group to its own contiguous range).
        :meth:`query_features`, :meth:`pair_mask` and :meth:`box_relation` take rule coordinates.
        """
        return coords

    def query_features(self, coords: torch.Tensor) -> torch.Tensor:
        """int64 ``[..., len(feature_axes)]`` features of queries at int64 coordinates ``[..., 3]``."""
        return coords

    def key_flags(self, coords: torch.Tensor) -> torch.Tensor | None:
        """int64 ``[..., f]`` translation-independent key features, or ``None`` (default)."""
        return None

    #: True when the rule is a product over axes; such rules implement :meth:`axis_mask`
    separable: bool = False

    def axis_mask(self, a: int, qf_axis: torch.Tensor, kc_axis: torch.Tensor) -> torch.Tensor:
        """Separable rules only: the factor of axis ``a`` (``qf_axis`` = the feature columns of that axis)."""
        raise NotImplementedError

    def pair_mask(self, qf: torch.Tensor, kc: torch.Tensor) -> torch.Tensor:
        """bool, broadcast of ``qf[..., 0]`` and ``kc[..., 0]``: may the query with features ``qf``
        attend the key at coordinates ``kc``?"""
        raise NotImplementedError

    def box_relation(
        self, qlo: torch.Tensor, qhi: torch.Tensor, klo: torch.Tensor, khi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For query boxes ``[qlo, qhi]`` and key boxes ``[klo, khi]`` (inclusive int64 corners
        ``[..., 3]``, broadcastable), return bool ``(any, all)``: ``any`` must be True whenever some
        point pair of the boxes is allowed, ``all`` may be True only when every point pair is."""
        raise NotImplementedError

    def key(self) -> tuple:
        """Hashable identity of the rule (parameters and grid)."""
        raise NotImplementedError

    def allowed_pairs(self) -> int | None:
        """Number of (query, key) video token pairs the rule allows on its grid, when the rule can count
        them without an ``S x S`` mask; ``None`` otherwise (then a token-exact layout counts them)."""
        return None

    def token_mask(self, coords: torch.Tensor) -> torch.Tensor:
        """bool ``[N, N]``: the rule on every (query, key) pair of tokens at grid ``coords`` ``[N, 3]``
        (tests and tiny sizes only)."""
        coords = self.rule_coords(coords.to(torch.int64))
        qf = self.query_features(coords)
        return self.pair_mask(qf[:, None, :], coords[None, :, :])


# ---------------------------------------------------------------------- helpers
def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _blockify(coords: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut ``[N, c]`` into ``[NB, block, c]`` (the ragged tail repeats the last row) plus validity."""
    n = coords.shape[0]
    nb = _ceil_div(n, block)
    pad = nb * block - n
    if pad:
        coords = torch.cat([coords, coords[-1:].expand(pad, -1)], dim=0)
    valid = torch.arange(nb * block) < n
    return coords.reshape(nb, block, -1), valid.reshape(nb, block)


def _row_ids(rows: torch.Tensor) -> torch.Tensor:
    """Dense ids (0..k-1) of the distinct rows of a 2-D int64 tensor."""
    if rows.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64)
    return torch.unique(rows, dim=0, return_inverse=True)[1]


def _pack_bits(tiles: torch.Tensor) -> torch.Tensor:
    """bool ``[P, a, b]`` -> int64 ``[P, a*b/64]`` (a*b is a multiple of 256 for block sizes >= 16)."""
    p = tiles.shape[0]
    weights = (1 << torch.arange(8, dtype=torch.int16)).to(torch.uint8)
    by = (tiles.reshape(p, -1, 8).to(torch.uint8) * weights).sum(-1, dtype=torch.uint8)
    return by.reshape(p, -1).contiguous().view(torch.int64)


def _unpack_bits(packed: torch.Tensor, a: int, b: int) -> torch.Tensor:
    by = packed.contiguous().view(torch.uint8)
    bits = (by[..., None] >> torch.arange(8, dtype=torch.uint8)) & 1
    return bits.reshape(-1, a, b).bool()


def _rows_to_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool ``[NQ, NKV]`` -> (int32 ``[1, 1, NQ, cap]`` kept columns ascending, int32 ``[1, 1, NQ]`` counts)."""
    counts = mask.sum(-1)
    cap = max(1, int(counts.max()) if counts.numel() else 1)
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices[:, :cap]
    order = torch.where(torch.arange(cap) < counts[:, None], order, 0)
    return order.to(torch.int32)[None, None].contiguous(), counts.to(torch.int32)[None, None].contiguous()


def _box_relations(rule: GridRule, qlo, qhi, klo, khi) -> tuple[torch.Tensor, torch.Tensor]:
    nq, nk = qlo.shape[0], klo.shape[0]
    any_ = torch.empty(nq, nk, dtype=torch.bool)
    all_ = torch.empty(nq, nk, dtype=torch.bool)
    step = max(1, _BOX_PAIRS_PER_CHUNK // max(1, nk))
    for i in range(0, nq, step):
        a, b = rule.box_relation(qlo[i:i + step, None], qhi[i:i + step, None], klo[None], khi[None])
        any_[i:i + step] = a
        all_[i:i + step] = b
    return any_, all_


@dataclasses.dataclass
class _Classified:
    full: torch.Tensor  # bool [NQ, NKV]
    tile_map: torch.Tensor  # int64 [NQ, NKV], -1 = not partial
    tiles: torch.Tensor | None  # bool [n_tiles, qb, kb]


def _runs(coords: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Split each block into *runs* (maximal stretches of consecutive tokens stepping +1 along x in
    the same t, y): int64 ``[NB, R, 3]`` lower and upper corners (unused run slots repeat run 0) and R."""
    n = coords.shape[0]
    nb = _ceil_div(n, block)
    pos = torch.arange(n)
    cont = torch.zeros(n, dtype=torch.bool)
    if n > 1:
        diff = coords[1:] - coords[:-1]
        cont[1:] = (diff[:, 0] == 0) & (diff[:, 1] == 0) & (diff[:, 2] == 1)
    start = ~cont | (pos % block == 0)
    run_id = torch.cumsum(start.long(), 0) - 1
    run_start = pos[start]
    run_end = torch.cat([run_start[1:] - 1, torch.tensor([n - 1])])
    run_block = run_start // block
    first = run_id[torch.arange(nb) * block]
    local = torch.arange(run_start.shape[0]) - first[run_block]
    r = int(local.max()) + 1
    lo = coords[run_start[first]][:, None, :].repeat(1, r, 1)
    hi = coords[run_end[first]][:, None, :].repeat(1, r, 1)
    lo[run_block, local] = coords[run_start]
    hi[run_block, local] = coords[run_end]
    return lo, hi, r


_MAX_RUNS = 4


def _refine_with_runs(rule, qcoords, kcoords, q_block, kv_block, pairs):
    """Exact-box any/all of uncertain block pairs from their runs, or None when blocks have too many runs."""
    qlo, qhi, rq = _runs(qcoords, q_block)
    klo, khi, rk = _runs(kcoords, kv_block)
    if rq > _MAX_RUNS or rk > _MAX_RUNS or (rq == 1 and rk == 1):
        return None
    p = pairs.shape[0]
    any_ = torch.empty(p, dtype=torch.bool)
    all_ = torch.empty(p, dtype=torch.bool)
    step = max(1, _BOX_PAIRS_PER_CHUNK // (rq * rk))
    for s in range(0, p, step):
        qi, kj = pairs[s:s + step, 0], pairs[s:s + step, 1]
        a, b = rule.box_relation(qlo[qi][:, :, None], qhi[qi][:, :, None], klo[kj][:, None], khi[kj][:, None])
        any_[s:s + step] = a.flatten(1).any(1)
        all_[s:s + step] = b.flatten(1).all(1)
    return any_, all_


def _unique_reps(sig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of one representative per distinct value, inverse map value -> representative slot)."""
    uniq, inverse = torch.unique(sig, return_inverse=True)
    rep = torch.full((uniq.shape[0],), sig.shape[0], dtype=torch.int64)
    rep.scatter_reduce_(0, inverse, torch.arange(sig.shape[0]), reduce="amin")
    return rep, inverse


def _classify(rule: GridRule, coords: torch.Tensor, q_block: int, kv_block: int, *, want_tiles: bool,
              any_is_full: bool) -> _Classified:
    """The steps of the module docstring; returns full blocks and partial tiles."""
    coords = rule.rule_coords(coords.to("cpu", torch.int64))
    qf_all = rule.query_features(coords)
    qc, qvalid = _blockify(coords, q_block)
    qf, _ = _blockify(qf_all, q_block)
    kc, kvalid = _blockify(coords, kv_block)
    nq, nk = qc.shape[0], kc.shape[0]

    # 1. bounding boxes (the ragged tail repeats the last token, so it does not widen the box)
    any_, all_ = _box_relations(rule, qc.amin(1), qc.amax(1), kc.amin(1), kc.amax(1))
    full = all_ & any_
    tile_map = torch.full((nq, nk), -1, dtype=torch.int64)
    pairs = (any_ & ~all_).nonzero()
    # 1b. runs: blocks made of a few straight runs (row-major order) are unions of exact boxes
    if pairs.shape[0]:
        refined = _refine_with_runs(rule, coords, coords, q_block, kv_block, pairs)
        if refined is not None:
            r_any, r_all = refined
            sure = r_all & r_any
            full[pairs[sure, 0], pairs[sure, 1]] = True
            if any_is_full:
                full[pairs[r_any, 0], pairs[r_any, 1]] = True
                r_all = r_all | r_any
            pairs = pairs[r_any & ~r_all]
    if pairs.shape[0] == 0:
        return _Classified(full, tile_map, None)
    qi, kj = pairs[:, 0], pairs[:, 1]
    q_origin = qc[:, 0, :]  # [NQ, 3]
    k_origin = kc[:, 0, :]
    ignored = set(rule.ignored_axes)
    flags = rule.key_flags(coords)
    kflags = None if flags is None else _blockify(flags.to(torch.int64), kv_block)[0]
    extent = rule.extent
    qcount = qvalid.sum(1)
    kcount = kvalid.sum(1)

    def axis_ids(axes):
        """Ids of the query / key block shapes restricted to ``axes`` (relative to the block origin)."""
        cols = [i for i, a in enumerate(rule.feature_axes) if a in axes]
        fa = torch.tensor([rule.feature_axes[i] for i in cols], dtype=torch.int64)
        q_rel = qf[:, :, cols] - q_origin[:, None, fa]
        q_rel = torch.where(qvalid[..., None], q_rel, 0)
        ax = torch.tensor(sorted(axes), dtype=torch.int64)
        k_rel = kc[:, :, ax] - k_origin[:, None, ax]
        if kflags is not None and 0 in axes:
            k_rel = torch.cat([k_rel, kflags], dim=-1)
        k_rel = torch.where(kvalid[..., None], k_rel, 0)
        q_id = _row_ids(torch.cat([q_rel.reshape(nq, -1), qcount[:, None]], dim=1))
        k_id = _row_ids(torch.cat([k_rel.reshape(nk, -1), kcount[:, None]], dim=1))
        sig = q_id[qi] * (int(k_id.max()) + 1) + k_id[kj]
        for a in sorted(axes):
            span = 2 * extent[a] + 1
            sig = sig * span + (k_origin[kj, a] - q_origin[qi, a] + extent[a])
        return sig

    step = max(1, _PAIRS_PER_CHUNK // (q_block * kv_block))
    qf32, kc32 = qf.to(torch.int32), kc.to(torch.int32)
    words = q_block * kv_block // 64
    valid_packed: dict = {}

    def validity(qcnt: int, kcnt: int) -> torch.Tensor:
        if (qcnt, kcnt) not in valid_packed:
            v = torch.zeros(1, q_block, kv_block, dtype=torch.bool)
            v[0, :qcnt, :kcnt] = True
            valid_packed[(qcnt, kcnt)] = _pack_bits(v)[0]
        return valid_packed[(qcnt, kcnt)]

    live = [a for a in range(3) if a not in ignored]
    if getattr(rule, "separable", False):
        # 2s. separable rules (a product over axes): deduplicate per-axis tiles by content, then
        # combine the packed per-axis tiles with a bitwise AND.
        cids, tables = [], []
        for a in live:
            rep, inverse = _unique_reps(axis_ids({a}))
            cols = [i for i, fa in enumerate(rule.feature_axes) if fa == a]
            packed = []
            for s in range(0, rep.shape[0], step):
                ra, rb = qi[rep[s:s + step]], kj[rep[s:s + step]]
                m = rule.axis_mask(a, qf32[ra][:, :, None][..., cols], kc32[rb][:, None, :, a])
                packed.append(_pack_bits(m.expand(ra.shape[0], q_block, kv_block)))
            utab, cinv = torch.unique(torch.cat(packed), dim=0, return_inverse=True)
            cids.append(cinv[inverse])
            tables.append(utab)
        combo = qcount[qi] * (kv_block + 1) + kcount[kj]
        for c, tab in zip(cids, tables, strict=True):
            combo = combo * tab.shape[0] + c
        rep, inverse = _unique_reps(combo)
        vq, vk = qcount[qi[rep]], kcount[kj[rep]]
        tiles_p = torch.full((rep.shape[0], words), -1, dtype=torch.int64)
        for c, tab in zip(cids, tables, strict=True):
            tiles_p &= tab[c[rep]]
        vmask = torch.stack([validity(int(x), int(y)) for x, y in zip(vq.tolist(), vk.tolist(), strict=True)]) \
            if rep.shape[0] else torch.zeros(0, words, dtype=torch.int64)
        tiles_p &= vmask
        any_t = (tiles_p != 0).any(1)
        all_t = (tiles_p == vmask).all(1)
        kind = torch.full((rep.shape[0],), 2, dtype=torch.int8)
        kind[~any_t] = 0
        kind[all_t] = 1
        if any_is_full:
            kind[any_t] = 1
        part_packed = tiles_p[kind == 2]
    else:
        # 2j. joint signatures: query/key block shapes over all live axes plus the block offset.
        rep, inverse = _unique_reps(axis_ids(set(live)))
        kind = torch.empty(rep.shape[0], dtype=torch.int8)  # 0 empty, 1 full, 2 partial
        packed_parts: list[torch.Tensor] = []
        for s in range(0, rep.shape[0], step):
            a, b = qi[rep[s:s + step]], kj[rep[s:s + step]]
            m = rule.pair_mask(qf32[a][:, :, None, :], kc32[b][:, None, :, :])
            qv, kv = qvalid[a], kvalid[b]
            ragged = not (bool(qv.all()) and bool(kv.all()))
            if ragged:
                valid = qv[:, :, None] & kv[:, None, :]
                m &= valid
            flat = m.reshape(m.shape[0], -1)
            any_t = flat.any(1)
            all_t = (m | ~valid).reshape(m.shape[0], -1).all(1) if ragged else flat.all(1)
            k_ = torch.full((m.shape[0],), 2, dtype=torch.int8)
            k_[~any_t] = 0
            k_[all_t] = 1
            if any_is_full:
                k_[any_t] = 1
            kind[s:s + step] = k_
            if want_tiles and bool((k_ == 2).any()):
                packed_parts.append(_pack_bits(m[k_ == 2]))
        part_packed = torch.cat(packed_parts) if packed_parts else None

    pair_kind = kind[inverse]
    full[qi[pair_kind == 1], kj[pair_kind == 1]] = True
    tiles = None
    part_pairs = pair_kind == 2
    if bool(part_pairs.any()):
        if not want_tiles:
            tile_map[qi[part_pairs], kj[part_pairs]] = 0
        else:
            utiles, tinv = torch.unique(part_packed, dim=0, return_inverse=True)
            rep_tile = torch.full((rep.shape[0],), -1, dtype=torch.int64)
            rep_tile[kind == 2] = tinv
            tile_map[qi[part_pairs], kj[part_pairs]] = rep_tile[inverse[part_pairs]]
            tiles = _unpack_bits(utiles, q_block, kv_block)
    return _Classified(full, tile_map, tiles)


def build_grid_layout(
    rule: GridRule,
    coords: torch.Tensor,
    q_block: int,
    kv_block: int,
    *,
    granularity: str = "token",
    device: torch.device | str | None = None,
) -> BlockLayout:
    """Exact block layout of ``rule`` over video tokens at ``coords`` (built analytically).

    Args:
        rule: the token rule (its ``grid`` must contain every coordinate).
        coords: int64 ``[N, 3]``: the ``(t, y, x)`` grid coordinate of the token at each sequence
            position (``TokenLayout.video_coords()``; any order, e.g. row-major or tiled).
        q_block: query block size (power of two >= 16).
        kv_block: key block size (power of two >= 16).
        granularity: ``"token"`` (default): the layout's token mask equals the rule exactly (block
            pairs whose tokens are all allowed become full blocks, mixed ones partial blocks with a
            tile); ``"block"``: every block pair holding at least one allowed pair becomes a full
            block (the rule is rounded *up* to whole blocks, as block-granular methods like Radial
            attention execute it).
        device: device of the returned layout's tensors (default CPU).

    Returns:
        A :class:`~accel.kernels.BlockLayout` with ``q_len == kv_len == N`` and broadcast batch/head
        dimensions ``(1, 1)``; ``allow_empty_rows`` is True (a query block whose rule allows no video
        key attends nothing here; the default text rule may still give it text keys).
    """
    validate_block_size("q_block", q_block)
    validate_block_size("kv_block", kv_block)
    if granularity not in ("token", "block"):
        raise ValueError(f"granularity must be 'token' or 'block', got {granularity!r}")
    if not isinstance(coords, torch.Tensor) or coords.dim() != 2 or coords.shape[1] != 3 or coords.shape[0] < 1:
        raise ValueError(f"coords must be an int tensor [N >= 1, 3], got {getattr(coords, 'shape', coords)!r}")
    n = coords.shape[0]
    c = _classify(rule, coords, q_block, kv_block, want_tiles=granularity == "token",
                  any_is_full=granularity == "block")
    full_idx, full_cnt = _rows_to_index(c.full)
    part_mask = c.tile_map >= 0
    part_idx, part_cnt = _rows_to_index(part_mask)
    if c.tiles is None:
        tiles = torch.ones(1, q_block, kv_block, dtype=torch.bool)
        part_tile = torch.zeros_like(part_idx)
    else:
        tiles = c.tiles
        part_tile = torch.gather(c.tile_map, 1, part_idx[0, 0].long()).to(torch.int32)[None, None]
        part_tile = torch.where(torch.arange(part_idx.shape[3]) < part_cnt[..., None], part_tile, 0).contiguous()
    layout = BlockLayout(n, n, q_block, kv_block, full_idx, full_cnt, part_idx, part_cnt, part_tile,
                         tiles.contiguous(), allow_empty_rows=True)
    return layout if device is None else layout.to(device)


def block_kind_counts(rule: GridRule, coords: torch.Tensor, q_block: int, kv_block: int, *,
                      granularity: str = "token") -> dict:
    """Density figures of the layout :func:`build_grid_layout` would build, without its tiles.

    Returns a dict: ``full`` and ``partial`` (numbers of block pairs of each kind), ``blocks``
    (``NQ * NKV``), ``density`` (fraction of the ``N^2`` token pairs inside visited blocks, ragged
    blocks counted by their real size) -- the same figure as ``BlockLayout.density()``.
    """
    n = coords.shape[0]
    c = _classify(rule, coords, q_block, kv_block, want_tiles=False, any_is_full=granularity == "block")
    rows = (n - torch.arange(c.full.shape[0]) * q_block).clamp(max=q_block).double()
    cols = (n - torch.arange(c.full.shape[1]) * kv_block).clamp(max=kv_block).double()
    visited = (c.full | (c.tile_map >= 0)).double()
    return {
        "full": int(c.full.sum()),
        "partial": int((c.tile_map >= 0).sum()),
        "blocks": int(c.full.numel()),
        "density": float(rows @ visited @ cols) / (n * n),
    }


# ---------------------------------------------------------------------- caching
def order_key(permutation: torch.Tensor | None) -> tuple:
    """Hashable key of a token order: ``("rowmajor",)`` for ``None``, else a digest of the permutation."""
    if permutation is None:
        return ("rowmajor",)
    data = permutation.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return ("perm", permutation.shape[0], hashlib.blake2b(data, digest_size=16).hexdigest())


def lru_memo(store: collections.OrderedDict, key, build: Callable, *, size: int = 32):
    """Return ``store[key]``, computing it with ``build()`` on a miss; keeps at most ``size`` entries
    (least recently used evicted). ``store`` is owned by the caller (e.g. one method object), so no
    state is shared between unrelated users. Thread-safe."""
    with _LOCK:
        if key in store:
            store.move_to_end(key)
            return store[key]
    value = build()
    with _LOCK:
        store[key] = value
        store.move_to_end(key)
        while len(store) > size:
            store.popitem(last=False)
    return value


_LOCK = threading.Lock()


def prepend_text_blocks(video: BlockLayout, text_len: int) -> BlockLayout:
    """Joint layout of ``text_len`` unpadded text tokens followed by the video tokens of ``video``.

    ``text_len`` must be a multiple of the block size (so video blocks stay aligned). Text query
    blocks visit every key block as a full block; a video query block visits every text key block
    as a full block plus its video blocks (shifted by the number of text blocks). Tiles are reused.
    """
    b = video.q_block
    if video.kv_block != b or text_len % b:
        raise ValueError(f"text_len ({text_len}) must be a multiple of the block size ({b}) with equal q/kv blocks")
    tb = text_len // b
    dev = video.device
    full_idx, full_cnt = video.full_idx, video.full_cnt
    bh = full_cnt.shape[:2]
    nkv = tb + video.num_kv_blocks
    cap = max(nkv, full_idx.shape[3] + tb)
    text_rows = torch.arange(cap, device=dev, dtype=torch.int32).clamp(max=nkv - 1).expand(*bh, tb, cap)
    shifted = torch.cat([torch.arange(tb, device=dev, dtype=torch.int32).expand(*bh, full_idx.shape[2], tb),
                         full_idx + tb], dim=3)
    shifted = torch.nn.functional.pad(shifted, (0, cap - shifted.shape[3]))
    j_full_idx = torch.cat([torch.where(torch.arange(cap, device=dev) < nkv, text_rows, 0), shifted], dim=2)
    j_full_cnt = torch.cat([torch.full((*bh, tb), nkv, dtype=torch.int32, device=dev), full_cnt + tb], dim=2)
    zeros = torch.zeros(*bh, tb, video.part_idx.shape[3], dtype=torch.int32, device=dev)
    j_part_idx = torch.cat([zeros, video.part_idx + tb], dim=2)
    j_part_cnt = torch.cat([torch.zeros(*bh, tb, dtype=torch.int32, device=dev), video.part_cnt], dim=2)
    j_part_tile = torch.cat([zeros, video.part_tile], dim=2)
    n = text_len + video.q_len
    return BlockLayout(n, n, b, b, j_full_idx.contiguous(), j_full_cnt.contiguous(), j_part_idx.contiguous(),
                       j_part_cnt.contiguous(), j_part_tile.contiguous(), video.tiles, allow_empty_rows=True)

"""`BlockLayout`: which (query block, key block) pairs an attention call computes.

A layout is the currency between sparsity patterns and kernels. The query sequence
is cut into blocks of ``q_block`` tokens and the key sequence into blocks of ``kv_block`` tokens
(the last block of each may be ragged). For every (batch, head, query block) the layout lists the
key blocks to visit, split in two kinds:

* **full** blocks: every (query, key) pair in the block is allowed; the kernel runs no per-token
  test on them;
* **partial** blocks: a token-level predicate decides each pair. The layout holds one kind of
  predicate (:attr:`BlockLayout.partial_kind`):

  - ``"tiles"``: a boolean *tile* of shape ``[q_block, kv_block]`` per partial block (row = query
    offset in its block, column = key offset in its block), named by index into ``tiles``; tiles are
    deduplicated, and the kernel reads them bit-packed (32 pairs per int32 word);
  - ``"window"`` / ``"ellipsoid"``: an analytic rule evaluated from token coordinates in the kernel's
    registers (:class:`~accel.kernels.WindowPredicate`, :class:`~accel.kernels.EllipsoidPredicate`,
    given as ``predicate``); nothing per block is stored or loaded;
  - ``"none"``: the layout has no partial block.

Independently of the kind, a layout may carry **key padding** (``key_pad``): per batch element, one
interval of key positions that are never attended, in any block (padded text tokens). The kernel
tests it only in the blocks that overlap the interval, so blocks around padding can stay *full*.

Batch and head dimensions of the index tensors are either the real size or 1 (broadcast).
Keys at positions ``>= kv_len`` are never attended, whatever the layout says.
"""

from __future__ import annotations

import dataclasses

import torch

from .mask_kinds import EllipsoidPredicate, WindowPredicate
from .schedule import BlockSchedule, build_schedule, padding_overlap

__all__ = ["BlockLayout", "validate_block_size", "PARTIAL_KINDS"]

#: values of :attr:`BlockLayout.partial_kind`
PARTIAL_KINDS = ("none", "tiles", "window", "ellipsoid")
# token pairs evaluated at once when counting or materialising analytic partial blocks
_PAIRS_PER_CHUNK = 1 << 22


def _validate_length(name: str, value) -> int:
    """``value`` if it is a positive int (a token count), else ``ValueError`` naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def validate_block_size(name: str, value: int) -> int:
    """Check that a block size is a power of two >= 16 and return it.

    Args:
        name: parameter name used in the error message.
        value: the block size given by the caller.

    Raises:
        ValueError: if ``value`` is not an int power of two of at least 16.
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 16 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 16, got {value!r}")
    return value


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pack_rows(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a boolean ``[..., n]`` mask into (indices ``[..., max(1, max count)]`` int32, counts int32).

    Indices of kept columns come first in increasing order; unused slots hold 0.
    """
    n = mask.shape[-1]
    counts = mask.sum(-1, dtype=torch.int32)
    cap = max(1, int(counts.max()) if counts.numel() else 1)
    cols = torch.arange(n, device=mask.device, dtype=torch.int32).expand_as(mask)
    # stable sort: kept columns (key 0) before dropped ones (key 1), each group in column order
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices
    idx = torch.gather(cols, -1, order)[..., :cap]
    idx = torch.where(torch.arange(cap, device=mask.device) < counts.unsqueeze(-1), idx, 0)
    return idx.to(torch.int32).contiguous(), counts.contiguous()


@dataclasses.dataclass(frozen=True, eq=False)
class BlockLayout:
    """Block-sparse attention layout (see the module docstring for the model).

    Attributes:
        q_len: number of query tokens (>= 1).
        kv_len: number of key/value tokens (>= 1).
        q_block: query block size, a power of two >= 16.
        kv_block: key block size, a power of two >= 16.
        full_idx: int32 ``[B|1, H|1, NQ, Cf]``, ``NQ = ceil(q_len / q_block)``: key-block indices of the
            full blocks of each query block; only the first ``full_cnt`` entries of a row are read.
        full_cnt: int32 ``[B|1, H|1, NQ]``, number of full key blocks per query block.
        part_idx: int32 ``[B|1, H|1, NQ, Cp]``: key-block indices of the partial blocks.
        part_cnt: int32 ``[B|1, H|1, NQ]``, number of partial key blocks per query block.
        part_tile: int32 ``[B|1, H|1, NQ, Cp]``: for each partial block, the index of its tile in
            ``tiles`` (``"tiles"`` layouts). ``None`` is accepted when ``predicate`` is given or no row
            has a partial block (filled with zeros).
        tiles: bool ``[n_tiles, q_block, kv_block]``: token-level predicates of partial blocks
            (``tiles[t, i, j]`` is True when query ``qb * q_block + i`` may attend key ``kb * kv_block + j``).
            ``None`` is accepted like ``part_tile`` (filled with one all-True tile).
        allow_empty_rows: if False (default) every query block must visit at least one key block
            holding a non-padding key; if True, query blocks with no key block are allowed and
            produce output 0 and LSE -inf.
        predicate: ``None`` (partial blocks use ``tiles``) or an analytic rule that decides every pair
            of every partial block: a :class:`~accel.kernels.WindowPredicate` or
            :class:`~accel.kernels.EllipsoidPredicate` (then ``tiles`` / ``part_tile`` are ignored).
        key_pad: ``None`` or int32 ``[B|1, 2]``: per batch element ``b``, the key positions
            ``key_pad[b, 0] <= j < key_pad[b, 1]`` are padding, never attended in any block (an empty
            interval means no padding). Build it with :meth:`with_key_padding`.

    All index tensors live on one device and share their broadcast shape ``[B|1, H|1, NQ]``.
    Construction validates everything (indices in range, counts within capacity, no key block listed
    twice in a row, tile indices in range, predicate and padding ranges) and raises ``ValueError``
    naming the offending field. Prefer the constructors :meth:`full`, :meth:`from_block_mask`,
    :meth:`from_token_mask` and :meth:`from_predicate`.
    """

    q_len: int
    kv_len: int
    q_block: int
    kv_block: int
    full_idx: torch.Tensor
    full_cnt: torch.Tensor
    part_idx: torch.Tensor
    part_cnt: torch.Tensor
    part_tile: torch.Tensor | None
    tiles: torch.Tensor | None
    allow_empty_rows: bool = False
    predicate: WindowPredicate | EllipsoidPredicate | None = None
    key_pad: torch.Tensor | None = None
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def cached(self, key, build):
        """Return ``build()`` computed once per ``key`` for this layout (derived data such as a backend's
        translated mask or the density figure). Layouts are immutable, so the cache never goes stale."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def __post_init__(self) -> None:
        for name in ("q_len", "kv_len"):
            _validate_length(name, getattr(self, name))
        validate_block_size("q_block", self.q_block)
        validate_block_size("kv_block", self.kv_block)
        if not isinstance(self.full_idx, torch.Tensor):
            raise TypeError(f"full_idx must be a torch.Tensor, got {type(self.full_idx).__name__}")
        device = self.full_idx.device
        if self.predicate is not None and not isinstance(self.predicate, (WindowPredicate, EllipsoidPredicate)):
            raise TypeError(f"predicate must be a WindowPredicate, an EllipsoidPredicate or None, got "
                            f"{type(self.predicate).__name__}")
        if self.part_tile is None and isinstance(self.part_idx, torch.Tensor):
            object.__setattr__(self, "part_tile", torch.zeros_like(self.part_idx))
        if self.tiles is None:
            object.__setattr__(self, "tiles", torch.ones(1, self.q_block, self.kv_block, dtype=torch.bool,
                                                         device=device))
        self._validate_lists(device)
        self._validate_extras(device)
        if not self.allow_empty_rows and bool(self._empty_rows().any()):
            raise ValueError(
                "some query block visits no key block (or only padding keys); pass allow_empty_rows=True if "
                "empty rows are intended"
            )
        object.__setattr__(self, "_schedule", build_schedule(self))

    def _validate_lists(self, device) -> None:
        nq, nkv = self.num_q_blocks, self.num_kv_blocks
        for name in ("full_idx", "full_cnt", "part_idx", "part_cnt", "part_tile", "tiles"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.device != device:
                raise ValueError(f"{name} is on {t.device} but full_idx is on {device}; all must share a device")
            want = torch.bool if name == "tiles" else torch.int32
            if t.dtype != want:
                raise ValueError(f"{name} must have dtype {want}, got {t.dtype}")
        for name in ("full_cnt", "part_cnt"):
            t = getattr(self, name)
            if t.dim() != 3 or t.shape[2] != nq or t.shape[0] < 1 or t.shape[1] < 1:
                raise ValueError(f"{name} must have shape [B|1, H|1, {nq}] (NQ = ceil(q_len/q_block)), got {tuple(t.shape)}")
        if self.full_cnt.shape != self.part_cnt.shape:
            raise ValueError(
                f"full_cnt {tuple(self.full_cnt.shape)} and part_cnt {tuple(self.part_cnt.shape)} must have the same shape"
            )
        for idx_name, cnt_name in (("full_idx", "full_cnt"), ("part_idx", "part_cnt"), ("part_tile", "part_cnt")):
            idx, cnt = getattr(self, idx_name), getattr(self, cnt_name)
            if idx.dim() != 4 or idx.shape[:3] != cnt.shape or idx.shape[3] < 1:
                raise ValueError(
                    f"{idx_name} must have shape {list(cnt.shape)} + [capacity >= 1], got {tuple(idx.shape)}"
                )
        if self.part_tile.shape != self.part_idx.shape:
            raise ValueError(f"part_tile {tuple(self.part_tile.shape)} must match part_idx {tuple(self.part_idx.shape)}")
        if self.tiles.dim() != 3 or self.tiles.shape[1:] != (self.q_block, self.kv_block) or self.tiles.shape[0] < 1:
            raise ValueError(
                f"tiles must have shape [n_tiles >= 1, q_block={self.q_block}, kv_block={self.kv_block}], "
                f"got {tuple(self.tiles.shape)}"
            )
        for idx_name, cnt_name in (("full_idx", "full_cnt"), ("part_idx", "part_cnt")):
            idx, cnt = getattr(self, idx_name), getattr(self, cnt_name)
            if bool((cnt < 0).any()) or bool((cnt > idx.shape[3]).any()):
                raise ValueError(f"{cnt_name} must lie in [0, {idx.shape[3]}] (the capacity of {idx_name})")
            used = torch.arange(idx.shape[3], device=device) < cnt.unsqueeze(-1)
            if bool(((idx < 0) | (idx >= nkv))[used].any()):
                raise ValueError(f"{idx_name} holds key-block indices outside [0, {nkv}) (NKV = ceil(kv_len/kv_block))")
        if self.predicate is None:
            used_tiles = torch.arange(self.part_tile.shape[3], device=device) < self.part_cnt.unsqueeze(-1)
            if bool(((self.part_tile < 0) | (self.part_tile >= self.tiles.shape[0]))[used_tiles].any()):
                raise ValueError(f"part_tile holds tile indices outside [0, {self.tiles.shape[0]})")
        visits = self._visit_counts()
        if bool((visits > 1).any()):
            raise ValueError("a key block is listed more than once for one query block (in full_idx and/or part_idx)")

    def _validate_extras(self, device) -> None:
        if self.predicate is not None:
            if self.predicate.device != device:
                raise ValueError(f"predicate is on {self.predicate.device} but the index tensors on {device}")
            self.predicate.check_lengths(self.q_len, self.kv_len)
        pad = self.key_pad
        if pad is None:
            return
        if not isinstance(pad, torch.Tensor) or pad.dtype != torch.int32 or pad.dim() != 2 or pad.shape[1] != 2:
            raise ValueError(f"key_pad must be an int32 tensor [B|1, 2] (start, end of the padding), got "
                             f"{getattr(pad, 'dtype', type(pad).__name__)} {tuple(getattr(pad, 'shape', ()))}")
        if pad.device != device:
            raise ValueError(f"key_pad is on {pad.device} but the index tensors on {device}")
        lb = self.full_cnt.shape[0]
        if lb not in (1, pad.shape[0]):
            raise ValueError(f"key_pad has batch {pad.shape[0]} but the index tensors have batch {lb}; "
                             "they must be equal or one of them 1")
        if bool(((pad[:, 0] < 0) | (pad[:, 0] > pad[:, 1]) | (pad[:, 1] > self.kv_len)).any()):
            raise ValueError(f"key_pad intervals must satisfy 0 <= start <= end <= kv_len={self.kv_len}, got "
                             f"{pad.tolist()}")

    @property
    def partial_kind(self) -> str:
        """How partial blocks are decided: ``"none"`` (there is no partial block), ``"tiles"``
        (bit-packed boolean tiles), ``"window"`` or ``"ellipsoid"`` (the analytic ``predicate``)."""
        if not self._schedule.has_partial:
            return "none"
        return "tiles" if self.predicate is None else self.predicate.kind

    @property
    def schedule(self) -> BlockSchedule:
        """The kernel-ready lists of this layout (clean blocks first, rows by work, packed tiles;
        see :mod:`accel.kernels.schedule`)."""
        return self._schedule

    @property
    def tile_bits(self) -> torch.Tensor:
        """int32 ``[n_tiles, q_block, ceil(kv_block / 32)]``: ``tiles`` bit-packed as the kernel reads them."""
        return self._schedule.tile_bits

    def _empty_rows(self) -> torch.Tensor:
        """bool ``[B', H', NQ]``: query blocks that visit no block holding a non-padding key."""
        counts = self.full_cnt + self.part_cnt
        if self.key_pad is None:
            return counts == 0
        live = (self.block_kinds() > 0) & ~self._dead_blocks()[:, None, None, :]
        return ~live.any(-1)

    def _dead_blocks(self) -> torch.Tensor:
        """bool ``[P, NKV]``: key blocks made only of padding keys, per padding batch (P = 1 without padding)."""
        if self.key_pad is None:
            return torch.zeros(1, self.num_kv_blocks, dtype=torch.bool, device=self.device)
        return padding_overlap(self.key_pad, self.kv_len, self.kv_block)[1]

    def valid_keys(self) -> torch.Tensor | None:
        """bool ``[B|1, kv_len]`` (True = not padding), or ``None`` without key padding."""
        if self.key_pad is None:
            return None
        j = torch.arange(self.kv_len, device=self.device)
        return ~((self.key_pad[:, :1] <= j) & (j < self.key_pad[:, 1:]))

    # ------------------------------------------------------------------ shapes
    @property
    def num_q_blocks(self) -> int:
        """Number of query blocks, ``ceil(q_len / q_block)``."""
        return _ceil_div(self.q_len, self.q_block)

    @property
    def num_kv_blocks(self) -> int:
        """Number of key blocks, ``ceil(kv_len / kv_block)``."""
        return _ceil_div(self.kv_len, self.kv_block)

    @property
    def batch_heads(self) -> tuple[int, int]:
        """The (B|1, H|1) broadcast shape of the layout (index tensors and key padding)."""
        pb = 1 if self.key_pad is None else int(self.key_pad.shape[0])
        return max(int(self.full_cnt.shape[0]), pb), int(self.full_cnt.shape[1])

    @property
    def device(self) -> torch.device:
        """Device of the index tensors."""
        return self.full_idx.device

    @property
    def is_dense(self) -> bool:
        """True when every query block visits every key block as a full block and no key is padding
        (plain dense attention)."""
        return self.cached(
            "is_dense", lambda: bool((self.full_cnt == self.num_kv_blocks).all()) and not bool(self.part_cnt.any())
            and (self.key_pad is None or bool((self.key_pad[:, 0] == self.key_pad[:, 1]).all()))
        )

    def to(self, device: torch.device | str) -> BlockLayout:
        """Return the same layout with its tensors on ``device`` (self if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if f.init and isinstance(getattr(self, f.name), torch.Tensor)
        }
        if self.predicate is not None:
            moved["predicate"] = self.predicate.to(device)
        return dataclasses.replace(self, **moved)

    # ------------------------------------------------------------------ dense views
    def _scatter_rows(self, idx: torch.Tensor, cnt: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Scatter ``values`` (same shape as idx) into a ``[B, H, NQ, NKV]`` int64 map at the used slots."""
        nkv = self.num_kv_blocks
        used = torch.arange(idx.shape[3], device=idx.device) < cnt.unsqueeze(-1)
        out = torch.zeros(*idx.shape[:3], nkv + 1, dtype=torch.int64, device=idx.device)
        target = torch.where(used, idx.long(), nkv)  # unused slots go to a dump column
        out.scatter_add_(-1, target, torch.where(used, values.long(), 0))
        return out[..., :nkv]

    def _visit_counts(self) -> torch.Tensor:
        ones_f = torch.ones_like(self.full_idx)
        ones_p = torch.ones_like(self.part_idx)
        full = self._scatter_rows(self.full_idx, self.full_cnt, ones_f)
        part = self._scatter_rows(self.part_idx, self.part_cnt, ones_p)
        b = max(full.shape[0], part.shape[0])
        h = max(full.shape[1], part.shape[1])
        return full.expand(b, h, -1, -1) + part.expand(b, h, -1, -1)

    def block_kinds(self) -> torch.Tensor:
        """Block map ``int8 [B|1, H|1, NQ, NKV]``: 0 = skipped, 1 = full, 2 = partial (computed once)."""
        def build():
            full = self._scatter_rows(self.full_idx, self.full_cnt, torch.ones_like(self.full_idx))
            part = self._scatter_rows(self.part_idx, self.part_cnt, torch.ones_like(self.part_idx))
            return (full + 2 * part).to(torch.int8)

        return self.cached("block_kinds", build)

    def tile_map(self) -> torch.Tensor:
        """``int32 [B|1, H|1, NQ, NKV]``: the tile index of each partial block, -1 elsewhere (``"tiles"``
        layouts; computed once)."""
        def build():
            plus_one = self._scatter_rows(self.part_idx, self.part_cnt, self.part_tile + 1)
            return (plus_one - 1).to(torch.int32)

        return self.cached("tile_map", build)

    def to_dense_mask(self) -> torch.Tensor:
        """Materialise the token-level mask ``bool [B|1, H|1, q_len, kv_len]`` (tests and tiny sizes only)."""
        kinds = self.block_kinds()
        qb, kb = self.q_block, self.kv_block
        nq, nkv = kinds.shape[2], kinds.shape[3]
        full = (kinds == 1).repeat_interleave(qb, 2).repeat_interleave(kb, 3)
        if self.predicate is None:
            tmap = self.tile_map().long()
            tiles = self.tiles[tmap.clamp_min(0)]  # [B, H, NQ, NKV, qb, kb]
            part = tiles & (kinds == 2)[..., None, None]
            part = part.permute(0, 1, 2, 4, 3, 5).reshape(*kinds.shape[:2], nq * qb, nkv * kb)
        else:
            rows = torch.arange(nq * qb, device=self.device)[:, None]
            cols = torch.arange(nkv * kb, device=self.device)[None, :]
            part = (kinds == 2).repeat_interleave(qb, 2).repeat_interleave(kb, 3) & self.predicate.evaluate(rows, cols)
        mask = (full | part)[..., : self.q_len, : self.kv_len]
        valid = self.valid_keys()
        if valid is not None:
            mask = mask & valid[:, None, None, :]
        return mask.contiguous()

    def block_masks(self, batch: torch.Tensor, head: torch.Tensor, q_blocks: torch.Tensor,
                    kv_blocks: torch.Tensor) -> torch.Tensor:
        """The token mask inside given block pairs, for any partial kind and key padding.

        Args:
            batch, head, q_blocks, kv_blocks: int tensors ``[n]`` (same device as the layout): block pair
                ``i`` is query block ``q_blocks[i]`` and key block ``kv_blocks[i]`` of batch element
                ``batch[i]`` and head ``head[i]`` (indices into the broadcast dims are clamped, so a
                layout broadcast over heads accepts any head).

        Returns:
            bool ``[n, q_block, kv_block]``: ``[i, r, c]`` is True when query ``q_blocks[i] * q_block + r``
            may attend key ``kv_blocks[i] * kv_block + c`` (False for skipped blocks and positions past
            ``q_len`` / ``kv_len``). Costs ``n * q_block * kv_block`` booleans: chunk large requests.
        """
        lb, lh = self.full_cnt.shape[:2]
        bi = batch.long().clamp(max=lb - 1)
        hi = head.long().clamp(max=lh - 1)
        qi, ki = q_blocks.long(), kv_blocks.long()
        kinds = self.block_kinds()[bi, hi, qi, ki]
        rows = qi[:, None] * self.q_block + torch.arange(self.q_block, device=self.device)  # [n, qb]
        cols = ki[:, None] * self.kv_block + torch.arange(self.kv_block, device=self.device)  # [n, kb]
        if self.predicate is None:
            tiles = self.tiles[self.tile_map()[bi, hi, qi, ki].long().clamp_min(0)]
        else:
            tiles = self.predicate.evaluate(rows[:, :, None], cols[:, None, :])
        mask = (kinds == 1)[:, None, None] | ((kinds == 2)[:, None, None] & tiles)
        mask = mask & (rows < self.q_len)[:, :, None] & (cols < self.kv_len)[:, None, :]
        valid = self.valid_keys()
        if valid is not None:
            pb = valid.shape[0]
            colv = valid[batch.long().clamp(max=pb - 1)[:, None], cols.clamp(max=self.kv_len - 1)]
            mask = mask & colv[:, None, :]
        return mask

    # ------------------------------------------------------------------ figures
    def _block_extent(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Number of real (in-bounds) query rows per query block and key columns per key block."""
        dev = self.device
        rows = (self.q_len - torch.arange(self.num_q_blocks, device=dev) * self.q_block).clamp(max=self.q_block)
        cols = (self.kv_len - torch.arange(self.num_kv_blocks, device=dev) * self.kv_block).clamp(max=self.kv_block)
        return rows, cols

    def density(self) -> float:
        """Fraction of the ``q_len * kv_len`` (query, key) pairs that the kernel computes.

        Every pair inside a visited block counts (full or partial; the kernel computes the scores of
        a partial block before masking them), clipped to the sequence bounds, averaged over the
        broadcast batch and head dimensions. 1.0 means dense attention.
        """
        return self.cached("density", self._compute_density)

    def _compute_density(self) -> float:
        rows, cols = self._block_extent()
        area = rows[:, None].double() * cols[None, :].double()
        visited = (self.block_kinds() > 0).double()
        return float((visited * area).sum(dim=(-1, -2)).mean() / (self.q_len * self.kv_len))

    def mask_density(self) -> float:
        """Fraction of (query, key) pairs that are *allowed* (full-block pairs plus the pairs the partial
        blocks' predicate allows, padding keys excluded), averaged over the broadcast batch and head dims.

        Tiles without key padding are counted per tile; analytic predicates and padded layouts evaluate
        every partial block (chunked: seconds for ~10^5 partial blocks of 128 x 128).
        """
        return self.cached("mask_density", self._compute_mask_density)

    def _compute_mask_density(self) -> float:
        rows, cols = self._block_extent()
        kinds = self.block_kinds()
        b, h = self.batch_heads
        valid = self.valid_keys()
        if valid is None:
            col_valid = cols.double()[None, :]  # [1, NKV]
        else:
            pad_cols = torch.zeros(valid.shape[0], self.num_kv_blocks * self.kv_block, dtype=torch.bool,
                                   device=self.device)
            pad_cols[:, : self.kv_len] = valid
            col_valid = pad_cols.view(valid.shape[0], -1, self.kv_block).sum(-1).double()  # [P, NKV]
        area = rows.double()[None, None, :, None] * col_valid[:, None, None, :]  # [P, 1, NQ, NKV]
        full = ((kinds == 1).double() * area).sum(dim=(-1, -2)).expand(b, h)
        if self.predicate is None and valid is None:
            part = self._tile_pairs(rows, cols, kinds)
        else:
            part = self._evaluated_partial_pairs(kinds, b, h)
        return float((full + part).mean() / (self.q_len * self.kv_len))

    def _tile_pairs(self, rows, cols, kinds) -> torch.Tensor:
        """Allowed pairs of the partial blocks, counted per tile (``"tiles"``, no padding): ``[B|1, H|1]``."""
        tmap = self.tile_map().long()
        # True entries per tile inside the bounds: only the last query-block row and the last key-block
        # column can be ragged, so four count vectors [n_tiles] cover every block position.
        tiles = self.tiles
        r_last, c_last = int(rows[-1]), int(cols[-1])
        counts = torch.stack([
            tiles.sum(dim=(1, 2)),
            tiles[:, :r_last, :].sum(dim=(1, 2)),
            tiles[:, :, :c_last].sum(dim=(1, 2)),
            tiles[:, :r_last, :c_last].sum(dim=(1, 2)),
        ]).double()  # [4, n_tiles]
        last_row = torch.zeros(self.num_q_blocks, dtype=torch.long, device=self.device)
        last_row[-1] = 1
        last_col = torch.zeros(self.num_kv_blocks, dtype=torch.long, device=self.device)
        last_col[-1] = 2
        position = last_row[:, None] + last_col[None, :]  # 0 inner, 1 last row, 2 last column, 3 corner
        return torch.where(tmap >= 0, counts[position, tmap.clamp_min(0)], 0.0).sum(dim=(-1, -2))

    def _evaluated_partial_pairs(self, kinds, b, h) -> torch.Tensor:
        """Allowed pairs of the partial blocks by evaluating each one: ``[B', H']``."""
        out = torch.zeros(b, h, dtype=torch.float64, device=self.device)
        bi, hi, qi, ki = (kinds.expand(b, h, -1, -1) == 2).nonzero(as_tuple=True)
        step = max(1, _PAIRS_PER_CHUNK // (self.q_block * self.kv_block))
        for s in range(0, bi.shape[0], step):
            sl = slice(s, s + step)
            n = self.block_masks(bi[sl], hi[sl], qi[sl], ki[sl]).sum(dim=(1, 2)).double()
            out.index_put_((bi[sl], hi[sl]), n, accumulate=True)
        return out

    def block_counts(self, batch: int = 0, head: int = 0) -> dict[str, int]:
        """Numbers of (query block, key block) pairs of each kind for one batch entry and head.

        Args:
            batch: batch index (0 for a layout that broadcasts over the batch).
            head: head index (0 for a layout that broadcasts over the heads).

        Returns:
            ``{"full": ..., "partial": ..., "skipped": ..., "blocks": NQ * NKV}``.
        """
        kinds = self._kinds_at(batch, head)
        full, partial = int((kinds == 1).sum()), int((kinds == 2).sum())
        return {"full": full, "partial": partial, "skipped": kinds.numel() - full - partial, "blocks": kinds.numel()}

    def _kinds_at(self, batch: int, head: int) -> torch.Tensor:
        kinds = self.block_kinds()
        b, h = kinds.shape[:2]
        for name, index, size in (("batch", batch, b), ("head", head, h)):
            if index < 0 or (size > 1 and index >= size):  # a broadcast dimension (size 1) serves every index
                raise IndexError(f"{name} {index} out of range for a layout with batch_heads ({b}, {h})")
        return kinds[batch if b > 1 else 0, head if h > 1 else 0]

    # ------------------------------------------------------------------ drawing
    #: characters of the block map: skipped, full, partial
    BLOCK_CHARS = (".", "#", "+")

    def draw(self, batch: int = 0, head: int = 0, *, max_rows: int = 48, max_cols: int = 96) -> str:
        """The block map of one batch entry and head as text: one line per query block, one character
        per key block (``#`` full, ``+`` partial, ``.`` skipped). Maps larger than ``max_rows`` x
        ``max_cols`` show their first rows/columns and say how many were left out."""
        kinds = self._kinds_at(batch, head).cpu()
        nq, nkv = kinds.shape
        lines = ["".join(self.BLOCK_CHARS[int(v)] for v in row[:max_cols]) + (f" ... (+{nkv - max_cols})"
                 if nkv > max_cols else "") for row in kinds[:max_rows]]
        if nq > max_rows:
            lines.append(f"... ({nq - max_rows} more query blocks)")
        return "\n".join(lines)

    def __str__(self) -> str:
        """A one-line summary and the block map of batch entry 0, head 0 (see :meth:`draw`)."""
        b, h = self.batch_heads
        c = self.block_counts()
        return (f"BlockLayout {self.q_len} x {self.kv_len} tokens in blocks of {self.q_block} x {self.kv_block}, "
                f"batch_heads=({b}, {h}): {c['full']} full (#) + {c['partial']} partial (+) of {c['blocks']} blocks, "
                f"density {self.density():.3f}\n{self.draw()}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def full(
        cls,
        q_len: int,
        kv_len: int,
        *,
        q_block: int = 128,
        kv_block: int = 128,
        device: torch.device | str | None = None,
    ) -> BlockLayout:
        """Dense layout: every query block visits every key block as a full block.

        Args:
            q_len: number of query tokens.
            kv_len: number of key tokens.
            q_block: query block size (power of two >= 16).
            kv_block: key block size (power of two >= 16).
            device: device of the index tensors (default CPU); must match the q/k/v device at call time.
        """
        validate_block_size("q_block", q_block)
        validate_block_size("kv_block", kv_block)
        _validate_length("q_len", q_len)
        _validate_length("kv_len", kv_len)
        nq, nkv = _ceil_div(q_len, q_block), _ceil_div(kv_len, kv_block)
        mask = torch.ones(1, 1, nq, nkv, dtype=torch.bool, device=device)
        return cls.from_block_mask(mask, q_block, kv_block, q_len, kv_len)

    @classmethod
    def from_block_mask(
        cls,
        block_mask: torch.Tensor,
        q_block: int,
        kv_block: int,
        q_len: int,
        kv_len: int,
        *,
        key_padding_mask: torch.Tensor | None = None,
        allow_empty_rows: bool = False,
    ) -> BlockLayout:
        """Build a layout from a block-level boolean mask; every kept block is a full block.

        Args:
            block_mask: bool ``[B|1, H|1, NQ, NKV]`` with ``NQ = ceil(q_len/q_block)``, ``NKV =
                ceil(kv_len/kv_block)``; ``block_mask[b, h, i, j]`` keeps key block j for query block i.
            q_block: query block size (power of two >= 16).
            kv_block: key block size (power of two >= 16).
            q_len: number of query tokens.
            kv_len: number of key tokens.
            key_padding_mask: optional bool ``[B, kv_len]``, True = valid key (the batch dimension of
                the layout becomes B; query rows are not affected). When each batch element's invalid
                keys form one contiguous run (text padding), the layout keeps its blocks full and
                records the run as ``key_pad`` (tested only in the blocks it overlaps); otherwise kept
                blocks that contain an invalid key become *partial* blocks whose tile masks those keys
                out. Either way, key blocks holding only invalid keys are dropped.
            allow_empty_rows: allow query blocks that visit no key block (output 0, LSE -inf).
        """
        validate_block_size("q_block", q_block)
        validate_block_size("kv_block", kv_block)
        if not isinstance(block_mask, torch.Tensor) or block_mask.dtype != torch.bool or block_mask.dim() != 4:
            raise ValueError("block_mask must be a 4-D bool tensor [B|1, H|1, NQ, NKV]")
        _validate_length("q_len", q_len)
        _validate_length("kv_len", kv_len)
        nq, nkv = _ceil_div(q_len, q_block), _ceil_div(kv_len, kv_block)
        if block_mask.shape[2:] != (nq, nkv):
            raise ValueError(
                f"block_mask must have shape [B|1, H|1, {nq}, {nkv}] for q_len={q_len}, q_block={q_block}, "
                f"kv_len={kv_len}, kv_block={kv_block}; got {tuple(block_mask.shape)}"
            )
        device = block_mask.device
        if key_padding_mask is None:
            full_idx, full_cnt = _pack_rows(block_mask)
            zeros = torch.zeros_like(full_cnt)
            empty = torch.zeros(*full_cnt.shape, 1, dtype=torch.int32, device=device)
            tiles = torch.ones(1, q_block, kv_block, dtype=torch.bool, device=device)
            return cls(q_len, kv_len, q_block, kv_block, full_idx, full_cnt, empty, zeros, empty.clone(), tiles,
                       allow_empty_rows=allow_empty_rows)
        if (
            not isinstance(key_padding_mask, torch.Tensor)
            or key_padding_mask.dtype != torch.bool
            or key_padding_mask.dim() != 2
            or key_padding_mask.shape[1] != kv_len
        ):
            raise ValueError(f"key_padding_mask must be a bool tensor [B, kv_len={kv_len}] (True = valid key)")
        if key_padding_mask.device != device:
            raise ValueError(f"key_padding_mask is on {key_padding_mask.device}, block_mask on {device}")
        b = key_padding_mask.shape[0]
        if block_mask.shape[0] not in (1, b):
            raise ValueError(f"block_mask batch {block_mask.shape[0]} does not match key_padding_mask batch {b}")
        run = _single_invalid_run(key_padding_mask)
        if run is not None:
            dead = padding_overlap(run, kv_len, kv_block)[1]
            keep = block_mask.expand(b, -1, -1, -1) & ~dead[:, None, None, :]
            return cls.from_block_mask(keep, q_block, kv_block, q_len, kv_len,
                                       allow_empty_rows=allow_empty_rows).with_key_padding(run[:, 0], run[:, 1])
        pad = torch.ones(b, nkv * kv_block, dtype=torch.bool, device=device)
        pad[:, :kv_len] = key_padding_mask
        pad = pad.view(b, nkv, kv_block)  # [B, NKV, kb]; out-of-range tail counts as valid (kernel bounds it)
        block_all = pad.all(-1)  # [B, NKV]
        block_any = pad.any(-1)
        bm = block_mask.expand(b, -1, -1, -1) & block_any[:, None, None, :]
        full_mask = bm & block_all[:, None, None, :]
        part_mask = bm & ~block_all[:, None, None, :]
        full_idx, full_cnt = _pack_rows(full_mask)
        part_idx, part_cnt = _pack_rows(part_mask)
        # one tile per distinct key-validity pattern: row-constant tiles
        uniq, inverse = torch.unique(pad.reshape(b * nkv, kv_block), dim=0, return_inverse=True)
        tiles = uniq[:, None, :].expand(-1, q_block, -1).contiguous()
        tile_of_block = inverse.view(b, nkv).to(torch.int32)  # [B, NKV]
        part_tile = torch.gather(
            tile_of_block[:, None, None, :].expand(-1, part_idx.shape[1], part_idx.shape[2], -1),
            -1,
            part_idx.long(),
        ).to(torch.int32)
        return cls(q_len, kv_len, q_block, kv_block, full_idx, full_cnt, part_idx, part_cnt, part_tile.contiguous(),
                   tiles, allow_empty_rows=allow_empty_rows)

    def with_key_padding(self, start, end=None) -> BlockLayout:
        """The same layout with key padding: keys ``start[b] <= j < end[b]`` of batch element ``b`` are
        never attended (in any block).

        Args:
            start: int or int tensor ``[B]``: first padding key per batch element (e.g. the number of
                valid text tokens when the padded text comes first, or ``video_len + count`` when it
                comes last). ``start == end`` means no padding for that element.
            end: int or int tensor ``[B]`` (default ``kv_len``): one past the last padding key.

        Blocks stay as they are (full blocks that overlap the padding are tested for it in the
        kernel; blocks made only of padding are skipped by the kernel). Replaces any earlier padding.
        Raises ``ValueError`` for intervals outside ``[0, kv_len]`` or a batch that does not fit the
        layout's.
        """
        start_t = torch.as_tensor(start, device=self.device).reshape(-1)
        end_t = torch.as_tensor(self.kv_len if end is None else end, device=self.device).reshape(-1)
        if start_t.is_floating_point() or end_t.is_floating_point():
            raise ValueError("with_key_padding: start and end must be ints or integer tensors")
        n = max(start_t.shape[0], end_t.shape[0])
        if start_t.shape[0] not in (1, n) or end_t.shape[0] not in (1, n):
            raise ValueError(f"with_key_padding: start {tuple(start_t.shape)} and end {tuple(end_t.shape)} "
                             "must have one value or one per batch element")
        pad = torch.stack([start_t.expand(n), end_t.expand(n)], dim=1).to(torch.int32).contiguous()
        return dataclasses.replace(self, key_pad=pad)

    @classmethod
    def from_predicate(
        cls,
        predicate: WindowPredicate | EllipsoidPredicate,
        q_block: int,
        kv_block: int,
        q_len: int,
        kv_len: int,
        *,
        allow_empty_rows: bool = False,
    ) -> BlockLayout:
        """Layout of an analytic predicate, its blocks classified from coordinate bounding boxes.

        A block pair is *full* when the predicate's box test proves every pair allowed, *skipped* when
        it proves none allowed, *partial* otherwise (decided in the kernel by the predicate). The
        token mask is exact; only the split between full and partial blocks is conservative (tiled
        token orders make boxes tight). The batch and head dims are 1 (predicates are shared).

        Args:
            predicate: a :class:`~accel.kernels.WindowPredicate` or :class:`~accel.kernels.EllipsoidPredicate`.
            q_block, kv_block: block sizes (powers of two >= 16).
            q_len, kv_len: sequence lengths (the predicate's ranges must lie inside them).
            allow_empty_rows: allow query blocks that visit no key block.
        """
        validate_block_size("q_block", q_block)
        validate_block_size("kv_block", kv_block)
        if not isinstance(predicate, (WindowPredicate, EllipsoidPredicate)):
            raise TypeError(f"predicate must be a WindowPredicate or an EllipsoidPredicate, got {type(predicate).__name__}")
        predicate.check_lengths(q_len, kv_len)
        dev = predicate.device
        nq, nkv = _ceil_div(q_len, q_block), _ceil_div(kv_len, kv_block)
        q_rows = torch.arange(nq * q_block, device=dev).view(nq, q_block)
        k_cols = torch.arange(nkv * kv_block, device=dev).view(nkv, kv_block)
        any_, all_ = predicate.box_relation(torch.where(q_rows < q_len, q_rows, -1),
                                            torch.where(k_cols < kv_len, k_cols, -1))
        full_idx, full_cnt = _pack_rows((any_ & all_)[None, None])
        part_idx, part_cnt = _pack_rows((any_ & ~all_)[None, None])
        return cls(q_len, kv_len, q_block, kv_block, full_idx, full_cnt, part_idx, part_cnt, None, None,
                   allow_empty_rows=allow_empty_rows, predicate=predicate)

    @classmethod
    def from_token_mask(
        cls,
        mask: torch.Tensor,
        q_block: int,
        kv_block: int,
        *,
        allow_empty_rows: bool = False,
    ) -> BlockLayout:
        """Build the exact layout of a token-level mask (tests and small sizes: it reads an S x S tensor).

        Blocks whose in-bounds pairs are all allowed become full blocks, blocks with some allowed
        pair become partial blocks (with a deduplicated tile), blocks with none are skipped.

        Args:
            mask: bool ``[B|1, H|1, q_len, kv_len]``, True = the query may attend the key.
            q_block: query block size (power of two >= 16).
            kv_block: key block size (power of two >= 16).
            allow_empty_rows: allow query blocks with no allowed pair at all.
        """
        validate_block_size("q_block", q_block)
        validate_block_size("kv_block", kv_block)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 4:
            raise ValueError("mask must be a 4-D bool tensor [B|1, H|1, q_len, kv_len]")
        b, h, q_len, kv_len = mask.shape
        nq, nkv = _ceil_div(q_len, q_block), _ceil_div(kv_len, kv_block)
        padded = torch.zeros(b, h, nq * q_block, nkv * kv_block, dtype=torch.bool, device=mask.device)
        padded[..., :q_len, :kv_len] = mask
        inb = torch.zeros_like(padded[0, 0])
        inb[:q_len, :kv_len] = True
        blocks = padded.view(b, h, nq, q_block, nkv, kv_block).permute(0, 1, 2, 4, 3, 5)
        inb_blocks = inb.view(nq, q_block, nkv, kv_block).permute(0, 2, 1, 3)
        any_ = blocks.any(-1).any(-1)
        all_ = (blocks | ~inb_blocks).all(-1).all(-1)
        full_idx, full_cnt = _pack_rows(any_ & all_)
        part_mask = any_ & ~all_
        part_idx, part_cnt = _pack_rows(part_mask)
        flat = blocks[part_mask]  # [n_partial, qb, kb]
        if flat.shape[0] == 0:
            tiles = torch.ones(1, q_block, kv_block, dtype=torch.bool, device=mask.device)
            part_tile = torch.zeros_like(part_idx)
        else:
            tiles, inverse = torch.unique(flat.reshape(flat.shape[0], -1), dim=0, return_inverse=True)
            tiles = tiles.view(-1, q_block, kv_block)
            tile_of = torch.full((b, h, nq, nkv), 0, dtype=torch.int64, device=mask.device)
            tile_of[part_mask] = inverse
            part_tile = torch.gather(tile_of, -1, part_idx.long()).to(torch.int32)
        return cls(q_len, kv_len, q_block, kv_block, full_idx, full_cnt, part_idx, part_cnt,
                   part_tile.contiguous(), tiles.contiguous(), allow_empty_rows=allow_empty_rows)

    def __repr__(self) -> str:
        b, h = self.batch_heads
        return (
            f"BlockLayout(q_len={self.q_len}, kv_len={self.kv_len}, q_block={self.q_block}, kv_block={self.kv_block}, "
            f"batch_heads=({b}, {h}), full_cap={self.full_idx.shape[3]}, part_cap={self.part_idx.shape[3]}, "
            f"partial_kind={self.partial_kind!r}, n_tiles={self.tiles.shape[0]}, "
            f"key_pad={self.key_pad is not None}, device={self.device})"
        )


def _single_invalid_run(key_padding_mask: torch.Tensor) -> torch.Tensor | None:
    """int32 ``[B, 2]`` (start, end) of each row's invalid keys when they form one contiguous run per
    row (or none: start = end = kv_len), else None."""
    invalid = ~key_padding_mask
    n = invalid.shape[1]
    pos = torch.arange(n, device=invalid.device)
    count = invalid.sum(1)
    first = torch.where(invalid, pos, n).amin(1)
    last = torch.where(invalid, pos, -1).amax(1)
    contiguous = (count == 0) | (last - first + 1 == count)
    if not bool(contiguous.all()):
        return None
    start = torch.where(count == 0, n, first)
    end = torch.where(count == 0, n, last + 1)
    return torch.stack([start, end], 1).to(torch.int32)


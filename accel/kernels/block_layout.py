"""`BlockLayout`: which (query block, key block) pairs an attention call computes.

A layout is the currency between sparsity patterns and kernels. The query sequence
is cut into blocks of ``q_block`` tokens and the key sequence into blocks of ``kv_block`` tokens
(the last block of each may be ragged). For every (batch, head, query block) the layout lists the
key blocks to visit, split in two kinds:

* **full** blocks: every (query, key) pair in the block is allowed; the kernel runs no per-token
  test on them;
* **partial** blocks: a token-level predicate decides each pair. The predicate is a boolean *tile*
  of shape ``[q_block, kv_block]`` (row = query offset in its block, column = key offset in its
  block); each partial block names its tile by index into ``tiles``. Tiles are deduplicated, so
  regular patterns (windows on a grid, text padding) need only a handful of them.

Batch and head dimensions of the index tensors are either the real size or 1 (broadcast).
Keys at positions ``>= kv_len`` are never attended, whatever the layout says.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["BlockLayout", "validate_block_size"]


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
        part_tile: int32 ``[B|1, H|1, NQ, Cp]``: for each partial block, the index of its tile in ``tiles``.
        tiles: bool ``[n_tiles, q_block, kv_block]``: token-level predicates of partial blocks
            (``tiles[t, i, j]`` is True when query ``qb * q_block + i`` may attend key ``kb * kv_block + j``).
        allow_empty_rows: if False (default) every query block must visit at least one key block;
            if True, query blocks with no key block are allowed and produce output 0 and LSE -inf.

    All index tensors live on one device and share their broadcast shape ``[B|1, H|1, NQ]``.
    Construction validates everything (indices in range, counts within capacity, no key block listed
    twice in a row, tile indices in range) and raises ``ValueError`` naming the offending field.
    Prefer the constructors :meth:`full`, :meth:`from_block_mask` and :meth:`from_token_mask`.
    """

    q_len: int
    kv_len: int
    q_block: int
    kv_block: int
    full_idx: torch.Tensor
    full_cnt: torch.Tensor
    part_idx: torch.Tensor
    part_cnt: torch.Tensor
    part_tile: torch.Tensor
    tiles: torch.Tensor
    allow_empty_rows: bool = False
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def cached(self, key, build):
        """Return ``build()`` computed once per ``key`` for this layout (derived data such as a backend's
        translated mask or the density figure). Layouts are immutable, so the cache never goes stale."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def __post_init__(self) -> None:
        for name in ("q_len", "kv_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        validate_block_size("q_block", self.q_block)
        validate_block_size("kv_block", self.kv_block)
        nq, nkv = self.num_q_blocks, self.num_kv_blocks
        device = self.full_idx.device
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
        used_tiles = torch.arange(self.part_tile.shape[3], device=device) < self.part_cnt.unsqueeze(-1)
        if bool(((self.part_tile < 0) | (self.part_tile >= self.tiles.shape[0]))[used_tiles].any()):
            raise ValueError(f"part_tile holds tile indices outside [0, {self.tiles.shape[0]})")
        visits = self._visit_counts()
        if bool((visits > 1).any()):
            raise ValueError("a key block is listed more than once for one query block (in full_idx and/or part_idx)")
        if not self.allow_empty_rows and bool(((self.full_cnt + self.part_cnt) == 0).any()):
            raise ValueError(
                "some query block visits no key block; pass allow_empty_rows=True if empty rows are intended"
            )

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
        """The (B|1, H|1) broadcast shape of the index tensors."""
        return int(self.full_cnt.shape[0]), int(self.full_cnt.shape[1])

    @property
    def device(self) -> torch.device:
        """Device of the index tensors."""
        return self.full_idx.device

    @property
    def is_dense(self) -> bool:
        """True when every query block visits every key block as a full block (plain dense attention)."""
        return self.cached(
            "is_dense", lambda: bool((self.full_cnt == self.num_kv_blocks).all()) and not bool(self.part_cnt.any())
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
        """Block map ``int8 [B|1, H|1, NQ, NKV]``: 0 = skipped, 1 = full, 2 = partial."""
        full = self._scatter_rows(self.full_idx, self.full_cnt, torch.ones_like(self.full_idx))
        part = self._scatter_rows(self.part_idx, self.part_cnt, torch.ones_like(self.part_idx))
        return (full + 2 * part).to(torch.int8)

    def tile_map(self) -> torch.Tensor:
        """``int32 [B|1, H|1, NQ, NKV]``: the tile index of each partial block, -1 elsewhere."""
        plus_one = self._scatter_rows(self.part_idx, self.part_cnt, self.part_tile + 1)
        return (plus_one - 1).to(torch.int32)

    def to_dense_mask(self) -> torch.Tensor:
        """Materialise the token-level mask ``bool [B|1, H|1, q_len, kv_len]`` (tests and tiny sizes only)."""
        kinds = self.block_kinds()
        tmap = self.tile_map().long()
        qb, kb = self.q_block, self.kv_block
        full = (kinds == 1).repeat_interleave(qb, 2).repeat_interleave(kb, 3)
        tiles = self.tiles[tmap.clamp_min(0)]  # [B, H, NQ, NKV, qb, kb]
        part = tiles & (kinds == 2)[..., None, None]
        part = part.permute(0, 1, 2, 4, 3, 5).reshape(*kinds.shape[:2], kinds.shape[2] * qb, kinds.shape[3] * kb)
        return (full | part)[..., : self.q_len, : self.kv_len].contiguous()

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
        """Fraction of (query, key) pairs that are *allowed* (full-block pairs plus True tile entries)."""
        rows, cols = self._block_extent()
        area = rows[:, None].double() * cols[None, :].double()
        kinds = self.block_kinds()
        full = ((kinds == 1).double() * area).sum(dim=(-1, -2))
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
        part = torch.where(tmap >= 0, counts[position, tmap.clamp_min(0)], 0.0).sum(dim=(-1, -2))
        return float((full + part).mean() / (self.q_len * self.kv_len))

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
            key_padding_mask: optional bool ``[B, kv_len]``, True = valid key. Kept blocks that contain
                an invalid key become *partial* blocks whose tile masks those keys out (the batch
                dimension of the layout becomes B). Query rows are not affected.
            allow_empty_rows: allow query blocks that visit no key block (output 0, LSE -inf).
        """
        validate_block_size("q_block", q_block)
        validate_block_size("kv_block", kv_block)
        if not isinstance(block_mask, torch.Tensor) or block_mask.dtype != torch.bool or block_mask.dim() != 4:
            raise ValueError("block_mask must be a 4-D bool tensor [B|1, H|1, NQ, NKV]")
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
            f"n_tiles={self.tiles.shape[0]}, device={self.device})"
        )


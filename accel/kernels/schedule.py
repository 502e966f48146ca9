"""The order in which a block-sparse kernel visits a :class:`~accel.kernels.BlockLayout`'s blocks.

Computed once per layout (at construction) so that no call pays for it:

* each query block's full blocks are reordered so that the *clean* ones come first (no key of the
  block is out of bounds or padding: the kernel runs them with no per-token test at all), then the
  *edge* ones (the ragged last key block, blocks that overlap the batch's key padding); blocks made
  only of padding are dropped from the lists (``full_cnt`` / ``part_cnt`` shrink accordingly);
* ``row_order`` lists, for every (batch, head) row of the lists, the query blocks by decreasing work
  (full blocks + ``PARTIAL_WEIGHT`` x partial blocks, ties in block order), so a kernel that takes
  its programs in that order starts the longest rows first and ends on short ones;
* the tiles of a ``"tiles"`` layout are bit-packed (32 key columns per int32 word), and the
  coordinates of an analytic predicate are laid out axis-major (one contiguous int32 vector per axis).
"""

from __future__ import annotations

import dataclasses

import torch

from .mask_kinds import pack_tile_bits

__all__ = ["BlockSchedule", "build_schedule", "padding_overlap", "PARTIAL_WEIGHT", "PART_KIND_CODES"]

#: the kernel's code for each partial kind
PART_KIND_CODES = {"none": 0, "tiles": 1, "window": 2, "ellipsoid": 3}

# the cost of a partial block relative to a full one used to order rows (the kernel's target is <= 1.2)
PARTIAL_WEIGHT = 1.25


@dataclasses.dataclass(frozen=True)
class BlockSchedule:
    """Kernel-ready index lists of a layout (all int32, batch/head dims ``[B'|1, H'|1]`` where B' is
    the layout's batch, including its key padding's).

    Attributes:
        full_idx: ``[B', H', NQ, Cf]`` key blocks of the full blocks, clean ones first.
        full_cnt: ``[B', H', NQ]`` number of full blocks (clean + edge) per query block.
        clean_cnt: ``[B', H', NQ]`` number of clean full blocks (the first entries of a row).
        part_idx: ``[B', H', NQ, Cp]`` key blocks of the partial blocks (padding-only ones dropped).
        part_cnt: ``[B', H', NQ]`` number of partial blocks.
        part_tile: ``[B', H', NQ, Cp]`` tile index of each partial block (``"tiles"`` layouts).
        row_order: ``[B', H', NQ]`` query blocks by decreasing work.
        tile_bits: ``[n_tiles, q_block, ceil(kv_block / 32)]`` bit-packed tiles.
        has_edge: some row has an edge block (the kernel compiles its masked full-block loop).
        has_partial: some row has a partial block.
        mask_data: the kernel's predicate tensors: ``(tile_bits,)`` for tiles; ``(q_lo, q_hi, k_coord)``
            (window) or ``(q_coord, limit, k_coord)`` (ellipsoid), coordinates axis-major ``[A, n]``;
            empty when there is no partial block.
        mask_ints: ``(part_kind code, n_axes, q_start, n_q, k_start, n_k, k_free, w0, w1, w2)``;
            ``k_free`` = some key lies outside the predicate's key range.
    """

    full_idx: torch.Tensor
    full_cnt: torch.Tensor
    clean_cnt: torch.Tensor
    part_idx: torch.Tensor
    part_cnt: torch.Tensor
    part_tile: torch.Tensor
    row_order: torch.Tensor
    tile_bits: torch.Tensor
    has_edge: bool
    has_partial: bool
    mask_data: tuple[torch.Tensor, ...] = ()
    mask_ints: tuple[int, ...] = (0, 1, 0, 1, 0, 1, 0, 0, 0, 0)

    def to(self, device) -> BlockSchedule:
        """The same schedule with its tensors on ``device``."""
        return dataclasses.replace(self, **{
            f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        })


def padding_overlap(key_pad: torch.Tensor, kv_len: int, kv_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bool ``(overlap, dead)`` ``[P, NKV]``: key blocks that hold some / only padding keys, per row of
    ``key_pad`` (int32 ``[P, 2]`` intervals, see :attr:`BlockLayout.key_pad`)."""
    nkv = -(-kv_len // kv_block)
    lo = torch.arange(nkv, device=key_pad.device) * kv_block
    hi = torch.clamp(lo + kv_block, max=kv_len)
    start, end = key_pad[:, :1].long(), key_pad[:, 1:].long()
    overlap = (lo[None] < end) & (hi[None] > start) & (start < end)
    dead = (start <= lo[None]) & (hi[None] <= end)
    return overlap, dead


def _block_status(layout) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(edge, dead)`` bool ``[P, NKV]`` per padding batch and key block, or None when every block is clean."""
    kb = layout.kv_block
    ragged = layout.kv_len % kb != 0
    if layout.key_pad is None and not ragged:
        return None
    edge = torch.zeros(1, layout.num_kv_blocks, dtype=torch.bool, device=layout.device)
    edge[:, -1] = ragged
    dead = torch.zeros_like(edge)
    if layout.key_pad is not None:
        overlap, dead = padding_overlap(layout.key_pad, layout.kv_len, kb)
        edge = edge | overlap
    return edge, dead


def _reorder(idx: torch.Tensor, cnt: torch.Tensor, rank_of_block: torch.Tensor, extra: torch.Tensor | None):
    """Stable-sort each row's used entries by ``rank_of_block`` (``[P, NKV]`` int, 2 = drop).

    Returns the reordered idx (and ``extra`` permuted alike), and the number of entries of rank 0 and
    of rank <= 1 per row.
    """
    p = rank_of_block.shape[0]
    b = max(idx.shape[0], p)
    idx = idx.expand(b, *idx.shape[1:])
    cnt = cnt.expand(b, *cnt.shape[1:])
    used = torch.arange(idx.shape[3], device=idx.device) < cnt.unsqueeze(-1)
    ranks = rank_of_block.expand(b, -1)[:, None, None, :].expand(-1, idx.shape[1], idx.shape[2], -1)
    rank = torch.gather(ranks, -1, idx.long())
    rank = torch.where(used, rank, 3)
    order = torch.sort(rank, dim=-1, stable=True).indices
    new_idx = torch.gather(idx, -1, order)
    new_extra = None if extra is None else torch.gather(extra.expand(b, *extra.shape[1:]), -1, order)
    n0 = (rank == 0).sum(-1, dtype=torch.int32)
    n1 = n0 + (rank == 1).sum(-1, dtype=torch.int32)
    return new_idx.contiguous(), (None if new_extra is None else new_extra.contiguous()), n0, n1


def build_schedule(layout) -> BlockSchedule:
    """The :class:`BlockSchedule` of ``layout`` (a validated :class:`~accel.kernels.BlockLayout`)."""
    status = _block_status(layout)
    full_idx, full_cnt = layout.full_idx, layout.full_cnt
    part_idx, part_cnt, part_tile = layout.part_idx, layout.part_cnt, layout.part_tile
    if status is None:
        clean_cnt = full_cnt
        has_edge = False
    else:
        edge, dead = status
        rank = torch.where(dead, 2, edge.long())
        full_idx, _, clean_cnt, full_cnt = _reorder(full_idx, full_cnt, rank, None)
        part_idx, part_tile, part_cnt, _ = _reorder(part_idx, part_cnt, torch.where(dead, 2, 0), part_tile)
        has_edge = bool((full_cnt > clean_cnt).any())
    b = max(full_cnt.shape[0], part_cnt.shape[0])
    full_cnt = full_cnt.expand(b, *full_cnt.shape[1:])
    clean_cnt = clean_cnt.expand(b, *clean_cnt.shape[1:])
    work = full_cnt.double() + PARTIAL_WEIGHT * part_cnt.double()
    row_order = torch.sort(work, dim=-1, descending=True, stable=True).indices.to(torch.int32)
    if part_tile.shape != part_idx.shape:
        part_tile = part_tile.expand_as(part_idx)
    shape = full_cnt.shape
    part_cnt = part_cnt.expand(shape)
    row_order = row_order.expand(shape)
    tile_bits = pack_tile_bits(layout.tiles)
    has_partial = bool(part_cnt.any())
    mask_data, mask_ints = _mask_data(layout, tile_bits, has_partial)
    return BlockSchedule(
        full_idx=full_idx.contiguous(),
        full_cnt=full_cnt.contiguous(),
        clean_cnt=clean_cnt.contiguous(),
        part_idx=part_idx.contiguous(),
        part_cnt=part_cnt.contiguous(),
        part_tile=part_tile.contiguous(),
        row_order=row_order.contiguous(),
        tile_bits=tile_bits,
        has_edge=has_edge,
        has_partial=has_partial,
        mask_data=mask_data,
        mask_ints=mask_ints,
    )


def _mask_data(layout, tile_bits: torch.Tensor, has_partial: bool) -> tuple[tuple, tuple]:
    """(mask_data, mask_ints) of :class:`BlockSchedule` for the layout's partial kind."""
    pred = layout.predicate
    if not has_partial:
        return (), (0, 1, 0, 1, 0, 1, 0, 0, 0, 0)
    if pred is None:
        return (tile_bits,), (PART_KIND_CODES["tiles"], 1, 0, 1, 0, 1, 0, 0, 0, 0)
    k_free = int(pred.k_start > 0 or pred.k_start + pred.n_k < layout.kv_len)
    ranges = (pred.n_axes, pred.q_start, pred.n_q, pred.k_start, pred.n_k, k_free)
    if pred.kind == "window":
        data = (pred.q_lo.t().contiguous(), pred.q_hi.t().contiguous(), pred.k_coord.t().contiguous())
        weights = (0, 0, 0)
    else:
        data = (pred.q_coord.t().contiguous(), pred.limit, pred.k_coord.t().contiguous())
        weights = tuple(pred.weights) + (0,) * (3 - pred.n_axes)
    return data, (PART_KIND_CODES[pred.kind], *ranges, *weights)

"""Joint layouts: a video block layout and the text span in one kernel call.

A joint (text + video) sequence under the default text rule -- text queries attend every valid key,
video queries attend every valid text key plus their pattern over the video keys -- is one
block-sparse attention over the whole sequence. Running it as one kernel call (instead of separate
text-query and text-key calls merged by log-sum-exp) removes most of the fixed per-call cost
measured on the H200 (``accel.kernels.cost``).

:func:`joint_text_layout` places the video layout at its offset in the joint sequence and adds full
text rows and columns. Text placed *first* must fill whole blocks (its length a multiple of the
block size, as FLUX's 512 tokens are). Text placed *last* may start inside the last video block
(HunyuanVideo: 118,800 video tokens = 928 blocks of 128 + 16): that block row and column then hold
both kinds of tokens and become partial blocks whose tiles combine the video tile with all-True text
rows / columns (a handful of distinct tiles). :func:`with_key_validity` then removes invalid keys
(padding positions of a padded video order; padded text unless the methods give it to the kernel as
key padding, :func:`accel.methods.base.text_padding_interval`) block by block: a key block whose keys are
all invalid is dropped, one with some invalid keys is masked by a row-constant tile.

Exactness: the joint layout's token mask equals the default text rule around the video layout's
mask (tests compare with a brute-force construction).
"""

from __future__ import annotations

import torch

from accel.kernels import BlockLayout

__all__ = ["joint_text_layout", "with_key_validity", "layout_from_kinds"]


def _pack(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """bool ``[B, H, NQ, NKV]`` -> (int32 kept columns ascending ``[B, H, NQ, cap]``, int32 counts ``[B, H, NQ]``).

    ``O(nnz)``: the row-major nonzeros are already sorted by row, then column."""
    *lead, nkv = mask.shape
    flat = mask.reshape(-1, nkv)
    counts = flat.sum(-1)
    cap = max(1, int(counts.max()) if counts.numel() else 1)
    rows, cols = flat.nonzero(as_tuple=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.shape[0]) - starts[rows]
    out = torch.zeros(flat.shape[0], cap, dtype=torch.int32)
    out[rows, slot] = cols.to(torch.int32)
    return out.reshape(*lead, cap).contiguous(), counts.to(torch.int32).reshape(lead).contiguous()


def layout_from_kinds(kinds: torch.Tensor, tile_map: torch.Tensor, tiles: torch.Tensor, q_len: int, kv_len: int,
                      block: int) -> BlockLayout:
    """A :class:`~accel.kernels.BlockLayout` from a block map (0 skipped, 1 full, 2 partial) ``[B, H, NQ, NKV]``,
    the tile index of each partial block (same shape; ignored elsewhere) and the tiles ``[n, block, block]``."""
    full_idx, full_cnt = _pack(kinds == 1)
    part_idx, part_cnt = _pack(kinds == 2)
    part_tile = torch.gather(tile_map.long(), -1, part_idx.long()).to(torch.int32)
    part_tile = torch.where(torch.arange(part_idx.shape[-1]) < part_cnt[..., None], part_tile, 0).contiguous()
    if tiles.shape[0] == 0:
        tiles = torch.ones(1, block, block, dtype=torch.bool)
    return BlockLayout(q_len, kv_len, block, block, full_idx, full_cnt, part_idx, part_cnt, part_tile,
                       tiles.contiguous(), allow_empty_rows=True)


class _Tiles:
    """A growing, deduplicated list of bool tiles."""

    def __init__(self, tiles: torch.Tensor) -> None:
        self.tiles = list(tiles)
        self.index = {}

    def add(self, tile: torch.Tensor) -> int:
        key = tile.numpy().tobytes()
        if key not in self.index:
            self.index[key] = len(self.tiles)
            self.tiles.append(tile)
        return self.index[key]

    def stack(self, block: int) -> torch.Tensor:
        return torch.stack(self.tiles) if self.tiles else torch.zeros(0, block, block, dtype=torch.bool)


def _compose(kinds, tmap, video_tiles, table: _Tiles, keep: torch.Tensor):
    """Kinds and tile ids of blocks mixing video and text tokens: the video content (``kind``/``tile``)
    where ``keep`` (bool ``[block, block]``) is True, all-True (text) elsewhere. ``kinds``/``tmap`` are
    1-D views of the entries to rewrite; returns new (kinds, tile ids)."""
    out_k = torch.empty_like(kinds)
    out_t = torch.zeros_like(tmap)
    pairs = torch.stack((kinds.long(), torch.where(kinds == 2, tmap.long(), -1)), 1)
    uniq, inverse = torch.unique(pairs, dim=0, return_inverse=True)
    block = keep.shape[0]
    for u, (kind, tile) in enumerate(uniq.tolist()):
        if kind == 2:
            content = video_tiles[tile]
        else:
            content = torch.full((block, block), kind == 1, dtype=torch.bool)
        joined = torch.where(keep, content, True)
        sel = inverse == u
        if bool(joined.all()):
            out_k[sel] = 1
        else:
            out_k[sel] = 2
            out_t[sel] = table.add(joined)
    return out_k, out_t


def joint_text_layout(video: BlockLayout, text_len: int, text_side: str | None) -> BlockLayout | None:
    """The layout of the whole joint sequence under the default text rule (module docstring), or ``None``.

    Args:
        video: the video x video layout (``q_len == kv_len``, equal query and key blocks; batch/head
            dimensions broadcast or real). Its ``q_len`` is the number of video positions.
        text_len: text tokens in the sequence (>= 0).
        text_side: ``"first"``, ``"last"`` or ``None`` (no text).

    Returns:
        A :class:`~accel.kernels.BlockLayout` over ``q_len + text_len`` positions with the video
        layout's batch/head dimensions, every key valid (apply :func:`with_key_validity` for padding);
        ``video`` itself without text; ``None`` when the text comes first and its length is not a
        multiple of the block size (the video blocks would not line up with the joint blocks).
    """
    if video.q_block != video.kv_block or video.q_len != video.kv_len:
        raise ValueError(f"the video layout must be square with equal blocks, got {video!r}")
    if text_len == 0:
        return video
    device = video.device
    video = video.to("cpu")
    b = video.q_block
    nv = video.q_len
    if text_side == "first" and text_len % b:
        return None
    s = nv + text_len
    nb, nbv = -(-s // b), video.num_q_blocks
    kv = video.block_kinds()
    tv = video.tile_map()
    bh = kv.shape[:2]
    kinds = torch.ones(*bh, nb, nb, dtype=torch.int8)
    tmap = torch.zeros(*bh, nb, nb, dtype=torch.int32)
    table = _Tiles(video.tiles.cpu())
    if text_side == "first":
        off = text_len // b
        kinds[..., off:, off:] = kv
        tmap[..., off:, off:] = tv
        return layout_from_kinds(kinds, tmap, table.stack(b), s, s, b).to(device)
    r = nv - (nbv - 1) * b  # video tokens in the last video block
    if r == b:
        kinds[..., :nbv, :nbv] = kv
        tmap[..., :nbv, :nbv] = tv
        return layout_from_kinds(kinds, tmap, table.stack(b), s, s, b).to(device)
    st = nbv - 1  # the block holding the last r video tokens and the first text tokens
    kinds[..., :st, :st] = kv[..., :st, :st]
    tmap[..., :st, :st] = tv[..., :st, :st]
    first = torch.arange(b) < r
    vt = video.tiles.cpu()
    for rows, cols, keep in (
        (slice(0, st), slice(st, st + 1), first[None, :].expand(b, b)),  # video queries x mixed key block
        (slice(st, st + 1), slice(0, st), first[:, None].expand(b, b)),  # mixed query block x video keys
        (slice(st, st + 1), slice(st, st + 1), first[:, None] & first[None, :]),  # the corner
    ):
        k_src, t_src = kv[..., rows, cols], tv[..., rows, cols]
        if k_src.numel() == 0:
            continue
        nk, nt = _compose(k_src.reshape(-1), t_src.reshape(-1), vt, table, keep)
        kinds[..., rows, cols] = nk.reshape(k_src.shape)
        tmap[..., rows, cols] = nt.reshape(t_src.shape).to(torch.int32)
    return layout_from_kinds(kinds, tmap, table.stack(b), s, s, b).to(device)


def with_key_validity(layout: BlockLayout, key_valid: torch.Tensor | None) -> BlockLayout:
    """``layout`` with invalid keys removed: bool ``key_valid`` ``[B|1, kv_len]`` (True = valid), or ``None``
    (returns ``layout``).

    Key blocks with no valid key are dropped; visited blocks with some invalid key become partial
    blocks whose tile is the block's tile (all True for a full block) AND the row-constant validity of
    its keys. The result's batch dimension is ``key_valid``'s when that is not 1 (the layout's must
    then be 1 or equal).
    """
    if key_valid is None:
        return layout
    b = layout.kv_block
    kb, n = key_valid.shape
    if n != layout.kv_len:
        raise ValueError(f"key_valid must have shape [B|1, kv_len={layout.kv_len}], got {tuple(key_valid.shape)}")
    lb, lh = layout.batch_heads
    if kb != 1 and lb not in (1, kb):
        raise ValueError(f"key_valid batch {kb} does not match the layout's batch {lb}")
    nkv = layout.num_kv_blocks
    valid = torch.ones(kb, nkv * b, dtype=torch.bool)
    valid[:, :n] = key_valid.cpu()
    valid[:, n:] = valid[:, n - 1:n]  # beyond kv_len: as the last key, so a ragged last block of invalid keys is dropped
    valid = valid.view(kb, nkv, b)
    if bool(valid.all()):
        return layout
    patterns, pid = torch.unique(valid.reshape(kb * nkv, b), dim=0, return_inverse=True)
    pid = pid.view(kb, nkv)
    all_ok, none_ok = patterns.all(1), ~patterns.any(1)
    batch = max(lb, kb)
    kinds = layout.block_kinds().cpu().expand(batch, lh, -1, -1).clone()
    tmap = layout.tile_map().cpu().expand(batch, lh, -1, -1).clone()
    p = pid[:, None, None, :].expand(batch, lh, kinds.shape[2], -1)
    kinds[none_ok[p] & (kinds > 0)] = 0
    mixed = ~all_ok[p] & ~none_ok[p] & (kinds > 0)
    tiles = layout.tiles.cpu()
    table = _Tiles(tiles)
    if bool(mixed.any()):
        base = torch.where(kinds[mixed] == 2, tmap[mixed].long(), -1)
        combos, inverse = torch.unique(torch.stack((base, p[mixed].long()), 1), dim=0, return_inverse=True)
        new_ids = []
        for tile, pattern in combos.tolist():
            content = tiles[tile] if tile >= 0 else torch.ones(layout.q_block, b, dtype=torch.bool)
            new_ids.append(table.add(content & patterns[pattern][None, :]))
        kinds[mixed] = 2
        tmap[mixed] = torch.tensor(new_ids, dtype=torch.int32)[inverse]
    out = layout_from_kinds(kinds, tmap, table.stack(b), layout.q_len, layout.kv_len, b)
    return out.to(layout.device)

"""FlexAttention backend: the same :class:`BlockLayout` executed by ``torch.nn.attention.flex_attention``.

The layout maps one-to-one onto a FlexAttention ``BlockMask`` built with ``BlockMask.from_kv_blocks``:
our full blocks are its ``full_kv_indices`` (no ``mask_mod`` call), our partial blocks its
``kv_indices`` with a ``mask_mod`` that looks the pair up in the layout's tiles. It is the CPU speed
path (compiled by inductor's C++ template) and the GPU baseline.

CPU limits handled here (torch 2.13, checked on this project's machines):
* eager ``flex_attention`` ignores the block structure and materialises the full score matrix; we
  always call the compiled function.
* compiled flex on CPU cannot return the LSE; with ``return_lse=True`` on CPU we fall back to the
  reference backend and log why, once per process.
* a BlockMask row with full blocks but no partial block breaks the C++ code generation, so on CPU one
  full block of such rows is demoted to a partial block with an all-True tile (same result).
"""

from __future__ import annotations

import functools
import logging

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention, noop_mask

from .triton_fwd import kernel_head_dim

__all__ = ["flex_block_sparse_attention", "to_flex_block_mask"]

logger = logging.getLogger(__name__)


# Distinct shapes each compile once; past dynamo's recompile limit it would silently run *eager*
# flex, which ignores the block structure (wrong results with our BlockMasks): raise the limit and make
# hitting it an error instead.
_RECOMPILE_LIMIT = 64


@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def _run_flex(qt, kt, vt, block_mask, scale, return_lse):
    options = None
    if qt.device.type == "cpu" and block_mask.mask_mod is noop_mask:
        options = {"SKIP_MASK_SCORE": True}  # CPU template: no mask/score code at all (~5-10% faster)
    if torch.compiler.is_compiling():  # inside the user's torch.compile: their graph compiles flex
        return flex_attention(qt, kt, vt, block_mask=block_mask, scale=scale, return_lse=return_lse,
                              kernel_options=options)
    with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
        return _compiled_flex()(qt, kt, vt, block_mask=block_mask, scale=scale, return_lse=return_lse,
                                kernel_options=options)


def _padded_rows(idx: torch.Tensor, cnt: torch.Tensor, width: int) -> torch.Tensor:
    """Widen ``[B,H,NQ,C]`` index rows to ``width`` columns (FlexAttention wants ``NKV`` columns)."""
    out = torch.zeros(*idx.shape[:3], width, dtype=torch.int32, device=idx.device)
    c = min(idx.shape[3], width)
    out[..., :c] = idx[..., :c]
    return out


def to_flex_block_mask(layout, batch: int, heads: int) -> BlockMask:
    """Translate a :class:`BlockLayout` into an equivalent FlexAttention ``BlockMask``.

    Args:
        layout: the block layout (its device is the BlockMask's device).
        batch: the batch size of the attention call (the layout may broadcast over it).
        heads: the number of heads of the attention call (the layout may broadcast over it).
    """
    nkv = layout.num_kv_blocks
    full_idx, full_cnt = layout.full_idx, layout.full_cnt
    part_idx, part_cnt, part_tile = layout.part_idx, layout.part_cnt, layout.part_tile
    tiles = layout.tiles
    if layout.device.type == "cpu":
        needs = (part_cnt == 0) & (full_cnt > 0)
        if bool(needs.any()):
            # demote the last full block of such rows to a partial block with an all-True tile
            tiles = torch.cat([tiles, torch.ones_like(tiles[:1])])
            all_true = tiles.shape[0] - 1
            last = (full_cnt - 1).clamp_min(0).long().unsqueeze(-1)
            moved = torch.gather(full_idx, -1, last).squeeze(-1)
            full_cnt = torch.where(needs, full_cnt - 1, full_cnt)
            part_cnt = torch.where(needs, 1, part_cnt).to(torch.int32)
            part_idx = part_idx.clone()
            part_tile = part_tile.clone()
            part_idx[..., 0] = torch.where(needs, moved, part_idx[..., 0])
            part_tile[..., 0] = torch.where(needs, all_true, part_tile[..., 0])
    lb, lh = full_cnt.shape[:2]
    # tile index per (query block, key block), -1 where the block is not partial
    used = torch.arange(part_idx.shape[3], device=part_idx.device) < part_cnt.unsqueeze(-1)
    tile_map = torch.full((*part_cnt.shape, nkv + 1), -1, dtype=torch.int32, device=part_idx.device)
    tile_map.scatter_(-1, torch.where(used, part_idx.long(), nkv), torch.where(used, part_tile, -1))
    tile_map = tile_map[..., :nkv].contiguous()
    qb, kb = layout.q_block, layout.kv_block
    b_sel = (lambda b: b) if lb > 1 else (lambda b: b * 0)
    h_sel = (lambda h: h) if lh > 1 else (lambda h: h * 0)

    def mask_mod(b, h, q_idx, kv_idx):
        t = tile_map[b_sel(b), h_sel(h), q_idx // qb, kv_idx // kb]
        return tiles[t.clamp(min=0), q_idx % qb, kv_idx % kb]

    used_tiles = torch.where(used, part_tile, 0)[used]
    if used_tiles.numel() == 0 or bool(tiles[used_tiles.unique().long()].all()):
        mask_mod = None  # every partial block allows all pairs: skip the per-pair table lookups

    def widen(x, cnt):
        return _padded_rows(x, cnt, nkv).expand(batch, heads, -1, -1).contiguous()

    return BlockMask.from_kv_blocks(
        part_cnt.expand(batch, heads, -1).contiguous(),
        widen(part_idx, part_cnt),
        full_cnt.expand(batch, heads, -1).contiguous(),
        widen(full_idx, full_cnt),
        BLOCK_SIZE=(qb, kb),
        mask_mod=mask_mod,
        seq_lengths=(layout.q_len, layout.kv_len),
    )


def flex_block_sparse_attention(q, k, v, layout, scale: float, return_lse: bool, block_mask=None):
    """Run compiled FlexAttention on ``[B, S, H, D]`` tensors (inputs validated by the caller).

    Args:
        q, k, v: query ``[B, Sq, H, D]``, key and value ``[B, Skv, H, D]``.
        layout: the :class:`BlockLayout` to execute.
        scale: softmax scale.
        return_lse: also return the LSE ``[B, Sq, H]`` (float32). On CPU this falls back to the
            reference backend (compiled CPU flex has no LSE output), logged once.
        block_mask: an already translated BlockMask for this layout and shape (default: translated
            once per (layout, batch, heads) and cached on the layout).
    """
    if return_lse and q.device.type == "cpu":
        from .reference import reference_attention

        _log_once_cpu_lse()
        return reference_attention(q, k, v, layout, scale, True)
    bsz, _, heads, d = q.shape
    if block_mask is None:
        block_mask = layout.cached(("flex_block_mask", bsz, heads), lambda: to_flex_block_mask(layout, bsz, heads))
    qt, kt, vt = (x.permute(0, 2, 1, 3) for x in (q, k, v))
    dp = kernel_head_dim(d)
    if dp != d:  # zero-padding the head dim changes neither q.k nor the kept v columns
        qt, kt, vt = (torch.nn.functional.pad(x, (0, dp - d)) for x in (qt, kt, vt))
    result = _run_flex(qt, kt, vt, block_mask, scale, return_lse)
    if return_lse:
        out, lse = result
        return out[..., :d].permute(0, 2, 1, 3), lse.float().permute(0, 2, 1)
    return result[..., :d].permute(0, 2, 1, 3)


@functools.cache
def _log_once_cpu_lse() -> None:
    logger.warning(
        "accel: compiled FlexAttention cannot return the LSE on CPU; return_lse=True on CPU runs the "
        "dense reference backend instead (same result, dense cost)."
    )

"""FlexAttention backend: the same :class:`BlockLayout` executed by ``torch.nn.attention.flex_attention``.

The layout maps onto a FlexAttention ``BlockMask`` built with ``BlockMask.from_kv_blocks``: our
full blocks are its ``full_kv_indices`` (no ``mask_mod`` call), our partial blocks its ``kv_indices``
with a ``mask_mod`` that evaluates the layout's partial kind (a tile lookup, or the window /
ellipsoid rule from coordinates) and its key padding. It is the CPU speed path (compiled by
inductor's C++ template) and the GPU baseline.

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

from .schedule import padding_overlap
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


def _rows(mask: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """bool ``[B, H, NQ, NKV]`` -> (kept key blocks ``[B, H, NQ, width]`` ascending, counts ``[B, H, NQ]``)."""
    counts = mask.sum(-1, dtype=torch.int32)
    order = torch.sort((~mask).to(torch.int8), dim=-1, stable=True).indices[..., :width].to(torch.int32)
    order = torch.where(torch.arange(width, device=mask.device) < counts.unsqueeze(-1), order, 0)
    return order.contiguous(), counts.contiguous()


def _predicate_mod(layout):
    """``f(b, h, q_idx, kv_idx) -> bool`` of the layout's partial-block predicate (tile lookup or the
    analytic rule), in ops FlexAttention can trace; positions are absolute."""
    qb, kb = layout.q_block, layout.kv_block
    pred = layout.predicate
    if pred is None:
        tmap = layout.tile_map().contiguous()
        tiles = layout.tiles
        lb, lh = tmap.shape[:2]

        def tile_mod(b, h, q_idx, kv_idx):
            t = tmap[b if lb > 1 else b * 0, h if lh > 1 else h * 0, q_idx // qb, kv_idx // kb]
            return tiles[t.clamp(min=0), q_idx % qb, kv_idx % kb]

        return tile_mod
    qs, nq, ks, nk, axes = pred.q_start, pred.n_q, pred.k_start, pred.n_k, pred.n_axes

    def ranges(q_idx, kv_idx):
        free = (q_idx < qs) | (q_idx >= qs + nq) | (kv_idx < ks) | (kv_idx >= ks + nk)
        return free, (q_idx - qs).clamp(0, nq - 1), (kv_idx - ks).clamp(0, nk - 1)

    if pred.kind == "window":
        q_lo, q_hi, k_c = pred.q_lo, pred.q_hi, pred.k_coord

        def window_mod(b, h, q_idx, kv_idx):
            free, ql, kl = ranges(q_idx, kv_idx)
            ok = free | ~free  # all True, shaped like the indices
            for a in range(axes):
                c = k_c[kl, a]
                ok = ok & (q_lo[ql, a] <= c) & (c <= q_hi[ql, a])
            return ok | free

        return window_mod
    q_c, k_c, limit, weights = pred.q_coord, pred.k_coord, pred.limit, pred.weights

    def ellipsoid_mod(b, h, q_idx, kv_idx):
        free, ql, kl = ranges(q_idx, kv_idx)
        dist = (q_idx * 0).long()
        for a in range(axes):
            d = (q_c[ql, a] - k_c[kl, a]).long()
            dist = dist + weights[a] * d * d
        return (dist <= limit[ql].long()) | free

    return ellipsoid_mod


def to_flex_block_mask(layout, batch: int, heads: int) -> BlockMask:
    """Translate a :class:`BlockLayout` into an equivalent FlexAttention ``BlockMask``.

    Full blocks that overlap the layout's key padding become partial blocks for FlexAttention (it
    runs no ``mask_mod`` on full blocks); blocks made only of padding are dropped. The ``mask_mod``
    evaluates the layout's partial kind (tile lookup, window or ellipsoid rule) and the padding.

    Args:
        layout: the block layout (its device is the BlockMask's device).
        batch: the batch size of the attention call (the layout may broadcast over it).
        heads: the number of heads of the attention call (the layout may broadcast over it).
    """
    nkv = layout.num_kv_blocks
    kinds = layout.block_kinds().expand(batch, heads, -1, -1)
    full = kinds == 1
    pred_blocks = kinds == 2
    part = pred_blocks
    valid = layout.valid_keys()
    if layout.key_pad is not None:
        overlap, dead = padding_overlap(layout.key_pad, layout.kv_len, layout.kv_block)
        overlap, dead = overlap.expand(batch, -1)[:, None, None], dead.expand(batch, -1)[:, None, None]
        part = (part | (full & overlap)) & ~dead
        full = full & ~overlap
    if layout.device.type == "cpu":
        # rows with full blocks but no partial block break the C++ template: demote the last full block
        needs = full.any(-1) & ~part.any(-1)
        if bool(needs.any()):
            last = nkv - 1 - torch.flip(full, dims=(-1,)).to(torch.int8).argmax(-1, keepdim=True)
            demote = torch.zeros_like(full).scatter_(-1, last, True) & needs.unsqueeze(-1)
            full = full & ~demote
            part = part | demote
    full_idx, full_cnt = _rows(full, nkv)
    part_idx, part_cnt = _rows(part, nkv)
    qb, kb = layout.q_block, layout.kv_block
    needs_pred = bool(pred_blocks.any()) and not (layout.predicate is None and _all_true_tiles(layout))
    mask_mod = None
    if needs_pred or valid is not None:
        pred = _predicate_mod(layout) if needs_pred else None
        pmap = pred_blocks.contiguous()
        pb = 1 if valid is None else valid.shape[0]

        def mask_mod(b, h, q_idx, kv_idx):
            ok = (q_idx >= 0) & (kv_idx >= 0)
            if pred is not None:
                ok = ~pmap[b, h, q_idx // qb, kv_idx // kb] | pred(b, h, q_idx, kv_idx)
            if valid is not None:
                ok = ok & valid[b if pb > 1 else b * 0, kv_idx]
            return ok

    return BlockMask.from_kv_blocks(
        part_cnt, part_idx, full_cnt, full_idx,
        BLOCK_SIZE=(qb, kb),
        mask_mod=mask_mod,
        seq_lengths=(layout.q_len, layout.kv_len),
    )


def _all_true_tiles(layout) -> bool:
    """Every tile used by a partial block allows all of its pairs (then no per-pair test is needed)."""
    used = torch.arange(layout.part_idx.shape[3], device=layout.device) < layout.part_cnt.unsqueeze(-1)
    used_tiles = layout.part_tile[used]
    return used_tiles.numel() == 0 or bool(layout.tiles[used_tiles.unique().long()].all())


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

"""Gather backend: a :class:`BlockLayout` run as a few calls of PyTorch's own CPU flash attention.

Why: on CPU, PyTorch's fused SDPA kernel (``aten._scaled_dot_product_flash_attention_for_cpu``, the
kernel ``F.scaled_dot_product_attention`` runs on CPU) computes a pair much faster than compiled
FlexAttention's C++ template (``benchmarks/results/kernels_cpu.json``). The sparse attention of one
query block is plain attention over the keys of its visited blocks, so once the rows are grouped the
work is regular:

* **full blocks**: query blocks are grouped by their number of full key blocks (and whether the
  ragged last key block is among them); each group is SDPA calls whose batch axis is the query blocks.
  A query block's keys are read through a **strided view** when consecutive query blocks visit
  contiguous key-block ranges whose start advances by a constant step (a band: no copy at all), and
  are otherwise **gathered** with ``index_select`` on a block view of k / v, in chunks of about
  ``_GATHER_CHUNK_BYTES`` written into one reused buffer (no per-row Python loop; memory bounded);
* **partial blocks**: the same grouping over the partial blocks, SDPA with an additive mask built
  from the layout's tiles (``[.., 1, L]``, broadcast over queries, when every tile is constant along
  its query axis, e.g. key padding), then merged with the full-block result of the same rows by the
  exact log-sum-exp merge (:func:`accel.kernels.merge_attention`).

Results are written group after group into one buffer and put back in query order by a single
``index_select`` (scattering bf16 rows with ``index_copy_`` is ~40x slower on CPU).

Ragged lengths are exact: a ragged last query block runs on zero-padded queries whose rows are
dropped; the ragged last key block is always last in its row (indices are sorted), so its row simply
has fewer keys and the padding keys never enter an SDPA call. Rows with no key give output 0 and LSE
``-inf``.

The LSE is free: the CPU flash kernel returns it (natural log), so ``return_lse=True`` costs nothing
here (compiled flex on CPU cannot return it).

Layouts whose head dimension is broadcast (``batch_heads[1] == 1``) gather all heads of a block at
once from the ``[B, S, H, D]`` tensors (no transpose); per-head layouts transpose q / k / v to
``[B, H, S, D]`` once per call.

Limits: CPU tensors only (on CUDA use the Triton kernel). Numerics are those of PyTorch's CPU flash
kernel (fp32 accumulation); results differ from the other backends only by rounding.
"""

from __future__ import annotations

import dataclasses

import torch

from .merge import merge_attention

__all__ = ["gather_block_sparse_attention", "HAVE_CPU_FLASH"]

_OP = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
HAVE_CPU_FLASH = _OP is not None

# Gathered rows are processed in chunks whose gathered k + v take about this many bytes (they stay in
# cache and the buffer is reused; measured in benchmarks/results/gather_cpu_tuning.json).
_GATHER_CHUNK_BYTES = 8 << 20
# Runs of fewer query blocks than this are gathered instead of read through a strided view.
_MIN_STRIDED_RUN = 4


@dataclasses.dataclass(frozen=True)
class _Strided:
    """Query blocks ``i0 .. i0+n-1`` of sequence ``seq``; the r-th reads ``length`` keys from key block
    ``s0 + step * r`` on. Results go to buffer slots ``slot .. slot+n-1``."""

    seq: int
    i0: int
    n: int
    s0: int
    step: int
    length: int
    slot: int


@dataclasses.dataclass(frozen=True)
class _Gathered:
    """Rows ``rows`` (``seq * NQ + i``) visiting blocks ``blocks`` (``[n, c]``, ``seq * NKV + j``, sorted);
    ``length`` keys each; results to slots ``slot ..``. Partial groups: ``mask`` bool ``[n, 1, qb | 1,
    length]`` (True = allowed) and ``prev`` (``[n]``, the row's full-block result among the full slots
    followed by one empty row)."""

    rows: torch.Tensor
    blocks: torch.Tensor
    length: int
    slot: int
    mask: torch.Tensor | None = None
    prev: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class _Plan:
    per_head: bool
    full: list  # entries of the full blocks (_Strided / _Gathered), in slot order
    partial: list  # entries of the partial blocks (_Gathered with a mask), in slot order after the full ones
    n_slots: int  # result slots; slot n_slots is the empty row (output 0, LSE -inf)
    final: torch.Tensor  # [Nseq * NQ]: the slot holding each row's result
    identity: bool  # final == arange: no reordering needed


def _rows(idx: torch.Tensor, cnt: torch.Tensor, batch: int, nkv: int):
    """Counts ``[R]``, sorted used indices ``[R, C]`` (unused slots hold ``nkv``) and the sort order, with
    rows ``R = Nseq * NQ`` expanded over the batch (and ordered sequence-major)."""
    lb, lh, nq, cap = idx.shape
    idx = idx.long().expand(batch, lh, nq, cap).reshape(-1, cap)
    cnt = cnt.long().expand(batch, lh, nq).reshape(-1)
    used = torch.arange(cap) < cnt[:, None]
    srt, order = torch.sort(torch.where(used, idx, nkv), dim=1)
    return cnt, srt, order


def _runs(rows: torch.Tensor, nq: int, start: torch.Tensor, min_len: int):
    """Split ``rows`` (flat row ids, increasing) into maximal runs of consecutive query blocks of one
    sequence whose key-range start advances by a constant step >= 0; runs shorter than ``min_len``
    are dropped. Returns ``(position in rows, length, step)`` triples."""
    if rows.numel() == 0:
        return []
    s = start[rows]
    link = torch.zeros(rows.numel(), dtype=torch.bool)
    d = torch.zeros_like(s)
    link[1:] = (rows[1:] == rows[:-1] + 1) & (rows[1:] % nq != 0)  # next query block, same sequence
    d[1:] = s[1:] - s[:-1]
    link &= d >= 0
    brk = ~link
    # a run's step is set by its first link: a link inside a run with another step starts a new run
    brk[2:] |= link[1:-1] & (d[2:] != d[1:-1])
    edges = torch.nonzero(brk).flatten().tolist() + [rows.numel()]
    return [(a, z - a, int(d[a + 1]) if z - a > 1 else 0) for a, z in zip(edges[:-1], edges[1:]) if z - a >= min_len]


def _group_entries(kind, layout, batch, n_seq, slot, prev_slot=None):
    """Plan entries of one block kind (``"full"`` or ``"partial"``), their rows' slots and the next free slot."""
    nq, nkv, kb = layout.num_q_blocks, layout.num_kv_blocks, layout.kv_block
    idx, cnt = (layout.full_idx, layout.full_cnt) if kind == "full" else (layout.part_idx, layout.part_cnt)
    tail = nkv * kb - layout.kv_len  # padding keys of the last key block
    cnt_r, srt, order = _rows(idx, cnt, batch, nkv)
    last = srt.gather(1, (cnt_r - 1).clamp_min(0)[:, None]).squeeze(1)
    ragged = (cnt_r > 0) & (last == nkv - 1) & (tail > 0)
    first = srt[:, 0]
    contiguous = (cnt_r > 0) & (last - first == cnt_r - 1)
    seq_of_row = torch.arange(n_seq * nq) // nq
    if kind == "partial":
        tiles = layout.tiles
        tile_r = layout.part_tile.long().expand(batch, *layout.part_tile.shape[1:])
        tile_r = tile_r.reshape(-1, tile_r.shape[-1]).gather(1, order)
        row_const = bool((tiles == tiles[:, :1, :]).all())
    entries = []
    row_slot = torch.full((n_seq * nq,), -1, dtype=torch.long)
    groups = torch.unique(torch.stack([cnt_r, ragged.long()], 1)[cnt_r > 0], dim=0).tolist()
    for c, rg in groups:
        in_group = (cnt_r == c) & (ragged == bool(rg))
        length = c * kb - (tail if rg else 0)
        if kind == "full":
            rows = torch.nonzero(in_group & contiguous).flatten()
            for a, n, step in _runs(rows, nq, first, _MIN_STRIDED_RUN):
                r0 = int(rows[a])
                entries.append(_Strided(r0 // nq, r0 % nq, n, int(first[r0]), step, length, slot))
                row_slot[rows[a:a + n]] = torch.arange(slot, slot + n)
                in_group[rows[a:a + n]] = False
                slot += n
        sel = torch.nonzero(in_group).flatten()
        if sel.numel() == 0:
            continue
        blocks = (srt[sel, :c] + seq_of_row[sel, None] * nkv).contiguous()
        mask = prev = None
        if kind == "partial":
            t = tile_r[sel, :c]  # [n, c]
            if row_const:
                mask = tiles[:, 0, :][t].reshape(len(sel), 1, 1, c * kb)[..., :length].contiguous()
            else:
                m = tiles[t].permute(0, 2, 1, 3)  # [n, qb, c, kb]
                mask = m.reshape(len(sel), 1, layout.q_block, c * kb)[..., :length].contiguous()
            prev = prev_slot[sel]
        entries.append(_Gathered(sel, blocks, length, slot, mask, prev))
        row_slot[sel] = torch.arange(slot, slot + len(sel))
        slot += len(sel)
    return entries, row_slot, slot


def _plan(layout, batch: int) -> _Plan:
    per_head = layout.batch_heads[1] > 1
    n_seq = batch * (layout.batch_heads[1] if per_head else 1)
    full, full_slot, n_slots = _group_entries("full", layout, batch, n_seq, 0)
    partial = []
    final = full_slot
    n_part_rows = int((layout.part_cnt > 0).expand(batch, *layout.part_cnt.shape[1:]).sum())
    if n_part_rows:
        # partial rows read their full-block result from the full results followed by one empty row
        prev = torch.where(full_slot >= 0, full_slot, n_slots)
        part, part_slot, n_slots = _group_entries("partial", layout, batch, n_seq, n_slots, prev)
        partial = part
        final = torch.where(part_slot >= 0, part_slot, full_slot)
    final = torch.where(final >= 0, final, n_slots)
    identity = bool(torch.equal(final, torch.arange(final.numel())))
    return _Plan(per_head, full, partial, n_slots, final, identity)


def _attend(qg, kg, vg, scale, mask=None):
    """The CPU flash kernel on ``[N, L, H', D]`` tensors; returns (out ``[N, Lq, H', D]``, lse ``[N, Lq, H']``)."""
    o, lse = _OP(qg.transpose(1, 2), kg.transpose(1, 2), vg.transpose(1, 2), 0.0, False, attn_mask=mask,
                 scale=scale)
    return o.transpose(1, 2), lse.transpose(1, 2)


def _strided_keys(x: torch.Tensor, e: _Strided, kb: int) -> torch.Tensor:
    """Keys / values of a strided run as an (overlapping) view ``[n, length, H', D]`` of ``x [Nseq, S, H', D]``."""
    s_seq, s_tok, s_head, s_dim = x.stride()
    offset = x.storage_offset() + e.seq * s_seq + e.s0 * kb * s_tok
    return x.as_strided((e.n, e.length, x.shape[2], x.shape[3]), (e.step * kb * s_tok, s_tok, s_head, s_dim), offset)


def _run_strided(e: _Strided, qs, ks, vs, scale, qb, kb):
    """(out ``[n, qb, H', D]``, lse ``[n, qb, H']``) of a strided run."""
    qg = qs[e.seq, e.i0 * qb:(e.i0 + e.n) * qb]  # [n * qb, H', D]
    if e.step == 0:  # every query block reads the same keys: one long query sequence
        k0 = ks[e.seq:e.seq + 1, e.s0 * kb:e.s0 * kb + e.length]
        v0 = vs[e.seq:e.seq + 1, e.s0 * kb:e.s0 * kb + e.length]
        o, l_ = _attend(qg.unsqueeze(0), k0, v0, scale)
        return o.view(e.n, qb, *o.shape[2:]), l_.view(e.n, qb, l_.shape[2])
    return _attend(qg.unflatten(0, (e.n, qb)), _strided_keys(ks, e, kb), _strided_keys(vs, e, kb), scale)


def _run_gathered(e: _Gathered, q_rows, k_blocks, v_blocks, scale, buf, full_results=None):
    """Yield (out ``[n, qb, H', D]``, lse ``[n, qb, H']``) of consecutive chunks of a gathered group; for a
    partial group, merged with the rows' full-block results ``full_results`` (out, lse)."""
    n_all, c = e.blocks.shape
    kb, heads, d = k_blocks.shape[1:]
    per_row = c * kb * heads * d
    step = max(1, min(n_all, buf.numel() // (2 * per_row)))
    for a in range(0, n_all, step):
        z = min(n_all, a + step)
        n = z - a
        flat = e.blocks[a:z].reshape(-1)
        kbuf = buf[: n * per_row].view(n * c, kb, heads, d)
        vbuf = buf[n * per_row: 2 * n * per_row].view(n * c, kb, heads, d)
        torch.index_select(k_blocks, 0, flat, out=kbuf)
        torch.index_select(v_blocks, 0, flat, out=vbuf)
        qg = q_rows.index_select(0, e.rows[a:z])  # [n, qb, H', D]
        kg = kbuf.view(n, c * kb, heads, d)[:, :e.length]
        vg = vbuf.view(n, c * kb, heads, d)[:, :e.length]
        if e.mask is None:
            yield _attend(qg, kg, vg, scale)
            continue
        allowed = e.mask[a:z]  # [n, 1, qb | 1, L]
        additive = torch.zeros(allowed.shape, dtype=qg.dtype).masked_fill_(~allowed, float("-inf"))
        o, l_ = _attend(qg, kg, vg, scale, additive)
        seen = allowed.any(-1).transpose(1, 2)  # [n, qb | 1, 1]: query rows with some allowed key
        o = torch.where(seen.unsqueeze(-1), o, 0.0)
        l_ = torch.where(seen, l_, float("-inf"))
        prev = e.prev[a:z]
        yield merge_attention([(full_results[0].index_select(0, prev), full_results[1].index_select(0, prev)), (o, l_)])


def _empty_row(like_out, like_lse):
    return torch.zeros_like(like_out[:1]), torch.full_like(like_lse[:1], float("-inf"))


def _sequences(x: torch.Tensor, length: int, per_head: bool) -> torch.Tensor:
    """``x [B, S, H, D]`` as contiguous sequences ``[Nseq, length, H', D]`` (zero-padded to ``length``):
    ``[B, length, H, D]`` or, per head, ``[B * H, length, 1, D]``. No copy when x already is that."""
    bsz, s, heads, d = x.shape
    if per_head:
        x = x.permute(0, 2, 1, 3).reshape(bsz * heads, s, 1, d)
    if s == length and x.is_contiguous():
        return x
    out = x.new_zeros(x.shape[0], length, *x.shape[2:])
    out[:, :s] = x
    return out


def gather_block_sparse_attention(q, k, v, layout, scale: float, return_lse: bool):
    """Run ``layout`` on CPU ``[B, S, H, D]`` tensors with PyTorch's CPU flash kernel (inputs validated by
    :func:`accel.kernels.block_sparse_attention`).

    Args:
        q: queries ``[B, Sq, H, D]`` (any strides).
        k: keys ``[B, Skv, H, D]``.
        v: values, same shape as ``k``.
        layout: the :class:`BlockLayout` to execute (on CPU); its plan (groups, strided runs, gather
            indices, partial masks) is built once per batch size and cached on the layout.
        scale: softmax scale.
        return_lse: also return the natural-log LSE ``[B, Sq, H]`` float32 (free: the kernel computes it).

    Returns:
        ``out [B, Sq, H, D]`` in q's dtype, or ``(out, lse)``; rows with no allowed key give 0 / ``-inf``.
    """
    if not HAVE_CPU_FLASH:
        raise RuntimeError("backend='gather' needs torch.ops.aten._scaled_dot_product_flash_attention_for_cpu "
                           "(PyTorch >= 2.2); use backend='flex' or 'reference'")
    bsz, q_len, heads, d = q.shape
    qb, kb = layout.q_block, layout.kv_block
    nq, nkv = layout.num_q_blocks, layout.num_kv_blocks
    plan = layout.cached(("gather_plan", bsz), lambda: _plan(layout, bsz))
    qs = _sequences(q, nq * qb, plan.per_head)
    ks, vs = _sequences(k, nkv * kb, plan.per_head), _sequences(v, nkv * kb, plan.per_head)
    n_seq, _, heads_g, _ = qs.shape
    q_rows = qs.view(n_seq * nq, qb, heads_g, d)
    k_blocks, v_blocks = ks.view(n_seq * nkv, kb, heads_g, d), vs.view(n_seq * nkv, kb, heads_g, d)
    largest = max((e.blocks.shape[1] for e in plan.full + plan.partial if isinstance(e, _Gathered)), default=0)
    buf = None
    if largest:
        row = 2 * largest * kb * heads_g * d
        buf = q.new_empty(max(row, _GATHER_CHUNK_BYTES // q.element_size() // row * row))
    # results in slot order: one concatenation at the end (per-chunk copies into a preallocated
    # buffer cost one more parallel region per chunk)
    full = [r for e in plan.full for r in _results(e, qs, ks, vs, q_rows, k_blocks, v_blocks, scale, qb, kb, buf)]
    empty = _empty_row(qs.new_empty(1, qb, heads_g, d), qs.new_empty(1, qb, heads_g, dtype=torch.float32))
    parts = full
    if plan.partial:
        full_results = (torch.cat([o for o, _ in full] + [empty[0]]), torch.cat([l_ for _, l_ in full] + [empty[1]]))
        parts = full + [r for e in plan.partial for r in _run_gathered(e, q_rows, k_blocks, v_blocks, scale, buf,
                                                                        full_results)]
    out = torch.cat([o for o, _ in parts] + [empty[0]])
    if not plan.identity:
        out = out.index_select(0, plan.final)
    out = out[: n_seq * nq].view(n_seq, nq * qb, heads_g, d)
    if plan.per_head:
        out = out.view(bsz, heads, nq * qb, d).permute(0, 2, 1, 3)
    out = out[:, :q_len]
    if not return_lse:
        return out
    lse = torch.cat([l_ for _, l_ in parts] + [empty[1]])
    if not plan.identity:
        lse = lse.index_select(0, plan.final)
    lse = lse[: n_seq * nq].view(n_seq, nq * qb, heads_g)
    if plan.per_head:
        lse = lse.view(bsz, heads, nq * qb).permute(0, 2, 1)
    return out, lse[:, :q_len]


def _results(e, qs, ks, vs, q_rows, k_blocks, v_blocks, scale, qb, kb, buf):
    if isinstance(e, _Strided):
        return [_run_strided(e, qs, ks, vs, scale, qb, kb)]
    return _run_gathered(e, q_rows, k_blocks, v_blocks, scale, buf)

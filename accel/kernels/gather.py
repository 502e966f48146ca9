"""Gather backend: a :class:`BlockLayout` run as a few calls of PyTorch's own CPU flash attention.

Why: on CPU, PyTorch's fused SDPA kernel (``aten._scaled_dot_product_flash_attention_for_cpu``, the
kernel ``F.scaled_dot_product_attention`` runs on CPU) computes a (query, key) pair faster than
compiled FlexAttention's C++ template (``benchmarks/results/kernels_cpu.json``). The sparse attention of
one query block is plain attention over the keys of the blocks it visits, so once the query blocks
are grouped by their number of key blocks the work is regular:

* consecutive query blocks that visit the same key blocks (per-frame video patterns, q_block <
  kv_block) form one *unit*, a longer query sequence (bigger kernel tiles, keys gathered once);
* units are grouped by (number of visited key blocks, whether the ragged last key block is among
  them, whether they need a mask, unit length); each group is one SDPA call (or a few, see below)
  whose batch axis is the group's units;
* units of full blocks read their keys through a **strided view** when consecutive units visit
  contiguous key-block ranges whose start advances by a constant step (a band: no copy at all;
  step 0, e.g. rows that see every key, becomes one long query sequence); other units' keys are
  **gathered** with ``index_select`` on token rows of k / v, in chunks of about
  ``_GATHER_CHUNK_BYTES`` written into one reused buffer (no per-row Python loop; memory bounded);
* units with partial blocks (or blocks holding key padding) gather all their blocks, full and
  partial, and run SDPA with an additive mask (all-allowed columns for full blocks; the token masks
  of partial blocks from ``layout.block_masks`` when the layout has it, i.e. any partial kind, else
  from its tiles; ``[.., 1, L]`` broadcast over queries when constant along them, e.g. key padding).
  No merge is needed; such a unit costs what its blocks cost plus reading the mask, so layouts made
  mostly of partial blocks keep less of the kernel's advantage: see the ``auto`` rule in
  :mod:`accel.kernels.attention`.

Results come out group after group; the output is one concatenation of views of them in query order
(scattering rows with ``index_copy_`` takes a slow element-wise path on CPU).

Ragged lengths are exact: a ragged last query block runs on zero-padded queries whose rows are
dropped; the ragged last key block is always last in its row (indices are sorted), so its row simply
has fewer keys and the padding keys never enter an SDPA call. Rows with no key give output 0 and LSE
``-inf``.

The LSE is free: the CPU flash kernel returns it (natural log), so ``return_lse=True`` costs nothing
here (compiled flex on CPU cannot return it).

Layouts whose head dimension is broadcast (``batch_heads[1] == 1``) gather all heads of a block at
once from the ``[B, S, H, D]`` tensors (no transpose when they are contiguous and the lengths are
multiples of the blocks); per-head layouts transpose q / k / v to ``[B, H, S, D]`` once per call.

Limits: CPU tensors only (on CUDA use the Triton kernel). Numerics are those of PyTorch's CPU flash
kernel (fp32 accumulation); results differ from the other backends only by rounding. The plan
(groups, runs, gather indices, masks) is built once per layout and batch size and cached on the
layout; for layouts built anew on every call (dynamic methods) its cost, a few vectorised passes
over the rows plus one Python step per group, is paid each time. Rows with partial blocks keep a
boolean mask of all their blocks on the plan, and an additive copy in the input dtype is made per call
when large: about ``mask_bytes(layout, batch)`` bytes plus 2-4 times that, so ``"auto"`` leaves
layouts with many partial blocks at large sizes to FlexAttention (see :mod:`accel.kernels.attention`).
"""

from __future__ import annotations

import bisect
import dataclasses

import torch

__all__ = ["gather_block_sparse_attention", "mask_bytes", "HAVE_CPU_FLASH"]

_OP = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
HAVE_CPU_FLASH = _OP is not None

# Gathered rows are processed in chunks whose gathered k + v take about this many bytes, in one reused
# buffer: memory stays bounded for long videos. Smaller chunks would stay in cache, but each chunk adds
# parallel regions (thread wake-ups), which cost a scheduling slice each on a shared, oversubscribed
# machine; at S = 16,384 a band's whole gathered set is one or two chunks.
_GATHER_CHUNK_BYTES = 64 << 20
# Additive masks of partial groups up to this many elements are kept on the (cached) plan per dtype.
_CACHED_MASK_ELEMENTS = 1 << 24
# Runs of fewer query blocks than this are gathered instead of read through a strided view.
_MIN_STRIDED_RUN = 4
# Consecutive query blocks with the same key blocks form one query sequence of up to this many blocks:
# the kernel's query tiles grow from 32 rows (a 128-token query) to 64 (>= 192 tokens) or 256 (>= 768
# tokens; aten/src/ATen/native/cpu/FlashAttentionKernel.cpp picks them by query length), and their keys
# are gathered once. Per-frame video patterns (Radial: a frame of 2 blocks) and q_block < kv_block
# layouts have such runs.
_MAX_UNIT = 8


@dataclasses.dataclass(frozen=True)
class _Strided:
    """``n`` units of ``m`` query blocks from block ``i0`` of sequence ``seq`` on; the r-th unit reads
    ``length`` keys from key block ``s0 + step * r`` on (full blocks only)."""

    seq: int
    i0: int
    n: int
    m: int
    s0: int
    step: int
    length: int


@dataclasses.dataclass(frozen=True)
class _Gathered:
    """``n`` units of ``m`` consecutive query blocks (identical key blocks), each unit visiting ``c`` key
    blocks (``seq * NKV + j``, sorted), ``length`` keys. ``kv_tokens``: the token rows of those blocks,
    int32 ``[n * c * kv_block]``; ``q_tokens``: the units' query tokens ``[n * m * q_block]``, or None
    when the units' rows are consecutive from row ``first_row``. Units with partial blocks: ``mask`` bool
    ``[n, 1, m * qb | 1, length]`` (True = allowed) and ``empty_queries`` (some query allows no key).

    Token-level indices keep every ``index_select`` one parallel loop of small memcpys: with whole
    blocks as index rows PyTorch copies each block in its own parallel region (blocks are larger than
    its grain size), and on a shared machine every parallel region can wait a scheduling slice."""

    n: int
    m: int
    c: int
    kv_tokens: torch.Tensor
    q_tokens: torch.Tensor | None
    first_row: int
    length: int
    mask: torch.Tensor | None = None
    empty_queries: bool = False
    additive: dict = dataclasses.field(default_factory=dict)  # dtype -> additive mask (small masks only)


@dataclasses.dataclass(frozen=True)
class _Plan:
    per_head: bool  # the layout has per-head indices: sequences are (batch, head) pairs
    entries: list  # _Strided / _Gathered; their rows' results come out in this order
    # how the results (in slot order) make the output (in row order): runs of rows that are runs of
    # slots, (first slot, rows), or runs of rows with no key, (None, rows)
    assembly: list


def _expanded(t: torch.Tensor, batch: int) -> torch.Tensor:
    """``t [B|1, H|1, NQ, ...]`` expanded over the batch and flattened to rows ``[B * (H|1) * NQ, ...]``."""
    return t.expand(batch, *t.shape[1:]).reshape(-1, *t.shape[3:])


def _row_blocks(layout, batch: int):
    """Per row (sequence-major): block count ``[R]``, visited key blocks sorted ``[R, C]`` (unused slots
    hold NKV), their kind ``[R, C]`` (1 full, 2 partial, 0 unused) and whether the row needs a mask
    (a partial block, or a block holding key padding of the row's batch element)."""
    nkv = layout.num_kv_blocks
    f_idx, p_idx = _expanded(layout.full_idx, batch).long(), _expanded(layout.part_idx, batch).long()
    f_cnt, p_cnt = _expanded(layout.full_cnt, batch).long(), _expanded(layout.part_cnt, batch).long()
    f_used = torch.arange(f_idx.shape[1]) < f_cnt[:, None]
    p_used = torch.arange(p_idx.shape[1]) < p_cnt[:, None]
    idx = torch.cat([torch.where(f_used, f_idx, nkv), torch.where(p_used, p_idx, nkv)], 1)
    kind = torch.cat([f_used.to(torch.int8), 2 * p_used.to(torch.int8)], 1)
    srt, order = torch.sort(idx, dim=1)
    kind = kind.gather(1, order)
    masked = p_cnt > 0
    padded = _padded_blocks(layout)
    if padded is not None:  # [P, NKV + 1]: key blocks holding padding keys (+ the unused-slot column)
        rows_per_batch = srt.shape[0] // batch
        b = (torch.arange(srt.shape[0]) // rows_per_batch).clamp(max=padded.shape[0] - 1)
        masked = masked | padded[b[:, None], srt].any(1)
    return f_cnt + p_cnt, srt, kind, masked


def _padded_blocks(layout) -> torch.Tensor | None:
    """bool ``[P, NKV + 1]``: key blocks holding a padding key of batch element p (layouts with key
    padding, ``layout.valid_keys()``), the last column False; None without key padding."""
    valid = layout.valid_keys() if hasattr(layout, "valid_keys") else None
    if valid is None:
        return None
    nkv, kb = layout.num_kv_blocks, layout.kv_block
    full = torch.ones(valid.shape[0], (nkv + 1) * kb, dtype=torch.bool)
    full[:, : layout.kv_len] = valid.cpu()
    return ~full.view(valid.shape[0], nkv + 1, kb).all(-1)


def _units(cnt, srt, kind, masked, nq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the rows into units: maximal runs of consecutive query blocks of one sequence with the same
    key blocks (and kinds), cut every ``_MAX_UNIT`` rows. Returns (first row ``[U]``, rows ``[U]``). The
    masks of a masked unit are built per row, so its rows may have different tiles."""
    n_rows = cnt.numel()
    r = torch.arange(n_rows)
    same = torch.zeros(n_rows, dtype=torch.bool)
    same[1:] = ((r[1:] % nq != 0) & (cnt[1:] == cnt[:-1]) & (srt[1:] == srt[:-1]).all(1)
                & (kind[1:] == kind[:-1]).all(1) & (masked[1:] == masked[:-1]))
    run_start = torch.cummax(torch.where(same, 0, r), 0).values
    first = torch.nonzero((r - run_start) % _MAX_UNIT == 0).flatten()
    return first, torch.diff(first, append=torch.tensor([n_rows]))


def _runs(first: torch.Tensor, m: int, nq: int, start: torch.Tensor, min_rows: int):
    """Split units (their first rows ``first``, increasing, ``m`` rows each) into maximal runs of
    consecutive units of one sequence whose key-range start (``start``, per unit) advances by a constant
    step >= 0; runs of fewer than ``min_rows`` rows are dropped. Returns ``(position, units, step)``."""
    if first.numel() == 0:
        return []
    link = torch.zeros(first.numel(), dtype=torch.bool)
    d = torch.zeros_like(start)
    link[1:] = (first[1:] == first[:-1] + m) & (first[1:] % nq != 0)  # the next rows, same sequence
    d[1:] = start[1:] - start[:-1]
    link &= d >= 0
    brk = ~link
    # a run's step is set by its first link: a link inside a run with another step starts a new run
    brk[2:] |= link[1:-1] & (d[2:] != d[1:-1])
    edges = torch.nonzero(brk).flatten().tolist() + [first.numel()]
    return [(a, z - a, int(d[a + 1]) if z - a > 1 else 0) for a, z in zip(edges[:-1], edges[1:], strict=True)
            if (z - a) * m >= min_rows]


def _token_masks(layout, b: torch.Tensor, h: torch.Tensor, qi: torch.Tensor, ki: torch.Tensor) -> torch.Tensor:
    """bool ``[n, q_block, kv_block]``: the token mask inside block pairs ``(b, h, qi, ki)`` (full blocks:
    all True). Any partial kind and key padding through ``layout.block_masks`` when the layout has it;
    from ``tiles`` otherwise."""
    if hasattr(layout, "block_masks"):
        return layout.block_masks(b, h, qi, ki)
    lb, lh = layout.full_cnt.shape[:2]
    bi, hi = b.clamp(max=lb - 1), h.clamp(max=lh - 1)
    kinds = layout.block_kinds()[bi, hi, qi, ki]
    tiles = layout.tiles[layout.tile_map()[bi, hi, qi, ki].long().clamp_min(0)]
    return (kinds == 1)[:, None, None] | ((kinds == 2)[:, None, None] & tiles)


def _unit_masks(layout, first_rows: torch.Tensor, m: int, blocks: torch.Tensor, length: int, per_head: bool
                ) -> tuple[torch.Tensor, bool]:
    """Mask ``[n, 1, m * qb | 1, length]`` (True = allowed) of units (first rows ``first_rows [n]``, ``m``
    rows each, sorted key blocks ``blocks [n, c]``), and whether some query allows no key. Broadcast over
    the queries (``| 1``) when constant along them (key padding, row-constant tiles)."""
    nq, qb, kb = layout.num_q_blocks, layout.q_block, layout.kv_block
    n, c = blocks.shape
    rows = first_rows[:, None] + torch.arange(m)  # [n, m]
    seq, qi = rows // nq, rows % nq
    lh = layout.full_cnt.shape[1]
    b, h = (seq // lh, seq % lh) if per_head else (seq, torch.zeros_like(seq))
    pairs = [t[:, :, None].expand(n, m, c).reshape(-1) for t in (b, h, qi)] + [blocks[:, None, :].expand(n, m, c).reshape(-1)]
    tok = _token_masks(layout, *pairs).view(n, m, c, qb, kb).permute(0, 1, 3, 2, 4).reshape(n, 1, m * qb, c * kb)
    mask = tok[..., :length]
    if bool((mask == mask[:, :, :1]).all()):
        mask = mask[:, :, :1]
    return mask.contiguous(), not bool(mask.any(-1).all())


def _plan(layout, batch: int) -> _Plan:
    per_head = layout.batch_heads[1] > 1
    nq, nkv, qb, kb = layout.num_q_blocks, layout.num_kv_blocks, layout.q_block, layout.kv_block
    tail = nkv * kb - layout.kv_len  # padding keys of the ragged last key block
    cnt, srt, kind, masked = _row_blocks(layout, batch)
    n_rows = cnt.numel()
    u_first, u_rows = _units(cnt, srt, kind, masked, nq)
    cnt, srt, masked = cnt[u_first], srt[u_first], masked[u_first]
    last = srt.gather(1, (cnt - 1).clamp_min(0)[:, None]).squeeze(1)
    ragged = (cnt > 0) & (last == nkv - 1) & (tail > 0)
    start = srt[:, 0]
    contiguous = (cnt > 0) & (last - start == cnt - 1) & ~masked
    entries, slot_of_row, slot = [], torch.full((n_rows,), -1, dtype=torch.long), 0

    def take(units, m):  # give the units' rows the next slots, in order
        nonlocal slot
        rows = (u_first[units, None] + torch.arange(m)).reshape(-1)
        slot_of_row[rows] = torch.arange(slot, slot + rows.numel())
        slot += rows.numel()
        return rows

    keys = torch.stack([cnt, ragged.long(), masked.long(), u_rows], 1)[cnt > 0]
    for c, rg, mk, m in torch.unique(keys, dim=0).tolist():
        in_group = (cnt == c) & (ragged == bool(rg)) & (masked == bool(mk)) & (u_rows == m)
        length = c * kb - (tail if rg else 0)
        units = torch.nonzero(in_group & contiguous).flatten()
        for a, n, step in _runs(u_first[units], m, nq, start[units], _MIN_STRIDED_RUN):
            r0 = int(u_first[units[a]])
            entries.append(_Strided(r0 // nq, r0 % nq, n, m, int(start[units[a]]), step, length))
            take(units[a:a + n], m)
            in_group[units[a:a + n]] = False
        sel = torch.nonzero(in_group).flatten()
        if sel.numel() == 0:
            continue
        blocks = srt[sel, :c] + (u_first[sel, None] // nq) * nkv
        mask, empty_queries = (_unit_masks(layout, u_first[sel], m, srt[sel, :c], length, per_head) if mk
                               else (None, False))
        rows = take(sel, m)
        in_order = bool(torch.equal(rows, rows[0] + torch.arange(rows.numel())))
        entries.append(_Gathered(len(sel), m, c, _tokens(blocks, kb), None if in_order else _tokens(rows, qb),
                                 int(rows[0]), length, mask, empty_queries))
    return _Plan(per_head, entries, _assembly(slot_of_row))


def _assembly(slot_of_row: torch.Tensor) -> list:
    """Runs of rows whose results are consecutive slots, ``(first slot, rows)``, and runs of rows
    without a result, ``(None, rows)``, in row order."""
    empty = slot_of_row < 0
    cont = torch.zeros_like(empty)
    cont[1:] = (empty[1:] & empty[:-1]) | (~empty[1:] & ~empty[:-1] & (slot_of_row[1:] == slot_of_row[:-1] + 1))
    starts = torch.nonzero(~cont).flatten()
    lengths = torch.diff(starts, append=torch.tensor([slot_of_row.numel()])).tolist()
    return [(None if bool(empty[a]) else int(slot_of_row[a]), n) for a, n in zip(starts.tolist(), lengths, strict=True)]


def _tokens(blocks: torch.Tensor, size: int) -> torch.Tensor:
    """Token rows (int32, flattened) of the blocks ``blocks`` of ``size`` tokens each."""
    return (blocks.reshape(-1, 1) * size + torch.arange(size)).reshape(-1).to(torch.int32)


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
    """(out ``[n * m, qb, H', D]``, lse ``[n * m, qb, H']``) of a strided run."""
    qg = qs[e.seq, e.i0 * qb:(e.i0 + e.n * e.m) * qb]  # [n * m * qb, H', D]
    if e.step == 0:  # every unit reads the same keys: one long query sequence
        k0 = ks[e.seq:e.seq + 1, e.s0 * kb:e.s0 * kb + e.length]
        v0 = vs[e.seq:e.seq + 1, e.s0 * kb:e.s0 * kb + e.length]
        o, l_ = _attend(qg.unsqueeze(0), k0, v0, scale)
    else:
        o, l_ = _attend(qg.unflatten(0, (e.n, e.m * qb)), _strided_keys(ks, e, kb), _strided_keys(vs, e, kb), scale)
    return o.reshape(-1, qb, *o.shape[2:]), l_.reshape(-1, qb, l_.shape[2])


def _additive_mask(e: _Gathered, dtype: torch.dtype) -> torch.Tensor:
    """The group's mask as the kernel's additive mask (0 / -inf) in ``dtype``; kept on the plan when small."""
    if dtype in e.additive:
        return e.additive[dtype]
    additive = torch.zeros(e.mask.shape, dtype=dtype).masked_fill_(~e.mask, float("-inf"))
    if e.mask.numel() <= _CACHED_MASK_ELEMENTS:
        e.additive[dtype] = additive
    return additive


def _run_gathered(e: _Gathered, q_tok, k_tok, v_tok, scale, qb, kb, buf):
    """Yield (out ``[n' * m, qb, H', D]``, lse ``[n' * m, qb, H']``) of consecutive chunks of ``n'`` units.

    ``q_tok`` ``[Nseq * NQ * qb, H', D]`` and ``k_tok`` / ``v_tok`` ``[Nseq * NKV * kb, H', D]``: q, k and v
    as token rows."""
    heads, d = k_tok.shape[1:]
    unit_keys, unit_queries = e.c * kb, e.m * qb
    step = max(1, min(e.n, buf.numel() // (2 * unit_keys * heads * d)))
    additive = None if e.mask is None else _additive_mask(e, q_tok.dtype)
    for a in range(0, e.n, step):
        z = min(e.n, a + step)
        n = z - a
        tok = e.kv_tokens[a * unit_keys:z * unit_keys]
        kbuf = buf[: n * unit_keys * heads * d].view(n * unit_keys, heads, d)
        vbuf = buf[n * unit_keys * heads * d: 2 * n * unit_keys * heads * d].view(n * unit_keys, heads, d)
        torch.index_select(k_tok, 0, tok, out=kbuf)
        torch.index_select(v_tok, 0, tok, out=vbuf)
        if e.q_tokens is None:
            q0 = (e.first_row + a * e.m) * qb
            qg = q_tok[q0:q0 + n * unit_queries].view(n, unit_queries, heads, d)
        else:
            qg = q_tok.index_select(0, e.q_tokens[a * unit_queries:z * unit_queries]).view(n, unit_queries, heads, d)
        kg = kbuf.view(n, unit_keys, heads, d)[:, :e.length]
        vg = vbuf.view(n, unit_keys, heads, d)[:, :e.length]
        if e.mask is None:
            o, l_ = _attend(qg, kg, vg, scale)
        else:
            o, l_ = _attend(qg, kg, vg, scale, additive[a:z])
            if e.empty_queries:  # the kernel gives such queries out 0 but LSE 0: make it -inf
                seen = e.mask[a:z].any(-1).transpose(1, 2)  # [n, m * qb | 1, 1]
                l_ = torch.where(seen, l_, float("-inf"))
        yield o.reshape(n * e.m, qb, heads, d), l_.reshape(n * e.m, qb, heads)


def _assemble(pieces: list, assembly: list, empty: torch.Tensor) -> torch.Tensor:
    """The rows' results in row order: views of ``pieces`` (results in slot order, rows first) and, for rows
    with no key, of ``empty`` (one row's result, usually an expanded scalar) concatenated once (no copy
    when one piece is already the output)."""
    bounds = [0]
    for p in pieces:
        bounds.append(bounds[-1] + p.shape[0])
    views = []
    for first, n in assembly:
        if first is None:
            views.append(empty.expand(n, *empty.shape[1:]))
            continue
        i = bisect.bisect_right(bounds, first) - 1
        while n:
            a = first - bounds[i]
            take = min(n, pieces[i].shape[0] - a)
            views.append(pieces[i][a:a + take])
            first, n, i = first + take, n - take, i + 1
    if len(views) == 1:
        return views[0] if assembly[0][0] is not None else views[0].contiguous()
    return torch.cat(views)


def mask_bytes(layout, batch: int) -> int:
    """Bytes of the boolean masks the plan keeps for ``layout`` at batch size ``batch``: one byte per
    (query, key) pair of every block of the query blocks that have a partial block (an upper bound: masks
    constant along the queries, such as key padding alone, are kept as one row). Cheap: counts only."""
    f_cnt, p_cnt = (t.expand(batch, *t.shape[1:]).long() for t in (layout.full_cnt, layout.part_cnt))
    blocks = torch.where(p_cnt > 0, f_cnt + p_cnt, 0).sum()
    return int(blocks) * layout.q_block * layout.kv_block


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
    q_tok, k_tok, v_tok = (x.view(-1, heads_g, d) for x in (qs, ks, vs))
    gathered = [e for e in plan.entries if isinstance(e, _Gathered)]
    buf = None
    if gathered:  # the chunk buffer: about _GATHER_CHUNK_BYTES, or what the largest group needs if less
        rows = [2 * e.c * kb * heads_g * d for e in gathered]  # gathered k + v of one unit, elements
        cap = max(max(rows), _GATHER_CHUNK_BYTES // q.element_size() // max(rows) * max(rows))
        buf = q.new_empty(max(min(e.n, cap // r) * r for e, r in zip(gathered, rows, strict=True)))
    # results in row-slot order, concatenated once at the end (copying each chunk into a preallocated
    # buffer costs one more parallel region per chunk)
    parts = []
    for e in plan.entries:
        if isinstance(e, _Strided):
            parts.append(_run_strided(e, qs, ks, vs, scale, qb, kb))
        else:
            parts.extend(_run_gathered(e, q_tok, k_tok, v_tok, scale, qb, kb, buf))
    out = _assemble([o for o, _ in parts], plan.assembly, q.new_zeros(()).expand(1, qb, heads_g, d))
    out = out.reshape(n_seq, nq * qb, heads_g, d)
    if plan.per_head:
        out = out.view(bsz, heads, nq * qb, d).permute(0, 2, 1, 3)
    out = out[:, :q_len]
    if not return_lse:
        return out
    lse = _assemble([l_ for _, l_ in parts], plan.assembly,
                    torch.full((), float("-inf")).expand(1, qb, heads_g))
    lse = lse.reshape(n_seq, nq * qb, heads_g)
    if plan.per_head:
        lse = lse.view(bsz, heads, nq * qb).permute(0, 2, 1)
    return out, lse[:, :q_len]

"""Triton block-sparse attention forward kernel, registered as the custom op ``accel::block_sparse_attn``.

Structure follows the online-softmax forward of FlashAttention-2 (Dao 2023) as Triton's fused-attention
tutorial writes it (exp2 domain with the scale folded into ``log2(e)``, fp32 accumulators), driven by
a :class:`~accel.kernels.schedule.BlockSchedule` instead of a dense loop. A program owns ``BLOCK_M``
queries of one (batch, head) and runs three *flat* loops, each over (listed key block x
``KV_BLOCK / BLOCK_N`` sub-tiles), so the compiler software-pipelines one loop body with no nested loop:

1. *clean* full blocks: no per-token test at all (the common case);
2. *edge* full blocks (the ragged last key block, blocks overlapping the key padding): a column test;
3. *partial* blocks: the layout's predicate -- a bit-packed tile (one int32 word per 32 pairs), or an
   analytic window / ellipsoid rule evaluated from token coordinates in registers (the query side is
   loaded once per program, the key side as a few int32 vectors per step).

Programs take the query tiles of each (batch, head) in the schedule's ``row_order`` (longest rows
first). A *persistent* variant launches a fixed number of programs that loop over the tiles in that
order. On Hopper, K/V may be read through tensor descriptors (TMA) and the clean loop may be warp
specialised; both are feature-detected against the installed Triton and verified before use
(:mod:`accel.kernels.triton_tuning`), and ``ACCEL_TRITON_PORTABLE=1`` forces the portable path.

Two optional fusions (constexpr switches, no cost when off):

* *prior*: the online softmax starts from a previous partial result ``(out, lse)`` over a disjoint key
  set (state ``m = lse·log2(e)``, ``l = 1``, ``acc = out``), so the kernel returns the attention over
  the union without a separate LSE merge pass;
* *block affine*: the epilogue writes ``scale[qb] · out + shift[qb]`` with one scalar and one
  ``D``-vector per (batch, head, query block) -- the rectification step of Rectified sparse attention.
  The returned LSE is that of the softmax (before the affine step).

Tensors are read in diffusers' ``[B, S, H, D]`` layout through their strides. Head dims that are not
a power of two are masked up to the next power of two (>= 16), so no padded copies are made. Batch and
head offsets are int64.

Under ``TRITON_INTERPRET=1`` (CPU tests) tiles are upcast to fp32 before ``tl.dot`` (the interpreter's
bf16 dot is wrong: triton-lang/triton#11584) and no tuning happens: the configuration is the layout's
own blocks, or the one ``ACCEL_TRITON_CONFIG`` forces (tests use it to run program tiles smaller than
the layout's blocks). On CUDA the configuration is autotuned once per key and persisted on disk
(:mod:`accel.kernels.triton_tuning`).
"""

from __future__ import annotations

import hashlib
import math
import pathlib

import torch

from . import triton_tuning as tuning
from .triton_tuning import INTERPRET, KernelConfig

try:  # triton is a Linux dependency; keep accel importable elsewhere
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only on machines without triton
    triton = None
    tl = None

__all__ = [
    "HAVE_TRITON",
    "INTERPRET",
    "KERNEL_HASH",
    "kernel_head_dim",
    "kernel_signature",
    "op_arguments",
    "triton_block_sparse_attention",
]

HAVE_TRITON = triton is not None
_LOG2E = 1.4426950408889634
#: a digest of this file: tuned configurations of an older kernel are never reused
KERNEL_HASH = hashlib.sha1(pathlib.Path(__file__).read_bytes()).hexdigest()[:12]


def kernel_head_dim(d: int) -> int:
    """The padded head dim the kernel computes with: next power of two, at least 16."""
    return max(16, 1 << (d - 1).bit_length())


if HAVE_TRITON:

    @triton.jit
    def _window_allowed(lo0, wd0, lo1, wd1, lo2, wd2, KC, kl, k_axis_stride, N_AXES: tl.constexpr):
        # lo <= c <= lo + width as one unsigned compare per axis: (c - lo) mod 2^32 <= width
        # (coordinates lie in (-2^30, 2^30), so c < lo wraps above every width)
        c = tl.load(KC + kl).to(tl.uint32, bitcast=True)
        ok = (c[None, :] - lo0[:, None]) <= wd0[:, None]
        if N_AXES > 1:
            c = tl.load(KC + k_axis_stride + kl).to(tl.uint32, bitcast=True)
            ok = ok & ((c[None, :] - lo1[:, None]) <= wd1[:, None])
        if N_AXES > 2:
            c = tl.load(KC + 2 * k_axis_stride + kl).to(tl.uint32, bitcast=True)
            ok = ok & ((c[None, :] - lo2[:, None]) <= wd2[:, None])
        return ok

    @triton.jit
    def _window_row(LO, HI, ql, q_in):
        """One axis of the query side of a window: (lo, width) as uint32; rows outside the covered
        range get the whole int32 line, empty windows (hi < lo) a width-0 window at -2^31."""
        lo = tl.where(q_in, tl.load(LO + ql), -2147483648)
        hi = tl.where(q_in, tl.load(HI + ql), 2147483647)
        nonempty = hi >= lo
        lo = tl.where(nonempty, lo, -2147483648).to(tl.uint32, bitcast=True)
        width = tl.where(nonempty, hi.to(tl.uint32, bitcast=True) - lo, 0)
        return lo, width

    @triton.jit
    def _ellipsoid_allowed(c0, c1, c2, lim, KC, kl, k_axis_stride, w0, w1, w2, N_AXES: tl.constexpr):
        d = c0[:, None] - tl.load(KC + kl)[None, :]
        dist = w0 * d * d
        if N_AXES > 1:
            d = c1[:, None] - tl.load(KC + k_axis_stride + kl)[None, :]
            dist += w1 * d * d
        if N_AXES > 2:
            d = c2[:, None] - tl.load(KC + 2 * k_axis_stride + kl)[None, :]
            dist += w2 * d * d
        return dist <= lim[:, None]

    @triton.jit
    def _attend(
        acc, l_i, m_i, q,
        k_src, v_src, stride_ks, stride_kd, stride_vs, stride_vd,
        start_n, kv_len, qk_scale, offs_d,
        col_in_block, tile_words, pad_lo, pad_hi,
        qa0, qb0, qa1, qb1, qa2, qb2, MASK_K, mk_start, mk_n, w0, w1, w2,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
        MODE: tl.constexpr, PART_KIND: tl.constexpr, N_AXES: tl.constexpr, K_FREE: tl.constexpr,
        HAS_KEYPAD: tl.constexpr, USE_TMA: tl.constexpr, UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ):
        """One (BLOCK_M x BLOCK_N) step of the online softmax. MODE 0: clean full block (no test);
        1: edge full block (bounds and key padding); 2: partial block (predicate, bounds, padding)."""
        offs_n = tl.arange(0, BLOCK_N)
        if USE_TMA:
            k = k_src.load([start_n, 0]).T
        else:
            # the tile offsets are loop-invariant (hoisted); each step adds one scalar
            k_ptrs = k_src + start_n.to(tl.int64) * stride_ks + (offs_n[None, :] * stride_ks + offs_d[:, None] * stride_kd)
            if MODE == 0:
                if HEAD_DIM == BLOCK_D:
                    k = tl.load(k_ptrs)
                else:
                    k = tl.load(k_ptrs, mask=(offs_d < HEAD_DIM)[:, None], other=0.0)
            else:
                k = tl.load(k_ptrs, mask=((start_n + offs_n) < kv_len)[None, :] & (offs_d < HEAD_DIM)[:, None],
                            other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
        qk = tl.dot(q, k, input_precision=DOT_PRECISION)
        if MODE == 0:
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.math.exp2(qk * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
        else:
            cols = start_n + offs_n
            col_ok = cols < kv_len
            if HAS_KEYPAD:
                col_ok = col_ok & ((cols < pad_lo) | (cols >= pad_hi))
            if MODE == 2:
                if PART_KIND == 1:
                    bits = (tile_words >> (col_in_block % 32)[None, :]) & 1
                    allowed = bits != 0
                else:
                    kl = tl.minimum(tl.maximum(cols - mk_start, 0), mk_n - 1)
                    if PART_KIND == 2:
                        allowed = _window_allowed(qa0, qb0, qa1, qb1, qa2, qb2, MASK_K, kl, mk_n, N_AXES)
                    else:
                        allowed = _ellipsoid_allowed(qa0, qa1, qa2, qb0, MASK_K, kl, mk_n, w0, w1, w2, N_AXES)
                    if K_FREE:
                        allowed = allowed | ((cols < mk_start) | (cols >= mk_start + mk_n))[None, :]
                qk = tl.where(allowed & col_ok[None, :], qk * qk_scale, float("-inf"))
            else:
                qk = tl.where(col_ok[None, :], qk * qk_scale, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(qk - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        if USE_TMA:
            v = v_src.load([start_n, 0])
        else:
            v_ptrs = v_src + start_n.to(tl.int64) * stride_vs + (offs_n[:, None] * stride_vs + offs_d[None, :] * stride_vd)
            if MODE == 0:
                if HEAD_DIM == BLOCK_D:
                    v = tl.load(v_ptrs)
                else:
                    v = tl.load(v_ptrs, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
            else:
                v = tl.load(v_ptrs, mask=((start_n + offs_n) < kv_len)[:, None] & (offs_d < HEAD_DIM)[None, :],
                            other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        return acc, l_i, m_new

    @triton.jit
    def _full_loop(
        acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_kd, stride_vs, stride_vd, full_row, stride_fic,
        it_lo, it_hi, kv_len, qk_scale, offs_d, pad_lo, pad_hi,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr,
        MODE: tl.constexpr, HAS_KEYPAD: tl.constexpr, USE_TMA: tl.constexpr, UPCAST: tl.constexpr,
        DOT_PRECISION: tl.constexpr, WARP_SPEC: tl.constexpr,
    ):
        """The flat loop over (full block x sub-tile) steps ``[it_lo, it_hi)`` of a row's full blocks."""
        SUB_N: tl.constexpr = KV_BLOCK // BLOCK_N
        for it in tl.range(it_lo, it_hi, warp_specialize=WARP_SPEC):
            kb = tl.load(full_row + (it // SUB_N) * stride_fic)
            start_n = tl.multiple_of(kb * KV_BLOCK + (it % SUB_N) * BLOCK_N, BLOCK_N)
            acc, l_i, m_i = _attend(
                acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_kd, stride_vs, stride_vd,
                start_n, kv_len, qk_scale, offs_d, offs_d, 0, pad_lo, pad_hi,
                0, 0, 0, 0, 0, 0, full_row, 0, 1, 0, 0, 0,
                HEAD_DIM, BLOCK_D, BLOCK_N, MODE, 0, 1, False, HAS_KEYPAD, USE_TMA, UPCAST, DOT_PRECISION,
            )
        return acc, l_i, m_i

    @triton.jit(do_not_specialize=["num_heads", "q_len", "kv_len", "n_mtiles", "total_tiles", "num_programs",
                                   "mq_start", "mq_n", "mk_start", "mk_n", "w0", "w1", "w2"])
    def _bsa_fwd_kernel(
        Q, K, V, O, LSE,  # noqa: E741
        FULL_IDX, FULL_CNT, CLEAN_CNT, PART_IDX, PART_CNT, PART_TILE, ROW_ORDER,
        MASK_A, MASK_B, MASK_K, KEY_PAD,
        PRIOR_O, PRIOR_LSE, AFF_SCALE, AFF_SHIFT,
        stride_qb, stride_qs, stride_qh, stride_qd,
        stride_kb, stride_ks, stride_kh, stride_kd,
        stride_vb, stride_vs, stride_vh, stride_vd,
        stride_ob, stride_os, stride_oh, stride_od,
        stride_lb, stride_ls, stride_lh,
        stride_fib, stride_fih, stride_fiq, stride_fic,
        stride_cb, stride_ch, stride_cq,
        stride_pib, stride_pih, stride_piq, stride_pic,
        stride_kpb,
        stride_pob, stride_pos, stride_poh, stride_pod,
        stride_plb, stride_pls, stride_plh,
        stride_asb, stride_ash, stride_asq,
        stride_afb, stride_afh, stride_afq, stride_afd,
        num_heads, q_len, kv_len, qk_scale, n_mtiles, total_tiles, num_programs,
        mq_start, mq_n, mk_start, mk_n, w0, w1, w2,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
        Q_BLOCK: tl.constexpr, KV_BLOCK: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
        HAS_PRIOR: tl.constexpr, HAS_AFFINE: tl.constexpr,
        PART_KIND: tl.constexpr, N_AXES: tl.constexpr, K_FREE: tl.constexpr,
        HAS_EDGE: tl.constexpr, HAS_KEYPAD: tl.constexpr,
        USE_TMA: tl.constexpr, WARP_SPEC: tl.constexpr,
        PERSISTENT: tl.constexpr,
    ):
        SUB_M: tl.constexpr = Q_BLOCK // BLOCK_M
        SUB_N: tl.constexpr = KV_BLOCK // BLOCK_N
        WORDS: tl.constexpr = (KV_BLOCK + 31) // 32
        WORD_SPAN: tl.constexpr = 32 if BLOCK_N >= 32 else BLOCK_N
        N_WORDS: tl.constexpr = BLOCK_N // WORD_SPAN
        pid = tl.program_id(0)
        if PERSISTENT:
            tile_end = total_tiles
            tile_step = num_programs
        else:
            tile_end = pid + 1
            tile_step = 1
        for tile in tl.range(pid, tile_end, tile_step):
            bh = (tile // n_mtiles).to(tl.int64)
            j = tile % n_mtiles
            b = bh // num_heads
            h = bh % num_heads
            qb = tl.load(ROW_ORDER + b * stride_cb + h * stride_ch + (j // SUB_M) * stride_cq)
            sub = j % SUB_M
            start_m = qb * Q_BLOCK + sub * BLOCK_M
            if start_m < q_len:
                row_in_block = sub * BLOCK_M + tl.arange(0, BLOCK_M)
                offs_m = start_m + tl.arange(0, BLOCK_M)
                offs_d = tl.arange(0, BLOCK_D)
                d_mask = offs_d < HEAD_DIM
                m_ok = offs_m < q_len
                q = tl.load(
                    Q + b * stride_qb + h * stride_qh + offs_m.to(tl.int64)[:, None] * stride_qs
                    + offs_d[None, :] * stride_qd,
                    mask=m_ok[:, None] & d_mask[None, :], other=0.0,
                )
                if UPCAST:
                    q = q.to(tl.float32)
                k_base = K + b * stride_kb + h * stride_kh
                v_base = V + b * stride_vb + h * stride_vh
                if USE_TMA:
                    k_src = tl.make_tensor_descriptor(k_base, shape=[kv_len, HEAD_DIM], strides=[stride_ks, 1],
                                                      block_shape=[BLOCK_N, BLOCK_D])
                    v_src = tl.make_tensor_descriptor(v_base, shape=[kv_len, HEAD_DIM], strides=[stride_vs, 1],
                                                      block_shape=[BLOCK_N, BLOCK_D])
                else:
                    k_src = k_base
                    v_src = v_base
                if HAS_PRIOR:
                    # a softmax state whose max is the prior's LSE (log2 units): l = 1, acc = the prior output
                    prior_lse = tl.load(PRIOR_LSE + b * stride_plb + h * stride_plh + offs_m * stride_pls,
                                        mask=m_ok, other=float("-inf"))
                    seen = prior_lse != float("-inf")
                    m_i = tl.where(seen, prior_lse * 1.4426950408889634, float("-inf"))
                    l_i = tl.where(seen, 1.0, 0.0)
                    acc = tl.load(
                        PRIOR_O + b * stride_pob + h * stride_poh + offs_m.to(tl.int64)[:, None] * stride_pos
                        + offs_d[None, :] * stride_pod,
                        mask=m_ok[:, None] & d_mask[None, :], other=0.0,
                    ).to(tl.float32) * l_i[:, None]
                else:
                    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
                    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
                    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
                if HAS_KEYPAD:
                    pad_lo = tl.load(KEY_PAD + b * stride_kpb)
                    pad_hi = tl.load(KEY_PAD + b * stride_kpb + 1)
                else:
                    pad_lo = 0
                    pad_hi = 0
                # query side of the analytic predicates: loaded once, rows outside the covered range
                # get an always-true window / limit
                qa0 = tl.zeros([BLOCK_M], dtype=tl.int32)
                qb0 = qa0
                qa1 = qa0
                qb1 = qa0
                qa2 = qa0
                qb2 = qa0
                if PART_KIND >= 2:
                    q_in = (offs_m >= mq_start) & (offs_m < mq_start + mq_n)
                    ql = tl.minimum(tl.maximum(offs_m - mq_start, 0), mq_n - 1)
                    if PART_KIND == 2:
                        qa0, qb0 = _window_row(MASK_A, MASK_B, ql, q_in)
                        if N_AXES > 1:
                            qa1, qb1 = _window_row(MASK_A + mq_n, MASK_B + mq_n, ql, q_in)
                        if N_AXES > 2:
                            qa2, qb2 = _window_row(MASK_A + 2 * mq_n, MASK_B + 2 * mq_n, ql, q_in)
                    else:
                        qa0 = tl.load(MASK_A + ql)
                        if N_AXES > 1:
                            qa1 = tl.load(MASK_A + mq_n + ql)
                        if N_AXES > 2:
                            qa2 = tl.load(MASK_A + 2 * mq_n + ql)
                        qb0 = tl.where(q_in, tl.load(MASK_B + ql), 2147483647)

                cnt_off = b * stride_cb + h * stride_ch + qb * stride_cq
                full_row = FULL_IDX + b * stride_fib + h * stride_fih + qb * stride_fiq
                n_clean = tl.load(CLEAN_CNT + cnt_off)
                # 1. clean full blocks: no per-token test; 2. edge full blocks: the ragged tail and the key padding
                acc, l_i, m_i = _full_loop(
                    acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_kd, stride_vs, stride_vd, full_row, stride_fic,
                    0, n_clean * SUB_N, kv_len, qk_scale, offs_d, pad_lo, pad_hi,
                    HEAD_DIM, BLOCK_D, KV_BLOCK, BLOCK_N, 0, HAS_KEYPAD, USE_TMA, UPCAST, DOT_PRECISION, WARP_SPEC,
                )
                if HAS_EDGE:
                    n_full = tl.load(FULL_CNT + cnt_off)
                    acc, l_i, m_i = _full_loop(
                        acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_kd, stride_vs, stride_vd, full_row,
                        stride_fic, n_clean * SUB_N, n_full * SUB_N, kv_len, qk_scale, offs_d, pad_lo, pad_hi,
                        HEAD_DIM, BLOCK_D, KV_BLOCK, BLOCK_N, 1, HAS_KEYPAD, USE_TMA, UPCAST, DOT_PRECISION, False,
                    )
                # 3. partial blocks: the layout's predicate
                if PART_KIND > 0:
                    part_row = PART_IDX + b * stride_pib + h * stride_pih + qb * stride_piq
                    tile_row = PART_TILE + b * stride_pib + h * stride_pih + qb * stride_piq
                    n_part = tl.load(PART_CNT + cnt_off)
                    for it in tl.range(0, n_part * SUB_N):
                        slot = it // SUB_N
                        kb = tl.load(part_row + slot * stride_pic)
                        col_in_block = (it % SUB_N) * BLOCK_N + tl.arange(0, BLOCK_N)
                        start_n = tl.multiple_of(kb * KV_BLOCK + (it % SUB_N) * BLOCK_N, BLOCK_N)
                        if PART_KIND == 1:
                            # the BLOCK_N // 32 words of this sub-tile's columns (half a word when
                            # BLOCK_N = 16), broadcast to one word per column
                            tile_id = tl.load(tile_row + slot * stride_pic).to(tl.int64)
                            word0 = ((it % SUB_N) * BLOCK_N) // 32
                            words = tl.load(MASK_A + tile_id * (Q_BLOCK * WORDS) + row_in_block[:, None] * WORDS
                                            + word0 + tl.arange(0, N_WORDS)[None, :])
                            tile_words = tl.reshape(tl.broadcast_to(words[:, :, None], (BLOCK_M, N_WORDS, WORD_SPAN)),
                                                    (BLOCK_M, BLOCK_N))
                        else:
                            tile_words = 0
                        acc, l_i, m_i = _attend(
                            acc, l_i, m_i, q, k_src, v_src, stride_ks, stride_kd, stride_vs, stride_vd,
                            start_n, kv_len, qk_scale, offs_d, col_in_block, tile_words, pad_lo, pad_hi,
                            qa0, qb0, qa1, qb1, qa2, qb2, MASK_K, mk_start, mk_n, w0, w1, w2,
                            HEAD_DIM, BLOCK_D, BLOCK_N, 2, PART_KIND, N_AXES, K_FREE, HAS_KEYPAD, USE_TMA,
                            UPCAST, DOT_PRECISION,
                        )

                empty = l_i == 0.0
                out = acc / tl.where(empty, 1.0, l_i)[:, None]
                if HAS_AFFINE:
                    a_scale = tl.load(AFF_SCALE + b * stride_asb + h * stride_ash + qb * stride_asq)
                    a_shift = tl.load(AFF_SHIFT + b * stride_afb + h * stride_afh + qb * stride_afq
                                      + offs_d * stride_afd, mask=d_mask, other=0.0)
                    out = out * a_scale + a_shift[None, :]
                tl.store(
                    O + b * stride_ob + h * stride_oh + offs_m.to(tl.int64)[:, None] * stride_os
                    + offs_d[None, :] * stride_od,
                    out.to(O.dtype.element_ty),
                    mask=m_ok[:, None] & d_mask[None, :],
                )
                lse = tl.where(empty, float("-inf"),
                               (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
                tl.store(LSE + b * stride_lb + h * stride_lh + offs_m * stride_ls, lse, mask=m_ok)


_FLOAT_POINTERS = ("LSE", "PRIOR_LSE", "AFF_SCALE", "AFF_SHIFT")
_INPUT_POINTERS = ("Q", "K", "V", "O", "PRIOR_O")


def kernel_signature(dtype: str) -> dict:
    """The kernel's argument types for ``triton.compile`` (compile-only probes and reports): ``dtype`` is
    the q/k/v element type in Triton's spelling (``"bf16"``, ``"fp16"``, ``"fp32"``)."""
    sig = {}
    for i, name in enumerate(_bsa_fwd_kernel.arg_names):
        if _bsa_fwd_kernel.params[i].is_constexpr:
            sig[name] = "constexpr"
        elif name in _INPUT_POINTERS:
            sig[name] = f"*{dtype}"
        elif name in _FLOAT_POINTERS:
            sig[name] = "*fp32"
        elif name.isupper():
            sig[name] = "*i32"  # index lists, predicate data, key padding
        else:
            sig[name] = "fp32" if name == "qk_scale" else "i32"
    return sig


def op_arguments(q, k, v, layout, scale: float, prior=None, affine=None) -> tuple:
    """The positional arguments of ``torch.ops.accel.block_sparse_attn`` for ``layout``.

    The op's schema: ``(q, k, v, full_idx, full_cnt, clean_cnt, part_idx, part_cnt, part_tile, row_order,
    mask_data: Tensor[], key_pad: Tensor?, meta: int[], scale, prior_out?, prior_lse?, affine_scale?,
    affine_shift?)`` where the lists come from ``layout.schedule`` and ``meta`` = ``[q_block, kv_block,
    has_edge, part_kind, n_axes, q_start, n_q, k_start, n_k, k_free, w0, w1, w2]``.
    """
    s = layout.schedule
    meta = [layout.q_block, layout.kv_block, int(s.has_edge), *s.mask_ints]
    return (
        q, k, v, s.full_idx, s.full_cnt, s.clean_cnt, s.part_idx, s.part_cnt, s.part_tile, s.row_order,
        list(s.mask_data), layout.key_pad, meta, float(scale),
        *(prior if prior is not None else (None, None)),
        *(affine if affine is not None else (None, None)),
    )


def _tma_usable(*tensors) -> bool:
    """Tensor descriptors need 16-byte aligned bases and strides and a unit last stride."""
    for t in tensors:
        es = t.element_size()
        if t.stride(3) != 1 or t.data_ptr() % 16:
            return False
        if any((st * es) % 16 for st in (t.stride(0), t.stride(1), t.stride(2))):
            return False
    return True


def _launch(q, k, v, full_idx, full_cnt, clean_cnt, part_idx, part_cnt, part_tile, row_order, mask_data, key_pad,
            meta, scale, prior_out=None, prior_lse=None, affine_scale=None, affine_shift=None):
    q_block, kv_block, has_edge, part_kind, n_axes, mq_start, mq_n, mk_start, mk_n, k_free, w0, w1, w2 = meta
    bsz, q_len, heads, d = q.shape
    kv_len = k.shape[1]
    out = torch.empty((bsz, q_len, heads, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((bsz, q_len, heads), dtype=torch.float32, device=q.device)
    nq = -(-q_len // q_block)
    fi = full_idx.expand(bsz, heads, nq, full_idx.shape[3])
    fc, cc, pc, ro = (t.expand(bsz, heads, nq) for t in (full_cnt, clean_cnt, part_cnt, row_order))
    pi = part_idx.expand(bsz, heads, nq, part_idx.shape[3])
    pt = part_tile.expand(bsz, heads, nq, part_tile.shape[3])
    if len({fc.stride(), cc.stride(), pc.stride(), ro.stride()}) != 1:
        fc, cc, pc, ro = (t.contiguous() for t in (fc, cc, pc, ro))
    if pi.stride() != pt.stride():
        pi, pt = pi.contiguous(), pt.contiguous()
    kp = key_pad.expand(bsz, 2) if key_pad is not None else None
    block_d = kernel_head_dim(d)
    upcast = INTERPRET or q.device.type != "cuda"
    precision = "ieee" if (q.dtype == torch.float32 or upcast) else "tf32"
    has_prior = prior_out is not None
    has_affine = affine_scale is not None
    key = tuning.TuningKey(
        dtype=str(q.dtype).removeprefix("torch."), head_dim=d, q_block=q_block, kv_block=kv_block,
        layout_class=tuning.layout_class(part_kind, key_pad is not None, bool(has_edge)),
        seq_bucket=int(math.log2(max(q_len, kv_len, 1))), prior=has_prior, affine=has_affine,
    )
    # absent optional inputs: any valid pointer (never read) and zero strides
    mask_a, mask_b, mask_k = (list(mask_data) + [lse, lse, lse])[:3]
    if part_kind == 1:
        mask_b = mask_k = lse
    po, pl = (prior_out, prior_lse) if has_prior else (q, lse)
    a_s = affine_scale.expand(bsz, heads, nq) if has_affine else lse
    a_f = affine_shift.expand(bsz, heads, nq, d) if has_affine else q
    n_mtiles_of = lambda bm: nq * (q_block // bm)  # noqa: E731

    def args_for(cfg: KernelConfig, programs: int):
        return (
            q, k, v, out, lse, fi, fc, cc, pi, pc, pt, ro, mask_a, mask_b, mask_k, kp if kp is not None else fc,
            po, pl, a_s, a_f,
            *q.stride(), *k.stride(), *v.stride(), *out.stride(), *lse.stride(),
            *fi.stride(), *fc.stride(), *pi.stride(), kp.stride(0) if kp is not None else 0,
            *(po.stride() if has_prior else (0, 0, 0, 0)), *(pl.stride() if has_prior else (0, 0, 0)),
            *(a_s.stride() if has_affine else (0, 0, 0)), *(a_f.stride() if has_affine else (0, 0, 0, 0)),
            heads, q_len, kv_len, scale * _LOG2E, n_mtiles_of(cfg.block_m), bsz * heads * n_mtiles_of(cfg.block_m),
            programs, mq_start, mq_n, mk_start, mk_n, w0, w1, w2,
        )

    tma_ok = _tma_usable(k, v)

    def run(cfg: KernelConfig):
        if cfg.tma and not tma_ok:
            cfg = cfg.portable()
        total = bsz * heads * n_mtiles_of(cfg.block_m)
        programs = min(total, cfg.programs(q.device)) if cfg.persistent else total
        if cfg.tma:
            tuning.ensure_tma_allocator(q.device)
        _bsa_fwd_kernel[(max(programs, 1),)](
            *args_for(cfg, max(programs, 1)),
            HEAD_DIM=d, BLOCK_D=block_d, Q_BLOCK=q_block, KV_BLOCK=kv_block,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, UPCAST=upcast, DOT_PRECISION=precision,
            HAS_PRIOR=has_prior, HAS_AFFINE=has_affine, PART_KIND=part_kind, N_AXES=n_axes, K_FREE=bool(k_free),
            HAS_EDGE=bool(has_edge), HAS_KEYPAD=key_pad is not None, USE_TMA=cfg.tma, WARP_SPEC=cfg.warp_spec,
            PERSISTENT=cfg.persistent,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )
        return out, lse

    cfg = tuning.choose_config(key, q.device, run, block_d=block_d, tma_possible=tma_ok)
    return run(cfg)


@torch.library.custom_op("accel::block_sparse_attn", mutates_args=())
def _block_sparse_attn_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    full_idx: torch.Tensor,
    full_cnt: torch.Tensor,
    clean_cnt: torch.Tensor,
    part_idx: torch.Tensor,
    part_cnt: torch.Tensor,
    part_tile: torch.Tensor,
    row_order: torch.Tensor,
    mask_data: list[torch.Tensor],
    key_pad: torch.Tensor | None,
    meta: list[int],
    scale: float,
    prior_out: torch.Tensor | None = None,
    prior_lse: torch.Tensor | None = None,
    affine_scale: torch.Tensor | None = None,
    affine_shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(q, k, v, full_idx, full_cnt, clean_cnt, part_idx, part_cnt, part_tile, row_order, mask_data,
                   key_pad, meta, scale, prior_out, prior_lse, affine_scale, affine_shift)


@_block_sparse_attn_op.register_fake
def _(q, k, v, full_idx, full_cnt, clean_cnt, part_idx, part_cnt, part_tile, row_order, mask_data, key_pad, meta,
      scale, prior_out=None, prior_lse=None, affine_scale=None, affine_shift=None):
    bsz, q_len, heads, d = q.shape
    out = q.new_empty((bsz, q_len, heads, d))
    lse = q.new_empty((bsz, q_len, heads), dtype=torch.float32)
    return out, lse


def triton_block_sparse_attention(q, k, v, layout, scale: float, prior=None, affine=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the Triton kernel (inputs already validated by :func:`block_sparse_attention`).

    ``prior``: optional ``(out, lse)`` over a disjoint key set, merged in the kernel; ``affine``: optional
    ``(scale [B|1, H|1, NQB] float32, shift [B|1, H|1, NQB, D] float32)`` applied in the epilogue.
    Returns ``(out [B, Sq, H, D] in q's dtype, lse [B, Sq, H] float32)``.
    """
    if not HAVE_TRITON:
        raise RuntimeError("backend='triton' needs the triton package, which is not installed")
    if q.device.type != "cuda" and not INTERPRET:
        raise ValueError(
            f"backend='triton' needs CUDA tensors (got device {q.device}); on CPU set TRITON_INTERPRET=1 "
            "before importing accel (tests) or use backend='flex' / 'reference'"
        )
    return torch.ops.accel.block_sparse_attn(*op_arguments(q, k, v, layout, scale, prior, affine))


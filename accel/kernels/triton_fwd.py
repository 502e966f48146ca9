"""Triton block-sparse attention forward kernel, registered as the custom op ``accel::block_sparse_attn``.

Structure follows Triton's fused-attention tutorial (online softmax in the exp2 domain with the scale
folded into ``log2(e)``, fp32 accumulators), driven by the index lists of a :class:`BlockLayout`
instead of a dense loop: a program owns ``BLOCK_M`` queries of one (batch, head), walks its *full*
key blocks with no per-token test, then its *partial* key blocks with the tile predicate, and writes
the normalised output and the natural-log LSE. Rows that see no key get output 0 and LSE -inf.

Two optional fusions (constexpr switches, no cost when off):

* *prior*: the online softmax starts from a previous partial result ``(out, lse)`` over a disjoint key
  set (state ``m = lse·log2(e)``, ``l = 1``, ``acc = out``), so the kernel returns the attention over
  the union without a separate LSE merge pass;
* *block affine*: the epilogue writes ``scale[qb] · out + shift[qb]`` with one scalar and one
  ``D``-vector per (batch, head, query block) — the rectification step of Rectified sparse attention.
  The returned LSE is that of the softmax (before the affine step).

Tensors are read in diffusers' ``[B, S, H, D]`` layout through their strides. Head dims that are not
a power of two are handled by masking the ``D`` axis up to the next power of two (>= 16), so no
padded copies are made. Offsets are int64.

Under ``TRITON_INTERPRET=1`` (CPU tests) one configuration is used and tiles are upcast to fp32
before ``tl.dot`` (the interpreter's bf16 dot is wrong: triton-lang/triton#11584). On CUDA the block
configuration is autotuned per (block sizes, head dim, dtype, sequence-length bucket).
"""

from __future__ import annotations

import math
import os

import torch

try:  # triton is a Linux dependency; keep accel importable elsewhere
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only on machines without triton
    triton = None
    tl = None

__all__ = ["HAVE_TRITON", "INTERPRET", "triton_block_sparse_attention", "kernel_head_dim"]

HAVE_TRITON = triton is not None
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_LOG2E = 1.4426950408889634


def kernel_head_dim(d: int) -> int:
    """The padded head dim the kernel computes with: next power of two, at least 16."""
    return max(16, 1 << (d - 1).bit_length())


if HAVE_TRITON:

    @triton.jit
    def _attend_block(
        acc, l_i, m_i, q,
        k_base, v_base, stride_ks, stride_kd, stride_vs, stride_vd,
        tile_base, row_in_tile,
        start_n, kv_len, qk_scale,
        offs_d, d_mask,
        KV_BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, PARTIAL: tl.constexpr,
        UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < kv_len
        k = tl.load(
            k_base + offs_n[None, :] * stride_ks + offs_d[:, None] * stride_kd,
            mask=n_ok[None, :] & d_mask[:, None], other=0.0,
        )
        if UPCAST:
            k = k.to(tl.float32)
        qk = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
        if PARTIAL:
            col_in_tile = (start_n % KV_BLOCK) + tl.arange(0, BLOCK_N)
            allowed = tl.load(tile_base + row_in_tile[:, None] * KV_BLOCK + col_in_tile[None, :]) != 0
            qk = tl.where(allowed & n_ok[None, :], qk, float("-inf"))
        else:
            if start_n + BLOCK_N > kv_len:  # only the ragged last key block pays for a bounds test
                qk = tl.where(n_ok[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(qk - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_base + offs_n[:, None] * stride_vs + offs_d[None, :] * stride_vd,
            mask=n_ok[:, None] & d_mask[None, :], other=0.0,
        )
        if UPCAST:
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        return acc, l_i, m_new

    @triton.jit
    def _bsa_fwd_kernel(
        Q, K, V, O, LSE,  # noqa: E741
        FULL_IDX, FULL_CNT, PART_IDX, PART_CNT, PART_TILE, TILES,
        PRIOR_O, PRIOR_LSE, AFF_SCALE, AFF_SHIFT,
        stride_qb, stride_qs, stride_qh, stride_qd,
        stride_kb, stride_ks, stride_kh, stride_kd,
        stride_vb, stride_vs, stride_vh, stride_vd,
        stride_ob, stride_os, stride_oh, stride_od,
        stride_lb, stride_ls, stride_lh,
        stride_fib, stride_fih, stride_fiq, stride_fic,
        stride_fcb, stride_fch, stride_fcq,
        stride_pib, stride_pih, stride_piq, stride_pic,
        stride_pcb, stride_pch, stride_pcq,
        stride_pob, stride_pos, stride_poh, stride_pod,
        stride_plb, stride_pls, stride_plh,
        stride_asb, stride_ash, stride_asq,
        stride_afb, stride_afh, stride_afq, stride_afd,
        num_heads, q_len, kv_len, qk_scale,
        tune_seq_bucket,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
        Q_BLOCK: tl.constexpr, KV_BLOCK: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        UPCAST: tl.constexpr, DOT_PRECISION: tl.constexpr,
        HAS_PRIOR: tl.constexpr, HAS_AFFINE: tl.constexpr,
    ):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1).to(tl.int64)
        b = pid_bh // num_heads
        h = pid_bh % num_heads
        start_m = pid_m * BLOCK_M
        qb = start_m // Q_BLOCK
        row_in_tile = (start_m % Q_BLOCK) + tl.arange(0, BLOCK_M)
        offs_m = (start_m + tl.arange(0, BLOCK_M)).to(tl.int64)
        offs_d = tl.arange(0, BLOCK_D)
        d_mask = offs_d < HEAD_DIM
        m_ok = offs_m < q_len

        q = tl.load(
            Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :] * stride_qd,
            mask=m_ok[:, None] & d_mask[None, :], other=0.0,
        )
        if UPCAST:
            q = q.to(tl.float32)
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh
        if HAS_PRIOR:
            # a softmax state whose max is the prior's LSE (log2 units): l = 1, acc = the prior output
            prior_lse = tl.load(PRIOR_LSE + b * stride_plb + h * stride_plh + offs_m * stride_pls,
                                mask=m_ok, other=float("-inf"))
            seen = prior_lse != float("-inf")
            m_i = tl.where(seen, prior_lse * 1.4426950408889634, float("-inf"))
            l_i = tl.where(seen, 1.0, 0.0)
            acc = tl.load(
                PRIOR_O + b * stride_pob + h * stride_poh + offs_m[:, None] * stride_pos + offs_d[None, :] * stride_pod,
                mask=m_ok[:, None] & d_mask[None, :], other=0.0,
            ).to(tl.float32) * l_i[:, None]
        else:
            m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
            l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
            acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

        full_row = FULL_IDX + b * stride_fib + h * stride_fih + qb * stride_fiq
        n_full = tl.load(FULL_CNT + b * stride_fcb + h * stride_fch + qb * stride_fcq)
        for i in range(0, n_full):
            kb = tl.load(full_row + i * stride_fic).to(tl.int64)
            for j in range(0, KV_BLOCK // BLOCK_N):
                acc, l_i, m_i = _attend_block(
                    acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_kd, stride_vs, stride_vd,
                    TILES, row_in_tile, kb * KV_BLOCK + j * BLOCK_N, kv_len, qk_scale, offs_d, d_mask,
                    KV_BLOCK, BLOCK_N, False, UPCAST, DOT_PRECISION,
                )

        part_row = PART_IDX + b * stride_pib + h * stride_pih + qb * stride_piq
        tile_row = PART_TILE + b * stride_pib + h * stride_pih + qb * stride_piq
        n_part = tl.load(PART_CNT + b * stride_pcb + h * stride_pch + qb * stride_pcq)
        for i in range(0, n_part):
            kb = tl.load(part_row + i * stride_pic).to(tl.int64)
            tile = tl.load(tile_row + i * stride_pic).to(tl.int64)
            tile_base = TILES + tile * (Q_BLOCK * KV_BLOCK)
            for j in range(0, KV_BLOCK // BLOCK_N):
                acc, l_i, m_i = _attend_block(
                    acc, l_i, m_i, q, k_base, v_base, stride_ks, stride_kd, stride_vs, stride_vd,
                    tile_base, row_in_tile, kb * KV_BLOCK + j * BLOCK_N, kv_len, qk_scale, offs_d, d_mask,
                    KV_BLOCK, BLOCK_N, True, UPCAST, DOT_PRECISION,
                )

        empty = l_i == 0.0
        out = acc / tl.where(empty, 1.0, l_i)[:, None]
        if HAS_AFFINE:
            a_scale = tl.load(AFF_SCALE + b * stride_asb + h * stride_ash + qb * stride_asq)
            a_shift = tl.load(AFF_SHIFT + b * stride_afb + h * stride_afh + qb * stride_afq + offs_d * stride_afd,
                              mask=d_mask, other=0.0)
            out = out * a_scale + a_shift[None, :]
        tl.store(
            O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :] * stride_od,
            out.to(O.dtype.element_ty),
            mask=m_ok[:, None] & d_mask[None, :],
        )
        lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(tl.where(empty, 1.0, l_i))) * 0.6931471805599453)
        tl.store(LSE + b * stride_lb + h * stride_lh + offs_m * stride_ls, lse, mask=m_ok)

    def _prune_configs(configs, named_args, **kwargs):
        # Triton versions differ in whether constexpr launch arguments arrive in named_args or kwargs
        params = {**named_args, **kwargs}
        q_block, kv_block, block_d = params["Q_BLOCK"], params["KV_BLOCK"], params["BLOCK_D"]
        kept = [
            c for c in configs
            if c.kwargs["BLOCK_M"] <= q_block and c.kwargs["BLOCK_N"] <= kv_block
            and not (block_d >= 256 and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] > 64 * 64)
        ]
        if not kept:  # blocks smaller than every config: use the layout's own block sizes
            kept = [triton.Config({"BLOCK_M": q_block, "BLOCK_N": kv_block}, num_warps=4, num_stages=2)]
        return kept

    _GPU_CONFIGS = [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm in (64, 128)
        for bn in (32, 64, 128)
        for w in (4, 8)
        for s in (2, 3, 4)
        if not (w == 8 and bm * bn < 128 * 64)
    ]
    _bsa_fwd_tuned = triton.autotune(
        configs=_GPU_CONFIGS,
        key=["Q_BLOCK", "KV_BLOCK", "BLOCK_D", "HEAD_DIM", "tune_seq_bucket", "DOT_PRECISION"],
        prune_configs_by={"early_config_prune": _prune_configs},
    )(_bsa_fwd_kernel)


def _launch(q, k, v, full_idx, full_cnt, part_idx, part_cnt, part_tile, tiles, scale, q_block, kv_block,
            prior_out=None, prior_lse=None, affine_scale=None, affine_shift=None):
    bsz, q_len, heads, d = q.shape
    kv_len = k.shape[1]
    out = torch.empty((bsz, q_len, heads, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((bsz, q_len, heads), dtype=torch.float32, device=q.device)
    nq = -(-q_len // q_block)
    fi = full_idx.expand(bsz, heads, nq, full_idx.shape[3])
    fc = full_cnt.expand(bsz, heads, nq)
    pi = part_idx.expand(bsz, heads, nq, part_idx.shape[3])
    pt = part_tile.expand(bsz, heads, nq, part_tile.shape[3])
    pc = part_cnt.expand(bsz, heads, nq)
    if pi.stride() != pt.stride():
        pt = pt.contiguous().expand(bsz, heads, nq, part_tile.shape[3])
        pi = pi.contiguous().expand(bsz, heads, nq, part_idx.shape[3])
    tiles_u8 = tiles.view(torch.uint8) if tiles.dtype == torch.bool else tiles
    block_d = kernel_head_dim(d)
    upcast = INTERPRET or q.device.type != "cuda"
    precision = "ieee" if (q.dtype == torch.float32 or upcast) else "tf32"
    has_prior = prior_out is not None
    has_affine = affine_scale is not None
    common = dict(
        HEAD_DIM=d, BLOCK_D=block_d, Q_BLOCK=q_block, KV_BLOCK=kv_block,
        UPCAST=upcast, DOT_PRECISION=precision, HAS_PRIOR=has_prior, HAS_AFFINE=has_affine,
    )
    # absent optional inputs: any valid pointer (never read) and zero strides
    po, pl = (prior_out, prior_lse) if has_prior else (q, lse)
    a_s = affine_scale.expand(bsz, heads, nq) if has_affine else lse
    a_f = affine_shift.expand(bsz, heads, nq, d) if has_affine else q
    args = (
        q, k, v, out, lse, fi, fc, pi, pc, pt, tiles_u8, po, pl, a_s, a_f,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *lse.stride(),
        *fi.stride(), *fc.stride(), *pi.stride(), *pc.stride(),
        *(po.stride() if has_prior else (0, 0, 0, 0)), *(pl.stride() if has_prior else (0, 0, 0)),
        *(a_s.stride() if has_affine else (0, 0, 0)), *(a_f.stride() if has_affine else (0, 0, 0, 0)),
        heads, q_len, kv_len, scale * _LOG2E,
        int(math.log2(max(q_len, 1))),
    )
    if INTERPRET:
        # one configuration: the layout's own blocks (interpreter cost is per block iteration)
        block_m, block_n = min(q_block, 128), min(kv_block, 128)
        grid = (-(-q_len // block_m), bsz * heads)
        _bsa_fwd_kernel[grid](*args, BLOCK_M=block_m, BLOCK_N=block_n, **common)
    else:
        grid = lambda meta: (triton.cdiv(q_len, meta["BLOCK_M"]), bsz * heads)  # noqa: E731
        _bsa_fwd_tuned[grid](*args, **common)
    return out, lse


@torch.library.custom_op("accel::block_sparse_attn", mutates_args=())
def _block_sparse_attn_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    full_idx: torch.Tensor,
    full_cnt: torch.Tensor,
    part_idx: torch.Tensor,
    part_cnt: torch.Tensor,
    part_tile: torch.Tensor,
    tiles: torch.Tensor,
    scale: float,
    q_block: int,
    kv_block: int,
    prior_out: torch.Tensor | None = None,
    prior_lse: torch.Tensor | None = None,
    affine_scale: torch.Tensor | None = None,
    affine_shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch(q, k, v, full_idx, full_cnt, part_idx, part_cnt, part_tile, tiles, scale, q_block, kv_block,
                   prior_out, prior_lse, affine_scale, affine_shift)


@_block_sparse_attn_op.register_fake
def _(q, k, v, full_idx, full_cnt, part_idx, part_cnt, part_tile, tiles, scale, q_block, kv_block,
      prior_out=None, prior_lse=None, affine_scale=None, affine_shift=None):
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
    return torch.ops.accel.block_sparse_attn(
        q, k, v,
        layout.full_idx, layout.full_cnt, layout.part_idx, layout.part_cnt, layout.part_tile, layout.tiles,
        float(scale), layout.q_block, layout.kv_block,
        *(prior if prior is not None else (None, None)),
        *(affine if affine is not None else (None, None)),
    )

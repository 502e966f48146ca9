"""`block_sparse_attention`: the one entry point of the kernels, with input validation and backends."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch

from .block_layout import BlockLayout
from .flex import flex_block_sparse_attention
from .gather import HAVE_CPU_FLASH, gather_block_sparse_attention, mask_bytes
from .merge import merge_attention
from .reference import reference_attention
from .renamed import renamed_argument
from .triton_fwd import HAVE_TRITON, INTERPRET, triton_block_sparse_attention

__all__ = ["block_sparse_attention", "apply_block_affine", "resolve_backend", "BACKENDS", "MAX_HEAD_DIM", "AUTO_FLEX_MIN_PAIRS",
           "AUTO_GATHER_MIN_PAIRS", "AUTO_GATHER_MAX_MASK_BYTES", "cpu_auto_backend", "backends_used"]

BACKENDS = ("auto", "triton", "flex", "gather", "reference")
MAX_HEAD_DIM = 256
# "auto" on CPU without the gather backend (PyTorch < 2.2): below this many (query, key) pairs the
# reference backend is cheaper than compiling FlexAttention (5-30 s per new shape, 2-core CPU).
AUTO_FLEX_MIN_PAIRS = 4096 * 4096
# "auto" on CPU: the gather backend from this many (query, key) pairs on, the reference below. Measured
# in benchmarks/results/cpu_gather.json (python benchmarks/cpu_gather.py --group target|s4096|small|
# random|tiny; 2-core machine under load 12-25, one thread, process CPU time, medians of calls made in
# turn): gather was the fastest exact backend in all 35 records from 512 x 512 to 16,384 x 16,384 pairs
# (bands with 0-100% partial blocks, random per-head layouts, bf16 / fp32, D = 64 / 128), taking
# 0.29-0.74 of compiled flex's CPU time and 0.04-0.51 of the reference's. At 256 x 256 a layout built
# anew in every call (dynamic methods) pays gather's plan: 2.1-3.3 ms against the reference's 1.9-2.0.
AUTO_GATHER_MIN_PAIRS = 512 * 512
# ... unless the masks gather keeps for rows with partial blocks (accel.kernels.gather.mask_bytes) exceed
# this: then "auto" takes the rule without gather (memory, not speed: all measured layouts were far below).
AUTO_GATHER_MAX_MASK_BYTES = 128 << 20
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# the tally of the innermost `backends_used` block of this thread / task (None outside one)
_BACKEND_TALLY: contextvars.ContextVar[dict | None] = contextvars.ContextVar("accel_backend_tally", default=None)


@contextlib.contextmanager
def backends_used() -> Iterator[dict[str, dict[str, int]]]:
    """Count which backend each :func:`block_sparse_attention` call inside the block ran (after ``"auto"``
    was resolved), in this thread or asyncio task only.

    Yields a dict filled as the calls run: ``{backend: {"calls": number of calls, "pairs": sum of
    Sq * Skv of those calls}}`` (pairs of the call's shape, computed or skipped; per batch element and
    head). Eager calls only: calls traced by ``torch.compile`` are not counted.
    """
    tally: dict[str, dict[str, int]] = {}
    token = _BACKEND_TALLY.set(tally)
    try:
        yield tally
    finally:
        _BACKEND_TALLY.reset(token)


def cpu_auto_backend(q_len: int, kv_len: int, *, dense_layout: bool = False, gather_mask_bytes: int = 0) -> str:
    """The backend ``"auto"`` picks on CPU (see :func:`resolve_backend`): ``"reference"`` for a fully
    dense layout (plain SDPA) or below ``AUTO_GATHER_MIN_PAIRS`` query-key pairs, ``"gather"`` otherwise;
    without gather (this PyTorch has no CPU flash kernel, or its masks would exceed
    ``AUTO_GATHER_MAX_MASK_BYTES``) ``"flex"`` from ``AUTO_FLEX_MIN_PAIRS`` pairs on, the reference below.

    Args:
        q_len: number of query tokens.
        kv_len: number of key tokens.
        dense_layout: the layout is fully dense and no LSE is needed (plain SDPA runs it).
        gather_mask_bytes: the layout's :func:`accel.kernels.gather.mask_bytes` at this batch size.
    """
    pairs = q_len * kv_len
    if dense_layout:
        return "reference"
    if HAVE_CPU_FLASH and gather_mask_bytes <= AUTO_GATHER_MAX_MASK_BYTES:
        return "gather" if pairs >= AUTO_GATHER_MIN_PAIRS else "reference"
    return "flex" if pairs >= AUTO_FLEX_MIN_PAIRS else "reference"


def resolve_backend(backend: str, device: torch.device, q_len: int, kv_len: int, *, dense_layout: bool = False,
                    gather_mask_bytes: int = 0) -> str:
    """The concrete backend ``"auto"`` stands for on this device and size (others are returned as is).

    ``"auto"`` picks ``"triton"`` on CUDA (``"flex"`` if triton is missing). On CPU it follows
    :func:`cpu_auto_backend`. All backends compute the same attention; they differ only in speed and
    rounding.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if device.type == "cuda":
        return "triton" if HAVE_TRITON else "flex"
    return cpu_auto_backend(q_len, kv_len, dense_layout=dense_layout, gather_mask_bytes=gather_mask_bytes)


def _check_inputs(q, k, v, layout) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [B, S, H, D] (diffusers' layout), got shape {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
    if not isinstance(layout, BlockLayout):
        raise TypeError(f"blocks must be an accel.kernels.BlockLayout, got {type(layout).__name__}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got q={q.dtype}, k={k.dtype}, v={v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must share a device, got q={q.device}, k={k.device}, v={v.device}")
    if layout.device != q.device:
        raise ValueError(
            f"blocks is on {layout.device} but q is on {q.device}; build the layout with device=q.device "
            "or move it with blocks.to(q.device)"
        )
    bsz, q_len, heads, d = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape [B, Skv, H, D], got k={tuple(k.shape)}, v={tuple(v.shape)}")
    if k.shape[0] != bsz or k.shape[2] != heads or k.shape[3] != d:
        raise ValueError(
            f"k/v shape {tuple(k.shape)} does not match q shape {tuple(q.shape)}: batch, heads and head dim must agree"
        )
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"head dim (q.shape[3]) must be in [1, {MAX_HEAD_DIM}], got {d}")
    if layout.q_len != q_len or layout.kv_len != k.shape[1]:
        raise ValueError(
            f"blocks is for q_len={layout.q_len}, kv_len={layout.kv_len} but q has {q_len} tokens and k has "
            f"{k.shape[1]}"
        )
    lb, lh = layout.batch_heads
    if lb not in (1, bsz) or lh not in (1, heads):
        raise ValueError(f"blocks batch/heads ({lb}, {lh}) must be 1 or equal to the inputs' ({bsz}, {heads})")


def _check_prior(prior, q) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(prior, (tuple, list)) and len(prior) == 2 and all(isinstance(t, torch.Tensor) for t in prior)):
        raise TypeError("prior must be a pair (out [B, Sq, H, D], lse [B, Sq, H]) of tensors or None")
    out, lse = prior
    if out.shape != q.shape or lse.shape != q.shape[:3]:
        raise ValueError(
            f"prior shapes out={tuple(out.shape)}, lse={tuple(lse.shape)} must be [B, Sq, H, D] = {tuple(q.shape)} "
            f"and [B, Sq, H] = {tuple(q.shape[:3])}"
        )
    if out.device != q.device or lse.device != q.device:
        raise ValueError(f"prior must be on q's device {q.device}, got out on {out.device}, lse on {lse.device}")
    if not out.is_floating_point():
        raise ValueError(f"prior out must be a floating-point tensor, got {out.dtype}")
    return out, lse.float()


def _check_affine(affine, q, layout) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(affine, (tuple, list)) and len(affine) == 2 and all(isinstance(t, torch.Tensor) for t in affine)):
        raise TypeError("affine must be a pair (scale [B|1, H|1, NQB], shift [B|1, H|1, NQB, D]) of tensors or None")
    a_scale, a_shift = affine
    bsz, q_len, heads, d = q.shape
    nqb = -(-q_len // layout.q_block)
    ok = (a_scale.dim() == 3 and a_shift.dim() == 4 and a_scale.shape[0] in (1, bsz) and a_scale.shape[1] in (1, heads)
          and a_scale.shape[2] == nqb and a_shift.shape[:3] == a_scale.shape and a_shift.shape[3] == d)
    if not ok:
        raise ValueError(
            f"affine shapes scale={tuple(a_scale.shape)}, shift={tuple(a_shift.shape)} must be [B|1, H|1, NQB] and "
            f"[B|1, H|1, NQB, D] with B={bsz}, H={heads}, NQB={nqb} query blocks of {layout.q_block}, D={d}"
        )
    if a_scale.device != q.device or a_shift.device != q.device:
        raise ValueError(f"affine must be on q's device {q.device}, got {a_scale.device} and {a_shift.device}")
    return a_scale.float(), a_shift.float()


def apply_block_affine(out: torch.Tensor, affine, q_block: int) -> torch.Tensor:
    """``scale[b, h, i // q_block] · out[b, i, h] + shift[b, h, i // q_block]`` for every query row ``i``.

    The PyTorch definition of :func:`block_sparse_attention`'s ``affine`` epilogue (float32 math, result
    in ``out``'s dtype); the Triton backend computes the same in its kernel epilogue.
    """
    a_scale, a_shift = affine
    rows = torch.arange(out.shape[1], device=out.device) // q_block
    s = a_scale.float()[:, :, rows].permute(0, 2, 1)[..., None]  # [B|1, Sq, H|1, 1]
    t = a_shift.float()[:, :, rows].permute(0, 2, 1, 3)  # [B|1, Sq, H|1, D]
    return (s * out.float() + t).to(out.dtype)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    blocks: BlockLayout | None = None,
    *,
    scale: float | None = None,
    backend: str = "auto",
    return_lse: bool = False,
    prior: tuple[torch.Tensor, torch.Tensor] | None = None,
    affine: tuple[torch.Tensor, torch.Tensor] | None = None,
    layout: BlockLayout | None = None,
):
    """Softmax attention of each query over the keys its :class:`BlockLayout` allows.

    ``out[b, i, h] = Σ_j softmax_j(scale · q[b, i, h] · k[b, j, h]) · v[b, j, h]`` where j ranges over
    the keys allowed for query i (full blocks: all their keys; partial blocks: the keys their tile
    allows; never keys at positions >= ``kv_len``). A query with no allowed key gets output 0.

    Args:
        q: queries ``[B, Sq, H, D]`` (diffusers' layout; any strides),
            float32 / float16 / bfloat16, ``1 <= D <= 256`` (64 and 128 are the fast paths; other
            sizes are padded internally to the next power of two).
        k: keys ``[B, Skv, H, D]``, same dtype and device as ``q``. ``Skv`` may differ from ``Sq``.
        v: values, same shape as ``k``.
        blocks: a :class:`BlockLayout` with ``q_len == Sq`` and ``kv_len == Skv``, on q's device;
            its batch/head dimensions are 1 (broadcast) or equal to B / H. (The old keyword
            ``layout=`` still works and warns: it is deprecated.)
        scale: softmax scale; ``None`` means ``1 / sqrt(D)``.
        backend: ``"triton"`` (our kernel; CUDA, or CPU under ``TRITON_INTERPRET=1``), ``"flex"``
            (compiled FlexAttention with the same layout), ``"gather"`` (CPU only: PyTorch's CPU
            flash-attention kernel on the gathered blocks, see :mod:`accel.kernels.gather`),
            ``"reference"`` (dense masked attention; tests and tiny sizes), or ``"auto"`` (see
            :func:`resolve_backend`).
        return_lse: also return the natural-log log-sum-exp of the scaled scores of each query row.
        prior: optional ``(out_p [B, Sq, H, D], lse_p [B, Sq, H])``: the attention of the same queries
            over another, *disjoint* key set (e.g. the text keys) and its LSE. The result is then the
            attention over the union of both key sets (as :func:`accel.kernels.merge_attention` would
            give), and the returned LSE is the union's. Fused into the Triton kernel; other backends
            merge afterwards.
        affine: optional ``(scale [B|1, H|1, NQB], shift [B|1, H|1, NQB, D])`` with ``NQB =
            ceil(Sq / blocks.q_block)``: the output row ``i`` becomes ``scale[b, h, i // q_block] · o +
            shift[b, h, i // q_block]`` (float32 math; after the ``prior`` merge; the LSE is not
            changed). Rows with no key at all get ``shift``. Fused into the Triton kernel's epilogue
            (Rectified sparse attention's rectification); other backends apply
            :func:`apply_block_affine` afterwards.

    Returns:
        ``out`` ``[B, Sq, H, D]`` in q's dtype, or ``(out, lse)`` with ``lse`` float32 ``[B, Sq, H]``
        (``-inf`` for rows with no allowed key) when ``return_lse`` is True.

    Raises:
        TypeError: an input is not a tensor / BlockLayout; ``blocks`` missing, or given twice.
        ValueError: shapes, dtypes, devices, head dim, layout sizes or backend do not fit (the message
            names the parameter and what is allowed).
    """
    layout = renamed_argument("block_sparse_attention", "blocks", blocks, "layout", layout)
    _check_inputs(q, k, v, layout)
    prior = None if prior is None else _check_prior(prior, q)
    affine = None if affine is None else _check_affine(affine, q, layout)
    d = q.shape[3]
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite float or None, got {scale!r}")
    need_lse = return_lse or prior is not None
    cpu_auto = backend == "auto" and q.device.type == "cpu"
    dense_layout = cpu_auto and not need_lse and layout.is_dense
    masks = layout.cached(("gather_mask_bytes", q.shape[0]), lambda: mask_bytes(layout, q.shape[0])) if cpu_auto else 0
    chosen = resolve_backend(backend, q.device, q.shape[1], k.shape[1], dense_layout=dense_layout,
                             gather_mask_bytes=masks)
    # Dynamo cannot trace ContextVar.get: the tally is read in eager calls only (as documented)
    tally = None if torch.compiler.is_compiling() else _BACKEND_TALLY.get()
    if tally is not None:
        entry = tally.setdefault(chosen, {"calls": 0, "pairs": 0})
        entry["calls"] += 1
        entry["pairs"] += q.shape[1] * k.shape[1]
    if chosen == "triton":
        if q.device.type != "cuda" and not INTERPRET:
            raise ValueError(
                f"backend='triton' needs CUDA tensors, got device {q.device}; on CPU use backend='flex' or "
                "'reference' (or set TRITON_INTERPRET=1 before importing accel, for tests)"
            )
        out, lse = triton_block_sparse_attention(q, k, v, layout, scale, prior=prior, affine=affine)
        return (out, lse) if return_lse else out
    if chosen == "gather":
        if q.device.type != "cpu":
            raise ValueError(f"backend='gather' runs on CPU tensors only, got device {q.device}; on CUDA use 'triton'")
        result = gather_block_sparse_attention(q, k, v, layout, scale, need_lse)
    elif chosen == "flex":
        result = flex_block_sparse_attention(q, k, v, layout, scale, need_lse)
    else:
        result = reference_attention(q, k, v, layout, scale, need_lse)
    out, lse = result if need_lse else (result, None)
    if prior is not None:
        out, lse = merge_attention([(out, lse), (prior[0].to(out.dtype), prior[1])])
    if affine is not None:
        out = apply_block_affine(out, affine, layout.q_block)
    return (out, lse) if return_lse else out

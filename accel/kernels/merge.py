"""Exact combination of attention results computed over disjoint key sets (LSE merge)."""

from __future__ import annotations

import torch

__all__ = ["merge_attention"]


def merge_attention(parts):
    """Combine partial attentions over *disjoint* key sets into the attention over their union.

    For parts ``(o_i, lse_i)`` where ``o_i`` is softmax attention over key set ``K_i`` and ``lse_i`` the
    log-sum-exp of its scaled scores, the result over ``K_1 ∪ K_2 ∪ ...`` is
    ``o = Σ_i exp(lse_i - lse) · o_i`` with ``lse = log Σ_i exp(lse_i)``. A part whose row saw no key
    (``lse = -inf``) contributes nothing; a row empty in every part gives ``o = 0``, ``lse = -inf``.

    Args:
        parts: a non-empty sequence of ``(out, lse)`` pairs; ``out`` is ``[B, S, H, D]`` (any float
            dtype; all parts the same shape), ``lse`` is ``[B, S, H]`` (natural log, as returned by
            :func:`accel.kernels.block_sparse_attention` with ``return_lse=True``).

    Returns:
        ``(out, lse)``: ``out`` in the dtype of the first part's output, ``lse`` float32.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("parts must hold at least one (out, lse) pair, got an empty sequence")
    shape = parts[0][0].shape
    for i, (o, lse) in enumerate(parts):
        if o.dim() != 4 or o.shape != shape:
            raise ValueError(f"parts[{i}] output has shape {tuple(o.shape)}; all outputs must be [B, S, H, D] = {tuple(shape)}")
        if lse.shape != shape[:3]:
            raise ValueError(f"parts[{i}] lse has shape {tuple(lse.shape)}; expected [B, S, H] = {tuple(shape[:3])}")
    lses = torch.stack([lse.float() for _, lse in parts])  # [P, B, S, H]
    m = lses.amax(0)
    m_safe = torch.where(torch.isinf(m), 0.0, m)
    w = torch.exp(lses - m_safe)  # 0 for empty parts
    total = w.sum(0)
    total_safe = torch.where(total == 0, 1.0, total)
    out = sum(w[i].unsqueeze(-1) * o.float() for i, (o, _) in enumerate(parts)) / total_safe.unsqueeze(-1)
    lse = torch.where(total == 0, float("-inf"), m_safe + torch.log(total_safe))
    return out.to(parts[0][0].dtype), lse

"""Dense reference backend: attention with the layout's materialised token mask.

For tests and tiny sizes only (it builds an ``S_q x S_kv`` mask). A fully dense layout without LSE
calls ``torch.nn.functional.scaled_dot_product_attention`` exactly as diffusers' native backend does,
so a dense method is bit-identical to upstream on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reference_attention"]


def reference_attention(q, k, v, layout, scale: float, return_lse: bool):
    """Attention of ``q [B,Sq,H,D]`` over ``k, v [B,Skv,H,D]`` restricted to ``layout``'s token mask.

    Returns ``out`` (q's dtype) or ``(out, lse [B, Sq, H] float32)``. Masked math runs in fp32; query
    rows with no allowed key give output 0 and LSE -inf.
    """
    if layout.is_dense and not return_lse:
        qt, kt, vt = (x.permute(0, 2, 1, 3) for x in (q, k, v))
        return F.scaled_dot_product_attention(qt, kt, vt, scale=scale).permute(0, 2, 1, 3)
    mask = layout.to_dense_mask()  # [B|1, H|1, Sq, Skv]
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # -inf on empty rows
    probs = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse).unsqueeze(-1))
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v.float()).to(q.dtype)
    if return_lse:
        return out, lse.permute(0, 2, 1).contiguous()
    return out

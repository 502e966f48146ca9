"""Dense reference backend: attention with the layout's materialised token mask.

For tests and tiny sizes only (it builds an ``S_q x S_kv`` mask). A fully dense layout without LSE
calls ``torch.nn.functional.scaled_dot_product_attention`` exactly as diffusers' native backend does,
so a dense method is bit-identical to upstream on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["reference_attention"]

# materialised masks up to this many elements are kept on the layout for the next call
_CACHE_MASK_MAX_ELEMENTS = 1 << 25


def _dense_mask(layout) -> torch.Tensor:
    b, h = layout.batch_heads
    if b * h * layout.q_len * layout.kv_len <= _CACHE_MASK_MAX_ELEMENTS:
        return layout.cached("dense_mask", layout.to_dense_mask)
    return layout.to_dense_mask()


def reference_attention(q, k, v, layout, scale: float, return_lse: bool):
    """Attention of ``q [B,Sq,H,D]`` over ``k, v [B,Skv,H,D]`` restricted to ``layout``'s token mask.

    Returns ``out`` (q's dtype) or ``(out, lse [B, Sq, H] float32)``. Without LSE it runs SDPA with the
    boolean mask in the input dtype; with LSE the masked math runs in fp32. Query rows with no allowed
    key give output 0 and LSE -inf.
    """
    qt, kt, vt = (x.permute(0, 2, 1, 3) for x in (q, k, v))
    if layout.is_dense and not return_lse:
        return F.scaled_dot_product_attention(qt, kt, vt, scale=scale).permute(0, 2, 1, 3)
    mask = _dense_mask(layout)  # [B|1, H|1, Sq, Skv]
    if not return_lse:
        # SDPA with a boolean mask (fused on CPU); rows that see no key come out NaN and are zeroed
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)
        seen = mask.any(-1, keepdim=True)
        if not bool(seen.all()):
            out = torch.where(seen, out, 0.0)
        return out.permute(0, 2, 1, 3)
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # -inf on empty rows
    probs = torch.exp(scores - torch.where(torch.isinf(lse), 0.0, lse).unsqueeze(-1))
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v.float()).to(q.dtype)
    if return_lse:
        return out, lse.permute(0, 2, 1).contiguous()
    return out

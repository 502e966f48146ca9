"""Independent references for kernel tests: brute-force fp64 masked softmax attention."""

import torch


def dense_masked_attention(q, k, v, mask, scale):
    """fp64 attention of q [B,Sq,H,D] over k, v [B,Skv,H,D] with a token mask [B|1,H|1,Sq,Skv].

    Returns (out [B,Sq,H,D] float64, lse [B,Sq,H] float64); rows with no allowed key give 0 / -inf.
    """
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) * scale
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1).nan_to_num(0.0)
    out = torch.einsum("bhqk,bkhd->bqhd", p, v.double())
    return out, lse.permute(0, 2, 1)


def block_mask_to_token_mask(block_mask, q_block, kv_block, q_len, kv_len):
    """Expand a block mask [B,H,NQ,NKV] to the token mask it stands for (all kept blocks full)."""
    m = block_mask.repeat_interleave(q_block, 2).repeat_interleave(kv_block, 3)
    return m[..., :q_len, :kv_len]


def make_qkv(bsz, q_len, kv_len, heads, d, dtype, gen, layout_kind="contiguous"):
    """Random q, k, v in [B, S, H, D]; layout_kind 'bhsd' gives permuted views of [B, H, S, D]
    tensors and 'sliced' gives views into a wider head dim, 'strided_d' a head dim with a non-unit stride."""

    def one(s):
        if layout_kind == "bhsd":
            return torch.randn(bsz, heads, s, d, generator=gen).to(dtype).permute(0, 2, 1, 3)
        if layout_kind == "strided_d":  # head dim not unit-stride
            return torch.randn(bsz, d, s, heads, generator=gen).to(dtype).permute(0, 2, 3, 1)
        if layout_kind == "sliced":
            return torch.randn(bsz, s, heads, d + 8, generator=gen).to(dtype)[..., 3 : 3 + d]
        return torch.randn(bsz, s, heads, d, generator=gen).to(dtype)

    q = one(q_len)
    k, v = one(kv_len), one(kv_len)
    return q, k, v


TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}

"""An independent fp64 port of the Rectified SpaAttn release's attention (tests only).

Written from the issue-19 research notes on github.com/BienLuky/Rectified-SpaAttn @ 4b0aa10
(``_build_block_index_with_importance_optimized``, ``block_sparse_attention_combined``,
``estimate_pr_gain``, ``gilbert_block_neighbor_mapping`` and the scripts), step by step as the release
does it: tokens on the gilbert curve, zero-padded blocks, a softmax over block logits and the text keys'
logits followed by the attention reallocation (IPAR), the text column sorted with the blocks,
``int((1 - drop) * NB)``, curve neighbours, GAPR, and the rescale / compensation. Python loops over
blocks and heads; tiny sizes only.
"""

from __future__ import annotations

import math

import torch

from ..patterns.gilbert_release import release_order


def neighbour_sets(grid, order, block):
    """For each block of ``order`` (row-major indices along the curve), the blocks holding a 26-neighbour."""
    t, h, w = grid
    block_of = {}
    for pos, idx in enumerate(order):
        block_of[idx] = pos // block
    nb = -(-len(order) // block)
    near = [set() for _ in range(nb)]
    for idx, b in block_of.items():
        z, y, x = idx // (h * w), (idx // w) % h, idx % w
        for dz in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    zz, yy, xx = z + dz, y + dy, x + dx
                    if 0 <= zz < t and 0 <= yy < h and 0 <= xx < w:
                        near[b].add(block_of[zz * h * w + yy * w + xx])
    return near


def release_attention(q, k, v, layout, *, drop, tau=0.3, block=16, first_blocks=False, neighbours=True,
                      on_margin=None):
    """The release's output for ``[B, S, H, D]`` tensors and a TokenLayout (fp64; q's dtype out).

    ``neighbours=False`` leaves out the curve neighbours (the release always adds them; tiny grids are
    all neighbours, so tests that need some sparsity there turn them off).

    ``on_margin(x)`` is called with every quantity whose sign decides a selection (distance of a
    cumulative sum to ``tau``, gap between the last kept and the first dropped column, GAPR margin), so a
    caller can skip inputs that float32 cannot decide.
    """
    q, k, v = q.double(), k.double(), v.double()
    bsz, s_len, heads, dim = q.shape
    scale = 1 / math.sqrt(dim)
    n = layout.num_video_tokens
    v0, t0 = layout.video_start, layout.text_start
    order = release_order(layout.grid) if n > 1 else [0]
    seq = [v0 + i for i in order]                         # sequence positions along the curve
    nb = -(-n // block)
    blocks = [seq[a:a + block] for a in range(0, n, block)]
    near = neighbour_sets(layout.grid, order, block) if n > 1 and neighbours else [set() for _ in range(nb)]
    top_k = int((1 - drop) * nb)
    first = nb // layout.grid[0] if first_blocks else 0
    out = torch.zeros_like(q)
    for b in range(bsz):
        text_ok = [True] * layout.text_len
        if layout.text_mask is not None:
            text_ok = layout.text_mask[b % layout.text_mask.shape[0]].tolist()
        text = [t0 + i for i in range(layout.text_len) if text_ok[i]]
        for h in range(heads):
            # zero-padded blocks: sums over the real tokens divided by the block size; the deviation
            # mean |x - mean| counts the padded zeros too
            qm, km, vm = ([x[b, idx, h].sum(0) / block for idx in blocks] for x in (q, k, v))
            dq, dk = ([((x[b, idx, h] - m[i]).abs().sum(0) + (block - len(idx)) * m[i].abs()) / block
                       for i, idx in enumerate(blocks)] for x, m in ((q, qm), (k, km)))
            keep = torch.zeros(s_len, s_len, dtype=torch.bool)
            for i in range(s_len):  # text queries: every valid key
                keep[i, layout.video_slice] = True
                keep[i, text] = True
            factor = {}
            for i, qidx in enumerate(blocks):
                logits = [scale * float(qm[i] @ km[j]) for j in range(nb)]
                logits += [scale * float(qm[i] @ k[b, t, h]) for t in text]
                top = max(logits)
                p = [math.exp(x - top) for x in logits]
                z = sum(p)
                p = [x / z for x in p]
                video_sum, text_sum = sum(p[:nb]), sum(p[nb:])
                denom = video_sum * block + text_sum
                cols = [p[j] * block / denom for j in range(nb)] + ([text_sum / denom] if text else [])
                ranked = sorted(range(len(cols)), key=lambda c: -cols[c])
                cum, below = 0.0, 0
                for c in ranked:
                    cum += cols[c]
                    if on_margin:
                        on_margin(cum - tau)
                    below += cum <= tau
                count = max(1 + below, top_k)
                if on_margin and count < len(cols):
                    on_margin(cols[ranked[count - 1]] - cols[ranked[count]])
                chosen = {c for c in ranked[:count] if c < nb} | near[i]
                if i < first:
                    chosen |= set(range(first))
                gapr_ok = set()
                for j in range(nb):
                    gain = abs(float(qm[i] @ km[j]))
                    noise = abs(float(dq[i] @ km[j])) + abs(float(qm[i] @ dk[j]))
                    if j not in chosen and on_margin:
                        on_margin((gain - noise) / (1 + gain))
                    if gain > noise:
                        gapr_ok.add(j)
                compensated = [j for j in range(nb) if j not in chosen and j in gapr_ok]
                r = sum(cols[j] for j in range(nb) if j not in compensated) + (cols[nb] if text else 0.0)
                c = sum((cols[j] * vm[j] for j in compensated), torch.zeros(dim, dtype=torch.float64))
                factor[i] = (r, c)
                row = torch.zeros(s_len, dtype=torch.bool)
                row[text] = True
                for j in chosen:
                    row[blocks[j]] = True
                keep[qidx] = row
            att = (scale * q[b, :, h] @ k[b, :, h].T).masked_fill(~keep, float("-inf")).softmax(-1)
            o = att @ v[b, :, h]
            for i, qidx in enumerate(blocks):
                r, c = factor[i]
                o[qidx] = r * o[qidx] + c
            out[b, :, h] = o
    return out.float()

"""An independent fp64 port of AgentSD's attention (tests only).

Written from the issue-19 research notes on github.com/LeapLabTHU/Agent-Attention @ 207ce3e (``agentsd/
merge.py``'s bipartite soft matching and ``patch.py``'s agent attention), with the documented mapping to
an attention call: the similarity metric is the values (all heads), the merged and agent tokens are
means of q / k / v, the valid text keys join the merged keys, destinations are the top-left tokens of
the stride regions of every frame. Plain Python lists and dicts; tiny sizes only.
"""

from __future__ import annotations

import math

import torch


def _groups(n_sources_merged, ranked_src, best_dst_of, dst):
    """token -> representative: merged sources map to their destination, the rest to themselves."""
    rep = {i: i for i in range(len(best_dst_of) + len(dst))}
    for s in ranked_src[:n_sources_merged]:
        rep[s] = best_dst_of[s]
    return rep


def agentsd_attention(q, k, v, tokens, *, stride=(4, 4), ratio=0.4, agent_ratio=0.95, k_scale2=0.3,
                      k_shortcut=0.075):
    """AgentSD's output for ``[B, S, H, D]`` tensors and a TokenLayout without permutation (fp64 math)."""
    q, k, v = q.double(), k.double(), v.double()
    bsz, s_len, heads, dim = q.shape
    s = 1 / math.sqrt(dim)
    t, h, w = tokens.grid
    n = t * h * w
    v0 = tokens.video_start
    sy, sx = stride
    dst = [z * h * w + y * w + x for z in range(t) for y in range(0, (h // sy) * sy, sy)
           for x in range(0, (w // sx) * sx, sx)]
    if not dst:
        dst = [0]
    src = [i for i in range(n) if i not in set(dst)]
    out = torch.zeros_like(q)
    valid = tokens.key_padding_mask(bsz)
    for b in range(bsz):
        metric = v[b, v0:v0 + n].reshape(n, -1)
        unit = metric / metric.norm(dim=-1, keepdim=True)
        best_dst_of, best_sim = {}, {}
        for i in src:
            sims = [float(unit[i] @ unit[d]) for d in dst]
            j = max(range(len(dst)), key=lambda c: (sims[c], -c))
            best_dst_of[i], best_sim[i] = dst[j], sims[j]
        ranked = sorted(src, key=lambda i: (-best_sim[i], i))
        rep = _groups(min(int(n * ratio), len(src)), ranked, best_dst_of, dst)
        agent_rep = _groups(min(int(n * agent_ratio), len(src)), ranked, best_dst_of, dst)
        members = {}
        for i in range(n):
            members.setdefault(rep[i], []).append(i)
        agent_members = {}
        for i in range(n):
            agent_members.setdefault(agent_rep[i], []).append(i)
        reps = sorted(members)
        text = [j for j in range(tokens.text_len) if valid is None or bool(valid[b, tokens.text_start + j])]
        text = [tokens.text_start + j for j in text]
        for hh in range(heads):
            def mean_of(x, idx, b=b, hh=hh):
                return x[b, [v0 + i for i in idx], hh].mean(0)

            qm = torch.stack([mean_of(q, members[r]) for r in reps])
            km = torch.stack([mean_of(k, members[r]) for r in reps] + [k[b, j, hh] for j in text])
            vm = torch.stack([mean_of(v, members[r]) for r in reps] + [v[b, j, hh] for j in text])
            n_agents, n_merged = len(agent_members), len(reps)
            if 2 * n_agents < n_merged:
                a = torch.stack([mean_of(q, agent_members[r]) for r in sorted(agent_members)])
                va = torch.softmax(s * a @ km.T, -1) @ vm
                om = torch.softmax(s ** k_scale2 * qm @ a.T, -1) @ va + k_shortcut * vm[:n_merged]
            else:
                om = torch.softmax(s * qm @ km.T, -1) @ vm
            row_of = {r: i for i, r in enumerate(reps)}
            for i in range(n):
                out[b, v0 + i, hh] = om[row_of[rep[i]]]
            # text queries: every valid key
            keys = list(range(v0, v0 + n)) + text
            for j in range(tokens.text_len):
                p = torch.softmax(s * q[b, tokens.text_start + j, hh] @ k[b, keys, hh].T, -1)
                out[b, tokens.text_start + j, hh] = p @ v[b, keys, hh]
    return out.float()

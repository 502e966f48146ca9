"""Independent ports of ConsistEdit's release rules (tests only), written from the issue-19 notes on
github.com/zxYin/ConsistEdit_Code @ 0b73d6a.

* :func:`flux_mask`: the FLUX edit mask -- in each observed call the full attention map (a softmax over
  every key, text and image, per head, then the mean over heads), its image-query x text-key block, a
  running mean over the calls, the edit tokens' columns summed, min-max normalised with ``+ 1e-6``,
  ``> 0.1``.
* :func:`attended_mask`: the same map on any token layout, with the softmax over the keys the model's own
  attention uses (FLUX and CogVideoX pass no text mask, so every text key, padding included, is in the
  release's softmax; a model that masks its padded text -- HunyuanVideo's ``encoder_attention_mask`` --
  never attends those keys, so they are not in its attention map), restricted to the text keys for the
  release's video rule (``"text"``), per-frame min-max with ``+ 1e-6``.
* :func:`uniinv`: UniEdit-Flow's UniInvEulerScheduler step rule as the release's real-image inversion
  uses it, driven by a velocity function.
"""

from __future__ import annotations

import math

import torch


def flux_mask(calls, token_ids, text_len, grid, threshold=0.1):
    """``calls``: list of ``(q, k)`` ``[1, S, H, D]`` with the text first; returns (heat [T, H, W], mask)."""
    running = None
    for count, (q, k) in enumerate(calls, start=1):
        q, k = q[0].double(), k[0].double()
        heads, dim = q.shape[1], q.shape[2]
        mean_map = sum(torch.softmax(q[:, h] @ k[:, h].T / math.sqrt(dim), dim=-1) for h in range(heads)) / heads
        block = mean_map[text_len:, :text_len]                      # image queries x text keys
        running = block if running is None else running + block
        current = running / count
    heat = current[:, token_ids].sum(-1).reshape(grid)
    lo, hi = heat.min(), heat.max()
    heat = (heat - lo) / (hi - lo + 1e-6)
    return heat.float(), heat > threshold


def attended_mask(calls, token_ids, layout, softmax, threshold=0.1):
    """``calls``: list of ``(q, k)`` ``[B, S, H, D]`` on ``layout`` (``layout.text_mask``: the keys the model
    attends); ``softmax``: ``"joint"`` (every attended key) or ``"text"`` (the attended text keys). The map is
    the mean over batch rows and heads of the edit tokens' summed probabilities, a running mean over the
    calls, min-max normalised per frame with ``+ 1e-6``. Returns (heat [T, H, W], mask)."""
    total = None
    for q, k in calls:
        q, k = q.double(), k.double()
        bsz, _, heads, dim = q.shape
        heat = torch.zeros(layout.num_video_tokens, dtype=torch.float64)
        for b in range(bsz):
            text = list(range(layout.text_start, layout.text_start + layout.text_len))
            if layout.text_mask is not None:
                valid = layout.text_mask[b % layout.text_mask.shape[0]].tolist()
                text = [t for t, ok in zip(text, valid, strict=True) if ok]
            video = list(range(layout.video_start, layout.video_start + layout.num_video_tokens))
            keys = text if softmax == "text" else sorted(text + video)
            edit = [keys.index(layout.text_start + i) for i in token_ids]
            for h in range(heads):
                probs = torch.softmax(q[b, video, h] @ k[b, keys, h].T / math.sqrt(dim), dim=-1)
                heat += probs[:, edit].sum(-1) / (heads * bsz)
        total = heat if total is None else total + heat
    avg = (total / len(calls)).reshape(layout.grid[0], -1)
    lo, hi = avg.min(1, keepdim=True).values, avg.max(1, keepdim=True).values
    heat = ((avg - lo) / (hi - lo + 1e-6)).reshape(layout.grid)
    return heat.float(), heat > threshold


def uniinv(x0, sigmas_down, velocity):
    """The inverted points ``x_1 .. x_T`` (at ``sigmas_down`` reversed) of the release's scheme.

    ``sigmas_down``: the sampling sigmas ``s_0 > ... > s_{T-1}``; ``velocity(x, sigma)``.
    """
    grid = [0.0] + list(reversed(sigmas_down))   # 0, s_{T-1}, ..., s_0
    anchor = None
    points = []
    sample = x0
    for i, sigma in enumerate(grid):
        v = velocity(sample, sigma)
        if anchor is None:           # first call: plain Euler from the clean latent
            anchor = x0
            sample = x0 + (grid[1] - grid[0]) * v
            continue
        anchor = anchor + (grid[i] - grid[i - 1]) * v      # redo the step with the end velocity
        points.append(anchor)
        sample = anchor + (grid[i + 1] - grid[i]) * v if i + 1 < len(grid) else anchor
    return points

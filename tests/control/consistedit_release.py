"""Independent ports of ConsistEdit's release rules (tests only), written from the issue-19 notes on
github.com/zxYin/ConsistEdit_Code @ 0b73d6a.

* :func:`flux_mask`: the FLUX edit mask -- in each observed call the full attention map (a softmax over
  every key, text and image, per head, then the mean over heads), its image-query x text-key block, a
  running mean over the calls, the edit tokens' columns summed, min-max normalised with ``+ 1e-6``,
  ``> 0.1``.
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

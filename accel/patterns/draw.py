"""Text drawings of attention masks and block layouts (for ``python -m accel.patterns.<name>``)."""

from __future__ import annotations

import torch

__all__ = ["draw_mask", "draw_block_kinds"]


def draw_mask(mask: torch.Tensor, *, on: str = "#", off: str = ".") -> str:
    """Render a bool ``[Q, K]`` mask as text: one line per query, one character per key."""
    m = mask.reshape(mask.shape[-2], mask.shape[-1]).cpu()
    return "\n".join("".join(on if bool(v) else off for v in row) for row in m)


def draw_block_kinds(kinds: torch.Tensor) -> str:
    """Render an int8 ``[NQ, NKV]`` block map (0 skipped, 1 full, 2 partial) as ``.``, ``#``, ``+``."""
    chars = {0: ".", 1: "#", 2: "+"}
    k = kinds.reshape(kinds.shape[-2], kinds.shape[-1]).cpu()
    return "\n".join("".join(chars[int(v)] for v in row) for row in k)

"""`ReplaySource`: keep the source branch on a stored latent trajectory (real-input editing).

After denoising step ``i`` the source rows of the latents are set to the stored latent the
inversion recorded for the start of step ``i + 1`` (the clean input latent after the last step), so
the source branch reproduces the input exactly while the target branch denoises freely.
"""

from __future__ import annotations

import torch

from accel.control.controller import Rule

__all__ = ["ReplaySource"]


class ReplaySource(Rule):
    """Replay a latent trajectory in the source rows at every step end (the ``blend_latents`` hook).

    Args:
        trajectory: the latents at the start of each step, ``trajectory[i]`` for step ``i`` (``T``
            tensors, batch 1, in the pipeline's latent layout), as :func:`accel.editing.inversion.invert`
            returns them.
        clean: the clean latent the trajectory ends at (set after the last step).
        rows: ``"source"`` (rows 0, 2, 4, ... of a paired batch) or ``"all"`` (a source-only pass).
    """

    def __init__(self, trajectory, clean: torch.Tensor, *, rows: str = "source") -> None:
        if rows not in ("source", "all"):
            raise ValueError(f"rows must be 'source' or 'all', got {rows!r}")
        self.trajectory = list(trajectory)
        self.clean = clean
        self.rows = rows

    def blend_latents(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        nxt = step + 1
        if nxt > len(self.trajectory):
            raise ValueError(f"the pipeline ran more steps ({nxt}) than the stored trajectory has ({len(self.trajectory)})")
        stored = self.clean if nxt == len(self.trajectory) else self.trajectory[nxt]
        out = latents.clone()
        sel = slice(None) if self.rows == "all" else slice(0, None, 2)
        n = out[sel].shape[0]
        out[sel] = stored.to(out.dtype).expand(n, *stored.shape[1:])
        return out

"""`ReplaySource`: keep the source branch on a stored latent trajectory (real-input editing).

After denoising step ``i`` the source rows of the latents are set to the stored latent the
inversion recorded for the start of step ``i + 1`` (the clean input latent after the last step), so
the source branch reproduces the input exactly while the target branch denoises freely.
"""

from __future__ import annotations

import torch

from accel.control.controller import Rule

__all__ = ["ReplaySource", "SourceQK"]


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


class SourceQK(Rule):
    """Record the source's vision Q and K during inversion, replay them in the source rows while editing.

    The real-image path of ConsistEdit's release (github.com/zxYin/ConsistEdit_Code @ 0b73d6a,
    ``regiter_attention_editor_diffusers_sd3_mask_real``, read for its rule): while the input is inverted
    (one transformer call per timestep, classifier-free guidance off), every controlled layer stores the
    vision-token Q and K (after QK-norm and RoPE) of inversion call ``c`` under denoising step
    ``num_steps - 1 - c`` (the release's pairing; the last inversion call, ``c = num_steps``, has no
    partner); while editing a (source, target) batch, the source rows' vision Q and K are replaced by the
    stored ones of (step, layer) before the edit rule fuses them into the target. Values, text tokens and
    the unconditional calls of classifier-free guidance are left alone (the release replaces V only for
    batches of 1 or 4).

    Args:
        num_steps: the number of denoising steps of the edit, an int >= 1.
        device: where the recorded tensors are kept (default ``"cpu"``; a 1024^2 FLUX edit with 28 steps
            records about 2 x 38 x 28 x 4096 x 3072 values).

    Use :meth:`recording` while inverting, then :meth:`replaying` while editing (the same object).
    """

    def __init__(self, num_steps: int, *, device="cpu") -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
        self.num_steps = num_steps
        self.device = device
        self.store: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.mode = "record"

    def recording(self) -> SourceQK:
        """Switch to recording (the inversion pass); forgets what was stored. Returns self."""
        self.mode = "record"
        self.store = {}
        return self

    def replaying(self) -> SourceQK:
        """Switch to replaying (the edit pass). Returns self."""
        self.mode = "replay"
        return self

    def observe(self, call, q, k, v) -> None:
        if self.mode != "record" or call.cross or call.context == "uncond":
            return
        step = self.num_steps - 1 - call.step
        if step < 0:
            return
        vs = call.layout.video_slice
        self.store[(step, call.layer)] = (q[:, vs].detach().to(self.device, copy=True),
                                          k[:, vs].detach().to(self.device, copy=True))

    def rewrite_qkv(self, call, q, k, v):
        if self.mode != "replay" or call.cross or call.context == "uncond":
            return q, k, v
        stored = self.store.get((call.step, call.layer))
        if stored is None:
            raise RuntimeError(f"no source Q/K was recorded for step {call.step}, layer {call.layer} ({call.name}): "
                               "record them while inverting with the same number of steps and layers")
        vs = call.layout.video_slice
        out = []
        for x, saved in zip((q, k), stored, strict=True):
            x = x.clone()
            rows = x[0::2, vs]
            x[0::2, vs] = saved.to(x.device, x.dtype).expand_as(rows)
            out.append(x)
        return out[0], out[1], v

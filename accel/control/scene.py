"""Keeping the source's scene outside the edit mask: named options beyond ConsistEdit's rule.

ConsistEdit (:mod:`accel.control.consistedit`) fuses the target's *self-attention* Q/K/V with the
source's; written for joint-attention MM-DiTs (FLUX, HunyuanVideo, SD3), where the text is in that
attention. Wan-style models read the text through a separate cross-attention (``attn2``), which the
rule does not touch, so outside the edit mask the target still follows its own prompt there, and the
difference grows over the layers and steps. Two rules close that path; both act on the target rows of
(source, target) pairs only, and only outside the edit mask ``M`` (bool ``[T, H, W]`` over the token
grid, True = edit):

* :class:`LatentBlend` -- after denoising step ``i`` (for ``i`` in ``steps``), the target's latents
  outside ``M`` are replaced by the source's (the local blending of Avrahami et al. 2023, "Blended
  Latent Diffusion", and of Prompt-to-Prompt's ``LocalBlend``, Hertz et al. 2022, with a given mask);
* :class:`CrossAttentionBlend` -- in Wan's cross-attention layers, the target's attention output
  outside ``M`` is the source's (the text's influence outside the mask is the source prompt's).

A third rule acts on the whole frame, for the first steps only:

* :class:`SourceStart` -- after each of the first ``steps`` denoising steps the target's latents are the
  source's, so the target continues from the source's partly denoised latents (SDEdit, Meng et al. 2022,
  "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential Equations", with the source's
  own trajectory as the noised input). Where a model decides the objects' places in its first steps,
  this keeps them; it also keeps whatever else those steps decide (on the embedded model: the colour, see
  ``benchmarks/edit_keep_scene.py``).

None of them is part of the ConsistEdit release; :func:`accel.editing.edit_generated` applies them only
when asked (``keep_scene=...``, ``source_steps=...``).
"""

from __future__ import annotations

import torch

from accel.control.controller import AttentionCall, Rule

__all__ = ["CrossAttentionBlend", "LatentBlend", "SourceStart", "check_token_mask", "latent_mask"]


def check_token_mask(mask, name: str = "mask") -> torch.Tensor:
    """``mask`` if it is a bool tensor ``[T, H, W]``; ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() != 3:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else ""
        raise ValueError(f"{name} must be a bool tensor [T, H, W] over the token grid, got "
                         f"{type(mask).__name__}{shape}")
    return mask


def latent_mask(mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """The token-grid mask ``[T, H, W]`` as a bool mask broadcastable to one row of ``latents``.

    * 5-D latents ``[B, C, T', H', W']`` (Wan, HunyuanVideo): each token covers a ``T'/T x H'/H x W'/W``
      patch of latent positions (the transformer's patch size); returns ``[1, T', H', W']``.
    * 3-D packed latents ``[B, S, C]`` (FLUX): token ``i`` of the row-major grid is sequence position
      ``i``; returns ``[S, 1]``.

    Raises:
        ValueError: the latent shape is not a whole number of patches of the grid, or ``S != T*H*W``.
    """
    t, h, w = mask.shape
    if latents.dim() == 5:
        size = tuple(latents.shape[2:])
        if any(n % g for n, g in zip(size, (t, h, w), strict=True)):
            raise ValueError(f"the edit mask's token grid {(t, h, w)} does not divide the latent grid {size} "
                             "(T, H, W); build the mask for the size you generate")
        up = mask.to(latents.device)
        for dim, (n, g) in enumerate(zip(size, (t, h, w), strict=True)):
            up = up.repeat_interleave(n // g, dim=dim)
        return up[None]
    if latents.dim() == 3:
        if latents.shape[1] != t * h * w:
            raise ValueError(f"packed latents hold {latents.shape[1]} tokens but the edit mask's grid {(t, h, w)} "
                             f"has {t * h * w}")
        return mask.reshape(-1, 1).to(latents.device)
    raise ValueError(f"latents must be [B, C, T, H, W] or packed [B, S, C], got shape {tuple(latents.shape)}")


def _check_pairs(x: torch.Tensor, what: str) -> None:
    if x.shape[0] % 2:
        raise ValueError(f"{what} needs (source, target) pairs in the batch (rows 0,2,... source, 1,3,... "
                         f"target), got batch size {x.shape[0]}")


class LatentBlend(Rule):
    """After each selected denoising step, the target's latents outside the edit mask are the source's.

    Args:
        mask: the edit region, bool ``[T, H, W]`` over the token grid (True = the target may differ).
        steps: the steps after which to blend: ``None`` (every step, default) or a ``range``; a step
            index counts from 0 as the pipeline's ``callback_on_step_end`` reports it.

    Needs the controller's :meth:`~accel.control.Controller.callback` as the pipeline's
    ``callback_on_step_end``.
    """

    def __init__(self, mask: torch.Tensor, *, steps: range | None = None) -> None:
        self.mask = check_token_mask(mask)
        if steps is not None and not (isinstance(steps, range) and steps.step == 1):
            raise ValueError(f"steps must be None (every step) or a range with step 1, got {steps!r}")
        self.steps = steps

    def blend_latents(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        if self.steps is not None and step not in self.steps:
            return latents
        _check_pairs(latents, "LatentBlend")
        keep = ~latent_mask(self.mask, latents)
        out = latents.clone()
        out[1::2] = torch.where(keep, latents[0::2], latents[1::2])
        return out

    def __repr__(self) -> str:
        return f"LatentBlend(mask {tuple(self.mask.shape)} ({int(self.mask.sum())} edit tokens), steps={self.steps})"


class CrossAttentionBlend(Rule):
    """In Wan's cross-attention layers, the target's output outside the edit mask is the source's.

    Args:
        mask: the edit region, bool ``[T, H, W]`` over the token grid (True = the target keeps its own
            cross-attention output).

    Acts in the layers and steps its :class:`~accel.control.Controller` selects; models without a
    separate cross-attention (FLUX, HunyuanVideo) are not affected. The cross-attention's vision tokens are
    in row-major ``(t, y, x)`` order (a controller turns accel's permute-once off).
    """

    wants_cross_attention = True

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = check_token_mask(mask)

    def blend_cross_output(self, call: AttentionCall, out: torch.Tensor) -> torch.Tensor:
        _check_pairs(out, "CrossAttentionBlend")
        grid = call.layout.grid
        if tuple(self.mask.shape) != grid:
            raise ValueError(f"the edit mask has grid shape {tuple(self.mask.shape)} but this call's token grid is "
                             f"{grid} (T, H, W); build the mask for the size you generate")
        if out.shape[1] != call.layout.num_video_tokens:
            raise ValueError(f"{call.name}: output has {out.shape[1]} tokens, the grid {grid} has "
                             f"{call.layout.num_video_tokens}")
        edit = self.mask.reshape(-1).to(out.device)[None, :, None]
        blended = out.clone()
        blended[1::2] = torch.where(edit, out[1::2], out[0::2])
        return blended

    def __repr__(self) -> str:
        return f"CrossAttentionBlend(mask {tuple(self.mask.shape)} ({int(self.mask.sum())} edit tokens))"


class SourceStart(Rule):
    """After each of the first ``steps`` denoising steps, the target's latents are the source's (whole frame).

    Args:
        steps: how many leading steps the target follows the source, an int >= 0 (0: never); a step index
            counts from 0 as the pipeline's ``callback_on_step_end`` reports it, so the target's own denoising
            starts at step ``steps`` from the source's latents after step ``steps - 1``.

    Needs the controller's :meth:`~accel.control.Controller.callback` as the pipeline's
    ``callback_on_step_end``; works on any latent layout with (source, target) pairs in the batch.
    """

    def __init__(self, steps: int) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps (how many leading steps the target follows the source) must be an int >= 0, "
                             f"got {steps!r}")
        self.steps = steps

    def blend_latents(self, step: int, latents: torch.Tensor) -> torch.Tensor:
        if step >= self.steps:
            return latents
        _check_pairs(latents, "SourceStart")
        out = latents.clone()
        out[1::2] = latents[0::2]
        return out

    def __repr__(self) -> str:
        return f"SourceStart(steps={self.steps})"

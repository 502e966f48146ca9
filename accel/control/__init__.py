"""Attention control for editing: a controller with explicit hook points and the rules built on it.

* :class:`Controller` -- installs on a Wan / HunyuanVideo / FLUX pipeline; runs :class:`Rule` hooks
  (observe, rewrite Q/K/V, replace the attention operator, blend outputs, blend latents at step end)
  in the layers and steps its schedule selects.
* :class:`ConsistEdit` -- ConsistEdit's vision-token Q/K/V fusion of (source, target) pairs.
* :class:`MutualSelfAttention` -- MasaCtrl-style mutual self-attention (target queries, source K/V).
* :class:`EditMaskObserver` -- the edit mask from the attention to the edit words.
* :class:`ReplaySource` -- replay a stored latent trajectory in the source rows (real-input editing, ours).
* :class:`SourceQK` -- record the source's Q/K while inverting and replay them while editing (the
  release's real-input path).
"""

from accel.control.consistedit import ConsistEdit
from accel.control.controller import (
    AttentionCall,
    Controller,
    Rule,
    source_rows,
    target_rows,
    with_target_rows,
)
from accel.control.masactrl import MutualSelfAttention
from accel.control.mask import EditMaskObserver, edit_token_positions, resize_user_mask
from accel.control.replay import ReplaySource, SourceQK

__all__ = [
    "AttentionCall",
    "ConsistEdit",
    "Controller",
    "EditMaskObserver",
    "MutualSelfAttention",
    "ReplaySource",
    "Rule",
    "SourceQK",
    "edit_token_positions",
    "resize_user_mask",
    "source_rows",
    "target_rows",
    "with_target_rows",
]

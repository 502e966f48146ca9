"""Editing by attention control: :func:`edit_generated` (generate a source and its edit together) and
:func:`edit` (edit a real image or video, inverted along the flow-matching ODE).

* :mod:`accel.editing.pipeline`: the two edit functions and their helpers (:func:`~accel.editing.pipeline.encode_input`,
  :func:`~accel.editing.pipeline.token_grid`);
* :mod:`accel.editing.inversion`: flow-matching inversion of encoded latents.

The attention rules themselves (ConsistEdit, MasaCtrl, the edit mask) are in :mod:`accel.control`; the
``accel edit`` command is :mod:`accel.cli.edit`.
"""

from .pipeline import EditResult, edit, edit_generated

__all__ = ["EditResult", "edit", "edit_generated"]

"""Pipelines: :func:`load` (presets, folders, hub ids), tiny offline builders (:mod:`accel.pipelines.tiny`),
the embedded model, presets (:mod:`accel.pipelines.presets`), media writing and editing
(:func:`edit`, :func:`edit_generated`).

Only :func:`load`, :func:`edit` and :func:`edit_generated` are imported here (they need torch, not
diffusers); other submodules are imported on use (``from accel.pipelines.tiny import tiny_pipeline``).
Note ``accel.pipelines.load`` and ``accel.pipelines.edit`` are the functions; their modules' other
names are imported from ``accel.pipelines.load`` / ``accel.pipelines.edit`` explicitly.
"""

from .edit import EditResult, edit, edit_generated
from .load import load

__all__: list[str] = ["EditResult", "edit", "edit_generated", "load"]

"""Pipelines: :func:`load` (presets, folders, hub ids), tiny offline builders (:mod:`accel.pipelines.tiny`),
the embedded model, presets (:mod:`accel.pipelines.presets`) and media writing.

Only :func:`load` is imported here (it needs torch, not diffusers); other submodules are imported on
use (``from accel.pipelines.tiny import tiny_pipeline``). Note ``accel.pipelines.load`` is the
function; its module's other names are imported from ``accel.pipelines.load`` explicitly.
"""

from .load import load

__all__: list[str] = ["load"]

"""Pipelines: :func:`load` (presets, folders, hub ids; :mod:`accel.pipelines.loading`), the model presets
(:mod:`accel.pipelines.presets`) and tiny offline builders (:mod:`accel.pipelines.tiny`).

Only :func:`load` is imported here (it needs torch, not diffusers); other submodules are imported on use
(``from accel.pipelines.tiny import tiny_pipeline``). The embedded model is :mod:`accel.embedded`, editing
:mod:`accel.editing`.
"""

from .loading import load

__all__: list[str] = ["load"]

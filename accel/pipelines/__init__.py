"""Pipelines: tiny offline builders (:mod:`accel.pipelines.tiny`), presets and the embedded model.

Submodules are imported on use (``from accel.pipelines.tiny import tiny_pipeline``), so importing
this package costs nothing.
"""

__all__: list[str] = []

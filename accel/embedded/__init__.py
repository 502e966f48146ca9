"""The embedded model: a tiny, actually trained text-to-video model in the Wan 2.1 architecture.

* :mod:`accel.embedded.model`: the shipped weights (``accel/embedded/weights/``), the pipeline builder
  :func:`embedded` and its default generation settings;
* :mod:`accel.embedded.data`: the procedural clips it was trained on (shapes, colours, directions);
* :mod:`accel.embedded.train`: the training script (``python -m accel.embedded.train``);
* :mod:`accel.embedded.adherence`: scoring a generated clip against its prompt
  (``python -m accel.embedded.adherence``).

Only the names below are imported here; the other modules are imported on use.
"""

from .model import DEFAULT_GENERATION, embedded, generation_kwargs

__all__ = ["DEFAULT_GENERATION", "embedded", "generation_kwargs"]

"""`Schedule`: where a sparse method is replaced by dense attention (first/last steps, first/last layers).

Sparse attention methods lose the most fidelity early in denoising (the global layout of the picture
is decided then) and in the first layers; the usual recipe keeps those dense. A schedule says which
(step, layer) pairs run dense attention; every other pair runs the installed method.

The step index counts *distinct timesteps* within one pipeline call (0, 1, 2, ...), so classifier-
free guidance (two transformer calls per step, or one batched call) counts once per step; it restarts
at 0 on every pipeline call. The layer index is the global index of a self-attention layer in the
transformer (see :mod:`accel.processors`).
"""

from __future__ import annotations

import dataclasses
import math

__all__ = ["Schedule"]


def _check_amount(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be an int >= 0 (a count) or a float in [0, 1] (a fraction), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 when given as an int (a count), got {value!r}")
    elif not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1] when given as a float (a fraction), got {value!r}")


def _resolve(value: int | float, total: int) -> int:
    """A count (int, clipped to total) or a fraction of ``total`` rounded half up."""
    if isinstance(value, int):
        return min(value, total)
    return min(total, int(math.floor(value * total + 0.5)))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Which denoising steps and layers run dense attention instead of the installed method.

    Each amount is either an ``int >= 0`` (a count) or a ``float`` in ``[0, 1]`` (a fraction of the
    total, rounded half up: ``0.25`` of 50 steps is 13 steps). Note ``1`` (int) means one step or
    layer and ``1.0`` (float) means all of them.

    Args:
        dense_steps: the first ``dense_steps`` steps (step index ``< dense_steps``) run dense in every
            layer. Default 0.
        dense_layers: the first ``dense_layers`` layers (global self-attention layer index ``<
            dense_layers``) run dense at every step. Default 0.
        dense_last_steps: the last ``dense_last_steps`` steps (step index ``>= num_steps -
            dense_last_steps``) run dense in every layer. Default 0.
        dense_last_layers: the last ``dense_last_layers`` layers (global self-attention layer index
            ``>= num_layers - dense_last_layers``) run dense at every step. Default 0. (The Rectified
            SpaAttn release keeps FLUX's last 20 layers dense.)

    A fraction of steps, and any ``dense_last_steps``, need the number of inference steps of the
    pipeline call; :func:`accel.apply` reads it from the pipeline (when it is given one) or from
    diffusers' cache context. Without it, :meth:`is_dense` raises ``ValueError``.
    """

    dense_steps: int | float = 0
    dense_layers: int | float = 0
    dense_last_steps: int | float = 0
    dense_last_layers: int | float = 0

    def __post_init__(self) -> None:
        _check_amount("dense_steps", self.dense_steps)
        _check_amount("dense_layers", self.dense_layers)
        _check_amount("dense_last_steps", self.dense_last_steps)
        _check_amount("dense_last_layers", self.dense_last_layers)

    @property
    def is_trivial(self) -> bool:
        """True when the schedule never asks for dense attention (all amounts are zero)."""
        return not (self.dense_steps or self.dense_layers or self.dense_last_steps or self.dense_last_layers)

    @property
    def needs_num_steps(self) -> bool:
        """True when deciding a step needs the total number of steps (a step fraction or last steps)."""
        return isinstance(self.dense_steps, float) and self.dense_steps > 0 or bool(self.dense_last_steps)

    @property
    def depends_on_step(self) -> bool:
        """True when the decision can differ between steps (``dense_steps`` or ``dense_last_steps`` set)."""
        return bool(self.dense_steps or self.dense_last_steps)

    def dense_step(self, step: int, num_steps: int | None = None) -> bool:
        """Whether step ``step`` runs dense in every layer.

        Args:
            step: the step index, an int >= 0 (distinct timesteps counted from 0 in this pipeline call).
            num_steps: the number of inference steps of the call, an int >= 1, or ``None`` if
                unknown (allowed only when :attr:`needs_num_steps` is False).

        Raises:
            ValueError: ``step`` is negative, or ``num_steps`` is needed but missing or not >= 1.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        if num_steps is None:
            if self.needs_num_steps:
                raise ValueError(
                    f"{self!r} needs the number of inference steps (a step fraction or dense_last_steps), "
                    "but it is unknown: pass the pipeline (not only its transformer) to accel.apply, or "
                    "set handle.num_inference_steps"
                )
            return isinstance(self.dense_steps, int) and step < self.dense_steps
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1 or None, got {num_steps!r}")
        if step < _resolve(self.dense_steps, num_steps):
            return True
        return step >= num_steps - _resolve(self.dense_last_steps, num_steps)

    def dense_layer(self, layer: int, num_layers: int) -> bool:
        """Whether layer ``layer`` (global self-attention index, of ``num_layers``) always runs dense
        (one of the first ``dense_layers`` or the last ``dense_last_layers``)."""
        if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
            raise ValueError(f"layer must be an int >= 0, got {layer!r}")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        return layer < _resolve(self.dense_layers, num_layers) or layer >= num_layers - _resolve(
            self.dense_last_layers, num_layers)

    def is_dense(self, step: int, layer: int, num_steps: int | None, num_layers: int) -> bool:
        """Whether (``step``, ``layer``) runs dense attention: :meth:`dense_layer` or :meth:`dense_step`."""
        return self.dense_layer(layer, num_layers) or self.dense_step(step, num_steps)

    def dense_layer_set(self, step: int, num_steps: int | None, num_layers: int) -> frozenset[int]:
        """The global indices in ``range(num_layers)`` that run dense at ``step`` (see :meth:`is_dense`)."""
        if self.dense_step(step, num_steps):
            return frozenset(range(num_layers))
        first, last = _resolve(self.dense_layers, num_layers), _resolve(self.dense_last_layers, num_layers)
        return frozenset(range(first)) | frozenset(range(num_layers - last, num_layers))

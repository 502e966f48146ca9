"""Attention density of one rendered item: the fraction of query-key pairs the model computed.

For a static-pattern method (Radial, ClearLocal, Neighborhood) the per-call density at the item's
token layout comes from the method's :meth:`describe` (whole joint sequence, text rule included;
HunyuanVideo's text padding is not subtracted). Calls that the schedule keeps dense count 1.0. The
item's density is the average over (step, self-attention layer) pairs. Upstream attention and
``Dense`` give 1.0; dynamic methods (Rectified, Agent) choose blocks per call and give ``None``
(not measured).
"""

from __future__ import annotations

__all__ = ["effective_density"]


def effective_density(method, schedule, layout, num_steps: int, num_layers: int) -> float | None:
    """Average attention density of one pipeline call.

    Args:
        method: the installed accel method, or ``None`` (upstream attention).
        schedule: the :class:`accel.Schedule` in force (``None``: never dense).
        layout: the :class:`accel.TokenLayout` recorded during the call (``None`` if not recorded).
        num_steps: denoising steps of the call, an int >= 1.
        num_layers: self-attention layers that carry the method, an int >= 1.

    Returns:
        A float in (0, 1], or ``None`` when it cannot be computed without running the kernels.
    """
    from accel.methods.dense import Dense

    if method is None or isinstance(method, Dense):
        return 1.0
    describe = getattr(method, "describe", None)
    if describe is None or layout is None or num_steps < 1 or num_layers < 1:
        return None
    sparse = float(describe(layout, file=None)["density"])
    if schedule is None or schedule.is_trivial:
        return sparse
    dense_pairs = sum(schedule.is_dense(step, layer, num_steps, num_layers)
                      for step in range(num_steps) for layer in range(num_layers))
    total = num_steps * num_layers
    return (dense_pairs + (total - dense_pairs) * sparse) / total

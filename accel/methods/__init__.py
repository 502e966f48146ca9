"""Attention methods: dataclass configurations callable as ``method(q, k, v, tokens)``.

See :class:`accel.methods.base.AttentionMethod` for the protocol and the hooks a sparse method
implements.
"""

from accel.methods.base import AttentionMethod
from accel.methods.dense import Dense

__all__ = ["AttentionMethod", "Dense"]

"""`Preset`: a method's published (or documented) configuration for one model."""

from __future__ import annotations

from typing import NamedTuple

from accel.methods.base import AttentionMethod

__all__ = ["Preset"]


class Preset(NamedTuple):
    """A published (or documented) configuration: the method, the dense schedule, and where it comes from.

    Use as ``accel.apply(pipe, preset.method, schedule=preset.schedule)``.
    """

    method: AttentionMethod
    schedule: object
    source: str

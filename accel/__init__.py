"""accel: sparse attention and attention control for diffusers' diffusion transformers.

The public names below are imported lazily, so ``import accel.kernels`` works on a machine that has
torch and triton but not diffusers (the GPU benchmark machine is such a machine). The ``TYPE_CHECKING``
imports name the same objects for editors and type checkers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accel.grid import TokenLayout
    from accel.methods.agent import Agent
    from accel.methods.base import AttentionMethod
    from accel.methods.clear_local import ClearLocal
    from accel.methods.dense import Dense
    from accel.methods.neighborhood import Neighborhood
    from accel.methods.preset import Preset
    from accel.methods.radial import Radial
    from accel.methods.rectified import Rectified
    from accel.processors.apply import AccelHandle, apply, attach, remove
    from accel.processors.flux import AccelFluxAttnProcessor
    from accel.processors.hunyuan_video import AccelHunyuanVideoAttnProcessor
    from accel.processors.wan import AccelWanAttnProcessor
    from accel.schedule import Schedule

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "TokenLayout": "accel.grid",
    "Schedule": "accel.schedule",
    "Dense": "accel.methods.dense",
    "apply": "accel.processors.apply",
    "remove": "accel.processors.apply",
    "attach": "accel.processors.apply",
    "AccelHandle": "accel.processors.apply",
    "AttentionMethod": "accel.methods.base",
    "Preset": "accel.methods.preset",
    "AccelWanAttnProcessor": "accel.processors.wan",
    "AccelHunyuanVideoAttnProcessor": "accel.processors.hunyuan_video",
    "AccelFluxAttnProcessor": "accel.processors.flux",
    "Radial": "accel.methods.radial",
    "ClearLocal": "accel.methods.clear_local",
    "Neighborhood": "accel.methods.neighborhood",
    "Rectified": "accel.methods.rectified",
    "Agent": "accel.methods.agent",
}

# subpackages served as attributes (``accel.kernels``, ...); accel.app (gradio) and accel.cli are imported by name
_SUBPACKAGES = ("kernels", "patterns", "methods", "processors", "control", "editing", "embedded", "pipelines", "eval",
                "render")

__all__ = [
    "AccelFluxAttnProcessor",
    "AccelHandle",
    "AccelHunyuanVideoAttnProcessor",
    "AccelWanAttnProcessor",
    "Agent",
    "AttentionMethod",
    "ClearLocal",
    "Dense",
    "Neighborhood",
    "Preset",
    "Radial",
    "Rectified",
    "Schedule",
    "TokenLayout",
    "__version__",
    "apply",
    "attach",
    "control",
    "editing",
    "embedded",
    "eval",
    "kernels",
    "methods",
    "patterns",
    "pipelines",
    "processors",
    "remove",
    "render",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"accel.{name}")
    raise AttributeError(f"module 'accel' has no attribute {name!r}")


def __dir__():
    return __all__

"""accel: sparse attention and attention control for diffusers' diffusion transformers.

The public names below are imported lazily, so ``import accel.kernels`` works on a machine that has
torch and triton but not diffusers (the GPU benchmark machine is such a machine).
"""

from __future__ import annotations

import importlib

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
    "AccelWanAttnProcessor": "accel.processors.wan",
    "AccelHunyuanVideoAttnProcessor": "accel.processors.hunyuan_video",
    "AccelFluxAttnProcessor": "accel.processors.flux",
    "Radial": "accel.methods.radial",
    "ClearLocal": "accel.methods.clear_local",
    "Neighborhood": "accel.methods.neighborhood",
    "Rectified": "accel.methods.rectified",
    "Agent": "accel.methods.agent",
}

__all__ = sorted([*_EXPORTS, "kernels", "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in {"kernels", "patterns", "methods", "processors", "pipelines", "eval", "control"}:
        return importlib.import_module(f"accel.{name}")
    raise AttributeError(f"module 'accel' has no attribute {name!r}")


def __dir__():
    return __all__

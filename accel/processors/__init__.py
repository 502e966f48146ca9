"""diffusers integration: accel processors per model family, the root hook, apply()/remove().

Public names:

* :func:`apply` / :func:`remove` / :class:`AccelHandle` -- install a method on a pipeline or transformer.
* :func:`attach` -- only the root hook, for processors installed by hand with ``set_attn_processor``.
* :class:`AccelWanAttnProcessor`, :class:`AccelHunyuanVideoAttnProcessor`, :class:`AccelFluxAttnProcessor`
  -- subclasses of diffusers' ``WanAttnProcessor``, ``HunyuanVideoAttnProcessor2_0`` and
  ``FluxAttnProcessor`` that route the core attention to an accel method.
* :func:`supported_transformers` -- names of the supported transformer classes.
* :func:`enable_context_parallel` / :func:`ulysses_config` -- split each video over several GPUs with
  diffusers' Ulysses attention (:mod:`accel.processors.parallelize`,
  :mod:`accel.processors.context_parallel`).
"""

from accel.processors.apply import AccelHandle, apply, attach, remove
from accel.processors.families import supported_transformers
from accel.processors.flux import AccelFluxAttnProcessor
from accel.processors.hunyuan_video import AccelHunyuanVideoAttnProcessor
from accel.processors.parallelize import enable_context_parallel, ulysses_config
from accel.processors.wan import AccelWanAttnProcessor

__all__ = [
    "AccelFluxAttnProcessor",
    "AccelHandle",
    "AccelHunyuanVideoAttnProcessor",
    "AccelWanAttnProcessor",
    "apply",
    "attach",
    "enable_context_parallel",
    "remove",
    "supported_transformers",
    "ulysses_config",
]

"""Turn on diffusers' context parallelism (Ulysses) for a pipeline's transformers.

::

    torch.distributed.init_process_group("nccl")            # one process per GPU (torchrun)
    pipe = ...                                              # a Wan / HunyuanVideo / FLUX pipeline
    pipe.to(f"cuda:{local_rank}")
    accel.processors.enable_context_parallel(pipe, 2)      # 2-way Ulysses (ranks 0-1, 2-3, ... share a video)
    accel.apply(pipe, accel.Radial(...))                    # before or after: both orders work

It runs diffusers' own ``model.enable_parallelism(config=..., cp_plan=...)`` with

* the model's own ``_cp_plan`` for Wan and FLUX (diffusers 0.42 ships them), and
* :data:`HUNYUAN_VIDEO_CP_PLAN` for HunyuanVideo (diffusers ships none): the video tokens are split
  after the patch embedding, the text tokens after the token refiner (which needs the whole prompt),
  the rotary embedding with the video tokens, and the output is gathered after ``proj_out``. The
  attention mask that HunyuanVideo's forward builds from *local* lengths would mark the wrong text
  tokens of rank ``r > 0`` valid (it counts valid tokens from the start of each rank's text share),
  so :func:`enable_context_parallel` also installs forward pre-hooks that hand every block the mask
  of its own share (the upstream rule: the first ``sum(encoder_attention_mask)`` text tokens of the
  whole prompt are valid).

An int degree builds a ``ContextParallelConfig(ulysses_degree=N)`` over a device mesh that groups
consecutive ranks (:func:`ulysses_config`), so ``world_size / N`` groups can render different prompts
at the same time (``accel render --cp-degree N``).
"""

from __future__ import annotations

import torch

from accel.processors.context_parallel import chunk_sizes, context_parallel_config
from accel.processors.upstream import ContextParallelConfig, ContextParallelInput, ContextParallelOutput

__all__ = ["enable_context_parallel", "context_parallel_plan", "ulysses_config", "prepare_model",
           "HUNYUAN_VIDEO_CP_PLAN", "PROMPT_MESH_DIM"]

#: name of the device-mesh dimension over which the context-parallel groups of :func:`ulysses_config` lie
PROMPT_MESH_DIM = "prompt"
_TEXT_MASK_ATTR = "_accel_cp_text_mask"


def _hunyuan_video_plan() -> dict:
    split_tokens = ContextParallelInput(split_dim=1, expected_dims=3, split_output=True)
    split_rope = ContextParallelInput(split_dim=0, expected_dims=2, split_output=True)
    return {
        "x_embedder": {0: split_tokens},         # [B, T*H*W, C] video tokens
        "context_embedder": {0: split_tokens},   # [B, L, C] text tokens, after the refiner
        "rope": {0: split_rope, 1: split_rope},  # (cos, sin), [T*H*W, D] each
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


#: accel's context-parallel plan for ``HunyuanVideoTransformer3DModel`` (see the module docstring)
HUNYUAN_VIDEO_CP_PLAN = _hunyuan_video_plan()


def context_parallel_plan(model: torch.nn.Module) -> dict:
    """The context-parallel plan accel uses for ``model``: diffusers' ``_cp_plan`` (Wan, FLUX) or
    :data:`HUNYUAN_VIDEO_CP_PLAN`.

    Raises:
        TypeError: a transformer accel does not support.
        NotImplementedError: HunyuanVideo image-to-video with ``image_condition_type="token_replace"``
            (its first-frame tokens get their own modulation, which a sequence share cannot tell).
    """
    from accel.processors.families import HunyuanVideoFamily, family_of

    family = family_of(model)
    if isinstance(family, HunyuanVideoFamily):
        if getattr(model.config, "image_condition_type", None) == "token_replace":
            raise NotImplementedError(
                "HunyuanVideo image-to-video with image_condition_type='token_replace' is not supported under "
                "context parallelism (the first frame's tokens are modulated apart from the rest)"
            )
        return HUNYUAN_VIDEO_CP_PLAN
    return type(model)._cp_plan


def ulysses_config(degree: int, *, device_type: str | None = None):
    """A ``ContextParallelConfig(ulysses_degree=degree)`` whose groups are consecutive ranks.

    With ``W = torch.distributed.get_world_size()``, the ``W / degree`` groups are ranks
    ``[0, degree)``, ``[degree, 2 degree)``, ...; each group splits one video, and different groups
    may run different prompts. ``degree == W`` gives one group (diffusers' default mesh).

    Args:
        degree: GPUs per video, an int >= 2 dividing the world size (and the model's head count).
        device_type: device type of the mesh (``"cuda"``; default: the current accelerator, else
            ``"cpu"``).

    Raises:
        RuntimeError: ``torch.distributed`` is not initialised.
        ValueError: ``degree`` is not an int >= 2 dividing the world size.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 2:
        raise ValueError(f"the context-parallel degree must be an int >= 2, got {degree!r}")
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("context parallelism needs torch.distributed initialised (launch with torchrun or "
                           "accelerate launch, one process per GPU)")
    world = dist.get_world_size()
    if world % degree:
        raise ValueError(f"the context-parallel degree {degree} must divide the number of processes {world}")
    if device_type is None:
        accelerator = torch.accelerator.current_accelerator()
        device_type = accelerator.type if accelerator is not None else "cpu"
    mesh = init_device_mesh(device_type, (world // degree, 1, degree),
                            mesh_dim_names=(PROMPT_MESH_DIM, "ring", "ulysses"))
    return ContextParallelConfig(ulysses_degree=degree, mesh=mesh)


def enable_context_parallel(pipe_or_transformer, config) -> None:
    """Split every video (image) of ``pipe_or_transformer`` over a context-parallel group of GPUs.

    Runs diffusers' ``enable_parallelism`` on each transformer (``transformer`` and, for Wan 2.2,
    ``transformer_2``) with accel's plan (:func:`context_parallel_plan`); accel processors installed
    by :func:`accel.apply` before or after run their method on the whole sequence (Ulysses).

    Args:
        pipe_or_transformer: a Wan, HunyuanVideo or FLUX pipeline, or its transformer, already on this
            process's device.
        config: the Ulysses degree (an int >= 2: :func:`ulysses_config`), or a diffusers
            ``ContextParallelConfig`` / ``ParallelConfig`` (``ring_degree`` must be 1 for accel
            methods; :func:`accel.apply` refuses ring attention).

    Raises:
        RuntimeError: no accelerator, ``torch.distributed`` not initialised, or parallelism already enabled.
        ValueError: a bad degree (see :func:`ulysses_config`).
        TypeError: an unsupported pipeline or transformer.
    """
    from accel.processors.apply import _transformers_of

    models, _ = _transformers_of(pipe_or_transformer)
    if torch.accelerator.device_count() == 0:
        # diffusers 0.42.1 (ModelMixin._resolve_parallel_config) puts rank r on device
        # r % torch.accelerator.device_count(), a division by zero without an accelerator
        raise RuntimeError("diffusers' context parallelism needs an accelerator (CUDA GPUs); this machine has none")
    if isinstance(config, int) and not isinstance(config, bool):
        config = ulysses_config(config)
    for model in models:
        if context_parallel_config(model) is not None or getattr(model, "_parallel_config", None) is not None:
            raise RuntimeError(f"parallelism is already enabled on this {type(model).__name__}")
    for model in models:
        model.enable_parallelism(config=config, cp_plan=context_parallel_plan(model))
        install_text_mask_hooks(model)


# ---------------------------------------------------------------------- HunyuanVideo text mask
class _HunyuanTextMask:
    """Forward pre-hooks giving HunyuanVideo's blocks the attention mask of their rank's share."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.mask: torch.Tensor | None = None
        params = list(__import__("inspect").signature(type(model).forward).parameters)[1:]
        self._mask_index = params.index("encoder_attention_mask")
        self.handles = [model.register_forward_pre_hook(self.record, with_kwargs=True)]
        for block in (*model.transformer_blocks, *model.single_transformer_blocks):
            self.handles.append(block.register_forward_pre_hook(self.local_mask, with_kwargs=True))

    def record(self, module, args, kwargs):
        """Root pre-hook: keep the call's whole ``encoder_attention_mask`` ``[B, L]``."""
        mask = kwargs.get("encoder_attention_mask")
        if mask is None and len(args) > self._mask_index:
            mask = args[self._mask_index]
        self.mask = mask
        return None

    def local_mask(self, module, args, kwargs):
        """Block pre-hook: replace ``attention_mask`` ``[B, 1, 1, N_local]`` by this rank's share of the
        upstream mask ``[video (all valid), text (first sum(encoder_attention_mask) valid)]``."""
        cp = context_parallel_config(self.model)
        if cp is None or self.mask is None:
            return None
        hidden, text = args[0], args[1]
        world = cp.ring_degree * cp.ulysses_degree
        rank = torch.distributed.get_rank(cp._flattened_mesh.get_group())
        text_len = self.mask.shape[1]
        sizes = chunk_sizes(text_len, world, bool(cp.ulysses_anything or cp.ring_anything))
        if text.shape[1] != sizes[rank]:
            raise ValueError(
                f"HunyuanVideo block on context-parallel rank {rank} got {text.shape[1]} text tokens, not its share "
                f"{sizes[rank]} of {text_len}: enable context parallelism with accel.processors.enable_context_parallel"
            )
        start = sum(sizes[:rank])
        valid = torch.arange(text_len, device=self.mask.device)[None, :] < self.mask.sum(1, dtype=torch.int)[:, None]
        local = valid[:, start:start + sizes[rank]].to(hidden.device)
        video = torch.ones(hidden.shape[0], hidden.shape[1], dtype=torch.bool, device=hidden.device)
        mask = torch.cat([video, local.expand(hidden.shape[0], -1)], dim=1)[:, None, None, :]
        if "attention_mask" in kwargs:
            kwargs = {**kwargs, "attention_mask": mask}
        else:
            args = (*args[:3], mask, *args[4:])
        return args, kwargs


def install_text_mask_hooks(model: torch.nn.Module) -> None:
    """Install the HunyuanVideo text-mask pre-hooks on ``model`` once (no-op for other models)."""
    from accel.processors.families import HunyuanVideoFamily, family_of

    if not isinstance(family_of(model), HunyuanVideoFamily) or getattr(model, _TEXT_MASK_ATTR, None) is not None:
        return
    setattr(model, _TEXT_MASK_ATTR, _HunyuanTextMask(model))


def prepare_model(model: torch.nn.Module, modules, *, runs_methods: bool) -> None:
    """Make accel's state of ``model`` agree with its context parallelism, whenever it was enabled.

    Called by :func:`accel.apply` / :func:`accel.processors.attach` and by the root hook before every
    eager transformer call, so the order of ``enable_parallelism`` and ``apply`` does not matter. No-op
    without context parallelism. Otherwise: refuses ring attention when accel methods run
    (``runs_methods``), gives the processors of ``modules`` the model's parallel config, and installs
    the HunyuanVideo text-mask hooks.

    Raises:
        ValueError: see :func:`accel.processors.context_parallel.check_ulysses`.
    """
    from accel.processors.context_parallel import adopt_parallel_config, check_ulysses

    cp = context_parallel_config(model)
    if cp is None:
        return
    if runs_methods:
        check_ulysses(model, cp)
    adopt_parallel_config(model, modules)
    install_text_mask_hooks(model)

"""Data-parallel rendering over ``torch.distributed``, as launched by ``torchrun`` or ``accelerate launch``.

The launcher starts one process per GPU (on one or several nodes) and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` joins
the process group from those (``env://``), with NCCL when CUDA is available and Gloo otherwise.
Without those variables (or with ``WORLD_SIZE=1``) everything runs in one process.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch

__all__ = ["DistContext", "init_distributed", "barrier", "main_says", "close", "shard"]

# Ranks that finish their share early wait at the final barrier for the others: allow long batches.
_TIMEOUT = datetime.timedelta(hours=24)


@dataclasses.dataclass(frozen=True)
class DistContext:
    """This process's place in the job.

    Attributes:
        rank: global rank (0 .. world_size - 1).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (single process).
        owns_group: whether :func:`init_distributed` created the process group (and :func:`close`
            destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0 (which merges the manifest and prints the summary)."""
        return self.rank == 0

    def device(self) -> torch.device:
        """``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from exc


def init_distributed() -> DistContext:
    """Join the process group described by the launcher's environment, or run alone.

    Raises:
        ValueError: inconsistent ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        local = _env_int("LOCAL_RANK", 0)
        return DistContext(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext()
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank}, LOCAL_RANK={local} do not fit WORLD_SIZE={world}")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return DistContext(rank, world, local, backend, True)


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op alone)."""
    if ctx.world_size <= 1:
        return
    import torch.distributed as dist

    if ctx.backend == "nccl":
        dist.barrier(device_ids=[ctx.local_rank])
    else:
        dist.barrier()


def main_says(ctx: DistContext, flag: bool) -> bool:
    """Rank 0's ``flag``, on every rank (each rank passes its own; only rank 0's counts). Alone: ``flag``."""
    if ctx.world_size <= 1:
        return bool(flag)
    import torch.distributed as dist

    device = torch.device("cuda", ctx.local_rank) if ctx.backend == "nccl" else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def close(ctx: DistContext) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if ctx.owns_group:
        import torch.distributed as dist

        dist.destroy_process_group()


def shard(items: list, ctx: DistContext, group_size: int = 1) -> list:
    """This rank's share of ``items``, round robin over groups of ``group_size`` consecutive ranks.

    With ``group_size = 1`` every rank is its own group: every ``world_size``-th item starting at
    ``rank``. With context parallelism (``group_size = N`` GPUs per video) ranks ``[gN, (g+1)N)`` form
    group ``g`` and all get the same items: every ``world_size / N``-th starting at ``g``.

    Raises:
        ValueError: ``group_size`` is not an int >= 1 dividing ``world_size``.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 or ctx.world_size % group_size:
        raise ValueError(f"group_size must be an int >= 1 dividing the world size {ctx.world_size}, got {group_size!r}")
    groups = ctx.world_size // group_size
    return items[ctx.rank // group_size::groups]

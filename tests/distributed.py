"""Run a function in several CPU processes joined by a Gloo process group (tests of torch.distributed code).

The processes are started with ``spawn`` and rendezvous through a file store in a fresh temporary
folder (no TCP port to pick or collide on). Every rank reports its result or its traceback through a
queue; the parent kills the whole group when a rank dies without reporting or the time limit passes,
and Gloo's own timeout ends a collective that a rank never joins, so a broken test fails instead of
hanging.
"""

from __future__ import annotations

import datetime
import os
import queue as queue_lib
import tempfile
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_gloo"]

# a collective that a rank never joins fails after this long, well inside the callers' time limits
_COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=120)


def _entry(fn, rank: int, world_size: int, init_method: str, results, args) -> None:
    torch.set_num_threads(1)  # the ranks share the machine's cores
    try:
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                                timeout=_COLLECTIVE_TIMEOUT)
        try:
            value = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        results.put((rank, True, value))
    except BaseException:  # noqa: BLE001 -- report everything to the parent
        results.put((rank, False, traceback.format_exc()))


def _receive(results, reported: dict, wait: float) -> bool:
    """Move one report from the queue into ``reported``; False when none came within ``wait`` seconds."""
    try:
        rank, ok, value = results.get(timeout=wait) if wait > 0 else results.get_nowait()
    except queue_lib.Empty:
        return False
    reported[rank] = (ok, value)
    return True


def _wait(procs, results, reported: dict, timeout: float) -> None:
    """Collect every rank's report; raise when the time is up or a rank died without one."""
    deadline = time.monotonic() + timeout
    while len(reported) < len(procs):
        if time.monotonic() > deadline:
            missing = sorted(set(range(len(procs))) - set(reported))
            raise TimeoutError(f"ranks {missing} of {len(procs)} did not finish within {timeout:.0f} s"
                               + "".join(f"\nrank {r} failed:\n{v}" for r, (ok, v) in sorted(reported.items()) if not ok))
        if _receive(results, reported, wait=1.0):
            continue
        dead = [r for r, p in enumerate(procs) if r not in reported and p.exitcode is not None]
        if dead:
            time.sleep(1.0)  # its report may still be in the pipe
            while _receive(results, reported, wait=0.0):
                pass
            dead = [r for r in dead if r not in reported]
            if dead:
                codes = {r: procs[r].exitcode for r in dead}
                raise RuntimeError(f"ranks {dead} died without reporting (exit codes {codes})")


def run_gloo(fn, world_size: int, *args, timeout: float = 600.0) -> list:
    """``[fn(rank, world_size, *args) for each rank]``, each run in its own process of a Gloo group.

    Args:
        fn: a module-level function (picklable); its return value must be picklable and should hold
            no tensors (plain numbers, strings, lists, numpy arrays).
        world_size: number of processes, an int >= 1.
        args: extra picklable arguments for ``fn``.
        timeout: seconds for the whole group, start-up included.

    Raises:
        AssertionError: a rank raised (its traceback is in the message).
        TimeoutError / RuntimeError: the group did not finish in time, or a rank died without reporting.
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    reported: dict[int, tuple[bool, object]] = {}
    with tempfile.TemporaryDirectory(prefix="accel-gloo-") as tmp:
        init_method = "file://" + os.path.join(tmp, "store")
        procs = [ctx.Process(target=_entry, args=(fn, rank, world_size, init_method, results, args), daemon=True)
                 for rank in range(world_size)]
        for p in procs:
            p.start()
        try:
            _wait(procs, results, reported, timeout)
        finally:
            grace = 30 if len(reported) == world_size else 0  # a failed or hung group is killed at once
            for p in procs:
                p.join(timeout=grace)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=10)
    failed = {rank: value for rank, (ok, value) in reported.items() if not ok}
    if failed:
        raise AssertionError("\n".join(f"rank {rank} failed:\n{tb}" for rank, tb in sorted(failed.items())))
    return [reported[rank][1] for rank in range(world_size)]

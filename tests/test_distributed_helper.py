"""tests/distributed.py itself: a stuck rank is killed at the time limit and a failing rank's traceback is shown."""

import time

import pytest

from .distributed import run_gloo


def _one_fails_one_hangs(rank: int, world_size: int) -> int:
    if rank == 1:
        raise ValueError("planted failure")
    time.sleep(3600)
    return rank


def test_a_stuck_group_is_killed_at_the_time_limit():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"(?s)ranks \[0\] of 2 did not finish.*rank 1 failed.*planted failure"):
        run_gloo(_one_fails_one_hangs, 2, timeout=20)
    assert time.monotonic() - start < 60  # killed, not joined

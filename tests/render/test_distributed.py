import pytest

from accel.render.distributed import DistContext, shard


def test_shard_round_robin_over_ranks_and_over_context_parallel_groups():
    items = list(range(10))
    assert [shard(items, DistContext(rank=r, world_size=3)) for r in range(3)] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    # 8 processes, 2 per video: ranks 2g and 2g+1 render the same items, the 4 groups share them out
    got = [shard(items, DistContext(rank=r, world_size=8), 2) for r in range(8)]
    assert got == [[0, 4, 8], [0, 4, 8], [1, 5, 9], [1, 5, 9], [2, 6], [2, 6], [3, 7], [3, 7]]
    assert shard(items, DistContext(rank=3, world_size=4), 4) == items
    for bad in (0, 3, True):
        with pytest.raises(ValueError, match="group_size must be an int >= 1 dividing the world size 4"):
            shard(items, DistContext(rank=0, world_size=4), bad)

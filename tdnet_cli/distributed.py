"""Where this process sits in a torchrun world: the one reader of RANK, WORLD_SIZE and LOCAL_RANK.

`segment` shards its inputs by it and `train` runs one DistributedDataParallel replica per rank.
Nothing here imports torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tdnet_cli.errors import UsageError

__all__ = ["DistEnv", "local_rank", "read_dist_env"]


@dataclass(frozen=True)
class DistEnv:
    """This process's rank among ``world`` workers and its GPU index on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and writes for everyone."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def local_rank(env: Mapping[str, str] = os.environ) -> int | None:
    """LOCAL_RANK (the worker's GPU on its node), None where torchrun did not set it."""
    if "LOCAL_RANK" not in env:
        return None
    text = env["LOCAL_RANK"]
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"bad LOCAL_RANK {text!r} in the environment") from None
    if value < 0:
        raise UsageError(f"bad LOCAL_RANK {text!r} in the environment")
    return value


def read_dist_env(env: Mapping[str, str] = os.environ) -> DistEnv:
    """torchrun's world: a single process (``DistEnv()``) unless RANK and WORLD_SIZE are set
    and WORLD_SIZE is above 1. A value that is not an integer, or a RANK outside the world,
    is a UsageError before any work."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return DistEnv()
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except ValueError:
        raise UsageError(f"bad RANK/WORLD_SIZE {env['RANK']!r}/{env['WORLD_SIZE']!r} in the environment") from None
    if world <= 1:
        return DistEnv()
    if not 0 <= rank < world:
        raise UsageError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return DistEnv(rank, world, local_rank(env) or 0)

"""Sharding an evaluation over processes started by ``torchrun`` (gloo on CPU, nccl on GPU).

Rank ``r`` of ``w`` evaluates examples ``r, r + w, r + 2w, ...`` of the task and writes its own
JSONL part; after a barrier, rank 0 reads all parts and writes the one merged summary. Each
example's record depends only on the example, so the merged summary equals a one-process run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this module started the process group, so it ends it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        return items[self.rank :: self.world]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def launched() -> bool:
    """True when started by ``torchrun`` (or anything that sets ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: str) -> Dist:
    """Join the process group ``torchrun`` prepared; a no-op for a single process."""
    if not launched():
        return Dist()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def teardown(d: Dist) -> None:
    import torch.distributed as dist

    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()

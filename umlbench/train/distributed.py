"""Process-group helpers for ``torchrun`` (DDP). One process = world size 1, no group."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "gather_with_grad", "gather", "barrier"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (if any).

    NCCL on CUDA, gloo on CPU. Returns world size 1 when not launched by torchrun.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0, differentiable: the backward pass sums every process's
    gradient into the local slice, so with DDP's gradient averaging the update equals the
    single-process update on the global batch."""
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 without gradient."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()

"""Data-parallel training under ``torchrun``: process group, device per rank, small collectives.

Started by ``torchrun`` (``WORLD_SIZE`` > 1) the loop joins a process group (nccl on GPU, gloo on
CPU); started plainly it runs as a world of one and none of this costs anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group if launched by torchrun; returns the world and this rank's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, local), device


def teardown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def mean(world: World, value: torch.Tensor) -> torch.Tensor:
    if not world.active:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world.size


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()


def gather(world: World, obj: Any) -> list[Any]:
    if not world.active:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out

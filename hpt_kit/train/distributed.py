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


def shard(model: torch.nn.Module, blocks: list[torch.nn.Module]) -> None:
    """FSDP2 in place: each of ``blocks`` is its own unit (its parameters gathered just before it runs
    and freed after), everything else one root unit. Parameters become sharded ``DTensor``s, so the
    optimiser must be built afterwards."""
    from torch.distributed.fsdp import fully_shard

    for block in blocks:
        fully_shard(block)
    fully_shard(model)


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> tuple[dict, dict]:
    """Whole (unsharded) model tensors and optimiser state, keyed by parameter name. Collective when
    ``sharded``: every rank calls it, rank 0 receives the tensors (on the CPU), the others nothing."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True) if sharded else StateDictOptions()
    return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, sharded: bool) -> None:
    """Optimiser state saved by :func:`full_state` (keyed by parameter name) into a replicated or
    sharded model's optimiser; state keyed by parameter index (older checkpoints) into a replicated one."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if all(isinstance(k, int) for k in state.get("state", {})) and state.get("state"):
        if sharded:
            raise ValueError(
                "this checkpoint's optimiser state is keyed by parameter index (saved before FSDP support): "
                'resume it once with parallel = "ddp" (or one process), then switch to "fsdp"'
            )
        optimizer.load_state_dict(state)
        return
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False) if sharded else StateDictOptions()
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)

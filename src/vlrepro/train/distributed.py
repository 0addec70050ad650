"""The few torchrun/DDP helpers the loop needs: who am I, which device, and a process group.

``torchrun --nproc_per_node N script.py`` sets RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/PORT);
without them the run is a single process and every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` means CUDA when present; each local rank gets its own GPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for, but torch sees no CUDA device")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(preference: str = "auto") -> DistEnv:
    """Read the torchrun environment, pick the device and join (or create) the process group."""
    if dist.is_available() and dist.is_initialized():  # the caller set the group up: trust it over the env
        world_size, rank = dist.get_world_size(), dist.get_rank()
    else:
        world_size, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        # A generous timeout: rank 0 evaluates and writes checkpoints while the others wait at a barrier.
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=timedelta(minutes=60),
            **({"device_id": device} if device.type == "cuda" else {}),
        )
        owns = True
    return DistEnv(rank, world_size, local_rank, device, owns)


def teardown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= env.world_size
    return t


def all_gather_object(obj: Any, env: DistEnv) -> list[Any]:
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out

"""Multi-process training with `torchrun` (spec 2, docs/design.md "Scale and streaming"): DDP on NCCL (CUDA) or gloo (CPU).

    with distributed_session(cfg.device) as dist:        # one process per GPU / per CPU worker
        model = wrap_ddp(model.to(dist.device), dist)
        my_indices = shard(indices, dist)                  # DistributedSampler-style: every world_size-th item
        if dist.is_main: save_checkpoint(...)              # only rank 0 writes and logs
        barrier(dist)

Without torchrun (no WORLD_SIZE in the environment, or WORLD_SIZE=1) everything is a single-process
no-op and the device is `utils.runtime.resolve_device(device)`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator, Sequence, TypeVar

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from utils.errors import ConfigError
from utils.runtime import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


def init_distributed(device: str, timeout_s: float = 600.0) -> DistInfo:
    """Join the torchrun process group (if any) and pick this process's device."""
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo(0, 1, 0, resolve_device(device))
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                              f"use torchrun --nproc_per_node <= {torch.cuda.device_count()}")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
        backend = "nccl"
    else:
        backend = "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                 timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank, resolved)


def cleanup(info: DistInfo) -> None:
    if info.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(device: str) -> Iterator[DistInfo]:
    """init_distributed ... cleanup, also when the body raises."""
    info = init_distributed(device)
    try:
        yield info
    finally:
        cleanup(info)


def wrap_ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around `model` (already on info.device) when running distributed."""
    if not info.enabled:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(items: Sequence[T], info: DistInfo) -> Sequence[T]:
    """This rank's share of a sequence every rank built identically: items[rank::world_size]."""
    return items[info.rank::info.world_size]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        tdist.barrier()


"""DistributedDataParallel plumbing for ``torchrun --nproc-per-node N``: NCCL on GPUs, gloo on CPU.

Only the parts :func:`cavlog_core.training.fit` needs: detecting the torchrun environment, process
group set-up, wrapping modules, averaging logs and keeping buffers identical across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import CavlogError

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "barrier",
    "broadcast_buffers",
    "dist_info",
    "init_distributed",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process; ``world_size == 1`` when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains (DDP)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the rank that writes files)."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by torchrun (default: one process)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise CavlogError(f"torchrun environment: {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise CavlogError(f"torchrun environment: RANK={rank} WORLD_SIZE={world} are inconsistent")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device, bool]:
    """Join the process group when launched by torchrun.

    Returns ``(info, device, created)``: on CUDA each rank uses ``cuda:LOCAL_RANK``; ``created``
    tells whether this call initialised the group (and so should destroy it).
    """
    info = dist_info()
    if not info.enabled:
        return info, device, False
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return info, device, False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return info, device, True


def wrap_ddp(modules: nn.ModuleDict, info: DistInfo, device: torch.device) -> nn.ModuleDict:
    """Wrap every trainable module in :class:`DistributedDataParallel` (no-op for one process).

    The Grad-CAM's ``autograd.grad`` is taken w.r.t. activations, not parameters, so DDP's
    gradient hooks fire once per iteration, in the final ``backward``, as usual.
    """
    if not info.enabled:
        return modules
    ids = [device.index] if device.type == "cuda" else None
    wrapped: dict[str, nn.Module] = {}
    for name, module in modules.items():
        if any(p.requires_grad for p in module.parameters()):
            wrapped[name] = DistributedDataParallel(module, device_ids=ids)
        else:
            wrapped[name] = module
    return nn.ModuleDict(wrapped)


def all_reduce_mean(rows: list[dict[str, float]], info: DistInfo,
                    device: torch.device) -> list[dict[str, float]]:
    """Average the scalar logs of some iterations over ranks, in one collective.

    Every rank passes the same iterations with the same keys; identity when single-process.
    """
    if not info.enabled or not rows:
        return rows
    keys = [sorted(row) for row in rows]
    t = torch.tensor([row[k] for row, ks in zip(rows, keys) for k in ks], dtype=torch.float64,
                     device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    mean = iter((t / info.world_size).tolist())
    return [{k: next(mean) for k in ks} for ks in keys]


def broadcast_buffers(modules: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if not info.enabled:
        return
    for buf in modules.buffers():
        dist.broadcast(buf, src=0)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when single-process)."""
    if info.enabled:
        dist.barrier()

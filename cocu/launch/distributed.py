"""Process groups and collectives: the only module (with `device.py`) that touches torch.distributed.

Every function is a no-op (or the identity) when `world_size == 1`, so single-process code runs
the same lines as DDP code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as tdist
from torch import Tensor, nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_env(env: Optional[dict[str, str]] = None) -> DistInfo:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK, `srun` sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID;
    a plain `python` run is rank 0 of 1. torchrun's variables win over SLURM's."""
    env = dict(os.environ) if env is None else env

    def get(torchrun: str, slurm: str, default: int) -> int:
        return int(env.get(torchrun, env.get(slurm, default)))

    return DistInfo(get("RANK", "SLURM_PROCID", 0), get("WORLD_SIZE", "SLURM_NTASKS", 1),
                    get("LOCAL_RANK", "SLURM_LOCALID", 0))


def init_process_group(dist: DistInfo, backend: Optional[str] = None, device: Optional[torch.device] = None,
                       init_method: str = "env://", timeout: Optional[timedelta] = None) -> None:
    """Join the process group (nccl on cuda, gloo otherwise); nothing to do for one process.

    With `env://`, MASTER_ADDR and MASTER_PORT must be set (torchrun does; under SLURM, submitit's
    `TorchDistributedEnvironment().export()` does). `timeout`: how long a collective waits for the
    other ranks before it fails (torch's default, 10-30 minutes, when None; tests set less).
    """
    if not dist.distributed or tdist.is_initialized():
        return
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.set_device(dist.local_rank)
    backend = backend or ("nccl" if cuda else "gloo")
    tdist.init_process_group(backend, init_method=init_method, rank=dist.rank, world_size=dist.world_size,
                             **({} if timeout is None else {"timeout": timeout}))
    log.info("rank %d/%d joined a %s process group", dist.rank, dist.world_size, backend)


def destroy_process_group() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def wrap_ddp(model: nn.Module, dist: DistInfo, device: torch.device,
             find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel for world_size > 1 (BatchNorm -> SyncBatchNorm on cuda); else `model`.

    SyncBatchNorm keeps the BatchNorm parameters (same tensors), so an optimizer may be built on
    `unwrap(wrapped)` afterwards. Set find_unused_parameters when a parameter gets no gradient
    (e.g. the multi-label logit scale when training without prompts).
    """
    if not dist.distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[dist.local_rank],
                                                   find_unused_parameters=find_unused_parameters)
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=find_unused_parameters)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums the incoming gradients over ranks and returns
    this rank's slice, i.e. the exact gradient of sum_over_ranks(loss_r) w.r.t. the local input."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rank, ctx.world_size, ctx.n = tdist.get_rank(), tdist.get_world_size(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
        tdist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        tdist.all_reduce(grad)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: Tensor, world_size: int) -> Tensor:
    """[n, ...] on each rank -> [world_size * n, ...] in rank order, differentiable (identity for one).

    Every rank must pass the same n. With DDP's gradient averaging, a per-rank loss that is the
    mean over the rank's own rows against the gathered columns yields exactly the gradient of the
    global-batch loss (the backward all-reduce brings each rank the other ranks' terms)."""
    return x if world_size == 1 else _GatherWithGrad.apply(x)


def all_reduce_mean(x: Tensor, dist: DistInfo) -> Tensor:
    """Mean over ranks of a detached tensor (for logging); identity for one process."""
    if not dist.distributed:
        return x
    x = x.detach().clone()
    tdist.all_reduce(x)
    return x / dist.world_size


def all_gather_object(obj: Any, dist: DistInfo) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...]; [obj] for one process."""
    if not dist.distributed:
        return [obj]
    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def barrier(dist: DistInfo) -> None:
    if dist.distributed:
        tdist.barrier()

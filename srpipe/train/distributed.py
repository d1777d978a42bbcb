"""Process-group setup for multi-GPU / multi-node training launched by ``torchrun``.

Contract: :func:`setup` reads torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). With ``WORLD_SIZE`` unset or 1 it returns a single-process
context and touches no process group. Otherwise it joins the group — NCCL when training on CUDA
(one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU — unless the caller already did.
Global rank 0 is the only process that writes files. The helpers below are no-ops for one process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from srpipe.errors import UsageError
from srpipe.hardware import resolve_device

log = logging.getLogger(__name__)

_REQUIRED_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
NO_GPU = "train.device = 'cuda' but PyTorch sees no CUDA GPU; use device = 'auto' or 'cpu'"


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job, and the device it trains on."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""  # "" when not distributed
    owns_group: bool = False  # True when setup() created the process group (teardown destroys it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(preference: Literal["auto", "cuda", "cpu"]) -> DistContext:
    """Join the torchrun job described by the environment (or run alone); see the module docstring."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext(device=resolve_device(preference, 0, no_gpu=NO_GPU))
    missing = [name for name in _REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        raise UsageError(f"WORLD_SIZE={world} but {', '.join(missing)} unset; launch multi-process training "
                         "with torchrun (docs/train.md, 'Multi-GPU')")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = resolve_device(preference, local_rank, no_gpu=NO_GPU)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if owns:
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, **kwargs)
    log.debug("rank %d/%d (local %d) on %s, backend %s", rank, world, local_rank, device, backend)
    return DistContext(device=device, rank=rank, local_rank=local_rank, world_size=world, backend=backend,
                       owns_group=owns)


def teardown(ctx: DistContext, *, clean: bool = True) -> None:
    """Destroy the process group if :func:`setup` created it.

    ``clean`` (every rank got here normally): wait for all ranks first. Without that, a rank that tears
    down while another still works closes its gloo connections under the other's feet, and the other
    process aborts at exit ("terminate called without an active exception"; seen in tests).
    """
    if ctx.owns_group and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op alone)."""
    if ctx.distributed:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects; used for small decisions such as paths)."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all ranks (returns a new tensor; the input is untouched)."""
    if not ctx.distributed:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size

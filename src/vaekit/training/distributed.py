"""Data-parallel training through PyTorch's own engine: torch.distributed, launched by torchrun.

`torchrun --nproc_per_node N -m vaekit train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK and a rendezvous address in their environment; `context_from_env()` reads them
and `init()` joins the process group (gloo on CPU, nccl on GPU). Without those variables
vaekit runs as one process and nothing here does anything.

Semantics: `--batch-size` is the global batch; each of the N ranks takes every N-th
example of it, so N processes take the same optimisation steps as one process with that
batch (gradients are averaged by DistributedDataParallel) and the learning rate keeps its
meaning. Only rank 0 writes files and prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from vaekit.core.errors import ConfigError, RunError, VaekitError


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


SINGLE = Context()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def context_from_env() -> Context:
    """This process's place in the job, from torchrun's environment (one process if unset)."""
    if not launched_by_torchrun():
        return SINGLE
    return Context(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def init(context: Context, device: torch.device, timeout_minutes: float = 30.0) -> None:
    """Join the process group (gloo on CPU, nccl on GPU) unless running as one process."""
    if context.parallel and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))


def device_for(name: str, context: Context) -> str:
    """Under torchrun with GPUs, each process takes the GPU of its local rank."""
    if context.parallel and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{context.local_rank}"
    return name


def check_batch_size(batch_size: int, context: Context) -> int:
    """The per-process batch: the global batch split evenly across ranks."""
    if batch_size % context.world_size:
        raise ConfigError(
            f"batch size {batch_size} is the global batch and must be divisible by the "
            f"{context.world_size} processes"
        )
    return batch_size // context.world_size


def all_reduce_max(values: list[float], context: Context) -> list[float]:
    """Element-wise maximum over ranks (used to agree on stopping)."""
    if not context.parallel:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def all_reduce_sums(sums: dict[str, float], context: Context) -> dict[str, float]:
    """Sum each value over ranks (epoch totals: every rank adds its share)."""
    if not context.parallel:
        return sums
    keys = sorted(sums)
    tensor = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def on_main(make: Callable[[], str], context: Context) -> str:
    """`make()` run on rank 0 only; its result, or its error, reaches every rank."""
    if not context.parallel:
        return make()
    outcome: tuple[str, str] | None = None
    if context.is_main:
        try:
            outcome = ("ok", make())
        except VaekitError as err:
            outcome = ("error", str(err))
    box = [outcome]
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise RunError(value)
    return value


def barrier(context: Context) -> None:
    if context.parallel:
        dist.barrier()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

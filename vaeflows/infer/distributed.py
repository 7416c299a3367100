"""Data-parallel training across processes (``torchrun``), for :func:`vaeflows.infer.training.fit`.

Under ``torchrun --nproc_per_node=N`` every process runs the same command. :func:`setup` joins the
process group (gloo on the CPU, nccl on GPUs, from torchrun's environment variables), and ``fit``
then:

* wraps the loss in :class:`torch.nn.parallel.DistributedDataParallel` (DDP), which broadcasts
  rank 0's parameters at the start and averages the gradients of every step across processes;
* shuffles with one permutation per epoch shared by all processes and gives process ``r`` the
  examples ``r, r + N, r + 2N, ...`` of it (a distributed sampler; the last ``n mod N`` examples of
  the permutation are left out of that epoch so that every process runs the same number of steps);
* sums the training loss over processes, takes the validation value from rank 0, and writes
  checkpoints, logs and metrics on rank 0 only.

Each process trains on ``batch_size`` examples per step, so the effective batch is
``N * batch_size``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Tuple

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["world", "setup", "teardown", "LossModule", "all_sum", "from_rank0", "gather", "barrier"]


def world() -> Tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def setup(device: torch.device) -> Tuple[torch.device, bool]:
    """Join the process group if torchrun started this process (``WORLD_SIZE > 1``).

    Returns:
        The device of this process (``cuda:LOCAL_RANK`` on GPUs) and whether this call created the
        group (the caller then calls :func:`teardown` at the end).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, True


def teardown(created: bool) -> None:
    if created:
        dist.destroy_process_group()


class LossModule(nn.Module):
    """A module whose ``forward`` is ``loss(batch, epoch)``, so that DDP can wrap it: DDP hooks the
    gradients of ``module``'s parameters, which the loss uses."""

    def __init__(self, module: nn.Module, loss: Callable[[torch.Tensor, int], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self.loss = loss

    def forward(self, batch: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.loss(batch, epoch)


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over processes (``value`` itself in a single process)."""
    if world()[1] > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every process (any picklable object)."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> List[Any]:
    """Every process's ``value``, in rank order (any picklable object)."""
    rank, size = world()
    if size == 1:
        return [value]
    values: List[Any] = [None] * size
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    """Wait for every process (nothing in a single process)."""
    if world()[1] > 1:
        dist.barrier()

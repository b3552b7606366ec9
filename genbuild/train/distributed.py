"""Data parallelism for the training loops, the way ``torch.distributed.run`` launches them.

Every rank draws the same global batch (and the same noise) from the same generators and
trains on its contiguous share of it; each rank's loss is weighted by its share, and the
gradients are summed with one flat all_reduce (gloo on CPU, nccl on GPU). The update is then
the one of the whole batch, identical on every rank, and independent of the number of
processes up to float summation order. Rank 0 alone validates, checkpoints and writes.

Without a launcher (or with WORLD_SIZE 1) every helper here is a no-op, so the loops are the
single-process ones.
"""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(world size, rank) of the joined process group; (1, 0) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def launched_world() -> int:
    """The world size the launcher announced (before the group is joined)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def share(batch: int, what: str) -> slice:
    """This rank's contiguous part of a global batch of ``batch``; ``what`` names the param."""
    n, rank = world()
    if batch < n:
        raise ValueError(f"{what}: {batch} is smaller than the {n} training processes")
    return slice(rank * batch // n, (rank + 1) * batch // n)


def barrier() -> None:
    if world()[0] > 1:
        dist.barrier()


def allreduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum the gradients over ranks in one flat all_reduce (each rank's loss is already weighted
    by its share of the batch); a parameter without a gradient on a rank counts as zero there."""
    if world()[0] == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    off = 0
    for p in params:
        n = p.numel()
        p.grad = flat[off:off + n].view_as(p)
        off += n


def allreduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of a (weighted) loss, for the logs; the input is left untouched."""
    if world()[0] == 1:
        return value.detach()
    out = value.detach().clone()
    dist.all_reduce(out)
    return out


def broadcast_from_rank0(obj):
    """Rank 0's ``obj`` on every rank (e.g. the checkpoint rank 0 found)."""
    if world()[0] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def init(gpus: int, stage: str) -> torch.device:
    """Join the process group when launched with WORLD_SIZE > 1; pick this rank's device."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = gpus > 0 and torch.cuda.is_available()
    if gpus > 0 and not cuda:
        log.warning("%s: %d GPU(s) requested but CUDA is not available: training on CPU", stage, gpus)
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if launched_world() > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
        log.info("%s: rank %d of %d (%s, backend %s)", stage, dist.get_rank(), dist.get_world_size(), device,
                 dist.get_backend())
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

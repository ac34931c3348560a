"""Data parallelism over ``torch.distributed`` (torchrun, Slurm): who this process is, and the few collectives
the pipeline needs.

A run is distributed when ``WORLD_SIZE`` > 1 in the environment (``torchrun`` sets it, with ``RANK``,
``LOCAL_RANK`` and the rendezvous address; under Slurm without torchrun, submitit's
``helpers.TorchDistributedEnvironment`` exports the same variables from the Slurm task). One process, one rank:
NCCL on GPUs, gloo on CPUs. Everything here is a no-op in a single process, so the pipeline calls it
unconditionally.

Why not DistributedDataParallel's module wrapper: the fine-tuning methods call the towers directly
(CLIPFit and FLYP encode text through ``model.clip``, the linear classifier trains on cached features), which a
wrapped module hides; the gradients are all-reduced instead in one flat buffer after each backward pass
(:func:`all_reduce_gradients`), the same sum DDP computes, for every method alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _from_slurm() -> None:
    """Export torchrun's variables from the tasks of a Slurm job step (or of submitit's local executor), through
    submitit's helper, unless torchrun set them. A Slurm allocation that runs one process (no ``srun``) stays one."""
    if "WORLD_SIZE" in os.environ:
        return
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1")) if "SLURM_PROCID" in os.environ else 1
    if max(slurm_tasks, int(os.environ.get("SUBMITIT_LOCAL_NTASKS", "1"))) <= 1:
        return
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:  # the slurm extra is not installed: run as one process per task
        return
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def world_from_env() -> World:
    """The world this process was started in (one process when nothing says otherwise)."""
    _from_slurm()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(device: torch.device) -> World:
    """Join the process group (idempotent); on GPUs each rank takes ``cuda:<local_rank>``."""
    world = world_from_env()
    if not world.distributed:
        return world
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend)
    return World(world.rank, world.size, world.local_rank, dist.get_backend())


def current() -> World:
    """The world of an initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                     dist.get_backend())
    return World()


def rank_device(device: torch.device, world: World) -> torch.device:
    """A rank's device: its own GPU on a multi-GPU node, else the device asked for."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def barrier() -> None:
    if current().distributed:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. the run directory that rank 0 chose)."""
    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(value: float) -> float:
    if not current().distributed:
        return value
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return float(tensor.item())


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if current().backend == "nccl" else torch.device("cpu")


def all_reduce_tensors(tensors: Sequence[torch.Tensor]) -> None:
    """Sum tensors over the ranks, in place, in one flat buffer: one collective however many (mixed dtypes are
    summed in the widest of them)."""
    if not current().distributed or not tensors:
        return
    flat = _flatten_dense_tensors(list(tensors)).to(_collective_device())
    dist.all_reduce(flat)
    for tensor, reduced in zip(tensors, _unflatten_dense_tensors(flat, list(tensors)), strict=True):
        tensor.copy_(reduced)


def all_reduce_gradients(parameters: Sequence[torch.nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks (a parameter without one counts as 0)."""
    if not current().distributed:
        return
    for param in parameters:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
    all_reduce_tensors([param.grad for param in parameters])


def shard(n: int, world: World | None = None) -> range:
    """The examples a rank scores: every ``size``-th from its rank (no padding: each example counted once)."""
    world = world or current()
    return range(world.rank, n, world.size)


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """The rows of every rank's :func:`shard`, back in dataset order (``n`` rows in all), on every rank."""
    world = current()
    if not world.distributed:
        return local
    device = _collective_device()
    longest = -(-n // world.size)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[:len(local)] = local.to(device)
    gathered = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(gathered, padded)
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
    for rank, rows in enumerate(gathered):
        count = len(range(rank, n, world.size))
        out[rank::world.size] = rows[:count].cpu()
    return out


def split_batch(indices: Sequence[int], world: World) -> list[int]:
    """A rank's share of one global batch: a contiguous slice, sizes differing by at most one."""
    base, extra = divmod(len(indices), world.size)
    start = world.rank * base + min(world.rank, extra)
    return list(indices[start:start + base + (1 if world.rank < extra else 0)])

"""Training in several processes under torchrun: the process group, DDP wrapping, sums over ranks.

Without a process group (a plain `python` run) every function here is a no-op:
`world()` is (0, 1), `all_sum` returns its input, `wrap` returns the model and
the loader as they were. Under `torchrun --nproc_per_node=N` (WORLD_SIZE = N > 1)
`init` joins the group (nccl for CUDA devices, gloo otherwise), `wrap` gives each
rank its share of every global batch and wraps the model in
DistributedDataParallel, and metrics are summed over ranks with `all_sum`, so
N processes train and report like one.
"""

import os
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from regulab.data.loader import TensorLoader


def world() -> tuple[int, int]:
    """(rank, world_size) of the running process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (a no-op without a process group)."""
    if world()[1] > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


def init(device: str) -> int:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); return the rank.

    The backend is nccl when device is a CUDA device ("cuda", "cuda:1"), gloo otherwise.
    Without torchrun this does nothing and returns 0.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank()


def device_for(name: str) -> str:
    """The device this process trains on: under torchrun, "cuda" becomes cuda:(rank % GPUs)."""
    rank, world_size = world()
    if world_size > 1 and name.startswith("cuda"):
        return f"cuda:{rank % torch.cuda.device_count()}"
    return name


def shared_path(path) -> Path:
    """Rank 0's path on every rank (so a default timestamped folder name is the same everywhere)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Path(path)
    box = [str(path)]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def from_rank0(value):
    """Rank 0's value (any picklable object) on every rank; the value itself without a group."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every process of the group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def destroy() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, train):
    """(model, train) for this process: as given alone, DDP-wrapped and sharded under torchrun.

    With world_size > 1 a TensorLoader made for one process is rebuilt with this
    process's rank (it takes every world_size-th example of each global batch; the
    batch size stays the global one) and the model is wrapped in
    DistributedDataParallel, which averages gradients over the processes. Other
    iterables of batches are left as they are: shard them yourself (DistributedSampler).
    """
    rank, world_size = world()
    if world_size == 1:
        return model, train
    if isinstance(train, TensorLoader) and train.world_size != world_size:
        train = TensorLoader(
            *train.tensors,
            batch_size=train.batch_size,
            shuffle=train.shuffle,
            seed=train.seed,
            drop_last=train.drop_last,
            rank=rank,
            world_size=world_size,
        )
    return nn.parallel.DistributedDataParallel(model), train

"""An in-memory loader: minibatches by index slicing of tensors already on the device.

For data that fits in memory (Fashion-MNIST is 188 MB as float32) this replaces
`DataLoader(TensorDataset(...))`, which collates every batch example by example
in Python. Here one permutation per epoch is drawn from a generator seeded with
(seed, epoch), so the order of any epoch can be reproduced without replaying the
epochs before it (what resuming from a checkpoint needs), and each batch is one
indexing operation.
"""

import torch

from regulab import _checks


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 63-bit seed for (seed, epoch, stream), well mixed so nearby inputs give unrelated seeds."""
    # SplitMix64 finalizer over the three numbers: cheap, deterministic, no collisions nearby.
    z = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & (
        2**64 - 1
    )
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) >> 1


class TensorLoader:
    """Iterate over minibatches of `tensors` (equal first dimension), reshuffled every epoch.

    Call `set_epoch(epoch)` before iterating (as with DistributedSampler): the order
    of epoch e is a permutation drawn from a CPU generator seeded with (seed, e),
    so runs are reproducible and an epoch can be replayed alone. Each batch is one
    `index_select` of those indices; with shuffle=False batches are slices of the
    tensors themselves (views, no copy).

    batch_size is the global batch: with world_size > 1 (DistributedDataParallel)
    each of the world_size ranks takes every world_size-th example of each global
    batch, starting at its rank, so the ranks together see exactly the batches of
    a single process. `batch_sizes[i]` is the global size of batch i, which a
    distributed loop needs to weight its share (the last batch may be smaller).
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise ValueError("tensors must be one or more tensors, such as x and y")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(
                "tensors must have the same length (first dimension); got "
                + ", ".join(str(len(t)) for t in tensors)
            )
        if n == 0:
            raise ValueError("tensors must hold at least one example; got tensors of length 0")
        if any(t.device != tensors[0].device for t in tensors):
            raise ValueError("tensors must be on one device; move them with .to(device) first")
        self.tensors = tensors
        self.batch_size = _checks.positive_int("batch_size", batch_size)
        self.shuffle = bool(shuffle)
        self.seed = _checks.non_negative_int("seed", seed)
        self.drop_last = bool(drop_last)
        self.world_size = _checks.positive_int("world_size", world_size)
        if not (isinstance(rank, int) and 0 <= rank < world_size):
            raise ValueError(f"rank must be an integer in [0, world_size={world_size}); got {rank}")
        self.rank = rank
        full, rest = divmod(n, self.batch_size)
        self.batch_sizes = [self.batch_size] * full + ([rest] if rest and not drop_last else [])
        if not self.batch_sizes:
            raise ValueError(
                f"batch_size must be at most the number of examples ({n}) when drop_last "
                f"is set; got {batch_size}"
            )
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.batch_sizes)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration yields."""
        self.epoch = _checks.non_negative_int("epoch", epoch)

    def __iter__(self):
        if not self.shuffle and self.world_size == 1:
            yield from _slices(self.tensors, self.batch_sizes)
            return
        device = self.tensors[0].device
        n = len(self.tensors[0])
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g).to(device)
        else:
            order = torch.arange(n, device=device)
        start = 0
        for size in self.batch_sizes:
            idx = order[start : start + size]
            if self.world_size > 1:  # this rank's share of the global batch
                idx = idx[self.rank :: self.world_size]
            # one gather per batch; measured faster than gathering the whole epoch at once
            yield tuple(t.index_select(0, idx) for t in self.tensors)
            start += size

    def __repr__(self) -> str:
        return (
            f"TensorLoader(n={len(self.tensors[0])}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, world_size={self.world_size})"
        )


def _slices(tensors, sizes):
    """Consecutive batches of the given sizes, as views (no copy)."""
    start = 0
    for size in sizes:
        yield tuple(t[start : start + size] for t in tensors)
        start += size

"""Losses, evaluation and weight statistics recorded by the training loop.

Losses follow the library's conventions: "cross_entropy" for classification,
"mse" (mean squared error) and "half_mse" (mean squared error / 2, whose
gradient is the residual; the demo's loss) for regression. Evaluation sums over
the data and divides once, so batch size and the number of processes do not
change the result (sums over processes go through `regulab.distributed.all_sum`).
"""

import torch
from torch.nn import functional as F

from regulab.distributed import all_sum, world


def _regression_pair(output: torch.Tensor, y: torch.Tensor):
    if output.ndim == y.ndim + 1 and output.shape[-1] == 1:
        output = output.squeeze(-1)
    return output, y.to(output.dtype)


def cross_entropy(output, y, reduction="mean"):
    return F.cross_entropy(output, y, reduction=reduction)


def mse(output, y, reduction="mean"):
    return F.mse_loss(*_regression_pair(output, y), reduction=reduction)


def half_mse(output, y, reduction="mean"):
    return F.mse_loss(*_regression_pair(output, y), reduction=reduction) / 2


LOSSES = {"cross_entropy": cross_entropy, "mse": mse, "half_mse": half_mse}
CLASSIFICATION = {"cross_entropy"}


def _batches(data, batch_size: int, rank: int, world_size: int):
    """Batches of data: a pair of tensors (sharded contiguously by rank) or any loader."""
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        n = len(x)
        lo, hi = n * rank // world_size, n * (rank + 1) // world_size
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            yield x[start:stop], y[start:stop]
    else:
        yield from data


@torch.no_grad()
def evaluate(model, data, loss: str, batch_size: int = 1024) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) of model on data, in eval mode, over all processes.

    data is (x, y) tensors or an iterable of (x, y) batches. Accuracy is given for
    classification losses only. The model's train/eval mode is restored afterwards.
    """
    rank, world_size = world()
    loss_fn = LOSSES[loss]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, count
    try:
        for x, y in _batches(data, batch_size, rank, world_size):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            out = model(x)
            sums[0] += loss_fn(out, y, reduction="sum").double()
            if loss in CLASSIFICATION:
                sums[1] += (out.argmax(-1) == y).sum()
            sums[2] += len(y)
    finally:
        model.train(was_training)
    total, correct, count = all_sum(sums).tolist()
    if count == 0:
        raise ValueError("evaluation data holds no examples")
    return total / count, (correct / count if loss in CLASSIFICATION else None)


def weight_tensors(model) -> list[torch.Tensor]:
    """The weights a penalty acts on: parameters with ndim >= 2 (not biases or norm scales)."""
    return [p for p in model.parameters() if p.ndim >= 2]


@torch.no_grad()
def weight_stats(model) -> tuple[float, float]:
    """(||w||, fraction of exactly-zero entries) over `weight_tensors(model)`."""
    weights = weight_tensors(model)
    if not weights:
        return 0.0, 0.0
    norms = torch.stack([torch.linalg.vector_norm(p).double() for p in weights])
    zeros = sum((p == 0).sum() for p in weights)
    size = sum(p.numel() for p in weights)
    return float(norms.square().sum().sqrt()), float(zeros) / size

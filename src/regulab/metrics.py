"""Losses, batches, evaluation and weight statistics recorded by the training loop.

Losses follow the library's conventions: "cross_entropy" for classification,
"mse" (mean squared error) and "half_mse" (mean squared error / 2, whose
gradient is the residual; the demo's loss) for regression. A loss may also be
any callable `(output, target) -> scalar mean loss`, such as
`nn.CrossEntropyLoss(weight=w)` or `nn.BCEWithLogitsLoss()`.

A batch is an (inputs, target) pair, or anything a `batch_fn(batch) -> (inputs,
target)` maps to one (dict batches). inputs is a tensor (`model(x)`), a tuple or
list (`model(*inputs)`) or a dict (`model(**inputs)`). Evaluation sums over the
data and divides once, so batch size and the number of processes do not change
the result (sums over processes go through `regulab.distributed.all_sum`).
"""

from collections.abc import Callable

import torch
from torch.nn import functional as F

from regulab.distributed import all_sum, world


def _regression_pair(output: torch.Tensor, y: torch.Tensor, name: str):
    """(output, y) of one shape: a trailing size-1 column of either is dropped to match the
    other ((N, 1) with (N,)); other shapes must be equal (never broadcast (N,) and (N, 1)
    into (N, N))."""
    if output.ndim == y.ndim + 1 and output.shape[-1] == 1:
        output = output.squeeze(-1)
    elif y.ndim == output.ndim + 1 and y.shape[-1] == 1:
        y = y.squeeze(-1)
    if output.shape != y.shape:
        raise ValueError(
            f"loss {name!r} needs output and target of one shape, (N,) or (N, K); got output "
            f"{tuple(output.shape)} and target {tuple(y.shape)}: reshape the model's output "
            "or the target to match"
        )
    return output, y.to(output.dtype)


def _classification_pair(output: torch.Tensor, y: torch.Tensor):
    """Refuse what torch's cross_entropy would read otherwise than meant: it needs output
    (N, C) with integer labels (N,) or class probabilities (N, C) (extra dims after C)."""
    labels = not y.is_floating_point() and y.shape == output.shape[:1] + output.shape[2:]
    if output.ndim >= 2 and (labels or (y.is_floating_point() and y.shape == output.shape)):
        return
    raise ValueError(
        "loss 'cross_entropy' needs output (N, C) and integer class labels (N,) or class "
        f"probabilities (N, C); got output {tuple(output.shape)} and target "
        f"{tuple(y.shape)} {str(y.dtype).removeprefix('torch.')}: give the model C outputs and "
        "integer labels, or for one logit per example with 0/1 float targets pass "
        "loss=nn.BCEWithLogitsLoss()"
    )


def cross_entropy(output, y, reduction="mean"):
    _classification_pair(output, y)
    try:
        return F.cross_entropy(output, y, reduction=reduction)
    except IndexError as e:  # a label outside [0, C), on the CPU (CUDA asserts instead)
        classes, low, high = output.shape[1], int(y.min()), int(y.max())
        raise ValueError(
            f"loss 'cross_entropy' needs class labels in [0, {classes}) for the model's "
            f"{classes} outputs; got labels {low} .. {high} in a batch: give the model one "
            "output per class, or relabel"
        ) from e


def mse(output, y, reduction="mean"):
    return F.mse_loss(*_regression_pair(output, y, "mse"), reduction=reduction)


def half_mse(output, y, reduction="mean"):
    return F.mse_loss(*_regression_pair(output, y, "half_mse"), reduction=reduction) / 2


LOSSES = {"cross_entropy": cross_entropy, "mse": mse, "half_mse": half_mse}
CLASSIFICATION = {"cross_entropy"}


def check_loss(loss) -> str | Callable:
    """Return loss if it is a name of LOSSES or a callable; else raise ValueError or TypeError."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(
                f"loss must be one of {', '.join(map(repr, LOSSES))} or a callable "
                f"(output, target) -> scalar; got {loss!r}"
            )
        return loss
    if not callable(loss):
        raise TypeError(
            f"loss must be a name ({', '.join(LOSSES)}) or a callable (output, target) -> "
            f"scalar mean loss, such as nn.CrossEntropyLoss(); got {type(loss).__name__}"
        )
    return loss


def mean_loss(loss, output, target) -> torch.Tensor:
    """The mean loss of a batch: LOSSES[loss] for a name, else loss(output, target), a scalar."""
    if isinstance(loss, str):
        value = LOSSES[loss](output, target)
    else:
        try:
            value = loss(output, target)
        except RuntimeError as e:
            _integer_target_hint(e, target)
            raise
    if not isinstance(value, torch.Tensor) or value.ndim != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"loss(output, target) must return a scalar tensor (the batch's mean loss); "
            f"got {shape}: reduce it with .mean()"
        )
    return value


def _integer_target_hint(error: RuntimeError, target) -> None:
    """Raise a TypeError saying what to do when a loss that needs float targets (BCE) got
    integer labels and torch could only say it cannot cast; else return."""
    dtype_fault = any(s in str(error) for s in ("can't be cast", "expected Float"))
    if isinstance(target, torch.Tensor) and not target.is_floating_point() and dtype_fault:
        raise TypeError(
            f"the loss needs float targets and got {str(target.dtype).removeprefix('torch.')} "
            f"ones ({str(error).strip().splitlines()[0]}): a loss such as "
            "nn.BCEWithLogitsLoss takes 0/1 floats, so pass y.float() (in batch_fn or the data)"
        ) from error


def sum_loss(loss, output, target) -> torch.Tensor:
    """The summed loss of a batch; for a callable, its mean times the batch's examples."""
    if isinstance(loss, str):
        return LOSSES[loss](output, target, reduction="sum")
    return mean_loss(loss, output, target) * examples(target)


def correct(output, target, loss) -> torch.Tensor | None:
    """[correct, 1 if the target suits accuracy else 0] of a batch, or None for no accuracy.

    Accuracy is counted for "cross_entropy"; for a callable loss when output is
    (N, C > 1) and target an integer (N,) (argmax), or when output and target are
    (N,) or (N, 1) and target 0/1 floats (BCE-style: logit > 0; a target not 0/1
    gives a 0 in the second entry, so no accuracy is reported).
    """
    if isinstance(loss, str) and loss not in CLASSIFICATION:
        return None
    if not isinstance(output, torch.Tensor) or not isinstance(target, torch.Tensor):
        return None
    one = torch.ones((), device=output.device)
    if output.ndim == 2 and output.shape[1] > 1 and target.ndim == 1:
        if target.is_floating_point():
            return None
        return torch.stack([(output.argmax(-1) == target).sum().to(one.dtype), one])
    if isinstance(loss, str) or not target.is_floating_point():
        return None
    output, target = (t[:, 0] if t.ndim == 2 and t.shape[1] == 1 else t for t in (output, target))
    if output.ndim != 1 or target.shape != output.shape:
        return None
    binary = ((target == 0) | (target == 1)).all().to(one.dtype)
    return torch.stack([((output > 0).to(target.dtype) == target).sum().to(one.dtype), binary])


def unpack(batch, batch_fn=None) -> tuple:
    """(inputs, target) of a batch: batch_fn(batch), or the batch itself as an (x, y) pair."""
    if batch_fn is not None:
        batch = batch_fn(batch)
        where = "batch_fn(batch)"
    else:
        where = "a batch without batch_fn"
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        kind = f"dict with keys {list(batch)}" if isinstance(batch, dict) else type(batch).__name__
        raise TypeError(
            f"{where} must be an (inputs, target) pair; got {kind}: pass "
            "batch_fn=lambda b: (b['x'], b['y']) or the names of your batch"
        )
    return batch[0], batch[1]


def to_device(obj, device):
    """obj with every tensor in it (a tensor, tuple, list or dict) moved to device."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def forward(model, inputs):
    """model(**inputs) for a dict, model(*inputs) for a tuple or list, else model(inputs)."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def examples(target) -> int:
    """The examples in a target: its first dimension (of a dict's or tuple's first tensor)."""
    if isinstance(target, dict):
        target = next(iter(target.values()))
    elif isinstance(target, tuple | list):
        target = target[0]
    return len(target)


def batches(data, batch_size: int, rank: int = 0, world_size: int = 1):
    """Batches of data: slices of tensors of equal length (sharded contiguously by rank), or
    the batches of any other iterable (a DataLoader, a TensorLoader)."""
    if (
        isinstance(data, tuple | list)
        and len(data) >= 2
        and all(isinstance(t, torch.Tensor) for t in data)
    ):
        n = len(data[0])
        lo, hi = n * rank // world_size, n * (rank + 1) // world_size
        for start in range(lo, hi, batch_size):
            stop = min(start + batch_size, hi)
            yield tuple(t[start:stop] for t in data)
    else:
        yield from data


@torch.no_grad()
def evaluate(
    model, data, loss, batch_size: int = 1024, batch_fn=None
) -> tuple[float, float | None]:
    """(mean loss, accuracy or None) of model on data, in eval mode, over all processes.

    data is (x, y) tensors or an iterable of batches; batch_fn(batch) -> (inputs,
    target) maps batches that are not (x, y) pairs (a tensor tuple is sliced into
    batches first). loss is a name of LOSSES or a callable (output, target) -> mean
    loss; for a callable the mean loss is the example-weighted mean of its per-batch
    means (exact for losses that are means over examples). Accuracy: see `correct`.
    The model's train/eval mode is restored afterwards.
    """
    loss = check_loss(loss)
    rank, world_size = world()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, correct, count, no-acc
    try:
        for batch in batches(data, batch_size, rank, world_size):
            inputs, y = to_device(unpack(batch, batch_fn), device)
            out = forward(model, inputs)
            sums[0] += sum_loss(loss, out, y).double()
            hits = correct(out, y, loss)
            n = examples(y)
            sums[1] += hits[0] if hits is not None else 0
            sums[2] += n
            sums[3] += 1 if hits is None else 1 - hits[1]
    finally:
        model.train(was_training)
    total, right, count, no_accuracy = all_sum(sums).tolist()
    if count == 0:
        raise ValueError("evaluation data holds no examples")
    return total / count, (right / count if no_accuracy == 0 else None)


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

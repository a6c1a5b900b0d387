"""The inputs of a training run, checked before its first step: the model, the optimizer
and the data, each data set on its first batch.

`check_data(name, model, data, loss)` runs the first batch of data through batch_fn,
the model (eval mode, fp32 as evaluation runs, no gradient) and the loss, and refuses
what the run could not use in one line naming the argument, before the first step
rather than after an epoch: no examples, tensors on the meta device, tensors of
unequal length, a shape the model refuses, targets the loss refuses, class labels
outside [0, C) for the model's C outputs (every label of tensor data). augment is
called only when the model refuses the batch as it is (augment may change the shape).
`fit` checks train, val and test with it (`check_fit_data`); the stacked runs of
`regulab.sweep` check train, `LambdaSearch` its data, val and test.

Only the first batch is read: a slice of tensors or of a TensorLoader's tensors, or
the first batch of a re-iterable such as a DataLoader (its generators restored after,
so its order is unchanged). An iterator, which reading would consume, is not checked.
The model's train/eval modes and torch's random state are left as they were.
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from regulab.data.loader import TensorLoader
from regulab.label_smoothing import LabelSmoothingCrossEntropy
from regulab.metrics import forward, mean_loss, to_device, unpack
from regulab.train_step import rng_fork

# callables whose integer labels lie in [0, C)
CLASS_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss, LabelSmoothingCrossEntropy)


def check_model(model) -> torch.device:
    """The device of model's parameters; TypeError for a non-module, ValueError for a model
    without parameters or with some on the meta device."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    params = list(model.parameters())
    if not params:
        raise ValueError(
            f"model must have parameters to train; its {type(model).__name__} has none"
        )
    if any(p.is_meta for p in params):
        raise ValueError(
            "model has parameters on the meta device (shapes without values): build it on a "
            "real device, or call model.to_empty(device='cpu') and initialize its weights"
        )
    return params[0].device


def check_optimizer(optimizer, model: nn.Module) -> None:
    """Refuse what is not an optimizer, or one that holds none of model's parameters."""
    if not isinstance(getattr(optimizer, "param_groups", None), list) or not callable(
        getattr(optimizer, "step", None)
    ):
        raise TypeError(
            "optimizer must be a torch optimizer such as torch.optim.SGD(model.parameters(), "
            f"lr=0.1); got {type(optimizer).__name__}"
        )
    own = {id(p) for p in model.parameters()}
    if not any(id(p) in own for g in optimizer.param_groups for p in g["params"]):
        raise ValueError(
            "optimizer holds none of model's parameters, so training would change nothing: "
            "build it from this model, e.g. torch.optim.SGD(model.parameters(), lr=0.1)"
        )


def check_fit_data(
    model,
    train,
    loss,
    *,
    val=None,
    test=None,
    eval_loss=None,
    batch_fn=None,
    augment=None,
    rows: int = 1024,
) -> None:
    """`fit`'s train, val and test, each on its first batch (val and test: at most `rows`
    examples, through eval_loss), before any step; ValueError or TypeError naming it."""
    if is_tensors(train):
        raise TypeError(
            "train must be a TensorLoader or an iterable of batches such as a DataLoader; got "
            f"a {type(train).__name__} of tensors: pass TensorLoader(x, y, batch_size=...)"
        )
    check_data("train", model, train, loss, batch_fn=batch_fn, augment=augment)
    for name, data in (("val", val), ("test", test)):
        if data is not None:
            check_data(
                name,
                model,
                data,
                loss if eval_loss is None else eval_loss,
                batch_fn=batch_fn,
                rows=rows,
            )


def check_data(
    name: str,
    model: nn.Module,
    data,
    loss,
    *,
    batch_fn=None,
    augment=None,
    rows: int = 1024,
) -> None:
    """Run the first batch of data (at most `rows` examples of tensors) through batch_fn,
    model (augment first if the model refuses it as it is) and loss; raise ValueError or
    TypeError naming `name` if any refuses it."""
    device = check_model(model)
    with rng_fork(device):  # batch_fn and augment may draw: the caller's state is kept
        batch = first_batch(name, data, rows)
        if batch is None:
            return
        _no_meta(name, batch)
        labels = None
        if batch_fn is None and is_tensors(_tensors_of(data)):
            labels = _tensors_of(data)[1]  # every label, not only the first batch's
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            with torch.no_grad():
                _check_batch(name, model, batch, loss, batch_fn, augment, labels)
        finally:
            for m, mode in modes.items():
                m.training = mode


def _check_batch(name, model, batch, loss, batch_fn, augment, labels) -> None:
    device = next(model.parameters()).device
    with _stage(name, "fails in batch_fn" if batch_fn is not None else "cannot be read", batch):
        inputs, y = to_device(unpack(batch, batch_fn), device)
    try:
        with _stage(name, f"fails in the model ({_first_layer(model)})", inputs):
            out = forward(model, inputs)
    except (ValueError, TypeError):
        if augment is None:
            raise
        # augment may change the shape: only then is it called (once) by the check
        with _stage(name, "fails in augment", inputs):
            inputs = augment(inputs)
        with _stage(name, f"fails in the model ({_first_layer(model)})", inputs):
            out = forward(model, inputs)
    check_labels(name, out, y if labels is None else labels, loss)
    with _stage(name, "fails in the loss", {"output": out, "target": y}):
        mean_loss(loss, out, y)


def check_labels(name: str, output, labels, loss) -> None:
    """For a classification loss: integer labels must lie in [0, C) for an output (N, C, ...)
    (or equal the loss's ignore_index); raise ValueError naming `name` otherwise."""
    if not ((isinstance(loss, str) and loss == "cross_entropy") or isinstance(loss, CLASS_LOSSES)):
        return
    if not (isinstance(output, torch.Tensor) and output.ndim >= 2):
        return
    if not isinstance(labels, torch.Tensor):
        return
    if labels.is_floating_point() or labels.is_complex() or labels.numel() == 0:
        return  # probabilities, or a dtype the loss itself refuses
    classes = output.shape[1]
    low, high = (int(v) for v in torch.aminmax(labels))  # one pass, one sync
    if low >= 0 and high < classes:
        return
    kept = labels[labels != getattr(loss, "ignore_index", -100)]  # torch's default: -100
    if kept.numel() and (kept.min() < 0 or kept.max() >= classes):
        low, high = int(kept.min()), int(kept.max())
        raise ValueError(
            f"{name}: class labels must be in [0, {classes}) for the model's {classes} outputs; "
            f"got labels {low} .. {high}: give the model one output per class, or relabel"
        )


def first_batch(name: str, data, rows: int = 1024):
    """The first batch of data: the first `rows` examples of tensors or a TensorLoader's
    first batch, the first batch of another iterable, or None for an iterator."""
    tensors = _tensors_of(data)
    if is_tensors(tensors):
        if isinstance(data, TensorLoader):
            rows = data.batch_size
        lengths = [len(t) for t in tensors]
        if len(set(lengths)) > 1:
            raise ValueError(f"{name} must hold tensors of one length; got lengths {lengths}")
        if lengths[0] == 0:
            raise ValueError(f"{name} holds no examples (its tensors have length 0)")
        return tuple(t[:rows] for t in tensors)
    if isinstance(data, Iterator):
        return None  # reading it would take the batch from the run
    if not isinstance(data, Iterable):
        raise TypeError(
            f"{name} must be (x, y) tensors, a TensorLoader or an iterable of batches such as "
            f"a DataLoader; got {type(data).__name__}"
        )
    with _generators_kept(data):
        batches = iter(data)
        batch = next(batches, _EMPTY)
        del batches  # a DataLoader's workers stop here
    if batch is _EMPTY:
        raise ValueError(f"{name} holds no batches")
    return batch


_EMPTY = object()


def _tensors_of(data):
    return data.tensors if isinstance(data, TensorLoader) else data


def is_tensors(data) -> bool:
    """True for a tuple or list of two or more tensors (what `metrics.batches` slices)."""
    return (
        isinstance(data, tuple | list)
        and len(data) >= 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


@contextmanager
def _generators_kept(loader):
    """Restore, on leaving, the torch generators of a DataLoader and of its samplers."""
    found = {}
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        for g in (
            getattr(owner, "generator", None),
            getattr(getattr(owner, "sampler", None), "generator", None),
        ):
            if isinstance(g, torch.Generator):
                found[id(g)] = (g, g.get_state())
    try:
        yield
    finally:
        for g, state in found.values():
            g.set_state(state)


def _no_meta(name: str, batch) -> None:
    if any(t.is_meta for t in _leaves(batch)):
        raise ValueError(
            f"{name} holds tensors on the meta device (shapes without values): load the data "
            "onto a real device"
        )


def _leaves(obj):
    """The tensors in a tensor, tuple, list or dict."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, tuple | list):
        for v in obj:
            yield from _leaves(v)


def describe(obj) -> str:
    """Shapes and dtypes of a tensor, or of the tensors in a tuple, list or dict."""
    if isinstance(obj, torch.Tensor):
        return f"{tuple(obj.shape)} {str(obj.dtype).removeprefix('torch.')}"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, tuple | list):
        return "(" + ", ".join(describe(v) for v in obj) + ")"
    return type(obj).__name__


def _first_layer(model: nn.Module) -> str:
    """The first layer with a parameter, as torch prints it: what the inputs meet first."""
    for name, m in model.named_modules():
        if any(True for _ in m.parameters(recurse=False)):
            return f"first layer {name or type(model).__name__}: {m!r}".replace("\n", " ")
    return type(model).__name__


@contextmanager
def _stage(name: str, what: str, given):
    """Turn an error of one stage of the check into one line naming `name`, the first batch's
    shapes, what failed on it and the error's first line (an out-of-memory error passes)."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except (ValueError, TypeError, RuntimeError, IndexError) as e:
        kind = TypeError if isinstance(e, TypeError) else ValueError
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise kind(
            f"{name}: the first batch, {describe(given)}, {what}: {type(e).__name__}: {text}"
        ) from e

"""Torch-native parts in a sweep: `nn.Dropout` layers, DataLoaders and loss callables.

- Dropout: the K stacked copies need each its own p, which torch's layers hold as
  a Python float. `swap_dropout` replaces `nn.Dropout` with regulab's `Dropout`
  and `nn.Dropout1d/2d/3d` with its `ChannelDropout` (whole channels zeroed, as
  torch does), whose p becomes a per-copy tensor (`set_dropout`). regulab draws uniform
  numbers and keeps u >= p where torch calls bernoulli_, so a seed gives other
  masks than torch's, with the same law. `nn.AlphaDropout` and
  `nn.FeatureAlphaDropout` (SELU networks) have no tensor-p form and are refused.
  `set_dropout(model, p, DROP_PATH)` does the same for regulab's `DropPath`.
- Data: `pairs` reads (x, y) tensors, a `TensorLoader` or a finite DataLoader of
  (x, y) batches into two tensors; `check_train` says what `fit_sweep` can iterate.
- Losses: `per_example` gives each example's loss of one copy (what `loss_se` needs).
"""

import torch
from torch import nn
from torch.func import vmap
from torch.utils.data import DataLoader, IterableDataset

from regulab.data.loader import TensorLoader
from regulab.layers import ChannelDropout, DropBlock2d, Dropout, DropPath
from regulab.metrics import LOSSES, mean_loss, unpack
from regulab.train_step import rng_fork

REFUSED = (nn.AlphaDropout, nn.FeatureAlphaDropout)
CHANNEL = {nn.Dropout1d: 2, nn.Dropout2d: None, nn.Dropout3d: 4}  # ndim of one example
SWEPT = (Dropout, ChannelDropout)  # the layers whose p a dropout sweep sets (not DropPath)
DROP_PATH = (DropPath,)  # the layers whose p a drop_path search sets
DROP_BLOCK = (DropBlock2d,)  # the layers whose p a drop_block search sets


def swap_dropout(model: nn.Module) -> int:
    """Replace model's torch dropout layers in place (see the module docstring); return how many.

    Raises ValueError naming an AlphaDropout layer, before anything is replaced.
    """
    named = list(model.named_modules())
    for name, m in named:
        if isinstance(m, REFUSED):
            raise ValueError(
                f"param 'dropout': layer {name!r} is {type(m).__name__}, which a sweep cannot "
                "give a per-copy p; sweep nn.Dropout, nn.Dropout1d/2d/3d or regulab.Dropout"
            )
    count = 0
    for name, m in named:
        if type(m) is nn.Dropout:
            new = Dropout(m.p)
        elif type(m) in CHANNEL:
            new = ChannelDropout(m.p, CHANNEL[type(m)])
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, new)
        count += 1
    return count


def set_dropout(model: nn.Module, p: float, layers=SWEPT) -> int:
    """Give every layer of model whose type is one of `layers` drop probability p as a tensor
    buffer, so that stacking gives each copy its own p; return how many there are."""
    count = 0
    for module in model.modules():
        if type(module) in layers:
            if "p" in module.__dict__:
                del module.__dict__["p"]
            p_tensor = torch.tensor(float(p), dtype=torch.float64)  # cast to x's dtype on use
            module.register_buffer("p", p_tensor, persistent=False)
            count += 1
    return count


def check_train(train, vary: bool) -> None:
    """Refuse a `fit_sweep` train argument it cannot iterate, in one line saying what to pass."""
    if isinstance(train, TensorLoader):
        return
    if isinstance(train, tuple | list) and train and isinstance(train[0], torch.Tensor):
        raise TypeError(
            "train must be a TensorLoader or an iterable of (x, y) batches; got a "
            f"{type(train).__name__} of tensors: pass TensorLoader(x, y, batch_size=...)"
        )
    if not hasattr(train, "__iter__"):
        raise TypeError(
            "train must be a TensorLoader or an iterable of (x, y) batches such as a "
            f"DataLoader; got {type(train).__name__}"
        )
    if vary:
        raise ValueError(
            "train: vary=True gives each copy its own batch order, which needs a TensorLoader; "
            f"got {type(train).__name__}: pass TensorLoader(x, y, ...) or vary=False"
        )


def is_pair(data) -> bool:
    """True for (x, y) tensors (a tuple or list of two)."""
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


def pairs(data, name: str, batch_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) tensors of data: (x, y) tensors, a TensorLoader (its first two tensors), or a
    finite DataLoader or other sized iterable of batches, read once (batch_fn maps each);
    a DataLoader over a map-style Dataset is read in the dataset's order."""
    if is_pair(data):
        if len(data[0]) != len(data[1]):
            raise ValueError(
                f"{name}: x and y must hold the same number of examples; "
                f"got {len(data[0])} and {len(data[1])}"
            )
        return data[0], data[1]
    if isinstance(data, TensorLoader):
        return data.tensors[0], data.tensors[1]
    try:
        len(data)
    except TypeError:
        raise TypeError(
            f"{name} must be (x, y) tensors, a TensorLoader or a DataLoader over a sized "
            f"Dataset; got {type(data).__name__}, which has no length to read it by: "
            "pass (x, y) tensors"
        ) from None
    if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
        # the dataset's own order: shuffling is the sweep's loader's job, seeded by the run
        data = DataLoader(
            data.dataset, batch_size=data.batch_size or 256, collate_fn=data.collate_fn
        )
    with rng_fork(torch.device("cpu")):  # random transforms must not move the caller's state
        return _read(data, name, batch_fn)


def _read(data, name: str, batch_fn) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for batch in data:
        x, y = unpack(batch, batch_fn)
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
            raise TypeError(
                f"{name}: a sweep reads a DataLoader's batches into (x, y) tensors; got "
                f"inputs of type {type(x).__name__}: pass (x, y) tensors"
            )
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError(f"{name} holds no examples")
    return torch.cat(xs), torch.cat(ys)


def per_example(loss):
    """fn(output, y) -> each example's loss (B,) for one copy. A name of LOSSES: its
    reduction="none" values summed over each example's outputs; a callable: the loss of
    each example alone, loss(output[i:i+1], y[i:i+1]) (whose mean is the loss, for a loss
    that is a mean over examples)."""
    if isinstance(loss, str):
        fn = LOSSES[loss]
        return lambda out, y: fn(out, y, reduction="none").reshape(len(y), -1).sum(1)
    one = lambda o, t: mean_loss(loss, o[None], t[None])  # noqa: E731
    return vmap(one)

"""A seeded split of training data into a training part and a validation part."""

import math
from numbers import Real

import torch

from regulab import _checks


def train_val_split(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int):
    """Split (x, y) at random into ((x_train, y_train), (x_val, y_val)).

    The validation part has round(val_fraction * n) examples, drawn with
    torch.randperm from a generator seeded with `seed`; the same seed gives the
    same split. Each part keeps the original order of its examples.
    val_fraction = 0 gives ((x, y), None): the same tensors, no validation part.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"x and y must be tensors; got {type(x).__name__} and {type(y).__name__}")
    if len(x) != len(y):
        raise ValueError(
            f"x and y must have the same number of examples; got {len(x)} and {len(y)}"
        )
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, Real)
        or not math.isfinite(val_fraction)
        or not 0 <= val_fraction < 1
    ):
        raise ValueError(f"val_fraction must be a number in [0, 1); got {val_fraction!r}")
    _checks.non_negative_int("seed", seed)
    if val_fraction == 0:
        return (x, y), None
    n = len(x)
    n_val = round(val_fraction * n)
    if n_val == 0 or n_val == n:
        empty = "validation" if n_val == 0 else "training"
        raise ValueError(
            f"val_fraction={val_fraction} of {n} examples leaves the {empty} part empty "
            f"(round({val_fraction} * {n}) = {n_val}); choose val_fraction so that "
            f"1 <= round(val_fraction * n) <= n - 1, or val_fraction=0 for no validation"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_index = order[:n_val].sort().values
    train_index = order[n_val:].sort().values
    return (x[train_index], y[train_index]), (x[val_index], y[val_index])

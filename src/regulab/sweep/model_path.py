"""Your own model and data -> the regularization path, one row per strength.

The same rows (`report.PATH_COLUMNS`), splits and metrics as a recipe's path
(`path`): holdout (the K copies train on data and are scored on val) or k-fold
(data cut into `folds` parts from a permutation seeded by seed; for each part the
copies train on the others and are scored on it, val_loss is the mean over parts
and val_loss_se their standard error; then the copies are refit on all of data for
the train / test columns). Everything is read into (x, y) tensors first: a
DataLoader once, in its own order (its batch_fn applied), so that folds can be cut
and every copy sees the same minibatches.
"""

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch.utils.data import RandomSampler

from regulab.data.loader import TensorLoader
from regulab.data.split import train_val_split
from regulab.data_checks import check_data
from regulab.sweep import memory
from regulab.sweep.engine import Settings, fit_sweep
from regulab.sweep.native import pairs
from regulab.train_step import rng_fork


@dataclass
class Data:
    """The data of one search, as tensors on the device."""

    train: TensorLoader  # what the copies train on (the folds are cut from its tensors)
    val: tuple | None  # (x, y) scored for the choice when folds = 0
    test: tuple | None  # (x, y), only reported


def resolve_data(data, val, val_fraction, test, s: Settings, seed: int, folds: int, device):
    """`Data` from LambdaSearch's arguments; ValueError or TypeError naming the argument.

    data: (x, y) tensors (batches of s.train.batch_size, order seeded by seed), a
    TensorLoader (its first two tensors, batch size, order and seed), or a DataLoader
    (read once; its batch size, shuffle and drop_last; order seeded by seed).
    """
    if folds and (val is not None or val_fraction):
        raise ValueError(
            f"val: folds={folds} cuts the validation folds from data; pass val or "
            "val_fraction only with folds=0"
        )
    if isinstance(data, TensorLoader):
        like = data
    else:
        batch_size = getattr(data, "batch_size", None) or s.train.batch_size
        shuffle = not hasattr(data, "sampler") or isinstance(data.sampler, RandomSampler)
        like = {"batch_size": batch_size, "shuffle": shuffle, "seed": seed}
        like["drop_last"] = bool(getattr(data, "drop_last", False))
    x, y = pairs(data, "data", s.batch_fn)
    if val_fraction:
        (x, y), val = train_val_split(x, y, val_fraction, seed)
    elif val is not None:
        val = pairs(val, "val", s.batch_fn)
    elif not folds:
        raise ValueError(
            "val: LambdaSearch chooses on validation data: pass val=(x_val, y_val) or "
            "val_fraction=0.2, or folds=K for K-fold cross-validation"
        )
    test = pairs(test, "test", s.batch_fn) if test is not None else None
    x, y = x.to(device), y.to(device)
    return Data(
        train=loader_like(like, x, y),
        val=tuple(t.to(device) for t in val) if val is not None else None,
        test=tuple(t.to(device) for t in test) if test is not None else None,
    )


def loader_like(like, x, y) -> TensorLoader:
    """A TensorLoader over (x, y) with the batch size, order and seed of like (a
    TensorLoader or a dict of those settings)."""
    get = like.get if isinstance(like, dict) else lambda k: getattr(like, k)
    return TensorLoader(
        x,
        y,
        batch_size=get("batch_size"),
        shuffle=get("shuffle"),
        seed=get("seed"),
        drop_last=get("drop_last"),
    )


def compute_rows(model, param, values, data: Data, s: Settings, *, folds=0, seed=0, **runtime):
    """The path: one row per value (ascending as given), keys `PATH_COLUMNS` (and
    val_loss_folds for folds >= 2). seed replaces s.train.seed; runtime: vary, on_epoch."""
    s = dataclasses.replace(s, train=dataclasses.replace(s.train, seed=seed), **runtime)
    s = dataclasses.replace(s, batch_fn=None)  # the data was read into (x, y) already
    loss = s.loss_function()
    x, y = data.train.tensors[:2]
    per_fold = []
    for part in folds_of(len(x), folds, seed, x.device) if folds else []:
        keep = torch.ones(len(x), dtype=torch.bool, device=x.device)
        keep[part] = False
        stacked = fit_sweep(model, param, values, loader_like(data.train, x[keep], y[keep]), s)
        per_fold.append((stacked.evaluate((x[part], y[part]), loss), stacked.diverged_epoch))
    stacked = fit_sweep(model, param, values, data.train, s)
    n_eval = s.train.eval_train or len(x)
    train_m = stacked.evaluate((x[:n_eval], y[:n_eval]), loss)
    test_m = stacked.evaluate(data.test, loss) if data.test is not None else None
    if folds:
        val, diverged = cross_validated(per_fold, stacked.diverged_epoch)
    else:
        val, diverged = stacked.evaluate(data.val, loss), stacked.diverged_epoch
    return rows(values, stacked, diverged, s.train.epochs, train_m, val, test_m)


def cross_validated(per_fold, diverged) -> tuple[dict, torch.Tensor]:
    """k-fold's validation metrics from each fold's (metrics, diverged_epoch): loss and
    accuracy the means over folds, loss_se the standard error over folds, folds the
    (folds, K) losses; and diverged (the final fit's) merged with the folds' epochs."""
    val_loss = torch.stack([m["loss"] for m, _ in per_fold])  # (folds, K)
    accuracies = [m["accuracy"] for m, _ in per_fold]
    val = {
        "loss": val_loss.mean(0),
        "loss_se": val_loss.std(0, correction=1) / math.sqrt(len(per_fold)),
        "accuracy": None if accuracies[0] is None else torch.stack(accuracies).mean(0),
        "folds": val_loss,
    }
    for _, epoch in per_fold:
        diverged = torch.maximum(diverged, epoch)
    return val, diverged


def rows(values, stacked, diverged, epochs: int, train_m, val, test_m, closed=None) -> list[dict]:
    """The rows of a path from the metrics of the K copies (each a dict of (K,) tensors;
    val may hold "folds", the (folds, K) losses); a diverged row keeps lambda and status.
    closed: the exact ridge solutions' (||w||, distance of the SGD weights), (K,) each."""
    w_norm, zeros = stacked.weight_stats()
    # as `fit`: non-finite final metrics also mean diverged (e.g. blown up in the last step)
    finite = train_m["loss"].isfinite() & val["loss"].isfinite() & w_norm.isfinite()
    diverged = torch.where((diverged == 0) & ~finite.cpu(), epochs, diverged)
    test_m = test_m or {"loss": None, "accuracy": None}
    out = []
    for k, lam in enumerate(values):
        row = {
            "lambda": lam,
            "status": "diverged" if diverged[k] else "completed",
            "train_loss": _num(train_m["loss"], k),
            "train_accuracy": _num(train_m["accuracy"], k),
            "val_loss": _num(val["loss"], k),
            "val_loss_se": _num(val["loss_se"], k),
            "val_accuracy": _num(val["accuracy"], k),
            "test_loss": _num(test_m["loss"], k),
            "test_accuracy": _num(test_m["accuracy"], k),
            "w_norm": _num(w_norm, k),
            "zero_fraction": _num(zeros, k),
            "closed_form_w_norm": _num(closed[0], k) if closed else None,
            "closed_form_distance": _num(closed[1], k) if closed else None,
        }
        if "folds" in val:
            row["val_loss_folds"] = [_num(f, k) for f in val["folds"]]
        if diverged[k]:
            row = {key: (v if key in ("lambda", "status") else None) for key, v in row.items()}
        out.append(row)
    return out


def folds_of(n: int, folds: int, seed: int, device) -> list[torch.Tensor]:
    """`folds` disjoint index sets covering range(n), from a permutation seeded by seed."""
    if not 2 <= folds <= n:
        raise ValueError(f"folds must be between 2 and the {n} training examples; got {folds}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(device)
    return list(order.tensor_split(folds))


def check(model, data: Data, s: Settings) -> None:
    """data, val and test on their first batch through model and the loss (`data_checks`):
    one line naming the argument the run could not use, before any copy trains."""
    for name, part in (("data", data.train), ("val", data.val), ("test", data.test)):
        if part is not None:
            check_data(name, model, part, s.loss_function())


def check_memory(model, data: Data, k: int, s: Settings, device, max_memory=None) -> None:
    """Raise ValueError when k copies of model would not fit (`memory.estimate`) into
    max_memory GiB, or 90 % of the free memory of device."""
    batch = data.train.tensors[0][: data.train.batch_size]
    with rng_fork(torch.device(device)):  # the estimate runs one forward in training mode
        need = memory.estimate(model, batch, k, memory.states_per_parameter(s.optim))["total"]
    limit = max_memory * memory.GiB if max_memory is not None else memory.available(device)
    if limit is not None and need > (limit if max_memory is not None else 0.9 * limit):
        raise ValueError(
            f"grid: {k} copies of the model need an estimated {need / memory.GiB:.2f} GiB, "
            f"more than {'max_memory' if max_memory is not None else 'the free memory'} "
            f"({limit / memory.GiB:.2f} GiB): use fewer strengths or smaller batches"
        )


def _num(t, k):
    if t is None:
        return None
    v = float(t[k])
    return v if math.isfinite(v) else None

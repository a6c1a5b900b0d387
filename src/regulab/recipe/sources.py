"""A recipe's data as the splits `fit` trains on: a bundled data set (`data.name`), arrays
in a file of yours (`data.path`) or what your function returns (`data.factory`).

A file gives the arrays `data.arrays` names (x, y; optionally x_val, y_val and x_test,
y_test), read without pickle (`regulab.data.arrays`). A factory, called with
`data.kwargs`, returns {"train": ..., "val": ..., "test": ...} ("val" and "test"
optional), each an (x, y) pair of tensors or arrays or a torch Dataset of (x, y) items,
read into tensors once. Without a test set, `data.test_fraction` of train is held out
with `data.seed`; then, without a validation set, `data.val_fraction` of the rest, as for
the bundled digits. NaN or inf in the inputs or targets is refused as they are read.
Inputs become float32. The task is `data.task`, or with "auto" the
targets' dtype: integer (or bool) targets are class labels (classes = largest label + 1,
int64), floating targets are regressed (float32, one output per target column).
"""

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from regulab.data import arrays, train_val_split
from regulab.errors import DataUnavailable, RecipeError
from regulab.recipe import rules
from regulab.recipe.imports import call, resolve_callable
from regulab.recipe.schema import ARRAY_KEYS, BN_MODELS, CLASSIFICATION_DATASETS, Recipe

SPLITS = {"train": ("x", "y"), "val": ("x_val", "y_val"), "test": ("x_test", "y_test")}


@dataclass
class Splits:
    """Tensors of one data set: train, validation (None without one) and test, each (x, y)."""

    train: tuple
    val: tuple | None
    test: tuple
    num_classes: int  # classes; regression: outputs (1 per target column)
    task: str = "classification"  # or "regression"
    files: dict | None = None  # Fashion-MNIST, MNIST: {"folder": read, "md5": {file: md5}}

    def to(self, device) -> "Splits":
        move = lambda pair: None if pair is None else tuple(t.to(device) for t in pair)  # noqa: E731
        return Splits(
            move(self.train), move(self.val), move(self.test), self.num_classes, self.task,
            self.files,
        )  # fmt: skip


def load_data(recipe: Recipe, seed: int) -> Splits:
    """The recipe's data, split; data.seed (plus the run's seed with vary_seed) fixes it."""
    name = rules.bundled(recipe.data)
    check_root(recipe, name)
    if name is None:
        parts, task, outputs, where = own_data(recipe, seed)
        splits = Splits(parts["train"], parts["val"], parts["test"], outputs, task)
        check_task(recipe, splits, where)
        return splits
    train, val, test = _bundled(recipe, name, seed)
    task = "classification" if name in CLASSIFICATION_DATASETS else "regression"
    files = _images(name, recipe.data.root or None, recipe.data.download)[2] if name in (
        "fashion_mnist", "mnist") else None  # fmt: skip
    return Splits(train, val, test, 10 if task == "classification" else 1, task, files)


def _bundled(recipe: Recipe, name: str, seed: int) -> tuple:
    """(train, val, test) of a bundled data set."""
    from regulab.data import digits, synthetic_linear

    d = recipe.data
    data_seed = d.seed + (seed if d.vary_seed else 0)
    where = f"data.name {name}"
    if name in ("fashion_mnist", "mnist"):
        (x, y), test, _ = _images(name, d.root or None, d.download)
    elif name == "digits":
        x_all, y_all = digits()
        (x, y), test = _hold_out(x_all.unsqueeze(1), y_all, d.test_fraction, data_seed, "test",
                                 where)  # fmt: skip
    elif name == "synthetic_linear":
        g = torch.Generator().manual_seed(data_seed)
        x, y = synthetic_linear(d.n_train, d.num_inputs, generator=g)
        test = synthetic_linear(d.n_test, d.num_inputs, generator=g)
    else:  # line: y = 3x + 5 + N(0, 1), x ~ U(0, 10)
        g = torch.Generator().manual_seed(data_seed)
        x_all = torch.rand(d.n, 1, generator=g, dtype=torch.float64) * 10
        y_all = 3 * x_all[:, 0] + 5 + torch.randn(d.n, generator=g, dtype=torch.float64)
        (x, y), test = _hold_out(x_all.float(), y_all.float(), d.test_fraction, data_seed,
                                 "test", where)  # fmt: skip
    return (*_hold_out(x, y, d.val_fraction, data_seed, "val", where), test)


def check_root(recipe: Recipe, name: str | None) -> None:
    """An explicit data.root (--data-dir) is used or refused, never replaced by another folder:
    it must be a folder, and for Fashion-MNIST or MNIST hold the four files, or none of them
    with data.download on (then they are downloaded into it)."""
    from regulab.data import mnist_files

    d = recipe.data
    if d.root and not Path(d.root).is_dir():
        raise RecipeError(
            f"data.root (--data-dir) must be a folder; got {d.root!r}: no such folder"
        )
    if not d.root or name not in ("fashion_mnist", "mnist"):
        return
    folder = name.replace("_", "-")
    problem = mnist_files.missing_in(folder, d.root)
    empty = not mnist_files.holds_any(folder, d.root)
    if problem and not (empty and d.download):
        fix = "set it to the folder holding the four files, or leave it out"
        if empty:
            fix = "set data.download = true to download them into it, or " + fix
        raise RecipeError(f"data.root (--data-dir): {problem}; {fix}")


def check_task(recipe: Recipe, splits: Splits, where: str) -> None:
    """Your data, once read: the loss fits its task, early stopping has what it watches, and
    a bundled model takes its inputs. where: how the errors name the data."""
    problem = rules.loss_problem(recipe, splits.task) or rules.monitor_problem(recipe, splits.task)
    if problem:
        raise RecipeError(f"{problem} (the task of {where})")
    if recipe.early_stopping.patience and splits.val is None:
        raise RecipeError(
            f"early_stopping.patience > 0 needs a validation set; {where} gives none and "
            "data.val_fraction is 0"
        )
    x = splits.train[0]
    m = recipe.model
    if not m.factory and m.name in BN_MODELS and x.ndim != 4:
        raise RecipeError(
            f"model.name {m.name} needs images (N, C, H, W); {where} has inputs of shape "
            f"{tuple(x.shape)} (use linear or mlp, or your own model.factory)"
        )


def load_checked(recipe: Recipe, seed: int) -> Splits:
    """`load_data`, with files not found, downloads failed or corrupt files as DataUnavailable
    (a recipe's own mistakes stay RecipeError)."""
    try:
        return load_data(recipe, seed)
    except RecipeError:
        raise
    except (OSError, ValueError) as e:
        raise DataUnavailable(str(e)) from e


@lru_cache(maxsize=2)
def _images(name: str, root: str | None, download: bool):
    """Fashion-MNIST or MNIST as float32 (N, 1, 28, 28) in [0, 1], and the files read (their
    folder and md5s); read once per process."""
    from regulab.data import fashion_mnist, mnist, mnist_files

    (x, y), (xt, yt) = (fashion_mnist if name == "fashion_mnist" else mnist)(
        root, download=download
    )
    files = mnist_files.checksums(name.replace("_", "-"), root)
    return ((x.float() / 255).unsqueeze(1), y), ((xt.float() / 255).unsqueeze(1), yt), files


def file_path(recipe: Recipe) -> Path:
    """`data.path` as an absolute path: a relative one is relative to the recipe's folder."""
    return Path(recipe.base).resolve() / recipe.data.path


def own_data(recipe: Recipe, seed: int) -> tuple[dict, str, int, str]:
    """({"train": (x, y), "val": (x, y) or None, "test": (x, y)}, task, classes or outputs,
    how errors name the data) of a recipe with data.path or data.factory."""
    d = recipe.data
    parts, where = _from_file(recipe) if d.path else _from_factory(recipe)
    for split, (x, y) in parts.items():
        if len(x) != len(y):
            raise RecipeError(
                f"{where}: {split} x and y must have as many examples; got {len(x)} and {len(y)}"
            )
        if len(x) == 0:
            raise RecipeError(f"{where}: {split} is empty (0 examples)")
        if x.shape[1:] != parts["train"][0].shape[1:]:
            raise RecipeError(
                f"{where}: {split} x must have examples of train's shape "
                f"{tuple(parts['train'][0].shape[1:])}; got {tuple(x.shape[1:])}"
            )
    task, outputs = _task(recipe, parts, where)
    parts = {k: (x.float(), _target(y, task)) for k, (x, y) in parts.items()}
    for split, pair in parts.items():  # finite as read (`arrays`), but float64 may overflow
        for name, t in zip(("x", "y"), pair, strict=True):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise RecipeError(
                    f"{where}: {split} {name} holds values beyond float32's range "
                    f"(+-3.4e38), which become inf: rescale them"
                )
    data_seed = d.seed + (seed if d.vary_seed else 0)
    x, y = parts["train"]
    if "test" not in parts:
        (x, y), parts["test"] = _hold_out(x, y, d.test_fraction, data_seed, "test", where)
    if "val" in parts:
        parts["train"] = (x, y)
    else:
        parts["train"], parts["val"] = _hold_out(x, y, d.val_fraction, data_seed, "val", where)
    return parts, task, outputs, where


def _from_file(recipe: Recipe) -> tuple[dict, str]:
    names, file = recipe.data.arrays, file_path(recipe)
    where = f"data.path {file}"
    try:
        present = arrays.array_names(file)
    except FileNotFoundError:
        raise RecipeError(
            f"data.path: no file {file} (a relative path is relative to the recipe's folder "
            f"{Path(recipe.base).resolve()})"
        ) from None
    except ValueError as e:
        raise RecipeError(f"data.path: {e}") from None
    for key in ARRAY_KEYS:
        if key in names and names[key] not in present:
            raise RecipeError(
                f"data.arrays.{key} names {names[key]!r}, which {file} does not hold; "
                f"it has: {', '.join(present) or 'no arrays'}"
            )
    try:
        read = arrays.read_arrays(file, list(names.values()))
    except ValueError as e:
        raise RecipeError(f"data.path: {e}") from None
    parts = {s: (read[names[kx]], read[names[ky]]) for s, (kx, ky) in SPLITS.items() if kx in names}
    return parts, where


def _from_factory(recipe: Recipe) -> tuple[dict, str]:
    d = recipe.data
    where = f"data.factory {d.factory!r}"
    make = resolve_callable(d.factory, "data.factory", recipe.base)
    out = call(make, d.kwargs, "data.kwargs", d.factory, "data.factory")
    if not isinstance(out, dict) or "train" not in out or not out.keys() <= SPLITS.keys():
        got = f"a dict with keys {sorted(out)}" if isinstance(out, dict) else type(out).__name__
        raise RecipeError(
            f"{where} must return a dict with 'train' and optionally 'val' and 'test', each an "
            f"(x, y) pair or a Dataset of (x, y) items; it returned {got}"
        )
    parts = {}
    for split, data in out.items():
        if data is None and split != "train":
            continue
        try:
            parts[split] = arrays.pair_tensors(data, split)
        except ValueError as e:
            raise RecipeError(f"{where}: {e}") from None
    return parts, where


def _task(recipe: Recipe, parts: dict, where: str) -> tuple[str, int]:
    """(task, classes or outputs) from data.task, or from train's targets with "auto"."""
    ys = [y for _, y in parts.values()]
    task = recipe.data.task
    if task == "auto":
        task = "regression" if ys[0].is_floating_point() else "classification"
    if task == "regression":
        return task, math.prod(ys[0].shape[1:])
    for y in ys:
        if y.ndim != 1:
            raise RecipeError(
                f"{where}: class labels must be one per example, shape (N,); got y of shape "
                f"{tuple(y.shape)} (data.task = 'regression' regresses columns)"
            )
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise RecipeError(
                f"{where}: data.task = 'classification' needs whole-number class labels; "
                f"got {y.dtype} values such as {y[y != y.round()][0].item():g}"
            )
        if y.min() < 0:
            raise RecipeError(f"{where}: class labels must be >= 0; got {int(y.min())}")
    return task, int(max(y.max() for y in ys)) + 1


def _target(y: torch.Tensor, task: str) -> torch.Tensor:
    return y.long() if task == "classification" else y.float()


def _hold_out(x, y, fraction: float, seed: int, split: str, where: str):
    """(rest, held out) of (x, y): round(fraction * n) examples, drawn with seed."""
    n, held = len(x), round(fraction * len(x))
    if split == "val" and fraction == 0:
        return (x, y), None
    if not 0 < held < n:
        key = f"data.{split}_fraction"
        raise RecipeError(
            f"{where}: {key} = {fraction} of the {n} examples holds out {held}; "
            f"choose {key} so that 1 <= round({key} * {n}) <= {n - 1}, or give a {split} set"
        )
    return train_val_split(x, y, fraction, seed)

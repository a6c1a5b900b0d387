"""A recipe and a grid of strengths -> the regularization path, one row per strength.

Holdout (folds = 0): the K models train on the recipe's training split and are
scored on its validation split. k-fold: training and validation splits are
pooled and cut into `folds` parts (shuffled with data.seed); for each part the K
models train on the others and are scored on it; then the K models are refit on
the whole pool for the train / test columns. The test split is only reported.
For linear regression each row also gives the exact ridge solution's ||w|| and
the SGD weights' distance from it (`regulab.ridge_regression`), which says whether SGD had
converged.
"""

import dataclasses
import math

import torch
from torch import nn

from regulab import recipe as recipes
from regulab.bn_sparsity import bn_layers
from regulab.layers import Dropout
from regulab.metrics import unpack
from regulab.recipe import RecipeError, build
from regulab.sweep import memory, model_path
from regulab.sweep.engine import PARAMS, Settings, decayed_names, fit_sweep

DROPOUT_MODELS = ("mlp", "vgg_bn")


def settings(
    recipe: recipes.Recipe, splits: build.Splits, steps_per_epoch: int, seed: int, **runtime
) -> Settings:
    """The engine's settings: the recipe's own sections, the run's seed as train.seed, and
    the schedule, augmentation, loss and batch_fn as `regulab train` builds them. runtime:
    on_epoch, vary, first (see `Settings`)."""
    loss = build.build_loss(recipe, splits.train[0].device)
    return Settings(
        optim=recipe.optim,
        penalty=recipe.penalty,
        slim=recipe.slim,
        train=dataclasses.replace(recipe.train, seed=seed),
        schedule=build.build_schedule(recipe, steps_per_epoch),
        augment=build.build_augment(recipe, splits),
        loss=None if isinstance(loss, str) else loss,  # a name stays in train.loss
        batch_fn=build.build_batch_fn(recipe),
        **runtime,
    )


def check(recipe: recipes.Recipe, param: str, values) -> None:
    """Refuse what the sweep cannot do with this recipe, naming the setting."""
    if param not in PARAMS:
        raise RecipeError(f"--param must be one of {', '.join(PARAMS)}; got {param!r}")
    m = recipe.model  # a model.factory's model is checked when it is built (`_check_model`)
    if param == "dropout":
        if not m.factory and m.name not in DROPOUT_MODELS:
            raise RecipeError(
                f"--param dropout: model.name {m.name!r} has no dropout layers "
                f"(dropout can be swept for {', '.join(DROPOUT_MODELS)})"
            )
        if max(values) >= 1:
            raise RecipeError(f"--grid: dropout p must be in [0, 1); got {max(values):g}")
    if param == "bn_sparsity" and not m.factory and m.name not in ("vgg_bn", "resnet_bn"):
        raise RecipeError(
            f"--param bn_sparsity: model.name {m.name!r} has no BatchNorm layers "
            "(bn_sparsity can be swept for vgg_bn and resnet_bn)"
        )
    if getattr(recipe.train, "precision", "fp32") != "fp32":
        raise RecipeError(
            "train.precision: the sweep trains its stacked copies in fp32 only; got "
            f"{recipe.train.precision!r} (use --set train.precision=fp32)"
        )
    if recipe.early_stopping.patience:
        raise RecipeError(
            "early_stopping.patience: the sweep trains every strength for train.epochs "
            f"and does not stop early; got {recipe.early_stopping.patience} "
            "(use --set early_stopping.patience=0)"
        )


def build_models(recipe, splits, param, count: int, seed: int, vary: bool, first: int = 0):
    """One model (shared initial weights) or `count` models seeded seed + first + k (vary)."""
    if param == "dropout" and not recipe.model.factory:  # with dropout layers; the engine sets p
        hidden = len(recipe.model.hidden) if recipe.model.name == "mlp" else 1
        recipe = recipes.from_dict(
            {
                **recipes.to_dict(recipe),
                "model": {**recipes.to_dict(recipe)["model"], "dropout": [0.5] * hidden},
            }
        )
    seeds = [seed + first + k for k in range(count)] if vary else [seed]
    models = []
    for s in seeds:
        torch.manual_seed(s)  # the initial weights, as `regulab train` draws them
        models.append(build.build_model(recipe, splits))
    build.check_model(recipe, models[0], splits)
    _check_model(recipe, param, models[0])
    return models if vary else models[0]


def _check_model(recipe, param: str, model) -> None:
    """Refuse a strength that would act on nothing in this model."""
    factory = recipe.model.factory
    if factory and param in ("dropout", "bn_sparsity"):
        kinds = (Dropout, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
        if param == "dropout" and not any(isinstance(m, kinds) for m in model.modules()):
            raise RecipeError(
                f"--param dropout: the model of model.factory {factory!r} has no "
                "dropout layers (regulab's Dropout, nn.Dropout, nn.Dropout1d/2d/3d)"
            )
        if param == "bn_sparsity" and not bn_layers(model):
            raise RecipeError(
                f"--param bn_sparsity: the model of model.factory {factory!r} has "
                "no BatchNorm layers"
            )
    elif param == "dropout" and not any(type(m) is Dropout for m in model.modules()):
        raise RecipeError(
            f"--param dropout: this {recipe.model.name} has no dropout layers "
            f"(model.hidden = {recipe.model.hidden}: dropout acts after hidden layers)"
        )
    if param in ("l2", "weight_decay", "l1") and not decayed_names(model, recipe.optim.no_decay):
        raise RecipeError(
            f"--param {param} acts on the weights (ndim >= 2) not listed in optim.no_decay, "
            f"and none are left (optim.no_decay = {recipe.optim.no_decay})"
        )


def compute_rows(
    recipe,
    param: str,
    values,
    *,
    seed: int = 0,
    folds: int = 0,
    vary: bool = False,
    device: str = "cpu",
    max_memory: float | None = None,
    grid=None,
    on_epoch=None,
) -> list[dict]:
    """The path: one row per value (ascending as given) with the metrics of `PATH_COLUMNS`.

    recipe: a Recipe or its dict (what a Ray worker receives). grid: the whole grid
    when values is a chunk of it (with vary, strength k of the grid gets seed + k).
    on_epoch: called after every epoch of every fit: train.epochs x (folds + 1) calls.
    """
    if isinstance(recipe, dict):
        recipe = recipes.from_dict(recipe)
    values = [float(v) for v in values]
    check(recipe, param, values)
    splits = build.load_data(recipe, seed).to(device)
    if folds == 0 and splits.val is None:
        raise RecipeError(
            "the sweep chooses on validation data: set data.val_fraction > 0 "
            "(--set data.val_fraction=0.2) or use --folds K"
        )
    first = [float(v) for v in grid].index(values[0]) if grid is not None else 0
    models = build_models(recipe, splits, param, len(values), seed, vary, first)
    models = models.to(device) if not isinstance(models, list) else [m.to(device) for m in models]
    one = models[0] if isinstance(models, list) else models
    memory.check(one, first_inputs(recipe, splits), len(values), recipe, device, max_memory)
    loss = build.build_loss(recipe, device)  # a name, or the recipe's own callable
    batch_fn = build.build_batch_fn(recipe)
    if folds:
        pool = _pool(splits)
        parts = _folds(len(pool[0]), folds, recipe.data.seed, device)
        per_fold = []
        for part in parts:
            keep = torch.ones(len(pool[0]), dtype=torch.bool, device=device)
            keep[part] = False
            train = tuple(t[keep] for t in pool)
            held = tuple(t[part] for t in pool)
            stacked = _fit(
                recipe, splits, models, param, values, train, seed, vary, first, on_epoch
            )
            held_m = stacked.evaluate(held, loss, batch_fn=batch_fn)
            per_fold.append((held_m, stacked.diverged_epoch))
        final_train = pool
    else:
        final_train = splits.train
    stacked = _fit(recipe, splits, models, param, values, final_train, seed, vary, first, on_epoch)
    n_eval = recipe.train.eval_train or len(final_train[0])
    train_m = stacked.evaluate(tuple(t[:n_eval] for t in final_train), loss, batch_fn=batch_fn)
    test_m = stacked.evaluate(splits.test, loss, batch_fn=batch_fn)
    if folds:
        val_m, diverged = model_path.cross_validated(per_fold, stacked.diverged_epoch)
    else:
        val_m = stacked.evaluate(splits.val, loss, batch_fn=batch_fn)
        diverged = stacked.diverged_epoch
    closed = _closed_form(recipe, param, values, stacked, final_train)
    epochs = recipe.train.epochs
    return model_path.rows(values, stacked, diverged, epochs, train_m, val_m, test_m, closed)


def preflight(
    recipe, param: str, k: int, *, seed=0, folds=0, device="cpu", max_memory=None
) -> dict:
    """Load the data and build one model: raise what the sweep would raise, before any
    training (missing data, a model the sweep cannot handle, k copies not fitting)."""
    check(recipe, param, [0.0])
    splits = build.load_data(recipe, seed).to(device)
    model = build_models(recipe, splits, param, 1, seed, False).to(device)
    need = memory.check(model, first_inputs(recipe, splits), k, recipe, device, max_memory)
    final = splits.train if folds == 0 or splits.val is None else _pool(splits)
    return {
        "memory": need,
        "examples": len(final[0]),  # what the final fit trains on
        "inputs": math.prod(final[0].shape[1:]),
        "data_files": splits.files,  # the folder read and the files' md5, or None
    }


def first_inputs(recipe, splits):
    """The model's inputs for the first train.batch_size examples, through train.batch_fn."""
    batch = tuple(t[: recipe.train.batch_size] for t in splits.train)
    return unpack(batch, build.build_batch_fn(recipe))[0]


def _fit(recipe, splits, models, param, values, train, seed, vary, first, on_epoch=None):
    loader = build.loader(recipe, build.Splits(train, None, splits.test, 0), seed)
    s = settings(recipe, splits, len(loader), seed, on_epoch=on_epoch, vary=vary, first=first)
    return fit_sweep(models, param, values, loader, s)


def _pool(splits) -> tuple:
    if splits.val is None:
        return splits.train
    return tuple(torch.cat([a, b]) for a, b in zip(splits.train, splits.val, strict=True))


def _folds(n: int, folds: int, seed: int, device) -> list[torch.Tensor]:
    """`folds` disjoint index sets covering range(n), from a permutation seeded by seed."""
    if not 2 <= folds <= n:
        raise RecipeError(f"--folds must be between 2 and the {n} training examples; got {folds}")
    return model_path.folds_of(n, folds, seed, device)


def _closed_form(recipe, param, values, stacked, train):
    """(||w||, distance of the SGD weights) of the exact ridge solutions, or None."""
    from regulab.ridge_regression import ridge_path

    o, p = recipe.optim, recipe.penalty
    if (
        recipe.model.name != "linear"
        or recipe.model.factory
        or recipe.train.loss not in ("half_mse", "mse")
        or param not in ("l2", "weight_decay")
        or o.name == "adamw"
        or o.no_decay
        or p.l1
        or p.max_norm
        or (p.l2 if param == "weight_decay" else o.weight_decay)
    ):
        return None
    x, y = (t.double() for t in train)
    half = 0.5 if recipe.train.loss == "mse" else 1.0  # mse = 2 x (half_mse), so lambda / 2
    w, _ = ridge_path(x.flatten(1), y, [v * half for v in values])
    (name,) = [n for n, t in stacked.params.items() if t.ndim == 3]
    w_sgd = stacked.params[name].detach().double().flatten(1).to(w.device)
    return w.norm(dim=1), (w_sgd - w).norm(dim=1)

"""From a recipe to the objects `fit` needs: data, model, optimizer and regularizers.

Every regularizer of the recipe maps onto one piece of the library in one visible
line: weight decay onto `param_groups`, L1/L2 onto `Penalty` (or `prox_l1_`),
the constraint onto `max_norm_`, the schedule onto `regulab.schedules`.
"""

import math
from dataclasses import dataclass
from functools import lru_cache, partial

import torch
from torch import nn

from regulab import augment as aug
from regulab import models, schedules
from regulab.bn_sparsity import bn_scales
from regulab.constraints import max_norm_
from regulab.data.loader import TensorLoader
from regulab.early_stopping import EarlyStopping
from regulab.errors import DataUnavailable, RecipeError
from regulab.groups import param_groups
from regulab.penalties import Penalty, prox_l1_
from regulab.recipe.schema import CLASSIFICATION_DATASETS, Recipe


@dataclass
class Splits:
    """Tensors of one data set: train, validation (None without one) and test, each (x, y)."""

    train: tuple
    val: tuple | None
    test: tuple
    num_classes: int  # 1 for regression (one output)

    def to(self, device) -> "Splits":
        move = lambda pair: None if pair is None else tuple(t.to(device) for t in pair)  # noqa: E731
        return Splits(move(self.train), move(self.val), move(self.test), self.num_classes)


def load_data(recipe: Recipe, seed: int) -> Splits:
    """The recipe's data set, split; data.seed (plus the run's seed with vary_seed) fixes it."""
    from regulab.data import digits, synthetic_linear, train_val_split

    d = recipe.data
    data_seed = d.seed + (seed if d.vary_seed else 0)
    if d.name in ("fashion_mnist", "mnist"):
        (x, y), test = _images(d.name, d.root or None, d.download)
    elif d.name == "digits":
        x_all, y_all = digits()
        (x, y), test = train_val_split(x_all.unsqueeze(1), y_all, d.test_fraction, data_seed)
    elif d.name == "synthetic_linear":
        g = torch.Generator().manual_seed(data_seed)
        x, y = synthetic_linear(d.n_train, d.num_inputs, generator=g)
        test = synthetic_linear(d.n_test, d.num_inputs, generator=g)
    else:  # line: y = 3x + 5 + N(0, 1), x ~ U(0, 10)
        g = torch.Generator().manual_seed(data_seed)
        x_all = torch.rand(d.n, 1, generator=g, dtype=torch.float64) * 10
        y_all = 3 * x_all[:, 0] + 5 + torch.randn(d.n, generator=g, dtype=torch.float64)
        (x, y), test = train_val_split(x_all.float(), y_all.float(), d.test_fraction, data_seed)
    train, val = train_val_split(x, y, d.val_fraction, data_seed)
    num_classes = 10 if d.name in CLASSIFICATION_DATASETS else 1
    return Splits(train, val, test, num_classes)


def load_checked(recipe: Recipe, seed: int) -> Splits:
    """`load_data`, with files not found, downloads failed or corrupt files as DataUnavailable."""
    try:
        return load_data(recipe, seed)
    except (OSError, ValueError) as e:
        raise DataUnavailable(str(e)) from e


@lru_cache(maxsize=2)
def _images(name: str, root: str | None, download: bool):
    """Fashion-MNIST or MNIST as float32 (N, 1, 28, 28) in [0, 1]; read once per process."""
    from regulab.data import fashion_mnist, mnist

    (x, y), (xt, yt) = (fashion_mnist if name == "fashion_mnist" else mnist)(
        root, download=download
    )
    return ((x.float() / 255).unsqueeze(1), y), ((xt.float() / 255).unsqueeze(1), yt)


def model_spec(recipe: Recipe, splits: Splits) -> tuple[str, dict]:
    """(name in `models.MODELS`, keyword arguments) of the recipe's model for this data."""
    m = recipe.model
    x = splits.train[0]
    inputs, out = math.prod(x.shape[1:]), splits.num_classes
    if m.name == "linear":
        return "linear", {"in_features": inputs, "out_features": out}
    if m.name == "mlp":
        sizes = [inputs, *m.hidden, out]
        return "mlp", {"sizes": sizes, "dropout": m.dropout or 0.0, "activation": m.activation}
    if m.name == "vgg_bn":
        if len(m.dropout) > 1:
            raise RecipeError(f"model.dropout must hold at most one p for vgg_bn; got {m.dropout}")
        return "vgg_bn", {
            "cfg": list(m.cfg),
            "in_channels": x.shape[1],
            "num_classes": out,
            "dropout": m.dropout[0] if m.dropout else 0.0,
            "drop_block": m.drop_block,
            "drop_block_size": m.drop_block_size,
        }
    return "resnet_bn", {
        "widths": list(m.widths),
        "blocks": list(m.blocks),
        "in_channels": x.shape[1],
        "num_classes": out,
        "drop_path": m.drop_path,
    }


def build_model(recipe: Recipe, splits: Splits) -> nn.Module:
    """The recipe's model with inputs and outputs taken from the data."""
    m = recipe.model
    name, kwargs = model_spec(recipe, splits)
    model = models.MODELS[name](**kwargs)
    if m.init == "normal":  # the demo's init: weights N(0, 1), biases 0
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Linear | nn.Conv2d):
                    module.weight.normal_()
                    if module.bias is not None:
                        module.bias.zero_()
    return model


def build_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """torch.optim optimizer over `param_groups`: weight decay on weights, not biases/norms."""
    o = recipe.optim
    groups = param_groups(model, o.weight_decay, no_decay=tuple(o.no_decay))
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW  # AdamW: decoupled decay
    return cls(groups, lr=o.lr, betas=tuple(o.betas))


def build_regularizers(recipe: Recipe, model: nn.Module, optimizer) -> dict:
    """Keyword arguments of `fit` for the penalty, after-step projections and early stopping."""
    p = recipe.penalty
    weights = param_groups(model, 0.0, no_decay=tuple(recipe.optim.no_decay))
    weights = [g for g in weights if g["penalize"]]
    decayed = [t for g in weights for t in g["params"]]
    if not decayed and (p.l1 or p.l2 or p.max_norm):
        raise RecipeError(
            "penalty.l1, l2 and max_norm act on the weights (ndim >= 2) not listed in "
            f"optim.no_decay, and none are left (optim.no_decay = {recipe.optim.no_decay})"
        )
    l1_in_grad = p.l1 if p.l1_mode == "subgradient" else 0.0
    groups = [{**g, "l1": l1_in_grad, "l2": p.l2} for g in weights if l1_in_grad or p.l2]
    slim = recipe.slim
    if slim.sparsity and slim.sparsity_mode == "subgradient":  # Network Slimming's s*sign(gamma)
        groups.append({"params": bn_scales(model), "l1": slim.sparsity, "l2": 0.0})
    penalty = Penalty(groups) if groups else None
    after_step = []
    if slim.sparsity and slim.sparsity_mode == "proximal":
        scales = bn_scales(model)
        after_step.append(lambda: prox_l1_(scales, optimizer.param_groups[0]["lr"] * slim.sparsity))
    if p.l1 and p.l1_mode == "proximal":  # ISTA: threshold = current lr * l1
        after_step.append(lambda: prox_l1_(decayed, optimizer.param_groups[0]["lr"] * p.l1))
    if p.max_norm:
        dim = None if p.max_norm_dim == -1 else p.max_norm_dim
        after_step.append(partial(max_norm_, decayed, p.max_norm, dim=dim))
    es = recipe.early_stopping
    early = None
    if es.patience:
        mode = "min" if es.monitor.endswith("loss") else "max"
        early = EarlyStopping(es.monitor, mode, es.patience, es.min_delta)
    return {"penalty": penalty, "after_step": after_step, "early_stopping": early}


def build_schedule(recipe: Recipe, steps_per_epoch: int):
    """factor(step) for the recipe's schedule, or None for a constant learning rate."""
    s = recipe.schedule
    if s.name == "constant":
        return None
    if s.name == "inverse_sqrt":
        return schedules.inverse_sqrt(s.gamma)
    if s.name == "inverse_time":
        return schedules.inverse_time(s.decay_rate, s.decay_steps)
    if s.name == "step":
        return schedules.step(s.step_size, s.gamma)
    if s.name == "exponential":
        return schedules.exponential(s.gamma)
    total = recipe.train.epochs * steps_per_epoch
    return schedules.cosine(total, s.warmup_steps, s.min_factor)


def build_augment(recipe: Recipe, splits: Splits):
    """A function applying the recipe's augmentations to a batch, or None."""
    a = recipe.augment
    steps = []
    if a.hflip:
        steps.append(partial(aug.hflip, p=a.hflip))
    if a.random_crop:
        steps.append(partial(aug.random_crop, pad=a.random_crop))
    if a.cutout:
        steps.append(partial(aug.cutout, size=a.cutout))
    if a.gaussian_noise:
        steps.append(partial(aug.gaussian_noise, std=a.gaussian_noise))
    if not steps:
        return None
    if any(s.func is not aug.gaussian_noise for s in steps) and splits.train[0].ndim != 4:
        raise RecipeError(
            "augment.hflip, random_crop and cutout need image data (N, C, H, W); "
            f"data.name {recipe.data.name!r} has inputs of shape {tuple(splits.train[0].shape)}"
        )

    def apply(x):
        for f in steps:
            x = f(x)
        return x

    return apply


def loader(recipe: Recipe, splits: Splits, seed: int) -> TensorLoader:
    """The training loader: the run's seed fixes the order of every epoch."""
    x, y = splits.train
    if recipe.train.batch_size > len(x):
        raise RecipeError(
            f"train.batch_size must be at most the {len(x)} training examples; "
            f"got {recipe.train.batch_size}"
        )
    return TensorLoader(x, y, batch_size=recipe.train.batch_size, seed=seed)


def run_parts(recipe: Recipe, splits: Splits, seed: int) -> dict:
    """The recipe's model and the objects `fit` trains it with (see `training_parts`)."""
    model = build_model(recipe, splits)
    return {"model": model, **training_parts(recipe, model, splits, seed)}


def training_parts(recipe: Recipe, model: nn.Module, splits: Splits, seed: int) -> dict:
    """`fit`'s optimizer, loader, schedule, augmentation and regularizers for model."""
    optimizer = build_optimizer(recipe, model)
    train = loader(recipe, splits, seed)
    return {
        "optimizer": optimizer,
        "train": train,
        "schedule": build_schedule(recipe, len(train)),
        "augment": build_augment(recipe, splits),
        **build_regularizers(recipe, model, optimizer),
    }


def run_settings(recipe: Recipe, splits: Splits, seed: int) -> dict:
    """`fit`'s plain settings from [train]: epochs, loss, seed, evaluation data, clipping."""
    t = recipe.train
    return {
        "epochs": t.epochs,
        "val": splits.val,
        "test": splits.test,
        "loss": t.loss,
        "clip_grad_norm": t.clip_grad_norm or None,
        "seed": seed,
        "eval_train": t.eval_train,
        "keep_checkpoints": t.keep_checkpoints,
    }


def fit_arguments(recipe: Recipe, model: nn.Module, splits: Splits, seed: int) -> dict:
    """Every keyword argument of `fit` for model: the one mapping from a recipe to `fit`.

    `regulab train`, slim's fine-tuning and the sweep's settings all start here.
    """
    return {**training_parts(recipe, model, splits, seed), **run_settings(recipe, splits, seed)}

"""From a recipe to the objects `fit` needs: data, model, optimizer and regularizers.

Every regularizer of the recipe maps onto one piece of the library in one visible
line: weight decay onto `param_groups`, L1/L2 onto `Penalty` (or `prox_l1_`),
the constraint onto `max_norm_`, the schedule onto `regulab.schedules`. Your own
code (model.factory, a "module:callable" loss, batch_fn) is resolved here, and
what the recipe alone could not check is checked once the model is built
(`check_model`). The data comes from `regulab.recipe.sources`, the model from
`regulab.recipe.model`; their functions are re-exported here for build's callers.
"""

from functools import partial
from numbers import Real

import torch
from torch import nn

from regulab import augment as aug
from regulab import metrics, schedules
from regulab.bn_sparsity import bn_layers, bn_scales
from regulab.constraints import max_norm_
from regulab.data.loader import TensorLoader
from regulab.early_stopping import EarlyStopping
from regulab.errors import RecipeError
from regulab.groups import param_groups
from regulab.penalties import Penalty, prox_l1_
from regulab.recipe import targets
from regulab.recipe.imports import call, check_keywords, resolve_callable
from regulab.recipe.model import build_model, model_arch, model_spec  # noqa: F401
from regulab.recipe.schema import LOSSES, Recipe
from regulab.recipe.sources import Splits, check_task, load_checked, load_data  # noqa: F401


def check_model(recipe: Recipe, model: nn.Module, splits: Splits) -> None:
    """The built model against what the recipe asks of it: BatchNorm for slim.sparsity, and
    one batch of train.batch_size training examples through batch_fn, the model (eval mode)
    and the loss; for classification, an output for every class of the data."""
    m = recipe.model
    what = f"the model of model.factory {m.factory!r}" if m.factory else f"model.name {m.name!r}"
    if recipe.slim.sparsity and not bn_layers(model):
        raise RecipeError(
            f"slim.sparsity acts on BatchNorm scales, and {what} has no BatchNorm layers; "
            f"got {recipe.slim.sparsity!r}"
        )
    targets.check(recipe, splits)
    device = next(model.parameters(), splits.train[0]).device
    n = min(recipe.train.batch_size, len(splits.train[0]))
    batch = tuple(t[:n].to(device) for t in splits.train)
    batch_fn, loss = build_batch_fn(recipe), build_loss(recipe, device)
    if batch_fn is not None:
        try:
            inputs, target = batch_fn(batch)
        except Exception as e:
            raise RecipeError(
                f"train.batch_fn {recipe.train.batch_fn!r} must map a batch (x, y) "
                f"{_shape(batch)} to (inputs, target): {type(e).__name__}: {e}"
            ) from e
    else:
        inputs, target = batch
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            try:
                out = metrics.forward(model, inputs)
            except Exception as e:
                raise RecipeError(
                    f"{what} fails on {n} training examples, inputs {_shape(inputs)}: "
                    f"{type(e).__name__}: {e}"
                ) from e
            _check_classes(recipe, what, out, splits)
            try:
                metrics.mean_loss(loss, out, target)  # a scalar, or ValueError
            except Exception as e:
                hint = _target_hint(target, e)
                shown = e.__cause__ if hint and e.__cause__ is not None else e  # torch's own
                raise RecipeError(
                    f"train.loss {recipe.train.loss!r} fails on the model's output "
                    f"{_shape(out)} and the targets {_shape(target)}: "
                    f"{type(shown).__name__}: {shown}{hint}"
                ) from e
    finally:
        model.train(was_training)


def _check_classes(recipe: Recipe, what: str, out, splits: Splits) -> None:
    """Classification: the model's output (N, C, ...) needs C >= the data's classes (largest
    label + 1). Checked for cross_entropy, and for any loss when C > 1 (one logit per example
    with a callable loss, BCE-style, is left alone)."""
    if splits.task != "classification" or not isinstance(out, torch.Tensor) or out.ndim < 2:
        return
    width, classes = out.shape[1], splits.num_classes
    if width < classes and (recipe.train.loss == "cross_entropy" or width > 1):
        kwargs = f" and model.kwargs {recipe.model.kwargs}" if recipe.model.factory else ""
        raise RecipeError(
            f"{what}{kwargs} gives {width} outputs per example, and the data has {classes} "
            f"classes (labels 0 .. {classes - 1}): the model needs at least {classes} outputs"
        )


def _target_hint(target, error: Exception) -> str:
    """What to do when integer class labels meet a loss that needs float targets (BCE)."""
    dtype_fault = any(s in str(error) for s in ("can't be cast", "expected Float"))
    if isinstance(target, torch.Tensor) and not target.is_floating_point() and dtype_fault:
        return (
            f" (the targets are {str(target.dtype).removeprefix('torch.')} class labels; a loss "
            "such as BCEWithLogitsLoss needs float targets: store y as floats, set "
            'data.task = "regression", or cast them in train.batch_fn)'
        )
    return ""


def _shape(value) -> str:
    """A tensor's shape, or the shapes in a tuple or dict of tensors, for error messages."""
    if isinstance(value, torch.Tensor):
        return f"of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shape(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    return f"a {type(value).__name__}"


def build_loss(recipe: Recipe, device=None):
    """train.loss as `fit` takes it: a name in LOSSES, or your callable: a class is
    instantiated with train.loss_kwargs (an nn.Module is moved to device), a function gets
    them bound; lists of numbers in loss_kwargs become float32 tensors (class weights)."""
    t = recipe.train
    if t.loss in LOSSES:
        return t.loss
    found = resolve_callable(t.loss, "train.loss", recipe.base)
    kwargs = {k: _tensor(v, device) for k, v in t.loss_kwargs.items()}
    if not isinstance(found, type):
        check_keywords(found, kwargs, "train.loss_kwargs", t.loss, partial=True)
        return partial(found, **kwargs) if kwargs else found
    loss = call(found, kwargs, "train.loss_kwargs", t.loss, "train.loss")
    if not callable(loss):
        raise RecipeError(
            f"train.loss {t.loss!r} must be a function or a class of callables (output, "
            f"target) -> loss; {t.loss}(...) is a {type(loss).__name__}"
        )
    return loss.to(device) if isinstance(loss, nn.Module) and device is not None else loss


def _tensor(value, device):
    """A list of numbers (nested too) as a float32 tensor on device; anything else as is."""

    def numbers(v):
        if isinstance(v, list):
            return all(numbers(i) for i in v)
        return isinstance(v, Real) and not isinstance(v, bool)

    if isinstance(value, list) and value and numbers(value):
        return torch.tensor(value, dtype=torch.float32, device=device)
    return value


def build_batch_fn(recipe: Recipe):
    """train.batch_fn resolved to your function, or None."""
    spec = recipe.train.batch_fn
    return resolve_callable(spec, "train.batch_fn", recipe.base) if spec else None


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
        dim = None if p.max_norm_dim == -1 else _norm_dim(recipe, decayed)
        after_step.append(partial(max_norm_, decayed, p.max_norm, dim=dim))
    es = recipe.early_stopping
    early = None
    if es.patience:
        mode = "min" if es.monitor.endswith("loss") else "max"
        early = EarlyStopping(es.monitor, mode, es.patience, es.min_delta)
    return {"penalty": penalty, "after_step": after_step, "early_stopping": early}


def _norm_dim(recipe: Recipe, weights: list) -> int:
    """penalty.max_norm_dim, checked against every weight the constraint acts on."""
    dim, fewest = recipe.penalty.max_norm_dim, min(w.ndim for w in weights)
    if dim >= fewest:
        m = recipe.model
        what = f"model.factory {m.factory!r}" if m.factory else f"model.name {m.name!r}"
        raise RecipeError(
            f"penalty.max_norm_dim must be -1 (whole tensor) or a dimension of every weight "
            f"max_norm acts on, 0 .. {fewest - 1}: {what} has weights of {fewest} dimensions; "
            f"got {dim}"
        )
    return dim


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
    """The recipe's model, checked (`check_model`), and the objects `fit` trains it with (see
    `training_parts`)."""
    model = build_model(recipe, splits)
    check_model(recipe, model, splits)
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
    """`fit`'s plain settings from [train]: epochs, loss, seed, evaluation data, clipping,
    batch_fn, precision and accumulation."""
    t = recipe.train
    return {
        "epochs": t.epochs,
        "val": splits.val,
        "test": splits.test,
        "loss": build_loss(recipe, splits.train[0].device),
        "batch_fn": build_batch_fn(recipe),
        "precision": t.precision,
        "accumulate": t.accumulate,
        "clip_grad_norm": t.clip_grad_norm or None,
        "seed": seed,
        "eval_train": t.eval_train,
        "keep_checkpoints": t.keep_checkpoints,
    }


def fit_arguments(recipe: Recipe, model: nn.Module, splits: Splits, seed: int) -> dict:
    """Every keyword argument of `fit` for model: the one mapping from a recipe to `fit`.

    `regulab train`, slim's fine-tuning and the sweep's settings all start here.
    """
    out = {**training_parts(recipe, model, splits, seed), **run_settings(recipe, splits, seed)}
    if recipe.train.label_smoothing:  # trains on smoothed targets, evaluates on the labels
        out["loss"], out["eval_loss"] = targets.training_loss(recipe, out["loss"]), out["loss"]
    mix = targets.mixing(recipe, model, splits)
    return {**out, "batch_fn": mix} if mix is not None else out

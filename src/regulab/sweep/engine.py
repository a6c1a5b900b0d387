"""K copies of one model, each with its own regularization hyperparameters, trained as one.

The copies are stacked along a leading dimension (`torch.func.stack_module_state`)
and run with `vmap(functional_call)`: one forward and one backward serve all K
models. BatchNorm running statistics are stacked buffers, so each copy keeps its
own. Each copy's hyperparameters are tensors of shape (K,) applied to the stacked
gradients and weights with the same operations, in the same order, as `fit`
applies its scalar ones (penalty, clipping, schedule, decay, step, projections),
so copy k equals a `fit` run with values k. `fit_stacked` searches several at once
(`hparams.HPARAMS`: lr, weight_decay, l2, l1, max_norm, bn_sparsity, dropout,
drop_path, and the batch's and loss's own, `batch.BATCH`: label_smoothing, mixup,
cutmix, crop, cutout, noise); `fit_sweep` is its one-parameter form. Both train a
`state.StackedRun`, the explicit state that successive halving and PBT shrink and copy
between epochs.

By default the copies share their initial weights, minibatch order and dropout
noise (`randomness="same"`: common random numbers), so differences along the
path come from the strength alone. `vary=True` gives each copy its own batch
order (seed + k) and dropout noise; pass a list of models for different
initial weights. In a dropout sweep every copy has the dropout layers (p = 0
drops nothing but still draws), so its other random layers see the same draws as
the other copies rather than those of a model built without dropout layers.

Your own parts: `nn.Dropout` and `nn.Dropout1d/2d/3d` are swapped for regulab's
tensor-p layers on the copies (`native.swap_dropout`; the caller's model is not
touched); train may be any iterable of batches such as a DataLoader (not with
vary); the loss may be a callable (`Settings.loss`), run on each copy's output
under vmap, and batches may be mapped by `Settings.batch_fn`. Gradient accumulation
(train.accumulate) is honoured as `fit` does it; mixed precision is not.

`Settings` holds the recipe's own sections (optim, penalty, slim, train) with the
meaning `regulab train` gives them: coupled weight decay for sgd/adam, decoupled
for adamw (arXiv:1711.05101), L1 on BatchNorm scales as in Network Slimming
(arXiv:1708.06519).
"""

import dataclasses
from dataclasses import dataclass, field

from regulab import _checks
from regulab.data.loader import TensorLoader
from regulab.recipe import schema
from regulab.recipe.schema import SWEEPABLE
from regulab.sweep import linear
from regulab.sweep.hparams import HPARAMS
from regulab.sweep.stacked import Stacked
from regulab.sweep.state import StackedRun
from regulab.sweep.update import bn_scale_names, decayed_names  # noqa: F401 (re-exported)
from regulab.train_step import rng_fork

PARAMS = tuple(SWEEPABLE)


@dataclass
class Settings:
    """What the K models train with: the recipe's own sections, plus what a recipe does not hold.

    optim, penalty, slim, train: the recipe sections of the same names
    (`regulab.recipe.schema`), with the meaning and units `regulab train` gives them.
    A copy's swept strength replaces the field that `SWEEPABLE` names (l2 sets
    penalty.l2, bn_sparsity slim.sparsity, ...; dropout sets the model's Dropout
    layers), a searched hyperparameter the one `update.FIELDS` names (lr: optim.lr,
    max_norm: penalty.max_norm, ...). The engine reads all of optim and penalty, slim.sparsity and
    sparsity_mode, and train.epochs, loss, clip_grad_norm, accumulate and seed (torch
    is reseeded each epoch from (train.seed, epoch), as `fit` does, inside a fork of
    the caller's random state); the batch size is the loader's; train.precision must
    be "fp32". "The weights" are `param_groups`' decayed tensors (ndim >= 2, not
    optim.no_decay).

    In Python, without a recipe file (`from regulab.recipe import schema`):
    `Settings(optim=schema.Optim(lr=0.1, momentum=0.9), train=schema.Train(epochs=3))`.
    """

    optim: schema.Optim = field(default_factory=schema.Optim)  # optimizer, lr, weight decay
    penalty: schema.Penalty = field(default_factory=schema.Penalty)  # l2, l1, max-norm
    slim: schema.Slim = field(default_factory=schema.Slim)  # sparsity: L1 on BatchNorm scales
    train: schema.Train = field(default_factory=schema.Train)  # epochs, loss, seed, clipping
    schedule: object = None  # factor(step) multiplying optim.lr, or None (`build_schedule`)
    augment: object = None  # function of each batch's inputs, or None; searched crop, cutout,
    # noise follow it (`batch`)
    loss: object = None  # callable (output, target) -> scalar mean loss; None: train.loss
    batch_fn: object = None  # callable batch -> (inputs, target); None: batches are (x, y)
    on_epoch: object = None  # called after every epoch (progress display), or None
    vary: bool = False  # own batch order (loader seed + first + k) and dropout noise per model
    first: int = 0  # vary: index of the first of these models in the whole grid

    def with_strengths(self, **strengths: float) -> "Settings":
        """A copy with strengths given by their sweepable names (`PARAMS`), each written
        into the recipe field `SWEEPABLE` names: with_strengths(l2=0.1) sets penalty.l2."""
        out = self
        for param, value in strengths.items():
            _checks.one_of("strength", param, PARAMS)
            if param == "dropout":
                raise ValueError(
                    "strength 'dropout' is model.dropout, set on the model's Dropout layers, "
                    "not in Settings; sweep it with fit_sweep(model, 'dropout', values, ...)"
                )
            section, name = SWEEPABLE[param].split(".")
            changed = dataclasses.replace(getattr(out, section), **{name: value})
            out = dataclasses.replace(out, **{section: changed})
        return out

    def loss_function(self):
        """The loss the copies train with: `loss` if set, else the name train.loss."""
        return self.loss if self.loss is not None else self.train.loss


def fit_stacked(model, hparams: dict, train, settings: Settings, fast: bool = True) -> Stacked:
    """Train one copy of model per configuration; return the K trained copies.

    hparams: name -> K values (a sequence or a (K,) tensor) for each searched name of
    `hparams.HPARAMS`; copy k trains with the k-th value of each, replacing the field of
    settings (or the model's dropout / DropPath rates) that name sets. model, train,
    settings: as `StackedRun`. fast: for one of l2, weight_decay, l1 on a linear
    regression, `regulab.sweep.linear` (same result, no autograd). The returned
    `Stacked` has `diverged_epoch` (K,): the first epoch whose loss was not finite, else 0.
    To train epoch by epoch, drop copies or copy them, use `StackedRun` itself.
    """
    return _fit(model, hparams, train, settings, fast, what="hparams")


def _fit(model, hparams, train, settings, fast, what) -> Stacked:
    """fit_stacked, with `what` naming the argument in messages ("param" for fit_sweep)."""
    run = StackedRun(model, hparams, train, settings, what=what)
    (param,) = run.hparams if len(run.hparams) == 1 else (None,)
    if fast and isinstance(train, TensorLoader) and linear.applies(run.like, param, settings):
        device = next(iter(run.stacked.params.values())).device
        with rng_fork(device):
            linear.train(run.stacked, param, run.hparams[param].tolist(), train, settings)
    else:
        run.train_epochs(settings.train.epochs)
    return run.stacked


def fit_sweep(model, param: str, values, train, settings: Settings, fast: bool = True) -> Stacked:
    """Train one copy of model per value of `param`; return the K trained copies.

    model: an nn.Module (copied K times: shared initial weights) or a list of K
    modules (their own weights). param: one of PARAMS (or of `hparams.HPARAMS`); values:
    K strengths, each replacing, for its copy, the field of settings that `SWEEPABLE`
    names for param (as `settings.with_strengths(**{param: value})` would). train: a
    TensorLoader, or any iterable of batches such as a DataLoader, iterated once per
    epoch (not with settings.vary, which needs a TensorLoader to give each copy its own
    order). fast: use `regulab.sweep.linear` for a linear regression (same result, no
    autograd). `fit_stacked(model, {param: values}, ...)` with the messages of one param.
    """
    _checks.one_of("param", param, HPARAMS)
    values = _check_values(param, values)
    return _fit(model, {param: values}, train, settings, fast, what="param")


def _check_values(param: str, values) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must hold at least one strength; got none")
    for v in values:
        _checks.non_negative(param, v)
    if param in ("dropout", "drop_path", "drop_block") and max(values) >= 1:
        raise ValueError(f"{param} p must be in [0, 1); got {max(values)}")
    return values

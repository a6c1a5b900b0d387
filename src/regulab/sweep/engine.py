"""K copies of one model, each with its own regularization strength, trained as one.

The copies are stacked along a leading dimension (`torch.func.stack_module_state`)
and run with `vmap(functional_call)`: one forward and one backward serve all K
models. BatchNorm running statistics are stacked buffers, so each copy keeps its
own. Per-model strengths are tensors of shape (K,) applied to the stacked
gradients and weights with the same operations, in the same order, as `fit`
applies its scalar ones (penalty, clipping, schedule, decay, step, projections),
so copy k equals a `fit` run with strength k.

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

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import vmap

from regulab import _checks
from regulab.bn_sparsity import bn_layers
from regulab.data.loader import TensorLoader, epoch_seed
from regulab.groups import param_groups
from regulab.metrics import LOSSES, mean_loss, to_device, unpack
from regulab.recipe import schema
from regulab.recipe.schema import L1_MODES, OPTIMIZERS, SWEEPABLE
from regulab.sweep import linear, update
from regulab.sweep.native import SWEPT, check_train, set_dropout, swap_dropout
from regulab.sweep.stacked import Stacked
from regulab.train_step import mean_of_partial_group_, reseed, rng_fork, set_epoch, with_last

PARAMS = tuple(SWEEPABLE)
PRECISION = "fp32"  # the one train.precision the stacked step runs (no autocast, no scaler)


@dataclass
class Settings:
    """What the K models train with: the recipe's own sections, plus what a recipe does not hold.

    optim, penalty, slim, train: the recipe sections of the same names
    (`regulab.recipe.schema`), with the meaning and units `regulab train` gives them.
    A copy's swept strength replaces the field that `SWEEPABLE` names (l2 sets
    penalty.l2, bn_sparsity slim.sparsity, ...; dropout sets the model's Dropout
    layers). The engine reads all of optim and penalty, slim.sparsity and
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
    augment: object = None  # function applied to each batch's inputs, or None (`build_augment`)
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


def bn_scale_names(model: nn.Module) -> list[str]:
    """Names of the BatchNorm scale (gamma) parameters of model (`bn_sparsity.bn_layers`)."""
    return [f"{name}.weight" if name else "weight" for name, _ in bn_layers(model)]


def decayed_names(model: nn.Module, no_decay=()) -> list[str]:
    """Names of the tensors `param_groups` decays (ndim >= 2, not norm layers, not no_decay)."""
    ids = {
        id(p)
        for g in param_groups(model, 0.0, no_decay=tuple(no_decay))
        if g["penalize"]
        for p in g["params"]
    }
    return [name for name, p in model.named_parameters() if id(p) in ids]


def fit_sweep(model, param: str, values, train, settings: Settings, fast: bool = True) -> Stacked:
    """Train one copy of model per value of `param`; return the K trained copies.

    model: an nn.Module (copied K times: shared initial weights) or a list of K
    modules (their own weights). param: one of PARAMS; values: K strengths, each
    replacing, for its copy, the field of settings that `SWEEPABLE` names for param
    (as `settings.with_strengths(**{param: value})` would). train: a TensorLoader, or
    any iterable of batches such as a DataLoader, iterated once per epoch (not with
    settings.vary, which needs a TensorLoader to give each copy its own order).
    fast: use `regulab.sweep.linear` for a linear regression (same result, no autograd).
    The returned `Stacked` has `diverged_epoch` (K,): the first epoch whose loss
    was not finite, 0 for copies that did not diverge.
    """
    _checks.one_of("param", param, PARAMS)
    _check_settings(settings)
    check_train(train, settings.vary)
    values = _check_values(param, values)
    shared = isinstance(model, nn.Module)
    given = [model] if shared else model
    if not isinstance(given, list | tuple) or not all(isinstance(m, nn.Module) for m in given):
        raise TypeError(f"model must be an nn.Module or a list of them; got {type(model).__name__}")
    models = [copy.deepcopy(m) for m in given]
    if not shared and len(models) != len(values):
        raise ValueError(f"model: got {len(models)} models for {len(values)} values")
    if param == "dropout":
        for m in models:
            swap_dropout(m)
            if not set_dropout(m, 0.5):
                raise ValueError(
                    "param 'dropout' needs a model with Dropout layers (regulab.Dropout, "
                    "nn.Dropout, nn.Dropout1d/2d/3d); it has none"
                )
    if param == "bn_sparsity" and not bn_scale_names(models[0]):
        raise ValueError("param 'bn_sparsity' needs a model with BatchNorm layers; it has none")
    stacked = Stacked(models, k=len(values) if shared else None)
    if param == "dropout":  # each copy's own p, one buffer per Dropout layer
        for name, m in models[0].named_modules():
            if type(m) in SWEPT:
                stacked.buffers[f"{name}.p"].copy_(torch.tensor(values, dtype=torch.float64))
    device = next(iter(stacked.params.values())).device
    with rng_fork(device):  # the epochs reseed torch; the caller's state is restored after
        if fast and isinstance(train, TensorLoader) and linear.applies(models[0], param, settings):
            linear.train(stacked, param, values, train, settings)
        else:
            _train(stacked, models[0], param, values, train, settings)
    return stacked


def _check_settings(s: Settings) -> None:
    """Refuse settings the stacked step cannot honour, naming the field."""
    _checks.one_of("settings.optim.name", s.optim.name, OPTIMIZERS)
    _checks.one_of("settings.penalty.l1_mode", s.penalty.l1_mode, L1_MODES)
    _checks.one_of("settings.slim.sparsity_mode", s.slim.sparsity_mode, L1_MODES)
    if s.loss is None and s.train.loss not in LOSSES:
        raise ValueError(
            f"settings.train.loss must be one of {', '.join(map(repr, LOSSES))}; got "
            f"{s.train.loss!r} (a loss of your own: Settings(loss=callable))"
        )
    if s.batch_fn is None and getattr(s.train, "batch_fn", ""):
        raise ValueError(
            f"settings.train.batch_fn {s.train.batch_fn!r} names code; fit_sweep takes the "
            "callable itself: Settings(batch_fn=callable)"
        )
    for name in ("loss", "batch_fn"):
        if getattr(s, name) is not None and not callable(getattr(s, name)):
            raise TypeError(
                f"settings.{name} must be a callable or None; got {type(getattr(s, name)).__name__}"
            )
    precision = getattr(s.train, "precision", PRECISION)
    if precision != PRECISION:
        raise ValueError(
            f"settings.train.precision must be {PRECISION!r} (the stacked copies train without "
            f"autocast); got {precision!r}"
        )
    _checks.positive_int("settings.train.accumulate", getattr(s.train, "accumulate", 1))


def _check_values(param: str, values) -> list[float]:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must hold at least one strength; got none")
    for v in values:
        _checks.non_negative(param, v)
    if param == "dropout" and max(values) >= 1:
        raise ValueError(f"dropout p must be in [0, 1); got {max(values)}")
    return values


def _train(stacked: Stacked, like: nn.Module, param, values, train, s: Settings):
    """The epochs of `fit_sweep`'s generic path: `fit`'s loop with (K,) strengths."""
    plist = list(stacked.params.values())
    decayed = [stacked.params[n] for n in decayed_names(like, s.optim.no_decay)]
    use_bn = s.slim.sparsity or param == "bn_sparsity"
    scales = [stacked.params[n] for n in bn_scale_names(like)] if use_bn else []
    st = update.strengths(decayed, scales, param, values, s)
    o = s.optim
    if o.name == "sgd":
        opt = torch.optim.SGD(plist, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    else:
        opt = torch.optim.Adam(plist, lr=o.lr, betas=tuple(o.betas))  # decay applied here
    loss = s.loss_function()
    accumulate = getattr(s.train, "accumulate", 1)
    loaders = _loaders(train, s, stacked.k)
    device = plist[0].device
    step = 0
    stacked.base.train()
    stacked.diverged_epoch = torch.zeros(stacked.k, dtype=torch.long)
    for epoch in range(1, s.train.epochs + 1):
        reseed(epoch_seed(s.train.seed, epoch, stream=1), device)
        for loader in loaders:
            set_epoch(loader, epoch)
        epoch_loss = 0.0
        micro = 0
        for batches, last in with_last(zip(*loaders, strict=True)):
            x, y, batched = _inputs(batches, s, device)
            out = stacked.forward(x, "different" if s.vary else "same", batched_x=batched)
            dims = (0, 0 if batched else None)
            losses = vmap(lambda z, t: mean_loss(loss, z, t), in_dims=dims)(out, y)
            (losses.sum() / accumulate if accumulate > 1 else losses.sum()).backward()
            epoch_loss = epoch_loss + losses.detach()
            micro += 1
            if micro == accumulate or last:
                if micro < accumulate:
                    mean_of_partial_group_(plist, accumulate, micro)
                update.step(opt, plist, st, step, s)
                step += 1
                micro = 0
        # as `fit`: diverged when the loss or the weights stop being finite
        finite = torch.stack([p.detach().flatten(1).isfinite().all(1) for p in plist]).all(0)
        finite &= torch.isfinite(epoch_loss)
        bad = ~finite.cpu() & (stacked.diverged_epoch == 0)
        stacked.diverged_epoch[bad] = epoch
        if s.on_epoch is not None:
            s.on_epoch()
    return stacked


def _inputs(batches, s: Settings, device):
    """(inputs, target, batched) of one step: one batch, or each copy's batch stacked (vary)."""
    pairs = []
    for batch in batches:
        x, y = to_device(unpack(batch, s.batch_fn), device)
        if s.augment is not None:  # per batch: augmentations expect (N, C, H, W)
            x = s.augment(x)
        pairs.append((x, y))
    if len(pairs) == 1:
        return *pairs[0], False
    if not all(isinstance(x, torch.Tensor) for x, _ in pairs):
        raise TypeError(
            "vary=True stacks each copy's batch, which needs tensor inputs; "
            f"got {type(pairs[0][0]).__name__}: pass vary=False"
        )
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), True


def _loaders(train, s: Settings, k: int) -> list:
    if not s.vary:
        return [train]
    return [
        TensorLoader(
            *train.tensors,
            batch_size=train.batch_size,
            shuffle=train.shuffle,
            seed=train.seed + s.first + i,
            drop_last=train.drop_last,
        )
        for i in range(k)
    ]

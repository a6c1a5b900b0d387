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
from regulab.layers import Dropout
from regulab.metrics import LOSSES
from regulab.recipe import schema
from regulab.recipe.schema import L1_MODES, OPTIMIZERS, SWEEPABLE
from regulab.sweep import linear
from regulab.sweep.stacked import Stacked

PARAMS = tuple(SWEEPABLE)


@dataclass
class Settings:
    """What the K models train with: the recipe's own sections, plus what a recipe does not hold.

    optim, penalty, slim, train: the recipe sections of the same names
    (`regulab.recipe.schema`), with the meaning and units `regulab train` gives them.
    A copy's swept strength replaces the field that `SWEEPABLE` names (l2 sets
    penalty.l2, bn_sparsity slim.sparsity, ...; dropout sets the model's Dropout
    layers). The engine reads all of optim and penalty, slim.sparsity and
    sparsity_mode, and train.epochs, loss, clip_grad_norm and seed (torch is reseeded
    each epoch from (train.seed, epoch), as `fit` does); the batch size is the loader's.
    "The weights" are `param_groups`' decayed tensors (ndim >= 2, not optim.no_decay).

    In Python, without a recipe file (`from regulab.recipe import schema`):
    `Settings(optim=schema.Optim(lr=0.1, momentum=0.9), train=schema.Train(epochs=3))`.
    """

    optim: schema.Optim = field(default_factory=schema.Optim)  # optimizer, lr, weight decay
    penalty: schema.Penalty = field(default_factory=schema.Penalty)  # l2, l1, max-norm
    slim: schema.Slim = field(default_factory=schema.Slim)  # sparsity: L1 on BatchNorm scales
    train: schema.Train = field(default_factory=schema.Train)  # epochs, loss, seed, clipping
    schedule: object = None  # factor(step) multiplying optim.lr, or None (`build_schedule`)
    augment: object = None  # function applied to each batch, or None (`build_augment`)
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


def set_dropout(model: nn.Module, p: float) -> int:
    """Give every regulab `Dropout` (not DropPath) of model drop probability p as a tensor
    buffer, so that stacking gives each copy its own p; return how many there are."""
    count = 0
    for module in model.modules():
        if type(module) is Dropout:
            if "p" in module.__dict__:
                del module.__dict__["p"]
            p_tensor = torch.tensor(float(p), dtype=torch.float64)  # cast to x's dtype on use
            module.register_buffer("p", p_tensor, persistent=False)
            count += 1
    return count


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


def fit_sweep(
    model, param: str, values, train: TensorLoader, settings: Settings, fast: bool = True
) -> Stacked:
    """Train one copy of model per value of `param`; return the K trained copies.

    model: an nn.Module (copied K times: shared initial weights) or a list of K
    modules (their own weights). param: one of PARAMS; values: K strengths, each
    replacing, for its copy, the field of settings that `SWEEPABLE` names for param
    (as `settings.with_strengths(**{param: value})` would). train: a TensorLoader.
    fast: use `regulab.sweep.linear` for a linear regression (same result, no autograd).
    The returned `Stacked` has `diverged_epoch` (K,): the first epoch whose loss
    was not finite, 0 for copies that did not diverge.
    """
    _checks.one_of("param", param, PARAMS)
    s = settings
    _checks.one_of("settings.optim.name", s.optim.name, OPTIMIZERS)
    _checks.one_of("settings.train.loss", s.train.loss, tuple(LOSSES))
    _checks.one_of("settings.penalty.l1_mode", s.penalty.l1_mode, L1_MODES)
    _checks.one_of("settings.slim.sparsity_mode", s.slim.sparsity_mode, L1_MODES)
    values = [float(v) for v in values]
    if not values:
        raise ValueError("values must hold at least one strength; got none")
    for v in values:
        _checks.non_negative(param, v)
    if param == "dropout" and max(values) >= 1:
        raise ValueError(f"dropout p must be in [0, 1); got {max(values)}")
    shared = not isinstance(model, list | tuple)
    models = [copy.deepcopy(m) for m in ([model] if shared else model)]
    if not shared and len(models) != len(values):
        raise ValueError(f"model: got {len(models)} models for {len(values)} values")
    if param == "dropout":
        for m in models:
            if not set_dropout(m, 0.5):
                raise ValueError("param 'dropout' needs a model with Dropout layers; it has none")
    if param == "bn_sparsity" and not bn_scale_names(models[0]):
        raise ValueError("param 'bn_sparsity' needs a model with BatchNorm layers; it has none")
    stacked = Stacked(models, k=len(values) if shared else None)
    if param == "dropout":  # each copy's own p, one buffer per Dropout layer
        for name, m in models[0].named_modules():
            if type(m) is Dropout:
                stacked.buffers[f"{name}.p"].copy_(torch.tensor(values, dtype=torch.float64))
    if fast and linear.applies(models[0], param, s):
        linear.train(stacked, param, values, train, s)
    else:
        _train(stacked, models[0], param, values, train, s)
    return stacked


def _strength(param, name, values, fixed, like):
    """(K, 1, ...) tensor of the strength for each copy, broadcastable to like."""
    column = values if param == name else [fixed] * len(values)
    out = torch.tensor(column, dtype=like.dtype, device=like.device)
    return out.view(-1, *[1] * (like.ndim - 1))


def _train(stacked: Stacked, like: nn.Module, param, values, train, s: Settings):
    params = stacked.params
    plist = list(params.values())
    o, pen, slim = s.optim, s.penalty, s.slim
    decayed = [params[n] for n in decayed_names(like, o.no_decay)]
    use_bn = slim.sparsity or param == "bn_sparsity"
    scales = [params[n] for n in bn_scale_names(like)] if use_bn else []
    strength = lambda name, fixed, p: _strength(param, name, values, fixed, p)  # noqa: E731
    l2 = [strength("l2", pen.l2, p) for p in decayed]
    wd = [strength("weight_decay", o.weight_decay, p) for p in decayed]
    l1 = [strength("l1", pen.l1, p) for p in decayed]
    bn = [strength("bn_sparsity", slim.sparsity, p) for p in scales]
    use_l2 = param == "l2" or pen.l2 > 0
    use_wd = param == "weight_decay" or o.weight_decay > 0
    use_l1 = param == "l1" or pen.l1 > 0
    l1_grad = use_l1 and pen.l1_mode == "subgradient"
    if o.name == "sgd":
        opt = torch.optim.SGD(plist, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    else:
        opt = torch.optim.Adam(plist, lr=o.lr, betas=tuple(o.betas))  # decay applied here
    group = opt.param_groups[0]
    loss_fn = LOSSES[s.train.loss]
    max_norm_dim = None if pen.max_norm_dim == -1 else pen.max_norm_dim
    per_loss = vmap(lambda z, y: loss_fn(z, y))
    loaders = _loaders(train, s, stacked.k)
    randomness = "different" if s.vary else "same"
    step = 0
    stacked.base.train()
    stacked.diverged_epoch = torch.zeros(stacked.k, dtype=torch.long)
    for epoch in range(1, s.train.epochs + 1):
        reseed(epoch_seed(s.train.seed, epoch, stream=1))
        for loader in loaders:
            loader.set_epoch(epoch)
        epoch_loss = 0.0
        for batches in zip(*loaders, strict=True):
            if s.augment is not None:  # per batch: augmentations expect (N, C, H, W)
                batches = [(s.augment(b[0]), *b[1:]) for b in batches]
            if len(batches) == 1:
                (x, y), batched = batches[0], False
            else:
                x = torch.stack([b[0] for b in batches])
                y = torch.stack([b[1] for b in batches])
                batched = True
            out = stacked.forward(x, randomness, batched_x=batched)
            losses = vmap(loss_fn)(out, y) if batched else per_loss(out, _expand(y, stacked.k))
            losses.sum().backward()
            with torch.no_grad():
                grads = [p.grad for p in decayed]
                if use_l2:
                    _add_scaled_(grads, decayed, l2)
                if l1_grad:
                    _add_scaled_(grads, [p.sign() for p in decayed], l1)
                if scales and slim.sparsity_mode == "subgradient":
                    _add_scaled_([p.grad for p in scales], [p.sign() for p in scales], bn)
                if s.train.clip_grad_norm:
                    _clip_(plist, s.train.clip_grad_norm)
                if s.schedule is not None:
                    group["lr"] = o.lr * s.schedule(step)
                lr = group["lr"]
                if use_wd and o.name != "adamw":  # coupled: what torch.optim does
                    _add_scaled_(grads, decayed, wd)
                if use_wd and o.name == "adamw":  # decoupled, as torch.optim.AdamW
                    for p, w in zip(decayed, wd, strict=True):
                        p.mul_(1 - lr * w)
                opt.step()
                opt.zero_grad(set_to_none=True)
                if scales and slim.sparsity_mode == "proximal":
                    for p, t in zip(scales, bn, strict=True):
                        p.copy_(p.sign() * (p.abs() - lr * t).clamp_min(0))
                if use_l1 and pen.l1_mode == "proximal":
                    for p, t in zip(decayed, l1, strict=True):
                        threshold = lr * t
                        p.copy_(p.sign() * (p.abs() - threshold).clamp_min(0))
                if pen.max_norm:
                    _max_norm_(decayed, pen.max_norm, max_norm_dim)
            step += 1
            epoch_loss = epoch_loss + losses.detach()
        # as `fit`: diverged when the loss or the weights stop being finite
        finite = torch.stack([p.detach().flatten(1).isfinite().all(1) for p in plist]).all(0)
        finite &= torch.isfinite(epoch_loss)
        bad = ~finite.cpu() & (stacked.diverged_epoch == 0)
        stacked.diverged_epoch[bad] = epoch
        if s.on_epoch is not None:
            s.on_epoch()
    return stacked


def reseed(seed: int) -> None:
    """torch.manual_seed without its per-call cost when CUDA was never initialized."""
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


def _add_scaled_(grads, tensors, strengths) -> None:
    """g += c * t for each (g, t, c): per-model strengths c of shape (K, 1, ...)."""
    for g, t, c in zip(grads, tensors, strengths, strict=True):
        g.add_(t * c)


def _expand(y, k):
    return y.expand(k, *y.shape)


def _loaders(train: TensorLoader, s: Settings, k: int) -> list[TensorLoader]:
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


def _clip_(params, max_norm: float) -> None:
    """Per model, as `nn.utils.clip_grad_norm_`: scale by min(1, max_norm / (norm + 1e-6))."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = sum(g.square().flatten(1).sum(1) for g in grads).sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.ndim - 1)))


def _max_norm_(params, max_norm: float, dim: int | None) -> None:
    """Per model, as `regulab.constraints.max_norm_` (dim counted within one model)."""
    for p in params:
        if dim is None:
            norms = torch.linalg.vector_norm(p.flatten(1), dim=1).view(-1, *[1] * (p.ndim - 1))
        else:
            d = dim % (p.ndim - 1) + 1
            others = [i for i in range(1, p.ndim) if i != d]
            norms = torch.linalg.vector_norm(p, dim=others, keepdim=True) if others else p.abs()
        p.mul_(torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-30), 1.0))

"""One optimizer step of K stacked copies: `fit`'s order, with hyperparameters per copy.

After the backward pass of the K summed losses: the coupled penalties (L2, L1's
subgradient, BatchNorm sparsity) are added to each copy's gradients, the gradients
clipped copy by copy, the learning rate set from the schedule (each copy's lr times
the schedule's factor), weight decay applied (coupled for sgd/adam, decoupled as
torch.optim.AdamW, arXiv:1711.05101), the optimizer stepped (`optimizer`), then the
proximal steps and the max-norm projection. Each strength is a (K,) tensor viewed as
(K, 1, ...) against the stacked tensors, so copy k sees exactly the scalar operations
of a `fit` run with its values. A searched max_norm of 0 is no constraint, as the recipe's.
"""

from dataclasses import dataclass

import torch
from torch import nn

from regulab.bn_sparsity import bn_layers
from regulab.groups import param_groups
from regulab.sweep.optimizer import per_copy

# the per-copy strengths a step applies, and the Settings field each replaces
FIELDS = {
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "l2": "penalty.l2",
    "l1": "penalty.l1",
    "max_norm": "penalty.max_norm",
    "bn_sparsity": "slim.sparsity",
}


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


def fixed(s, name: str) -> float:
    """The value settings s (`engine.Settings`) give the strength `name` of FIELDS."""
    section, attr = FIELDS[name].split(".")
    return float(getattr(getattr(s, section), attr))


@dataclass
class Strengths:
    """The tensors a step regularizes and each copy's strengths: (K, 1, ...) views of them."""

    decayed: list  # the weights (`decayed_names`)
    scales: list  # BatchNorm scales, when bn_sparsity acts
    lr: torch.Tensor  # (K,) float64: each copy's lr before the schedule
    l2: list
    wd: list
    l1: list
    bn: list
    max_norm: list  # inf where a copy has no constraint
    use: frozenset  # the strengths that act on some copy: searched, or non-zero in settings


def strengths(decayed, scales, hparams: dict, s) -> Strengths:
    """Strengths for the weights (decayed) and BatchNorm scales: hparams (name -> (K,))
    where searched, else the value of settings s for every copy."""
    k = len(next(iter(hparams.values())))
    use = frozenset(n for n in FIELDS if n in hparams or fixed(s, n) > 0)
    scales = scales if "bn_sparsity" in use else []
    device = (decayed + scales)[0].device if decayed + scales else torch.device("cpu")
    column = {
        name: hparams[name].double()
        if name in hparams
        else torch.full((k,), fixed(s, name), dtype=torch.float64)
        for name in FIELDS
    }
    column["max_norm"] = torch.where(column["max_norm"] > 0, column["max_norm"], torch.inf)
    return Strengths(
        decayed=decayed,
        scales=scales,
        lr=column["lr"].to(device),
        l2=[per_copy(column["l2"], p) for p in decayed],
        wd=[per_copy(column["weight_decay"], p) for p in decayed],
        l1=[per_copy(column["l1"], p) for p in decayed],
        bn=[per_copy(column["bn_sparsity"], p) for p in scales],
        max_norm=[per_copy(column["max_norm"], p) for p in decayed],
        use=use,
    )


@torch.no_grad()
def step(opt, params: dict, st: Strengths, index: int, s) -> None:
    """Optimizer step number index (the schedule's argument) on the summed gradients;
    opt: `optimizer.StackedOptimizer`, params: all stacked tensors by name, s: `Settings`."""
    pen, slim = s.penalty, s.slim
    grads = [p.grad for p in st.decayed]
    if "l2" in st.use:
        add_scaled_(grads, st.decayed, st.l2)
    if "l1" in st.use and pen.l1_mode == "subgradient":
        add_scaled_(grads, [p.sign() for p in st.decayed], st.l1)
    if st.scales and slim.sparsity_mode == "subgradient":
        add_scaled_([p.grad for p in st.scales], [p.sign() for p in st.scales], st.bn)
    if s.train.clip_grad_norm:
        clip_grad_norm_(list(params.values()), s.train.clip_grad_norm)
    lr = st.lr * s.schedule(index) if s.schedule is not None else st.lr
    if "weight_decay" in st.use and opt.name != "adamw":  # coupled: what torch.optim does
        add_scaled_(grads, st.decayed, st.wd)
    if "weight_decay" in st.use and opt.name == "adamw":  # decoupled, as torch.optim.AdamW
        for p, w in zip(st.decayed, st.wd, strict=True):
            p.mul_(1 - per_copy(lr, p) * w)
    opt.step(params, lr)
    for p in params.values():
        p.grad = None
    if st.scales and slim.sparsity_mode == "proximal":
        for p, t in zip(st.scales, st.bn, strict=True):
            p.copy_(p.sign() * (p.abs() - per_copy(lr, p) * t).clamp_min(0))
    if "l1" in st.use and pen.l1_mode == "proximal":
        for p, t in zip(st.decayed, st.l1, strict=True):
            p.copy_(p.sign() * (p.abs() - per_copy(lr, p) * t).clamp_min(0))
    if "max_norm" in st.use:
        max_norm_(st.decayed, st.max_norm, None if pen.max_norm_dim == -1 else pen.max_norm_dim)


def add_scaled_(grads, tensors, strengths) -> None:
    """g += c * t for each (g, t, c): per-model strengths c of shape (K, 1, ...)."""
    for g, t, c in zip(grads, tensors, strengths, strict=True):
        g.add_(t * c)


def clip_grad_norm_(params, max_norm: float) -> None:
    """Per model, as `nn.utils.clip_grad_norm_`: scale by min(1, max_norm / (norm + 1e-6))."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = sum(g.square().flatten(1).sum(1) for g in grads).sqrt()
    coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *[1] * (g.ndim - 1)))


def max_norm_(params, bounds, dim: int | None) -> None:
    """Per model, as `regulab.constraints.max_norm_` (dim counted within one model); bounds:
    a (K, 1, ...) tensor per tensor of params (inf: no constraint)."""
    for p, c in zip(params, bounds, strict=True):
        if dim is None:
            norms = torch.linalg.vector_norm(p.flatten(1), dim=1).view(-1, *[1] * (p.ndim - 1))
        else:
            d = dim % (p.ndim - 1) + 1
            others = [i for i in range(1, p.ndim) if i != d]
            norms = torch.linalg.vector_norm(p, dim=others, keepdim=True) if others else p.abs()
        p.mul_(torch.where(norms > c, c / norms.clamp_min(1e-30), 1.0))

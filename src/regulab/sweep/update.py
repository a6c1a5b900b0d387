"""One optimizer step of K stacked copies: `fit`'s order, with a strength per copy.

After the backward pass of the K summed losses: the coupled penalties (L2, L1's
subgradient, BatchNorm sparsity) are added to each copy's gradients, the gradients
clipped copy by copy, the learning rate set from the schedule, weight decay
applied (coupled for sgd/adam, decoupled as torch.optim.AdamW, arXiv:1711.05101),
the optimizer stepped, then the proximal steps and the max-norm projection. The
strengths are tensors of shape (K, 1, ...) that broadcast against the stacked
tensors, so copy k sees exactly the scalar operations of a `fit` run with strength k.
"""

from dataclasses import dataclass

import torch


@dataclass
class Strengths:
    """The tensors a step regularizes and each copy's strength for them, (K, 1, ...) each."""

    decayed: list  # the weights (`engine.decayed_names`)
    scales: list  # BatchNorm scales, when bn_sparsity acts
    l2: list
    wd: list
    l1: list
    bn: list
    use_l2: bool
    use_wd: bool
    use_l1: bool


def strengths(decayed, scales, param: str, values, s) -> Strengths:
    """Each copy's strengths for the weights (decayed) and BatchNorm scales; s: `Settings`."""
    o, pen = s.optim, s.penalty

    def strength(name, fixed, tensors):
        column = values if param == name else [fixed] * len(values)
        out = []
        for p in tensors:
            t = torch.tensor(column, dtype=p.dtype, device=p.device)
            out.append(t.view(-1, *[1] * (p.ndim - 1)))
        return out

    return Strengths(
        decayed=decayed,
        scales=scales,
        l2=strength("l2", pen.l2, decayed),
        wd=strength("weight_decay", o.weight_decay, decayed),
        l1=strength("l1", pen.l1, decayed),
        bn=strength("bn_sparsity", s.slim.sparsity, scales),
        use_l2=param == "l2" or pen.l2 > 0,
        use_wd=param == "weight_decay" or o.weight_decay > 0,
        use_l1=param == "l1" or pen.l1 > 0,
    )


@torch.no_grad()
def step(opt, plist, st: Strengths, index: int, s) -> None:
    """Optimizer step number index (the schedule's argument) on the summed gradients, with
    (K,) strengths; plist: all stacked parameters, s: `Settings`."""
    o, pen, slim = s.optim, s.penalty, s.slim
    grads = [p.grad for p in st.decayed]
    if st.use_l2:
        add_scaled_(grads, st.decayed, st.l2)
    l1_grad = st.use_l1 and pen.l1_mode == "subgradient"
    if l1_grad:
        add_scaled_(grads, [p.sign() for p in st.decayed], st.l1)
    if st.scales and slim.sparsity_mode == "subgradient":
        add_scaled_([p.grad for p in st.scales], [p.sign() for p in st.scales], st.bn)
    if s.train.clip_grad_norm:
        clip_grad_norm_(plist, s.train.clip_grad_norm)
    group = opt.param_groups[0]
    if s.schedule is not None:
        group["lr"] = o.lr * s.schedule(index)
    lr = group["lr"]
    if st.use_wd and o.name != "adamw":  # coupled: what torch.optim does
        add_scaled_(grads, st.decayed, st.wd)
    if st.use_wd and o.name == "adamw":  # decoupled, as torch.optim.AdamW
        for p, w in zip(st.decayed, st.wd, strict=True):
            p.mul_(1 - lr * w)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if st.scales and slim.sparsity_mode == "proximal":
        for p, t in zip(st.scales, st.bn, strict=True):
            p.copy_(p.sign() * (p.abs() - lr * t).clamp_min(0))
    if st.use_l1 and pen.l1_mode == "proximal":
        for p, t in zip(st.decayed, st.l1, strict=True):
            p.copy_(p.sign() * (p.abs() - lr * t).clamp_min(0))
    if pen.max_norm:
        max_norm_(st.decayed, pen.max_norm, None if pen.max_norm_dim == -1 else pen.max_norm_dim)


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


def max_norm_(params, max_norm: float, dim: int | None) -> None:
    """Per model, as `regulab.constraints.max_norm_` (dim counted within one model)."""
    for p in params:
        if dim is None:
            norms = torch.linalg.vector_norm(p.flatten(1), dim=1).view(-1, *[1] * (p.ndim - 1))
        else:
            d = dim % (p.ndim - 1) + 1
            others = [i for i in range(1, p.ndim) if i != d]
            norms = torch.linalg.vector_norm(p, dim=others, keepdim=True) if others else p.abs()
        p.mul_(torch.where(norms > max_norm, max_norm / norms.clamp_min(1e-30), 1.0))

"""Penalties on the weights: L1, L2, elastic net and group lasso.

Three ways to use them:

* as pure functions added to the loss (autograd does the rest): `l1_penalty`,
  `l2_penalty`, `elastic_net_penalty`, `group_lasso_penalty`;
* fused into the gradient after `backward()`: `Penalty(...).apply_()` adds
  l2 * w + l1 * sign(w) to each `.grad` with `torch._foreach` kernels and no
  autograd graph, which is the gradient of l1 * ||w||_1 + l2 * ||w||^2 / 2;
* as proximal steps after `optimizer.step()`: `prox_l1_` (soft-thresholding,
  which gives exact zeros, unlike the subgradient) and
  `decoupled_weight_decay_` (AdamW's decay for optimizers without it;
  Loshchilov & Hutter, arXiv:1711.05101).

Convention: the L2 penalty is lam * ||w||^2 / 2, whose gradient is lam * w, so
`l2=lam` here, `weight_decay=lam` in torch.optim.SGD and Adam, and Keras's
`l2(c)` (which adds c * ||w||^2) are related by lam = 2c.
"""

from types import GeneratorType

import torch
from torch.nn import functional as F

from regulab import _checks


def l1_penalty(params) -> torch.Tensor:
    """Return sum |w| over all tensors in params (a tensor or an iterable of tensors)."""
    items = _checks.tensors("params", params)
    return sum((p.abs().sum() for p in items), torch.zeros((), device=_device(items)))


def l2_penalty(params) -> torch.Tensor:
    """Return sum w^2 / 2 over all tensors in params; its gradient is w itself."""
    items = _checks.tensors("params", params)
    return sum((p.square().sum() / 2 for p in items), torch.zeros((), device=_device(items)))


def elastic_net_penalty(params, l1_ratio: float) -> torch.Tensor:
    """Return l1_ratio * sum |w| + (1 - l1_ratio) * sum w^2 / 2.

    Multiplied by alpha, this is scikit-learn's ElasticNet penalty
    alpha * l1_ratio * ||w||_1 + alpha * (1 - l1_ratio) * ||w||^2 / 2.
    """
    l1_ratio = _checks.probability("l1_ratio", l1_ratio)
    items = _checks.tensors("params", params)  # a list: a generator would be used up by L1
    return l1_ratio * l1_penalty(items) + (1 - l1_ratio) * l2_penalty(items)


def group_lasso_penalty(params, dim: int = 0) -> torch.Tensor:
    """Return the sum of the L2 norms of the slices of each tensor along `dim`.

    dim=0 makes each output unit (a row of a Linear weight) or each output channel
    (a filter of a Conv weight) one group, so that whole units are driven to zero
    (Yuan & Lin 2006; structured sparsity as in Wen et al., arXiv:1608.03665).
    Tensors with fewer than 2 dimensions (biases) count as one group each.
    At a group equal to zero the gradient is taken as zero (a subgradient).
    """
    items = _checks.tensors("params", params)
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise ValueError(f"dim must be an integer tensor dimension such as 0; got {dim!r}")
    total = torch.zeros((), device=_device(items))
    for p in items:
        if p.ndim >= 2 and not -p.ndim <= dim < p.ndim:
            raise ValueError(
                f"dim must be in [{-p.ndim}, {p.ndim - 1}] for a tensor of shape "
                f"{tuple(p.shape)}; got {dim}"
            )
        if p.numel() == 0:
            continue
        if p.ndim < 2:
            total = total + torch.linalg.vector_norm(p)
        else:
            flat = p.movedim(dim, 0).reshape(p.shape[dim], -1)
            total = total + torch.linalg.vector_norm(flat, dim=1).sum()
    return total


def _device(items) -> torch.device:
    return items[0].device if items else torch.device("cpu")


class Penalty:
    """Adds the gradient of l1 * ||w||_1 + l2 * ||w||^2 / 2 to `.grad` in place.

    Call `apply_()` between `loss.backward()` and `optimizer.step()`. The strengths
    are coupled (they go through the optimizer like any gradient), so with SGD
    `Penalty(params, l2=lam)` is the same as `weight_decay=lam`.

    `params_or_groups` is a tensor, an iterable of tensors, or a list of parameter
    groups (dicts with "params"). A group may carry its own "l1" and "l2"; a group
    with "penalize": False (the no-decay group of `param_groups`) is skipped, so
    `Penalty(param_groups(model, 0.0), l1=1e-4)` leaves biases and norm layers alone.
    Parameters whose `.grad` is None are skipped. At w = 0 the L1 term adds 0. A Penalty
    over no tensor (an empty list, a used-up generator) is refused: it would do nothing.
    """

    def __init__(self, params_or_groups, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _checks.non_negative("l1", l1)
        self.l2 = _checks.non_negative("l2", l2)
        items = params_or_groups
        if (
            isinstance(items, dict | list | tuple)
            and items
            and all(isinstance(g, dict) for g in items)
        ):
            groups = list(items)
        else:
            groups = [{"params": _checks.tensors("params_or_groups", items)}]
        self.groups = []
        seen = set()
        for i, group in enumerate(groups):
            if "params" not in group:
                raise ValueError(f"params_or_groups[{i}] is a dict without a 'params' entry")
            if not group.get("penalize", True):
                continue
            g_l1 = _checks.non_negative(f"params_or_groups[{i}]['l1']", group.get("l1", self.l1))
            g_l2 = _checks.non_negative(f"params_or_groups[{i}]['l2']", group.get("l2", self.l2))
            params = _checks.tensors(f"params_or_groups[{i}]['params']", group["params"])
            for p in params:
                if id(p) in seen:
                    raise ValueError(
                        f"a parameter of shape {tuple(p.shape)} appears more than once in "
                        "params_or_groups; it would be penalized twice"
                    )
                seen.add(id(p))
            self.groups.append((params, g_l1, g_l2))
        if not seen:
            raise ValueError(_nothing_to_penalize(params_or_groups))
        self._sign_buffers = {}

    def __repr__(self) -> str:
        sizes = [sum(p.numel() for p in params) for params, _, _ in self.groups]
        return f"Penalty(l1={self.l1:g}, l2={self.l2:g}, parameters={sum(sizes):,})"

    @torch.no_grad()
    def apply_(self) -> None:
        """Add l2 * w + l1 * sign(w) to the gradient of every penalized parameter."""
        for params, l1, l2 in self.groups:
            if not l1 and not l2:
                continue
            with_grad = [p for p in params if p.grad is not None]
            if not with_grad:
                continue
            grads = [p.grad for p in with_grad]
            if l2:
                torch._foreach_add_(grads, with_grad, alpha=l2)
            if l1:
                torch._foreach_add_(grads, _signs(with_grad, self._sign_buffers), alpha=l1)

    @torch.no_grad()
    def value(self) -> torch.Tensor:
        """Return the penalty l1 * ||w||_1 + l2 * ||w||^2 / 2 (for logging; no graph)."""
        total = None
        for params, l1, l2 in self.groups:
            term = l1 * l1_penalty(params) + l2 * l2_penalty(params)
            total = term if total is None else total + term
        return total if total is not None else torch.zeros(())


def _nothing_to_penalize(given) -> str:
    """What to say when a Penalty would act on no tensor (it would silently do nothing)."""
    if isinstance(given, GeneratorType):
        what = (
            "a generator that is used up (model.parameters() can be read once, and an "
            "optimizer built from it has read it)"
        )
    elif isinstance(given, list | tuple) and given and all(isinstance(g, dict) for g in given):
        what = "groups whose parameters are all empty or have 'penalize': False"
    else:
        what = "no tensors"
    return (
        f"params_or_groups must hold the tensors to penalize; got {what}: pass "
        "param_groups(model) or list(model.parameters())"
    )


@torch.no_grad()
def prox_l1_(params, threshold: float) -> None:
    """Soft-threshold in place: w <- sign(w) * max(|w| - threshold, 0).

    This is the proximal operator of threshold * ||w||_1. Called after a plain
    gradient step of the data loss with threshold = lr * l1, it makes proximal
    gradient descent (ISTA) on loss + l1 * ||w||_1, which sets small weights to
    exactly zero; adding l1 * sign(w) to the gradient only makes them oscillate
    around zero. With a mean loss mean(r^2) / 2, l1 equals scikit-learn Lasso's alpha.
    """
    threshold = _checks.non_negative("threshold", threshold)
    items = _checks.tensors("params", params)
    for p in items:
        if not p.is_floating_point():
            raise ValueError(f"params must be floating-point tensors; got dtype {p.dtype}")
    if threshold == 0:
        return
    for p in items:  # a threshold past the dtype's largest value zeroes every weight anyway
        p.copy_(F.softshrink(p, min(threshold, torch.finfo(p.dtype).max)))


@torch.no_grad()
def decoupled_weight_decay_(params, lr: float, weight_decay: float) -> None:
    """Multiply the weights by 1 - lr * weight_decay in place (decoupled decay).

    Call it after backward() and before optimizer.step(); with Adam's step after it,
    the result equals AdamW with the same lr and weight_decay, which is torch's
    convention (decay scaled by the current lr; Loshchilov & Hutter,
    arXiv:1711.05101). Unlike Adam(weight_decay=...), which adds the decay to the
    gradient and lets Adam's per-coordinate scaling shrink it where gradients are
    large, every weight shrinks by the same factor.
    """
    if isinstance(lr, torch.Tensor) and lr.numel() == 1:
        lr = lr.item()  # optimizers may hold lr as a tensor
    lr = _checks.non_negative("lr", lr)
    weight_decay = _checks.non_negative("weight_decay", weight_decay)
    items = _checks.tensors("params", params)
    factor = 1.0 - lr * weight_decay
    if items and factor != 1.0:
        torch._foreach_mul_(items, factor)


def _signs(params: list[torch.Tensor], buffers: dict) -> list[torch.Tensor]:
    """sign(w) for each tensor, written into one buffer per parameter kept between steps.

    A fresh tensor per step costs page faults on the CPU comparable to the
    arithmetic; the buffers cost one copy of the L1-penalized weights in memory.
    """
    signs = []
    for p in params:
        buf = buffers.get(id(p))
        if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
            buf = buffers[id(p)] = torch.empty_like(p)
        signs.append(torch.sign(p, out=buf))
    return signs

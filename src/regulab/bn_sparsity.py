"""Sparsity on BatchNorm scales: the paper's L1 term s * sum |gamma| (arXiv:1708.06519, eq. 1).

The subgradient s * sign(gamma) is added to the scales' gradients after backward
(the paper's s: 1e-4 for VGG, 1e-5 for residual nets); it is a `Penalty` on the
scales, so `fit(..., penalty=sparsity_penalty(model, s))` trains with it. The
proximal variant soft-thresholds the scales by lr * s after each step and gives
exact zeros (`prox_l1_`).
"""

import torch
from torch import nn

from regulab.penalties import Penalty, prox_l1_

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every BatchNorm layer of model with a learnable scale."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, BATCH_NORMS) and m.weight is not None
    ]


def bn_scales(model: nn.Module) -> list[torch.Tensor]:
    """The BatchNorm scales (gamma) of model."""
    scales = [m.weight for _, m in bn_layers(model)]
    if not scales:
        raise ValueError(
            f"model must have BatchNorm layers with a learnable scale (affine=True) for "
            f"network slimming; {type(model).__name__} has none"
        )
    return scales


def sparsity_penalty(model: nn.Module, s: float) -> Penalty:
    """A `Penalty` adding s * sign(gamma) to every BatchNorm scale's gradient."""
    return Penalty(bn_scales(model), l1=s)


@torch.no_grad()
def prox_bn_(model: nn.Module, threshold: float) -> None:
    """Soft-threshold every BatchNorm scale by threshold (= lr * s after a step)."""
    prox_l1_(bn_scales(model), threshold)


@torch.no_grad()
def gamma_histogram(model: nn.Module, bins: int = 20, top: float | None = None) -> dict:
    """Histogram of |gamma| over all BatchNorm scales: {"edges": [...], "counts": [...]}.

    Bins are equal-width on [0, top] (default: the largest |gamma|).
    """
    gammas = torch.cat([g.detach().abs().flatten().float().cpu() for g in bn_scales(model)])
    top = float(gammas.max()) if top is None else float(top)
    top = top if top > 0 else 1.0
    counts = torch.histc(gammas.clamp(max=top), bins=bins, min=0.0, max=top)
    edges = torch.linspace(0.0, top, bins + 1)
    return {"edges": edges.tolist(), "counts": [int(c) for c in counts.tolist()]}

"""Label smoothing and cross-entropy on soft targets, a pure function plus a thin module each.

* `label_smoothing_cross_entropy` / `LabelSmoothingCrossEntropy`: label smoothing
  (Szegedy et al., arXiv:1512.00567): the target q becomes (1 - s) q + s / C, so the
  loss is (1 - s) CE(q) + s mean_c(-log p_c). With a float s it equals
  `F.cross_entropy(logits, target, label_smoothing=s)`; s may also be a tensor, one
  value per example, or one per stacked copy under `torch.func.vmap`.
* `soft_target_cross_entropy` / `SoftTargetCrossEntropy`: -sum_c q_c log p_c for
  targets q that are probabilities, such as mixup's and CutMix's (`regulab.mixing`).

The target may be class indices (N,) or probabilities (N, C) in both, as for
`F.cross_entropy`: the same loss serves a training batch of soft targets and an
evaluation batch of hard labels (`fit` evaluates with the loss it trains with).
"""

import torch
from torch import nn
from torch.nn import functional as F

from regulab import _checks

REDUCTIONS = ("mean", "sum", "none")


def label_smoothing_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, smoothing=0.0, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of logits (N, C) against target smoothed by `smoothing` (arXiv:1512.00567).

    target: class indices (N,) or probabilities (N, C). smoothing: a number in [0, 1],
    or a floating tensor that broadcasts against the per-example losses (N,): () or
    (N,), e.g. one value per stacked copy under vmap (tensor values are not checked,
    so that vmap can trace them). reduction: "mean" over examples, "sum" or "none".
    """
    _check(logits, target, reduction)
    if isinstance(smoothing, torch.Tensor):
        if not smoothing.is_floating_point() or smoothing.ndim > 1:
            raise ValueError(
                "smoothing must be a number in [0, 1] or a floating tensor of shape () or (N,); "
                f"got a {smoothing.dtype} tensor of shape {tuple(smoothing.shape)}"
            )
    else:
        smoothing = _checks.probability("smoothing", smoothing)
    logp = F.log_softmax(logits, dim=-1)
    if target.is_floating_point():
        nll = -(target.to(logp.dtype) * logp).sum(-1)
    else:
        nll = -logp.gather(-1, target.long()[:, None]).squeeze(-1)
    each = (1 - smoothing) * nll + smoothing * -logp.mean(-1)  # the smoothed target's CE
    return _reduce(each, reduction)


def soft_target_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """-sum_c target_c log softmax(logits)_c per example; target probabilities (N, C) or
    class indices (N,). Equals `F.cross_entropy(logits, target)` (timm's
    `SoftTargetCrossEntropy`); the loss to pair with `regulab.mixing.Mixup`."""
    return label_smoothing_cross_entropy(logits, target, 0.0, reduction)


class LabelSmoothingCrossEntropy(nn.Module):
    """`label_smoothing_cross_entropy` with a fixed smoothing: a loss for `fit(loss=...)`."""

    def __init__(self, smoothing: float = 0.1, reduction: str = "mean"):
        super().__init__()
        self.smoothing = _checks.probability("smoothing", smoothing)
        self.reduction = _checks.one_of("reduction", reduction, REDUCTIONS)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return label_smoothing_cross_entropy(logits, target, self.smoothing, self.reduction)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"


class SoftTargetCrossEntropy(nn.Module):
    """`soft_target_cross_entropy` as a module: a loss for `fit(loss=...)` with mixup."""

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = _checks.one_of("reduction", reduction, REDUCTIONS)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_target_cross_entropy(logits, target, self.reduction)


def _check(logits, target, reduction) -> None:
    _checks.one_of("reduction", reduction, REDUCTIONS)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a tensor of shape (N, C); got {got}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(
            f"target must be class indices (N,) or probabilities (N, C); got {type(target)}"
        )
    shape = tuple(logits.shape[:1]) if not target.is_floating_point() else tuple(logits.shape)
    if tuple(target.shape) != shape:
        kind = "class indices" if not target.is_floating_point() else "probabilities"
        raise ValueError(
            f"target ({kind}) must have shape {shape} for logits of shape "
            f"{tuple(logits.shape)}; got {tuple(target.shape)}"
        )


def _reduce(each: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return each.mean()
    return each.sum() if reduction == "sum" else each

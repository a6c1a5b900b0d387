"""The finalists of a tuning run as one model: their predictions averaged.

Classification averages the members' predicted probabilities (Lakshminarayanan et al. 2017,
arXiv:1612.01474) and returns their log, so cross-entropy and argmax read the ensemble's
own prediction; other losses average the outputs.
"""

import math

import torch
from torch import nn


class Ensemble(nn.Module):
    """members: modules with the same outputs; probabilities: average softmax over dim 1
    (the class dimension of cross-entropy) and return its log, else average the outputs."""

    def __init__(self, members, probabilities: bool = True):
        super().__init__()
        members = list(members)
        if not members or not all(isinstance(m, nn.Module) for m in members):
            raise TypeError("members must be a non-empty list of nn.Module")
        self.members = nn.ModuleList(members)
        self.probabilities = bool(probabilities)

    def forward(self, *args, **kwargs):
        outs = torch.stack([m(*args, **kwargs) for m in self.members])
        if not self.probabilities:
            return outs.mean(0)
        return torch.logsumexp(outs.log_softmax(2), 0) - math.log(len(self.members))


def ensemble(models: list, settings) -> Ensemble | None:
    """The finalists of a run with `settings` (a `sweep.Settings`) as an `Ensemble` in eval
    mode (probabilities for the loss name "cross_entropy", else outputs); None for one."""
    if len(models) < 2:
        return None
    probabilities = settings.loss is None and settings.train.loss == "cross_entropy"
    return Ensemble(models, probabilities).eval()

"""K copies of one model stacked along a leading dimension, run as one with torch.func.

`stack_module_state` stacks the parameters and buffers (BatchNorm running
statistics included, so each copy keeps its own); `vmap(functional_call)` runs
all copies in one forward. The copies can be evaluated, measured and taken out
as ordinary modules.
"""

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from regulab.metrics import CLASSIFICATION, LOSSES


class Stacked:
    """K stacked copies of a model: parameters and buffers with a leading K dimension."""

    def __init__(self, models: list[nn.Module], k: int | None = None):
        """Stack a list of models, or k copies of the one model in `models`."""
        self.base = copy.deepcopy(models[0]).to("meta")
        if k is None:
            params, buffers = stack_module_state(models)
        else:  # one model repeated: no K deep copies
            params = {n: t.detach().expand(k, *t.shape) for n, t in models[0].named_parameters()}
            buffers = {n: t.expand(k, *t.shape) for n, t in models[0].named_buffers()}
        self.params = {n: t.detach().clone().requires_grad_() for n, t in params.items()}
        self.buffers = {n: t.detach().clone() for n, t in buffers.items()}
        self.k = len(models) if k is None else k

    def forward(self, x, randomness="same", batched_x=False):
        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        dims = (0, 0, 0 if batched_x else None)
        return vmap(one, in_dims=dims, randomness=randomness)(self.params, self.buffers, x)

    def model(self, k: int) -> nn.Module:
        """Copy k as an ordinary module holding copies of its tensors."""
        tensors = {**self.params, **self.buffers}
        device = next(iter(tensors.values())).device
        out = copy.deepcopy(self.base).to_empty(device=device)
        with torch.no_grad():
            for name, t in tensors.items():
                module_name, _, attr = name.rpartition(".")
                getattr(out.get_submodule(module_name), attr).copy_(t[k])
        out.train(False)
        return out

    @torch.no_grad()
    def evaluate(self, data, loss: str, batch_size: int = 1024) -> dict:
        """Per-model metrics on data (x, y) in eval mode: tensors of shape (K,).

        loss, loss_se (the standard error of the mean over examples), accuracy.
        """
        loss_fn = LOSSES[loss]
        x, y = data
        was = self.base.training
        self.base.eval()
        sums = torch.zeros(3, self.k, dtype=torch.float64, device=x.device)
        try:
            for start in range(0, len(x), batch_size):
                xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                out = self.forward(xb)
                each = vmap(lambda o, y=yb: loss_fn(o, y, reduction="none"))(out).double()
                each = each.reshape(self.k, -1)
                sums[0] += each.sum(1)
                sums[1] += each.square().sum(1)
                if loss in CLASSIFICATION:
                    sums[2] += (out.argmax(-1) == yb).sum(1)
        finally:
            self.base.train(was)
        n = len(x)
        if n == 0:
            raise ValueError("evaluation data holds no examples")
        mean = sums[0] / n
        var = (sums[1] / n - mean.square()).clamp_min(0) * n / max(n - 1, 1)
        return {
            "loss": mean,
            "loss_se": (var / n).sqrt(),
            "accuracy": sums[2] / n if loss in CLASSIFICATION else None,
        }

    @torch.no_grad()
    def weight_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-model (||w||, fraction of exact zeros) over tensors with ndim >= 2 per model."""
        weights = [p for p in self.params.values() if p.ndim >= 3]
        if not weights:
            zero = torch.zeros(self.k, dtype=torch.float64)
            return zero, zero
        sq = sum(p.double().square().flatten(1).sum(1) for p in weights)
        zeros = sum((p == 0).flatten(1).sum(1) for p in weights)
        size = sum(p[0].numel() for p in weights)
        return sq.sqrt(), zeros.double() / size

"""K copies of one model stacked along a leading dimension, run as one with torch.func.

`stack_module_state` stacks the parameters and buffers (BatchNorm running
statistics included, so each copy keeps its own); `vmap(functional_call)` runs
all copies in one forward. The copies can be evaluated (on tensors or any iterable of
batches, such as a DataLoader), measured and taken out as ordinary modules, and the
stack shrunk to some of them (`keep`) or copies overwritten by others (`copy_`).
"""

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from regulab.metrics import batches, check_loss, correct, examples, mean_loss, to_device, unpack
from regulab.sweep.native import per_example


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

    def keep(self, index: torch.Tensor) -> None:
        """Keep copies index (K' indices, in that order): new tensors with leading dim K'."""
        dev = next(iter(self.params.values())).device
        index = index.to(dev)
        params = self.params.items()
        self.params = {n: t.detach()[index].clone().requires_grad_() for n, t in params}
        self.buffers = {n: t[index].clone() for n, t in self.buffers.items()}
        if getattr(self, "diverged_epoch", None) is not None:
            self.diverged_epoch = self.diverged_epoch[index.cpu()].clone()
        self.k = len(index)

    @torch.no_grad()
    def copy_(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Copies dst take the parameters and buffers of copies src (all read first)."""
        for t in (*self.params.values(), *self.buffers.values()):
            t[dst.to(t.device)] = t[src.to(t.device)]
        if getattr(self, "diverged_epoch", None) is not None:
            self.diverged_epoch[dst.cpu()] = self.diverged_epoch[src.cpu()]

    def forward(self, x, randomness="same", batched_x=False):
        """The K outputs (K, ...) for inputs x: a tensor (`model(x)`), a tuple or list
        (`model(*x)`) or a dict (`model(**x)`); batched_x: x holds one batch per copy."""

        def one(params, buffers, x):
            if isinstance(x, dict):
                return functional_call(self.base, (params, buffers), (), x)
            args = tuple(x) if isinstance(x, tuple | list) else (x,)
            return functional_call(self.base, (params, buffers), args)

        if self.k == 1 and randomness == "same" and not batched_x:  # no vmap: one plain call
            out = one(_first(self.params), _first(self.buffers), x)
            return torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), out)
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
    def evaluate(self, data, loss, batch_size: int = 1024, batch_fn=None) -> dict:
        """Per-model metrics in eval mode: tensors of shape (K,).

        data: (x, y) tensors, cut into batches of batch_size, or any iterable of batches
        (a DataLoader, a TensorLoader); batch_fn(batch) -> (inputs, target) maps batches
        that are not (x, y) pairs. loss: a name of `regulab.metrics.LOSSES` or a callable
        (output, target) -> mean loss, reduced as `regulab.metrics.evaluate` reduces it.
        Returns loss, loss_se (the standard error of the mean of the examples' own losses,
        `native.per_example`) and accuracy (None where `regulab.metrics.correct` gives none).
        """
        loss = check_loss(loss)
        each_fn = vmap(per_example(loss), in_dims=(0, None))
        device = next(iter(self.params.values())).device
        was = self.base.training
        self.base.eval()
        # loss (as metrics.evaluate), examples' losses and their squares, correct, no accuracy
        sums = torch.zeros(5, self.k, dtype=torch.float64, device=device)
        n = 0
        try:
            for batch in batches(data, batch_size):
                inputs, y = to_device(unpack(batch, batch_fn), device)
                out = self.forward(inputs)
                each = each_fn(out, y).double()  # (K, B)
                if isinstance(loss, str):
                    sums[0] += each.sum(1)
                else:  # as metrics.evaluate: the batch's mean loss times its examples
                    sums[0] += _means(loss, out, y) * examples(y)
                sums[1] += each.sum(1)
                sums[2] += each.square().sum(1)
                hits = [correct(o, y, loss) for o in out]  # [correct, counts] or None per copy
                if hits[0] is None:
                    sums[4] += 1
                else:
                    hits = torch.stack(hits).double()
                    sums[3] += hits[:, 0]
                    sums[4] += 1 - hits[:, 1]
                n += examples(y)
        finally:
            self.base.train(was)
        if n == 0:
            raise ValueError("evaluation data holds no examples")
        var = (sums[2] / n - (sums[1] / n).square()).clamp_min(0) * n / max(n - 1, 1)
        return {
            "loss": sums[0] / n,
            "loss_se": (var / n).sqrt(),
            "accuracy": sums[3] / n if bool((sums[4] == 0).all()) else None,
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


def _first(tensors: dict) -> dict:
    """The views of copy 0 (gradients and in-place buffer updates reach the stack)."""
    return {n: t[0] for n, t in tensors.items()}


def _means(loss, out, y):
    """(K,) mean loss of each copy on the batch."""
    return vmap(lambda o: mean_loss(loss, o, y))(out).double()

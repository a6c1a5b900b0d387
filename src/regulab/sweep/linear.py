"""Fast path for K linear regressions: weights as one (K, d) tensor, gradients in closed form.

For y_hat = x w + b and the loss mean (y_hat - y)^2 / 2 the minibatch gradient is
r^T x / B for w and mean(r) for b (residuals r = y_hat - y); with all K models at
once that is one (B, K)^T (B, d) matrix product per step and no autograd. "mse"
doubles it. The update is the same SGD as `torch.optim.SGD` (momentum, Nesterov),
with the strengths applied as in `engine`.
"""

import contextlib

import torch
from torch import nn

from regulab.data.loader import TensorLoader

LOSS_SCALE = {"half_mse": 1.0, "mse": 2.0}


def applies(model: nn.Module, param: str, s) -> bool:
    """True when the fast path computes exactly what the generic engine would (s: `Settings`)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    others = [
        m for m in model.modules() if not isinstance(m, nn.Linear | nn.Flatten | nn.Sequential)
    ]
    return (
        len(linears) == 1
        and linears[0].out_features == 1
        and linears[0].bias is not None
        and not others
        and s.train.loss in LOSS_SCALE
        and s.optim.name == "sgd"
        and param in ("l2", "weight_decay", "l1")
        and not (s.train.clip_grad_norm or s.augment or s.vary)
        and not (s.penalty.max_norm or s.slim.sparsity or s.optim.no_decay)
        and s.loss is None
        and s.batch_fn is None
        and getattr(s.train, "accumulate", 1) == 1
    )


SMALL = 2**15  # weights (K x (d + 1)) below torch's parallel grain: one thread is faster


@contextlib.contextmanager
def _one_thread_if(small: bool):
    """On small problems run single-threaded: waking a second thread for a (5 x 201) by
    (201 x 33) product costs more than the product (measured 15 against 11 us a step)."""
    before = torch.get_num_threads()
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def train(stacked, param: str, values, loader, s) -> None:
    """Train the K stacked linear models of `stacked` in place (see `_train`)."""
    (w_name,) = [n for n, p in stacked.params.items() if p.ndim == 3]
    small = stacked.params[w_name].numel() <= SMALL and stacked.params[w_name].device.type == "cpu"
    with _one_thread_if(small):
        _train(stacked, param, values, loader, s)


@torch.no_grad()
def _train(stacked, param: str, values, loader, s) -> None:
    """Train the K stacked linear models of `stacked` in place (see module docstring).

    The bias is folded into the weights as a last column against an input of ones,
    so a step is three matrix operations: r = [x 1] W^T - y, the gradient
    r^T [x 1] / B plus the decay (zero on the bias column), and the update.
    """
    (w_name,) = [n for n, p in stacked.params.items() if p.ndim == 3]
    (b_name,) = [n for n, p in stacked.params.items() if p.ndim == 2]
    w = stacked.params[w_name].detach().squeeze(1)  # (K, d)
    b = stacked.params[b_name].detach()  # (K, 1)
    k, d = w.shape
    weights = torch.cat([w, b], 1)  # (K, d + 1)

    def column(name, fixed):
        got = values if param == name else [fixed] * len(values)
        strength = torch.tensor(got, dtype=w.dtype, device=w.device)[:, None]
        return torch.cat([strength.expand(k, d), torch.zeros_like(b)], 1)  # bias: none

    o, pen = s.optim, s.penalty
    coupled = column("l2", pen.l2) + column("weight_decay", o.weight_decay)  # added to the grad
    l1 = column("l1", pen.l1)
    use_l1 = param == "l1" or pen.l1 > 0
    l1_grad = use_l1 and pen.l1_mode == "subgradient"
    scale = LOSS_SCALE[s.train.loss]
    x_all, y_all = loader.tensors[:2]
    x_all = torch.cat([x_all.flatten(1), torch.ones_like(x_all[:, :1].flatten(1))], 1)
    neg_y = -y_all.to(w.dtype)[:, None]
    batches = TensorLoader(  # the same batches as `loader`: its order comes from (seed, epoch)
        x_all,
        neg_y,
        batch_size=loader.batch_size,
        shuffle=loader.shuffle,
        seed=loader.seed,
        drop_last=loader.drop_last,
    )
    plain = not o.momentum and not l1_grad  # no gradient buffer needed
    shrink = 1 - o.lr * coupled if s.schedule is None else None
    buf = None
    step = 0
    stacked.diverged_epoch = torch.zeros(k, dtype=torch.long)
    for epoch in range(1, s.train.epochs + 1):
        batches.set_epoch(epoch)
        for x, ny in batches:
            r = torch.addmm(ny, x, weights.T)  # residuals (B, K)
            lr = o.lr * s.schedule(step) if s.schedule is not None else o.lr
            if plain:  # w <- (1 - lr c) w - lr r^T x / B: the same step, two in-place operations
                weights.mul_(shrink if shrink is not None else 1 - lr * coupled)
                weights.addmm_(r.T, x, alpha=-lr * scale / x.shape[0])
                if use_l1:  # soft-threshold; l1 is 0 on the bias column
                    weights.copy_(weights.sign() * (weights.abs() - lr * l1).clamp_min(0))
                step += 1
                continue
            g = torch.addmm(coupled * weights, r.T, x, alpha=scale / x.shape[0])
            if l1_grad:
                g += l1 * weights.sign()
            if o.momentum:
                buf = g.clone() if buf is None else buf.mul_(o.momentum).add_(g)
                g = g + o.momentum * buf if o.nesterov else buf
            weights.add_(g, alpha=-lr)
            if use_l1 and not l1_grad:  # soft-threshold; l1 is 0 on the bias column
                weights.copy_(weights.sign() * (weights.abs() - lr * l1).clamp_min(0))
            step += 1
        # as `fit`: diverged when the loss on the training data (or ||w||, which a
        # non-finite weight makes non-finite too, through the column of ones) is not finite
        loss = torch.addmm(neg_y, x_all, weights.T).square().sum(0)
        if not loss.sum().isfinite():
            bad = ~loss.isfinite().cpu() & (stacked.diverged_epoch == 0)
            stacked.diverged_epoch[bad] = epoch
        if s.on_epoch is not None:
            s.on_epoch()
    stacked.params[w_name].data.copy_(weights[:, None, :d])
    stacked.params[b_name].data.copy_(weights[:, d:])

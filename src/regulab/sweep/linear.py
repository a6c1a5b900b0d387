"""Fast path for K linear regressions: weights as one (K, d) tensor, gradients in closed form.

For y_hat = x w + b and the loss mean (y_hat - y)^2 / 2 the minibatch gradient is
r^T x / B for w and mean(r) for b (residuals r = y_hat - y); with all K models at
once that is one (B, K)^T (B, d) matrix product per step and no autograd. "mse"
doubles it. The update is the same SGD as `torch.optim.SGD` (momentum, Nesterov),
with the strengths applied as in `engine`.
"""

import torch
from torch import nn

LOSS_SCALE = {"half_mse": 1.0, "mse": 2.0}


def applies(model: nn.Module, param: str, s) -> bool:
    """True when the fast path computes exactly what the generic engine would."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    others = [
        m for m in model.modules() if not isinstance(m, nn.Linear | nn.Flatten | nn.Sequential)
    ]
    return (
        len(linears) == 1
        and linears[0].out_features == 1
        and linears[0].bias is not None
        and not others
        and s.loss in LOSS_SCALE
        and s.optimizer == "sgd"
        and param in ("l2", "weight_decay", "l1")
        and not (s.clip_grad_norm or s.augment or s.vary or s.max_norm or s.bn_sparsity)
        and not s.no_decay
    )


@torch.no_grad()
def train(stacked, param: str, values, loader, s) -> None:
    """Train the K stacked linear models of `stacked` in place (see module docstring)."""
    (w_name,) = [n for n, p in stacked.params.items() if p.ndim == 3]
    (b_name,) = [n for n, p in stacked.params.items() if p.ndim == 2]
    w = stacked.params[w_name].detach().squeeze(1).clone()  # (K, d)
    b = stacked.params[b_name].detach().squeeze(1).clone()  # (K,)

    def column(name, fixed):
        got = values if param == name else [fixed] * len(values)
        return torch.tensor(got, dtype=w.dtype, device=w.device)[:, None]

    l2, wd, l1 = column("l2", s.l2), column("weight_decay", s.weight_decay), column("l1", s.l1)
    coupled = l2 + wd  # both are added to the gradient before the SGD step
    l1_grad = s.l1_mode == "subgradient"
    scale = LOSS_SCALE[s.loss]
    buf_w = buf_b = None
    step = 0
    stacked.diverged_epoch = torch.zeros(stacked.k, dtype=torch.long)
    for epoch in range(1, s.epochs + 1):
        loader.set_epoch(epoch)
        epoch_loss = 0.0
        for x, y in loader:
            x = x.flatten(1)
            r = torch.addmm(b, x, w.T) - y[:, None].to(w.dtype)  # (B, K)
            n = len(y)
            g_w = (r.T @ x) * (scale / n) + coupled * w
            if l1_grad:
                g_w += l1 * w.sign()
            g_b = r.sum(0) * (scale / n)
            lr = s.lr * s.schedule(step) if s.schedule is not None else s.lr
            if s.momentum:
                if buf_w is None:
                    buf_w, buf_b = g_w.clone(), g_b.clone()
                else:
                    buf_w.mul_(s.momentum).add_(g_w)
                    buf_b.mul_(s.momentum).add_(g_b)
                if s.nesterov:
                    g_w, g_b = g_w + s.momentum * buf_w, g_b + s.momentum * buf_b
                else:
                    g_w, g_b = buf_w, buf_b
            w -= lr * g_w
            b -= lr * g_b
            if not l1_grad:
                w.copy_(w.sign() * (w.abs() - lr * l1).clamp_min(0))
            step += 1
            epoch_loss = epoch_loss + r.square().mean(0) * (scale / 2)
        bad = ~torch.isfinite(epoch_loss).cpu() & (stacked.diverged_epoch == 0)
        stacked.diverged_epoch[bad] = epoch
    stacked.params[w_name].data.copy_(w[:, None, :])
    stacked.params[b_name].data.copy_(b[:, None])

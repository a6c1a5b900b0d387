"""L2-regularized linear regression trained by minibatch SGD, written twice.

Both versions minimize, on each minibatch B,

    J(w, b) = mean_{i in B} (x_i . w + b - y_i)^2 / 2  +  lam * ||w||^2 / 2

so the step on w uses the gradient  X_B^T r / |B| + lam * w  (r the residuals)
and the bias is not penalized. This is the weight-decay experiment of Dive into
Deep Learning, section 3.7 (Zhang et al., d2l.ai).

* `train_scratch` writes the loss and the SGD update by hand (autograd only
  computes the gradient).
* `train_concise` uses `nn.Linear`, a half mean-squared-error loss and
  `torch.optim.SGD` with two parameter groups: the weight with
  `weight_decay=lam`, the bias with none. SGD's weight decay is coupled: it adds
  lam * w to the gradient, which is exactly the gradient of lam * ||w||^2 / 2.

Given the same initial weights and minibatch order the two end with the same
weights. The 1/2 in the data term is what makes them agree: the concise code
often seen elsewhere uses `nn.MSELoss()` without it, which doubles the data
gradient while weight decay still adds lam * w; that trains the scratch
objective with lam halved and the learning rate doubled.
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from regulab import _checks
from regulab.errors import TrainingDiverged

Data = tuple[torch.Tensor, torch.Tensor]


@dataclass
class FitResult:
    """Final parameters and per-epoch history of one training run."""

    w: torch.Tensor  # (num_inputs,) final weights
    b: torch.Tensor  # () final bias
    history: dict[str, list[float]] = field(default_factory=dict)
    # history keys: "train_loss", "test_loss" (half mean squared error, penalty
    # excluded; "test_loss" only when test data is given) and "w_norm" (||w||_2),
    # one value per epoch, measured at the end of the epoch.


def half_mse(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    """Return mean((x @ w + b - y)^2) / 2, the data term of the objective, as a float."""
    with torch.no_grad():
        return float(((x @ w + b - y) ** 2).mean() / 2)


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield the index tensors of one epoch: a fresh permutation cut into batches.

    The last batch is smaller when batch_size does not divide n.
    """
    order = torch.randperm(n, generator=generator)
    yield from order.split(batch_size)


def train_scratch(
    train: Data,
    test: Data | None,
    lam: float,
    *,
    w0: torch.Tensor,
    b0: float = 0.0,
    lr: float = 0.003,
    batch_size: int = 5,
    epochs: int = 100,
    seed: int = 0,
) -> FitResult:
    """Train linear regression with the L2 penalty lam * ||w||^2 / 2 written by hand.

    The loss on a minibatch is mean((x.w + b - y)^2 / 2) + lam * ||w||^2 / 2 and the
    step is w <- w - lr * grad (plain SGD). `w0` is the initial weight vector,
    `seed` fixes the minibatch order. Tensors stay on the device of `train`.
    Raises TrainingDiverged when the loss or ||w|| stops being finite (checked
    once per epoch, so the training step itself never waits on the device).
    """
    x, y = _check_problem(train, test, lam, w0, lr, batch_size, epochs)
    w = w0.detach().to(x).clone().requires_grad_(True)
    b = torch.tensor(float(b0), dtype=x.dtype, device=x.device, requires_grad=True)
    order = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {}
    for epoch in range(1, epochs + 1):
        for idx in minibatches(len(y), batch_size, order):
            idx = idx.to(x.device)
            residual = x[idx] @ w + b - y[idx]
            loss = (residual**2 / 2).mean() + lam * (w**2).sum() / 2
            loss.backward()
            with torch.no_grad():
                w -= lr * w.grad
                b -= lr * b.grad
            w.grad = None
            b.grad = None
        _record(history, train, test, w, b, epoch, lam, lr)
    return FitResult(w=w.detach(), b=b.detach(), history=history)


def train_concise(
    train: Data,
    test: Data | None,
    lam: float,
    *,
    w0: torch.Tensor,
    b0: float = 0.0,
    lr: float = 0.003,
    batch_size: int = 5,
    epochs: int = 100,
    seed: int = 0,
) -> FitResult:
    """Train the same model with nn.Linear and torch.optim.SGD weight decay.

    The loss is F.mse_loss(...) / 2, the half mean squared error of
    `train_scratch`, and the weight's parameter group has weight_decay=lam (coupled
    L2: SGD adds lam * w to the gradient, the gradient of lam * ||w||^2 / 2); the
    bias group has weight_decay=0. Same arguments and result as `train_scratch`.
    """
    x, y = _check_problem(train, test, lam, w0, lr, batch_size, epochs)
    net = nn.Linear(x.shape[1], 1).to(device=x.device, dtype=x.dtype)
    with torch.no_grad():
        net.weight.copy_(w0.reshape(1, -1))
        net.bias.fill_(float(b0))
    optimizer = torch.optim.SGD(
        [
            {"params": [net.weight], "weight_decay": lam},
            {"params": [net.bias], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    order = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {}
    for epoch in range(1, epochs + 1):
        for idx in minibatches(len(y), batch_size, order):
            idx = idx.to(x.device)
            # Half MSE: nn.MSELoss() alone would double the data gradient (see module docstring).
            loss = F.mse_loss(net(x[idx]).squeeze(-1), y[idx]) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _record(history, train, test, net.weight[0], net.bias[0], epoch, lam, lr)
    return FitResult(
        w=net.weight.detach()[0].clone(), b=net.bias.detach()[0].clone(), history=history
    )


TRAINERS = {"scratch": train_scratch, "concise": train_concise}


def _record(history, train, test, w, b, epoch, lam, lr):
    """Append the end-of-epoch losses and weight norm; raise TrainingDiverged if not finite."""
    history.setdefault("train_loss", []).append(half_mse(*train, w, b))
    if test is not None:
        history.setdefault("test_loss", []).append(half_mse(*test, w, b))
    history.setdefault("w_norm", []).append(float(torch.linalg.vector_norm(w.detach())))
    if not (math.isfinite(history["train_loss"][-1]) and math.isfinite(history["w_norm"][-1])):
        raise TrainingDiverged(
            f"training diverged at epoch {epoch}: the loss is no longer finite "
            f"(lam = {lam:g}, lr = {lr:g}); try a smaller lr",
            epoch,
        )


def _check_problem(train, test, lam, w0, lr, batch_size, epochs) -> Data:
    """Validate the arguments shared by both trainers; return the training tensors."""
    _checks.non_negative("lam", lam)
    _checks.positive("lr", lr)
    _checks.positive_int("batch_size", batch_size)
    _checks.positive_int("epochs", epochs)
    x, y = train
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(
            "train must be (X, y) with X of shape (n, num_inputs) and y of shape (n,); "
            f"got X {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if w0.shape != (x.shape[1],):
        raise ValueError(f"w0 must have shape ({x.shape[1]},); got {tuple(w0.shape)}")
    if test is not None and (
        test[0].ndim != 2 or test[0].shape[1] != x.shape[1] or test[1].shape != test[0].shape[:1]
    ):
        raise ValueError(
            f"test must be (X, y) with X of shape (m, {x.shape[1]}) and y of shape (m,); "
            f"got X {tuple(test[0].shape)} and y {tuple(test[1].shape)}"
        )
    return x, y

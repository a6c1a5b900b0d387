"""Batch normalization from scratch, for teaching (Ioffe & Szegedy, arXiv:1502.03167).

In training each channel is normalized with the mean and the biased variance of
the batch (over every dimension but the channel one), then scaled by gamma and
shifted by beta; the running statistics move towards the batch mean and the
unbiased batch variance by `momentum`. In evaluation the running statistics are
used instead. This is exactly what `torch.nn.BatchNorm1d/2d/3d` compute.
"""

import torch
from torch import nn

from regulab import _checks


def batch_norm(
    x: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Normalize x of shape (N, C, ...) per channel C; update the running statistics in place.

    running_mean <- (1 - momentum) * running_mean + momentum * batch mean (and the
    same for running_var with the unbiased batch variance). Without running
    statistics (None) the batch statistics are used in evaluation too. gamma and
    beta may be None (no affine transform).
    """
    momentum = _checks.probability("momentum", momentum)
    eps = _checks.positive("eps", eps)
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else x
        raise ValueError(f"x must be a floating-point tensor of shape (N, C, ...); got {got}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("give both running_mean and running_var, or neither")
    c = x.shape[1]
    for name, t in (
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(
                f"{name} must have shape ({c},), one value per channel of x; got {tuple(t.shape)}"
            )
    dims = [d for d in range(x.ndim) if d != 1]
    shape = [1, c] + [1] * (x.ndim - 2)
    # statistics in at least float32, as torch does for float16 / bfloat16 inputs
    xs = x.to(torch.promote_types(x.dtype, torch.float32))
    if training or running_mean is None:
        count = x.numel() // c if c else 0
        if count < 2:
            raise ValueError(
                f"batch norm with batch statistics needs more than one value per channel; got "
                f"input of shape {tuple(x.shape)} ({'a batch of one' if count == 1 else 'empty'})."
                " Use a batch of at least 2, or call model.eval() to use the running statistics"
            )
        mean = xs.mean(dims)
        var = xs.var(dims, correction=0)
        if training and running_mean is not None:
            with torch.no_grad():
                running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
                unbiased = var.detach() * count / (count - 1)
                running_var.lerp_(unbiased.to(running_var.dtype), momentum)
    else:
        mean, var = running_mean.to(xs.dtype), running_var.to(xs.dtype)
    y = (xs - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    if gamma is not None:
        y = y * gamma.view(shape)
    if beta is not None:
        y = y + beta.view(shape)
    return y.to(x.dtype)


class BatchNorm(nn.Module):
    """Batch normalization over channel dim 1 for inputs (N, C), (N, C, L) or (N, C, H, W).

    Its parameters and buffers have the names of `torch.nn.BatchNorm2d`
    (weight, bias, running_mean, running_var, num_batches_tracked), so state dicts
    load either way.
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.num_features = _checks.positive_int("num_features", num_features)
        self.momentum = _checks.probability("momentum", momentum)
        self.eps = _checks.positive("eps", eps)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"input must have shape (N, {self.num_features}, ...); got {tuple(x.shape)}"
            )
        if self.training:
            self.num_batches_tracked += 1
        return batch_norm(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            self.training,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"

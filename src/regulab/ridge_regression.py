"""Closed-form ridge regression for every lambda from one SVD.

Objective (regulab's convention, the same as the SGD trainers):

    mean_i (x_i . w + b - y_i)^2 / 2  +  lam * ||w||^2 / 2,  b not penalized.

Centering X and y removes b; with the centered X = U S V^T the solution is
w(lam) = V diag(s / (s^2 + n lam)) U^T y_c and b = mean(y) - mean(X) . w. This is
scikit-learn's `Ridge(alpha=n * lam)`, whose objective is ||r||^2 + alpha ||w||^2.
At lam = 0 it gives the minimum-norm least-squares solution.
"""

import torch

from regulab import _checks


def ridge_path(x: torch.Tensor, y: torch.Tensor, lams) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (W, b): W of shape (K, d) and b of shape (K,), one row per lambda in lams."""
    if isinstance(lams, int | float):
        lams = [lams]
    if (
        not isinstance(x, torch.Tensor)
        or not x.is_floating_point()
        or x.dtype
        in (
            torch.float16,
            torch.bfloat16,
        )
    ):
        got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a float32 or float64 tensor; got {got}")
    lams = [_checks.non_negative("lams", lam) for lam in lams]
    if not lams:
        raise ValueError("lams must hold at least one value; got none")
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise ValueError(
            f"x must be (n, d) and y (n,); got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    n = x.shape[0]
    x_mean, y_mean = x.mean(0), y.mean()
    u, s, vh = torch.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)
    lam = torch.tensor(lams, dtype=x.dtype, device=x.device)[:, None]
    # components with s = 0 (beyond the rank) contribute nothing, also at lam = 0
    keep = s > s.max() * max(x.shape) * torch.finfo(x.dtype).eps
    denom = s**2 + n * lam
    scale = torch.where(keep, s / torch.where(keep, denom, 1.0), 0.0)
    w = (scale * uty) @ vh
    return w, y_mean - w @ x_mean


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (w, b) minimizing mean squared error / 2 + lam * ||w||^2 / 2."""
    w, b = ridge_path(x, y, [lam])
    return w[0], b[0]

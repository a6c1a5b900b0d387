"""Soft and hard L2 regularization give the same solution (Lagrange duality).

For least squares, min loss(w) subject to ||w||^2 <= theta (the hard constraint,
solved by projected gradient descent with `max_norm_`) and min loss(w) +
lam * ||w||^2 / 2 (the soft penalty, solved by gradient descent with `Penalty`)
have the same solution when lam is the multiplier of the constraint, i.e. the lam
at which the penalized solution has ||w||^2 = theta. That lam is found by
bisection on the closed-form ridge solution, which shrinks monotonically in lam
(Goodfellow, Bengio & Courville, Deep Learning, section 7.2). Its table, CSV
and report.md are in `equivalence_report`.
"""

import torch

from regulab import _checks
from regulab.constraints import max_norm_
from regulab.data import synthetic_linear
from regulab.penalties import Penalty
from regulab.ridge_regression import ridge

# largest max|w_hard - w_soft| / max|w_soft| accepted as "the same solution"
TOLERANCE = 1e-3
MAX_STEPS = 100_000  # gradient steps before a solver gives up (reported as not converged)
COLUMNS = (
    "fraction",
    "theta",
    "lambda",
    "w_norm_sq_hard",
    "w_norm_sq_soft",
    "max_abs_diff_w",
    "rel_diff_w",
    "abs_diff_b",
    "max_abs_diff_closed_form",
    "steps_hard",
    "steps_soft",
    "converged",
)


def lambda_for_radius(x, y, theta: float, rtol: float = 1e-12) -> float:
    """Return the lam >= 0 at which the ridge solution has ||w||^2 = theta.

    Returns 0.0 when the constraint is inactive (the minimum-norm least-squares
    solution already has ||w||^2 <= theta).
    """
    theta = _checks.positive("theta", theta)

    def norm2(lam):
        return float(ridge(x, y, lam)[0].square().sum())

    if norm2(0.0) <= theta:
        return 0.0
    lo, hi = 0.0, 1.0
    while norm2(hi) > theta:
        lo, hi = hi, hi * 2
    while hi - lo > rtol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if norm2(mid) > theta else (lo, mid)
    return (lo + hi) / 2


def _descend(x, y, after_step, penalty_l2=0.0, w0=None, tol=1e-13, max_steps=MAX_STEPS):
    """Full-batch gradient descent on mean squared error / 2 from w0 (default zeros).

    lr = 1 / L with L the curvature of the loss (largest eigenvalue of the Hessian,
    plus the penalty), so every step decreases the objective. Stops when no weight
    moves by more than tol in a step. Returns (w, b, steps, converged).
    """
    n = x.shape[0]
    design = torch.cat([x, torch.ones(n, 1, dtype=x.dtype, device=x.device)], 1)
    curvature = float(torch.linalg.matrix_norm(design, ord=2)) ** 2 / n + penalty_l2
    w = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device) if w0 is None else w0.clone()
    w.requires_grad_(True)
    b = torch.zeros((), dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.SGD([w, b], lr=1 / curvature)
    penalty = Penalty([w], l2=penalty_l2)
    for step in range(1, max_steps + 1):
        before = w.detach().clone()
        opt.zero_grad()
        ((x @ w + b - y).square().mean() / 2).backward()
        penalty.apply_()
        opt.step()
        after_step(w)
        if float((w.detach() - before).abs().max()) < tol:
            return w.detach(), b.detach(), step, True
    return w.detach(), b.detach(), max_steps, False


def solve_constrained(x, y, theta: float, **kwargs):
    """Projected gradient descent: a step on the loss, then `max_norm_` onto ||w||^2 <= theta."""
    theta = _checks.positive("theta", theta)
    return _descend(x, y, lambda w: max_norm_(w, theta**0.5), **kwargs)


def solve_penalized(x, y, lam: float, **kwargs):
    """Gradient descent on loss + lam * ||w||^2 / 2, the penalty added by `Penalty(l2=lam)`."""
    lam = _checks.non_negative("lam", lam)
    return _descend(x, y, lambda w: None, penalty_l2=lam, **kwargs)


def compare(x, y, thetas, w0=None, max_steps: int = MAX_STEPS) -> list[dict]:
    """For each theta: lam by bisection, both solutions, and how far apart they are."""
    rows = []
    for theta in thetas:
        lam = lambda_for_radius(x, y, theta)
        w_hard, b_hard, hard_steps, hard_ok = solve_constrained(
            x, y, theta, w0=w0, max_steps=max_steps
        )
        w_soft, b_soft, soft_steps, soft_ok = solve_penalized(x, y, lam, w0=w0, max_steps=max_steps)
        w_exact, _ = ridge(x, y, lam)
        diff = float((w_hard - w_soft).abs().max())
        rows.append(
            {
                "theta": float(theta),
                "lambda": lam,
                "w_norm_sq_hard": float(w_hard.square().sum()),
                "w_norm_sq_soft": float(w_soft.square().sum()),
                "max_abs_diff_w": diff,
                "rel_diff_w": diff / float(w_soft.abs().max()),
                "abs_diff_b": abs(float(b_hard - b_soft)),
                "max_abs_diff_closed_form": float((w_soft - w_exact).abs().max()),
                "steps_hard": hard_steps,
                "steps_soft": soft_steps,
                "converged": hard_ok and soft_ok,
            }
        )
    return rows


def equivalent(rows: list[dict]) -> bool:
    """Whether every theta converged with both solvers and agreed within TOLERANCE."""
    return all(r["converged"] and r["rel_diff_w"] <= TOLERANCE for r in rows)


def experiment(
    seed: int = 0,
    fractions=(0.1, 0.5, 0.9),
    n_train: int = 20,
    num_inputs: int = 200,
    max_steps: int = MAX_STEPS,
):
    """The soft/hard comparison on the weight-decay demo's training data for one seed.

    theta runs over `fractions` of ||w_LS||^2, the squared norm of the minimum-norm
    least-squares solution (a larger theta leaves the constraint inactive). Both
    solvers start from the demo's random initial weights. Returns (rows, info).
    """
    _checks.non_negative_int("seed", seed)
    fractions = [float(f) for f in fractions]
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise ValueError(f"fractions must be numbers in (0, 1); got {fractions}")
    g = torch.Generator().manual_seed(seed)
    x, y = synthetic_linear(n_train, num_inputs, generator=g, dtype=torch.float64)
    synthetic_linear(100, num_inputs, generator=g)  # the demo's test set, drawn to keep w0 in step
    w0 = torch.randn(num_inputs, generator=g, dtype=torch.float64)
    ls_norm_sq = float(ridge(x, y, 0.0)[0].square().sum())
    rows = compare(x, y, [f * ls_norm_sq for f in fractions], w0=w0, max_steps=max_steps)
    for row, f in zip(rows, fractions, strict=True):
        row["fraction"] = f
    info = {"seed": seed, "n_train": n_train, "num_inputs": num_inputs, "ls_norm_sq": ls_norm_sq}
    return rows, info

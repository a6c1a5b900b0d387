"""Why L1 gives zeros and L2 only shrinks: constrained optima of a 2-D quadratic loss.

The picture of Tibshirani (1996, figure 2) and Hastie, Tibshirani & Friedman
(The Elements of Statistical Learning, figure 3.11): elliptical contours of a
least-squares loss meet the L2 ball at a point with both weights nonzero, and
the L1 diamond at a corner, where one weight is exactly zero. Both optima are
computed with the library: the L2 one by projected gradient descent with
`max_norm_`, the L1 one by proximal gradient descent with `prox_l1_` at the
strength whose solution has ||w||_1 = radius (found by bisection).

The L1 optimum moves with the strength at a slope of order 1 near the strength (about 3.4)
that makes w = 0, so float64 resolves it to about 1e-15 absolute: radii below MIN_RADIUS
(where that is no longer 9 significant digits) are refused.
"""

import torch

from regulab import _checks
from regulab.constraints import max_norm_
from regulab.penalties import prox_l1_

# loss(w) = (w - CENTER)^T CURVATURE (w - CENTER) / 2: correlated inputs, optimum (1, 2)
CENTER = (1.0, 2.0)
CURVATURE = ((1.0, -0.6), (-0.6, 2.0))
MIN_RADIUS = 1e-6  # smallest radius whose L1 optimum float64 gives to 9 significant digits


def check_radius(radius) -> float:
    """radius as a float if it is a finite number >= MIN_RADIUS, else ValueError."""
    radius = _checks.positive("radius", radius)
    if radius < MIN_RADIUS:
        raise ValueError(
            f"radius must be a finite number >= {MIN_RADIUS:g}: below it float64 cannot resolve "
            f"the L1 optimum (an error of about 1e-15 near w = 0); got {radius!r}"
        )
    return radius


def _problem(center, curvature):
    c = torch.tensor(center, dtype=torch.float64)
    a = torch.tensor(curvature, dtype=torch.float64)
    if c.shape != (2,) or a.shape != (2, 2) or not torch.equal(a, a.T):
        raise ValueError("center must be 2 numbers and curvature a symmetric 2 x 2 matrix")
    if float(torch.linalg.eigvalsh(a).min()) <= 0:
        raise ValueError(f"curvature must be positive definite; got {curvature}")
    return c, a


def loss(w: torch.Tensor, center=CENTER, curvature=CURVATURE) -> torch.Tensor:
    """(w - center)^T curvature (w - center) / 2 for w of shape (..., 2)."""
    c, a = _problem(center, curvature)
    d = w - c
    return ((d @ a) * d).sum(-1) / 2


def _descend(a, c, after_step, start=None, tol=1e-14, max_steps=100_000):
    """Gradient steps on the quadratic with lr = 1 / (largest curvature), then after_step."""
    lr = 1 / float(torch.linalg.eigvalsh(a).max())
    w = torch.zeros(2, dtype=torch.float64) if start is None else start.clone()
    for _ in range(max_steps):
        before = w.clone()
        w -= lr * (a @ (w - c))
        after_step(w, lr)
        if float((w - before).abs().max()) < tol:
            break
    return w


def l2_optimum(radius: float, center=CENTER, curvature=CURVATURE) -> torch.Tensor:
    """argmin loss(w) subject to ||w||_2 <= radius, by projected gradient descent."""
    radius = check_radius(radius)
    c, a = _problem(center, curvature)
    return _descend(a, c, lambda w, lr: max_norm_(w, radius))


def l1_optimum(radius: float, center=CENTER, curvature=CURVATURE) -> tuple[torch.Tensor, float]:
    """argmin loss(w) subject to ||w||_1 <= radius, and the L1 strength that gives it.

    Proximal gradient descent on loss + lam * ||w||_1 for the lam at which the
    solution has ||w||_1 = radius (bisection; the L1 norm of the solution falls
    as lam grows), bisected until lo and hi are neighbouring floats.
    """
    radius = check_radius(radius)
    c, a = _problem(center, curvature)

    def solve(lam, start=None):
        return _descend(a, c, lambda w, lr: prox_l1_(w, lr * lam), start=start)

    if float(c.abs().sum()) <= radius:
        return c.clone(), 0.0
    lo, hi = 0.0, 1.0
    while float(solve(hi).abs().sum()) > radius:
        lo, hi = hi, hi * 2
    w = solve(hi)
    while lo < (mid := (lo + hi) / 2) < hi:  # until no float lies between lo and hi
        w_mid = solve(mid, start=w)
        if float(w_mid.abs().sum()) > radius:
            lo = mid
        else:
            hi, w = mid, w_mid
    return w, hi


def geometry(radius: float = 1.0, center=CENTER, curvature=CURVATURE) -> dict:
    """Both constrained optima and the unconstrained one, as plain numbers."""
    w_l2 = l2_optimum(radius, center, curvature)
    w_l1, lam = l1_optimum(radius, center, curvature)
    return {
        "radius": radius,
        "center": list(center),
        "curvature": [list(row) for row in curvature],
        "l2_optimum": w_l2.tolist(),
        "l1_optimum": w_l1.tolist(),
        "l1_strength": lam,
        "l1_exact_zeros": int((w_l1 == 0).sum()),
        "l2_exact_zeros": int((w_l2 == 0).sum()),
    }


def plot_geometry(result: dict, path=None):
    """Draw loss contours, the L2 ball and the L1 diamond, and the optima; return the Figure."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, Polygon

    r = result["radius"]
    c = result["center"]
    lim = max(abs(v) for v in c) + r
    grid = torch.linspace(-lim, lim, 301, dtype=torch.float64)
    w1, w2 = torch.meshgrid(grid, grid, indexing="xy")
    z = loss(torch.stack([w1, w2], -1), c, result["curvature"]).numpy()
    fig = Figure(figsize=(10, 5.4), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.12)
    panels = (
        (r"L2 ball $\|w\|_2 \leq r$", "l2_optimum", Circle((0, 0), r)),
        (r"L1 diamond $\|w\|_1 \leq r$", "l1_optimum", Polygon([(r, 0), (0, r), (-r, 0), (0, -r)])),
    )
    for ax, (title, key, shape) in zip(fig.subplots(1, 2), panels, strict=True):
        opt = result[key]
        levels = np.sort(loss(torch.tensor([opt]), c, result["curvature"]).numpy())
        levels = np.concatenate([levels, levels[-1] * np.array([4.0, 9.0, 16.0]) + 1e-3])
        ax.contour(w1.numpy(), w2.numpy(), z, levels=np.unique(levels), colors="0.5")
        shape.set(facecolor="tab:blue", alpha=0.25, edgecolor="tab:blue")
        ax.add_patch(shape)
        ax.axhline(0, color="0.8", lw=0.8, zorder=0)
        ax.axvline(0, color="0.8", lw=0.8, zorder=0)
        ax.plot(*c, "k+", ms=10, label=f"unconstrained optimum ({c[0]:g}, {c[1]:g})")
        zeros = sum(v == 0 for v in opt)
        ax.plot(
            *opt,
            "o",
            color="tab:red",
            label=f"constrained optimum ({opt[0]:.3g}, {opt[1]:.3g}); exact zeros: {zeros}",
        )
        ax.set(
            title=f"{title}, r = {r:g}",
            xlabel="w1",
            ylabel="w2",
            aspect="equal",
            xlim=(-lim, lim),
            ylim=(-lim, lim),
        )
        ax.legend(loc="lower right", fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig

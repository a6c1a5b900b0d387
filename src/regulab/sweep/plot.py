"""The path figure: losses and ||w|| against lambda on log axes, the chosen lambda marked.

matplotlib is imported only when a figure is drawn, through its object API (no
pyplot), so drawing never changes the backend of the caller's session.
"""

import math
from pathlib import Path

from regulab.sweep.report import check_rows


def _positions(lambdas: list[float]) -> tuple[list[float], float | None]:
    """x positions on a log axis: lambda = 0 goes one decade left of the smallest lambda > 0.

    Returns (positions, the position of 0 or None when 0 is not among lambdas).
    """
    positive = [lam for lam in lambdas if lam > 0]
    if 0 not in lambdas:
        return list(lambdas), None
    x0 = min(positive) / 10 if positive else 1.0
    return [x0 if lam == 0 else lam for lam in lambdas], x0


def _zero_ticks(ax, x0: float, positive: list[float]) -> None:
    """Ticks for an axis holding lambda = 0 at x0: "0" there, decades over the rest, a break."""
    ticks, labels = [x0], ["0"]
    if positive:
        lo, hi = min(positive), max(positive)
        decades = range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)
        step = max(1, math.ceil(len(decades) / 6))
        between = [10.0**k for k in decades[::step]] or sorted({lo, hi})
        ticks += between
        labels += [f"{t:g}" for t in between]
        ax.text(
            math.sqrt(x0 * lo),
            0,
            "//",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="center",
            clip_on=False,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0},
        )
    ax.set_xticks(ticks, labels)
    ax.minorticks_off()


def plot_path(rows: list[dict], chosen: int, path: Path, *, param: str, loss_name: str):
    """Draw the path against lambda (log x axis), save a PNG at path, return the Figure.

    Left axis: validation loss with a ± SE band, test and train loss; right axis:
    ‖w‖ (log where positive). lambda = 0 sits one decade left of the smallest
    lambda > 0, labelled "0" after an axis break. Diverged strengths are left out.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    check_rows(rows, chosen)
    kept = [i for i, row in enumerate(rows) if row["status"] == "completed"]
    done = [rows[i] for i in kept]
    every, x0 = _positions([row["lambda"] for row in rows])  # the axis is the whole grid's
    xs = [every[i] for i in kept]

    def column(key):
        return np.array([np.nan if row[key] is None else row[key] for row in done], dtype=float)

    fig = Figure(figsize=(9, 4.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_xscale("log")
    val, se = column("val_loss"), column("val_loss_se")
    ax.plot(xs, val, "o-", color="C0", markersize=3, label="validation")
    if np.isfinite(se).any():
        ax.fill_between(xs, val - se, val + se, color="C0", alpha=0.2, linewidth=0, label="± SE")
    ax.plot(xs, column("test_loss"), "s--", color="C1", markersize=3, label="test")
    ax.plot(xs, column("train_loss"), ":", color="C2", label="train")
    losses = np.concatenate([val, column("test_loss"), column("train_loss")])
    losses = losses[np.isfinite(losses)]
    if len(losses) and losses.min() > 0 and losses.max() / losses.min() > 10:
        ax.set_yscale("log")
    lam = rows[chosen]["lambda"]
    ax.axvline(
        every[chosen],
        color="k",
        linestyle="-.",
        linewidth=1,
        label=f"chosen λ = {lam:.3g}",
    )
    ax.set_ylabel(f"loss ({loss_name})")
    ax.set_xlabel(
        "λ (log scale"
        + ("; λ = 0 drawn one decade left of the smallest λ > 0)" if x0 is not None else ")")
    )
    ax.grid(True, which="major", alpha=0.3)

    ax_w = ax.twinx()
    w = column("w_norm")
    ax_w.plot(xs, w, ".-", color="C3", linewidth=1, label="‖w‖")
    if np.isfinite(w).any() and w[np.isfinite(w)].min() > 0:
        ax_w.set_yscale("log")
    ax_w.set_ylabel("‖w‖", color="C3")
    if x0 is not None:
        _zero_ticks(ax, x0, [x for x in every if x != x0])

    handles, labels = ax.get_legend_handles_labels()
    more = ax_w.get_legend_handles_labels()
    fig.legend(handles + more[0], labels + more[1], fontsize="small", loc="outside right upper")
    diverged = len(rows) - len(done)
    note = f" ({diverged} diverged λ not shown)" if diverged else ""
    ax.set_title(f"Regularization path over {param}{note}")
    fig.savefig(path, dpi=120)
    return fig

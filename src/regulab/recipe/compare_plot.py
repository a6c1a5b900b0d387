"""The figure of a comparison report: loss, accuracy and weight norm against epoch.

One colour per group of runs (see regulab.recipe.compare); lines are the mean over the
completed seeds, bands span the smallest to the largest seed. matplotlib is
imported only when a figure is drawn, through its object API (no pyplot), so
drawing never changes the backend of the caller's session.
"""

from pathlib import Path

import numpy as np


def curve_band(histories: list[list[dict]], metric: str) -> tuple[np.ndarray, ...]:
    """Return (epochs, mean, min, max) of `metric` over runs, epoch by epoch.

    Each epoch is summarized over the runs that measured it (a run stopped early
    simply stops contributing); epochs no run measured are left out.
    """
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for row in history:
            if row.get(metric) is not None:
                by_epoch.setdefault(row["epoch"], []).append(row[metric])
    epochs = sorted(by_epoch)
    values = [np.array(by_epoch[e], dtype=float) for e in epochs]
    return (
        np.array(epochs, dtype=int),
        np.array([v.mean() for v in values]),
        np.array([v.min() for v in values]),
        np.array([v.max() for v in values]),
    )


def _panels(runs) -> list[tuple[str, tuple[str, ...]]]:
    """(y label, metrics) of each panel: loss, accuracy if any run classifies, ‖w‖."""
    losses = sorted({r.loss for r in runs if r.loss})
    panels = [(f"loss ({', '.join(losses)})" if losses else "loss", ("test_loss", "train_loss"))]
    if any(r.task == "classification" for r in runs):
        panels.append(("accuracy", ("test_accuracy", "train_accuracy")))
    panels.append(("‖w‖", ("w_norm",)))
    return panels


def plot_curves(runs, path: Path):
    """Draw the completed runs' curves, one colour per group, and save a PNG at path.

    Panels: test (solid) and train (dashed) loss, on a log axis when all are
    positive; the same for accuracy when a run is a classification; and ‖w‖.
    Returns the matplotlib Figure after saving it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    done = [r for r in runs if r.status == "completed"]
    labels = list(dict.fromkeys(r.label for r in done))
    panels = _panels(done)
    fig = Figure(figsize=(4.4 * len(panels), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (ylabel, metrics) in zip(axes, panels, strict=True):
        positive = True
        for i, label in enumerate(labels):
            histories = [r.history for r in done if r.label == label]
            for metric in metrics:
                epochs, mean, lo, hi = curve_band(histories, metric)
                if not len(epochs):
                    continue
                style = "--" if metric.startswith("train") else "-"
                ax.plot(epochs, mean, style, color=f"C{i}", label=f"{label}: {metric}")
                ax.fill_between(epochs, lo, hi, color=f"C{i}", alpha=0.15, linewidth=0)
                positive = positive and bool(np.all(lo > 0))
        if ylabel.startswith("loss") and positive and ax.get_lines():
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    handles = [Line2D([], [], color=f"C{i}", label=label) for i, label in enumerate(labels)]
    handles += [
        Line2D([], [], color="gray", linestyle="-", label="test"),
        Line2D([], [], color="gray", linestyle="--", label="train"),
    ]
    fig.legend(handles=handles, title="mean, band = min–max", loc="outside right upper")
    fig.savefig(path, dpi=110)
    return fig

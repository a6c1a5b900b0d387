"""The table, plots and report.md of the weight-decay demo.

matplotlib is imported only when a figure is drawn, and through its object API
(no pyplot), so drawing never changes the backend of the caller's session.
"""

import csv
from pathlib import Path

from regulab import tables

TABLE_NOTE = "last epoch; mean ± std over seeds; loss = mean squared error / 2"
TABLE_COLUMNS = ("λ", "seeds", "‖w‖", "train loss", "test loss", "gap (test − train)")


def rows(summary: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, cells per lambda) of the table: mean ± std over seeds."""
    cells = []
    for r in summary:
        gap = r["test_loss_mean"] - r["train_loss_mean"]
        cells.append(
            [
                f"{r['lambda']:g}",
                str(r["seeds"]),
                f"{r['w_norm_mean']:.3g} ± {r['w_norm_std']:.2g}",
                f"{r['train_loss_mean']:.3g} ± {r['train_loss_std']:.2g}",
                f"{r['test_loss_mean']:.3g} ± {r['test_loss_std']:.2g}",
                f"{gap:.3g}",
            ]
        )
    return list(TABLE_COLUMNS), cells


def rich_table(summary: list[dict]):
    """The table as a rich Table for the terminal, headers without their parenthesis."""
    headers, cells = rows(summary)
    return tables.rich_table([name.split(" (")[0] for name in headers], cells)


def findings(summary: list[dict], n_train: int, num_inputs: int) -> str:
    """A short paragraph saying what the numbers show, computed from them."""
    lo, hi = summary[0], summary[-1]
    lo_gap = lo["test_loss_mean"] / max(lo["train_loss_mean"], 1e-300)
    text = (
        f"At λ = {lo['lambda']:g} the final train loss is {lo['train_loss_mean']:.3g} and the "
        f"test loss {lo['test_loss_mean']:.3g} ({lo_gap:.3g} times larger), with "
        f"‖w‖ = {lo['w_norm_mean']:.3g}."
    )
    if lo_gap > 10:
        text += (
            f" With {num_inputs} inputs and only {n_train} training examples the model fits "
            "the training set almost exactly and predicts new data badly: it overfits."
        )
    if hi is lo:
        return text
    shrink = lo["w_norm_mean"] / max(hi["w_norm_mean"], 1e-300)
    test_ratio = lo["test_loss_mean"] / max(hi["test_loss_mean"], 1e-300)
    text += (
        f" At λ = {hi['lambda']:g} the penalty shrinks ‖w‖ to {hi['w_norm_mean']:.3g} "
        f"({shrink:.3g} times smaller); the train loss rises to {hi['train_loss_mean']:.3g} "
        f"and the test loss {'falls' if test_ratio > 1 else 'rises'} to "
        f"{hi['test_loss_mean']:.3g} ({max(test_ratio, 1 / test_ratio):.3g} times "
        f"{'lower' if test_ratio > 1 else 'higher'})."
    )
    lo_diff = lo["test_loss_mean"] - lo["train_loss_mean"]
    hi_diff = hi["test_loss_mean"] - hi["train_loss_mean"]
    if abs(hi_diff) < abs(lo_diff):
        text += (
            f" The gap between test and train loss narrows from {lo_diff:.3g} to {hi_diff:.3g}:"
            " the penalty trades a little training fit for much better generalization."
        )
    else:
        text += (
            f" The gap between test and train loss does not narrow "
            f"({lo_diff:.3g} to {hi_diff:.3g})."
        )
    return text


def plot_curves(history: list[dict], path: Path):
    """Train and test loss against epoch (log y), one panel per lambda.

    Lines are the mean over seeds; the shaded band spans the smallest to the
    largest seed (a band of ± std could cross zero on a log axis). Returns the
    matplotlib Figure after saving it.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lambdas = sorted({r["lambda"] for r in history})
    fig = Figure(figsize=(4.2 * len(lambdas), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(lambdas), sharey=True, squeeze=False)[0]
    for ax, lam in zip(axes, lambdas, strict=True):
        mine = [r for r in history if r["lambda"] == lam]
        seeds = sorted({r["seed"] for r in mine})
        epochs = sorted({r["epoch"] for r in mine})
        for metric, label, color in (("train_loss", "train", "C0"), ("test_loss", "test", "C1")):
            v = np.array([[r[metric] for r in mine if r["seed"] == s] for s in seeds])
            ax.plot(epochs, v.mean(0), color=color, label=label)
            ax.fill_between(epochs, v.min(0), v.max(0), color=color, alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_title(f"λ = {lam:g}  ({len(seeds)} seeds)")
        ax.set_xlabel("epoch")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("loss (mean squared error / 2)")
    axes[0].legend(title="mean, band = min–max")
    fig.savefig(path, dpi=110)
    return fig


def write_metrics_csv(history: list[dict], path: Path) -> None:
    """Write the rows of history (dicts with the same keys) as CSV, floats at full precision."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def still_falling(history: list[dict], metric: str = "test_loss", drop: float = 0.05) -> dict:
    """Lambdas whose mean `metric` fell by more than `drop` over the last tenth of the epochs.

    Returns {lambda: fractional fall}; such runs had not converged when they stopped.
    """
    falling = {}
    for lam in sorted({r["lambda"] for r in history}):
        by_epoch: dict[int, list[float]] = {}
        for r in history:
            if r["lambda"] == lam:
                by_epoch.setdefault(r["epoch"], []).append(r[metric])
        epochs = sorted(by_epoch)
        if len(epochs) < 2:
            continue
        k = max(1, len(epochs) // 10)
        before, last = (sum(by_epoch[e]) / len(by_epoch[e]) for e in (epochs[-1 - k], epochs[-1]))
        if before > 0 and (before - last) / before > drop:
            falling[lam] = (before - last) / before
    return falling


def markdown(summary: list[dict], history: list[dict], settings: dict, figure: str) -> str:
    """report.md of the demo: what was run, the table, the figure and the findings.

    history holds one row per (lambda, seed, epoch), as `weight_decay.metric_rows` makes.
    """
    lambdas = ", ".join(f"{r['lambda']:g}" for r in summary)
    epochs = settings["epochs"]
    notes = [
        f"At λ = {lam:g} the test loss was still falling when training stopped "
        f"({fall:.0%} lower over the last {max(1, epochs // 10)} epochs): more epochs "
        "would lower it further."
        for lam, fall in still_falling(history).items()
    ]
    return "\n".join(
        [
            "# Weight decay on high-dimensional linear regression",
            "",
            f"{settings['n_train']} training and {settings['n_test']} test examples with "
            f"{settings['num_inputs']} inputs, y = 0.05 + 0.01 · Σx + noise. Linear regression "
            f"trained by minibatch SGD ({settings['impl']} implementation, batch "
            f"{settings['batch_size']}, learning rate {settings['lr']:g}, {epochs} epochs) on "
            f"mean squared error / 2 + λ‖w‖²/2, for λ in {{{lambdas}}}, over {settings['seeds']} "
            "seeds each.",
            "",
            tables.markdown_table(*rows(summary)),
            "",
            "Losses are mean squared error / 2 without the penalty, at the last epoch; ± is the "
            "sample standard deviation over seeds.",
            "",
            f"![train and test loss per epoch]({figure})",
            "",
            findings(summary, settings["n_train"], settings["num_inputs"]),
            *(["", *notes] if notes else []),
            "",
        ]
    )

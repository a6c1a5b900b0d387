"""The pictures of a tuning run, drawn from its trials (`Tuner.trials_`) and summary.

- hparams.png: each hyperparameter against the validation metric, coloured by the rung a
  configuration reached (PBT: every evaluation, coloured by its step);
- curves.png: the validation metric of every copy at each rung, the cuts marked;
- budget.png: single-run equivalents spent against the plan, epoch by epoch, and the
  wall time of the tuning beside one run of the recipe.

matplotlib is imported only when a figure is drawn, through its object API (no pyplot),
so drawing never changes the backend of the caller's session.
"""

import math
from pathlib import Path

from regulab.tune.space import parse_space

LABELS = {"val_loss": "validation loss", "val_accuracy": "validation accuracy"}


def _figure(width: float, height: float, panels: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def last_rows(trials: list[dict]) -> list[dict]:
    """Each configuration's row at the last rung it reached, in configuration order."""
    last = {}
    for row in trials:
        if row["config"] not in last or row["rung"] > last[row["config"]]["rung"]:
            last[row["config"]] = row
    return [last[c] for c in sorted(last)]


def plot_hparams(trials: list[dict], space, summary: dict, path: Path):
    """One panel per hyperparameter: its value against the validation metric, coloured by
    rung; log ranges on a log axis, "off" (0) drawn one decade below the range; the chosen
    configuration starred. Saves a PNG at path; returns the Figure."""
    space, metric = parse_space(space), summary["metric"]
    pbt = summary["scheduler"] == "pbt"
    rows = [r for r in (trials if pbt else last_rows(trials)) if r[metric] is not None]
    rungs = max(r["rung"] for r in trials)
    fig, axes = _figure(3.6 * len(space) + 1.2, 3.6, len(space))
    best = [r for r in rows if r["config"] == summary["best_config"]]
    best = max(best, key=lambda r: r["rung"]) if best else None
    for ax, r in zip(axes, space, strict=True):
        off = r.low / 10 if r.scale == "log" else r.low

        def x(v, r=r, off=off):
            return off if (r.scale == "log" and v <= 0) else v

        if r.scale == "log":
            ax.set_xscale("log")
        points = ax.scatter(
            [x(row[r.name]) for row in rows],
            [row[metric] for row in rows],
            c=[row["rung"] for row in rows],
            cmap="viridis",
            vmin=1,
            vmax=max(rungs, 2),
            s=18,
            alpha=0.8,
        )
        if best is not None:
            ax.scatter([x(best[r.name])], [best[metric]], marker="*", s=160, c="red",
                       edgecolors="k", zorder=3, label="chosen")  # fmt: skip
        zero = " (off at left)" if r.scale == "log" and r.p_off else ""
        ax.set_xlabel(f"{r.name}{' (log)' if r.scale == 'log' else ''}{zero}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(LABELS[metric])
    _log_if_wide(axes, [row[metric] for row in rows])
    fig.colorbar(points, ax=axes, label="PBT step" if pbt else "rung reached")
    if best is not None:
        axes[0].legend(fontsize="small")
    fig.suptitle(f"{len(last_rows(trials))} configurations: {LABELS[metric]} by hyperparameter")
    fig.savefig(path, dpi=110)
    return fig


def _log_if_wide(axes, values) -> None:
    """Log y axes when positive values span more than a factor of 10."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 10:
        for ax in axes:
            ax.set_yscale("log")


def plot_curves(trials: list[dict], summary: dict, path: Path):
    """The validation metric of every configuration at each rung it reached: a line per
    configuration, x where it was cut (PBT: replaced), the chosen one in red, the rungs as
    dashed lines. Saves a PNG at path; returns the Figure."""
    metric = summary["metric"]
    fig, (ax,) = _figure(7.5, 4.4)
    by = {}
    for row in sorted(trials, key=lambda r: (r["config"], r["rung"])):
        by.setdefault(row["config"], []).append(row)
    for config, rows in by.items():
        done = [r for r in rows if r[metric] is not None]
        chosen = config == summary["best_config"]
        style = {"color": "red", "linewidth": 2, "zorder": 3} if chosen else {
            "color": "C0", "linewidth": 0.8, "alpha": 0.5}  # fmt: skip
        ax.plot([r["epoch"] for r in done], [r[metric] for r in done], "-", **style)
        for r in done:
            if r["status"] in ("cut", "replaced"):
                ax.plot(r["epoch"], r[metric], "x", color="k", markersize=5)
    for epoch in sorted({r["epoch"] for r in trials}):
        ax.axvline(epoch, color="gray", linestyle="--", linewidth=0.8)
    ax.plot([], [], "x", color="k", label="replaced" if summary["scheduler"] == "pbt" else "cut")
    ax.plot([], [], "-", color="red", linewidth=2, label="chosen")
    _log_if_wide([ax], [r[metric] for r in trials])
    ax.set_xlabel("epoch (dashed: rungs)")
    ax.set_ylabel(LABELS[metric])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{len(by)} configurations, {LABELS[metric]} at each rung")
    fig.savefig(path, dpi=110)
    return fig


def spent_by_epoch(trials: list[dict], epochs: int) -> list[tuple[int, float]]:
    """(epoch, single-run equivalents spent up to it) at 0 and every rung: the copies
    evaluated at a rung trained since the one before."""
    points, spent, previous = [(0, 0.0)], 0.0, 0
    for rung in sorted({r["rung"] for r in trials}):
        rows = [r for r in trials if r["rung"] == rung]
        epoch = rows[0]["epoch"]
        spent += len(rows) * (epoch - previous) / epochs
        points.append((epoch, spent))
        previous = epoch
    return points


def planned_by_epoch(plan: dict) -> list[tuple[int, float]]:
    """The same points for the plan of summary.json (successive halving or PBT)."""
    epochs = plan["epochs"]
    if "rungs" not in plan:  # pbt: the whole population every epoch
        return [(0, 0.0), (epochs, float(plan["configs"]))]
    points, spent, previous = [(0, 0.0)], 0.0, 0
    for rung in plan["rungs"]:
        spent += rung["alive"] * (rung["epoch"] - previous) / epochs
        points.append((rung["epoch"], spent))
        previous = rung["epoch"]
    return points


def plot_budget(trials: list[dict], summary: dict, path: Path):
    """Left: single-run equivalents spent against epoch, as planned and as trained (less
    where copies diverged), the budget as a line. Right: wall time of the tuning and of
    one run of the recipe. Saves a PNG at path; returns the Figure."""
    fig, (ax, ax_t) = _figure(9, 3.8, 2)
    plan = summary["plan"]
    for points, style, label in (
        (spent_by_epoch(trials, plan["epochs"]), {"color": "C0", "marker": "o"}, "spent"),
        (planned_by_epoch(plan), {"color": "k", "linestyle": "--", "linewidth": 1}, "plan"),
    ):
        ax.plot(*zip(*points, strict=True), label=label, **style)
    ax.axhline(summary["budget"], color="C3", linewidth=1, label=f"budget {summary['budget']:g}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("single-run equivalents")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"spent {summary['spent']:.3g} of {summary['budget']:g}")
    one = summary["one_run"]["seconds"]
    ax_t.bar(["one run", "tune"], [one, summary["tune_seconds"]], color=["gray", "C0"])
    ax_t.set_ylabel("wall time (s)")
    ratio = summary.get("cost_ratio")
    ax_t.set_title(f"tune / one run = {ratio:.2f}" if ratio is not None else "wall time")
    fig.savefig(path, dpi=110)
    return fig

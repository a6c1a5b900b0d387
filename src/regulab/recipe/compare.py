"""Comparison reports across training runs: curves overlaid, final metrics as mean ± std
over seeds, generalization gap, weight norm, sparsity.

A run folder (one variant, one seed, written by `regulab train`) holds summary.json
and metrics.csv; a multi-run folder holds a summary.json whose "runs" lists its run
folders. Runs are grouped by variant. When two different run folders have the
same variant and seed (two recipes that both have a "l2" variant, say), every run
of that variant is relabelled "<folder>/<variant>", where <folder> is the name of
the path it was given as (the multi-run folder, or the run folder itself).
Only completed runs enter the means; diverged and running runs are counted.
"""

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regulab import run_files, tables
from regulab.errors import RunFolderError
from regulab.recipe.compare_plot import curve_band, plot_curves  # noqa: F401 (part of this API)

METRICS = (  # the final metrics that are aggregated
    "train_loss",
    "val_loss",
    "test_loss",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "w_norm",
    "zero_fraction",
)
GAPS = {"gap": ("test_loss", "train_loss"), "accuracy_gap": ("train_accuracy", "test_accuracy")}
TABLE_NOTE = (
    "last epoch, or the restored best epoch with early stopping; mean ± std (sample) over "
    "completed seeds; gap = test loss − train loss"
)
TABLE_COLUMNS = (
    ("variant", None),
    ("seeds", None),
    ("train loss", "train_loss"),
    ("test loss", "test_loss"),
    ("gap", "gap"),
    ("train acc", "train_accuracy"),
    ("test acc", "test_accuracy"),
    ("‖w‖", "w_norm"),
    ("zeros", "zero_fraction"),
)


@dataclass
class Run:
    """One training run (one variant, one seed) read from its folder."""

    path: Path  # the run folder, as given or joined onto the multi-run folder given
    variant: str  # the variant name in summary.json
    seed: int
    status: str  # "completed", "diverged" or "running"
    task: str | None  # "classification" or "regression"
    loss: str | None  # "cross_entropy", "mse" or "half_mse"
    final: dict  # final metrics from summary.json (numbers or None)
    history: list[dict]  # metrics.csv rows: epoch an int, other cells float or None if empty
    label: str = ""  # the group it is compared in: variant, or "<folder>/<variant>" on a clash

    def __post_init__(self):
        self.label = self.label or self.variant


def _run(path: Path, summary: dict) -> Run:
    return Run(
        path=path,
        variant=summary["variant"],
        seed=summary["seed"],
        status=summary["status"],
        task=summary.get("task"),
        loss=summary.get("loss"),
        final=dict(summary["final"] or {}),
        history=run_files.metrics(path),
    )


def load_runs(paths) -> list[Run]:
    """Read run folders and multi-run folders (expanded in the order of their "runs" list).

    A run reached twice (the same folder after resolving) is kept once. Every file is read
    by `run_files`: anything that is not a run or multi-run folder as regulab writes it is a
    RunFolderError (a ValueError) naming the file.
    """
    runs, sources, seen = [], [], set()
    for given in map(Path, paths):
        summary = run_files.summary(given)
        if "runs" in summary:
            members = []
            for rel in summary["runs"]:
                path = given / rel
                try:
                    inner = run_files.summary(path)
                except RunFolderError as e:
                    raise RunFolderError(f"{e} (listed in '{given / 'summary.json'}')") from None
                if "runs" in inner:
                    raise RunFolderError(
                        f"'{path}' (listed in '{given}') is a multi-run folder; "
                        "expected a run folder"
                    )
                members.append((path, inner))
        else:
            members = [(given, summary)]
        for path, inner in members:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                runs.append(_run(path, inner))
                sources.append(given)
    _label(runs, sources)
    return runs


def same_task(runs: list[Run]) -> None:
    """Refuse to rank runs of different tasks (a classification and a regression run)."""
    tasked = [r for r in runs if r.task is not None]
    for run in tasked:
        other = tasked[0]
        if other.task != run.task:
            raise RunFolderError(
                f"runs of different tasks cannot be ranked in one report: '{other.path}' is "
                f"{other.task}, '{run.path}' is {run.task}; compare them separately"
            )


def _label(runs: list[Run], sources: list[Path]) -> None:
    """Relabel variants whose (variant, seed) occurs twice as "<folder>/<variant>"."""
    counts = Counter((run.variant, run.seed) for run in runs)
    clashing = {variant for (variant, _), n in counts.items() if n > 1}
    for run, source in zip(runs, sources, strict=True):
        if run.variant in clashing:
            run.label = f"{source.resolve().name}/{run.variant}"
    first: dict[tuple, Run] = {}
    for run in runs:
        other = first.setdefault((run.label, run.seed), run)
        if other is not run:
            raise RunFolderError(
                f"runs '{other.path}' and '{run.path}' are both variant '{run.variant}' seed "
                f"{run.seed} and cannot be told apart by their folder names ('{run.label}'); "
                "compare them in separate reports or rename one of the folders"
            )


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return float(values[0]), 0.0
    return float(np.mean(values)), float(np.std(values, ddof=1))


def aggregate(runs: list[Run]) -> list[dict]:
    """One row per group (order of first appearance): mean and sample std over completed runs.

    "seeds" counts the completed runs that enter the means; "statuses" counts all
    runs by status. A metric no completed run has is None. "gap" (test − train
    loss) and "accuracy_gap" (train − test accuracy) are computed per run, then averaged.
    """
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    out = []
    for label, members in groups.items():
        done = [r for r in members if r.status == "completed"]
        statuses = dict(Counter(r.status for r in members))
        row = {"variant": label, "seeds": len(done), "statuses": statuses}
        per_run = {m: [r.final.get(m) for r in done] for m in METRICS}
        for gap, (a, b) in GAPS.items():
            per_run[gap] = [
                x - y if x is not None and y is not None else None
                for x, y in zip(per_run[a], per_run[b], strict=True)
            ]
        for name, values in per_run.items():
            row[name], row[f"{name}_std"] = _mean_std([v for v in values if v is not None])
        out.append(row)
    return out


def _pm(group: dict, key: str) -> str:
    """ "mean ± std" of one metric of a group, "—" when no run measured it."""
    if group[key] is None:
        return "—"
    return f"{group[key]:.3g} ± {group[f'{key}_std']:.2g}"


def _cell(group: dict, name: str, key: str | None) -> str:
    if name == "seeds":
        total = sum(group["statuses"].values())
        return str(group["seeds"]) + (f" of {total}" if total != group["seeds"] else "")
    return group["variant"] if key is None else _pm(group, key)


def rows(groups: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, cells per group) of the table: "mean ± std", "—" where not measured."""
    headers = [name for name, _ in TABLE_COLUMNS]
    return headers, [[_cell(g, name, key) for name, key in TABLE_COLUMNS] for g in groups]


def rich_table(groups: list[dict]):
    """The table as a rich Table for the terminal."""
    return tables.rich_table(*rows(groups))


def write_table_csv(groups: list[dict], path: Path) -> None:
    """Write the aggregate rows as CSV: full precision, empty cells for None.

    "statuses" is written as "completed=3;diverged=1".
    """
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(groups[0]))
        writer.writeheader()
        for g in groups:
            cells = {k: "" if v is None else v for k, v in g.items()}
            cells["statuses"] = ";".join(f"{k}={n}" for k, n in g["statuses"].items())
            writer.writerow(cells)


def findings(groups: list[dict], runs: list[Run]) -> list[str]:
    """Sentences computed from the table: smallest gap, best test score, excluded runs."""
    text = []
    losses = sorted({r.loss for r in runs if r.loss})
    tasks = sorted({r.task for r in runs if r.task})
    if len(losses) > 1:
        text.append(
            f"The runs use different losses ({', '.join(losses)}): their loss values and gaps "
            "are not comparable across those runs."
        )
    if len(tasks) > 1:
        text.append(f"The runs solve different tasks ({', '.join(tasks)}): they are not ranked.")
    ranked = groups if len(tasks) < 2 else []  # NaN and None never win below
    with_gap = [g for g in ranked if run_files.finite(g["gap"])]
    if len(with_gap) > 1:
        lo = min(with_gap, key=lambda g: abs(g["gap"]))
        hi = max(with_gap, key=lambda g: abs(g["gap"]))
        text.append(
            f"The generalization gap (test − train loss) is closest to zero for "
            f"**{lo['variant']}** ({_pm(lo, 'gap')}) and farthest from it for "
            f"**{hi['variant']}** ({_pm(hi, 'gap')})."
        )
    for key, best, what in (
        ("test_accuracy", max, "the best test accuracy"),
        ("test_loss", min, "the lowest test loss"),
    ):
        scored = [g for g in ranked if run_files.finite(g[key])]
        if len(scored) > 1:
            top = best(scored, key=lambda g, k=key: g[k])
            text.append(f"**{top['variant']}** has {what}: {_pm(top, key)}.")
    zeros = [g for g in ranked if run_files.finite(g["zero_fraction"]) and g["zero_fraction"]]
    if zeros:
        top = max(zeros, key=lambda g: g["zero_fraction"])
        text.append(
            f"**{top['variant']}** has the most weights exactly zero: "
            f"{top['zero_fraction']:.1%} of them."
        )
    excluded = [r for r in runs if r.status != "completed"]
    if excluded:
        listed = ", ".join(f"`{r.path}` ({r.label}, seed {r.seed}, {r.status})" for r in excluded)
        n = len(excluded)
        text.append(
            f"{n} run{'s' if n > 1 else ''} did not complete and {'are' if n > 1 else 'is'} "
            f"left out of the table and the curves: {listed}."
        )
    return text


def markdown(groups: list[dict], runs: list[Run], figure: str = "curves.png") -> str:
    """report.md of a comparison: table, findings, figure and the runs compared."""
    variants = ", ".join(g["variant"] for g in groups)
    excluded = any(r.status != "completed" for r in runs)
    lines = [
        f"# Comparison of {len(runs)} run{'s' if len(runs) != 1 else ''}: {variants}",
        "",
        tables.markdown_table(*rows(groups)),
        "",
        f"Final metrics: {TABLE_NOTE}."
        + (' Seeds reads "2 of 3" when a run did not complete.' if excluded else ""),
        "",
        *[line for sentence in findings(groups, runs) for line in (sentence, "")],
        f"![loss, accuracy and weight norm per epoch]({figure})",
        "",
        "Curves: mean over the completed seeds, band from the smallest to the largest seed; "
        "test solid, train dashed.",
        "",
        "## Runs",
        "",
        *[
            f"- `{r.path}`: {r.label}, seed {r.seed}, {r.status}, {len(r.history)} epochs"
            for r in runs
        ],
        "",
    ]
    return "\n".join(lines)

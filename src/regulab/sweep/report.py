"""The files of a sweep: path.csv, the table, report.md (the figure: `plot`).

A path is a list of row dicts (keys PATH_COLUMNS, optionally val_loss_folds),
one per strength in ascending order.
"""

import math
from pathlib import Path

from regulab import tables
from regulab.runs import csv_text, write_text
from regulab.sweep.grid import format_grid

PATH_COLUMNS = (
    "lambda",
    "status",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_loss_se",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "w_norm",
    "zero_fraction",
    "closed_form_w_norm",
    "closed_form_distance",
)
NOT_CONVERGED = 0.05  # ‖w_sgd − w_closed_form‖ / ‖w_closed_form‖ above this: SGD had not converged


def check_rows(rows: list[dict], chosen: int) -> None:
    """Raise ValueError unless rows carry PATH_COLUMNS and chosen is a completed row."""
    if not rows:
        raise ValueError("rows must hold at least one row of the path; got none")
    missing = [c for c in PATH_COLUMNS if any(c not in row for row in rows)]
    if missing:
        raise ValueError(f"rows must have the keys PATH_COLUMNS; missing {', '.join(missing)}")
    if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < len(rows):
        raise ValueError(f"chosen must be a row index in 0..{len(rows) - 1}; got {chosen!r}")
    if rows[chosen]["status"] != "completed":
        raise ValueError(
            f"chosen must be a completed row; row {chosen} is {rows[chosen]['status']}"
        )


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def relative_distance(row: dict) -> float | None:
    """‖w_sgd − w_closed_form‖ / ‖w_closed_form‖ of a row, or None without a closed form."""
    d, norm = row.get("closed_form_distance"), row.get("closed_form_w_norm")
    if not (_finite(d) and _finite(norm)):
        return None
    return d / norm if norm > 0 else (0.0 if d == 0 else math.inf)


def write_path_csv(rows: list[dict], path: Path, *, chosen: int) -> None:
    """Write the path as CSV, atomically: PATH_COLUMNS, chosen (1 or 0), val_loss_fold1..N.

    None is an empty cell; floats are written at full precision (nan as "nan").
    """
    check_rows(rows, chosen)
    folds = max(len(row.get("val_loss_folds") or ()) for row in rows)
    fold_columns = [f"val_loss_fold{k + 1}" for k in range(folds)]
    lines = [
        {
            **row,
            "chosen": int(i == chosen),
            **dict(zip(fold_columns, row.get("val_loss_folds") or (), strict=False)),
        }
        for i, row in enumerate(rows)
    ]
    write_text(path, csv_text(lines, [*PATH_COLUMNS, "chosen", *fold_columns]))


def _fmt(value, spec: str = ".4g") -> str:
    return "—" if not _finite(value) else format(value, spec)


def rows(path_rows: list[dict], chosen: int) -> tuple[list[str], list[list[str]]]:
    """(headers, cells per strength) of the table, the chosen row marked with →.

    Accuracy, zeros and closed-form columns appear only when the path has them.
    """
    check_rows(path_rows, chosen)
    accuracy = any(row["val_accuracy"] is not None for row in path_rows)
    zeros = any(_finite(row["zero_fraction"]) and row["zero_fraction"] > 0 for row in path_rows)
    closed = any(relative_distance(row) is not None for row in path_rows)
    headers = ["", "λ", "train loss", "val loss ± SE", "test loss"]
    headers += ["val acc", "test acc"] * accuracy + ["‖w‖"] + ["zeros"] * zeros
    headers += ["‖w − w_cf‖ / ‖w_cf‖"] * closed
    table = []
    for i, row in enumerate(path_rows):
        val = _fmt(row["val_loss"])
        if _finite(row["val_loss_se"]) and _finite(row["val_loss"]):
            val += f" ± {row['val_loss_se']:.2g}"
        cells = ["→" if i == chosen else "", f"{row['lambda']:.3g}", _fmt(row["train_loss"])]
        cells += [val, _fmt(row["test_loss"])]
        if accuracy:
            cells += [_fmt(row["val_accuracy"], ".2%"), _fmt(row["test_accuracy"], ".2%")]
        cells.append(_fmt(row["w_norm"], ".3g"))
        if zeros:
            cells.append(_fmt(row["zero_fraction"], ".1%"))
        if closed:
            cells.append(_fmt(relative_distance(row), ".2g"))
        if row["status"] != "completed":
            cells[2:] = ["—", row["status"]] + ["—"] * (len(cells) - 4)
        table.append(cells)
    return headers, table


def _thin(n: int, chosen: int, max_rows: int) -> list[int]:
    """Indices to show: all if n <= max_rows, else the first, the last and a window on chosen."""
    if n <= max_rows:
        return list(range(n))
    k = max_rows - 2
    lo = min(max(chosen - k // 2, 1), n - 1 - k)
    return sorted({0, n - 1, *range(lo, lo + k)})


def rich_table(path_rows: list[dict], chosen: int, max_rows: int = 12):
    """The table as a rich Table, the chosen row in bold; longer paths thinned around it."""
    headers, cells = rows(path_rows, chosen)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 3:
        raise ValueError(f"max_rows must be an integer >= 3; got {max_rows!r}")
    shown, styles = [], []
    kept = _thin(len(cells), chosen, max_rows)
    for j, i in enumerate(kept):
        if j and i != kept[j - 1] + 1:
            shown.append(["", "…", *[""] * (len(headers) - 2)])
            styles.append("dim")
        shown.append(cells[i])
        styles.append("bold" if i == chosen else None)
    return tables.rich_table(headers, shown, left=2, styles=styles)


def _change(value: float, ref: float) -> str:
    """'12.3% lower than' or '5.2e+03 times lower than': percentages stop at a factor of 2."""
    if value <= 0 or ref <= 0 or max(value, ref) / min(value, ref) < 2:
        change = (value - ref) / ref if ref else 0.0
        return f"{abs(change):.1%} {'lower' if change <= 0 else 'higher'} than"
    factor = max(value, ref) / min(value, ref)
    return f"{factor:.3g} times {'lower' if value < ref else 'higher'} than"


def findings(
    rows: list[dict], chosen: int, rule: str, more_inputs_than_examples: bool = False
) -> list[str]:
    """Sentences saying what the path shows, computed from its numbers."""
    row, first = rows[chosen], rows[0]
    lam = row["lambda"]
    ref = "λ = 0" if first["lambda"] == 0 else f"the weakest λ = {first['lambda']:.3g}"
    notes = []
    if chosen == 0 and lam == 0:
        notes.append("λ = 0 was chosen: no strength on the grid lowered the validation loss.")
    elif chosen == 0:
        notes.append(
            f"The weakest λ on the grid ({lam:.3g}) was chosen: the best strength may lie "
            "below it; extend the grid downward, or add 0."
        )
    elif _finite(first["val_loss"]) and first["status"] == "completed":
        notes.append(
            f"At the chosen λ = {lam:.3g} the validation loss is {row['val_loss']:.4g}, "
            f"{_change(row['val_loss'], first['val_loss'])} at {ref} "
            f"({first['val_loss']:.4g})"
            + (
                f"; the test loss is {row['test_loss']:.4g} against {first['test_loss']:.4g}."
                if _finite(row["test_loss"]) and _finite(first["test_loss"])
                else "."
            )
        )
    else:
        notes.append(
            f"At the chosen λ = {lam:.3g} the validation loss is {row['val_loss']:.4g}; "
            f"at {ref} training diverged, so there is nothing to compare it with."
        )
    if chosen == len(rows) - 1 and len(rows) > 1:
        notes.append(
            "The chosen λ is the largest on the grid: the best strength may lie beyond it; "
            "extend the grid upward."
        )
    if rule == "one_se":
        best = min(
            (r for r in rows if r["status"] == "completed" and _finite(r["val_loss"])),
            key=lambda r: r["val_loss"],
        )
        if best is not row:
            notes.append(
                f"The one-standard-error rule chose it over λ = {best['lambda']:.3g}, where the "
                f"validation loss is lowest ({best['val_loss']:.4g} ± "
                f"{_fmt(best['val_loss_se'], '.2g')}): "
                "the stronger penalty is within one standard error of it."
            )
    rel = relative_distance(row)
    if rel is not None:
        verdict = "had not converged" if rel > NOT_CONVERGED else "reached it"
        notes.append(
            f"At the chosen λ the SGD weights lie ‖w − w_cf‖ / ‖w_cf‖ = {rel:.2g} from the exact "
            f"ridge solution w_cf (‖w_cf‖ = {row['closed_form_w_norm']:.3g}): SGD {verdict} "
            f"(not converged above {NOT_CONVERGED:g})."
        )
        if more_inputs_than_examples and rows[0]["lambda"] == 0 and relative_distance(rows[0]):
            notes.append(
                "At λ = 0 no number of epochs closes the distance: SGD never changes the part "
                "of the initial weights orthogonal to the training inputs, so it does not "
                "reach the minimum-norm solution w_cf when there are more inputs than examples."
            )
        far = [r for r in rows if r["lambda"] > 0 and (relative_distance(r) or 0) > NOT_CONVERGED]
        if far:
            worst = max(far, key=relative_distance)
            notes.append(
                f"At {len(far)} of {len(rows)} strengths the relative distance exceeds "
                f"{NOT_CONVERGED:g} (largest {relative_distance(worst):.2g} at "
                f"λ = {worst['lambda']:.3g}): train longer there before trusting the path."
            )
    diverged = [r["lambda"] for r in rows if r["status"] != "completed"]
    if diverged:
        notes.append(
            f"{len(diverged)} of {len(rows)} strengths diverged "
            f"(λ = {', '.join(f'{v:.3g}' for v in diverged)}) and could not be chosen."
        )
    return notes


def markdown(summary: dict, path_rows: list[dict], figure: str = "path.png") -> str:
    """report.md of a sweep: what was swept, the chosen lambda, findings, figure, table."""
    chosen, param, rule = summary["best_index"], summary["param"], summary["rule"]
    underdetermined = bool(summary.get("more_inputs_than_examples"))
    check_rows(path_rows, chosen)
    row = path_rows[chosen]
    how = {
        "min": "the lowest validation loss",
        "one_se": "the largest λ within one standard error of the lowest validation loss",
    }.get(rule, rule)
    ran = f"recipe `{summary['recipe']}`" if summary.get("recipe") else "the recipe"
    if summary.get("engine"):
        ran += f", engine `{summary['engine']}`"
    if summary.get("seconds") is not None:
        ran += f", {summary['seconds']:.1f} s"
    metrics = [(k, row[k]) for k in PATH_COLUMNS[2:] if _finite(row[k])]
    text = [
        f"# Regularization path over {param}",
        "",
        f"Swept `{param}` over {len(summary['grid'])} strengths "
        f"({format_grid(summary['grid'])}); {ran}. Selection on {summary['selection']} "
        f"validation by rule `{rule}` ({how}); the test set took no part in the choice.",
        "",
        f"## Chosen λ = {row['lambda']:.4g}",
        "",
        tables.markdown_table(["metric", "value"], [[k, f"{v:.4g}"] for k, v in metrics]),
        "",
        *(note + "\n" for note in findings(path_rows, chosen, rule, underdetermined)),
        f"![validation, test and train loss and ‖w‖ against λ]({figure})",
        "",
        "## All strengths",
        "",
        tables.markdown_table(*rows(path_rows, chosen)),
        "",
        "val loss ± SE: standard error over folds (k-fold) or over validation examples "
        "(holdout); → marks the chosen λ.",
        "",
    ]
    return "\n".join(text)

"""The sweep's files: path.csv round trip, the path figure's data, Markdown and rich tables."""

import csv
import math

import numpy as np
import pytest
from rich.console import Console

from regulab import tables
from regulab.sweep import report
from regulab.sweep.plot import plot_path
from regulab.sweep.report import (
    PATH_COLUMNS,
    markdown,
    relative_distance,
    rich_table,
    write_path_csv,
)

LAMBDAS = [0.0, 0.001, 0.01, 0.1, 1.0, 10.0]
DIVERGED = 1  # the row at lambda = 0.001
CHOSEN = 3  # lambda = 0.1


def make_rows(lambdas=LAMBDAS, diverged=(DIVERGED,), folds=3, classification=False):
    """A path with made-up but distinct numbers; closed-form columns as for linear regression."""
    rows = []
    for i, lam in enumerate(lambdas):
        if i in diverged:
            rows.append(dict.fromkeys(PATH_COLUMNS) | {"lambda": lam, "status": "diverged"})
            rows[-1]["val_loss"] = math.nan
            continue
        val = 1.0 + (i - CHOSEN) ** 2 / 7 + i / 1000
        rows.append(
            {
                "lambda": lam,
                "status": "completed",
                "train_loss": 0.2 + i / 10,
                "train_accuracy": 0.99 - i / 100 if classification else None,
                "val_loss": val,
                "val_loss_se": 0.05 + i / 100,
                "val_accuracy": 0.9 - i / 100 if classification else None,
                "test_loss": val * 1.1,
                "test_accuracy": 0.88 - i / 100 if classification else None,
                "w_norm": 5.0 / (1 + lam),
                "zero_fraction": 0.0,
                "closed_form_w_norm": None if classification else 5.0 / (1 + lam),
                "closed_form_distance": None if classification else 0.01 * (i + 1),
                "val_loss_folds": [val - 0.1 * k for k in range(folds)] if folds else None,
            }
        )
    return rows


def completed(rows):
    return [row for row in rows if row["status"] == "completed"]


# --- CSV ---------------------------------------------------------------------------------


def test_csv_round_trip(tmp_path):
    rows = make_rows()
    write_path_csv(rows, tmp_path / "path.csv", chosen=CHOSEN)
    assert [p.name for p in tmp_path.iterdir()] == ["path.csv"]  # no temporary file left
    with (tmp_path / "path.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        header, read = reader.fieldnames, list(reader)
    assert header == [*PATH_COLUMNS, "chosen", "val_loss_fold1", "val_loss_fold2", "val_loss_fold3"]
    assert len(read) == len(rows)
    for i, (row, cells) in enumerate(zip(rows, read, strict=True)):
        assert cells["chosen"] == ("1" if i == CHOSEN else "0")
        assert cells["status"] == row["status"]
        for key in (*PATH_COLUMNS[2:], "lambda"):
            if row[key] is None:
                assert cells[key] == "", key
            elif math.isnan(row[key]):
                assert math.isnan(float(cells[key]))
            else:
                assert float(cells[key]) == row[key], key  # full precision, exactly
        folds = row.get("val_loss_folds") or [None] * 3
        for k, value in enumerate(folds):
            cell = cells[f"val_loss_fold{k + 1}"]
            assert cell == "" if value is None else float(cell) == value
    assert read[0]["train_accuracy"] == "" and read[DIVERGED]["val_loss_fold1"] == ""


def test_csv_without_folds_has_no_fold_columns(tmp_path):
    rows = make_rows(folds=0, classification=True)
    write_path_csv(rows, tmp_path / "path.csv", chosen=2)
    with (tmp_path / "path.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == [*PATH_COLUMNS, "chosen"]
        read = list(reader)
    assert float(read[2]["val_accuracy"]) == rows[2]["val_accuracy"]
    assert read[2]["closed_form_distance"] == ""


def test_csv_checks_its_input(tmp_path):
    rows = make_rows()
    with pytest.raises(ValueError, match="chosen must be a completed row; row 1 is diverged"):
        write_path_csv(rows, tmp_path / "p.csv", chosen=DIVERGED)
    with pytest.raises(ValueError, match=r"chosen must be a row index in 0\.\.5; got 6"):
        write_path_csv(rows, tmp_path / "p.csv", chosen=6)
    del rows[2]["w_norm"]
    with pytest.raises(ValueError, match="missing w_norm"):
        write_path_csv(rows, tmp_path / "p.csv", chosen=0)
    assert not list(tmp_path.iterdir())


# --- figure ------------------------------------------------------------------------------


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_figure_data_and_axes(tmp_path):
    rows = make_rows()
    fig = plot_path(rows, CHOSEN, tmp_path / "path.png", param="l2", loss_name="half_mse")
    assert (tmp_path / "path.png").read_bytes()[:4] == b"\x89PNG"
    ax, ax_w = fig.axes
    assert ax.get_xscale() == "log"
    assert "l2" in ax.get_title() and "1 diverged" in ax.get_title()

    # lambda = 0 one decade left of the smallest lambda > 0, its tick labelled "0"
    x0 = LAMBDAS[1] / 10
    ticks = dict(zip(ax.get_xticks(), (t.get_text() for t in ax.get_xticklabels()), strict=True))
    assert ticks[x0] == "0"
    assert ticks[0.01] == "0.01" and ticks[10.0] == "10"

    done = completed(rows)
    xs = [x0 if row["lambda"] == 0 else row["lambda"] for row in done]
    lines = lines_by_label(ax)
    for label, key in (("validation", "val_loss"), ("test", "test_loss"), ("train", "train_loss")):
        np.testing.assert_allclose(lines[label].get_xdata(), xs, rtol=1e-12)
        np.testing.assert_allclose(lines[label].get_ydata(), [r[key] for r in done], rtol=1e-12)
    w_line = lines_by_label(ax_w)["‖w‖"]
    np.testing.assert_allclose(w_line.get_ydata(), [r["w_norm"] for r in done], rtol=1e-12)
    assert ax_w.get_yscale() == "log"

    # the diverged lambda is drawn nowhere
    for line in [*ax.get_lines(), *ax_w.get_lines()]:
        assert not np.isclose(np.asarray(line.get_xdata(), dtype=float), LAMBDAS[DIVERGED]).any()

    # the ± SE band spans val_loss ± val_loss_se at each completed lambda
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    for x, row in zip(xs, done, strict=True):
        for y in (row["val_loss"] - row["val_loss_se"], row["val_loss"] + row["val_loss_se"]):
            assert np.isclose(vertices, [x, y], rtol=1e-12, atol=0).all(axis=1).any()

    chosen = [line for label, line in lines.items() if label.startswith("chosen λ")]
    assert len(chosen) == 1 and chosen[0].get_label() == "chosen λ = 0.1"
    assert list(chosen[0].get_xdata()) == [LAMBDAS[CHOSEN]] * 2
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "chosen λ = 0.1" in legend and "validation" in legend and "‖w‖" in legend


def test_figure_without_zero_keeps_the_default_log_ticks(tmp_path):
    rows = make_rows(lambdas=[0.01, 0.1, 1.0, 10.0, 100.0], diverged=())
    fig = plot_path(rows, 0, tmp_path / "p.png", param="dropout", loss_name="cross_entropy")
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_xscale() == "log"
    assert "0" not in [t.get_text() for t in ax.get_xticklabels()]
    xdata = lines_by_label(ax)["validation"].get_xdata()
    np.testing.assert_allclose(xdata, [r["lambda"] for r in rows], rtol=1e-12)
    assert list(lines_by_label(ax)["chosen λ = 0.01"].get_xdata()) == [0.01, 0.01]


def test_figure_of_a_zero_only_grid(tmp_path):
    rows = make_rows(lambdas=[0.0], diverged=())
    fig = plot_path(rows, 0, tmp_path / "p.png", param="l2", loss_name="half_mse")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0"]


# --- tables and report -------------------------------------------------------------------


def test_markdown_table_has_one_row_per_lambda_and_marks_the_chosen():
    rows = make_rows(classification=True)
    lines = tables.markdown_table(*report.rows(rows, CHOSEN)).splitlines()
    assert len(lines) == 2 + len(rows)
    body = [line.split(" | ") for line in lines[2:]]
    assert [cells[1] for cells in body] == ["0", "0.001", "0.01", "0.1", "1", "10"]
    assert [i for i, cells in enumerate(body) if cells[0] == "| →"] == [CHOSEN]
    assert "val acc" in lines[0] and "87.00%" in lines[2 + CHOSEN]
    assert "diverged" in lines[2 + DIVERGED]


def test_rich_table_renders_and_marks_the_chosen():
    rows = make_rows()
    console = Console(record=True, width=160)
    console.print(rich_table(rows, CHOSEN))
    text = console.export_text()
    chosen_line = next(line for line in text.splitlines() if "→" in line)
    assert "0.1 " in chosen_line and f"{rows[CHOSEN]['val_loss']:.4g}" in chosen_line
    assert "diverged" in text and "…" not in text
    assert "‖w − w_cf‖ / ‖w_cf‖" in text and "val acc" not in text


def test_rich_table_thins_long_paths_around_the_chosen():
    lambdas = [0.0, *np.logspace(-3, 2, 29).tolist()]
    rows = make_rows(lambdas=lambdas, diverged=())
    console = Console(record=True, width=160)
    console.print(rich_table(rows, 20, max_rows=8))
    lines = console.export_text().splitlines()[2:]  # header and rule
    data = [line for line in lines if line.strip() and "…" not in line]
    assert len(data) == 8
    assert sum("…" in line for line in lines) == 2
    assert data[0].split()[0] == "0" and data[-1].split()[0] == "100"
    assert any("→" in line and f"{lambdas[20]:.3g}" in line for line in data)
    with pytest.raises(ValueError, match="max_rows must be an integer >= 3; got 2"):
        rich_table(rows, 20, max_rows=2)


def summary(rows, chosen, rule="min"):
    return {
        "param": "l2",
        "grid": [row["lambda"] for row in rows],
        "selection": "3-fold",
        "rule": rule,
        "best_lambda": rows[chosen]["lambda"],
        "best_index": chosen,
        "best": rows[chosen],
        "recipe": "ridge_demo",
        "engine": "vmap",
        "seconds": 1.25,
    }


def test_report_markdown(tmp_path):
    rows = make_rows()
    text = markdown(summary(rows, CHOSEN), rows, figure="path.png")
    assert text.startswith("# Regularization path over l2")
    assert "## Chosen λ = 0.1" in text and "![" in text and "](path.png)" in text
    assert "recipe `ridge_demo`" in text and "3-fold" in text and "rule `min`" in text
    table = text.split("## All strengths")[1]
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + len(rows)
    # validation loss at the chosen lambda against lambda = 0, computed from the rows
    factor = rows[0]["val_loss"] / rows[CHOSEN]["val_loss"]
    assert factor > 2  # beyond a factor of 2 the change is given as a factor, not a percentage
    assert f"{factor:.3g} times lower than at λ = 0" in text
    # closed form: relative distance 0.04 / 4.545 is below 0.05
    assert relative_distance(rows[CHOSEN]) == pytest.approx(0.04 / (5 / 1.1), rel=1e-12)
    assert "SGD reached it" in text
    assert "1 of 6 strengths diverged (λ = 0.001)" in text


def test_report_says_when_sgd_had_not_converged_and_when_the_largest_lambda_wins():
    rows = make_rows()
    last = len(rows) - 1
    rows[last]["closed_form_distance"] = 0.2 * rows[last]["closed_form_w_norm"]
    text = markdown(summary(rows, last), rows)
    assert "= 0.2 from the exact ridge solution" in text and "SGD had not converged" in text
    assert "1 of 6 strengths the relative distance exceeds 0.05" in text
    assert "extend the grid upward" in text


def test_report_one_se_and_classification():
    rows = make_rows(classification=True)
    text = markdown(summary(rows, 4, rule="one_se"), rows)
    assert "one-standard-error rule chose it over λ = 0.1" in text
    assert "SGD" not in text
    assert "| val_accuracy | 0.86 |" in text


def test_report_when_the_weakest_lambda_wins():
    rows = make_rows(diverged=())
    assert "λ = 0 was chosen: no strength" in markdown(summary(rows, 0), rows)
    rows = make_rows(lambdas=[0.01, 0.1, 1.0], diverged=())
    assert "extend the grid downward" in markdown(summary(rows, 0), rows)

"""Comparison reports: loading run folders, means and spreads over seeds, tables, figure, report."""

import csv
import io
import json
import math

import matplotlib
import numpy as np
import pytest
from rich.console import Console

from regulab import tables
from regulab.recipe import compare

HEADER_LINE = (  # metrics.csv as `regulab train` writes it
    "epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,test_loss,test_accuracy,"
    "w_norm,zero_fraction,seconds"
)
HEADER = HEADER_LINE.split(",")
FINAL = (
    "train_loss",
    "val_loss",
    "test_loss",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "w_norm",
    "zero_fraction",
)


def curve(scale, epochs=4, task="classification"):
    """A made-up history whose values depend on scale; accuracy cells empty for regression."""
    acc = task == "classification"
    return [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": scale / e,
            "train_accuracy": 1 - scale / (4 * e) if acc else None,
            "val_loss": None,
            "val_accuracy": None,
            "test_loss": scale / e + scale / 2,
            "test_accuracy": 0.9 - scale / (4 * e) if acc else None,
            "w_norm": scale * e,
            "zero_fraction": scale / 10,
            "seconds": 0.01,
        }
        for e in range(1, epochs + 1)
    ]


def write_run(folder, variant, seed, history, status="completed", task="classification"):
    """Write config.json, metrics.csv and summary.json as `regulab train` does."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps({"command": "train", "variant": variant, "seed": seed, "recipe": {}})
    )
    with (folder / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        for row in history:
            writer.writerow(["" if row[k] is None else row[k] for k in HEADER])
    last = history[-1]
    summary = {
        "command": "train",
        "status": status,
        "variant": variant,
        "seed": seed,
        "epochs": len(history),
        "best_epoch": None,
        "stopped_early": False,
        "task": task,
        "loss": "cross_entropy" if task == "classification" else "mse",
        "final": {k: last[k] for k in FINAL},
        "seconds": 0.1,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def write_multi(folder, runs):
    """A multi-run folder: runs is a list of (variant, seed, history, status)."""
    listed = []
    for variant, seed, history, status in runs:
        rel = f"runs/{variant}/seed-{seed}"
        write_run(folder / rel, variant, seed, history, status)
        listed.append(rel)
    (folder / "config.json").write_text(json.dumps({"command": "train", "recipe": {}}))
    (folder / "summary.json").write_text(
        json.dumps({"command": "train", "status": "completed", "runs": listed})
    )
    return listed


SCALES = {"none": (1.0, 1.3, 0.8), "l2": (0.2, 0.35, 0.25)}


@pytest.fixture
def recipe(tmp_path):
    """l2 listed first (not alphabetical), seeds out of order, one diverged none run."""
    runs = [("l2", s, curve(SCALES["l2"][s]), "completed") for s in (2, 0, 1)]
    runs += [("none", s, curve(SCALES["none"][s]), "completed") for s in (0, 1, 2)]
    runs.append(("none", 3, curve(1e6, epochs=2), "diverged"))
    write_multi(tmp_path / "recipe", runs)
    return tmp_path / "recipe"


def test_multi_run_folder_expands_in_listed_order(recipe):
    runs = compare.load_runs([recipe])
    assert [(r.variant, r.seed) for r in runs] == [
        ("l2", 2),
        ("l2", 0),
        ("l2", 1),
        ("none", 0),
        ("none", 1),
        ("none", 2),
        ("none", 3),
    ]
    assert runs[0].path == recipe / "runs/l2/seed-2"
    assert [r.label for r in runs] == [r.variant for r in runs]
    assert runs[-1].status == "diverged"
    assert runs[0].task == "classification" and runs[0].loss == "cross_entropy"
    assert runs[0].history == curve(SCALES["l2"][2])
    assert isinstance(runs[0].history[0]["epoch"], int)
    assert runs[0].history[0]["val_loss"] is None


def test_aggregate_matches_numpy_over_completed_seeds(recipe):
    groups = compare.aggregate(compare.load_runs([recipe]))
    assert [g["variant"] for g in groups] == ["l2", "none"]
    for g in groups:
        finals = [curve(s)[-1] for s in SCALES[g["variant"]]]
        assert g["seeds"] == 3
        for m in FINAL:
            if m.startswith("val"):
                assert g[m] is None and g[f"{m}_std"] is None
                continue
            v = np.array([f[m] for f in finals])
            assert g[m] == pytest.approx(v.mean(), abs=1e-12, rel=0)
            assert g[f"{m}_std"] == pytest.approx(np.std(v, ddof=1), abs=1e-12, rel=0)
        gap = np.array([f["test_loss"] - f["train_loss"] for f in finals])
        acc_gap = np.array([f["train_accuracy"] - f["test_accuracy"] for f in finals])
        assert g["gap"] == pytest.approx(gap.mean(), abs=1e-12, rel=0)
        assert g["gap_std"] == pytest.approx(np.std(gap, ddof=1), abs=1e-12, rel=0)
        assert g["accuracy_gap"] == pytest.approx(acc_gap.mean(), abs=1e-12, rel=0)
        assert g["accuracy_gap_std"] == pytest.approx(np.std(acc_gap, ddof=1), abs=1e-12, rel=0)


def test_diverged_runs_are_counted_but_left_out_of_the_means(recipe):
    none = compare.aggregate(compare.load_runs([recipe]))[1]
    assert none["statuses"] == {"completed": 3, "diverged": 1}
    assert none["seeds"] == 3
    assert none["train_loss"] < 10  # the diverged run's final train loss is 5e5
    assert tables.markdown_table(*compare.rows([none])).splitlines()[2].split(" | ")[1] == "3 of 4"


def test_gap_is_taken_per_run_then_averaged(tmp_path):
    a = curve(1.0)
    b = curve(2.0)
    b[-1]["test_loss"] = None  # run b has no test loss: its train loss must not enter the gap
    write_run(tmp_path / "a", "v", 0, a)
    write_run(tmp_path / "b", "v", 1, b)
    (g,) = compare.aggregate(compare.load_runs([tmp_path / "a", tmp_path / "b"]))
    assert g["gap"] == pytest.approx(a[-1]["test_loss"] - a[-1]["train_loss"], abs=1e-12)
    assert g["gap_std"] == 0.0
    assert g["test_loss_std"] == 0.0
    assert g["train_loss_std"] == pytest.approx(np.std([0.25, 0.5], ddof=1), abs=1e-12)


def test_regression_run_has_no_accuracy(tmp_path):
    write_run(tmp_path / "reg", "ridge", 0, curve(0.5, task="regression"), task="regression")
    (run,) = compare.load_runs([tmp_path / "reg"])
    assert run.task == "regression" and run.history[0]["test_accuracy"] is None
    (g,) = compare.aggregate([run])
    assert g["test_accuracy"] is None and g["accuracy_gap"] is None
    assert g["train_loss_std"] == 0.0
    row = tables.markdown_table(*compare.rows([g])).splitlines()[2]
    assert row == "| ridge | 1 | 0.125 ± 0 | 0.375 ± 0 | 0.25 ± 0 | — | — | 2 ± 0 | 0.05 ± 0 |"


def test_the_same_run_given_twice_is_read_once(recipe):
    once = compare.load_runs([recipe])
    again = compare.load_runs(
        [recipe, recipe / "runs/none/seed-1", recipe / "runs/../runs/l2/seed-0", recipe]
    )
    assert [r.path for r in again] == [r.path for r in once]
    first = compare.load_runs([recipe / "runs/none/seed-1", recipe])
    assert [(r.variant, r.seed) for r in first][:2] == [("none", 1), ("l2", 2)]
    assert len(first) == len(once)


def test_same_variant_and_seed_from_two_folders_are_kept_apart(tmp_path):
    write_multi(tmp_path / "adam", [("l2", 0, curve(1.0), "completed")])
    write_multi(
        tmp_path / "sgd",
        [("l2", 0, curve(2.0), "completed"), ("dropout", 0, curve(3.0), "completed")],
    )
    runs = compare.load_runs([tmp_path / "adam", tmp_path / "sgd"])
    assert [r.label for r in runs] == ["adam/l2", "sgd/l2", "dropout"]
    assert [r.variant for r in runs] == ["l2", "l2", "dropout"]
    groups = compare.aggregate(runs)
    assert [(g["variant"], g["seeds"]) for g in groups] == [
        ("adam/l2", 1),
        ("sgd/l2", 1),
        ("dropout", 1),
    ]


def test_runs_that_cannot_be_told_apart_are_refused(tmp_path):
    write_run(tmp_path / "a/same", "l2", 0, curve(1.0))
    write_run(tmp_path / "b/same", "l2", 0, curve(2.0))
    with pytest.raises(ValueError, match=r"a/same.*b/same.*rename"):
        compare.load_runs([tmp_path / "a/same", tmp_path / "b/same"])


def bad_inputs(tmp_path):
    """(path, expected message fragment) for each kind of bad input."""
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = [(tmp_path / "missing", "does not exist"), (tmp_path / "file.txt", "not a folder")]
    cases.append((tmp_path / "empty", "no summary.json"))
    write_run(tmp_path / "demo", "v", 0, curve(1.0))
    (tmp_path / "demo/summary.json").write_text(json.dumps({"command": "demo"}))
    cases.append((tmp_path / "demo", "command 'demo'"))
    write_run(tmp_path / "broken", "v", 0, curve(1.0))
    (tmp_path / "broken/summary.json").write_text("{not json")
    cases.append((tmp_path / "broken", "cannot read"))
    write_run(tmp_path / "nometrics", "v", 0, curve(1.0))
    (tmp_path / "nometrics/metrics.csv").unlink()
    cases.append((tmp_path / "nometrics", "cannot read"))
    for name, text, fragment in (
        ("text", "abc", "not a number"),
        ("short", "1,0.1", "has 2 cells"),
        ("float_epoch", "1.5" + ",1" * 10, "integer epoch"),
    ):
        write_run(tmp_path / name, "v", 0, curve(1.0))
        with (tmp_path / name / "metrics.csv").open("a") as f:
            f.write(text + "," * 10 * (name == "text") + "\n")
        cases.append((tmp_path / name, fragment))
    write_run(tmp_path / "columns", "v", 0, curve(1.0))
    (tmp_path / "columns/metrics.csv").write_text("epoch,train_loss\n1,0.5\n")
    cases.append((tmp_path / "columns", "lacks the columns"))
    write_multi(tmp_path / "multi", [("v", 0, curve(1.0), "completed")])
    (tmp_path / "multi/summary.json").write_text(
        json.dumps({"command": "train", "runs": ["runs/v/seed-0", "runs/gone"]})
    )
    cases.append((tmp_path / "multi", "runs/gone' does not exist"))
    (tmp_path / "none_listed").mkdir()
    (tmp_path / "none_listed/summary.json").write_text(json.dumps({"command": "train", "runs": []}))
    cases.append((tmp_path / "none_listed", "lists no runs"))
    return cases


def test_each_bad_input_is_named_in_the_error(tmp_path):
    cases = bad_inputs(tmp_path)
    assert len(cases) == 12
    for path, fragment in cases:
        with pytest.raises(ValueError) as info:
            compare.load_runs([path])
        message = str(info.value)
        assert path.name in message and fragment in message, (path, message)
        assert "expected" in message, message


def test_curve_band_matches_numpy_where_runs_have_values():
    a, b, c = curve(1.0, epochs=5), curve(2.0, epochs=3), curve(4.0, epochs=5)
    c[1]["test_loss"] = None  # not measured at epoch 2
    epochs, mean, lo, hi = compare.curve_band([a, b, c], "test_loss")
    assert epochs.tolist() == [1, 2, 3, 4, 5]
    values = {
        1: [a[0], b[0], c[0]],
        2: [a[1], b[1]],
        3: [a[2], b[2], c[2]],
        4: [a[3], c[3]],
        5: [a[4], c[4]],
    }
    for i, e in enumerate(epochs):
        v = np.array([row["test_loss"] for row in values[e]])
        assert (mean[i], lo[i], hi[i]) == pytest.approx((v.mean(), v.min(), v.max()), abs=1e-12)
    assert len(compare.curve_band([a], "val_loss")[0]) == 0


def test_plot_draws_completed_runs_per_variant(recipe, tmp_path):
    backend = matplotlib.get_backend()
    runs = compare.load_runs([recipe])
    fig = compare.plot_curves(runs, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend
    loss, acc, norm = fig.axes
    assert loss.get_yscale() == "log"
    lines = {line.get_label(): line for line in loss.get_lines()}
    assert set(lines) == {"l2: test_loss", "l2: train_loss", "none: test_loss", "none: train_loss"}
    assert lines["none: train_loss"].get_linestyle() == "--"
    assert lines["none: test_loss"].get_linestyle() == "-"
    assert lines["l2: test_loss"].get_color() != lines["none: test_loss"].get_color()
    done = [r.history for r in runs if r.variant == "none" and r.status == "completed"]
    _, mean, _, _ = compare.curve_band(done, "test_loss")
    np.testing.assert_allclose(lines["none: test_loss"].get_ydata(), mean, rtol=0, atol=1e-12)
    assert max(lines["none: test_loss"].get_ydata()) < 10  # the diverged run is not drawn
    assert len(acc.get_lines()) == 4 and "accuracy" in acc.get_ylabel()
    assert [line.get_label() for line in norm.get_lines()] == ["l2: w_norm", "none: w_norm"]


def test_plot_of_regression_runs_has_no_accuracy_panel(tmp_path):
    write_run(tmp_path / "reg", "ridge", 0, curve(0.5, task="regression"), task="regression")
    fig = compare.plot_curves(compare.load_runs([tmp_path / "reg"]), tmp_path / "c.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss (mse)", "‖w‖"]
    assert fig.axes[0].get_yscale() == "log"
    assert (tmp_path / "c.png").stat().st_size > 0
    history = curve(0.5, task="regression")
    history[-1]["train_loss"] = 0.0  # a loss of zero cannot go on a log axis
    write_run(tmp_path / "zero", "ridge", 0, history, task="regression")
    fig = compare.plot_curves(compare.load_runs([tmp_path / "zero"]), tmp_path / "z.png")
    assert fig.axes[0].get_yscale() == "linear"


def groups_for(tmp_path):
    """none: train 0.1, 0.3 / test 0.5, 0.9; l2: train 0.2, 0.2 / test 0.3, 0.4."""
    runs = []
    for variant, seed, train, test in (
        ("none", 0, 0.1, 0.5),
        ("none", 1, 0.3, 0.9),
        ("l2", 0, 0.2, 0.3),
        ("l2", 1, 0.2, 0.4),
    ):
        history = curve(1.0, epochs=2)
        history[-1].update(
            train_loss=train,
            test_loss=test,
            test_accuracy=0.9 - test / 10,
            zero_fraction=0.25 * (variant == "l2"),
        )
        runs.append((variant, seed, history, "completed"))
    runs.append(("l2", 2, curve(1e6, epochs=2), "diverged"))
    write_multi(tmp_path / "r", runs)
    runs = compare.load_runs([tmp_path / "r"])
    return compare.aggregate(runs), runs


def test_markdown_table_formats_mean_and_std(tmp_path):
    groups, _ = groups_for(tmp_path)
    lines = tables.markdown_table(*compare.rows(groups)).splitlines()
    assert lines[0] == (
        "| variant | seeds | train loss | test loss | gap | train acc | test acc | ‖w‖ | zeros |"
    )
    assert {line.count("|") for line in lines} == {10}
    none = lines[2].split(" | ")
    assert none[:5] == ["| none", "2", "0.2 ± 0.14", "0.7 ± 0.28", "0.5 ± 0.14"]
    assert lines[3].split(" | ")[:5] == [
        "| l2",
        "2 of 3",
        "0.2 ± 0",
        "0.35 ± 0.071",
        "0.15 ± 0.071",
    ]
    assert none[-1] == "0 ± 0 |"
    console = Console(file=io.StringIO(), width=200)
    console.print(compare.rich_table(groups))
    text = console.file.getvalue()
    assert "0.35 ± 0.071" in text and "2 of 3" in text and "‖w‖" in text


def test_table_csv_keeps_full_precision(tmp_path):
    groups, _ = groups_for(tmp_path)
    compare.write_table_csv(groups, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["none", "l2"]
    assert float(rows[0]["train_loss_std"]) == groups[0]["train_loss_std"]
    assert rows[1]["statuses"] == "completed=2;diverged=1"
    assert rows[0]["val_loss"] == "" and rows[0]["val_loss_std"] == ""
    assert math.isclose(float(rows[1]["gap"]), 0.15, abs_tol=1e-12)


def test_report_names_the_right_variants(tmp_path):
    groups, runs = groups_for(tmp_path)
    text = compare.markdown(groups, runs, figure="fig.png")
    assert text.startswith("# Comparison of 5 runs: none, l2\n")
    assert tables.markdown_table(*compare.rows(groups)) in text
    assert compare.TABLE_NOTE in text
    assert "closest to zero for **l2** (0.15 ± 0.071)" in text
    assert "farthest from it for **none** (0.5 ± 0.14)" in text
    assert "**l2** has the best test accuracy: 0.865 ± 0.0071." in text
    assert "**l2** has the lowest test loss: 0.35 ± 0.071." in text
    assert "**l2** has the most weights exactly zero: 25.0% of them." in text
    diverged = tmp_path / "r/runs/l2/seed-2"
    assert f"1 run did not complete and is left out of the table and the curves: `{diverged}`" in (
        text
    )
    assert "![loss, accuracy and weight norm per epoch](fig.png)" in text
    assert f"- `{diverged}`: l2, seed 2, diverged, 2 epochs" in text
    assert text.count("\n- `") == 5
    assert "different losses" not in text
    assert 'Seeds reads "2 of 3" when a run did not complete.' in text


def test_report_warns_when_losses_differ(recipe, tmp_path):
    write_run(tmp_path / "reg", "ridge", 0, curve(0.5, task="regression"), task="regression")
    runs = compare.load_runs([recipe, tmp_path / "reg"])
    text = compare.markdown(compare.aggregate(runs), runs)
    assert "different losses (cross_entropy, mse)" in text


def test_a_single_run_that_diverged_still_gets_a_report(tmp_path):
    write_run(tmp_path / "d", "l2", 0, curve(1e6, epochs=2), status="diverged")
    runs = compare.load_runs([tmp_path / "d"])
    (g,) = compare.aggregate(runs)
    assert g["seeds"] == 0 and g["train_loss"] is None and g["gap"] is None
    assert (
        tables.markdown_table(*compare.rows([g]))
        .splitlines()[2]
        .startswith("| l2 | 0 of 1 | — | — |")
    )
    text = compare.markdown([g], runs)
    assert text.startswith("# Comparison of 1 run: l2\n")
    assert "1 run did not complete and is left out" in text
    fig = compare.plot_curves(runs, tmp_path / "c.png")
    assert not any(ax.get_lines() for ax in fig.axes)

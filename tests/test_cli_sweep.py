"""`regulab sweep` and the demo's sweep: run folders, the chosen lambda, bad input, Ray.

Recipes are small (the 20-example linear regression, digits with a tiny MLP or
VGG) so that a whole sweep takes a fraction of a second.
"""

import csv
import json
from pathlib import Path

import pytest

from conftest import run_cli
from regulab.sweep import select

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
LINEAR = str(RECIPES / "weight_decay_linear.toml")

DIGITS = """
name = "digits_tiny"
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [16]
[optim]
lr = 0.1
[train]
epochs = 2
batch_size = 64
eval_train = 300
"""

VGG = """
name = "vgg_tiny"
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "vgg_bn"
cfg = [4, "M", 8, "M"]
[train]
epochs = 1
batch_size = 128
eval_train = 200
"""


def write(tmp_path, text, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    code = run_cli(
        "sweep", LINEAR, "--variant", "lambda_0", "--param", "weight_decay",
        "--grid", "0,0.1,1,3,10,30", "--folds", "4", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    return out


def test_run_folder_files_and_summary_keys(linear_run):
    names = {p.name for p in linear_run.iterdir()}
    assert {"config.json", "summary.json", "path.csv", "path.png", "report.md"} <= names
    summary = json.loads((linear_run / "summary.json").read_text())
    for key in ("command", "status", "seconds", "recipe", "param", "grid", "selection", "rule",
                "seed", "best_lambda", "best_index", "best", "diverged", "engine"):  # fmt: skip
        assert key in summary
    assert summary["command"] == "sweep" and summary["status"] == "completed"
    assert summary["grid"] == [0.0, 0.1, 1.0, 3.0, 10.0, 30.0]
    assert summary["selection"] == "4-fold" and summary["engine"] == "local"
    config = json.loads((linear_run / "config.json").read_text())
    assert config["settings"]["param"] == "weight_decay"
    assert config["recipe"]["optim"]["weight_decay"] == 0.0  # the variant's value, then swept


def test_chosen_lambda_is_the_lowest_validation_loss_in_path_csv(linear_run):
    rows = read_csv(linear_run / "path.csv")
    summary = json.loads((linear_run / "summary.json").read_text())
    val = [float(r["val_loss"]) for r in rows]
    best = min(range(len(val)), key=val.__getitem__)
    assert summary["best_index"] == best
    assert summary["best_lambda"] == float(rows[best]["lambda"])
    assert [r["chosen"] for r in rows].count("1") == 1 and rows[best]["chosen"] == "1"
    # four folds: the mean of the fold columns is the validation loss
    folds = [[float(r[f"val_loss_fold{i}"]) for i in range(1, 5)] for r in rows]
    assert all(abs(sum(f) / 4 - v) <= 1e-9 * abs(v) for f, v in zip(folds, val, strict=True))
    assert summary["best"]["val_loss"] == pytest.approx(val[best], rel=1e-12)
    # linear regression: the distance from the exact ridge solution is reported
    assert all(r["closed_form_distance"] != "" for r in rows)


def test_one_se_rule_chooses_a_stronger_lambda_within_one_se(tmp_path):
    out = tmp_path / "run"
    code = run_cli(
        "sweep", LINEAR, "--variant", "lambda_0", "--param", "weight_decay",
        "--grid", "0,1,3,5,8,10,15,20,30,50,100", "--folds", "4", "--rule", "one_se",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary_rows(out)
    i_min = select.choose(rows, "min")
    chosen = summary["best_index"]
    assert chosen == select.choose(rows, "one_se") and chosen >= i_min
    assert rows[chosen]["val_loss"] <= rows[i_min]["val_loss"] + rows[i_min]["val_loss_se"]


def summary_rows(out):
    rows = []
    for r in read_csv(out / "path.csv"):
        row = {k: (None if v == "" else v) for k, v in r.items()}
        for k in ("lambda", "val_loss", "val_loss_se"):
            row[k] = float(row[k])
        rows.append(row)
    return rows


def test_printed_line_names_the_chosen_lambda(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("sweep", write(tmp_path, DIGITS), "--param", "dropout",
                   "--grid", "0,0.3,0.6", "--out", str(out)) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    printed = capsys.readouterr().out
    assert f"chosen dropout = {summary['best_lambda']:g} (holdout, rule min)" in printed
    assert summary["best"]["val_accuracy"] is not None


def test_batchnorm_cnn_sweeps_bn_sparsity(tmp_path):
    out = tmp_path / "run"
    code = run_cli("sweep", write(tmp_path, VGG), "--param", "bn_sparsity",
                   "--grid", "0,1e-4,1e-2", "--out", str(out))  # fmt: skip
    assert code == 0
    rows = read_csv(out / "path.csv")
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", ""], "--grid"),
        (["--grid", "0,-1"], "negative"),
        (["--grid", "logspace(1,2)"], "logspace"),
        (["--param", "dropout"], "--param dropout"),
        (["--param", "bn_sparsity"], "--param bn_sparsity"),
        (["--max-memory", "1e-9"], "GiB"),
        (["--folds", "1"], "--folds"),
        (["--folds", "500"], "--folds"),
        (["--variant", "nope"], "--variant"),
        (["--set", "early_stopping.patience=3"], "early_stopping.patience"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    base = ["sweep", LINEAR, "--variant", "lambda_0", "--folds", "4", "--out", str(out)]
    code = run_cli(*base, *args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_a_recipe_with_variants_needs_variant(tmp_path, capsys):
    code = run_cli("sweep", LINEAR, "--folds", "4", "--out", str(tmp_path / "run"))
    assert code == 2
    assert "--variant" in capsys.readouterr().err


def test_holdout_needs_a_validation_split(tmp_path, capsys):
    code = run_cli("sweep", LINEAR, "--variant", "lambda_0", "--out", str(tmp_path / "run"))
    assert code == 2
    assert "val_fraction" in capsys.readouterr().err


def test_demo_reports_the_validation_chosen_lambda_and_draws_the_path(tmp_path, capsys):
    out = tmp_path / "demo"
    code = run_cli("demo", "--seeds", "1", "--grid", "0,1,3,10,30", "--folds", "4",
                   "--out", str(out))  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    sweep = summary["sweep"]
    assert sweep["grid"] == [0.0, 1.0, 3.0, 10.0, 30.0] and sweep["selection"] == "4-fold"
    rows = summary_rows(out)
    assert sweep["best_index"] == select.choose(rows, "min")
    assert (out / "path.png").stat().st_size > 0
    assert f"λ = {sweep['best_lambda']:.3g}" in capsys.readouterr().out
    assert "Choosing λ on validation data" in (out / "report.md").read_text()


def test_demo_refuses_a_bad_grid(tmp_path, capsys):
    assert run_cli("demo", "--grid", "0,-3", "--out", str(tmp_path / "d")) == 2
    assert "--grid" in capsys.readouterr().err


def test_ray_engine_gives_the_local_path_and_choice(linear_run, tmp_path):
    """A real local Ray instance, started and stopped by the command: the same rows."""
    pytest.importorskip("ray.tune")
    out = tmp_path / "ray"
    code = run_cli(
        "sweep", LINEAR, "--variant", "lambda_0", "--param", "weight_decay",
        "--grid", "0,0.1,1,3,10,30", "--folds", "4", "--engine", "ray", "--chunks", "2",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0
    local = json.loads((linear_run / "summary.json").read_text())
    remote = json.loads((out / "summary.json").read_text())
    assert remote["engine"] == "ray" and remote["engine_info"]["trials"] == 2
    assert remote["best_lambda"] == local["best_lambda"]
    for a, b in zip(read_csv(linear_run / "path.csv"), read_csv(out / "path.csv"), strict=True):
        # the same training to float32 rounding (chunks of 3 against 6 stacked models)
        for key in ("val_loss", "test_loss", "w_norm"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5)
        # a difference of two nearby vectors: relative to the weights, not to itself
        distance = abs(float(b["closed_form_distance"]) - float(a["closed_form_distance"]))
        assert distance <= 1e-5 * float(a["w_norm"])


def test_every_strength_diverging_is_one_line_exit_1(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli("sweep", write(tmp_path, DIGITS), "--param", "l2", "--grid", "1e6,1e7",
                   "--out", str(out))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "diverged" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("sets", "param", "message"),
    [
        (["model.hidden=[]"], "dropout", "no dropout layers"),
        (["optim.no_decay=['*.weight']"], "l1", "optim.no_decay"),
    ],
)
def test_a_strength_with_nothing_to_act_on_is_refused(tmp_path, capsys, sets, param, message):
    out = tmp_path / "run"
    args = [a for s in sets for a in ("--set", s)]
    code = run_cli("sweep", write(tmp_path, DIGITS), "--param", param, "--grid", "0,0.5",
                   *args, "--out", str(out))  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_an_unreachable_ray_address_is_refused_at_once(tmp_path, capsys):
    code = run_cli("sweep", LINEAR, "--variant", "lambda_0", "--folds", "4", "--engine", "ray",
                   "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "run"))  # fmt: skip
    assert code == 2 and "--ray-address" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_demo_refuses_folds_before_training(tmp_path, capsys):
    assert run_cli("demo", "--folds", "25", "--out", str(tmp_path / "d")) == 2
    assert "--folds" in capsys.readouterr().err


def test_demo_with_every_sweep_strength_diverging_is_one_line_exit_1(tmp_path, capsys):
    code = run_cli("demo", "--seeds", "1", "--epochs", "20", "--grid", "1000,2000",
                   "--out", str(tmp_path / "d"))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "diverged" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()

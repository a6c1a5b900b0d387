"""`regulab tune`: the run folder, the chosen model, PBT, your own model, bad input.

References: the library's `Tuner` run again on the same prepared recipe (trials.csv holds its
rows), `metrics.evaluate` on the model `regulab.slim.load` rebuilds from best/ (it reproduces
the chosen configuration's validation loss), and the budget plan's own cost.
"""

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from regulab import recipe as recipes
from regulab import slim
from regulab.data.mnist_files import FASHION_MNIST_MD5
from regulab.metrics import evaluate
from regulab.recipe import RecipeError, build
from regulab.tune import run as tune_run

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "tune_digits.toml")
OWN = str(ROOT / "examples" / "own_model" / "recipe.toml")
SMALL = ("--set", "train.epochs=3", "--set", "model.hidden=[24]", "--set", "model.dropout=[0.2]")
NO_DROPOUT = ("--set", "model.hidden=[]", "--set", "model.dropout=[]")
FILES = {"config.json", "trials.csv", "summary.json", "best", "finalists", "report.md",
         "hparams.png", "curves.png", "budget.png"}  # fmt: skip


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sh_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "run"
    assert run_cli("tune", RECIPE, *SMALL, "--budget", "2", "--out", str(out)) == 0
    return out


def test_the_run_folder_holds_the_files_and_the_plan_is_kept(sh_run):
    assert {p.name for p in sh_run.iterdir()} == FILES
    assert {p.name for p in (sh_run / "best").iterdir()} == {
        "model.safetensors", "arch.json", "recipe.json"}  # fmt: skip
    s = json.loads((sh_run / "summary.json").read_text())
    assert s["command"] == "tune" and s["status"] == "completed" and s["scheduler"] == "sh"
    plan = s["plan"]
    edges = [0, *(r["epoch"] for r in plan["rungs"])]
    copy_epochs = sum(r["alive"] * (b - a) for r, a, b in
                      zip(plan["rungs"], edges, edges[1:], strict=False))  # fmt: skip
    assert copy_epochs == plan["copy_epochs"] and plan["cost"] == copy_epochs / 3
    assert math.isclose(s["spent"], plan["cost"]) and s["spent"] <= s["budget"] == 2
    assert s["one_run"]["status"] == "completed" and s["one_run"]["seconds"] > 0
    config = json.loads((sh_run / "config.json").read_text())
    assert config["command"] == "tune" and config["settings"]["budget"] == 2
    assert config["recipe"]["tune"]["budget"] == 2  # the option overrode [tune]


def test_trials_csv_holds_the_tuners_rows(sh_run):
    recipe = recipes.resolve(RECIPE, [t for t in SMALL if t != "--set"])
    recipe = tune_run.with_options(recipe, budget=2)
    p = tune_run.prepare(recipe, seed=0)
    rows = p.tuner.fit(p.model, p.loader, p.splits.val).trials_
    written = read_csv(sh_run / "trials.csv")
    assert len(written) == len(rows)
    for got, want in zip(written, rows, strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                # the command sets torch's threads; float32 sums may round in another order
                assert math.isclose(float(got[key]), value, rel_tol=1e-6), key
            else:
                assert got[key] == ("" if value is None else str(value)), key
    s = json.loads((sh_run / "summary.json").read_text())
    assert s["best_params"] == p.tuner.best_params_ and s["best_config"] == p.tuner.best_index_


def test_best_loads_and_reproduces_the_chosen_validation_loss(sh_run):
    s = json.loads((sh_run / "summary.json").read_text())
    model = slim.load(sh_run / "best")
    chosen = recipes.from_dict(json.loads((sh_run / "best" / "recipe.json").read_text()))
    for name, value in s["best_params"].items():
        field = {"dropout": chosen.model.dropout[0], "lr": chosen.optim.lr,
                 "weight_decay": chosen.optim.weight_decay}[name]  # fmt: skip
        assert field == value
    splits = build.load_data(chosen, s["seed"])
    val_loss, val_accuracy = evaluate(model, splits.val, "cross_entropy")
    assert abs(val_loss - s["best_score"]) <= 1e-5 * max(1.0, s["best_score"])
    assert val_accuracy == s["best"]["val_accuracy"]
    assert s["best"]["test_loss"] == evaluate(model, splits.test, "cross_entropy")[0]


def test_pbt_writes_its_lineage(tmp_path, capsys):
    out = tmp_path / "pbt"
    args = ("--scheduler", "pbt", "--budget", "4", "--set", "tune.pbt_interval=1")
    assert run_cli("tune", RECIPE, *SMALL, *args, "--out", str(out)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["scheduler"] == "pbt" and s["plan"]["configs"] == 4 and s["spent"] == 4
    assert s["plan"]["exploits"] == [1, 2] and isinstance(s["lineage"], list)
    rows = read_csv(out / "trials.csv")
    assert len(rows) == 4 * 3 and {r["status"] for r in rows} <= {"alive", "replaced"}
    assert "population-based training: 4 copies" in capsys.readouterr().out


def test_your_own_model_through_its_factory(tmp_path):
    out = tmp_path / "own"
    space = "weight_decay=log(1e-4,1e-2) dropout=uniform(0,0.5)"
    code = run_cli("tune", OWN, "--space", space, "--budget", "1.5", "--set", "train.epochs=2",
                   "--out", str(out))  # fmt: skip
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    model = slim.load(out / "best")  # the factory, imported again from the recipe's folder
    chosen = recipes.from_dict(json.loads((out / "best" / "recipe.json").read_text()))
    splits = build.load_data(chosen, 0)
    assert abs(evaluate(model, splits.val, "cross_entropy")[0] - s["best_score"]) <= 1e-5
    assert s["one_run"]["params"]["dropout"] is None  # the factory's own argument


def test_the_tuned_recipe_holds_the_chosen_values_in_their_keys():
    recipe = recipes.load(RECIPE)
    params = {"crop": 2.0, "noise": 0.1, "dropout": 0.3, "lr": 0.2, "label_smoothing": 0.1}
    tuned = tune_run.tuned_recipe(recipe, {**params, "mixup": 0.4, "cutmix": 1.0}, seed=5)
    assert (tuned.augment.random_crop, tuned.augment.gaussian_noise) == (2, 0.1)
    assert (tuned.model.dropout, tuned.optim.lr) == ([0.3, 0.3], 0.2)
    assert (tuned.train.label_smoothing, tuned.train.mixup, tuned.train.cutmix) == (0.1, 0.4, 1)
    assert tuned.train.seed == 5  # the tuning's seed: it fixed the data split
    assert tune_run.recipe_values(recipe, params) == {
        "crop": 0.0, "noise": 0.0, "dropout": 0.2, "lr": 0.05, "label_smoothing": 0.0}  # fmt: skip
    with pytest.raises(RecipeError, match=r"tune\.eta must be an integer >= 2"):
        tune_run.with_options(recipe, eta=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--space", ""), "space: nothing to tune"),
        (("--space", "weight_dekay=log(1e-5,1e-1)"), "unknown hyperparameter 'weight_dekay'"),
        (("--space", "dropout=uniform(0.5,0.1)"), "needs low <= high"),
        (("--configs", "50", "--budget", "1"), "budget must be at least"),
        (("--budget", "0.5"), "--budget: must be a finite number >= 1"),
        (("--space", "dropout=uniform(0,0.5)", *NO_DROPOUT), "needs a model with"),
        (("--set", "early_stopping.patience=2"), "early_stopping.patience"),
        (("--set", "data.val_fraction=0"), "validation data"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert run_cli("tune", RECIPE, *SMALL, *args, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


VGG_TUNE = """
name = "tune_vgg_tiny"
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "vgg_bn"
cfg = [8, "M", 16, "M"]
[optim]
lr = 0.1
momentum = 0.9
[train]
epochs = 2
batch_size = 128
eval_train = 200
[tune]
space = "weight_decay=log(1e-4,1e-2) bn_sparsity=log(1e-5,1e-3) drop_block=uniform(0.05,0.3)"
budget = 3
configs = 4
eta = 2
finalists = 2
"""


def test_finalists_vote_and_slim_prunes_the_tuned_model(tmp_path):
    recipe = tmp_path / "vgg.toml"
    recipe.write_text(VGG_TUNE)
    out, slimmed = tmp_path / "tune", tmp_path / "slim"
    assert run_cli("tune", str(recipe), "--seed", "3", "--out", str(out)) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["plan"]["rungs"][-1] == {"epoch": 2, "alive": 2}
    tuned = json.loads((out / "best" / "recipe.json").read_text())  # DropBlock layers added
    assert tuned["model"]["drop_block"] == s["best_params"]["drop_block"] > 0
    # the two finalists, saved, averaged by hand: the ensemble's validation figures
    e = s["ensemble"]
    assert e["members"][0] == s["best_config"] and len(e["members"]) == 2
    members = [slim.load(out / "finalists" / f"config-{c}") for c in e["members"]]
    chosen = recipes.from_dict(json.loads((out / "best" / "recipe.json").read_text()))
    x, y = build.load_data(chosen, 3).val
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
    assert abs(e["val_loss"] + mean[torch.arange(len(y)), y].log().mean().item()) <= 1e-5
    assert e["val_accuracy"] == pytest.approx((mean.argmax(1) == y).double().mean().item())
    assert "finalists as an ensemble" in (out / "report.md").read_text()
    # `regulab slim --from best/` prunes the tuned model on the tuning's own split (seed 3)
    code = run_cli("slim", "--from", str(out / "best"), "--ratio", "0.5",
                   "--finetune-epochs", "0", "--out", str(slimmed))  # fmt: skip
    assert code == 0
    pruned = json.loads((slimmed / "summary.json").read_text())
    assert pruned["seed"] == 3 and pruned["from"] == str(out / "best")
    assert abs(pruned["unpruned"]["val_loss"] - s["best"]["val_loss"]) <= 1e-6
    assert pruned["unpruned"]["test_accuracy"] == s["best"]["test_accuracy"]
    assert pruned["results"][0]["channels_removed"] == 12


def test_the_tuned_recipe_trains_again_to_the_tuned_model(tmp_path):
    """label_smoothing, mixup and weight decay tuned; `regulab train best/recipe.json` then
    trains the chosen configuration alone, by `fit`: the same validation loss. (No "|off":
    a copy at mixup 0 still drew the mixing's random numbers, a recipe at 0 does not.)"""
    out, again = tmp_path / "tune", tmp_path / "train"
    space = "label_smoothing=uniform(0.01,0.3) mixup=log(0.1,1) weight_decay=log(1e-4,1e-2)"
    code = run_cli("tune", RECIPE, *SMALL, "--space", space, "--budget", "2", "--seed", "2",
                   "--out", str(out))  # fmt: skip
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    chosen = json.loads((out / "best" / "recipe.json").read_text())
    for name in ("label_smoothing", "mixup"):
        assert chosen["train"][name] == s["best_params"][name]
    assert chosen["optim"]["weight_decay"] == s["best_params"]["weight_decay"]
    assert run_cli("train", str(out / "best" / "recipe.json"), "--out", str(again)) == 0
    final = json.loads((again / "summary.json").read_text())["final"]
    assert final["val_loss"] == pytest.approx(s["best"]["val_loss"], abs=1e-5)
    assert final["test_accuracy"] == pytest.approx(s["best"]["test_accuracy"], abs=1e-12)


# the shared data beside the project root, or where this machine keeps it
FASHION = next(
    (p for p in (ROOT.parent / "shared" / "data", Path("/work/shared/data")) if p.is_dir()),
    ROOT.parent / "shared" / "data",
)


@pytest.mark.skipif(not (FASHION / "fashion-mnist").is_dir(), reason=f"no data in {FASHION}")
def test_fashion_mnist_end_to_end(tmp_path):
    """The shipped Fashion-MNIST MLP recipe, tuned on the real data (two small epochs)."""
    out = tmp_path / "fashion"
    code = run_cli("tune", str(ROOT / "recipes" / "dropout_mlp_fashion.toml"),
                   "--space", "weight_decay=log(1e-5,1e-2) dropout=uniform(0,0.5)",
                   "--budget", "1.5", "--configs", "2", "--eta", "2", "--finalists", "1",
                   "--set", "train.epochs=2", "--set", "model.hidden=[32]",
                   "--set", "model.dropout=[0.2]", "--data-dir", str(FASHION),
                   "--out", str(out))  # fmt: skip
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["plan"]["rungs"] == [{"epoch": 1, "alive": 2}, {"epoch": 2, "alive": 1}]
    assert s["spent"] == 1.5 and s["best"]["test_accuracy"] > 0.7  # 10,000 test images
    read = json.loads((out / "config.json").read_text())["data_files"]  # the folder read
    assert Path(read["folder"]).parent == FASHION and read["md5"] == FASHION_MNIST_MD5
    model = slim.load(out / "best")
    chosen = recipes.from_dict(json.loads((out / "best" / "recipe.json").read_text()))
    chosen = recipes.place(chosen, str(FASHION))
    val = build.load_data(chosen, s["seed"]).val
    assert abs(evaluate(model, val, "cross_entropy")[0] - s["best_score"]) <= 1e-5


def test_copies_that_would_not_fit_in_memory_are_refused(tmp_path, capsys, monkeypatch):
    from regulab.sweep import memory

    monkeypatch.setattr(memory, "available", lambda device: 64 * 2**10)  # 64 KiB free
    out = tmp_path / "run"
    assert run_cli("tune", RECIPE, *SMALL, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "configs: 5 copies of the model need an estimated" in err
    assert "more than 90 % of the 64.0 KiB available on cpu" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_config_json_records_the_data_folder_read(tmp_path):
    """Fashion-MNIST's folder and md5s in config.json (digits: no files, null)."""
    out = tmp_path / "run"
    assert run_cli("tune", RECIPE, *SMALL, "--budget", "1", "--out", str(out)) == 0
    assert json.loads((out / "config.json").read_text())["data_files"] is None

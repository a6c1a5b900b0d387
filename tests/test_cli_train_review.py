"""Review findings: --overwrite keeps the earlier run until the new one ends, resume keeps a
member run's variant name, diverged runs are not retrained, recipe errors are caught early."""

import json

import pytest

from conftest import run_cli
from regulab import recipe as recipes

DIGITS = """
name = "multi"
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
eval_train = 200
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp_path, extra=""):
    path = tmp_path / "r.toml"
    path.write_text(DIGITS + extra)
    return path


def test_overwrite_puts_the_earlier_run_back_when_the_new_one_crashes(tmp_path, monkeypatch):
    from regulab.recipe import run as recipe_run

    recipe, out = _recipe(tmp_path), tmp_path / "o1"
    assert run_cli("train", str(recipe), "--out", str(out)) == 0
    before = (out / "metrics.csv").read_text()

    def crash(*args, **kwargs):
        (out / "half-written").mkdir(parents=True)
        raise RuntimeError("boom")

    monkeypatch.setattr(recipe_run, "train_recipe", crash)
    with pytest.raises(RuntimeError, match="boom"):
        run_cli("train", str(recipe), "--out", str(out), "--overwrite")
    assert (out / "metrics.csv").read_text() == before
    assert not (out / "half-written").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o1")] == []


def test_resume_of_a_member_run_keeps_its_variant(tmp_path):
    recipe = _recipe(tmp_path, "[variants.a]\n[variants.b]\noptim.lr = 0.05\n")
    out = tmp_path / "m1"
    assert run_cli("train", str(recipe), "--out", str(out)) == 0
    member = out / "runs" / "a" / "seed-0"
    summary = json.loads((member / "summary.json").read_text())
    summary["status"] = "running"
    (member / "summary.json").write_text(json.dumps(summary))
    assert run_cli("train", "--resume", str(member)) == 0
    assert json.loads((member / "summary.json").read_text())["variant"] == "a"


def test_resume_does_not_retrain_a_diverged_run(tmp_path, capsys):
    path = tmp_path / "d.toml"
    path.write_text(
        'name = "d"\n[data]\nname = "line"\nval_fraction = 0\n[model]\nname = "linear"\n'
        '[optim]\nlr = 1.0\n[train]\nepochs = 30\nbatch_size = 80\nloss = "mse"\n'
    )
    out = tmp_path / "d1"
    assert run_cli("train", str(path), "--out", str(out)) == 1
    before = (out / "metrics.csv").read_text()
    capsys.readouterr()
    assert run_cli("train", "--resume", str(out)) == 1
    assert "diverged" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == before


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("--set=augment.random_crop=-1", "augment.random_crop must be an integer >= 0"),
        ("--set=train.device=banana", "train.device must be a device available"),
        ('--set=optim.no_decay=["*"]', "none are left"),
    ],
)
def test_recipe_errors_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    recipe, out = _recipe(tmp_path, "[penalty]\nl2 = 1e-3\n"), tmp_path / "o"
    assert run_cli("train", str(recipe), "--out", str(out), extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_val_accuracy_is_refused_for_regression(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        '[data]\nname = "line"\nval_fraction = 0.2\n[model]\nname = "linear"\n'
        '[early_stopping]\npatience = 2\nmonitor = "val_accuracy"\n[train]\nloss = "mse"\n'
    )
    with pytest.raises(recipes.RecipeError, match="monitor must be val_loss"):
        recipes.load(path)


def test_a_set_that_every_variant_overrides_is_refused():
    with pytest.raises(recipes.RecipeError, match=r"optim.weight_decay has no effect"):
        recipes.load("recipes/weight_decay_linear.toml", ["optim.weight_decay=1.0"])
    recipes.load("recipes/weight_decay_linear.toml", ["optim.lr=0.001"])  # base-only key: fine


def test_recipe_wiring_of_proximal_l1_and_max_norm(tmp_path):
    from regulab import fit
    from regulab.recipe import build

    recipe = recipes.load(
        _recipe(tmp_path),
        ["penalty.l1=0.01", 'penalty.l1_mode="proximal"', "penalty.max_norm=2.0"],
    )
    splits = build.load_data(recipe, 0)
    parts = build.run_parts(recipe, splits, 0)
    assert parts["penalty"] is None  # proximal L1 is an after-step, not a gradient term
    model = parts.pop("model")
    history = fit(model, epochs=2, loss="cross_entropy", eval_train=0, **parts)
    weights = [p for p in model.parameters() if p.ndim >= 2]
    assert history.final["zero_fraction"] > 0.1  # exact zeros from the soft-threshold
    assert all(float(w.detach().norm()) <= 2.0 + 1e-5 for w in weights)
    biases = [p for p in model.parameters() if p.ndim < 2]
    assert all(bool((b != 0).all()) for b in biases)  # biases are not thresholded

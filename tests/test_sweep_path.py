"""compute_rows against sequential `regulab train`-style runs, `ridge_path`, Stacked.evaluate
and hand-made folds; the test split's independence from the choice; chunks; errors."""

import math

import numpy as np
import pytest
import torch

from regulab import fit, ridge_path
from regulab import recipe as recipes
from regulab.metrics import weight_stats
from regulab.recipe import RecipeError, build
from regulab.sweep import path
from regulab.sweep.path import _folds, compute_rows
from regulab.sweep.report import PATH_COLUMNS
from regulab.sweep.select import choose

pytestmark = pytest.mark.usefixtures("one_thread")

LINEAR = {  # recipes/weight_decay_linear.toml with a validation split and full batches
    "data": {"name": "synthetic_linear", "n_train": 20, "n_test": 50, "num_inputs": 200,
             "val_fraction": 0.25},
    "model": {"name": "linear", "init": "normal"},
    "optim": {"name": "sgd", "lr": 0.035},
    "train": {"epochs": 100, "batch_size": 15, "loss": "mse"},
}  # fmt: skip
DIGITS = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "hidden": [16]},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
    "train": {"epochs": 2, "batch_size": 64},
}


def _recipe(base, **sections):
    """base with some fields of some sections replaced: _recipe(DIGITS, train={"epochs": 3})."""
    merged = {name: dict(fields) for name, fields in base.items()}
    for name, fields in sections.items():
        merged[name] = {**merged.get(name, {}), **fields}
    return recipes.from_dict(merged)


@pytest.fixture
def fits(monkeypatch):
    """Records (training loader, Stacked) of every fit_sweep call compute_rows makes."""
    calls = []
    original = path.fit_sweep

    def spy(models, param, values, train, settings, *args, **kwargs):
        stacked = original(models, param, values, train, settings, *args, **kwargs)
        calls.append((train, stacked))
        return stacked

    monkeypatch.setattr(path, "fit_sweep", spy)
    return calls


def _pool(splits):
    return tuple(torch.cat([a, b]) for a, b in zip(splits.train, splits.val, strict=True))


def _close(a, b, tol):
    if a is None or b is None:
        return a is b
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(u, v, tol) for u, v in zip(a, b, strict=True))
    if isinstance(a, str):
        return a == b
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


# --- rows, closed form ------------------------------------------------------------------------


@pytest.mark.parametrize("folds", [0, 3])
def test_linear_rows_closed_form_columns_equal_ridge_path(folds, fits):
    # minibatches of 5: the folds' training sets (13 or 14 examples) are smaller than 15
    recipe = _recipe(LINEAR, optim={"lr": 0.005}, train={"batch_size": 5})
    values = [0.0, 0.3, 3.0]
    rows = compute_rows(recipe, "weight_decay", values, seed=1, folds=folds)
    columns = (*PATH_COLUMNS, "val_loss_folds") if folds else PATH_COLUMNS
    assert [tuple(row) for row in rows] == [columns] * 3
    assert [row["lambda"] for row in rows] == values
    assert {row["status"] for row in rows} == {"completed"}
    assert all(row["train_accuracy"] is None and row["val_accuracy"] is None for row in rows)
    splits = build.load_data(recipe, 1)
    x, y = _pool(splits) if folds else splits.train  # what the final models trained on
    loader, stacked = fits[-1]
    assert len(fits) == folds + 1 and torch.equal(loader.tensors[0], x)
    # mean squared error = 2 x (half): ridge's lambda (for mse / 2) is the strength / 2
    w, _ = ridge_path(x.double(), y.double(), [v / 2 for v in values])
    w_sgd = stacked.params["1.weight"].detach().double().squeeze(1)
    for k, row in enumerate(rows):
        assert row["closed_form_w_norm"] == pytest.approx(w[k].norm().item(), rel=1e-9)
        distance = (w_sgd[k] - w[k]).norm().item()
        assert row["closed_form_distance"] == pytest.approx(distance, rel=1e-9)
        assert row["w_norm"] == pytest.approx(w_sgd[k].norm().item(), rel=1e-9)
        assert row["zero_fraction"] == 0.0


def test_closed_form_distance_is_small_once_sgd_has_converged():
    # full-batch gradient descent on the ridge objective converges linearly for lambda > 0
    recipe = _recipe(LINEAR, train={"epochs": 3000})
    rows = compute_rows(recipe, "weight_decay", [0.0, 3.0], seed=1)
    assert rows[1]["closed_form_distance"] < 1e-4 * rows[1]["closed_form_w_norm"]
    # lambda = 0: the part of the N(0, 1) start outside the 15 examples' span never moves
    assert rows[0]["closed_form_distance"] > 1.0
    assert rows[1]["val_loss"] < rows[0]["val_loss"]


@pytest.mark.parametrize(
    "param, sections",
    [
        ("l1", {}),
        ("l2", {"optim": {"weight_decay": 0.1}}),  # another coupled strength shifts the optimum
        ("weight_decay", {"optim": {"name": "adamw", "lr": 0.01}}),  # decoupled: another path
        ("weight_decay", {"penalty": {"max_norm": 1.0}}),
    ],
)
def test_no_closed_form_where_ridge_is_not_the_optimum(param, sections):
    recipe = _recipe(LINEAR, train={"epochs": 2}, **sections)
    (row,) = compute_rows(recipe, param, [0.1])
    assert row["closed_form_w_norm"] is None and row["closed_form_distance"] is None
    assert row["w_norm"] is not None


def test_a_copy_with_non_finite_final_metrics_is_diverged():
    # one full-batch step: the loss it computes is finite, the weights it leaves are ~1e28
    recipe = _recipe(LINEAR, train={"epochs": 1})
    rows = compute_rows(recipe, "l2", [0.0, 1e29], seed=1)
    assert rows[0]["status"] == "completed"
    assert rows[1]["status"] == "diverged"


# --- holdout ------------------------------------------------------------------------------


def test_holdout_metrics_equal_stacked_evaluate(fits):
    recipe = _recipe(DIGITS, train={"eval_train": 300})
    rows = compute_rows(recipe, "l2", [0.0, 1e-3, 0.1])
    (loader, stacked), splits = fits[-1], build.load_data(recipe, 0)
    assert len(fits) == 1 and torch.equal(loader.tensors[0], splits.train[0])
    val = stacked.evaluate(splits.val, "cross_entropy")
    test = stacked.evaluate(splits.test, "cross_entropy")
    train = stacked.evaluate(tuple(t[:300] for t in splits.train), "cross_entropy")
    for k, row in enumerate(rows):
        assert row["val_loss"] == val["loss"][k].item()
        assert row["val_loss_se"] == val["loss_se"][k].item() > 0
        assert row["val_accuracy"] == val["accuracy"][k].item()
        assert row["test_loss"] == test["loss"][k].item()
        assert row["test_accuracy"] == test["accuracy"][k].item()
        assert row["train_loss"] == train["loss"][k].item()
        assert row["train_accuracy"] == train["accuracy"][k].item()
        norm, zeros = weight_stats(stacked.model(k))
        assert row["w_norm"] == pytest.approx(norm, rel=1e-6) and row["zero_fraction"] == zeros
        assert row["closed_form_w_norm"] is None  # not a linear regression
    assert rows[0]["val_loss"] != rows[2]["val_loss"]


def _sequential(recipe, seed):
    """One run as `regulab train` makes it (recipe.run.train_one without the run folder)."""
    torch.manual_seed(seed)
    splits = build.load_data(recipe, seed)
    parts = build.run_parts(recipe, splits, seed)
    history = fit(
        epochs=recipe.train.epochs, val=splits.val, test=splits.test, loss=recipe.train.loss,
        clip_grad_norm=recipe.train.clip_grad_norm or None, seed=seed,
        eval_train=recipe.train.eval_train, **parts,
    )  # fmt: skip
    assert history.status == "completed"
    return history.final


@pytest.mark.parametrize(
    "param, values, field",
    [
        ("l2", [0.0, 0.05], ("penalty", "l2")),
        ("weight_decay", [0.0, 0.05], ("optim", "weight_decay")),
        ("dropout", [0.0, 0.4], ("model", "dropout")),
    ],
)
def test_rows_equal_sequential_runs_of_the_recipe_with_that_strength(param, values, field):
    # every recipe field the sweep reads: momentum, Nesterov, the other coupled strengths,
    # L1, max-norm, the schedule, clipping and (for l2 and weight_decay) dropout
    sections = {
        "data": {"val_fraction": 0.2},
        "model": {"dropout": [] if param == "dropout" else [0.2]},
        "optim": {"nesterov": True, "weight_decay": 1e-3},
        "penalty": {"l2": 2e-3, "l1": 1e-4, "max_norm": 4.0},
        "schedule": {"name": "inverse_sqrt", "gamma": 0.2},
        "train": {"clip_grad_norm": 0.2, "eval_train": 500},
    }
    seed = 2
    rows = compute_rows(_recipe(DIGITS, **sections), param, values, seed=seed)
    for v, row in zip(values, rows, strict=True):
        section, name = field
        value = ([v] if v else []) if param == "dropout" else v
        final = _sequential(_recipe(DIGITS, **{**sections, section: {
            **sections[section], name: value}}), seed)  # fmt: skip
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss",
                    "test_accuracy", "w_norm"):  # fmt: skip
            assert row[key] == pytest.approx(final[key], rel=1e-5, abs=1e-6), key
    assert rows[0]["val_loss"] != pytest.approx(rows[1]["val_loss"], abs=1e-3)


@pytest.mark.parametrize(
    "model, extra",
    [
        ({"name": "vgg_bn", "cfg": [4, "M", 8, "M"]}, {"augment": {"random_crop": 1}}),
        ({"name": "resnet_bn", "widths": [4, 8], "blocks": [1, 1], "drop_path": 0.2}, {}),
    ],
)
def test_batchnorm_rows_equal_sequential_runs(model, extra):
    """Running statistics included: nothing before training may touch them (not even the
    memory estimate's forward pass), so val/test losses in eval mode agree."""
    sections = {"model": model, "train": {"epochs": 1, "eval_train": 300}, **extra}
    seed = 1
    rows = compute_rows(_recipe(DIGITS, **sections), "weight_decay", [0.0, 0.01], seed=seed)
    for v, row in zip([0.0, 0.01], rows, strict=True):
        recipe = _recipe(DIGITS, **{**sections, "optim": {**DIGITS["optim"], "weight_decay": v}})
        final = _sequential(recipe, seed)
        for key in ("train_loss", "val_loss", "test_loss", "test_accuracy", "w_norm"):
            assert row[key] == pytest.approx(final[key], rel=1e-5, abs=1e-6), key


# --- k-fold ---------------------------------------------------------------------------------


def test_kfold_val_loss_is_the_mean_of_held_out_folds(fits):
    recipe = _recipe(DIGITS)
    rows = compute_rows(recipe, "l2", [0.0, 0.01, 0.1], folds=3)
    splits = build.load_data(recipe, 0)
    pool = _pool(splits)
    parts = _folds(len(pool[0]), 3, recipe.data.seed, "cpu")
    assert len(fits) == 4
    for f, (part, (loader, stacked)) in enumerate(zip(parts, fits[:3], strict=True)):
        keep = torch.ones(len(pool[0]), dtype=torch.bool)
        keep[part] = False
        assert torch.equal(loader.tensors[0], pool[0][keep])  # trained without the fold
        held = stacked.evaluate(tuple(t[part] for t in pool), "cross_entropy")
        for k, row in enumerate(rows):
            assert row["val_loss_folds"][f] == held["loss"][k].item()
    assert torch.equal(fits[3][0].tensors[0], pool[0])  # the final refit uses the whole pool
    test = fits[3][1].evaluate(splits.test, "cross_entropy")
    for k, row in enumerate(rows):
        per_fold = np.array(row["val_loss_folds"])
        assert row["val_loss"] == pytest.approx(per_fold.mean(), rel=1e-12)
        assert row["val_loss_se"] == pytest.approx(per_fold.std(ddof=1) / np.sqrt(3), rel=1e-9)
        assert row["test_loss"] == test["loss"][k].item()


def test_folds_are_disjoint_cover_the_pool_and_follow_the_seed():
    parts = _folds(23, 4, seed=5, device="cpu")
    assert len(parts) == 4 and sorted(len(p) for p in parts) == [5, 6, 6, 6]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(23))  # disjoint, covering
    again = _folds(23, 4, seed=5, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    other = _folds(23, 4, seed=6, device="cpu")
    assert not all(torch.equal(a, b) for a, b in zip(parts, other, strict=True))
    assert not torch.equal(torch.cat(parts), torch.arange(23))  # shuffled
    for folds in (1, 24):
        message = f"--folds must be between 2 and the 23 training examples; got {folds}"
        with pytest.raises(RecipeError, match=message):
            _folds(23, folds, seed=5, device="cpu")


# --- the test split does not choose -----------------------------------------------------------


@pytest.mark.parametrize("folds", [0, 3])
def test_test_labels_change_test_loss_but_not_the_choice(folds, monkeypatch):
    recipe = _recipe(DIGITS)
    values = [0.0, 1e-3, 0.03, 0.3]
    rows = compute_rows(recipe, "l2", values, folds=folds)
    load = build.load_data

    def relabeled(recipe, seed):
        s = load(recipe, seed)
        x, y = s.test
        return build.Splits(s.train, s.val, (x, (y + 1) % 10), s.num_classes)

    monkeypatch.setattr(build, "load_data", relabeled)
    changed = compute_rows(recipe, "l2", values, folds=folds)
    for a, b in zip(rows, changed, strict=True):
        for key in ("val_loss", "val_loss_se", "val_accuracy", "train_loss", "w_norm"):
            assert a[key] == b[key], key
        assert a.get("val_loss_folds") == b.get("val_loss_folds")
        assert a["test_loss"] != b["test_loss"]
    assert changed[0]["test_loss"] > 2 * rows[0]["test_loss"]  # a trained model, wrong labels
    assert choose(rows) == choose(changed) and choose(rows, "one_se") == choose(changed, "one_se")


# --- chunks -------------------------------------------------------------------------------


@pytest.mark.parametrize("vary", [False, True])
def test_chunks_of_the_grid_equal_the_whole_grid(vary):
    recipe = _recipe(DIGITS)
    grid = [0.0, 1e-3, 1e-2, 0.1]
    whole = compute_rows(recipe, "l2", grid, vary=vary, seed=1)
    first = compute_rows(recipes.to_dict(recipe), "l2", grid[:2], vary=vary, seed=1, grid=grid)
    second = compute_rows(recipe, "l2", grid[2:], vary=vary, seed=1, grid=grid)
    for a, b in zip(whole, first + second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert _close(a[key], b[key], 1e-6), (key, a[key], b[key])
    if vary:  # each strength had its own start and order: the path differs from the shared one
        shared = compute_rows(recipe, "l2", grid[1:2], seed=1, grid=grid)
        assert not _close(shared[0]["val_loss"], whole[1]["val_loss"], 1e-4)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base, sections, param, values, kwargs, match",
    [
        (LINEAR, {}, "dropout", [0.1], {}, "--param dropout: model.name 'linear'"),
        (DIGITS, {}, "bn_sparsity", [0.1], {}, "--param bn_sparsity: model.name 'mlp'"),
        (DIGITS, {}, "l3", [0.1], {}, "--param must be one of .*got 'l3'"),
        (DIGITS, {}, "dropout", [0.0, 1.0], {}, r"--grid: dropout p must be in \[0, 1\); got 1"),
        (DIGITS, {"early_stopping": {"patience": 2}}, "l2", [0.1], {},
         "early_stopping.patience: .*got 2"),
        (LINEAR, {"data": {"val_fraction": 0.0}}, "l2", [0.1], {}, "data.val_fraction > 0"),
        (LINEAR, {}, "l2", [0.1], {"folds": 21}, "--folds must be between 2 and the 20 .*got 21"),
        (DIGITS, {}, "l2", [0.1, 1.0], {"max_memory": 1e-6},
         r"need an estimated .* GiB.*more than --max-memory 1e-06 GiB"),
    ],
)  # fmt: skip
def test_bad_input_names_the_setting(base, sections, param, values, kwargs, match, fits):
    with pytest.raises(RecipeError, match=match):
        compute_rows(_recipe(base, **sections), param, values, **kwargs)
    assert fits == []  # refused before any training


@pytest.mark.parametrize("folds", [0, 3])
def test_on_epoch_is_called_after_every_epoch_of_every_fit(folds):
    calls = []
    recipe = _recipe(DIGITS, train={"epochs": 2})
    compute_rows(recipe, "l2", [0.0, 1e-3], folds=folds, on_epoch=lambda: calls.append(1))
    assert len(calls) == 2 * (folds + 1)


@pytest.mark.parametrize("mode", ["subgradient", "proximal"])
def test_bn_sparsity_rows_equal_regulab_train_with_slim_sparsity(mode):
    sections = {
        "model": {"name": "vgg_bn", "cfg": [4, "M", 8, "M"]},
        "slim": {"sparsity_mode": mode},
        "train": {"epochs": 1, "eval_train": 300},
    }
    seed = 0
    rows = compute_rows(_recipe(DIGITS, **sections), "bn_sparsity", [0.0, 0.05], seed=seed)
    for v, row in zip([0.0, 0.05], rows, strict=True):
        recipe = _recipe(DIGITS, **{**sections, "slim": {"sparsity_mode": mode, "sparsity": v}})
        final = _sequential(recipe, seed)
        for key in ("train_loss", "val_loss", "test_loss", "w_norm"):
            assert row[key] == pytest.approx(final[key], rel=1e-5, abs=1e-6), key
    assert rows[0]["val_loss"] != pytest.approx(rows[1]["val_loss"], rel=1e-4)


def test_a_model_that_takes_what_batch_fn_gives_is_estimated_and_swept_through_it(tmp_path):
    (tmp_path / "dictnet.py").write_text(
        "from torch import nn\n\n\n"
        "class Net(nn.Module):  # forward takes a keyword, as many users' models do\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.head = nn.Linear(64, 10)\n\n"
        "    def forward(self, *, pixels):\n"
        "        return self.head(pixels.flatten(1))\n\n\n"
        "def keyed(batch):\n"
        "    x, y = batch\n"
        "    return {'pixels': x}, y\n"
    )
    raw = {**DIGITS, "model": {"factory": "dictnet:Net"}, "base": str(tmp_path)}
    recipe = recipes.from_dict({**raw, "train": {**DIGITS["train"], "batch_fn": "dictnet:keyed"}})
    assert path.preflight(recipe, "l2", 2)["memory"]["activations"] > 0
    rows = compute_rows(recipe, "l2", [0.0, 1e-3])
    assert [r["lambda"] for r in rows] == [0.0, 1e-3]
    assert all(math.isfinite(r["val_loss"]) for r in rows)

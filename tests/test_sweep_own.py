"""LambdaSearch on your own model and data, against hand-written loops of `regulab.fit`.

Reference: for each strength, `fit` on a copy of the same model with torch.optim over
`param_groups` and a `Penalty`, on the same minibatches (a TensorLoader with the same
seed), then `metrics.evaluate` and numpy for the row's columns; the k-fold reference
cuts its folds by hand. Rows agree to 1e-5 (the engine's promise, float32) and the
choice equals `select.choose` on the hand-built rows.
"""

import copy
import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from regulab import Dropout, Penalty, digits, param_groups
from regulab.data.loader import TensorLoader
from regulab.data.split import train_val_split
from regulab.metrics import evaluate, weight_stats
from regulab.recipe import schema
from regulab.sweep import LambdaSearch, Settings, choose
from regulab.sweep.report import PATH_COLUMNS
from regulab.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
SEED = 3
SETTINGS = Settings(
    optim=schema.Optim(lr=0.1, momentum=0.5),
    train=schema.Train(epochs=2, batch_size=32, eval_train=100),
)


class Net(nn.Module):
    """A user's own model: torch layers only, nn.Dropout included."""

    def __init__(self, p=0.2):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Dropout(p), nn.Linear(24, 10)
        )

    def forward(self, x):
        return self.body(x)


@functools.cache
def _digits():
    return digits()


def _data(start, n):
    x, y = _digits()
    return x[start : start + n], y[start : start + n]


def _net(p=0.2):
    torch.manual_seed(0)
    return Net(p)


def _fit_one(model, x, y, s: Settings, param, value, seed=SEED):
    """A sequential `fit` of a copy of model with strength value; returns the copy."""
    m = copy.deepcopy(model)
    wd = value if param == "weight_decay" else s.optim.weight_decay
    groups = param_groups(m, wd)
    opt = torch.optim.SGD(groups, lr=s.optim.lr, momentum=s.optim.momentum)
    l2 = value if param == "l2" else 0.0
    weights = [p for g in groups if g["penalize"] for p in g["params"]]
    penalty = Penalty([{"params": weights, "l2": l2}]) if l2 else None
    loader = TensorLoader(x, y, batch_size=s.train.batch_size, seed=seed)
    loss = s.loss_function()
    history = fit(
        m, opt, loader, epochs=s.train.epochs, loss=loss, penalty=penalty, seed=seed,
        eval_train=0,
    )  # fmt: skip
    assert history.status == "completed"
    return m


def _metrics(model, data, loss):
    """(mean loss, its standard error over examples, accuracy) of model on data."""
    x, y = data
    mean, accuracy = evaluate(model, data, loss)
    with torch.no_grad():
        out = model.eval()(x)
    each = F.cross_entropy(out, y, reduction="none").double().numpy()
    return mean, each.std(ddof=1) / np.sqrt(len(each)), accuracy


def _row(lam, model, train, val, test, s):
    n = s.train.eval_train
    tr = _metrics(model, (train[0][:n], train[1][:n]), "cross_entropy")
    te = _metrics(model, test, "cross_entropy") if test is not None else (None, None, None)
    w_norm, zeros = weight_stats(model)
    return {
        "lambda": lam, "status": "completed", "train_loss": tr[0], "train_accuracy": tr[2],
        "val_loss": val[0], "val_loss_se": val[1], "val_accuracy": val[2],
        "test_loss": te[0], "test_accuracy": te[2], "w_norm": w_norm, "zero_fraction": zeros,
        "closed_form_w_norm": None, "closed_form_distance": None,
    }  # fmt: skip


def _assert_rows(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert set(PATH_COLUMNS) <= g.keys()
        assert g.keys() == e.keys()
        for key, want in e.items():
            if isinstance(want, float) and key != "lambda":
                assert math.isclose(g[key], want, rel_tol=TOL, abs_tol=TOL), (key, g[key], want)
            elif isinstance(want, list):
                assert np.allclose(g[key], want, rtol=TOL, atol=TOL), key
            else:
                assert g[key] == want, key


def _holdout_reference(model, param, values, train, val, test, s):
    rows = []
    for v in values:
        m = _fit_one(model, *train, s, param, v)
        rows.append(_row(v, m, train, _metrics(m, val, "cross_entropy"), test, s))
    return rows


# --- holdout and k-fold rows against sequential fits ------------------------------------------


@pytest.mark.parametrize("param", ["l2", "weight_decay"])
def test_holdout_rows_and_choice_equal_sequential_fits(param):
    train, val, test = _data(0, 320), _data(320, 160), _data(480, 120)
    values = [0.0, 0.01, 0.3]
    model = _net()
    before = copy.deepcopy(model.state_dict())
    search = LambdaSearch(
        model, param, values, data=train, val=val, test=test, settings=SETTINGS, seed=SEED
    ).fit()
    expected = _holdout_reference(model, param, values, train, val, test, SETTINGS)
    _assert_rows(search.path_, expected)
    for rule in ("min", "one_se"):
        chosen = LambdaSearch(
            model, param, values, data=train, val=val, settings=SETTINGS, seed=SEED, rule=rule
        ).fit()
        assert chosen.best_index_ == choose(expected, rule)
        assert chosen.best_lambda_ == values[chosen.best_index_]
        assert chosen.best_ == chosen.path_[chosen.best_index_]
    assert search.engine_info_ == {"engine": "local", "chunks": 1}
    for name, t in model.state_dict().items():  # the caller's model is left as it was
        assert torch.equal(t, before[name]), name


def test_kfold_rows_equal_a_hand_written_fold_loop():
    x, y = _data(0, 300)
    test = _data(600, 100)
    values = [0.0, 0.05, 1.0]
    folds = 3
    model = _net(p=0.0)
    search = LambdaSearch(
        model, "l2", values, data=TensorLoader(x, y, batch_size=32, seed=SEED), test=test,
        folds=folds, settings=SETTINGS, seed=SEED, rule="one_se",
    ).fit()  # fmt: skip
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    parts = order.tensor_split(folds)
    losses = np.zeros((folds, len(values)))
    accuracies = np.zeros((folds, len(values)))
    for f, part in enumerate(parts):
        keep = torch.ones(len(x), dtype=torch.bool)
        keep[part] = False
        for k, v in enumerate(values):
            m = _fit_one(model, x[keep], y[keep], SETTINGS, "l2", v)
            losses[f, k], accuracies[f, k] = evaluate(m, (x[part], y[part]), "cross_entropy")
    expected = []
    for k, v in enumerate(values):
        m = _fit_one(model, x, y, SETTINGS, "l2", v)
        val = (losses[:, k].mean(), losses[:, k].std(ddof=1) / np.sqrt(folds),
               accuracies[:, k].mean())  # fmt: skip
        row = _row(v, m, (x, y), val, test, SETTINGS)
        row["val_loss_folds"] = losses[:, k].tolist()
        expected.append(row)
    _assert_rows(search.path_, expected)
    assert search.best_index_ == choose(expected, "one_se")


# --- the kinds of data ---------------------------------------------------------------------


def _rows_of(**kwargs):
    base = {"settings": SETTINGS, "seed": SEED}
    return LambdaSearch(_net(), "l2", [0.0, 0.1], **{**base, **kwargs}).fit().path_


class _Dicts(Dataset):
    """A map-style dataset of dict examples."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def test_a_dataloader_is_read_into_tensors_once_and_gives_the_rows_of_the_tensors():
    train, val = _data(0, 256), _data(256, 128)
    expected = _rows_of(data=train, val=val)
    shuffled = DataLoader(TensorDataset(*train), batch_size=32, shuffle=True)
    in_order = DataLoader(TensorDataset(*val), batch_size=50)
    assert _rows_of(data=shuffled, val=in_order) == expected
    dicts = DataLoader(_Dicts(*train), batch_size=32, shuffle=True)
    s = dataclasses.replace(SETTINGS, batch_fn=lambda b: (b["image"], b["label"]))
    assert _rows_of(data=dicts, val=val, settings=s) == expected
    loader = TensorLoader(*train, batch_size=32, seed=SEED)  # its own batch size and seed
    assert _rows_of(data=loader, val=val) == expected


def test_val_fraction_holds_out_the_split_train_val_split_draws():
    data = _data(0, 320)
    (x, y), val = train_val_split(*data, 0.25, SEED)
    assert _rows_of(data=data, val_fraction=0.25) == _rows_of(data=(x, y), val=val)


def test_search_leaves_the_callers_random_state_alone():
    train, val = _data(0, 128), _data(128, 64)
    model = _net()
    loader = DataLoader(TensorDataset(*train), batch_size=32, shuffle=True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    LambdaSearch(model, "dropout", [0.0, 0.5], data=loader, val=val, settings=SETTINGS).fit()
    assert torch.equal(torch.get_rng_state(), state)


# --- torch-native dropout -------------------------------------------------------------------


def test_dropout_search_on_nn_dropout_equals_fits_of_the_regulab_dropout_model():
    train, val = _data(0, 256), _data(256, 128)
    values = [0.0, 0.2, 0.5]
    model = _net(p=0.3)
    search = LambdaSearch(model, "dropout", values, data=train, val=val, settings=SETTINGS,
                          seed=SEED).fit()  # fmt: skip
    expected = []
    for p in values:
        ref = copy.deepcopy(model)
        ref.body[3] = Dropout(p)  # swapped by hand: regulab's draws, torch's law
        m = _fit_one(ref, *train, SETTINGS, "dropout", p)
        expected.append(_row(p, m, train, _metrics(m, val, "cross_entropy"), None, SETTINGS))
    _assert_rows(search.path_, expected)
    assert type(model.body[3]) is nn.Dropout and model.body[3].p == 0.3  # not swapped in place


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, kwargs, error, match",
    [
        ([Net()], {}, TypeError, r"source must be a Recipe, .* or an nn\.Module .*got list"),
        (Net(), {}, ValueError, r"data: LambdaSearch\(model, \.\.\.\) needs the training data"),
        (Net(), {"data": "D"}, ValueError, r"val: LambdaSearch chooses on validation data"),
        (Net(), {"data": "D", "val": "V", "folds": 3}, ValueError, r"val: folds=3 cuts"),
        (Net(), {"data": "D", "val": "V", "engine": "ray"}, ValueError, r"engine: 'ray' runs"),
        (Net(), {"data": "D", "val": "V", "settings": {}}, TypeError, "settings must be a"),
        (Net(), {"data": "D", "val": "V"}, ValueError, r"param must be one of .*got 'l3'"),
        (Net(), {"data": "ITER", "val": "V"}, TypeError, r"data must be .* no length .*"),
        (Net(), {"data": "D", "folds": 1000}, ValueError, r"folds must be between 2 and the"),
        (
            Net(),
            {"data": "D", "val": "V", "max_memory": 1e-9},
            ValueError,
            r"grid: 2 copies of the model need an estimated .* more than max_memory",
        ),
    ],
)
def test_bad_input_is_refused_in_one_line_naming_the_argument(source, kwargs, error, match):
    train = _data(0, 64)

    class Stream(IterableDataset):
        def __iter__(self):
            yield from zip(*train, strict=True)

    given = {"D": train, "V": _data(64, 32), "ITER": DataLoader(Stream(), batch_size=8)}
    kwargs = {k: given.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    param = "l3" if "l3" in match else "l2"
    with pytest.raises(error, match=match):
        LambdaSearch(source, param, [0.0, 0.1], settings=kwargs.pop("settings", SETTINGS),
                     **kwargs).fit()  # fmt: skip


def test_the_recipe_form_refuses_data_and_settings():
    with pytest.raises(ValueError, match="data: a recipe brings its own data and settings"):
        LambdaSearch("recipes/mlp_digits.toml", "l2", [0.0], data=_data(0, 8)).resolved()


# --- a recipe's own loss ------------------------------------------------------------------


def _recipe(**train):
    from regulab import recipe as recipes

    return recipes.from_dict({
        "data": {"name": "digits", "val_fraction": 0.2},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 2, "batch_size": 64, **train},
    })  # fmt: skip


def test_a_recipes_loss_callable_trains_and_scores_the_sweep():
    named = LambdaSearch(_recipe(), "l2", [0.0, 0.1]).fit().path_
    code = LambdaSearch(_recipe(loss="torch.nn:CrossEntropyLoss"), "l2", [0.0, 0.1]).fit().path_
    _assert_rows(code, named)  # nn.CrossEntropyLoss() is the loss "cross_entropy" names


def test_a_recipe_in_mixed_precision_is_refused_by_the_sweep():
    from regulab.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"train.precision: the sweep trains .* fp32 only"):
        LambdaSearch(_recipe(precision="bf16"), "l2", [0.0]).resolved()

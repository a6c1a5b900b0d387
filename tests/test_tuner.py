"""Tuner: successive halving and PBT on one stacked run, against uninterrupted references.

References: a sequential `regulab.fit` and `fit_stacked` with the survivors' hyperparameters
trained without any cut (survivors must not notice the cuts: 1e-5, float32), a count of the
copy-epochs taken through a spy on `StackedRun.train_epochs` (the budget), `metrics.evaluate`
on the survivors' models (the choice), and a spy on `StackedRun.copy_into` (PBT's exploit).
"""

import copy
import dataclasses
import functools
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from regulab import Tuner, digits, models, param_groups
from regulab.data.loader import TensorLoader
from regulab.errors import NothingToChoose
from regulab.layers import Dropout
from regulab.metrics import evaluate
from regulab.recipe import schema
from regulab.sweep import Settings, StackedRun, fit_stacked
from regulab.train import fit
from regulab.tune.ensemble import Ensemble
from regulab.tune.schedulers import strength_bins
from regulab.tune.space import parse_space

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
SEED, LOADER_SEED, EPOCHS = 2, 5, 4
SPACE = "weight_decay=log(1e-4,1e-1)|off dropout=uniform(0,0.6) lr=log(0.02,0.3)"
SETTINGS = Settings(optim=schema.Optim(momentum=0.5), train=schema.Train(epochs=EPOCHS))


@functools.cache
def _digits():
    return digits()


def _loader(n=320, batch_size=32):
    x, y = _digits()
    return TensorLoader(x[:n], y[:n], batch_size=batch_size, seed=LOADER_SEED)


def _val():
    x, y = _digits()
    return x[1000:1300], y[1000:1300]


def _mlp(dropout=0.3):
    torch.manual_seed(0)
    return models.mlp([64, 24, 10], dropout=dropout)


def _tuner(**kwargs):
    return Tuner(SPACE, settings=SETTINGS, seed=SEED, **{"eta": 2, **kwargs})


def _final(t):
    last = max(r["rung"] for r in t.trials_)
    return [r for r in t.trials_ if r["rung"] == last and r["status"] == "alive"]


def _spy(monkeypatch, name, after):
    """Wrap StackedRun.name: after(run, args) runs once the original has."""
    original = getattr(StackedRun, name)

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        after(self, *args, **kwargs)
        return out

    monkeypatch.setattr(StackedRun, name, spy)


def _sequential(model, params: dict, loader, epochs: int, seed: int) -> nn.Module:
    """One `fit` with params' lr, weight decay (coupled, sgd) and dropout p."""
    m = copy.deepcopy(model)
    for layer in m.modules():
        if type(layer) is Dropout:
            layer.p = params["dropout"]
    opt = torch.optim.SGD(param_groups(m, params["weight_decay"]), lr=params["lr"], momentum=0.5)
    history = fit(m, opt, loader, epochs=epochs, seed=seed, eval_train=0)
    assert history.status == "completed"
    return m


# --- successive halving ------------------------------------------------------------------------


def test_survivors_equal_copies_trained_without_cuts():
    model = _mlp()
    t = _tuner(budget=4.0, configs=8).fit(model, _loader(), _val())
    assert [(r.epoch, r.alive) for r in t.plan_.rungs] == [(1, 8), (2, 4), (4, 2)]
    survivors = _final(t)
    assert len(survivors) == 2 and t.best_index_ in [r["config"] for r in survivors]
    # the best: a sequential fit with its values, never stacked
    ref = _sequential(model, t.best_params_, _loader(), EPOCHS, SEED).state_dict()
    got = t.best_model_.state_dict()
    for name, want in ref.items():
        torch.testing.assert_close(got[name], want, rtol=0, atol=TOL, msg=name)
    # every survivor: fit_stacked on the survivors alone, uninterrupted
    s = dataclasses.replace(SETTINGS, train=dataclasses.replace(SETTINGS.train, seed=SEED))
    names = parse_space(SPACE).names
    stacked = fit_stacked(model, {n: [r[n] for r in survivors] for n in names}, _loader(), s)
    for k, row in enumerate(survivors):
        loss, accuracy = evaluate(stacked.model(k), _val(), "cross_entropy")
        assert row["val_loss"] == pytest.approx(loss, abs=TOL)
        assert row["val_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert model.state_dict().keys() == _mlp().state_dict().keys()
    for name, w in _mlp().state_dict().items():  # the caller's model: unchanged
        assert torch.equal(model.state_dict()[name], w), name


def test_the_choice_is_the_best_final_survivor_by_its_own_model():
    t = _tuner(budget=4.0, configs=8).fit(_mlp(), _loader(), _val())
    survivors = _final(t)
    s = dataclasses.replace(SETTINGS, train=dataclasses.replace(SETTINGS.train, seed=SEED))
    names = parse_space(SPACE).names
    stacked = fit_stacked(_mlp(), {n: [r[n] for r in survivors] for n in names}, _loader(), s)
    losses = [evaluate(stacked.model(k), _val(), "cross_entropy")[0] for k in range(len(survivors))]
    best = int(np.argmin(losses))
    assert t.best_index_ == survivors[best]["config"]
    assert t.best_score_ == pytest.approx(losses[best], abs=TOL)
    assert t.best_params_ == {n: survivors[best][n] for n in names}
    assert evaluate(t.best_model_, _val(), "cross_entropy")[0] == pytest.approx(
        t.best_score_, abs=TOL
    )
    by_accuracy = _tuner(budget=4.0, configs=8, metric="val_accuracy").fit(
        _mlp(), _loader(), _val()
    )
    best_rows = _final(by_accuracy)
    assert by_accuracy.best_score_ == max(r["val_accuracy"] for r in best_rows)


@pytest.mark.parametrize(
    "budget, eta, configs", [(3.0, 2, None), (2.0, 3, None), (4.5, 3, None), (4.0, 2, 8)]
)
def test_budget_spent_equals_the_plan_and_the_copy_epochs_trained(
    monkeypatch, budget, eta, configs
):
    trained = []
    _spy(monkeypatch, "train_epochs", lambda run, n=1: trained.append(run.k * n))
    t = _tuner(budget=budget, eta=eta, configs=configs).fit(_mlp(), _loader(), _val())
    assert sum(trained) == t.plan_.copy_epochs
    assert t.spent_ == pytest.approx(t.plan_.cost, abs=1e-12)
    assert t.spent_ == pytest.approx(sum(trained) / EPOCHS, abs=1e-12) and t.spent_ <= budget
    for i, rung in enumerate(t.plan_.rungs, 1):  # one row per configuration alive at each rung
        rows = [r for r in t.trials_ if r["rung"] == i]
        assert len(rows) == rung.alive and {r["epoch"] for r in rows} == {rung.epoch}
        kept = [r["config"] for r in rows if r["status"] == "alive"]
        nxt = [r["config"] for r in t.trials_ if r["rung"] == i + 1]
        assert kept == nxt or i == len(t.plan_.rungs)
    assert set(t.rank_agreement_) == set(range(1, len(t.plan_.rungs)))
    assert t.lineage_ is None and t.seconds_ > 0


def test_promotion_keeps_the_best_of_each_strength_range_first():
    space = parse_space(SPACE)
    for promotion in (True, False):
        t = _tuner(budget=3.0, promotion=promotion).fit(_mlp(), _loader(), _val())
        first = [r for r in t.trials_ if r["rung"] == 1]
        keep = t.plan_.rungs[1].alive
        # the definition, by hand: the best of every label of every hyperparameter first
        hparams = {n: torch.tensor([r[n] for r in first], dtype=torch.float64) for n in space.names}
        labels = strength_bins(hparams, space).tolist()
        protected = set()
        for j in range(len(space)) if promotion else []:
            for label in {row[j] for row in labels}:
                members = [i for i, row in enumerate(labels) if row[j] == label]
                protected.add(min(members, key=lambda i: (first[i]["val_loss"], i)))
        order = sorted(
            range(len(first)), key=lambda i: (i not in protected, first[i]["val_loss"], i)
        )
        want = sorted(first[i]["config"] for i in order[:keep])
        assert [r["config"] for r in first if r["status"] == "alive"] == want


def test_a_diverged_copy_is_dropped_and_recorded():
    space = "lr=log(0.05,1e5) weight_decay=log(1e-4,1e-2)"
    t = Tuner(space, budget=3.0, eta=2, settings=SETTINGS, seed=SEED).fit(
        _mlp(0.0), _loader(), _val()
    )
    diverged = [r for r in t.trials_ if r["status"] == "diverged"]
    assert diverged and all(r["val_loss"] is None for r in diverged)
    assert not any(r["config"] == d["config"] and r["rung"] > d["rung"]
                   for r in t.trials_ for d in diverged)  # fmt: skip
    assert t.best_params_["lr"] < 1e3 and np.isfinite(t.best_score_)
    assert t.spent_ <= t.plan_.cost
    with pytest.raises(NothingToChoose, match=r"^every configuration diverged by epoch 1"):
        Tuner("lr=log(1e3,1e4) weight_decay=log(0.1,1)", settings=SETTINGS).fit(
            _mlp(0.0), _loader(), _val()
        )  # lr * weight_decay > 2: the weights grow by that factor every step


# --- population-based training -----------------------------------------------------------------


def test_pbt_keeps_k_copies_and_its_lineage_matches_the_copies_made(monkeypatch):
    sizes, copies = [], []

    def check_copy(run, src, dst):
        src, dst = torch.as_tensor(src), torch.as_tensor(dst)
        for name, t in {**run.stacked.params, **run.stacked.buffers}.items():
            if not name.endswith(".p"):  # the dropout rate stays with its copy
                assert torch.equal(t[dst], t[src]), name
        for state in run.opt.buffers.values():
            assert all(torch.equal(v[dst], v[src]) for v in state.values())
        copies.extend((run.epoch, d, s) for s, d in zip(src.tolist(), dst.tolist(), strict=True))

    _spy(monkeypatch, "train_epochs", lambda run, n=1: sizes.append(run.k))
    _spy(monkeypatch, "copy_into", check_copy)
    t = _tuner(scheduler="pbt", budget=8, pbt_interval=1).fit(_mlp(), _loader(), _val())
    assert sizes == [8] * EPOCHS and t.spent_ == t.plan_.cost == 8.0
    assert t.plan_.exploits == (1, 2, 3) and len(t.trials_) == 8 * EPOCHS
    assert sorted(copies) == sorted((r["epoch"], r["copy"], r["parent"]) for r in t.lineage_.rows())
    assert len(copies) == 3 * 2  # floor(0.25 * 8) each step
    space = parse_space(SPACE)
    for rung in (1, 2, 3):
        now = {r["config"]: r for r in t.trials_ if r["rung"] == rung}
        nxt = {r["config"]: r for r in t.trials_ if r["rung"] == rung + 1}
        replaced = {d for e, d, _ in copies if e == rung}
        assert {k for k, r in now.items() if r["status"] == "replaced"} == replaced
        for k in range(8):
            for r in space:
                v = nxt[k][r.name]
                assert (v == 0.0 and r.p_off > 0) or r.low <= v <= r.high, (r.name, v)
                if k not in replaced:
                    assert v == now[k][r.name]
    end = {r["config"]: r for r in _final(t)}
    assert t.best_params_ == {r.name: end[t.best_index_][r.name] for r in space}
    assert t.best_score_ == min(r["val_loss"] for r in end.values())


def test_pbt_replaces_a_diverged_copy_and_goes_on():
    space = "lr=log(0.05,1e4) weight_decay=log(1e-4,1e-2)"  # the largest lr * wd diverge
    t = Tuner(space, budget=8, scheduler="pbt", settings=SETTINGS, pbt_interval=1)
    t.fit(_mlp(0.0), _loader(), _val())
    diverged = [(r["rung"], r["config"]) for r in t.trials_ if r["status"] == "diverged"]
    assert diverged and all(rung < EPOCHS for rung, _ in diverged)
    copied = {(r["epoch"], r["copy"]) for r in t.lineage_.rows()}
    after = {(r["rung"], r["config"]): r for r in t.trials_}
    for rung, k in diverged:  # replaced at once by a finite copy
        assert (rung, k) in copied and after[rung + 1, k]["val_loss"] is not None
    assert np.isfinite(t.best_score_) and t.spent_ == 8.0


# --- bad input, global state, your own model and data -------------------------------------------


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 1)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.mark.parametrize(
    "kwargs, model, val, error, match",
    [
        ({"space": ""}, None, True, ValueError, r"space must name at least one hyperparameter"),
        ({"space": {}}, None, True, ValueError, r"space must name at least one hyperparameter"),
        ({"space": "foo=log(1,2)"}, None, True, ValueError, r"unknown hyperparameter 'foo'"),
        ({"space": "drop_block=uniform(0,0.2)"}, None, True, ValueError,
         r"'drop_block' needs a model with DropBlock layers \(regulab.DropBlock2d\); this model "
         r"has none"),
        ({"space": "dropout=uniform(0,0.5)"}, 0.0, True, ValueError,
         r"space: 'dropout' needs a model with Dropout layers.*; this model has none \(it takes"),
        ({"space": "bn_sparsity=log(1e-5,1e-3)"}, None, True, ValueError,
         r"'bn_sparsity' needs a model with BatchNorm layers"),
        ({"budget": 0.5}, None, True, ValueError, r"budget must be at least 1 single-run"),
        ({"budget": 2.0, "configs": 20}, None, True, ValueError,
         r"budget must be at least .* for 20 configurations"),
        ({"scheduler": "asha"}, None, True, ValueError, r"scheduler must be one of 'sh', 'pbt'"),
        ({"metric": "loss"}, None, True, ValueError, r"metric must be one of"),
        ({"scheduler": "pbt", "configs": 3}, None, True, ValueError,
         r"configs must be at least 4 for pbt with pbt_fraction 0.25"),
        ({"scheduler": "pbt", "configs": 8}, None, True, ValueError,
         r"budget must be at least configs = 8 single-run equivalents for pbt"),
        ({"scheduler": "pbt", "budget": 4, "pbt_interval": 4}, None, True, ValueError,
         r"pbt_interval must be an integer in \[1, epochs = 4\)"),
        ({}, None, False, ValueError, r"val: the Tuner chooses on validation data"),
        ({}, "not a model", True, TypeError, r"model must be an nn.Module; got str"),
        ({"space": "l2=log(1e-4,1e-1)", "metric": "val_accuracy",
          "settings": Settings(train=schema.Train(loss="mse"))}, Regression(), True, ValueError,
         r"metric: 'val_accuracy' needs a classification loss"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_in_one_line_before_training(
    monkeypatch, kwargs, model, val, error, match
):
    trained = []
    _spy(monkeypatch, "train_epochs", lambda run, n=1: trained.append(n))
    kwargs = {"space": SPACE, "settings": SETTINGS, **kwargs}
    model = _mlp() if model is None else _mlp(model) if isinstance(model, float) else model
    x, y = _loader().tensors
    if isinstance(model, Regression):
        x, y = x.flatten(1), y.float()[:, None]
    validation = (x, y) if val else None
    with pytest.raises(error, match=match) as caught:
        Tuner(**kwargs).fit(model, (x, y), validation)
    assert "\n" not in str(caught.value) and trained == []


@pytest.mark.parametrize("scheduler", ["sh", "pbt"])
def test_the_callers_random_state_is_left_alone(scheduler):
    model, (x, y) = _mlp(), _loader().tensors
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    _tuner(scheduler=scheduler, budget=4, pbt_interval=2).fit(model, (x, y), _val())
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


class Net(nn.Module):
    """A user's own model: torch layers only, nn.Dropout included."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Dropout(0.2), nn.Linear(24, 10)
        )

    def forward(self, x):
        return self.body(x)


def test_a_dataloader_and_your_own_model_with_nn_dropout():
    torch.manual_seed(0)
    net = Net()
    before = copy.deepcopy(net.state_dict())
    x, y = _loader().tensors
    train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(*_val()), batch_size=100)
    t = _tuner(budget=3.0).fit(net, train, val)
    same = _tuner(budget=3.0).fit(net, TensorLoader(x, y, batch_size=32, seed=SEED), _val())
    assert [r["val_loss"] for r in t.trials_] == pytest.approx(
        [r["val_loss"] for r in same.trials_], abs=1e-6
    )
    assert t.best_params_ == same.best_params_
    assert isinstance(net.body[3], nn.Dropout) and net.body[3].p == 0.2  # untouched
    assert all(torch.equal(net.state_dict()[n], w) for n, w in before.items())
    loss, _ = evaluate(t.best_model_, _val(), "cross_entropy")
    assert loss == pytest.approx(t.best_score_, abs=TOL)


@pytest.mark.parametrize("scheduler", ["sh", "pbt"])
def test_on_rung_sees_each_rungs_rows_as_they_are_recorded(scheduler):
    seen = []
    kwargs = {"scheduler": "pbt", "budget": 4.0, "configs": 4} if scheduler == "pbt" else {}
    t = _tuner(on_rung=lambda rows: seen.append(list(rows)), **kwargs)
    t.fit(_mlp(), _loader(), _val())
    assert [row for rows in seen for row in rows] == t.trials_
    assert [{r["rung"] for r in rows} for rows in seen] == [{i} for i in range(1, len(seen) + 1)]


# --- finalists and their ensemble ---------------------------------------------------------------


def test_finalists_train_to_the_end_and_vote_as_an_ensemble():
    model = _mlp()
    t = _tuner(budget=4.5, configs=8, finalists=3).fit(model, _loader(), _val())
    assert [(r.epoch, r.alive) for r in t.plan_.rungs][-1] == (EPOCHS, 3)
    final = _final(t)
    by_loss = sorted(final, key=lambda r: r["val_loss"])
    assert t.finalists_ == [r["config"] for r in by_loss] and t.best_index_ == t.finalists_[0]
    # each member is its finalist's model: a sequential fit with its values
    members = t.ensemble_model_.members
    assert len(members) == 3 and t.ensemble_model_.probabilities
    for row, member in zip(by_loss, members, strict=True):
        ref = _sequential(model, {n: row[n] for n in parse_space(SPACE).names}, _loader(),
                          EPOCHS, SEED)  # fmt: skip
        for name, want in ref.state_dict().items():
            torch.testing.assert_close(member.state_dict()[name], want, rtol=0, atol=TOL)
    # the ensemble's prediction: the mean of the members' softmax, by hand
    x, y = _val()
    with torch.no_grad():
        mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
        got = t.ensemble_model_(x)
    torch.testing.assert_close(got.exp(), mean, rtol=0, atol=1e-6)
    loss, accuracy = evaluate(t.ensemble_model_, (x, y), "cross_entropy")
    assert loss == pytest.approx(-mean[torch.arange(len(y)), y].log().mean().item(), rel=1e-5)
    assert accuracy == pytest.approx((mean.argmax(1) == y).double().mean().item(), abs=1e-12)
    one = _tuner(budget=4.0, configs=8, finalists=1).fit(model, _loader(), _val())
    assert one.ensemble_model_ is None and one.finalists_ == [one.best_index_]


def test_an_ensemble_of_regression_outputs_is_their_mean():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    x = torch.randn(5, 3)
    e = Ensemble([a, b], probabilities=False)
    torch.testing.assert_close(e(x), (a(x) + b(x)) / 2, rtol=0, atol=1e-7)
    with pytest.raises(TypeError, match="members must be a non-empty list"):
        Ensemble([])


def test_pbt_finalists_are_the_best_of_the_population():
    t = _tuner(scheduler="pbt", budget=4.0, finalists=2).fit(_mlp(), _loader(), _val())
    last = [r for r in t.trials_ if r["epoch"] == EPOCHS]
    best = sorted(last, key=lambda r: r["val_loss"])[:2]
    assert t.finalists_ == [r["config"] for r in best] and len(t.ensemble_model_.members) == 2
    with pytest.raises(ValueError, match=r"finalists must be at most the population \(4\)"):
        _tuner(scheduler="pbt", budget=4.0, finalists=5).resolved(_mlp())

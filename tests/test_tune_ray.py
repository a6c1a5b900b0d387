"""Tuner(engine="ray"): Hyperband's brackets as Ray tasks against the same brackets run here
in sequence with the same draws (rows, best, weights: 1e-6), the winner against a sequential
`fit` with its values (1e-5), the budget against the plans, the draws against one `draw`,
and the address handling (a local instance started and stopped, "auto", bad addresses)."""

import copy
import functools
import os
import sys

import pytest
import torch

from regulab import Tuner, digits, models, param_groups
from regulab.data.loader import TensorLoader
from regulab.errors import NothingToChoose
from regulab.layers import Dropout
from regulab.metrics import evaluate
from regulab.recipe import schema
from regulab.sweep import Settings
from regulab.sweep.model_path import resolve_data
from regulab.train import fit
from regulab.tune import ray_engine
from regulab.tune.space import draw

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-6
SEED, EPOCHS = 2, 4
SPACE = "weight_decay=log(1e-4,1e-1)|off dropout=uniform(0,0.6) lr=log(0.02,0.3)"
SETTINGS = Settings(optim=schema.Optim(momentum=0.5), train=schema.Train(epochs=EPOCHS))


@functools.cache
def _digits():
    return digits()


def _loader():
    x, y = _digits()
    return TensorLoader(x[:320], y[:320], batch_size=32, seed=5)


def _val():
    x, y = _digits()
    return x[1000:1300], y[1000:1300]


def _mlp():
    torch.manual_seed(0)
    return models.mlp([64, 24, 10], dropout=0.3)


def _tuner(**kwargs):
    return Tuner(SPACE, **{"budget": 6.0, "eta": 2, "settings": SETTINGS, "seed": SEED, **kwargs})


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module: start-up takes seconds."""
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()


def _in_sequence(t, model):
    """The brackets run here, one after the other, on the same draws."""
    space, s, plan = t.resolved(model)
    data = resolve_data(_loader(), _val(), 0.0, None, s, SEED, 0, "cpu")
    brackets = ray_engine.bracket_draws(space, plan, SEED)
    return [ray_engine.run_bracket(t, model, data, space, s, b) for b in brackets]


def _sequential(model, params, epochs):
    """One `fit` with params' lr, weight decay (coupled, sgd) and dropout p."""
    m = copy.deepcopy(model)
    for layer in m.modules():
        if type(layer) is Dropout:
            layer.p = params["dropout"]
    opt = torch.optim.SGD(param_groups(m, params["weight_decay"]), lr=params["lr"], momentum=0.5)
    assert fit(m, opt, _loader(), epochs=epochs, seed=SEED, eval_train=0).status == "completed"
    return m


def _assert_rows_close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w)
        for key, value in w.items():
            if isinstance(value, float):
                assert g[key] == pytest.approx(value, abs=TOL), key
            else:
                assert g[key] == value, key


# --- without Ray -------------------------------------------------------------------------------


def test_plan_spends_the_budget_and_draws_do_not_repeat():
    t = _tuner(engine="ray")
    space, _, plan = t.resolved(_mlp())
    assert [(p.configs, [r.epoch for r in p.rungs]) for p in plan.plans] == [
        (4, [1, 2, 4]),
        (3, [2, 4]),
        (2, [4]),
    ]
    assert plan.cost == sum(p.cost for p in plan.plans) == 6.0 and plan.firsts == (0, 4, 7)
    assert str(plan).startswith("hyperband: 3 brackets as Ray tasks, 9 configurations, cost 6.00")
    brackets = ray_engine.bracket_draws(space, plan, SEED)
    whole = draw(space, 9, SEED)  # one draw, cut into slices in bracket order
    for name, v in whole.items():
        got = torch.cat([b.hparams[name] for b in brackets])
        torch.testing.assert_close(got, v.double(), rtol=0, atol=0)
    configs = {tuple(float(whole[n][i]) for n in whole) for i in range(9)}
    assert len(configs) == 9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"engine": "spark"}, r"^engine must be one of .*'local'.*'ray'.*got 'spark'"),
        ({"engine": "ray", "ray_address": "nonsense"}, r"^ray_address must be None .*'nonsense'"),
        ({"engine": "ray", "ray_address": "host:0"}, r"^ray_address must be .*port 1-65535"),
        ({"engine": "ray", "ray_address": "ray://:10001"}, r"^ray_address must be"),
        ({"engine": "ray", "scheduler": "pbt"}, r"^scheduler must be 'sh' with engine='ray'"),
        ({"engine": "ray", "configs": 8}, r"^configs must be None with engine='ray'.*got 8"),
        ({"ray_address": "auto"}, r"^ray_address is for engine='ray'; got 'auto'"),
    ],
)
def test_bad_settings_refused_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as caught:
        _tuner(**kwargs).resolved(_mlp())
    assert "\n" not in str(caught.value)


def test_check_address():
    for good in (None, "auto", "10.0.0.1:6379", "ray://head.example:10001", "[::1]:6379"):
        assert ray_engine.check_address(good) == good
    with pytest.raises(TypeError, match=r"^ray_address must be None, 'auto' or 'host:port'"):
        ray_engine.check_address(6379)


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'regulab\[ray\]'"):
        _tuner(engine="ray").fit(_mlp(), _loader(), _val())


# --- on a local Ray ----------------------------------------------------------------------------


def test_merged_equals_the_brackets_in_sequence(ray_instance, monkeypatch):
    ray, model = ray_instance, _mlp()
    # Pretend Ray is not running, to see the engine start a local instance with every core
    # and stop it (for real it reuses the module's: a second start-up would cost seconds).
    calls, answers, real = [], iter([False]), ray.is_initialized
    monkeypatch.setattr(ray, "is_initialized", lambda: next(answers, real()))
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", {})))
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    t = _tuner(engine="ray").fit(model, _loader(), _val())
    assert [c[0] for c in calls] == ["init", "shutdown"]
    assert calls[0][1]["address"] == "local" and calls[0][1]["num_cpus"] == os.cpu_count()
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert t.engine_["engine"] == "ray" and t.engine_["tasks"] == 3 and t.engine_["started_ray"]

    want = _in_sequence(_tuner(engine="ray"), model)
    _assert_rows_close(t.trials_, [row for r in want for row in r["rows"]])
    assert [r["bracket"] for r in t.brackets_] == [1, 2, 3]
    for got, w in zip(t.brackets_, want, strict=True):
        assert got["best"] == w["best"] and got["copy_epochs"] == w["copy_epochs"]
    # the best over brackets, by hand: the lowest val_loss among the last rungs' survivors
    last = {b: max(r["rung"] for r in t.trials_ if r["bracket"] == b) for b in (1, 2, 3)}
    final = [r for r in t.trials_ if r["rung"] == last[r["bracket"]] and r["status"] == "alive"]
    best = min(final, key=lambda r: r["val_loss"])
    assert t.best_index_ == best["config"] and t.best_score_ == pytest.approx(best["val_loss"])
    # the finalists (2 by default): the two best of the brackets' final survivors
    assert t.finalists_ == [r["config"] for r in sorted(final, key=lambda r: r["val_loss"])[:2]]
    assert len(t.ensemble_model_.members) == 2
    assert t.best_params_ == {n: best[n] for n in ("weight_decay", "dropout", "lr")}
    assert t.spent_ == pytest.approx(t.plan_.cost, abs=1e-12) and t.spent_ == 6.0
    assert sorted({r["config"] for r in t.trials_}) == list(range(9))
    # the weights came back: the sequential copy's, the same model as a plain fit
    winner = next(w for w in want if w["best"] == t.best_index_)
    for name, w in winner["finalists"][0]["state"].items():
        torch.testing.assert_close(t.best_model_.state_dict()[name], w, rtol=0, atol=TOL)
    ref = _sequential(model, t.best_params_, EPOCHS).state_dict()
    for name, w in ref.items():
        torch.testing.assert_close(t.best_model_.state_dict()[name], w, rtol=0, atol=1e-5)
    loss, _ = evaluate(t.best_model_, _val(), "cross_entropy")
    assert loss == pytest.approx(t.best_score_, abs=1e-5) and not t.best_model_.training


def test_by_accuracy_and_every_bracket_diverging(ray_instance):
    t = _tuner(engine="ray", metric="val_accuracy").fit(_mlp(), _loader(), _val())
    final = [r for r in t.trials_ if r["epoch"] == EPOCHS]
    assert t.best_score_ == max(r["val_accuracy"] for r in final)
    assert not t.engine_["started_ray"] and ray_instance.is_initialized()  # the caller's: kept
    space = "lr=log(1e3,1e4) weight_decay=log(0.1,1)"  # every copy diverges in epoch 1
    with pytest.raises(NothingToChoose, match="every configuration diverged by epoch 1"):
        Tuner(space, budget=6.0, eta=2, settings=SETTINGS, engine="ray").fit(
            models.mlp([64, 24, 10]), _loader(), _val()
        )


def test_address_joins_a_cluster_or_says_none_answered(monkeypatch):
    ray = pytest.importorskip("ray")
    joined = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: joined.append(kw) or 1 / 0)
    with pytest.raises(ZeroDivisionError):  # stop once init was called
        ray_engine.run_on_ray((None,), [], address="auto")
    assert joined[0]["address"] == "auto" and "num_cpus" not in joined[0]

    def refuse(**kw):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ConnectionError, match=r"^ray_address: no Ray cluster answered at '1.2.3.4"):
        ray_engine.run_on_ray((None,), [], address="1.2.3.4:6379")
    with pytest.raises(ValueError, match=r"^ray_address must be"):
        ray_engine.run_on_ray((None,), [], address="1.2.3.4")


def test_regulab_tune_engine_ray_writes_the_merged_brackets(ray_instance, tmp_path, one_thread):
    import csv
    import json
    from pathlib import Path

    from conftest import run_cli
    from regulab import slim

    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tune_digits.toml")
    small = (
        "--set",
        "train.epochs=3",
        "--set",
        "model.hidden=[24]",
        "--set",
        "model.dropout=[0.2]",
    )
    out = tmp_path / "ray"
    args = ("--engine", "ray", "--budget", "4", "--out", str(out))
    assert run_cli("tune", recipe, *small, *args) == 0
    s = json.loads((out / "summary.json").read_text())
    plan = s["plan"]
    assert [b["configs"] for b in plan["brackets"]] == [4, 2] and s["spent"] == plan["cost"] == 4
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["bracket"] for r in rows} == {"1", "2"}
    assert len({r["config"] for r in rows}) == plan["configs"]  # no configuration repeats
    best = [r for r in rows if int(r["config"]) == s["best_config"]][-1]
    assert abs(float(best["val_loss"]) - s["best_score"]) <= 1e-9
    assert slim.load(out / "best") is not None

"""The weight-decay experiment: the expected results and the summary statistics."""

import numpy as np
import pytest

from regulab import demo


@pytest.fixture(scope="module")
def ten_seeds():
    cfg = demo.DemoConfig(lambdas=(0.0, 3.0), seeds=10)
    return demo.run(cfg)


def test_expected_results_over_ten_seeds(ten_seeds):
    by_lambda = {r["lambda"]: r for r in demo.summarize(ten_seeds)}
    assert 12.5 <= by_lambda[0.0]["w_norm_mean"] <= 15.5
    assert 0.33 <= by_lambda[3.0]["w_norm_mean"] <= 0.45
    assert by_lambda[3.0]["test_loss_mean"] < 0.01 * by_lambda[0.0]["test_loss_mean"]
    assert by_lambda[0.0]["train_loss_mean"] < 1e-3


def test_summary_against_numpy(ten_seeds):
    summary = demo.summarize(ten_seeds)
    assert [r["lambda"] for r in summary] == [0.0, 3.0]
    for r in summary:
        finals = np.array([ten_seeds[r["lambda"], s].history["test_loss"][-1] for s in range(10)])
        assert r["seeds"] == 10
        assert r["test_loss_mean"] == pytest.approx(finals.mean(), rel=1e-12)
        assert r["test_loss_std"] == pytest.approx(finals.std(ddof=1), rel=1e-12)


def test_metric_rows_cover_every_lambda_seed_and_epoch():
    results = demo.run(demo.DemoConfig(lambdas=(0.0, 1.0), seeds=2, epochs=3))
    rows = demo.metric_rows(results)
    assert len(rows) == 2 * 2 * 3
    assert {(r["lambda"], r["seed"], r["epoch"]) for r in rows} == {
        (lam, s, e) for lam in (0.0, 1.0) for s in (0, 1) for e in (1, 2, 3)
    }
    last = next(r for r in rows if (r["lambda"], r["seed"], r["epoch"]) == (1.0, 1, 3))
    assert last["w_norm"] == results[1.0, 1].history["w_norm"][-1]


def test_every_lambda_shares_data_and_start_at_a_seed():
    cfg = demo.DemoConfig(lambdas=(0.0,), seeds=1, epochs=1, lr=1e-12)
    fit = demo.run(cfg)[0.0, 0]
    _, _, w0 = demo.problem(0, cfg)
    assert np.allclose(fit.w.numpy(), w0.numpy(), atol=1e-6)


def test_one_seed_has_zero_spread():
    summary = demo.summarize(demo.run(demo.DemoConfig(lambdas=(1.0,), seeds=1, epochs=2)))
    assert summary[0]["w_norm_std"] == 0.0


def test_progress_callback_runs_once_per_model():
    calls = []
    demo.run(demo.DemoConfig(lambdas=(0.0, 3.0), seeds=3, epochs=1), on_run=lambda: calls.append(1))
    assert len(calls) == 6


def test_scratch_and_concise_give_the_same_summary():
    cfg = dict(lambdas=(0.0, 3.0), seeds=2, epochs=20)
    a = demo.summarize(demo.run(demo.DemoConfig(**cfg, impl="scratch")))
    b = demo.summarize(demo.run(demo.DemoConfig(**cfg, impl="concise")))
    for ra, rb in zip(a, b, strict=True):
        assert ra["w_norm_mean"] == pytest.approx(rb["w_norm_mean"], rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lambdas": ()}, "lambdas"),
        ({"lambdas": (-1.0,)}, "lambdas"),
        ({"lambdas": (1.0, 1.0)}, "distinct"),
        ({"seeds": 0}, "seeds"),
        ({"epochs": -2}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": -0.1}, "lr"),
        ({"impl": "keras"}, "impl"),
    ],
)
def test_bad_config_names_the_setting(kwargs, name):
    with pytest.raises(ValueError, match=name):
        demo.DemoConfig(**kwargs)

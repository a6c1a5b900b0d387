"""The weight-decay experiment: the expected results and the summary statistics."""

import numpy as np
import pytest

from regulab.demos import weight_decay as demo


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
    """With a negligible step, every lambda ends where it began: on w0, with the same losses."""
    cfg = demo.DemoConfig(lambdas=(0.0, 3.0), seeds=2, epochs=1, lr=1e-12)
    results = demo.run(cfg)
    for seed in (0, 1):
        _, test, w0 = demo.problem(seed, cfg)
        for lam in cfg.lambdas:
            fit = results[lam, seed]
            assert np.allclose(fit.w.numpy(), w0.numpy(), atol=1e-6)
            expected = float(((test[0] @ w0 - test[1]) ** 2).mean() / 2)
            assert fit.history["test_loss"][0] == pytest.approx(expected, rel=1e-5)
    assert results[0.0, 0].history["test_loss"] != results[0.0, 1].history["test_loss"]


def test_one_seed_has_zero_spread():
    summary = demo.summarize(demo.run(demo.DemoConfig(lambdas=(1.0,), seeds=1, epochs=2)))
    assert summary[0]["w_norm_std"] == 0.0


def test_progress_callback_runs_once_per_model():
    calls = []
    demo.run(demo.DemoConfig(lambdas=(0.0, 3.0), seeds=3, epochs=1), on_run=lambda: calls.append(1))
    assert len(calls) == 6


def test_impl_selects_the_trainer(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["lr"])
        return demo.TRAINERS["scratch"](*args, **kwargs)

    monkeypatch.setitem(demo.TRAINERS, "concise", spy)
    demo.run(demo.DemoConfig(lambdas=(0.0,), seeds=2, epochs=1, impl="concise", lr=0.002))
    assert calls == [0.002, 0.002]


def test_divergence_names_the_seed_and_epoch():
    with pytest.raises(demo.TrainingDiverged, match=r"seed 0: .*epoch \d+.*lam = 1000") as info:
        demo.run(demo.DemoConfig(lambdas=(1000.0,), seeds=1))
    assert 1 <= info.value.epoch <= 100


def test_negative_zero_is_reported_as_zero():
    assert str(demo.DemoConfig(lambdas=(-0.0, 3.0)).lambdas[0]) == "0.0"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lambdas": ()}, "lambdas"),
        ({"lambdas": (-1.0,)}, "lambdas"),
        ({"lambdas": (1.0, 1.0)}, "distinct"),
        ({"seeds": 0}, "seeds"),
        ({"epochs": -2}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 21}, "at most n_train = 20"),
        ({"lr": -0.1}, "lr"),
        ({"impl": "keras"}, "impl"),
    ],
)
def test_bad_config_names_the_setting(kwargs, name):
    with pytest.raises(ValueError, match=name):
        demo.DemoConfig(**kwargs)

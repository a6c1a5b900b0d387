"""The scratch and concise trainers: agreement, the 1/2 trap, and independent references."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from torch import nn

from regulab.data import synthetic_linear
from regulab.linear_regression import (
    TrainingDiverged,
    half_mse,
    minibatches,
    train_concise,
    train_scratch,
)


def demo_problem(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    train = synthetic_linear(20, generator=g, dtype=dtype)
    test = synthetic_linear(100, generator=g, dtype=dtype)
    w0 = torch.randn(200, generator=g, dtype=torch.float64).to(dtype)
    return train, test, w0


@pytest.mark.parametrize("lam", [0.0, 3.0])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_scratch_and_concise_end_with_the_same_weights(lam, dtype, tol):
    train, test, w0 = demo_problem(seed=2, dtype=dtype)
    a = train_scratch(train, test, lam, w0=w0, seed=7)
    b = train_concise(train, test, lam, w0=w0, seed=7)
    assert (a.w - b.w).abs().max() <= tol
    assert abs(float(a.b - b.b)) <= tol
    np.testing.assert_allclose(a.history["w_norm"], b.history["w_norm"], rtol=tol)
    assert a.w.dtype == dtype


def test_mseloss_without_the_half_trains_a_different_objective():
    """nn.MSELoss() + weight_decay=lam equals the scratch objective at lam/2 with lr doubled."""
    train, test, w0 = demo_problem(seed=0, dtype=torch.float64)
    lam, lr = 3.0, 0.003
    net = nn.Linear(200, 1).double()
    with torch.no_grad():
        net.weight.copy_(w0.reshape(1, -1))
        net.bias.zero_()
    opt = torch.optim.SGD(
        [{"params": [net.weight], "weight_decay": lam}, {"params": [net.bias]}], lr=lr
    )
    order = torch.Generator().manual_seed(0)
    x, y = train
    for _ in range(100):
        for idx in minibatches(20, 5, order):
            opt.zero_grad()
            nn.MSELoss()(net(x[idx]).squeeze(-1), y[idx]).backward()
            opt.step()
    naive = net.weight.detach()[0]
    ours = train_scratch(train, test, lam, w0=w0, lr=lr, seed=0).w
    equivalent = train_scratch(train, test, lam / 2, w0=w0, lr=2 * lr, seed=0).w
    assert (naive - equivalent).abs().max() < 1e-10
    # 100x beyond the 1e-5 tolerance within which scratch and concise agree
    assert (naive - ours).abs().max() > 1e-3


@pytest.mark.parametrize("trainer", [train_scratch, train_concise])
def test_one_full_batch_step_matches_the_closed_form_gradient(trainer):
    """w1 = w0 - lr (X^T r / n + lam w0), b1 = b0 - lr mean(r), computed in numpy."""
    x, y = synthetic_linear(8, 6, seed=4, dtype=torch.float64)
    w0 = torch.linspace(-1, 1, 6, dtype=torch.float64)
    lam, lr, b0 = 0.7, 0.05, 0.3
    fit = trainer((x, y), None, lam, w0=w0, b0=b0, lr=lr, batch_size=8, epochs=1)
    xn, yn, wn = x.numpy(), y.numpy(), w0.numpy()
    r = xn @ wn + b0 - yn
    np.testing.assert_allclose(fit.w.numpy(), wn - lr * (xn.T @ r / 8 + lam * wn), atol=1e-14)
    np.testing.assert_allclose(float(fit.b), b0 - lr * r.mean(), atol=1e-14)


@pytest.mark.parametrize("trainer", [train_scratch, train_concise])
def test_converges_to_scikit_learn_ridge(trainer):
    """mean(r^2)/2 + lam ||w||^2/2, times 2n, is Ridge's ||r||^2 + alpha ||w||^2, alpha = n lam."""
    n, lam = 200, 0.5
    x, y = synthetic_linear(n, 5, true_w=torch.arange(5.0), noise=0.5, seed=1, dtype=torch.float64)
    fit = trainer(
        (x, y), None, lam, w0=torch.zeros(5, dtype=torch.float64), lr=0.2, batch_size=n, epochs=500
    )
    ridge = Ridge(alpha=n * lam).fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(fit.w.numpy(), ridge.coef_, rtol=0, atol=1e-8)
    np.testing.assert_allclose(float(fit.b), ridge.intercept_, rtol=0, atol=1e-8)


def test_history_is_per_epoch_and_consistent_with_the_result():
    train, test, w0 = demo_problem(seed=1)
    fit = train_scratch(train, test, 3.0, w0=w0, epochs=7)
    assert {k: len(v) for k, v in fit.history.items()} == {
        "train_loss": 7,
        "test_loss": 7,
        "w_norm": 7,
    }
    assert fit.history["w_norm"][-1] == pytest.approx(float(fit.w.norm()), rel=1e-6)
    assert fit.history["test_loss"][-1] == pytest.approx(half_mse(*test, fit.w, fit.b), rel=1e-6)
    no_test = train_scratch(train, None, 3.0, w0=w0, epochs=2)
    assert "test_loss" not in no_test.history


def test_half_mse_against_numpy():
    x, y = synthetic_linear(9, 3, seed=0, dtype=torch.float64)
    w, b = (
        torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64),
        torch.tensor(0.4, dtype=torch.float64),
    )
    expected = np.mean((x.numpy() @ w.numpy() + 0.4 - y.numpy()) ** 2) / 2
    assert half_mse(x, y, w, b) == pytest.approx(expected, rel=1e-12)


def test_minibatches_partition_each_epoch():
    g = torch.Generator().manual_seed(0)
    batches = list(minibatches(12, 5, g))
    assert [len(b) for b in batches] == [5, 5, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(12))
    again = list(minibatches(12, 5, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lam": -1.0}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"w0": torch.zeros(3)}, "w0"),
        ({"test": (torch.zeros(4, 200), torch.zeros(4, 1))}, "test must be"),
        ({"test": (torch.zeros(4, 7), torch.zeros(4))}, "test must be"),
    ],
)
@pytest.mark.parametrize("trainer", [train_scratch, train_concise])
def test_bad_arguments_name_the_parameter(trainer, kwargs, name):
    train, test, w0 = demo_problem(seed=0)
    args = {"lam": 0.0, "w0": w0, "test": test, **kwargs}
    lam, test = args.pop("lam"), args.pop("test")
    with pytest.raises(ValueError, match=name):
        trainer(train, test, lam, **args)


@pytest.mark.parametrize("trainer", [train_scratch, train_concise])
def test_divergence_stops_at_the_epoch_it_happens(trainer):
    """SGD on lam ||w||^2 / 2 multiplies w by (1 - lr lam) each step: |1 - 0.003 * 1000| = 2."""
    train, test, w0 = demo_problem(seed=0)
    with pytest.raises(TrainingDiverged, match=r"lam = 1000, lr = 0\.003") as info:
        trainer(train, test, 1000.0, w0=w0)
    # ||w|| doubles 4 times an epoch (4 steps) from about 14 = 2^3.8; the loss, about
    # (x.w)^2 with |x.w| up to 2 ||w||, leaves float32 (3.4e38 = 2^128) when ||w|| > 2^63,
    # that is after (63 - 3.8) / 4 = 14.8 epochs
    assert 14 <= info.value.epoch <= 16
    stable = trainer(train, test, 600.0, w0=w0, epochs=5)  # |1 - 1.8| < 1: shrinks
    assert stable.history["w_norm"][-1] < stable.history["w_norm"][0]

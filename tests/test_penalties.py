"""Penalties, the fused gradient penalty, proximal L1 and decoupled decay against references."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso
from torch import nn

from regulab import (
    Penalty,
    decoupled_weight_decay_,
    elastic_net_penalty,
    group_lasso_penalty,
    l1_penalty,
    l2_penalty,
    param_groups,
    prox_l1_,
)


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, generator=g)]


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(
        3, (16,), generator=g
    )


def test_pure_penalties_match_python_loops():
    ps = tensors()
    values = [float(v) for p in ps for v in p.flatten()]
    assert float(l1_penalty(ps)) == pytest.approx(sum(abs(v) for v in values), rel=1e-6)
    assert float(l2_penalty(ps)) == pytest.approx(sum(v * v for v in values) / 2, rel=1e-6)
    expected = 0.3 * sum(abs(v) for v in values) + 0.7 * sum(v * v for v in values) / 2
    assert float(elastic_net_penalty(ps, 0.3)) == pytest.approx(expected, rel=1e-6)
    assert float(l1_penalty(ps[0])) == pytest.approx(float(ps[0].abs().sum()), rel=1e-12)


def test_elastic_net_times_alpha_is_scikit_learns_penalty():
    w = torch.tensor([0.5, -2.0, 0.0, 1.5], dtype=torch.float64)
    alpha, l1_ratio = 0.7, 0.25
    sklearn_penalty = (
        alpha * l1_ratio * np.abs(w.numpy()).sum()
        + 0.5 * alpha * (1 - l1_ratio) * np.square(w.numpy()).sum()
    )
    assert alpha * float(elastic_net_penalty(w, l1_ratio)) == pytest.approx(sklearn_penalty)


def test_group_lasso_is_the_sum_of_row_norms_and_channel_norms():
    g = torch.Generator().manual_seed(3)
    linear = torch.randn(5, 7, generator=g, dtype=torch.float64)
    conv = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    rows = sum(math.sqrt(sum(float(v) ** 2 for v in row)) for row in linear)
    filters = sum(math.sqrt(float((f**2).sum())) for f in conv)
    whole = math.sqrt(float((bias**2).sum()))
    assert float(group_lasso_penalty([linear, conv, bias])) == pytest.approx(
        rows + filters + whole, rel=1e-12
    )
    columns = sum(math.sqrt(float((linear[:, j] ** 2).sum())) for j in range(7))
    assert float(group_lasso_penalty(linear, dim=1)) == pytest.approx(columns, rel=1e-12)


def test_group_lasso_gradient_at_a_zero_group_is_zero_not_nan():
    w = torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    group_lasso_penalty(w).backward()
    assert torch.equal(w.grad[0], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(w.grad[1], torch.tensor([0.6, 0.8], dtype=torch.float64))


@pytest.mark.parametrize(("l1", "l2"), [(0.0, 0.3), (0.05, 0.0), (0.05, 0.3)])
def test_penalty_apply_equals_autograd_gradient_of_loss_plus_penalty(l1, l2):
    x, y = batch()
    reference, fused = mlp(), mlp()
    loss = nn.functional.cross_entropy(reference(x), y)
    params = list(reference.parameters())
    (loss + l1 * l1_penalty(params) + l2 * l2_penalty(params)).backward()

    nn.functional.cross_entropy(fused(x), y).backward()
    Penalty(fused.parameters(), l1=l1, l2=l2).apply_()
    for a, b in zip(reference.parameters(), fused.parameters(), strict=True):
        assert (a.grad - b.grad).abs().max() < 1e-6


def test_penalty_apply_builds_no_autograd_graph():
    model = mlp()
    x, y = batch()
    nn.functional.cross_entropy(model(x), y).backward()
    Penalty(model.parameters(), l1=0.1, l2=0.1).apply_()
    assert all(p.grad.grad_fn is None and not p.grad.requires_grad for p in model.parameters())


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_with_penalty_l2_equals_sgd_weight_decay(momentum):
    lam = 0.05
    ours, torchs = mlp(), mlp()
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=momentum)
    opt_torch = torch.optim.SGD(torchs.parameters(), lr=0.1, momentum=momentum, weight_decay=lam)
    penalty = Penalty(ours.parameters(), l2=lam)
    for step in range(10):
        x, y = batch(step)
        for model, opt in ((ours, opt_ours), (torchs, opt_torch)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if model is ours:
                penalty.apply_()
            opt.step()
    for a, b in zip(ours.parameters(), torchs.parameters(), strict=True):
        assert (a - b).abs().max() < 1e-6


def test_penalty_skips_the_no_decay_group_and_honours_group_strengths():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    groups = param_groups(model, 0.0)
    Penalty(groups, l2=0.5).apply_()
    for group in groups:
        for p in group["params"]:
            expected = 0.5 * p if group["penalize"] else torch.zeros_like(p)
            assert torch.equal(p.grad, expected)

    a = torch.ones(3, dtype=torch.float64)
    b = -torch.ones(2, dtype=torch.float64)
    a.grad, b.grad = torch.zeros(3, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    Penalty([{"params": [a], "l1": 2.0}, {"params": [b]}], l1=0.5).apply_()
    assert torch.equal(a.grad, torch.full((3,), 2.0, dtype=torch.float64))
    assert torch.equal(b.grad, torch.full((2,), -0.5, dtype=torch.float64))


def test_penalty_leaves_parameters_without_grad_alone_and_reports_its_value():
    w = torch.tensor([1.0, -2.0, 0.0])
    unused = torch.ones(2)
    w.grad = torch.zeros(3)
    penalty = Penalty([w, unused], l1=0.1, l2=0.2)
    penalty.apply_()
    assert unused.grad is None
    assert torch.allclose(w.grad, torch.tensor([0.3, -0.5, 0.0]))  # sign(0) adds nothing
    expected = 0.1 * (3 + 2) + 0.2 * (1 + 4 + 0 + 2) / 2
    assert float(penalty.value()) == pytest.approx(expected)
    assert "l1=0.1" in repr(penalty)


def test_keras_l2_c_is_lambda_two_c():
    c = 0.01
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    (c * w.square().sum()).backward()  # Keras: regularizers.l2(c) adds c * sum(w^2)
    ours = w.detach().clone()
    ours.grad = torch.zeros_like(ours)
    Penalty([ours], l2=2 * c).apply_()
    assert torch.allclose(w.grad, ours.grad, atol=1e-15)


def test_prox_l1_is_soft_thresholding():
    w = torch.tensor([-3.0, -0.5, -0.2, 0.0, 0.2, 0.5, 3.0], dtype=torch.float64)
    t = 0.5
    expected = [math.copysign(max(abs(v) - t, 0.0), v) for v in w.tolist()]
    prox_l1_([w], t)
    assert w.tolist() == pytest.approx(expected, abs=1e-15)
    assert int((w == 0).sum()) == 5
    before = w.clone()
    prox_l1_(w, 0.0)
    assert torch.equal(w, before)


def lasso_problem():
    g = torch.Generator().manual_seed(0)
    n, d = 60, 15
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.zeros(d, dtype=torch.float64)
    w_true[:4] = torch.tensor([2.0, -1.5, 1.0, 0.5], dtype=torch.float64)
    y = x @ w_true + 0.7 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def gradient_descent(x, y, l1, steps, proximal):
    """Full-batch GD on mean(r^2)/2 + l1 * ||w||_1 (bias free): ISTA or the subgradient."""
    n, d = x.shape
    w = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    design = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)
    lr = 1 / (float(torch.linalg.matrix_norm(design, ord=2)) ** 2 / n)
    opt = torch.optim.SGD([w, b], lr=lr)
    penalty = Penalty([w], l1=l1)
    for _ in range(steps):
        opt.zero_grad()
        ((x @ w + b - y).square().mean() / 2).backward()
        if not proximal:
            penalty.apply_()
        opt.step()
        if proximal:
            prox_l1_([w], lr * l1)
    return w.detach(), b.detach()


def test_proximal_gradient_converges_to_scikit_learn_lasso_with_the_same_zeros():
    x, y = lasso_problem()
    alpha = 0.3  # Lasso: ||y - Xw - b||^2 / (2n) + alpha ||w||_1, which is our l1 exactly
    lasso = Lasso(alpha=alpha, tol=1e-14, max_iter=100_000).fit(x.numpy(), y.numpy())
    w, b = gradient_descent(x, y, alpha, steps=3000, proximal=True)
    assert np.abs(w.numpy() - lasso.coef_).max() < 1e-4
    assert abs(float(b) - lasso.intercept_) < 1e-4
    assert np.array_equal(w.numpy() == 0, lasso.coef_ == 0)
    assert (lasso.coef_ == 0).sum() >= 5  # the comparison is about real zeros


def test_subgradient_l1_gives_no_exact_zeros():
    x, y = lasso_problem()
    w, _ = gradient_descent(x, y, 0.3, steps=3000, proximal=False)
    lasso = Lasso(alpha=0.3, tol=1e-14, max_iter=100_000).fit(x.numpy(), y.numpy())
    assert int((w == 0).sum()) == 0
    zero = torch.from_numpy(lasso.coef_ == 0)
    # the weights that should be zero keep jumping across it, by steps of about lr * l1
    n = x.shape[0]
    design = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)
    lr = 1 / (float(torch.linalg.matrix_norm(design, ord=2)) ** 2 / n)
    assert float(w[zero].abs().max()) < 2 * lr * 0.3


def adam_run(mode, lam=0.1, steps=15):
    model = mlp()
    if mode == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=lam)
    elif mode == "adam_coupled":
        opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=lam)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    penalty = Penalty(model.parameters(), l2=lam)
    for step in range(steps):
        x, y = batch(step)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if mode == "adam_decoupled":
            decoupled_weight_decay_(model.parameters(), lr=0.01, weight_decay=lam)
        if mode == "adam_penalty":
            penalty.apply_()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_adam_plus_decoupled_weight_decay_equals_adamw():
    assert (adam_run("adam_decoupled") - adam_run("adamw")).abs().max() < 1e-6


def test_adam_weight_decay_is_coupled_l2_not_adamw():
    coupled = adam_run("adam_coupled")
    assert (coupled - adam_run("adam_penalty")).abs().max() < 1e-6
    assert (coupled - adam_run("adamw")).abs().max() > 1e-3


def test_decoupled_decay_with_plain_sgd_equals_sgd_weight_decay():
    w_a = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    w_b = w_a.detach().clone().requires_grad_(True)
    opt_a = torch.optim.SGD([w_a], lr=0.1)
    opt_b = torch.optim.SGD([w_b], lr=0.1, weight_decay=0.5)
    for _ in range(5):
        for w, opt in ((w_a, opt_a), (w_b, opt_b)):
            opt.zero_grad()
            (w.sin().sum()).backward()
            if w is w_a:
                decoupled_weight_decay_([w], lr=0.1, weight_decay=0.5)
            opt.step()
    assert (w_a - w_b).abs().max() < 1e-12


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: Penalty([torch.ones(2)], l1=-1.0), "l1"),
        (lambda: Penalty([torch.ones(2)], l2=float("nan")), "l2"),
        (lambda: Penalty([{"params": [torch.ones(2)], "l2": -2.0}]), "l2"),
        (lambda: Penalty([{"weights": [torch.ones(2)]}]), "params"),
        (lambda: Penalty(3.0, l2=1.0), "params_or_groups"),
        (lambda: prox_l1_([torch.ones(2)], -0.1), "threshold"),
        (lambda: elastic_net_penalty([torch.ones(2)], 1.5), "l1_ratio"),
        (lambda: group_lasso_penalty([torch.ones(2, 2)], dim="rows"), "dim"),
        (lambda: l1_penalty("weights"), "params"),
        (lambda: decoupled_weight_decay_([torch.ones(2)], lr=0.1, weight_decay=-1), "weight_decay"),
    ],
)
def test_bad_arguments_name_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_penalty_applied_twice_uses_the_current_signs():
    w = torch.tensor([1.0, -2.0])
    penalty = Penalty([w], l1=0.5)
    w.grad = torch.zeros(2)
    penalty.apply_()
    w.mul_(-1)  # the weights change sign between steps
    w.grad = torch.zeros(2)
    penalty.apply_()
    assert torch.equal(w.grad, torch.tensor([-0.5, 0.5]))


def test_a_parameter_listed_twice_is_refused():
    w = torch.ones(2)
    with pytest.raises(ValueError, match="more than once"):
        Penalty([w, w], l2=1.0)
    with pytest.raises(ValueError, match="more than once"):
        Penalty([{"params": [w]}, {"params": [w]}], l2=1.0)


def test_named_parameters_get_a_hint():
    with pytest.raises(ValueError, match=r"not model.named_parameters\(\)"):
        Penalty(mlp().named_parameters(), l2=1.0)


def test_elastic_net_of_a_generator_keeps_both_terms():
    p = torch.ones(2)
    assert float(elastic_net_penalty((t for t in [p]), 0.5)) == pytest.approx(0.5 * 2 + 0.5 * 1)


def test_group_lasso_negative_dim_and_bad_dim():
    w = torch.tensor([[3.0, 0.0], [4.0, 1.0]])
    assert float(group_lasso_penalty(w, dim=-1)) == pytest.approx(5.0 + 1.0)  # columns
    with pytest.raises(ValueError, match="dim must be in"):
        group_lasso_penalty(w, dim=2)
    assert float(group_lasso_penalty([w, torch.ones(0, 3)], dim=0)) == pytest.approx(3 + 17**0.5)


def test_prox_l1_thresholds_every_tensor_including_0d():
    a, b, c = torch.tensor([0.3, -2.0]), torch.tensor([[1.5]]), torch.tensor(-0.7)
    prox_l1_([a, b, c], 0.5)
    assert torch.equal(a, torch.tensor([0.0, -1.5]))
    assert torch.equal(b, torch.tensor([[1.0]]))
    assert float(c) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="floating-point"):
        prox_l1_([torch.ones(2, dtype=torch.long)], 0.1)


def test_decoupled_decay_accepts_a_tensor_lr():
    w = torch.ones(3)
    decoupled_weight_decay_([w], lr=torch.tensor(0.1), weight_decay=0.5)
    assert torch.allclose(w, torch.full((3,), 0.95))

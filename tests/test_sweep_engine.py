"""fit_sweep against sequential `fit` runs, one per strength.

Reference: for each value, `regulab.fit` with torch.optim over `param_groups`,
`Penalty`, `prox_l1_` and `max_norm_` configured as that copy's strength asks;
every parameter and buffer (BatchNorm running statistics included) must agree
to 1e-5 in float32 and 1e-10 in float64. Stacked's metrics are checked against
`regulab.metrics` on `Stacked.model(k)` and numpy; the dropout noise of `vary`
statistically, from which hidden units a single step left untouched.
"""

import copy
import dataclasses
import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from regulab import (
    Dropout,
    Penalty,
    digits,
    hflip,
    inverse_sqrt,
    max_norm_,
    models,
    param_groups,
    prox_l1_,
    synthetic_linear,
)
from regulab.data.loader import TensorLoader
from regulab.metrics import evaluate, weight_stats
from regulab.recipe import schema
from regulab.sweep import linear
from regulab.sweep.engine import Settings, fit_sweep
from regulab.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}  # the engine's promise
LOADER_SEED = 3


@functools.cache
def _digits():
    x, y = digits()
    return x.unsqueeze(1), y  # (1797, 1, 8, 8)


def _images(n, start=0):
    x, y = _digits()
    return x[start : start + n], y[start : start + n]


def _regression(dtype=torch.float32, n=40, seed=0):
    """12 inputs, half of them irrelevant (true weight 0)."""
    true_w = torch.tensor([0.5] * 6 + [0.0] * 6, dtype=torch.float64)
    return synthetic_linear(n, 12, true_w=true_w, noise=0.1, seed=seed, dtype=dtype)


def _seeded(factory, seed=0):
    torch.manual_seed(seed)
    return factory()


def _reference(model, x, y, s: Settings, *, loader_seed=LOADER_SEED, batch_size=16):
    """One sequential `fit` run with the (scalar) strengths of s; returns (model, history)."""
    m = copy.deepcopy(model)
    o, pen, t, bn_s = s.optim, s.penalty, s.train, s.slim.sparsity
    groups = param_groups(m, o.weight_decay, no_decay=tuple(o.no_decay))
    if o.name == "sgd":
        opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    else:
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=o.lr, betas=tuple(o.betas))
    weights = [p for g in groups if g["penalize"] for p in g["params"]]
    l1_grad = pen.l1 if pen.l1_mode == "subgradient" else 0.0
    terms = [{"params": weights, "l2": pen.l2, "l1": l1_grad}]
    if bn_s:
        scales = [mod.weight for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
        terms.append({"params": scales, "l2": 0.0, "l1": bn_s})
    terms = [t for t in terms if t["params"]]  # a Penalty over no tensor is refused
    penalty = Penalty(terms) if terms and (pen.l2 or l1_grad or bn_s) else None
    after = []
    if pen.l1 and pen.l1_mode == "proximal":
        after.append(lambda: prox_l1_(weights, opt.param_groups[0]["lr"] * pen.l1))
    if pen.max_norm:
        dim = None if pen.max_norm_dim == -1 else pen.max_norm_dim
        after.append(lambda: max_norm_(weights, pen.max_norm, dim))
    history = fit(
        m, opt, TensorLoader(x, y, batch_size=batch_size, seed=loader_seed),
        epochs=t.epochs, loss=t.loss, penalty=penalty, after_step=after, schedule=s.schedule,
        clip_grad_norm=t.clip_grad_norm or None, augment=s.augment, seed=t.seed, eval_train=0,
    )  # fmt: skip
    return m, history


def _assert_same(ref: nn.Module, got: nn.Module, atol: float):
    """Every parameter and buffer, in order (names differ where mlp left out a p = 0 Dropout)."""
    a, b = ref.state_dict(), got.state_dict()
    assert len(a) == len(b), (list(a), list(b))
    for (name, p), q in zip(a.items(), b.values(), strict=True):
        assert p.shape == q.shape, name
        torch.testing.assert_close(q, p, rtol=0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


def _spread(stacked) -> float:
    """Largest difference between the first and the last copy: the strengths mattered."""
    return max((p[-1] - p[0]).abs().max().item() for p in stacked.params.values())


def _sweep_and_compare(model, param, values, x, y, s, *, fast=True, batch_size=16, refs=None):
    """fit_sweep, then each copy against its own sequential run; returns the Stacked."""
    atol = TOL[x.dtype]
    stacked = fit_sweep(
        model, param, values, TensorLoader(x, y, batch_size=batch_size, seed=LOADER_SEED), s,
        fast=fast,
    )  # fmt: skip
    assert stacked.diverged_epoch.tolist() == [0] * len(values)
    for k, v in enumerate(values):
        if param == "dropout":  # the same initial weights, built with that p
            ref_model, s_k = refs[k], s
        else:
            ref_model, s_k = model, s.with_strengths(**{param: v})
        ref, history = _reference(ref_model, x, y, s_k, batch_size=batch_size)
        assert history.status == "completed"
        _assert_same(ref, stacked.model(k), atol)
    return stacked


@pytest.fixture
def linear_calls(monkeypatch):
    """Counts the calls of the linear-regression fast path."""
    calls = []
    original = linear.train

    def spy(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(linear, "train", spy)
    return calls


# --- linear regression: fast path and generic path -------------------------------------------

LINEAR_CASES = {  # param, l1_mode, loss, the other strengths held fixed
    "l2": ("l2", "subgradient", "half_mse", {"weight_decay": 0.05}),
    "weight_decay": ("weight_decay", "subgradient", "mse", {"l2": 0.05}),
    "l1-subgradient": ("l1", "subgradient", "half_mse", {"l2": 0.02}),
    "l1-proximal": ("l1", "proximal", "mse", {"weight_decay": 0.02}),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(LINEAR_CASES))
def test_linear_regression_fast_and_generic_paths_equal_fit(case, dtype, linear_calls):
    param, mode, loss, fixed = LINEAR_CASES[case]
    x, y = _regression(dtype)
    model = _seeded(lambda: models.linear(12)).to(dtype)
    s = Settings(
        optim=schema.Optim(lr=0.05, momentum=0.5, nesterov=param == "l2"),
        penalty=schema.Penalty(l1_mode=mode), train=schema.Train(epochs=4, loss=loss, seed=2),
        schedule=inverse_sqrt(0.3),
    ).with_strengths(**fixed)  # fmt: skip
    values = [0.0, 0.03, 0.3, 1.0]
    fast = _sweep_and_compare(model, param, values, x, y, s, batch_size=8, fast=True)
    assert linear_calls == [param]  # the fast path did the work
    generic = _sweep_and_compare(model, param, values, x, y, s, batch_size=8, fast=False)
    assert linear_calls == [param]  # and fast=False kept it out
    assert _spread(fast) > 1e-2 and _spread(generic) > 1e-2
    if mode == "proximal":  # soft-thresholding gives exact zeros at the largest strength
        assert fast.weight_stats()[1][-1] >= 0.25
        assert generic.weight_stats()[1][-1] >= 0.25


def test_fast_path_is_not_used_where_it_does_not_apply(linear_calls):
    x, y = _regression()
    model = _seeded(lambda: models.linear(12))
    s = Settings(optim=schema.Optim(lr=0.05), train=schema.Train(epochs=1, loss="half_mse"))
    loader = TensorLoader(x, y, batch_size=8)
    adam = dataclasses.replace(s, optim=schema.Optim(name="adam", lr=0.05))
    for settings in (adam, dataclasses.replace(s, penalty=schema.Penalty(max_norm=1))):
        fit_sweep(model, "l2", [0.0, 0.1], loader, settings)
    two_outputs = TensorLoader(x, torch.stack([y, y], 1), batch_size=8)
    fit_sweep(_seeded(lambda: models.linear(12, 2)), "l2", [0.1], two_outputs, s)
    assert linear_calls == []
    fit_sweep(model, "l2", [0.0, 0.1], loader, s)
    assert linear_calls == ["l2"]


def test_fast_path_respects_no_decay():
    x, y = _regression()
    model = _seeded(lambda: models.linear(12))
    s = Settings(
        optim=schema.Optim(lr=0.05, no_decay=["1.weight"]),
        train=schema.Train(epochs=2, loss="half_mse"),
    )
    _sweep_and_compare(model, "l2", [0.0, 1.0], x, y, s, batch_size=8)


# --- MLP with dropout, optimizers, schedule, clipping --------------------------------------

MLP_CASES = {  # [optim] fields, param, values, the other strengths held fixed
    "sgd-nesterov": (
        {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
        "l2", [0.0, 1e-2, 0.3], {"weight_decay": 1e-3, "l1": 1e-4},
    ),
    "adam-coupled": (
        {"name": "adam", "lr": 0.01}, "l2", [0.0, 1e-2, 0.3], {"weight_decay": 1e-2},
    ),
    "adam-wd": ({"name": "adam", "lr": 0.01}, "weight_decay", [0.0, 1e-2, 0.3], {}),
    "adamw-decoupled": (
        {"name": "adamw", "lr": 0.01, "betas": [0.8, 0.99]},
        "weight_decay", [0.0, 0.1, 3.0], {"l2": 1e-3},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MLP_CASES))
def test_mlp_with_dropout_schedule_and_clipping_equals_fit(case):
    optim, param, values, fixed = MLP_CASES[case]
    x, y = _images(96)
    model = _seeded(lambda: models.mlp([64, 32, 10], dropout=0.3))
    s = Settings(
        optim=schema.Optim(**optim), train=schema.Train(epochs=3, clip_grad_norm=0.3, seed=7),
        schedule=inverse_sqrt(0.5),
    ).with_strengths(**fixed)  # fmt: skip
    stacked = _sweep_and_compare(model, param, values, x, y, s)
    assert _spread(stacked) > 1e-3


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float32,
        torch.float64,
    ],
    ids=["f32", "f64"],
)
def test_dropout_sweep_equals_fit_of_the_model_built_with_that_p(dtype):
    x, y = _images(64)
    x = x.to(dtype)
    values = [0.0, 0.2, 0.5]
    model = _seeded(lambda: models.mlp([64, 32, 16, 10], dropout=0.5)).to(dtype)
    refs = [_seeded(lambda p=p: models.mlp([64, 32, 16, 10], dropout=p)).to(dtype) for p in values]
    assert len(refs[0].state_dict()) == len(model.state_dict())  # p = 0: no Dropout, same tensors
    s = Settings(optim=schema.Optim(lr=0.1, momentum=0.5), train=schema.Train(epochs=2, seed=1))
    stacked = _sweep_and_compare(model, "dropout", values, x, y, s, refs=refs)
    assert _spread(stacked) > 1e-3
    for k, p in enumerate(values):  # each copy carries its own p
        drops = [m for m in stacked.model(k).modules() if type(m) is Dropout]
        assert len(drops) == 2 and all(float(d.p) == pytest.approx(p) for d in drops)
    for m in model.modules():  # the caller's model is left as it was
        if type(m) is Dropout:
            assert m.p == 0.5


# --- BatchNorm: running statistics, bn_sparsity, max-norm ----------------------------------


@pytest.mark.parametrize(
    "param, values, fixed",
    [
        ("bn_sparsity", [0.0, 0.01, 0.3], {"l2": 1e-3}),
        ("weight_decay", [0.0, 0.01, 0.3], {"bn_sparsity": 0.01}),
    ],
)
def test_vgg_bn_with_running_stats_equals_fit(param, values, fixed):
    x, y = _images(48)
    model = _seeded(lambda: models.vgg_bn([4, "M", 8, "M"], dropout=0.2))
    flip = functools.partial(hflip, p=0.5)  # draws from torch's generator, as dropout does
    s = Settings(
        optim=schema.Optim(lr=0.05, momentum=0.9),
        train=schema.Train(epochs=2, clip_grad_norm=2.0, seed=2), augment=flip,
    ).with_strengths(**fixed)  # fmt: skip
    stacked = _sweep_and_compare(model, param, values, x, y, s)
    bn = stacked.model(0).features[1]
    assert bn.num_batches_tracked.item() == 2 * 3  # the running stats were trained
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    if param == "bn_sparsity":  # the strength shrank the scales
        scales = stacked.params["features.1.weight"]
        assert scales[-1].abs().sum() < scales[0].abs().sum() - 0.1


@pytest.mark.parametrize("dim, bound", [(None, 2.0), (0, 0.8)])
def test_max_norm_projection_equals_fit(dim, bound):
    x, y = _images(96)
    model = _seeded(lambda: models.mlp([64, 32, 10]))
    s = Settings(
        optim=schema.Optim(lr=0.5), train=schema.Train(epochs=3, seed=2),
        penalty=schema.Penalty(max_norm=bound, max_norm_dim=-1 if dim is None else dim),
    )  # fmt: skip
    stacked = _sweep_and_compare(model, "l2", [0.0, 0.01, 0.1], x, y, s)
    for name in ("1.weight", "3.weight"):
        w = stacked.params[name].detach()  # (K, out, in)
        norms = w.flatten(1).norm(dim=1) if dim is None else w.norm(dim=2)
        assert norms.max() <= bound * (1 + 1e-6)
        assert norms[0].max() >= bound * (1 - 1e-6)  # the constraint was active


# --- vary: own batch order, own initial weights, own dropout noise ---------------------------


@pytest.mark.parametrize("own_weights", [False, True])
def test_vary_copy_k_equals_fit_with_loader_seed_plus_first_plus_k(own_weights):
    x, y = _images(64)
    values = [0.0, 0.01, 0.1]
    build = lambda seed: _seeded(lambda: models.mlp([64, 16, 10]), seed)  # noqa: E731
    inits = [build(10 + k) for k in range(3)] if own_weights else [build(10)] * 3
    s = Settings(
        optim=schema.Optim(lr=0.2, momentum=0.5), train=schema.Train(epochs=2, seed=4),
        vary=True, first=2,
    )  # fmt: skip
    stacked = fit_sweep(
        inits if own_weights else inits[0], "l2", values,
        TensorLoader(x, y, batch_size=16, seed=LOADER_SEED), s,
    )  # fmt: skip
    for k, v in enumerate(values):
        s_k = dataclasses.replace(s.with_strengths(l2=v), vary=False)
        ref, _ = _reference(inits[k], x, y, s_k, loader_seed=LOADER_SEED + 2 + k)
        _assert_same(ref, stacked.model(k), TOL[torch.float32])
    # without vary the copies would all have seen LOADER_SEED's order
    ref, _ = _reference(
        inits[1], x, y, dataclasses.replace(s.with_strengths(l2=values[1]), vary=False)
    )
    assert max((a - b).abs().max() for a, b in zip(
        ref.state_dict().values(), stacked.model(1).state_dict().values(), strict=True
    )) > 1e-3  # fmt: skip


def _dropped_units(vary: bool, k: int = 4, hidden: int = 400, p: float = 0.5):
    """(k, hidden) bool: which hidden units dropout zeroed in one SGD step on one example.

    With tanh no unit is dead, so a unit's incoming weights stay exactly unchanged
    if and only if dropout zeroed it.
    """
    x, y = _images(1)
    model = _seeded(lambda: models.mlp([64, hidden, 10], dropout=p, activation="tanh"))
    s = Settings(optim=schema.Optim(lr=0.5), train=schema.Train(epochs=1, seed=5), vary=vary)
    stacked = fit_sweep(model, "dropout", [p] * k, TensorLoader(x, y, batch_size=1), s)
    w = stacked.params["1.weight"].detach()
    return (w == model[1].weight.detach()).all(dim=2)


def test_same_p_without_vary_shares_the_dropout_masks():
    dropped = _dropped_units(vary=False)
    assert (dropped == dropped[0]).all()
    assert abs(dropped[0].double().mean().item() - 0.5) < 4 * 0.025  # 4 sigma, n = 400


def test_same_p_with_vary_draws_each_copy_its_own_masks():
    dropped = _dropped_units(vary=True).double()
    sigma = (0.25 / dropped.shape[1]) ** 0.5
    assert ((dropped.mean(1) - 0.5).abs() < 4 * sigma).all()  # each copy drops p of the units
    for i in range(len(dropped)):
        for j in range(i):  # independent masks agree on p^2 + (1 - p)^2 = 1/2 of the units
            agree = (dropped[i] == dropped[j]).double().mean().item()
            assert abs(agree - 0.5) < 4 * sigma


def test_vary_with_an_image_augmentation_trains():
    x, y = _images(32)
    model = _seeded(lambda: models.vgg_bn([4, "M"]))
    s = Settings(
        optim=schema.Optim(lr=0.05), train=schema.Train(epochs=1), vary=True,
        augment=functools.partial(hflip, p=0.5),
    )  # fmt: skip
    stacked = fit_sweep(model, "l2", [0.0, 0.1], TensorLoader(x, y, batch_size=16), s)
    assert stacked.diverged_epoch.tolist() == [0, 0]


# --- metrics ----------------------------------------------------------------------------


def _per_example(model, x, y, loss):
    with torch.no_grad():
        out = model(x)
    if loss == "cross_entropy":
        return F.cross_entropy(out, y, reduction="none").double().numpy()
    return ((out.squeeze(-1) - y) ** 2).double().numpy()


def test_evaluate_equals_metrics_evaluate_per_copy_classification():
    x, y = _images(48)
    xt, yt = _images(61, start=500)
    model = _seeded(lambda: models.vgg_bn([4, "M", 8, "M"], dropout=0.3))
    s = Settings(optim=schema.Optim(lr=0.1, momentum=0.9), train=schema.Train(epochs=2, seed=1))
    stacked = fit_sweep(model, "l2", [0.0, 0.05, 0.5], TensorLoader(x, y, batch_size=16), s)
    buffers = {k: v.clone() for k, v in stacked.buffers.items()}
    got = stacked.evaluate((xt, yt), "cross_entropy", batch_size=7)  # 9 batches, the last of 5
    for k in range(3):
        m = stacked.model(k)
        loss, acc = evaluate(m, (xt, yt), "cross_entropy")  # eval mode: running stats, no dropout
        each = _per_example(m, xt, yt, "cross_entropy")
        assert got["loss"][k].item() == pytest.approx(loss, rel=1e-6)
        assert got["accuracy"][k].item() == pytest.approx(acc, abs=1e-12)
        se = each.std(ddof=1) / np.sqrt(len(each))
        assert got["loss_se"][k].item() == pytest.approx(se, rel=1e-5)
    assert len(set(got["loss"].tolist())) == 3
    for name, b in stacked.buffers.items():  # evaluation left the running stats alone
        assert torch.equal(b, buffers[name]), name


def test_evaluate_regression_has_no_accuracy():
    x, y = _regression()
    xt, yt = _regression(n=30, seed=1)
    model = _seeded(lambda: models.linear(12))
    s = Settings(optim=schema.Optim(lr=0.05), train=schema.Train(epochs=3, loss="half_mse"))
    stacked = fit_sweep(model, "l2", [0.0, 1.0], TensorLoader(x, y, batch_size=8), s)
    got = stacked.evaluate((xt, yt), "mse", batch_size=8)
    assert got["accuracy"] is None
    for k in range(2):
        each = _per_example(stacked.model(k), xt, yt, "mse")
        assert got["loss"][k].item() == pytest.approx(each.mean(), rel=1e-6)
        assert got["loss_se"][k].item() == pytest.approx(
            each.std(ddof=1) / np.sqrt(len(each)), rel=1e-5
        )


def test_weight_stats_equal_metrics_weight_stats():
    x, y = _images(96)
    mlp = _seeded(lambda: models.mlp([64, 32, 10]))
    s = Settings(
        optim=schema.Optim(lr=0.5), penalty=schema.Penalty(l1_mode="proximal"),
        train=schema.Train(epochs=2),
    )  # fmt: skip
    sparse = fit_sweep(mlp, "l1", [0.0, 1e-3, 2e-2], TensorLoader(x, y, batch_size=16), s)
    vgg = _seeded(lambda: models.vgg_bn([4, "M", 8, "M"]))
    one_epoch = Settings(train=schema.Train(epochs=1))
    conv = fit_sweep(vgg, "l2", [0.0, 0.5], TensorLoader(x, y, batch_size=16), one_epoch)
    for stacked in (sparse, conv):
        norms, zeros = stacked.weight_stats()
        for k in range(stacked.k):
            norm, zero = weight_stats(stacked.model(k))  # ndim >= 2: not biases or BN scales
            assert norms[k].item() == pytest.approx(norm, rel=1e-6)
            assert zeros[k].item() == pytest.approx(zero, abs=1e-12)
    assert sparse.weight_stats()[1][0] == 0 and sparse.weight_stats()[1][-1] > 0.1


# --- divergence ------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_diverging_copies_are_flagged_and_the_others_still_equal_fit(fast):
    x, y = _regression()
    model = _seeded(lambda: models.linear(12))
    values = [0.0, 0.1, 60.0, 1e4, 1e6]  # lr * l2 > 2: the iteration grows, faster for larger
    s = Settings(optim=schema.Optim(lr=0.1), train=schema.Train(epochs=6, loss="half_mse", seed=2))
    loader = TensorLoader(x, y, batch_size=8, seed=LOADER_SEED)
    stacked = fit_sweep(model, "l2", values, loader, s, fast=fast)
    expected = []
    for k, v in enumerate(values):
        ref, history = _reference(model, x, y, s.with_strengths(l2=v), batch_size=8)
        if history.status == "completed":
            expected.append(0)
            _assert_same(ref, stacked.model(k), TOL[torch.float32])
        else:
            expected.append(len(history.rows) + 1)  # the epoch fit found not finite
    assert expected == [0, 0, 6, 2, 1]  # the case is what it is meant to be
    assert stacked.diverged_epoch.tolist() == expected


def test_diverging_mlp_copies_do_not_spoil_the_others():
    x, y = _images(64)
    model = _seeded(lambda: models.mlp([64, 16, 10], dropout=0.2))
    values = [0.0, 0.1, 1e4, 1e6]
    s = Settings(  # (clipping would tame them)
        optim=schema.Optim(lr=0.1, momentum=0.5), train=schema.Train(epochs=4, seed=2)
    )
    stacked = fit_sweep(model, "l2", values, TensorLoader(x, y, batch_size=16, seed=LOADER_SEED), s)
    assert stacked.diverged_epoch[:2].tolist() == [0, 0]
    assert (stacked.diverged_epoch[2:] > 0).all()
    for k in (0, 1):
        ref, _ = _reference(model, x, y, s.with_strengths(l2=values[k]))
        _assert_same(ref, stacked.model(k), TOL[torch.float32])


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, param, values, match",
    [
        ("mlp", "l3", [0.1], r"param must be one of .*'l2'.*got 'l3'"),
        ("mlp", "l2", [], "values must hold at least one strength"),
        ("mlp", "l1", [0.1, -1.0], r"l1 must be a finite number >= 0; got -1.0"),
        ("dropout", "dropout", [0.2, 1.0], r"dropout p must be in \[0, 1\); got 1.0"),
        ("mlp", "dropout", [0.2], "param 'dropout' needs a model with Dropout layers"),
        ("mlp", "bn_sparsity", [0.2], "param 'bn_sparsity' needs a model with BatchNorm"),
        ("list", "l2", [0.1, 0.2, 0.3], "model: got 2 models for 3 values"),
    ],
)
def test_bad_input_names_the_parameter(model, param, values, match):
    x, y = _images(16)
    mlp = models.mlp([64, 8, 10], dropout=0.5 if model == "dropout" else 0.0)
    given = [mlp, mlp] if model == "list" else mlp
    with pytest.raises(ValueError, match=match):
        one_epoch = Settings(train=schema.Train(epochs=1))
        fit_sweep(given, param, values, TensorLoader(x, y, batch_size=8), one_epoch)


def test_bad_settings_name_the_field():
    x, y = _images(16)
    loader = TensorLoader(x, y, batch_size=8)
    mlp = models.mlp([64, 8, 10])
    for field, value, section in (
        ("optim.name", "lbfgs", {"optim": schema.Optim(name="lbfgs")}),
        ("train.loss", "hinge", {"train": schema.Train(epochs=1, loss="hinge")}),
        ("penalty.l1_mode", "ista", {"penalty": schema.Penalty(l1_mode="ista")}),
        ("slim.sparsity_mode", "ista", {"slim": schema.Slim(sparsity_mode="ista")}),
    ):
        settings = Settings(**{"train": schema.Train(epochs=1), **section})
        with pytest.raises(ValueError, match=f"settings.{field} must be one of .*got '{value}'"):
            fit_sweep(mlp, "l2", [0.1], loader, settings)


def test_with_strengths_writes_the_recipe_field_sweepable_names():
    base = Settings()
    s = base.with_strengths(l2=0.1, weight_decay=0.2, l1=0.3, bn_sparsity=0.4)
    assert (s.penalty.l2, s.optim.weight_decay, s.penalty.l1, s.slim.sparsity) == (
        0.1, 0.2, 0.3, 0.4,
    )  # fmt: skip
    assert (base.penalty.l2, base.slim.sparsity) == (0.0, 0.0)  # a copy: base is untouched
    with pytest.raises(ValueError, match=r"strength must be one of .*got 'l3'"):
        Settings().with_strengths(l3=0.1)
    with pytest.raises(ValueError, match=r"'dropout' is model\.dropout"):
        Settings().with_strengths(dropout=0.1)


def test_the_small_linear_fast_path_leaves_the_thread_count_as_it_was():
    x, y = _regression()
    model = _seeded(lambda: models.linear(12))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit_sweep(model, "l2", [0.0, 0.1], TensorLoader(x, y, batch_size=8, seed=0),
                  Settings(optim=schema.Optim(lr=0.01),
                           train=schema.Train(epochs=2, loss="half_mse")))  # fmt: skip
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


# --- torch-native parts: nn.Dropout layers, DataLoaders, loss callables, batch_fn ------------


class _ChannelDropoutReference(nn.Module):
    """Channel dropout written out: a uniform draw per (example, channel), kept if >= p."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[:2] + (1,) * (x.ndim - 2)) >= self.p
        return x * keep / (1 - self.p)


class _ConvNet(nn.Module):
    """A user's model with torch's own dropout layers."""

    def __init__(self, p=0.5):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.drop2d = nn.Dropout2d(p)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 64, 16), nn.ReLU())
        self.drop = nn.Dropout(p)
        self.out = nn.Linear(16, 10)

    def forward(self, x):
        return self.out(self.drop(self.head(self.drop2d(torch.relu(self.conv(x))))))


def test_dropout_sweep_swaps_torch_dropout_layers_on_copies_and_equals_fit():
    x, y = _images(64)
    values = [0.0, 0.2, 0.5]
    model = _seeded(_ConvNet)
    s = Settings(optim=schema.Optim(lr=0.05, momentum=0.5), train=schema.Train(epochs=2, seed=1))
    refs = []
    for p in values:
        ref = copy.deepcopy(model)
        ref.drop2d, ref.drop = _ChannelDropoutReference(p), Dropout(p)
        refs.append(ref)
    stacked = _sweep_and_compare(model, "dropout", values, x, y, s, refs=refs)
    assert _spread(stacked) > 1e-3
    assert type(model.drop2d) is nn.Dropout2d and model.drop2d.p == 0.5  # the caller's model
    assert type(model.drop) is nn.Dropout and model.drop.p == 0.5


@pytest.mark.parametrize("layer, unbatched", [(nn.Dropout1d, 2), (nn.Dropout2d, None),
                                               (nn.Dropout3d, 4)])  # fmt: skip
def test_swap_dropout_gives_channel_dropout_torch_p_and_one_example_ndim(layer, unbatched):
    from regulab.layers import ChannelDropout
    from regulab.sweep.native import swap_dropout

    model = nn.Sequential(layer(0.3), nn.Dropout(0.2))
    assert swap_dropout(model) == 2
    assert [type(m) for m in model] == [ChannelDropout, Dropout]
    assert (model[0].p, model[0].unbatched, model[1].p) == (0.3, unbatched, 0.2)


def test_alpha_dropout_is_refused_by_name():
    x, y = _images(16)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.SELU(), nn.AlphaDropout(0.1),
                          nn.Linear(8, 10))  # fmt: skip
    with pytest.raises(ValueError, match=r"layer '3' is AlphaDropout, which a sweep cannot"):
        fit_sweep(model, "dropout", [0.1], TensorLoader(x, y, batch_size=8), Settings())


def test_a_strength_sweep_keeps_torch_dropout_and_equals_fit():
    x, y = _images(64)
    model = _seeded(_ConvNet)
    s = Settings(optim=schema.Optim(lr=0.05), train=schema.Train(epochs=2, seed=3))
    _sweep_and_compare(model, "l2", [0.0, 0.1], x, y, s)


def _shuffled(x, y, batch_size=16):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)


def test_a_dataloader_is_iterated_each_epoch_as_fit_iterates_it():
    x, y = _images(64)
    model = _seeded(lambda: models.mlp([64, 16, 10], dropout=0.2))
    s = Settings(optim=schema.Optim(lr=0.1, momentum=0.5), train=schema.Train(epochs=3, seed=2))
    values = [0.0, 0.05]
    stacked = fit_sweep(model, "l2", values, _shuffled(x, y), s)
    for k, v in enumerate(values):  # fit reseeds torch before iterating: the same order
        ref = _fit_on(model, _shuffled(x, y), s.with_strengths(l2=v))
        _assert_same(ref, stacked.model(k), TOL[torch.float32])


def _fit_on(model, train, s, **kwargs):
    """fit of a copy of model on train (any loader) with the l2 and loss of s."""
    m = copy.deepcopy(model)
    groups = param_groups(m, 0.0)
    opt = torch.optim.SGD(groups, lr=s.optim.lr, momentum=s.optim.momentum)
    weights = [p for g in groups if g["penalize"] for p in g["params"]]
    penalty = Penalty([{"params": weights, "l2": s.penalty.l2}]) if s.penalty.l2 else None
    history = fit(m, opt, train, epochs=s.train.epochs, loss=s.loss_function(), penalty=penalty,
                  seed=s.train.seed, eval_train=0, **kwargs)  # fmt: skip
    assert history.status == "completed"
    return m


def test_train_that_the_engine_cannot_iterate_is_refused_saying_what_to_pass():
    x, y = _images(32)
    model = models.mlp([64, 8, 10])
    s = Settings(train=schema.Train(epochs=1))
    with pytest.raises(ValueError, match=r"train: vary=True .* needs a TensorLoader; got Data"):
        fit_sweep(model, "l2", [0.0], _shuffled(x, y), dataclasses.replace(s, vary=True))
    with pytest.raises(TypeError, match=r"got a tuple of tensors: pass TensorLoader\(x, y"):
        fit_sweep(model, "l2", [0.0], (x, y), s)
    with pytest.raises(TypeError, match=r"train must be .* got int"):
        fit_sweep(model, "l2", [0.0], 3, s)


def test_evaluate_takes_any_iterable_of_batches():
    x, y = _images(96)
    model = _seeded(lambda: models.mlp([64, 16, 10]))
    s = Settings(optim=schema.Optim(lr=0.1), train=schema.Train(epochs=1))
    stacked = fit_sweep(model, "l2", [0.0, 0.5], TensorLoader(x, y, batch_size=16), s)
    xt, yt = _images(70, start=300)
    want = stacked.evaluate((xt, yt), "cross_entropy", batch_size=32)
    loader = DataLoader(TensorDataset(xt, yt), batch_size=32)
    batches = ((xt[i : i + 32], yt[i : i + 32]) for i in range(0, 70, 32))
    dicts = [{"x": a, "y": b} for a, b in loader]
    for data, kwargs in ((loader, {}), (batches, {}),
                         (dicts, {"batch_fn": lambda b: (b["x"], b["y"])})):  # fmt: skip
        got = stacked.evaluate(data, "cross_entropy", **kwargs)
        for key in ("loss", "loss_se", "accuracy"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-12)


def _binary(n=64, start=0):
    x, y = _images(n, start)
    return x, (y % 2).float()[:, None]  # odd digits: (n, 1) 0/1 targets


LOSS_CASES = {
    "weighted_cross_entropy": lambda: (
        nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, 10)),
        _images,
        10,
    ),
    "bce_with_logits": lambda: (nn.BCEWithLogitsLoss(), _binary, 1),
}


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_a_loss_callable_trains_and_evaluates_as_fit_and_metrics_do(case):
    loss, data, outputs = LOSS_CASES[case]()
    x, y = data(64)
    model = _seeded(lambda: models.mlp([64, 16, outputs], dropout=0.2))
    s = Settings(optim=schema.Optim(lr=0.2, momentum=0.5), train=schema.Train(epochs=2, seed=4),
                 loss=loss)  # fmt: skip
    values = [0.0, 0.01, 0.3]
    stacked = fit_sweep(model, "l2", values, TensorLoader(x, y, batch_size=16, seed=LOADER_SEED), s)
    xt, yt = data(80, 400)
    got = stacked.evaluate((xt, yt), loss, batch_size=32)
    for k, v in enumerate(values):
        ref = _fit_on(model, TensorLoader(x, y, batch_size=16, seed=LOADER_SEED),
                      s.with_strengths(l2=v))  # fmt: skip
        _assert_same(ref, stacked.model(k), TOL[torch.float32])
        mean, accuracy = evaluate(stacked.model(k), (xt, yt), loss, batch_size=32)
        assert got["loss"][k].item() == pytest.approx(mean, rel=1e-6)
        assert got["accuracy"][k].item() == pytest.approx(accuracy, abs=1e-12)
        with torch.no_grad():
            out = stacked.model(k)(xt)
        each = np.array([loss(out[i : i + 1], yt[i : i + 1]).item() for i in range(len(xt))])
        se = each.std(ddof=1) / np.sqrt(len(each))
        assert got["loss_se"][k].item() == pytest.approx(se, rel=1e-5)
    assert _spread(stacked) > 1e-3


def test_accumulated_gradients_equal_fit_with_accumulate():
    x, y = _images(80)  # 5 batches of 16: steps of 2 + 2 + a trailing 1
    model = _seeded(lambda: models.mlp([64, 16, 10], dropout=0.2))
    train = schema.Train(epochs=2, seed=1)
    train.accumulate = 2  # a field of schema.Train, set as an attribute for older schemas
    s = Settings(optim=schema.Optim(lr=0.1, momentum=0.5), train=train, schedule=inverse_sqrt(0.5))
    values = [0.0, 0.1]
    stacked = fit_sweep(model, "l2", values, TensorLoader(x, y, batch_size=16, seed=LOADER_SEED), s)
    for k, v in enumerate(values):
        ref = _fit_on(model, TensorLoader(x, y, batch_size=16, seed=LOADER_SEED),
                      s.with_strengths(l2=v), accumulate=2, schedule=s.schedule)  # fmt: skip
        _assert_same(ref, stacked.model(k), TOL[torch.float32])


class _Keywords(nn.Module):
    """A model called with keyword inputs, model(image=x)."""

    def __init__(self):
        super().__init__()
        self.mlp = models.mlp([64, 16, 10])

    def forward(self, image):
        return self.mlp(image)


@pytest.mark.parametrize("keywords", [False, True], ids=["tensor", "dict-inputs"])
def test_dict_batches_with_a_batch_fn_equal_fit_with_that_batch_fn(keywords):
    x, y = _images(48)
    dicts = DataLoader([{"image": a, "label": b} for a, b in zip(x, y, strict=True)],
                       batch_size=16)  # fmt: skip
    if keywords:  # inputs as a dict: model(**inputs)
        batch_fn = lambda b: ({"image": b["image"]}, b["label"])  # noqa: E731
        model = _seeded(_Keywords)
    else:
        batch_fn = lambda b: (b["image"], b["label"])  # noqa: E731
        model = _seeded(lambda: models.mlp([64, 16, 10]))
    s = Settings(optim=schema.Optim(lr=0.1), train=schema.Train(epochs=2), batch_fn=batch_fn)
    stacked = fit_sweep(model, "l2", [0.0, 0.2], dicts, s)
    for k, v in enumerate([0.0, 0.2]):
        ref = _fit_on(model, dicts, s.with_strengths(l2=v), batch_fn=batch_fn)
        _assert_same(ref, stacked.model(k), TOL[torch.float32])
    got = stacked.evaluate(dicts, "cross_entropy", batch_fn=batch_fn)
    for k in range(2):
        loss, _ = evaluate(stacked.model(k), dicts, "cross_entropy", batch_fn=batch_fn)
        assert got["loss"][k].item() == pytest.approx(loss, rel=1e-6)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("precision", "bf16", r"settings.train.precision must be 'fp32' \(the stacked copies "
                              r"train without autocast\); got 'bf16'"),
        ("loss", "losses.py:focal", r"settings.train.loss .*got 'losses.py:focal' \(a loss of "
                                    r"your own: Settings\(loss=callable\)\)"),
        ("batch_fn", "batches:pair", r"settings.train.batch_fn 'batches:pair' names code"),
        ("accumulate", 0, r"settings.train.accumulate must be a positive integer"),
    ],
)  # fmt: skip
def test_what_the_stacked_step_cannot_honour_is_refused_by_name(field, value, match):
    x, y = _images(16)
    train = schema.Train(epochs=1)
    setattr(train, field, value)
    with pytest.raises(ValueError, match=match):
        fit_sweep(models.mlp([64, 8, 10]), "l2", [0.0], TensorLoader(x, y, batch_size=8),
                  Settings(train=train))  # fmt: skip


def test_fit_sweep_leaves_the_callers_random_state_alone():
    x, y = _images(32)
    model = _seeded(lambda: models.mlp([64, 8, 10], dropout=0.5))
    torch.manual_seed(7)
    state = torch.get_rng_state()
    fit_sweep(model, "dropout", [0.1, 0.5], _shuffled(x, y), Settings(train=schema.Train(epochs=2)))
    assert torch.equal(torch.get_rng_state(), state)

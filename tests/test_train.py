"""`fit` against independent references.

References: a hand-written loop over the same TensorLoader batches (plain
torch.optim steps, F.cross_entropy, torch.nn.utils.clip_grad_norm_,
SGD's own weight_decay), scikit-learn's Lasso (proximal L1), the demo's
`train_concise` fed the same minibatch order, closed-form schedules, and
metrics recomputed directly on the full tensors (numpy for weight norms).
"""

import copy
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso
from torch import nn
from torch.nn import functional as F

from regulab import (
    EarlyStopping,
    Penalty,
    checkpoint,
    inverse_sqrt,
    max_norm_,
    param_groups,
    prox_l1_,
    train_concise,
)
from regulab.data.loader import TensorLoader
from regulab.demos.weight_decay import DemoConfig, problem
from regulab.metrics import evaluate, weight_stats
from regulab.train import FINAL, fit

TOL = 1e-6  # float32 runs of a few epochs: agreement up to rounding


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n, seed, d=5, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def _mlp(dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(5, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 3)
    )  # fmt: skip


def _loader(x, y, batch_size=16, seed=3, **kw):
    return TensorLoader(x, y, batch_size=batch_size, seed=seed, **kw)


def _loop(
    model, opt, loader, epochs, *, loss_fn=F.cross_entropy, before_step=None, after_step=None,
    augment=None, on_epoch=None,
):  # fmt: skip
    """The reference: zero_grad, forward, mean loss, backward, [before_step], step, [after_step].

    Returns the per-epoch mean (over examples) of the minibatch losses and accuracies,
    measured in train mode before each step.
    """
    means = []
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        total, correct, count = 0.0, 0, 0
        for xb, yb in loader:
            if augment is not None:
                xb = augment(xb)
            out = model(xb)
            loss = loss_fn(out, yb)
            opt.zero_grad()
            loss.backward()
            if before_step is not None:
                before_step()
            opt.step()
            if after_step is not None:
                after_step()
            total += loss.item() * len(yb)
            if out.ndim == 2 and out.shape[1] > 1:
                correct += int((out.argmax(1) == yb).sum())
            count += len(yb)
        means.append((total / count, correct / count))
        if on_epoch is not None:
            on_epoch(epoch)
    return means


def _assert_same_params(a, b, atol=TOL):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=name)


@torch.no_grad()
def _direct(model, x, y):
    """(cross-entropy, accuracy) on the full tensors, in eval mode."""
    was = model.training
    model.eval()
    out = model(x)
    model.train(was)
    return F.cross_entropy(out, y).item(), (out.argmax(1) == y).double().mean().item()


def _np_weight_norm(model):
    return math.sqrt(
        sum((p.detach().double().numpy() ** 2).sum() for p in model.parameters() if p.ndim >= 2)
    )


# --- plain SGD, metrics --------------------------------------------------------------------


def test_plain_sgd_equals_a_hand_written_loop_and_metrics_are_direct():
    x, y = _data(50, 0)  # batches of 16, 16, 16, 2
    val, test = _data(40, 1), _data(30, 2)
    model = _mlp()
    ref = copy.deepcopy(model)
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=0.3), _loader(x, y), epochs=3,
        val=val, test=test, eval_train=0, seed=5,
    )  # fmt: skip
    direct = []

    def record(epoch):
        direct.append((_direct(ref, *val), _direct(ref, *test), _np_weight_norm(ref)))

    means = _loop(ref, torch.optim.SGD(ref.parameters(), lr=0.3), _loader(x, y), 3, on_epoch=record)
    _assert_same_params(model, ref)
    assert h.status == "completed" and [r["epoch"] for r in h.rows] == [1, 2, 3]
    for row, (train_loss, train_acc), ((vl, va), (tl, ta), w_norm) in zip(
        h.rows, means, direct, strict=True
    ):
        assert row["lr"] == 0.3
        assert row["train_loss"] == pytest.approx(train_loss, abs=TOL)  # mean over examples
        assert row["train_accuracy"] == pytest.approx(train_acc, abs=TOL)
        assert row["val_loss"] == pytest.approx(vl, abs=TOL)
        assert row["val_accuracy"] == pytest.approx(va, abs=TOL)
        assert row["test_loss"] == pytest.approx(tl, abs=TOL)
        assert row["test_accuracy"] == pytest.approx(ta, abs=TOL)
        assert row["w_norm"] == pytest.approx(w_norm, rel=TOL)
        assert row["zero_fraction"] == 0.0
    assert h.final == {k: h.rows[-1][k] for k in FINAL}
    assert h.best_epoch is None and not h.stopped_early


def test_train_loss_with_eval_train_is_the_first_k_examples_in_eval_mode():
    x, y = _data(50, 0)
    model = _mlp(dropout=0.5)
    seen = []

    def record(history):
        # the model as it is at the end of this epoch
        seen.append((_direct(model, x[:12], y[:12]), history.rows[-1]))

    fit(
        model, torch.optim.SGD(model.parameters(), lr=0.3), _loader(x, y), epochs=3,
        eval_train=12, on_epoch=record,
    )  # fmt: skip
    for (loss, acc), row in seen:
        assert row["train_loss"] == pytest.approx(loss, abs=TOL)
        assert row["train_accuracy"] == pytest.approx(acc, abs=TOL)
    # dropout is active in train mode, so eval mode is what made these agree
    model.train()
    with torch.no_grad():
        assert F.cross_entropy(model(x[:12]), y[:12]).item() != pytest.approx(loss, abs=1e-3)
    assert model.training  # fit leaves the mode as training set it


# --- regularizers --------------------------------------------------------------------------


def test_l2_penalty_equals_sgd_weight_decay():
    x, y = _data(50, 0)
    lam = 0.05
    model = _mlp()
    ref = copy.deepcopy(model)
    weights = [model[0].weight, model[3].weight]
    fit(
        model, torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), _loader(x, y),
        epochs=3, penalty=Penalty(weights, l2=lam), eval_train=0,
    )  # fmt: skip
    plain = copy.deepcopy(ref)
    opt = torch.optim.SGD(
        [
            {"params": [ref[0].weight, ref[3].weight], "weight_decay": lam},
            {"params": [ref[0].bias, ref[3].bias], "weight_decay": 0.0},
        ],
        lr=0.2, momentum=0.9,
    )  # fmt: skip
    _loop(ref, opt, _loader(x, y), 3)
    _assert_same_params(model, ref)
    _loop(plain, torch.optim.SGD(plain.parameters(), lr=0.2, momentum=0.9), _loader(x, y), 3)
    assert (model[0].weight - plain[0].weight).abs().max() > 1e-3  # the penalty mattered


def test_prox_l1_after_step_matches_sklearn_lasso():
    g = torch.Generator().manual_seed(0)
    n, d, alpha = 60, 8, 0.1
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_true = torch.tensor([1.5, -2.0, 0.0, 0.0, 0.7, 0.0, 0.04, 0.0], dtype=torch.float64)
    y = x @ w_true + 0.3 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    # step 1/L, L the largest eigenvalue of the half-MSE Hessian in (w, b)
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    lr = 1 / torch.linalg.eigvalsh(design.T @ design / n).max().item()
    model = nn.Linear(d, 1).double()
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=lr),
        TensorLoader(x, y, batch_size=n, shuffle=False), epochs=400, loss="half_mse",
        after_step=[lambda: prox_l1_([model.weight], lr * alpha)], eval_train=0,
    )  # fmt: skip
    lasso = Lasso(alpha=alpha, tol=1e-14, max_iter=100_000).fit(x.numpy(), y.numpy())
    w = model.weight.detach()[0].numpy()
    np.testing.assert_allclose(w, lasso.coef_, rtol=0, atol=1e-8)
    assert model.bias.item() == pytest.approx(lasso.intercept_, abs=1e-8)
    zeros = lasso.coef_ == 0
    assert zeros.sum() >= 3
    np.testing.assert_array_equal(w == 0, zeros)  # exact zeros, where Lasso has them
    assert h.rows[-1]["zero_fraction"] == zeros.sum() / d


def test_max_norm_after_step_keeps_every_row_inside_the_ball():
    x, y = _data(50, 0)
    bound = 0.6
    model = _mlp()
    ref = copy.deepcopy(model)
    weights = [model[0].weight, model[3].weight]
    worst = []

    def check():  # called by fit after every step, after the after_step functions
        worst.append(max(w.detach().norm(dim=1).max().item() for w in weights))

    fit(
        model, torch.optim.SGD(model.parameters(), lr=1.0), _loader(x, y), epochs=3,
        after_step=[lambda: max_norm_(weights, bound, dim=0)], on_step=check, eval_train=0,
    )  # fmt: skip
    assert len(worst) == 12
    assert max(worst) <= bound * (1 + 1e-6)
    assert max(worst) == pytest.approx(bound, rel=1e-6)  # the constraint was active
    ref_weights = [ref[0].weight, ref[3].weight]
    _loop(
        ref, torch.optim.SGD(ref.parameters(), lr=1.0), _loader(x, y), 3,
        after_step=lambda: max_norm_(ref_weights, bound, dim=0),
    )  # fmt: skip
    _assert_same_params(model, ref)


def test_clip_grad_norm_equals_torch_clip_grad_norm():
    x, y = _data(50, 0)
    max_norm = 0.05
    model = _mlp()
    ref = copy.deepcopy(model)
    fit(
        model, torch.optim.SGD(model.parameters(), lr=0.5), _loader(x, y), epochs=3,
        clip_grad_norm=max_norm, eval_train=0,
    )  # fmt: skip
    norms = []
    _loop(
        ref, torch.optim.SGD(ref.parameters(), lr=0.5), _loader(x, y), 3,
        before_step=lambda: norms.append(nn.utils.clip_grad_norm_(ref.parameters(), max_norm)),
    )  # fmt: skip
    assert min(norms) > max_norm  # every step was clipped
    _assert_same_params(model, ref)


def test_penalty_gradient_is_added_before_clipping():
    x, y = _data(50, 0)
    lam, max_norm = 0.5, 0.05
    model = _mlp()
    ref = copy.deepcopy(model)
    fit(
        model, torch.optim.SGD(model.parameters(), lr=0.5), _loader(x, y), epochs=2,
        penalty=Penalty([model[0].weight, model[3].weight], l2=lam), clip_grad_norm=max_norm,
        eval_train=0,
    )  # fmt: skip

    def penalize_then_clip():
        with torch.no_grad():
            for w in (ref[0].weight, ref[3].weight):
                w.grad += lam * w  # the gradient of lam * ||w||^2 / 2
        nn.utils.clip_grad_norm_(ref.parameters(), max_norm)

    _loop(
        ref, torch.optim.SGD(ref.parameters(), lr=0.5), _loader(x, y), 2,
        before_step=penalize_then_clip,
    )  # fmt: skip
    _assert_same_params(model, ref)


# --- learning rates ------------------------------------------------------------------------


def _record_lrs(opt):
    lrs = []
    opt.register_step_pre_hook(
        lambda o, args, kwargs: lrs.append([g["lr"] for g in o.param_groups])
    )
    return lrs


def test_inverse_sqrt_schedule_sets_each_group_lr_at_every_step():
    x, y = _data(50, 0)
    gamma, lr0 = 0.7, (0.1, 0.02)
    model = _mlp()
    opt = torch.optim.SGD(
        [
            {"params": [model[0].weight, model[3].weight], "lr": lr0[0]},
            {"params": [model[0].bias, model[3].bias], "lr": lr0[1]},
        ]
    )
    lrs = _record_lrs(opt)
    h = fit(model, opt, _loader(x, y), epochs=3, schedule=inverse_sqrt(gamma), eval_train=0)
    assert len(lrs) == 12
    for t, seen in enumerate(lrs):  # step t (0-based) runs with lr0 / sqrt(1 + gamma^2 t)
        expected = [base / math.sqrt(1 + gamma**2 * t) for base in lr0]
        assert seen == pytest.approx(expected, rel=1e-12), t
    for epoch, row in enumerate(h.rows, 1):  # the lr of the epoch's last step
        assert row["lr"] == pytest.approx(
            lr0[0] / math.sqrt(1 + gamma**2 * (4 * epoch - 1)), rel=1e-12
        )


def test_a_torch_scheduler_is_stepped_once_per_epoch():
    x, y = _data(50, 0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    lrs = _record_lrs(opt)
    h = fit(model, opt, _loader(x, y), epochs=5, scheduler=scheduler, eval_train=0)
    assert scheduler.last_epoch == 5
    for epoch in range(1, 6):
        expected = 0.2 * 0.5 ** ((epoch - 1) // 2)
        assert [lr for [lr] in lrs[4 * (epoch - 1) : 4 * epoch]] == pytest.approx([expected] * 4)
        # the row reports the lr the epoch trained with, not the next epoch's
        assert h.rows[epoch - 1]["lr"] == pytest.approx(expected, rel=1e-12), epoch


# --- the demo's recipe ---------------------------------------------------------------------


class _ConciseOrder:
    """The minibatches of `train_concise`: one generator seeded once, a permutation per epoch."""

    def __init__(self, x, y, batch_size, seed):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        for idx in torch.randperm(len(self.y), generator=self.generator).split(self.batch_size):
            yield self.x[idx], self.y[idx]


def test_recipe_path_matches_train_concise():
    cfg = DemoConfig()
    seed, lam, epochs = 1, 3.0, 30
    train, test, w0 = problem(seed, cfg)
    ref = train_concise(
        train, test, lam, w0=w0, lr=cfg.lr, batch_size=cfg.batch_size, epochs=epochs, seed=seed
    )
    net = nn.Linear(cfg.num_inputs, 1)
    with torch.no_grad():
        net.weight.copy_(w0.reshape(1, -1))
        net.bias.zero_()
    groups = param_groups(net, lam)  # weight_decay lam on the weight, 0 on the bias
    assert [g["names"] for g in groups] == [["weight"], ["bias"]]
    h = fit(
        net, torch.optim.SGD(groups, lr=cfg.lr),
        _ConciseOrder(*train, cfg.batch_size, seed), epochs=epochs,
        val=train, test=test, loss="half_mse", eval_train=0,
    )  # fmt: skip
    torch.testing.assert_close(net.weight.detach()[0], ref.w, rtol=0, atol=1e-5)
    assert net.bias.item() == pytest.approx(ref.b.item(), abs=1e-5)
    rows = h.rows
    assert [r["val_loss"] for r in rows] == pytest.approx(ref.history["train_loss"], rel=1e-5)
    assert [r["test_loss"] for r in rows] == pytest.approx(ref.history["test_loss"], rel=1e-5)
    assert [r["w_norm"] for r in rows] == pytest.approx(ref.history["w_norm"], rel=1e-5)
    assert rows[-1]["w_norm"] < 0.5 * float(w0.norm())  # the decay acted


# --- early stopping ------------------------------------------------------------------------


def _overfitting_problem():
    """40 noisy examples (30% labels flipped) and a wide MLP: val loss falls, then rises."""
    g = torch.Generator().manual_seed(0)

    def draw(n):
        x = torch.randn(n, 2, generator=g)
        y = (x[:, 0] * x[:, 1] > 0).long()
        flip = torch.rand(n, generator=g) < 0.3
        return x, torch.where(flip, 1 - y, y)

    train, val = draw(40), draw(200)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2)
    )  # fmt: skip
    return model, train, val


def _fit_with_early_stopping(patience, epochs):
    model, train, val = _overfitting_problem()
    states = []
    h = fit(
        model, torch.optim.Adam(model.parameters(), lr=0.02),
        _loader(*train, batch_size=10, seed=1), epochs=epochs, val=val, eval_train=0,
        early_stopping=EarlyStopping(patience=patience),
        on_epoch=lambda history: states.append(copy.deepcopy(model.state_dict())),
    )  # fmt: skip
    return model, val, h, states


def _check_best_restored(model, val, h, states):
    val_losses = [r["val_loss"] for r in h.rows]
    best = int(np.argmin(val_losses)) + 1
    assert h.best_epoch == best
    assert 1 < best < len(h.rows)  # an inner minimum: restoring changes the weights
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[best - 1][k]), k
    assert _direct(model, *val)[0] == pytest.approx(min(val_losses), abs=TOL)
    assert h.final == {k: h.rows[best - 1][k] for k in FINAL}
    assert h.final["val_loss"] == min(val_losses)


def test_early_stopping_stops_and_restores_the_best_epoch():
    patience = 5
    model, val, h, states = _fit_with_early_stopping(patience, epochs=60)
    assert h.status == "completed" and h.stopped_early
    assert len(h.rows) == h.best_epoch + patience < 60
    _check_best_restored(model, val, h, states)


def test_best_weights_are_restored_when_training_ends_without_stopping():
    model, val, h, states = _fit_with_early_stopping(patience=100, epochs=25)
    assert h.status == "completed" and not h.stopped_early
    assert len(h.rows) == 25
    _check_best_restored(model, val, h, states)


# --- divergence ----------------------------------------------------------------------------


def test_divergence_keeps_the_last_good_epoch(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = x.sum(1)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=2.0),
        TensorLoader(x, y, batch_size=32, shuffle=False), epochs=500, loss="mse",
        eval_train=32, checkpoint_dir=tmp_path,
    )  # fmt: skip
    assert h.status == "diverged"
    bad = len(h.rows) + 1
    assert 2 < bad < 500
    assert f"training diverged in epoch {bad}:" in h.message
    assert f"the last good checkpoint is epoch-{bad - 1:04d}" in h.message
    assert [r["epoch"] for r in h.rows] == list(range(1, bad))  # no row for the bad epoch
    assert all(math.isfinite(r["train_loss"]) for r in h.rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"epoch-{bad - 1:04d}"]
    _, state = checkpoint.load(tmp_path / f"epoch-{bad - 1:04d}")
    assert state["epoch"] == bad - 1 and len(state["history"]) == bad - 1
    assert h.final == {k: h.rows[-1][k] for k in FINAL}


# --- determinism ---------------------------------------------------------------------------


def _dropout_run(seed, global_draws):
    x, y = _data(50, 0)
    model = _mlp(dropout=0.5)
    torch.rand(global_draws)  # the global generator's state before fit must not matter
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9), _loader(x, y),
        epochs=3, val=_data(20, 1), seed=seed, eval_train=20,
    )  # fmt: skip
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in h.rows]
    return model.state_dict(), rows


def test_same_seed_is_bit_identical_and_other_seeds_differ():
    state_a, rows_a = _dropout_run(seed=3, global_draws=1)
    state_b, rows_b = _dropout_run(seed=3, global_draws=5)
    assert rows_a == rows_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    state_c, rows_c = _dropout_run(seed=4, global_draws=1)
    assert rows_c != rows_a
    assert not torch.equal(state_a["0.weight"], state_c["0.weight"])


# --- metrics -------------------------------------------------------------------------------


def test_weight_stats_counts_matrices_and_kernels_only():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 4), nn.Linear(4, 2)
    )  # fmt: skip
    with torch.no_grad():
        model[0].weight[0] = 0.0  # 18 zeros
        model[3].weight[:, :3] = 0.0  # 12 zeros
        model[3].bias.zero_()  # biases and BatchNorm do not count
        model[1].bias.zero_()
    w_norm, zero_fraction = weight_stats(model)
    mats = [p.detach().numpy() for p in model.parameters() if p.ndim >= 2]
    assert [m.ndim for m in mats] == [4, 2, 2]
    expected = math.sqrt(sum((m.astype(np.float64) ** 2).sum() for m in mats))
    assert w_norm == pytest.approx(expected, rel=1e-6)
    total = sum(m.size for m in mats)
    assert zero_fraction == sum(int((m == 0).sum()) for m in mats) / total == 30 / total
    assert weight_stats(nn.BatchNorm1d(3)) == (0.0, 0.0)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "half_mse"])
def test_evaluate_does_not_depend_on_batch_size(loss):
    x, y = _data(53, 0)
    model = _mlp(dropout=0.5)
    if loss != "cross_entropy":
        y = torch.randn(53, generator=torch.Generator().manual_seed(1))
        model[3] = nn.Linear(16, 1)
    small = evaluate(model, (x, y), loss, batch_size=7)
    large = evaluate(model, (x, y), loss, batch_size=1000)
    assert small == pytest.approx(large, abs=TOL)
    assert model.training  # the mode is restored
    model.eval()
    assert evaluate(model, (x, y), loss, batch_size=7) == small
    assert not model.training  # eval stays eval
    with torch.no_grad():
        out = model(x)
    if loss == "cross_entropy":
        direct = (F.cross_entropy(out, y).item(), (out.argmax(1) == y).double().mean().item())
    else:
        mse = F.mse_loss(out[:, 0], y).item()
        direct = (mse / 2 if loss == "half_mse" else mse, None)
    assert large[0] == pytest.approx(direct[0], abs=TOL)
    assert large[1] == (None if direct[1] is None else pytest.approx(direct[1], abs=TOL))


# --- augmentation --------------------------------------------------------------------------


def test_augment_is_applied_in_training_only():
    x, y = _data(50, 0)
    val, test = _data(20, 1), _data(20, 2)
    shapes = []

    def augment(xb):
        shapes.append(tuple(xb.shape))
        return xb.flip(-1) + 0.5

    model = _mlp()
    ref = copy.deepcopy(model)
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=0.3), _loader(x, y), epochs=2,
        val=val, test=test, eval_train=20, augment=augment,
    )  # fmt: skip
    assert shapes == [(16, 5), (16, 5), (16, 5), (2, 5)] * 2  # training batches only
    _loop(
        ref,
        torch.optim.SGD(ref.parameters(), lr=0.3),
        _loader(x, y),
        2,
        augment=lambda b: b.flip(-1) + 0.5,
    )
    _assert_same_params(model, ref)
    row = h.rows[-1]
    assert row["val_loss"] == pytest.approx(_direct(model, *val)[0], abs=TOL)  # not augmented
    assert row["test_loss"] == pytest.approx(_direct(model, *test)[0], abs=TOL)
    assert row["train_loss"] == pytest.approx(_direct(model, x[:20], y[:20])[0], abs=TOL)


def test_a_new_run_refuses_a_folder_with_another_runs_checkpoints(tmp_path):
    from regulab import checkpoint

    x = torch.randn(40, 3)
    y = (x[:, 0] > 0).long()
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = TensorLoader(x, y, batch_size=8)
    fit(model, opt, loader, epochs=3, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"already holds checkpoints \(epoch-0003\)"):
        fit(model, opt, loader, epochs=2, checkpoint_dir=tmp_path)
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["epoch-0003"]

"""Mixup and CutMix against Python loops over copies, examples and pixels; lambda statistically."""

import math

import pytest
import torch
from torch import nn

from regulab.mixing import Mixup, beta_lambda, cutmix, mixup

TOL = 1e-6
ALPHAS = torch.tensor([0.0, 0.2, 1.0, 4.0])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=6, c=2, h=7, w=5, classes=4, seed=0):
    g = gen(seed)
    return torch.randn(n, c, h, w, generator=g), torch.randint(classes, (n,), generator=g)


def one_hot(label, classes=4):
    return torch.eye(classes)[label]


def mixup_reference(x, y, lam, index, classes=4):
    """Example by example: lam x_i + (1 - lam) x_index[i], and the same for one-hot targets."""
    xs = [lam * x[i] + (1 - lam) * x[index[i]] for i in range(len(x))]
    ts = [
        lam * one_hot(y[i], classes) + (1 - lam) * one_hot(y[index[i]], classes)
        for i in range(len(x))
    ]
    return torch.stack(xs), torch.stack(ts)


def cutmix_reference(x, y, lam, index, center, classes=4):
    """Pixel by pixel: the box of cutmix's docstring, clipped, pasted from the partner."""
    h, w = x.shape[-2:]
    cy, cx = center
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    top, left = max(cy - ch // 2, 0), max(cx - cw // 2, 0)
    bottom, right = min(cy - ch // 2 + ch, h), min(cx - cw // 2 + cw, w)
    out = x.clone()
    for i in range(len(x)):
        for r in range(top, bottom):
            for c in range(left, right):
                out[i, :, r, c] = x[index[i], :, r, c]
    kept = 1 - (bottom - top) * (right - left) / (h * w)
    ts = [
        kept * one_hot(y[i], classes) + (1 - kept) * one_hot(y[index[i]], classes)
        for i in range(len(x))
    ]
    return out, torch.stack(ts)


def test_mixup_equals_a_loop_over_examples():
    x, y = images()
    index = torch.tensor([3, 0, 5, 1, 2, 4])
    mixed, targets = mixup(x, y, 0.4, 4, lam=0.3, index=index)
    ref_x, ref_t = mixup_reference(x, y, 0.3, index)
    torch.testing.assert_close(mixed, ref_x, atol=TOL, rtol=0)
    torch.testing.assert_close(targets, ref_t, atol=TOL, rtol=0)


def test_stacked_mixup_equals_a_loop_over_copies():
    x, y = images()
    lam = torch.tensor([1.0, 0.1, 0.5, 0.8])
    index = torch.randperm(len(x), generator=gen(1))
    mixed, targets = mixup(x, y, ALPHAS, 4, lam=lam, index=index)
    assert mixed.shape == (4, *x.shape) and targets.shape == (4, len(x), 4)
    for k in range(len(ALPHAS)):
        ref_x, ref_t = mixup_reference(x, y, float(lam[k]), index)
        torch.testing.assert_close(mixed[k], ref_x, atol=TOL, rtol=0)
        torch.testing.assert_close(targets[k], ref_t, atol=TOL, rtol=0)


@pytest.mark.parametrize(
    ("lam", "center"),
    [(0.3, (3, 2)), (0.5, (0, 0)), (0.05, (6, 4)), (0.9, (1, 3)), (1.0, (3, 2)), (0.0, (3, 2))],
)
def test_cutmix_equals_a_loop_over_pixels(lam, center):
    x, y = images()
    index = torch.tensor([5, 4, 3, 2, 1, 0])
    mixed, targets = cutmix(x, y, 1.0, 4, lam=lam, index=index, center=center)
    ref_x, ref_t = cutmix_reference(x, y, lam, index, center)
    torch.testing.assert_close(mixed, ref_x, atol=0, rtol=0)
    torch.testing.assert_close(targets, ref_t, atol=TOL, rtol=0)


def test_cutmix_lambda_is_the_pasted_area():
    x, y = images(n=2)  # two examples of different labels, swapped
    y = torch.tensor([0, 1])
    mixed, targets = cutmix(x, y, 1.0, 4, lam=0.4, index=torch.tensor([1, 0]), center=(0, 0))
    pasted = (mixed[0] != x[0]).all(0).double().mean()  # clipped at the corner: under 0.6
    assert 0 < pasted < 0.6
    assert targets[0, 1].item() == pytest.approx(pasted.item(), abs=TOL)
    assert targets[0, 0].item() == pytest.approx(1 - pasted.item(), abs=TOL)


def test_stacked_cutmix_equals_a_loop_over_copies():
    x, y = images()
    lam = torch.tensor([1.0, 0.2, 0.5, 0.7])
    index = torch.randperm(len(x), generator=gen(2))
    mixed, targets = cutmix(x, y, ALPHAS, 4, lam=lam, index=index, center=(5, 1))
    for k in range(len(ALPHAS)):
        ref_x, ref_t = cutmix_reference(x, y, float(lam[k]), index, (5, 1))
        torch.testing.assert_close(mixed[k], ref_x, atol=0, rtol=0)
        torch.testing.assert_close(targets[k], ref_t, atol=TOL, rtol=0)


@pytest.mark.parametrize("fn", [mixup, cutmix])
def test_stacked_copy_k_equals_the_call_with_alpha_k(fn):
    """Common random numbers: the same draws, copy k mixed with its own alpha."""
    x, y = images()
    mixed, targets = fn(x, y, ALPHAS, 4, generator=gen(3))
    for k, alpha in enumerate(ALPHAS.tolist()):
        one_x, one_t = fn(x, y, alpha, 4, generator=gen(3))
        torch.testing.assert_close(mixed[k], one_x, atol=TOL, rtol=0)
        torch.testing.assert_close(targets[k], one_t, atol=TOL, rtol=0)


def test_the_drawn_lambda_and_partner_come_from_the_documented_draws():
    x, y = images()
    g = gen(4)
    u = torch.rand(3, generator=g, dtype=torch.float64)
    index = torch.randperm(len(x), generator=g)
    lam = float(beta_lambda(0.7, u[0]))
    expected = mixup(x, y, 0.7, 4, lam=lam, index=index)
    for got, want in zip(mixup(x, y, 0.7, 4, generator=gen(4)), expected, strict=True):
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("fn", [mixup, cutmix])
def test_alpha_zero_is_the_identity_and_draws_as_much(fn):
    x, y = images()
    g0, g1 = gen(5), gen(5)
    mixed, targets = fn(x, y, 0.0, 4, generator=g0)
    assert torch.equal(mixed, x)
    assert torch.equal(targets, one_hot(y))
    fn(x, y, 2.0, 4, generator=g1)
    assert torch.equal(g0.get_state(), g1.get_state())  # the stream does not depend on alpha


def test_soft_targets_mix_too():
    x, _ = images()
    soft = torch.softmax(torch.randn(len(x), 4, generator=gen(6)), -1)
    index = torch.tensor([1, 2, 3, 4, 5, 0])
    _, targets = mixup(x, soft, 1.0, 4, lam=0.25, index=index)
    torch.testing.assert_close(targets, 0.25 * soft + 0.75 * soft[index], atol=TOL, rtol=0)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_lambda_is_beta_distributed(alpha):
    """Mean 1/2 and variance 1/(4(2 alpha + 1)) through mixup's own draws; the whole law
    against torch.distributions.Beta's sampler (two-sample Kolmogorov-Smirnov)."""
    x, y, g = torch.zeros(2, 1), torch.tensor([0, 1]), gen(7)
    lams = torch.tensor(
        [
            mixup(x, y, alpha, 2, generator=g, index=torch.tensor([1, 0]))[1][0, 0]
            for _ in range(2000)
        ]
    ).double()
    n, var = len(lams), 1 / (4 * (2 * alpha + 1))
    kurtosis = 3 - 6 / (2 * alpha + 3)  # of Beta(alpha, alpha)
    assert abs(lams.mean() - 0.5) < 4 * math.sqrt(var / n)
    assert lams.var().item() == pytest.approx(var, rel=4 * math.sqrt((kurtosis - 1) / n))
    n = 20_000
    ours = beta_lambda(alpha, torch.rand(n, generator=gen(8), dtype=torch.float64)).sort().values
    torch.manual_seed(9)
    theirs = torch.distributions.Beta(alpha, alpha).sample((n,)).double().sort().values
    grid = torch.linspace(0, 1, 1001, dtype=torch.float64)
    ks = (torch.searchsorted(ours, grid) - torch.searchsorted(theirs, grid)).abs().max() / n
    assert ks < 1.95 * math.sqrt(2 / n)  # the 0.1 % critical value


def test_beta_lambda_keeps_the_lower_tail_and_is_symmetric():
    u = torch.tensor([0.01, 0.3, 0.5, 0.7, 0.99], dtype=torch.float64)
    for alpha in (0.01, 0.5, 3.0):
        lam = beta_lambda(alpha, u)
        assert bool((lam[:2] > 0).all()) and lam[2].item() == pytest.approx(0.5, abs=1e-12)
        assert torch.equal(lam[:2] + lam[3:].flip(0), torch.ones(2, dtype=torch.float64))
    assert 0 < beta_lambda(0.01, 0.3) < 1e-20  # not rounded to 0


def test_a_generator_leaves_the_global_one_alone():
    x, y = images()
    state = torch.get_rng_state()
    a = mixup(x, y, 1.0, 4, generator=gen(10))
    b = mixup(x, y, 1.0, 4, generator=gen(10))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))


def test_mixup_module_mixes_only_with_gradients_on():
    x, y = images()
    mix = Mixup(alpha=1.0, num_classes=4, generator=gen(11))
    assert (
        repr(mix) == "Mixup(alpha=1.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, num_classes=4)"
    )
    with torch.no_grad():
        same_x, same_y = mix((x, y))
    assert same_x is x and same_y is y
    mixed, targets = mix((x, y))
    assert not torch.equal(mixed, x) and targets.shape == (len(x), 4)


def test_mixup_module_prob_and_switch():
    x, y = images()
    off = Mixup(alpha=1.0, prob=0.0, num_classes=4)
    mixed, targets = off((x, y))
    assert torch.equal(mixed, x) and torch.equal(targets, one_hot(y))
    for switch_prob, fn in ((1.0, cutmix), (0.0, mixup)):
        mix = Mixup(
            1.0, cutmix_alpha=2.0, switch_prob=switch_prob, num_classes=4, generator=gen(12)
        )
        g = gen(12)
        for _ in range(3):  # the module draws (apply, switch), then the function its own
            torch.rand(2, generator=g)
            alpha = 2.0 if fn is cutmix else 1.0
            expected = fn(x, y, alpha, 4, generator=g)
            for got, want in zip(mix((x, y)), expected, strict=True):
                assert torch.equal(got, want)


def test_fit_trains_on_mixed_batches_and_validates_on_real_labels():
    from regulab import TensorLoader, digits, fit, train_val_split
    from regulab.label_smoothing import soft_target_cross_entropy
    from regulab.metrics import evaluate

    x, y = digits()
    (x_train, y_train), val = train_val_split(x, y, 0.2, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    history = fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        TensorLoader(x_train, y_train, batch_size=64, seed=0),
        epochs=3,
        val=val,
        loss=soft_target_cross_entropy,
        batch_fn=Mixup(alpha=0.4, num_classes=10),
    )
    last = history.rows[-1]
    assert last["val_accuracy"] > 0.85 and last["train_accuracy"] is not None
    val_loss, val_accuracy = evaluate(model, val, "cross_entropy")  # no batch_fn, hard labels
    assert last["val_loss"] == pytest.approx(val_loss, abs=TOL)
    assert last["val_accuracy"] == val_accuracy


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda x, y: mixup(x, y, -1.0, 4),
            ValueError,
            "alpha must be a finite number >= 0; got -1.0",
        ),
        (
            lambda x, y: mixup(x, y, torch.ones(2, 2), 4),
            ValueError,
            "alpha must be a number >= 0 or a (K,) tensor",
        ),
        (lambda x, y: mixup(x, y[:3], 1.0, 4), ValueError, "y must be class indices (6,) or"),
        (lambda x, y: mixup(x.long(), y, 1.0, 4), ValueError, "mixup needs floating-point x"),
        (lambda x, y: mixup(x, y, 1.0, 0), ValueError, "num_classes must be a positive integer"),
        (lambda x, y: mixup(x, y, 1.0, 4, lam=1.5), ValueError, "lam must be in [0, 1]"),
        (
            lambda x, y: mixup(x, y, ALPHAS, 4, lam=0.5),
            ValueError,
            "lam must be in [0, 1] with alpha's shape (4,)",
        ),
        (lambda x, y: mixup(x, y, 1.0, 4, index=torch.arange(3)), ValueError, "index must be"),
        (lambda x, y: cutmix(x[:, 0, 0], y, 1.0, 4), ValueError, "cutmix needs images"),
        (lambda x, y: cutmix(x, y, 1.0, 4, center=(7, 0)), ValueError, "center must be (cy, cx)"),
        (lambda x, y: mixup(x, y, 1.0, 4, generator=0), ValueError, "generator must be"),
        (lambda x, y: Mixup(num_classes=4)({"x": x}), TypeError, "Mixup takes (x, y) batches"),
        (lambda x, y: Mixup(prob=2, num_classes=4), ValueError, "prob must be a number in [0, 1]"),
    ],
)
def test_bad_input_names_the_parameter(call, error, message):
    x, y = images()
    with pytest.raises(error) as caught:
        call(x, y)
    assert message in str(caught.value)

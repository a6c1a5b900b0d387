"""metrics: evaluate with loss callables and batch_fn, accuracy rules, batches, against direct sums.

References: F.cross_entropy(weight=...) per batch weighted by hand, a hand-written
binary cross-entropy and (logit > 0) accuracy, evaluation on the plain tensors.
"""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from regulab.metrics import correct, evaluate, examples, forward, to_device, unpack

TOL = 1e-6


def _model(out=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, out))


def _data(n=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_class_weighted_loss_is_the_example_weighted_mean_of_batch_means():
    x, y = _data()
    w = torch.tensor([0.5, 1.0, 4.0])
    model = _model()
    loss, accuracy = evaluate(model, (x, y), nn.CrossEntropyLoss(weight=w), batch_size=10)
    with torch.no_grad():
        out = model(x)
    by_hand = (
        sum(
            F.cross_entropy(out[i : i + 10], y[i : i + 10], weight=w).item() * len(y[i : i + 10])
            for i in range(0, 53, 10)
        )
        / 53
    )
    assert loss == pytest.approx(by_hand, abs=TOL)
    assert accuracy == pytest.approx((out.argmax(1) == y).double().mean().item(), abs=TOL)


def test_bce_loss_and_accuracy_match_a_hand_written_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=g)
    t = (torch.rand(40, 1, generator=g) > 0.5).float()
    model = _model(out=1)
    loss, accuracy = evaluate(model, (x, t), nn.BCEWithLogitsLoss(), batch_size=40)
    with torch.no_grad():
        z = model(x)[:, 0].double()
    total, right = 0.0, 0
    for zi, ti in zip(z.tolist(), t[:, 0].tolist(), strict=True):
        p = 1 / (1 + math.exp(-zi))
        total -= ti * math.log(p) + (1 - ti) * math.log(1 - p)
        right += int((zi > 0) == (ti == 1))
    assert loss == pytest.approx(total / 40, abs=1e-5)
    assert accuracy == right / 40


@pytest.mark.parametrize(
    ("output", "target", "loss", "expected"),
    [
        (torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]), "cross_entropy", [1, 1]),
        (torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 1]), F.cross_entropy, [2, 1]),
        (torch.tensor([1.5, -2.0, 0.5]), torch.tensor([1.0, 0.0, 0.0]), F.mse_loss, [2, 1]),
        (torch.tensor([[1.5], [-2.0]]), torch.tensor([[1.0], [1.0]]), F.mse_loss, [1, 1]),
        (torch.tensor([1.5, -2.0]), torch.tensor([0.3, 2.0]), F.mse_loss, [0, 0]),  # not 0/1
        (torch.tensor([[1.0, 2.0]]), torch.tensor([1.0]), F.mse_loss, None),  # float class
        (torch.tensor([1.5, -2.0]), torch.tensor([1.0, 0.0]), "mse", None),  # a regression name
        (torch.tensor([1.5, -2.0]), torch.tensor([1, 0]), F.mse_loss, None),  # integer 0/1
    ],
)
def test_which_outputs_and_targets_give_an_accuracy(output, target, loss, expected):
    hits = correct(output, target, loss)
    assert (hits if hits is None else hits.tolist()) == expected


def test_a_regression_callable_has_no_accuracy_and_a_direct_loss():
    x, _ = _data()
    y = x[:, 0].clone()
    model = _model(out=1)
    loss, accuracy = evaluate(model, (x, y), lambda o, t: (o[:, 0] - t).square().mean(), 7)
    with torch.no_grad():
        direct = (model(x)[:, 0] - y).square().mean().item()
    assert accuracy is None
    assert loss == pytest.approx(direct, abs=TOL)


def test_batch_fn_and_data_loaders_give_the_tensors_result():
    x, y = _data()
    model = _model()
    plain = evaluate(model, (x, y), "cross_entropy")
    dicts = [{"x": x[i : i + 9], "y": y[i : i + 9]} for i in range(0, 53, 9)]
    assert evaluate(model, dicts, "cross_entropy", batch_fn=lambda b: (b["x"], b["y"])) == (
        pytest.approx(plain, abs=TOL)
    )
    loader = DataLoader(TensorDataset(x, y), batch_size=11)
    assert evaluate(model, loader, F.cross_entropy) == pytest.approx(plain, abs=TOL)
    swapped = evaluate(model, (y, x), "cross_entropy", batch_size=5, batch_fn=lambda b: b[::-1])
    assert swapped == pytest.approx(plain, abs=TOL)  # tensors are sliced, then mapped


def test_inputs_reach_the_model_as_a_tensor_a_tuple_or_keywords():
    class Two(nn.Module):
        def forward(self, a, b=0):
            return a * 10 + b

    one, two = torch.ones(2), torch.full((2,), 2.0)
    assert forward(Two(), one).tolist() == [10, 10]
    assert forward(Two(), (one, two)).tolist() == [12, 12]
    assert forward(Two(), {"a": one, "b": two}).tolist() == [12, 12]
    moved = to_device({"a": (one, [two]), "n": 3}, "cpu")
    assert torch.equal(moved["a"][1][0], two) and moved["n"] == 3
    assert examples({"t": torch.zeros(4, 2)}) == examples((torch.zeros(4),)) == 4


def test_a_batch_that_is_not_a_pair_is_refused_in_one_line():
    with pytest.raises(TypeError, match=r"a batch without batch_fn must be an \(inputs, target\)"):
        unpack({"x": 1, "y": 2})
    with pytest.raises(TypeError, match=r"batch_fn\(batch\) must be an \(inputs, target\) pair"):
        unpack((1, 2), batch_fn=lambda b: b[0])
    assert unpack([1, 2]) == (1, 2)


def test_bad_losses_are_named():
    x, y = _data()
    with pytest.raises(TypeError, match="loss must be a name"):
        evaluate(_model(), (x, y), 3.0)
    with pytest.raises(ValueError, match="scalar tensor"):
        evaluate(_model(), (x, y), nn.CrossEntropyLoss(reduction="none"))


# --- the built-in losses refuse shapes torch would read otherwise than meant ------------------


def test_cross_entropy_takes_labels_or_probabilities_and_refuses_one_logit_per_example():
    from regulab.metrics import mean_loss

    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(6, 3, generator=g), torch.randint(0, 3, (6,), generator=g)
    p = torch.softmax(torch.randn(6, 3, generator=g), -1)
    assert mean_loss("cross_entropy", out, y).item() == pytest.approx(
        F.cross_entropy(out, y).item(), abs=TOL
    )
    assert mean_loss("cross_entropy", out, p).item() == pytest.approx(
        -(p * out.log_softmax(-1)).sum(-1).mean().item(), abs=TOL
    )
    seq, labels = torch.randn(6, 3, 4, generator=g), torch.randint(0, 3, (6, 4), generator=g)
    assert mean_loss("cross_entropy", seq, labels).item() == pytest.approx(
        F.cross_entropy(seq, labels).item(), abs=TOL
    )
    # (N,) logits with 0/1 floats: torch would read one example of N classes
    with pytest.raises(ValueError) as info:
        mean_loss("cross_entropy", torch.randn(6), torch.tensor([0.0, 1, 1, 0, 1, 0]))
    assert str(info.value) == (
        "loss 'cross_entropy' needs output (N, C) and integer class labels (N,) or class "
        "probabilities (N, C); got output (6,) and target (6,) float32: give the model C "
        "outputs and integer labels, or for one logit per example with 0/1 float targets pass "
        "loss=nn.BCEWithLogitsLoss()"
    )
    with pytest.raises(ValueError, match=r"got output \(6, 3\) and target \(6,\) float32"):
        mean_loss("cross_entropy", out, y.float())


@pytest.mark.parametrize("name", ["mse", "half_mse"])
def test_mse_never_broadcasts_n_against_n_1_into_n_by_n(name):
    from regulab.metrics import mean_loss

    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(5, generator=g), torch.randn(5, generator=g)
    want = ((out - y) ** 2).mean().item() / (2 if name == "half_mse" else 1)
    for o, t in ((out, y), (out[:, None], y), (out, y[:, None]), (out[:, None], y[:, None])):
        assert mean_loss(name, o, t).item() == pytest.approx(want, abs=TOL)
    with pytest.raises(ValueError) as info:
        mean_loss(name, torch.randn(5, 2), y)
    assert str(info.value) == (
        f"loss '{name}' needs output and target of one shape, (N,) or (N, K); got output "
        "(5, 2) and target (5,): reshape the model's output or the target to match"
    )


def test_integer_targets_for_a_loss_that_needs_floats_get_a_hint():
    from regulab.metrics import mean_loss

    with pytest.raises(TypeError) as info:
        mean_loss(nn.BCEWithLogitsLoss(), torch.randn(4), torch.tensor([0, 1, 1, 0]))
    assert str(info.value) == (
        "the loss needs float targets and got int64 ones (result type Float can't be cast to "
        "the desired output type Long): a loss such as nn.BCEWithLogitsLoss takes 0/1 floats, "
        "so pass y.float() (in batch_fn or the data)"
    )

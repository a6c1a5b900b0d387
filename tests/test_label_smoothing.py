"""Label smoothing and soft-target cross-entropy against torch's own F.cross_entropy."""

import pytest
import torch
from torch import nn
from torch.func import vmap
from torch.nn import functional as F

from regulab.label_smoothing import (
    LabelSmoothingCrossEntropy,
    SoftTargetCrossEntropy,
    label_smoothing_cross_entropy,
    soft_target_cross_entropy,
)

TOL = 1e-6


def batch(n=16, c=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=dtype) * 3
    labels = torch.randint(c, (n,), generator=g)
    probs = torch.softmax(torch.randn(n, c, generator=g, dtype=dtype), -1)
    return logits, labels, probs


@pytest.mark.parametrize("s", [0.0, 0.1, 0.37, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_torch_cross_entropy_for_labels_and_probabilities(s, reduction, dtype):
    logits, labels, probs = batch(dtype=dtype)
    # float32 sums of 16 losses near 60 round at ~4e-6: there, relative 1e-6
    atol, rtol = (TOL, 0) if dtype == torch.float64 or reduction != "sum" else (0, TOL)
    for target in (labels, probs):
        ours = label_smoothing_cross_entropy(logits, target, s, reduction)
        torch_ = F.cross_entropy(logits, target, label_smoothing=s, reduction=reduction)
        torch.testing.assert_close(ours, torch_, atol=atol, rtol=rtol)


def test_gradient_equals_torch_cross_entropy():
    logits, labels, _ = batch()
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    label_smoothing_cross_entropy(a, labels, 0.2).backward()
    F.cross_entropy(b, labels, label_smoothing=0.2).backward()
    torch.testing.assert_close(a.grad, b.grad, atol=TOL, rtol=0)


def test_per_copy_smoothing_under_vmap_equals_each_float():
    k, (_, labels, _) = 4, batch()
    logits = torch.randn(k, *labels.shape, 5, generator=torch.Generator().manual_seed(1))
    smoothing = torch.tensor([0.0, 0.05, 0.3, 0.9])
    stacked = vmap(label_smoothing_cross_entropy, in_dims=(0, None, 0))(logits, labels, smoothing)
    for i in range(k):
        one = F.cross_entropy(logits[i], labels, label_smoothing=float(smoothing[i]))
        torch.testing.assert_close(stacked[i], one, atol=TOL, rtol=0)


def test_per_example_smoothing_equals_a_loop():
    logits, labels, _ = batch()
    s = torch.linspace(0, 0.5, len(labels))
    each = label_smoothing_cross_entropy(logits, labels, s, reduction="none")
    loop = torch.stack(
        [
            F.cross_entropy(logits[i : i + 1], labels[i : i + 1], label_smoothing=float(s[i]))
            for i in range(len(labels))
        ]
    )
    torch.testing.assert_close(each, loop, atol=TOL, rtol=0)


def test_soft_target_cross_entropy_is_minus_p_log_q():
    logits, labels, probs = batch()
    by_hand = -(probs * torch.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(soft_target_cross_entropy(logits, probs), by_hand, atol=TOL, rtol=0)
    hard = soft_target_cross_entropy(logits, labels)  # class indices: the one-hot target
    torch.testing.assert_close(hard, F.cross_entropy(logits, labels), atol=TOL, rtol=0)
    module = SoftTargetCrossEntropy()(logits, probs)
    torch.testing.assert_close(module, by_hand, atol=TOL, rtol=0)


def test_module_equals_cross_entropy_loss_and_shows_its_setting():
    logits, labels, _ = batch()
    loss = LabelSmoothingCrossEntropy(0.1)
    assert repr(loss) == "LabelSmoothingCrossEntropy(smoothing=0.1)"
    reference = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    torch.testing.assert_close(loss(logits, labels), reference, atol=TOL, rtol=0)


def test_fit_with_the_module_equals_fit_with_torch_label_smoothing():
    from regulab import TensorLoader, fit

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 6, generator=g), torch.randint(3, (96,), generator=g)
    histories = []
    for loss in (LabelSmoothingCrossEntropy(0.2), nn.CrossEntropyLoss(label_smoothing=0.2)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
        histories.append(
            fit(
                model,
                torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                TensorLoader(x, y, batch_size=32, seed=0),
                epochs=3,
                val=(x[:32], y[:32]),
                loss=loss,
            )
        )
    for a, b in zip(histories[0].rows, histories[1].rows, strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy", "w_norm"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"smoothing": 1.5}, ValueError, "smoothing must be a number in [0, 1]; got 1.5"),
        ({"smoothing": -0.1}, ValueError, "smoothing must be a number in [0, 1]"),
        ({"smoothing": "a"}, ValueError, "smoothing must be a number in [0, 1]; got 'a'"),
        ({"smoothing": torch.tensor([1, 2])}, ValueError, "floating tensor of shape () or (N,)"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of 'mean', 'sum', 'none'"),
        (
            {"logits": torch.zeros(5)},
            ValueError,
            "logits must be a tensor of shape (N, C); got (5,)",
        ),
        ({"target": torch.zeros(16, 4)}, ValueError, "must have shape (16, 5)"),
        ({"target": torch.zeros(3, dtype=torch.long)}, ValueError, "must have shape (16,)"),
        ({"target": [1, 2]}, TypeError, "target must be class indices (N,) or probabilities"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, error, message):
    logits, labels, _ = batch()
    args = {"logits": logits, "target": labels, "smoothing": 0.1, **kwargs}
    with pytest.raises(error) as caught:
        label_smoothing_cross_entropy(**args)
    assert message in str(caught.value)


def test_module_checks_its_settings():
    with pytest.raises(ValueError, match=r"smoothing must be a number in \[0, 1\]; got 2"):
        LabelSmoothingCrossEntropy(2)
    with pytest.raises(ValueError, match="reduction must be one of"):
        SoftTargetCrossEntropy("max")

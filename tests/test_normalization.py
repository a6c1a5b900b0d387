"""batch_norm / BatchNorm against torch.nn.BatchNorm1d/2d and torch.nn.functional.batch_norm.

Each comparison loads the same random affine weights into both layers, runs
several training steps and then evaluation steps, and compares outputs and the
running statistics within an explicit tolerance (1e-5; gradients in float64).
"""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from regulab.normalization import BatchNorm, batch_norm

TOL = 1e-5
MOMENTUM = 0.3  # not torch's default 0.1
EPS = 1e-3  # not torch's default 1e-5
C = 4

CASES = {
    "(N,C)": (nn.BatchNorm1d, (16, C)),
    "(N,C,L)": (nn.BatchNorm1d, (16, C, 7)),
    "(N,C,H,W)": (nn.BatchNorm2d, (16, C, 5, 6)),
}
case_params = pytest.mark.parametrize(
    ("torch_cls", "shape"), CASES.values(), ids=list(CASES.keys())
)


def random_torch_layer(torch_cls, dtype=torch.float32, seed=0):
    """A torch batch-norm layer with random weight and bias and non-default settings."""
    g = torch.Generator().manual_seed(seed)
    layer = torch_cls(C, momentum=MOMENTUM, eps=EPS).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(1 + 0.5 * torch.randn(C, generator=g))
        layer.bias.copy_(torch.randn(C, generator=g))
    return layer


def ours_from(torch_layer):
    ours = BatchNorm(C, momentum=MOMENTUM, eps=EPS).to(torch_layer.weight.dtype)
    ours.load_state_dict(torch_layer.state_dict())
    return ours


def batch(shape, seed, dtype=torch.float32):
    """Inputs whose channels have non-zero mean and non-unit variance."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=dtype).view([1, C] + [1] * (len(shape) - 2))
    return 1.5 + scale * torch.randn(shape, generator=g, dtype=dtype)


def assert_same_state(ours, theirs):
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=0, atol=TOL)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=0, atol=TOL)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)


@case_params
def test_batchnorm_matches_torch_in_training_then_eval(torch_cls, shape):
    theirs = random_torch_layer(torch_cls)
    ours = ours_from(theirs)
    for step in range(4):
        x = batch(shape, seed=step)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=TOL)
        assert_same_state(ours, theirs)
    ours.eval()
    theirs.eval()
    for step in range(4, 6):
        x = batch(shape, seed=step)
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=TOL)
        assert_same_state(ours, theirs)


@case_params
def test_state_dict_of_our_batchnorm_loads_into_torch(torch_cls, shape):
    theirs_init = random_torch_layer(torch_cls)
    ours = ours_from(theirs_init)
    for step in range(3):
        ours(batch(shape, seed=step))
    theirs = torch_cls(C, momentum=MOMENTUM, eps=EPS)
    theirs.load_state_dict(ours.state_dict())
    ours.eval()
    theirs.eval()
    x = batch(shape, seed=10)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=TOL)
    assert_same_state(ours, theirs)


@case_params
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_gradients_match_torch(torch_cls, shape, training):
    theirs = random_torch_layer(torch_cls, dtype=torch.float64)
    theirs(batch(shape, seed=0, dtype=torch.float64))  # non-trivial running statistics
    ours = ours_from(theirs)
    ours.train(training)
    theirs.train(training)
    x = batch(shape, seed=1, dtype=torch.float64)
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x_ours = x.clone().requires_grad_()
    x_theirs = x.clone().requires_grad_()
    ours(x_ours).backward(upstream)
    theirs(x_theirs).backward(upstream)
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=0, atol=TOL)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=0, atol=TOL)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, rtol=0, atol=TOL)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_functional_without_running_stats_uses_batch_statistics(training):
    x = batch((16, C, 3, 3), seed=0)
    gamma = torch.linspace(0.5, 2.0, C)
    beta = torch.linspace(-1.0, 1.0, C)
    ours = batch_norm(x, gamma, beta, None, None, training, momentum=MOMENTUM, eps=EPS)
    theirs = F.batch_norm(x, None, None, gamma, beta, training=True, momentum=MOMENTUM, eps=EPS)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=TOL)


def test_functional_without_affine_normalizes_each_channel():
    x = batch((64, C), seed=0, dtype=torch.float64)
    y = batch_norm(x, None, None, None, None, training=True, eps=EPS)
    var = x.var(dim=0, correction=0)
    expected = (x - x.mean(dim=0)) / torch.sqrt(var + EPS)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


def test_functional_updates_running_stats_with_the_unbiased_variance():
    x = batch((8, C), seed=0, dtype=torch.float64)
    running_mean = torch.zeros(C, dtype=torch.float64)
    running_var = torch.ones(C, dtype=torch.float64)
    batch_norm(x, None, None, running_mean, running_var, True, momentum=MOMENTUM, eps=EPS)
    expected_mean = MOMENTUM * x.mean(dim=0)
    expected_var = (1 - MOMENTUM) + MOMENTUM * x.var(dim=0, correction=1)
    torch.testing.assert_close(running_mean, expected_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(running_var, expected_var, rtol=0, atol=1e-12)


def test_batch_of_one_in_training_raises_a_clear_error():
    x = torch.randn(1, C)
    with pytest.raises(ValueError, match="batch"):
        batch_norm(x, None, None, torch.zeros(C), torch.ones(C), training=True)
    with pytest.raises(ValueError, match="batch"):
        BatchNorm(C)(x)


def test_batch_of_one_in_eval_uses_running_stats_like_torch():
    theirs = random_torch_layer(nn.BatchNorm1d)
    theirs(batch((16, C), seed=0))
    ours = ours_from(theirs).eval()
    theirs.eval()
    x = batch((1, C), seed=1)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=TOL)


def test_batch_of_one_image_in_training_works_like_torch():
    theirs = random_torch_layer(nn.BatchNorm2d)
    ours = ours_from(theirs)
    x = batch((1, C, 5, 6), seed=0)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=TOL)
    assert_same_state(ours, theirs)


@pytest.mark.parametrize("which", ["running_mean", "running_var"])
def test_giving_only_one_running_statistic_raises(which):
    stats = {"running_mean": None, "running_var": None, which: torch.zeros(C)}
    with pytest.raises(ValueError, match="running_mean and running_var"):
        batch_norm(torch.randn(8, C), None, None, training=True, **stats)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, math.nan, True])
def test_bad_momentum_raises_naming_momentum(momentum):
    with pytest.raises(ValueError, match="momentum"):
        batch_norm(torch.randn(8, C), None, None, None, None, True, momentum=momentum)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(C, momentum=momentum)


@pytest.mark.parametrize("eps", [0.0, -1e-5, math.nan, math.inf])
def test_bad_eps_raises_naming_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        batch_norm(torch.randn(8, C), None, None, None, None, True, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm(C, eps=eps)


def test_input_with_the_wrong_number_of_channels_raises():
    with pytest.raises(ValueError, match=rf"\(N, {C}, \.\.\.\)"):
        BatchNorm(C)(torch.randn(8, C + 1))


def test_num_batches_tracked_counts_training_steps_only():
    theirs = random_torch_layer(nn.BatchNorm1d)
    ours = ours_from(theirs)
    for layer in (ours, theirs):
        for step in range(3):
            layer(batch((8, C), seed=step))
        layer.eval()
        layer(batch((8, C), seed=3))
        layer.train()
        layer(batch((8, C), seed=4))
    assert int(ours.num_batches_tracked) == 4
    assert int(theirs.num_batches_tracked) == 4


def test_extra_repr_shows_settings():
    assert "4, momentum=0.3, eps=0.001" in repr(BatchNorm(4, momentum=0.3, eps=1e-3))


def test_half_precision_input_with_float32_statistics_matches_torch():
    torch.manual_seed(5)
    ours, ref = BatchNorm(4), torch.nn.BatchNorm2d(4)
    x = torch.randn(8, 4, 5, 5).half()
    assert torch.equal(ours(x), ref(x))
    assert torch.allclose(ours.running_var, ref.running_var, atol=1e-6)
    ours.eval(), ref.eval()
    assert ours(x).dtype == torch.float16
    assert torch.equal(ours(x), ref(x))


def test_statistics_of_the_wrong_shape_are_named():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        batch_norm(x, torch.ones(2), None, None, None, training=True)
    with pytest.raises(ValueError, match="running_var"):
        batch_norm(x, None, None, torch.zeros(3), torch.ones(4), training=False)

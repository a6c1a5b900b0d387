"""synthetic_linear: shapes, reproducibility, and its distribution against numpy least squares."""

import numpy as np
import pytest
import torch

from regulab.data import synthetic_linear


def test_shapes_and_dtype():
    x, y = synthetic_linear(20, seed=0)
    assert x.shape == (20, 200) and y.shape == (20,)
    assert x.dtype == y.dtype == torch.float32


def test_seed_reproduces_and_generator_continues_the_stream():
    a = synthetic_linear(5, 3, seed=1)
    b = synthetic_linear(5, 3, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    g = torch.Generator().manual_seed(1)
    first = synthetic_linear(5, 3, generator=g)
    second = synthetic_linear(5, 3, generator=g)
    assert torch.equal(first[0], a[0])
    assert not torch.equal(first[0], second[0])


def test_float64_sees_the_same_data_as_float32():
    x32, y32 = synthetic_linear(10, 4, seed=3)
    x64, y64 = synthetic_linear(10, 4, seed=3, dtype=torch.float64)
    torch.testing.assert_close(x64.float(), x32, rtol=0, atol=0)
    torch.testing.assert_close(y64.float(), y32, rtol=0, atol=0)


def test_distribution_matches_the_model():
    """X ~ N(0, 1); least squares recovers w = 0.01, b = 0.05; residual std = noise."""
    n = 20_000
    x, y = synthetic_linear(n, 10, seed=0, dtype=torch.float64)
    x, y = x.numpy(), y.numpy()
    assert abs(x.mean()) < 0.01
    assert abs(x.std() - 1) < 0.01
    design = np.hstack([x, np.ones((n, 1))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    # standard error of each coefficient is noise / sqrt(n) = 7e-5; allow 10 of them
    np.testing.assert_allclose(coef[:-1], 0.01, atol=7e-4)
    np.testing.assert_allclose(coef[-1], 0.05, atol=7e-4)
    residual = y - design @ coef
    assert abs(residual.std() - 0.01) < 0.0003


def test_tensor_true_w_and_no_noise_is_exact():
    w = torch.arange(4, dtype=torch.float64)
    x, y = synthetic_linear(8, 4, true_w=w, true_b=-1.0, noise=0.0, seed=0, dtype=torch.float64)
    torch.testing.assert_close(y, x @ w - 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": 0}, "n"),
        ({"n": 5, "num_inputs": -1}, "num_inputs"),
        ({"n": 5, "noise": -0.1}, "noise"),
        ({"n": 5, "true_w": torch.ones(3)}, "true_w"),
        ({"n": 5, "seed": 0, "generator": torch.Generator()}, "generator or seed"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthetic_linear(**kwargs)

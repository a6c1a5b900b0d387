"""The closed-form ridge path against scikit-learn Ridge and the pseudo-inverse."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from regulab import ridge, ridge_path, synthetic_linear


@pytest.mark.parametrize(("n", "d"), [(20, 200), (80, 10)])
def test_path_matches_scikit_learn_ridge_alpha_n_lambda(n, d):
    x, y = synthetic_linear(n, d, seed=0, dtype=torch.float64)
    lams = [1e-3, 0.1, 1.0, 3.0, 100.0]
    w, b = ridge_path(x, y, lams)
    for k, lam in enumerate(lams):
        ref = Ridge(alpha=n * lam, tol=1e-14, solver="svd").fit(x.numpy(), y.numpy())
        scale = np.abs(ref.coef_).max()
        assert np.abs(w[k].numpy() - ref.coef_).max() <= 1e-8 * scale
        assert float(b[k]) == pytest.approx(ref.intercept_, rel=1e-8, abs=1e-12)


def test_lambda_zero_is_the_minimum_norm_least_squares_solution():
    x, y = synthetic_linear(20, 200, seed=1, dtype=torch.float64)
    w, b = ridge(x, y, 0.0)
    xc, yc = x - x.mean(0), y - y.mean()
    expected = torch.linalg.pinv(xc) @ yc
    assert (w - expected).abs().max() < 1e-10
    assert (x @ w + b - y).abs().max() < 1e-10  # 20 points, 200 inputs: fits exactly


def test_bad_input_is_named():
    x, y = synthetic_linear(5, 3, seed=0)
    with pytest.raises(ValueError, match="lams"):
        ridge_path(x, y, [-1.0])
    with pytest.raises(ValueError, match="lams"):
        ridge_path(x, y, [])
    with pytest.raises(ValueError, match="y"):
        ridge_path(x, y[:3], [1.0])

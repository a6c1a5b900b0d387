"""digits: scikit-learn's 8x8 digits as float32 images in [0, 1] and int64 labels."""

import numpy as np
import torch
from sklearn.datasets import load_digits

from regulab.data import digits


def test_shapes_dtypes_and_range():
    x, y = digits()
    assert x.shape == (1797, 8, 8) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(torch.unique(y), torch.arange(10))


def test_pixels_are_sklearn_counts_over_16():
    x, y = digits()
    bunch = load_digits()
    np.testing.assert_array_equal(x.numpy() * 16, bunch.data.reshape(-1, 8, 8))
    np.testing.assert_array_equal(y.numpy(), bunch.target)

"""The 8x8 handwritten digits bundled with scikit-learn (the UCI optical digits test set).

Offline and small (1797 images), for tests and quick runs; scikit-learn is imported
only when the data set is loaded.
"""

import torch


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's load_digits as x float32 (1797, 8, 8) in [0, 1] and y int64 (1797,).

    Pixels are counts 0..16 in the original; x is pixel / 16.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).to(torch.float32) / 16
    y = torch.from_numpy(bunch.target).to(torch.int64)
    return x, y

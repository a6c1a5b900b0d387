"""train_val_split: sizes, a disjoint and complete cover, seeding, and errors."""

import pytest
import torch

from regulab.data import train_val_split


def data(n=50):
    x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    return x, torch.arange(n)  # y[i] is the index of row i, so pairs can be traced


def test_sizes_and_pairs_stay_together():
    x, y = data()
    (x_train, y_train), (x_val, y_val) = train_val_split(x, y, 0.2, seed=0)
    assert len(x_train) == len(y_train) == 40 and len(x_val) == len(y_val) == 10
    assert torch.equal(x_train, x[y_train]) and torch.equal(x_val, x[y_val])


def test_disjoint_and_complete():
    x, y = data(37)
    (_, y_train), (_, y_val) = train_val_split(x, y, 0.3, seed=5)
    assert len(y_val) == round(0.3 * 37) == 11
    assert set(y_train.tolist()).isdisjoint(y_val.tolist())
    assert sorted(y_train.tolist() + y_val.tolist()) == list(range(37))


def test_seeded():
    x, y = data()
    a = train_val_split(x, y, 0.2, seed=1)[1][1]
    b = train_val_split(x, y, 0.2, seed=1)[1][1]
    c = train_val_split(x, y, 0.2, seed=2)[1][1]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, torch.arange(40, 50))  # random, not the last rows


def test_validation_is_a_uniform_draw():
    """Over many seeds each example lands in validation with probability val_fraction."""
    x, y = data(20)
    counts = torch.zeros(20)
    for seed in range(2000):
        counts[train_val_split(x, y, 0.25, seed)[1][1]] += 1
    # 2000 draws of p = 0.25: std of a count is about 19; allow 5 std
    assert (counts - 500).abs().max() < 100


def test_zero_fraction_means_no_validation():
    x, y = data()
    (x_train, y_train), val = train_val_split(x, y, 0, seed=0)
    assert val is None and x_train is x and y_train is y


@pytest.mark.parametrize("bad", [-0.1, 1, 1.5, float("nan"), "0.2", True, None])
def test_val_fraction_out_of_range(bad):
    with pytest.raises(ValueError, match=r"val_fraction must be a number in \[0, 1\); got"):
        train_val_split(*data(), bad, seed=0)


def test_empty_parts_are_refused():
    x, y = data(10)
    with pytest.raises(ValueError, match=r"leaves the validation part empty.*val_fraction=0"):
        train_val_split(x, y, 0.04, seed=0)
    with pytest.raises(ValueError, match="leaves the training part empty"):
        train_val_split(x, y, 0.96, seed=0)


def test_mismatched_lengths_and_bad_seed():
    x, y = data(10)
    with pytest.raises(ValueError, match="same number of examples; got 10 and 9"):
        train_val_split(x, y[:9], 0.2, seed=0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        train_val_split(x, y, 0.2, seed=1.5)
    with pytest.raises(ValueError, match="x and y must be tensors; got list and Tensor"):
        train_val_split([1, 2], y, 0.2, seed=0)

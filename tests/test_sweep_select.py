"""choose() on hand-made paths."""

import math

import numpy as np
import pytest

from regulab.sweep.select import choose


def path(val, se=None, diverged=(), lambdas=None):
    """Rows with the given validation losses (and SEs) at lambdas 0, 0.01, 0.1, ..."""
    lambdas = lambdas or [0.0] + [10.0**k for k in range(-2, len(val) - 3)]
    se = se if se is not None else [0.0] * len(val)
    return [
        {
            "lambda": lam,
            "status": "diverged" if i in diverged else "completed",
            "val_loss": math.nan if i in diverged else v,
            "val_loss_se": None if i in diverged else s,
        }
        for i, (lam, v, s) in enumerate(zip(lambdas, val, se, strict=True))
    ]


def test_min_picks_the_lowest_validation_loss():
    rows = path([3.0, 2.0, 1.5, 1.7, 4.0])
    assert choose(rows) == 2
    assert choose(rows, "min") == int(np.argmin([r["val_loss"] for r in rows]))


def test_min_ties_go_to_the_first_like_argmin():
    val = [3.0, 1.5, 2.0, 1.5, 4.0]
    assert choose(path(val)) == 1 == int(np.argmin(val))


def test_one_se_picks_the_largest_lambda_within_one_se():
    # minimum 1.0 at index 1 with SE 0.3: threshold 1.3; index 3 (1.29) is within, 4 (1.31) not
    rows = path([2.0, 1.0, 1.2, 1.29, 1.31], se=[0.1, 0.3, 0.1, 0.1, 0.1])
    assert choose(rows, "min") == 1
    assert choose(rows, "one_se") == 3


def test_one_se_uses_the_se_of_the_minimum_row_and_includes_the_boundary():
    # the other rows' SEs are huge but only the minimum's counts; 1.25 = 1.0 + 0.25 is kept
    rows = path([1.1, 1.0, 1.25, 1.2500001], se=[9.0, 0.25, 9.0, 9.0])
    assert choose(rows, "one_se") == 2


def test_one_se_takes_the_largest_lambda_in_the_band_even_past_a_larger_loss():
    # a later row back within the band is still chosen: the rule is "largest lambda within"
    rows = path([1.0, 1.5, 1.05], se=[0.1, 0.1, 0.1])
    assert choose(rows, "one_se") == 2
    rows = path([1.0, 1.5, 1.15], se=[0.1, 0.1, 0.1])
    assert choose(rows, "one_se") == 0


def test_one_se_with_zero_se_equals_min():
    rows = path([3.0, 2.0, 1.5, 1.7, 4.0])
    assert choose(rows, "one_se") == choose(rows, "min") == 2


def test_one_se_needs_the_se():
    rows = path([2.0, 1.0, 1.2])
    rows[1]["val_loss_se"] = None
    with pytest.raises(ValueError, match=r"rule 'one_se' needs a finite val_loss_se .*got None"):
        choose(rows, "one_se")
    assert choose(rows, "min") == 1


def test_diverged_rows_are_skipped():
    rows = path([5.0, 0.1, 1.0, 2.0], se=[0.1, 0.1, 0.1, 1.5], diverged={1})
    assert choose(rows, "min") == 2
    assert choose(rows, "one_se") == 2  # 2.0 > 1.0 + 0.1: only the SE of the minimum counts
    rows[2]["val_loss_se"] = 1.0
    assert choose(rows, "one_se") == 3


def test_diverged_row_with_a_finite_loss_is_still_skipped():
    rows = path([2.0, 1.0, 3.0])
    rows[1]["status"] = "diverged"
    assert choose(rows) == 0


def test_nonfinite_losses_are_skipped():
    rows = path([2.0, math.inf, math.nan, 3.0])
    assert choose(rows) == 0


def test_all_diverged_is_an_error_saying_how_many():
    rows = path([1.0, 2.0, 3.0], diverged={0, 1, 2})
    with pytest.raises(ValueError, match=r"no row has a finite validation loss.*3 of 3 .*diverged"):
        choose(rows)


def test_unknown_rule():
    with pytest.raises(ValueError, match=r"rule must be one of 'min', 'one_se'; got 'best'"):
        choose(path([1.0]), "best")


@pytest.mark.parametrize("lambdas", [[0.0, 1.0, 0.1], [0.0, 0.1, 0.1]])
def test_rows_must_be_in_ascending_lambda_order(lambdas):
    with pytest.raises(ValueError, match="strictly ascending lambda order"):
        choose(path([1.0, 2.0, 3.0], lambdas=lambdas))


def test_no_rows():
    with pytest.raises(ValueError, match="at least one row"):
        choose([])

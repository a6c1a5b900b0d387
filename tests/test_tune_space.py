"""The search space: parsing and checking both forms, and quasi-random draws (against scipy)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import qmc

from regulab.tune.space import HYPERPARAMETERS, draw, parse_space

ISSUE = (
    "weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6) label_smoothing=uniform(0,0.2)|off "
    "mixup=log(0.1,1)|off lr=log(1e-3,1e-1)"
)


def test_the_issues_space_parses_and_prints_back():
    space = parse_space(ISSUE)
    assert space.names == ("weight_decay", "dropout", "label_smoothing", "mixup", "lr")
    wd = space["weight_decay"]
    assert (wd.scale, wd.low, wd.high, wd.p_off) == ("log", 1e-5, 1e-1, 0.0)
    assert space["mixup"].p_off == 0.5
    assert parse_space(str(space)) == space


def test_text_and_dict_forms_agree_and_spacing_does_not_matter():
    text = parse_space(
        "weight_decay = log( 1e-5 , 1e-1 ), crop=uniform(0,4) | off(0.25); l1=uniform(0,1)"
    )
    as_dict = parse_space(
        {
            "weight_decay": ("log", 1e-5, 1e-1),
            "crop": ["uniform", 0, 4, "off", 0.25],  # TOML gives lists
            "l1": "uniform(0,1)",
        }
    )
    assert text == as_dict
    assert parse_space({"dropout": ("uniform", 0, 0.5, "off")})["dropout"].p_off == 0.5


@pytest.mark.parametrize(
    "space, words",
    [
        ("", ["at least one hyperparameter"]),
        ({}, ["at least one hyperparameter"]),
        ("wd=log(1e-5,1e-1)", ["unknown hyperparameter 'wd'", "weight_decay, l2"]),
        ("weight_decay=log(0,1e-1)", ["weight_decay", "low > 0", "log(0,1e-1)"]),
        ("l2=uniform(1,0)", ["l2", "low <= high", "uniform(1,0)"]),
        ("l2=uniform(-1,1)", ["l2", ">= 0", "uniform(-1,1)"]),
        ("l2=uniform(nan,1)", ["l2", "finite", "nan"]),
        ("noise=uniform(0,inf)", ["noise", "finite", "inf"]),
        ("dropout=uniform(0,1)", ["dropout", "[0, 1)", "uniform(0,1)"]),
        ("label_smoothing=uniform(0,1.5)", ["label_smoothing", "[0, 1)"]),
        ("crop=uniform(0,2.5)", ["crop", "integers", "uniform(0,2.5)"]),
        ("cutout=log(1,7.5)", ["cutout", "integers"]),
        ("lr=log(1e-3,1e-1)|off", ["lr", "cannot be off"]),
        ("lr=uniform(0,1)", ["lr", "> 0"]),
        ("max_norm=uniform(0,3)", ["max_norm", "> 0", "|off"]),
        ("l2=uniform(0,1)|off(1)", ["l2", "[0, 1)", "off(1)"]),
        ("l2=beta(0,1)", ["l2", "log or uniform", "beta(0,1)"]),
        ("l2=uniform(a,1)", ["l2", "numbers", "'a'"]),
        ("l2", ["NAME=log(low,high)", "'l2'"]),
        ("l2=uniform(0,1) l2=log(1e-3,1)", ["l2 twice"]),
        ({"l2": ("log", 1e-3)}, ["l2", "(scale, low, high)"]),
        ({"l2": ("log", "a", 1.0)}, ["l2", "finite numbers"]),
    ],
)
def test_bad_spaces_are_refused_in_one_line(space, words):
    with pytest.raises(ValueError) as info:
        parse_space(space)
    message = str(info.value)
    assert "\n" not in message and message.startswith("space")
    for word in words:
        assert word in message


def test_a_space_that_is_neither_text_nor_dict_is_a_type_error():
    with pytest.raises(TypeError, match=r"space must be a string .* or a dict .*; got list"):
        parse_space(["weight_decay"])


def test_every_hyperparameter_of_the_issue_is_allowed():
    issue = "weight_decay l2 l1 dropout drop_path drop_block max_norm bn_sparsity label_smoothing "
    issue += "mixup cutmix crop noise cutout lr"
    assert tuple(HYPERPARAMETERS) == tuple(issue.split())


SPACE = parse_space(
    "weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6) label_smoothing=uniform(0,0.2)|off "
    "mixup=log(0.1,1)|off(0.25) crop=uniform(0,4) cutout=log(1,8)|off lr=log(1e-3,1e-1)"
)


@pytest.mark.parametrize("method", ["sobol", "lhs"])
def test_draws_stay_in_bounds_off_is_exactly_zero_pixels_are_integers(method):
    values = draw(SPACE, 300, seed=1, method=method)
    assert set(values) == set(SPACE.names)
    for r in SPACE:
        v = values[r.name]
        assert v.shape == (300,)
        on = v[v != 0] if r.p_off else v
        assert on.min() >= r.low and on.max() <= r.high, r.name
        assert v.dtype == (torch.int64 if r.name in ("crop", "cutout") else torch.float64)


@pytest.mark.parametrize("n", [256, 200])
def test_log_and_uniform_marginals_pass_a_ks_test_against_scipy(n):
    values = draw(SPACE, n, seed=2)
    lo, hi = math.log(1e-5), math.log(1e-1)
    log_wd = stats.kstest(np.log(values["weight_decay"].numpy()), "uniform", args=(lo, hi - lo))
    dropout = stats.kstest(values["dropout"].numpy(), "uniform", args=(0, 0.6))
    for test in (log_wd, dropout):
        # one point per 1/2**m stratum: far closer than iid draws (about 0.87 / sqrt(n))
        assert test.statistic < 4 / n and test.pvalue > 0.99
    iid = np.random.default_rng(0).uniform(lo, hi, n)  # the test can tell the scale apart
    assert stats.kstest(np.log(values["lr"].numpy()), "uniform", args=(lo, hi - lo)).pvalue < 1e-6
    assert stats.kstest(iid, "uniform", args=(lo, hi - lo)).pvalue > 0.01


def test_off_shares_and_pixel_shares():
    values = draw(SPACE, 256, seed=3)
    assert int((values["label_smoothing"] == 0).sum()) == 128  # |off: one half, exactly
    assert int((values["mixup"] == 0).sum()) == 64  # |off(0.25), exactly at a power of 2
    odd = draw(SPACE, 100, seed=3)
    assert abs(int((odd["mixup"] == 0).sum()) - 25) <= 2
    counts = torch.bincount(values["crop"], minlength=5)
    assert counts.tolist() == pytest.approx([256 / 5] * 5, abs=2)  # 0..4 equally likely


def test_draws_are_reproducible_by_seed_and_leave_global_generators_alone():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    a, b, c = draw(SPACE, 64, seed=7), draw(SPACE, 64, seed=7), draw(SPACE, 64, seed=8)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    for name in SPACE.names:
        assert torch.equal(a[name], b[name])
    assert not torch.equal(a["weight_decay"], c["weight_decay"])


@pytest.mark.parametrize("method", ["sobol", "lhs"])
def test_draws_fill_the_space_more_evenly_than_iid_draws(method):
    space = parse_space("weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6) l1=log(1e-6,1e-2)")
    n = 128
    values = draw(space, n, seed=0, method=method)
    unit = torch.stack([r.unit(values[r.name]) for r in space], dim=1).numpy()
    ours = qmc.discrepancy(unit)
    iid = [qmc.discrepancy(np.random.default_rng(s).random((n, 3))) for s in range(20)]
    assert ours < min(iid)  # the centered L2 discrepancy of every one of 20 iid samples


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"n": 4, "seed": -1}, "seed must be an integer >= 0"),
        ({"n": 4, "method": "grid"}, "method must be one of 'sobol', 'lhs'; got 'grid'"),
    ],
)
def test_draw_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        draw(SPACE, **kwargs)

"""LR schedules: closed forms, torch's own schedulers, SGD, checkpointing, and bad input."""

import io
import itertools
import math

import pytest
import torch
from torch import nn

from regulab import schedules
from regulab.schedules import (
    SCHEDULES,
    cosine,
    exponential,
    inverse_sqrt,
    inverse_time,
    lambda_lr,
    step,
)

TOL = 1e-12
STEPS = [*range(60), 99, 100, 101, 250, 1000, 10**6]


def assert_factors(schedule, reference, steps=STEPS):
    for t in steps:
        assert abs(schedule(t) - reference(t)) <= TOL, f"t={t}: {schedule(t)} vs {reference(t)}"


def cosine_reference(t, total, warmup, min_factor):
    """The documented schedule, written out: linear warmup, half cosine, then flat."""
    if t < warmup:
        return (t + 1) / warmup
    if t >= total:
        return min_factor
    angle = math.pi * (t - warmup) / (total - warmup)
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(angle))


def lr_sequence(make_scheduler, base_lr=0.1, steps=20):
    """lr of group 0 before each of `steps` scheduler steps, plus the final one."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make_scheduler(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def assert_close_rel(a, b, rel=TOL):
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b, strict=True)):
        assert abs(x - y) <= rel * abs(y), f"t={t}: {x} vs {y}"


# --- closed forms ------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 2.0])
def test_inverse_sqrt_matches_closed_form(gamma):
    assert_factors(inverse_sqrt(gamma), lambda t: 1 / math.sqrt(1 + gamma * gamma * t))


def test_inverse_sqrt_known_values():
    f = inverse_sqrt(0.5)  # 1 + 0.25 t
    assert f(0) == 1.0
    assert abs(f(12) - 0.5) <= TOL  # sqrt(4) = 2
    assert abs(f(32) - 1 / 3) <= TOL  # sqrt(9) = 3


@pytest.mark.parametrize(("rate", "decay_steps"), [(0.0, 1), (0.5, 1), (0.5, 10), (3.0, 7)])
def test_inverse_time_matches_closed_form(rate, decay_steps):
    assert_factors(inverse_time(rate, decay_steps), lambda t: 1 / (1 + rate * t / decay_steps))


def test_inverse_time_default_decay_steps_is_one():
    assert_factors(inverse_time(0.25), lambda t: 1 / (1 + 0.25 * t))


@pytest.mark.parametrize(("step_size", "gamma"), [(1, 0.5), (3, 0.5), (10, 0.1), (4, 0.9)])
def test_step_matches_closed_form(step_size, gamma):
    assert_factors(step(step_size, gamma), lambda t: gamma ** math.floor(t / step_size))


def test_step_is_piecewise_constant():
    f = step(3, 0.5)
    assert [f(t) for t in range(9)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.999])
def test_exponential_matches_closed_form(gamma):
    assert_factors(exponential(gamma), lambda t: math.exp(t * math.log(gamma)), range(0, 200))


@pytest.mark.parametrize("min_factor", [0.0, 0.1, 1.0])
@pytest.mark.parametrize(("total", "warmup"), [(50, 0), (50, 5), (100, 1), (7, 6)])
def test_cosine_matches_closed_form(total, warmup, min_factor):
    assert_factors(
        cosine(total, warmup, min_factor),
        lambda t: cosine_reference(t, total, warmup, min_factor),
    )


def test_cosine_landmarks():
    f = cosine(total_steps=110, warmup_steps=10, min_factor=0.2)
    assert abs(f(0) - 0.1) <= TOL  # first warmup step
    assert abs(f(9) - 1.0) <= TOL  # end of warmup
    assert abs(f(10) - 1.0) <= TOL  # start of the cosine
    assert abs(f(60) - 0.6) <= TOL  # halfway: (1 + min_factor) / 2
    assert abs(f(110) - 0.2) <= TOL  # total_steps
    assert all(abs(f(t) - 0.2) <= TOL for t in (111, 500, 10**6))  # flat afterwards
    values = [f(t) for t in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(values))  # decreasing


# --- against torch's schedulers ----------------------------------------------


def test_step_equals_torch_steplr():
    ours = lr_sequence(lambda opt: lambda_lr(opt, step(3, 0.5)))
    ref = lr_sequence(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5))
    assert_close_rel(ours, ref)


def test_exponential_equals_torch_exponentiallr():
    ours = lr_sequence(lambda opt: lambda_lr(opt, exponential(0.9)))
    ref = lr_sequence(lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9))
    assert_close_rel(ours, ref)


@pytest.mark.parametrize("min_factor", [0.0, 0.05, 0.5])
def test_cosine_without_warmup_equals_torch_cosineannealinglr(min_factor):
    total, base_lr = 20, 0.1
    ours = lr_sequence(lambda opt: lambda_lr(opt, cosine(total, 0, min_factor)), base_lr, total)
    ref = lr_sequence(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=total, eta_min=min_factor * base_lr
        ),
        base_lr,
        total,
    )
    assert len(ours) == total + 1  # t = 0 .. total inclusive
    # relative, with an absolute floor of 1e-12 * base_lr for the lr of 0 at t = total
    for t, (x, y) in enumerate(zip(ours, ref, strict=True)):
        assert abs(x - y) <= TOL * abs(y) + TOL * base_lr, f"t={t}: {x} vs {y}"


def test_lambda_lr_applies_to_every_param_group():
    a, b, c = (nn.Parameter(torch.zeros(1)) for _ in range(3))
    base = [0.1, 0.02, 3.0]
    opt = torch.optim.SGD(
        [{"params": [a], "lr": base[0]}, {"params": [b], "lr": base[1]}, {"params": [c]}],
        lr=base[2],
    )
    sched = lambda_lr(opt, exponential(0.8))
    for t in range(15):
        for group, lr0 in zip(opt.param_groups, base, strict=True):
            assert abs(group["lr"] - lr0 * 0.8**t) <= TOL * lr0
        opt.step()
        sched.step()


def test_inverse_sqrt_drives_sgd_with_eta0_over_sqrt_1_plus_gamma2_t():
    """SGD on 0.5 * ||Xw - y||^2: lr and weights follow w <- w - eta_t * grad by hand."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randn(16, generator=g, dtype=torch.float64)
    eta0, gamma = 0.05, 0.7
    w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    w_ref = torch.zeros(3, dtype=torch.float64)
    opt = torch.optim.SGD([w], lr=eta0)
    sched = lambda_lr(opt, inverse_sqrt(gamma))
    for t in range(30):
        eta_t = eta0 / math.sqrt(1 + gamma**2 * t)
        assert abs(opt.param_groups[0]["lr"] - eta_t) <= TOL * eta0
        opt.zero_grad()
        loss = 0.5 * ((x @ w - y) ** 2).sum()
        loss.backward()
        opt.step()
        sched.step()
        w_ref = w_ref - eta_t * (x.T @ (x @ w_ref - y))
        assert (w.detach() - w_ref).abs().max() <= 1e-12


def test_scheduler_state_dict_round_trip_resumes_the_sequence():
    schedule = cosine(total_steps=30, warmup_steps=4, min_factor=0.1)
    full = lr_sequence(lambda opt: lambda_lr(opt, schedule), steps=25)

    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = lambda_lr(opt, schedule)
    for _ in range(10):
        opt.step()
        sched.step()
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    q = nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([q], lr=0.1)
    sched2 = lambda_lr(opt2, cosine(total_steps=30, warmup_steps=4, min_factor=0.1))
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert sched2.last_epoch == 10
    resumed = [opt2.param_groups[0]["lr"]]
    for _ in range(15):
        opt2.step()
        sched2.step()
        resumed.append(opt2.param_groups[0]["lr"])
    assert_close_rel(resumed, full[10:])


# --- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: inverse_sqrt(-1.0), r"gamma.*-1\.0"),
        (lambda: inverse_time(-0.5), r"decay_rate.*-0\.5"),
        (lambda: inverse_time(0.5, 0), r"decay_steps.*0"),
        (lambda: step(0), r"step_size.*got 0"),
        (lambda: step(3, -0.5), r"gamma.*-0\.5"),
        (lambda: exponential(-2.0), r"gamma.*-2\.0"),
        (lambda: exponential(0.0), r"gamma.*0\.0"),
        (lambda: cosine(10, warmup_steps=10), r"warmup_steps.*10"),
        (lambda: cosine(10, warmup_steps=12), r"warmup_steps.*12"),
        (lambda: cosine(10, min_factor=1.5), r"min_factor.*1\.5"),
        (lambda: cosine(0), r"total_steps.*0"),
        (lambda: cosine(2.5), r"total_steps.*2\.5"),
    ],
)
def test_bad_settings_raise_value_error_naming_parameter_and_value(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_lambda_lr_rejects_non_callable_schedule():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=r"schedule.*0\.5"):
        lambda_lr(opt, 0.5)


def test_schedules_dict_maps_names_to_factories():
    expected = {
        "inverse_sqrt": schedules.inverse_sqrt,
        "inverse_time": schedules.inverse_time,
        "step": schedules.step,
        "exponential": schedules.exponential,
        "cosine": schedules.cosine,
    }
    assert expected == SCHEDULES
    assert SCHEDULES["cosine"](10)(10) == 0.0

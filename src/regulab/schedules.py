"""Learning-rate schedules as pure functions of the step.

Each factory checks its settings and returns a function t -> factor, where t is
the number of `scheduler.step()` calls so far (0, 1, 2, ...) and the learning
rate is base_lr * factor. `lambda_lr` hands one to
`torch.optim.lr_scheduler.LambdaLR`; the loop owns the step counter and decides
whether t counts minibatches or epochs.

Decaying the step size is a regularizer of its own: SGD with a decreasing
learning rate settles into the region it has reached instead of wandering; with
L2 the recipe eta_t = eta0 / sqrt(1 + gamma^2 t) is a common textbook choice.
"""

import math
from functools import partial

import torch

from regulab import _checks


def _inverse_sqrt(t: int, gamma: float) -> float:
    return 1 / math.sqrt(1 + gamma**2 * t)


def _inverse_time(t: int, decay_rate: float, decay_steps: int) -> float:
    return 1 / (1 + decay_rate * t / decay_steps)


def _step(t: int, step_size: int, gamma: float) -> float:
    return gamma ** (t // step_size)


def _exponential(t: int, gamma: float) -> float:
    return gamma**t


def _cosine(t: int, total_steps: int, warmup_steps: int, min_factor: float) -> float:
    if t < warmup_steps:
        return (t + 1) / warmup_steps
    if t >= total_steps:
        return min_factor
    progress = (t - warmup_steps) / (total_steps - warmup_steps)
    return min_factor + (1 - min_factor) * (1 + math.cos(math.pi * progress)) / 2


def inverse_sqrt(gamma: float):
    """factor(t) = 1 / sqrt(1 + gamma^2 t): eta_t = eta0 / sqrt(1 + gamma^2 t)."""
    return partial(_inverse_sqrt, gamma=_checks.non_negative("gamma", gamma))


def inverse_time(decay_rate: float, decay_steps: int = 1):
    """factor(t) = 1 / (1 + decay_rate * t / decay_steps) (Keras InverseTimeDecay)."""
    return partial(
        _inverse_time,
        decay_rate=_checks.non_negative("decay_rate", decay_rate),
        decay_steps=_checks.positive_int("decay_steps", decay_steps),
    )


def step(step_size: int, gamma: float = 0.1):
    """factor(t) = gamma ** (t // step_size), as torch's StepLR."""
    return partial(
        _step,
        step_size=_checks.positive_int("step_size", step_size),
        gamma=_checks.positive("gamma", gamma),
    )


def exponential(gamma: float):
    """factor(t) = gamma ** t, as torch's ExponentialLR."""
    return partial(_exponential, gamma=_checks.positive("gamma", gamma))


def cosine(total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0):
    """Linear warmup to 1 over warmup_steps, then a half cosine down to min_factor at total_steps.

    Warmup: factor(t) = (t + 1) / warmup_steps for t < warmup_steps. Then
    factor(t) = min_factor + (1 - min_factor) * (1 + cos(pi * s)) / 2 with
    s = (t - warmup_steps) / (total_steps - warmup_steps); min_factor from
    total_steps on. Without warmup it is torch's CosineAnnealingLR with
    T_max = total_steps and eta_min = min_factor * base_lr.
    """
    total_steps = _checks.positive_int("total_steps", total_steps)
    warmup_steps = _checks.non_negative_int("warmup_steps", warmup_steps)
    if warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps must be smaller than total_steps = {total_steps}; got {warmup_steps}"
        )
    min_factor = _checks.probability("min_factor", min_factor)
    return partial(
        _cosine, total_steps=total_steps, warmup_steps=warmup_steps, min_factor=min_factor
    )


def lambda_lr(optimizer: torch.optim.Optimizer, schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying `schedule` (one of the above) to every parameter group."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}"
        )
    if not callable(schedule):
        raise ValueError(f"schedule must be a function of the step; got {schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


SCHEDULES = {
    "inverse_sqrt": inverse_sqrt,
    "inverse_time": inverse_time,
    "step": step,
    "exponential": exponential,
    "cosine": cosine,
}

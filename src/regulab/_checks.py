"""Argument checks shared by the library and the command line.

Each raises ValueError naming the parameter, what is allowed and what was given.
"""

import math
from numbers import Real

import torch


def positive_int(name: str, value) -> int:
    """Return value if it is an integer >= 1, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (1, 2, ...); got {value!r}")
    return value


def non_negative(name: str, value) -> float:
    """Return value as a float if it is a finite number >= 0, else raise ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def positive(name: str, value) -> float:
    """Return value as a float if it is a finite number > 0, else raise ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
    return float(value)


def one_of(name: str, value, allowed) -> str:
    """Return value if it is one of allowed, else raise ValueError."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value


def probability(name: str, value) -> float:
    """Return value as a float if it is a number in [0, 1], else raise ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")
    return float(value)


def non_negative_int(name: str, value) -> int:
    """Return value if it is an integer >= 0, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (0, 1, 2, ...); got {value!r}")
    return value


def tensors(name: str, params) -> list:
    """Return params (one tensor or an iterable of tensors) as a list of tensors."""
    if isinstance(params, torch.Tensor):
        return [params]
    try:
        items = list(params)
    except TypeError:
        items = None
    if items and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], torch.Tensor) for p in items
    ):
        raise ValueError(
            f"{name} must be tensors, not (name, tensor) pairs: pass model.parameters(), "
            "not model.named_parameters()"
        )
    if items is None or not all(isinstance(p, torch.Tensor) for p in items):
        raise ValueError(
            f"{name} must be a tensor or an iterable of tensors, such as "
            f"model.parameters(); got {type(params).__name__}"
        )
    return items


def devices() -> list[str]:
    """The torch devices available on this machine ('cpu', 'cuda', 'cuda:0', ..., 'mps')."""
    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        available.append("mps")
    return available


def device(name: str, value) -> str:
    """Return value if it names a torch device available here, else raise ValueError."""
    available = devices()
    if value not in available:
        raise ValueError(
            f"{name} must be a device available on this machine ({', '.join(available)}); "
            f"got {value!r}"
        )
    return value

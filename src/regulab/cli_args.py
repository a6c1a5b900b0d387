"""Argument types of the `regulab` command: each checks one option and says what is allowed."""

import argparse
import math
from pathlib import Path

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def typed(convert, check, allowed):
    """An argparse type: convert the text, then check it; errors state `allowed` and the text."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not check(value):
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}")
        return value

    return parse


positive_int = typed(int, lambda v: v >= 1, "a positive integer (1, 2, ...)")
non_negative_int = typed(int, lambda v: v >= 0, "an integer >= 0")
positive_float = typed(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def lambda_list(text: str) -> tuple[float, ...]:
    """Parse '0,3' into (0.0, 3.0): distinct finite numbers >= 0."""
    allowed = "a comma-separated list of distinct finite numbers >= 0, such as 0,3"
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if (
        not values
        or any(not math.isfinite(v) or v < 0 for v in values)
        or len(set(values)) != len(values)
    ):
        raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}")
    return values


def out_path(text: str) -> Path:
    """A non-empty folder path."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a folder path; got {text!r}")
    return Path(text)


def device(text: str) -> str:
    """A torch device that exists on this machine ('cpu', 'cuda', 'cuda:1', 'mps')."""
    import torch

    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        available.append("mps")
    if text not in available:
        raise argparse.ArgumentTypeError(
            f"must be a device available on this machine ({', '.join(available)}); got {text!r}"
        )
    return text


def fraction_list(text: str) -> tuple[float, ...]:
    """Parse '0.1,0.5' into (0.1, 0.5): distinct numbers strictly between 0 and 1."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 < v < 1 for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of distinct numbers in (0, 1), such as "
            f"0.1,0.5,0.9; got {text!r}"
        )
    return values


def ratio(text: str) -> float:
    """A pruning ratio: a number in [0, 1)."""
    return ratio_list(text, what="a number in [0, 1), such as 0.5")[0]


def ratio_list(text: str, what: str = "") -> tuple[float, ...]:
    """Parse '0.3,0.5' into (0.3, 0.5): distinct numbers in [0, 1)."""
    try:
        values = tuple(float(v) + 0.0 for v in text.split(","))  # + 0.0: -0 is 0
    except ValueError:
        values = ()
    if not values or not all(0 <= v < 1 for v in values) or len(set(values)) != len(values):
        allowed = (
            what or "a comma-separated list of distinct numbers in [0, 1), such as 0.3,0.5,0.7"
        )
        raise argparse.ArgumentTypeError(f"must be {allowed}; got {text!r}")
    return values

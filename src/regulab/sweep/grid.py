"""The grid of regularization strengths: "0,logspace(-3,2,32)" -> a sorted list of floats.

Items are separated by commas (commas inside parentheses belong to a function):
a number (0, 1e-3, .5), logspace(a,b,n) = n values from 10**a to 10**b, or
linspace(a,b,n) = n values from a to b, both with numpy's semantics. Parsed by
hand, never with eval.
"""

import math
import re
from numbers import Real

import numpy as np

ALLOWED = (
    "comma-separated strengths >= 0: numbers (0, 1e-3, .5), logspace(a,b,n) "
    "(n values from 10**a to 10**b) or linspace(a,b,n) (n values from a to b), "
    'e.g. "0,logspace(-3,2,32)"'
)
FUNCTIONS = {"logspace": np.logspace, "linspace": np.linspace}
_CALL = re.compile(r"([A-Za-z_]\w*)\s*\((.*)\)", re.DOTALL)


MAX_N = 1_000_000  # strengths per logspace/linspace: beyond any memory, refused at once


def parse_grid(text, name: str = "--grid") -> list[float]:
    """Return the strengths in `text` sorted ascending, exact duplicates removed.

    `text` is a string as above, or a list/tuple of numbers (checked the same
    way). Raises ValueError naming `name`, what is allowed and what was given.
    """

    def fail(problem: str):
        raise ValueError(f"{name} must be {ALLOWED}; got {text!r}: {problem}")

    if isinstance(text, list | tuple | np.ndarray):
        values = []
        for v in text.ravel().tolist() if isinstance(text, np.ndarray) else text:
            if isinstance(v, bool) or not isinstance(v, Real):
                fail(f"{v!r} is not a number")
            values.append(float(v))
    elif isinstance(text, str):
        values = [v for item in _split(text, fail) for v in _item(item, fail)]
    else:
        fail(f"expected a string or a list of numbers, not {type(text).__name__}")
    if not values:
        fail("the grid is empty")
    for v in values:
        if not math.isfinite(v):
            fail(f"strengths must be finite, and {v!r} is not")
        if v < 0:
            fail(f"strengths must be >= 0, and {v:g} is negative")
    return sorted({v + 0.0 for v in values})  # + 0.0 turns -0.0 into 0.0


def _split(text: str, fail) -> list[str]:
    """The top-level comma-separated items of text, stripped."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                fail("a ')' has no matching '('")
        elif ch == "," and depth == 0:
            items.append(text[start:i].strip())
            start = i + 1
    if depth:
        fail("a '(' is not closed")
    items.append(text[start:].strip())
    if len(items) == 1 and not items[0]:
        fail("the grid is empty")
    for i, item in enumerate(items):
        if not item:
            fail(f"item {i + 1} is empty (two commas in a row, or a comma at an end)")
    return items


def _item(item: str, fail) -> list[float]:
    """The values of one item: a number, logspace(a,b,n) or linspace(a,b,n)."""
    call = _CALL.fullmatch(item)
    if call is None:
        return [_number(item, item, fail)]
    func, args = call.group(1), [a.strip() for a in call.group(2).split(",")]
    if func not in FUNCTIONS:
        fail(f"unknown function {func!r} in {item!r} (use logspace or linspace)")
    if len(args) != 3:
        fail(f"{func} takes 3 arguments (a, b, n), and {item!r} has {len(args)}")
    if not all(args):
        fail(f"an argument of {item!r} is empty")
    a, b = (_number(x, item, fail) for x in args[:2])
    try:
        n = int(args[2])
    except ValueError:
        n = None
    if n is None or n < 1:
        fail(f"n must be an integer >= 1, and {item!r} has n = {args[2]}")
    if n > MAX_N:
        fail(f"n must be at most {MAX_N:,} (one model per strength), and {item!r} has n = {n}")
    with np.errstate(over="ignore"):  # an overflow to inf is reported as not finite
        return FUNCTIONS[func](a, b, n).tolist()


def _number(text: str, item: str, fail) -> float:
    """float(text), or fail saying that item holds something that is not a number."""
    try:
        return float(text)
    except ValueError:
        fail(f"{text!r} is not a number" + (f" (in {item!r})" if text != item else ""))


def format_grid(values) -> str:
    """A short description of sorted strengths: "0 and 32 log-spaced values from 0.001 to 100"."""
    values = np.asarray(values, dtype=float)
    if len(values) <= 5:
        return ", ".join(f"{v:g}" for v in values)
    if np.allclose(np.diff(values), values[1] - values[0], rtol=1e-6, atol=0):
        return f"{len(values)} evenly spaced values from {values[0]:g} to {values[-1]:g}"
    pos = values[1:] if values[0] == 0 else values
    ratios = pos[1:] / pos[:-1] if pos[0] > 0 else np.array([])
    spacing = "log-spaced " if len(pos) > 2 and np.allclose(ratios, ratios[0], rtol=1e-6) else ""
    text = f"{len(pos)} {spacing}values from {pos[0]:g} to {pos[-1]:g}"
    return f"0 and {text}" if values[0] == 0 else text

"""The search space of `regulab tune`: which regularizers, how strong, and how to draw them.

Text form (the `--space` option), entries separated by spaces, commas or semicolons:

    weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6) label_smoothing=uniform(0,0.2)|off

`log(low,high)` draws log-uniformly (0 < low <= high), `uniform(low,high)` uniformly;
`|off` turns the technique off (its value 0, as in the recipe) in half the draws, and
`|off(p)` in a share p. The dict form (library, the recipe's `[tune]` section) maps a
name to `(scale, low, high)`, `(scale, low, high, "off")`, `(scale, low, high, "off", p)`
or to the text of one entry's right-hand side (`"log(1e-5,1e-1)|off"`).

`draw` fills the space with a scrambled Sobol sequence (Owen 1998; scipy.stats.qmc), one
dimension per hyperparameter plus one per "off" choice, so n configurations cover the
space more evenly than n independent draws (Bergstra & Bengio, JMLR 2012, on random
search; quasi-random points do better still).
"""

import math
import re
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from regulab import _checks

# name: (kind, what the value is); kinds are explained in KINDS below
HYPERPARAMETERS = {
    "weight_decay": ("strength", "the optimizer's weight decay (coupled for sgd/adam, AdamW's)"),
    "l2": ("strength", "l2 * ||w||^2 / 2 on the weights, coupled"),
    "l1": ("strength", "l1 * ||w||_1 on the weights"),
    "dropout": ("probability", "dropout p of every dropout layer"),
    "drop_path": ("probability", "DropPath probability (stochastic depth, arXiv:1603.09382)"),
    "drop_block": ("probability", "DropBlock drop probability (arXiv:1810.12890)"),
    "max_norm": ("positive", "radius of the max-norm constraint ||w|| <= max_norm (0 = off)"),
    "bn_sparsity": ("strength", "L1 on BatchNorm scales (arXiv:1708.06519)"),
    "label_smoothing": ("probability", "share of the target spread uniformly over classes"),
    "mixup": ("strength", "mixup's Beta(alpha, alpha) alpha (arXiv:1710.09412; 0 = off)"),
    "cutmix": ("strength", "CutMix's Beta(alpha, alpha) alpha (arXiv:1905.04899; 0 = off)"),
    "crop": ("pixels", "zero-padding before a random crop back to size, pixels"),
    "noise": ("strength", "std of added Gaussian noise, normalized input units"),
    "cutout": ("pixels", "side of the zeroed square, pixels (arXiv:1708.04552)"),
    "lr": ("positive", "learning rate (cannot be off)"),
}
KINDS = {  # kind: the bounds it allows
    "strength": "finite numbers >= 0",
    "probability": "probabilities in [0, 1)",
    "positive": "finite numbers > 0",
    "pixels": "integers >= 0 (pixels)",
}
SCALES = ("log", "uniform")
OFF_VALUE = 0.0  # a technique that is off has strength 0, as in the recipe
NO_OFF = ("lr",)
_ENTRY = re.compile(
    r"(?P<scale>\w+)\s*\((?P<low>[^,()]*),(?P<high>[^,()]*)\)"
    r"\s*(?:\|\s*(?P<off>off)\s*(?:\((?P<p>[^()]*)\))?)?"
)


@dataclass(frozen=True)
class Range:
    """One hyperparameter's range: drawn on `scale` between low and high, off in a share p_off."""

    name: str  # a key of HYPERPARAMETERS
    scale: str  # "log" (log-uniform) or "uniform"
    low: float
    high: float
    p_off: float = 0.0  # share of draws with the technique off (value OFF_VALUE)

    @property
    def integer(self) -> bool:
        return HYPERPARAMETERS[self.name][0] == "pixels"

    def __str__(self) -> str:
        off = "" if not self.p_off else "|off" if self.p_off == 0.5 else f"|off({self.p_off:g})"
        return f"{self.name}={self.scale}({self.low:g},{self.high:g}){off}"

    def unit(self, values: torch.Tensor) -> torch.Tensor:
        """Values -> their position in [0, 1] on the range's scale (log for log ranges)."""
        v = values.double()
        if self.scale == "log":
            lo, hi, v = math.log(self.low), math.log(self.high), v.clamp(min=self.low).log()
        else:
            lo, hi = self.low, self.high
        return ((v - lo) / (hi - lo)).clamp(0, 1) if hi > lo else torch.zeros_like(v)

    def value(self, u: torch.Tensor) -> torch.Tensor:
        """Positions u in [0, 1] -> values; pixels are rounded to the nearest integer."""
        u = u.double()
        lo, hi = self.low, self.high
        if self.integer:  # half a pixel more each side: the end integers get a fair share
            lo, hi = lo - 0.5, hi + 0.5  # log ranges of pixels have low >= 1, so lo > 0
        if self.scale == "log":
            v = torch.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:
            v = lo + u * (hi - lo)
        if self.integer:
            return v.round().clamp(self.low, self.high).long()
        return v.clamp(self.low, self.high)


@dataclass(frozen=True)
class Space:
    """The ranges of a search space, in the order given; `space["dropout"]` finds one."""

    ranges: tuple[Range, ...]

    def __iter__(self):
        return iter(self.ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    def __getitem__(self, name: str) -> Range:
        for r in self.ranges:
            if r.name == name:
                return r
        raise KeyError(f"{name!r} is not in the space ({', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.ranges)

    def __str__(self) -> str:
        return " ".join(map(str, self.ranges))


def parse_space(space, name: str = "space") -> Space:
    """A `Space` from the text or dict form above; raises ValueError naming `name` and the entry."""
    if isinstance(space, Space):
        return space
    if isinstance(space, str):
        entries = []
        for item in _split(space):
            key, eq, rest = item.partition("=")
            if not eq:
                raise ValueError(
                    f"{name}: entries must be NAME=log(low,high) or NAME=uniform(low,high), "
                    f"optionally followed by |off or |off(p); got {item!r}"
                )
            entries.append((key.strip(), rest.strip()))
    elif isinstance(space, dict):
        entries = list(space.items())
    else:
        raise TypeError(
            f"{name} must be a string such as 'weight_decay=log(1e-5,1e-1)' or a dict such as "
            f"{{'weight_decay': ('log', 1e-5, 1e-1)}}; got {type(space).__name__}"
        )
    if not entries:
        raise ValueError(
            f"{name} must name at least one hyperparameter (e.g. 'weight_decay=log(1e-5,1e-1)'); "
            f"got {space!r}"
        )
    ranges = [_range(key, spec, name) for key, spec in entries]
    seen = [r.name for r in ranges]
    for key in seen:
        if seen.count(key) > 1:
            raise ValueError(f"{name}: each hyperparameter may appear once; got {key} twice")
    return Space(tuple(ranges))


def _split(text: str) -> list[str]:
    """Top-level entries of text: separated by whitespace, ',' or ';' outside parentheses."""
    squeezed, depth = "", 0
    for ch in text:  # whitespace inside parentheses means nothing
        depth += (ch == "(") - (ch == ")")
        if not (depth > 0 and ch.isspace()):
            squeezed += ch
    squeezed = re.sub(r"\s*([=|(])\s*", r"\1", squeezed)  # "a = log (" -> "a=log("
    items, depth, current = [], 0, ""
    for ch in squeezed:
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and (ch.isspace() or ch in ",;"):
            items.append(current)
            current = ""
        else:
            current += ch
    return [i for i in [*items, current] if i]


def _range(key, spec, name: str) -> Range:
    """One checked Range from a name and its spec (text or tuple)."""
    if key not in HYPERPARAMETERS:
        raise ValueError(
            f"{name}: unknown hyperparameter {key!r}; allowed: {', '.join(HYPERPARAMETERS)}"
        )
    given = f"{key}={spec}" if isinstance(spec, str) else f"{key}: {spec!r}"
    scale, low, high, p_off = _fields(spec, key, name)
    if scale not in SCALES:
        raise ValueError(f"{name}: {key} must be drawn by log or uniform; got {given!r}")
    kind = HYPERPARAMETERS[key][0]

    def fail(problem: str):
        raise ValueError(f"{name}: {key} {problem}; got {given!r}")

    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, Real) or not math.isfinite(bound):
            fail(f"bounds must be {KINDS[kind]}")
    if low > high:
        fail("needs low <= high")
    if low < 0 or (kind == "probability" and high >= 1):
        fail(f"bounds must be {KINDS[kind]}")
    if kind == "positive" and low <= 0:
        hint = "" if key in NO_OFF else "; add |off for a share at 0"
        fail(f"bounds must be {KINDS[kind]}{hint}")
    if kind == "pixels" and (low != int(low) or high != int(high)):
        fail(f"bounds must be {KINDS[kind]}")
    if scale == "log" and low <= 0:
        fail("log(low,high) needs low > 0; for a share at 0 use log with low > 0 and add |off")
    if isinstance(p_off, bool) or not isinstance(p_off, Real) or not 0 <= p_off < 1:
        fail("off share p in |off(p) must be a number in [0, 1)")
    if p_off and key in NO_OFF:
        fail("cannot be off (nothing trains without it)")
    return Range(key, scale, float(low), float(high), float(p_off))


def _fields(spec, key: str, name: str):
    """(scale, low, high, p_off) from text 'log(a,b)|off(p)' or a tuple; numbers not yet checked."""
    if isinstance(spec, str):
        m = _ENTRY.fullmatch(spec.strip())
        if m is None:
            raise ValueError(
                f"{name}: {key} must be log(low,high) or uniform(low,high), optionally followed "
                f"by |off or |off(p); got {key}={spec!r}"
            )
        values = [_number(m[g], key, spec, name) for g in ("low", "high")]
        p_off = 0.0 if not m["off"] else 0.5 if m["p"] is None else _number(m["p"], key, spec, name)
        return m["scale"], *values, p_off
    if isinstance(spec, list | tuple) and (
        len(spec) == 3 or (len(spec) in (4, 5) and spec[3] == "off")
    ):
        p_off = 0.0 if len(spec) == 3 else 0.5 if len(spec) == 4 else spec[4]
        return spec[0], spec[1], spec[2], p_off
    raise ValueError(
        f"{name}: {key} must be (scale, low, high), (scale, low, high, 'off') or "
        f"(scale, low, high, 'off', p) with scale 'log' or 'uniform'; got {spec!r}"
    )


def _number(text: str, key: str, spec: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(
            f"{name}: {key} bounds must be numbers; got {text.strip()!r} in {key}={spec}"
        ) from None


def draw(space, n: int, seed: int = 0, *, method: str = "sobol") -> dict[str, torch.Tensor]:
    """n configurations of `space`: name -> (n,) tensor (float64; int64 for pixels).

    method "sobol": the first n points of a scrambled Sobol sequence of 2**ceil(log2 n)
    points; "lhs": a Latin hypercube (every dimension's n strata hit once). Each range
    with an off share gets one more dimension: a configuration is off where it falls
    below p_off. Reproducible by seed; numpy's and torch's global generators are untouched.
    """
    from scipy.stats import qmc

    space = parse_space(space)
    _checks.positive_int("n", n)
    _checks.non_negative_int("seed", seed)
    _checks.one_of("method", method, ("sobol", "lhs"))
    dims = len(space) + sum(r.p_off > 0 for r in space)
    if method == "sobol":
        m = max(0, math.ceil(math.log2(n)))
        u = qmc.Sobol(dims, scramble=True, rng=seed).random_base2(m)[:n]
    else:
        u = qmc.LatinHypercube(dims, scramble=True, rng=seed).random(n)
    u = torch.from_numpy(np.ascontiguousarray(u))
    out, extra = {}, len(space)
    for j, r in enumerate(space):
        values = r.value(u[:, j])
        if r.p_off > 0:
            values = torch.where(u[:, extra] < r.p_off, torch.zeros_like(values), values)
            extra += 1
        out[r.name] = values
    return out

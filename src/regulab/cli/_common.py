"""What every `regulab` command shares: argument types, the recipe options, progress display.

Each argument type checks one option and says what is allowed. Nothing here
imports torch at import time, so `regulab --help` appears at once.
"""

import argparse
import math
from pathlib import Path

EXIT_USAGE = 2  # bad input: nothing was written
EXIT_FAILED = 1  # the run could not finish (data missing, training diverged, ...)
EXIT_INTERRUPTED = 130  # Ctrl-C


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
MAX_SEEDS = 10_000  # runs of one command: a bound, so that a typo fails at once
seed_int = typed(int, lambda v: 0 <= v < 2**63, "an integer in [0, 2^63)")
seed_count = typed(int, lambda v: 1 <= v <= MAX_SEEDS, f"an integer in [1, {MAX_SEEDS}]")


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
    from regulab import _checks

    try:
        return _checks.device("", text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from e


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


def add_out_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """--out and --overwrite, shared by every command that writes a run folder."""
    p.add_argument(
        "--out",
        type=out_path,
        metavar="DIR",
        help=f"run folder to write (default: runs/{command}-YYYYmmdd-HHMMSS)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it is an earlier run folder (never any other folder)",
    )


def inputs(args, *recipes) -> list[tuple[str, Path]]:
    """What a command reads, as (option, path) pairs that its --out must neither be, hold
    nor lie inside (`runs.check_out_against_inputs`): the recipe file, --from, the RUN_DIRs
    of compare, and each recipe's data file."""
    found = [("RECIPE", getattr(args, "recipe", None)), ("--from", getattr(args, "source", None))]
    found += [("RUN_DIR", run) for run in getattr(args, "runs", None) or ()]
    found += [("data.path", Path(r.base) / r.data.path) for r in recipes if r.data.path]
    return [(option, Path(path)) for option, path in found if path is not None]


def add_recipe_argument(p: argparse.ArgumentParser, help: str, optional: bool = False) -> None:
    """The positional RECIPE (a TOML file); optional where a run folder can stand for it."""
    p.add_argument("recipe", nargs="?" if optional else None, type=Path, metavar="RECIPE",
                   help=help)  # fmt: skip


def add_recipe_arguments(
    p: argparse.ArgumentParser, command: str, *, variant: bool = True, seed: bool = True
) -> None:
    """The options of every command that runs a recipe: --set, --variant, --seed,
    --data-dir and --device (declared here once), then --out and --overwrite."""
    if variant:
        p.add_argument("--variant", metavar="NAME", help=f"the recipe variant to {command}")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value, checked against its type (repeatable), "
        "e.g. --set optim.lr=0.1 --set model.dropout=[0.2,0.5]",
    )
    if seed:
        p.add_argument(
            "--seed", type=seed_int, help="seed in [0, 2^63) (default: the recipe's train.seed)"
        )
    p.add_argument(
        "--data-dir",
        type=out_path,
        metavar="DIR",
        help="folder holding the data files (sets data.root; default: "
        "$REGULAB_DATA_DIR, then ~/.cache/regulab)",
    )
    p.add_argument("--device", type=device, help="torch device (sets train.device)")
    add_out_arguments(p, command)


def progress(console, rank: int = 0, description: str = "[progress.description]{task.description}"):
    """A rich progress bar for the terminal; silent in logs, pipes and on ranks other than 0."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        description,
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=rank != 0 or not console.is_terminal,
    )


def print_report(console, out, seconds: float | None = None) -> None:
    """The last line of every command: where report.md is (and how long the run took).

    A path must stay whole for copy and paste: no wrapping, no markup.
    """
    took = "" if seconds is None else f"  ({seconds:.1f} s)"
    console.print(f"Report: {out / 'report.md'}{took}", soft_wrap=True, markup=False)

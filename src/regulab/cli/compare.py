"""`regulab compare`: one report over several training runs."""

import argparse
from pathlib import Path

from regulab.cli._common import add_out_arguments, inputs, print_report
from regulab.errors import UsageError

HELP = "one report over several training runs: curves, mean ± std over seeds, gap, sparsity"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab compare`."""
    p.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run folders of `regulab train` (single or multi-run folders)",
    )
    add_out_arguments(p, "compare")


def run(args, console) -> int:
    """`regulab compare`: the report's folder, then its table."""
    from regulab import runs
    from regulab.recipe import compare
    from regulab.recipe import run as recipe_run

    out = runs.checked_out(
        args.out or runs.default_run_dir("compare"), args.overwrite, inputs(args)
    )
    try:
        loaded = compare.load_runs(args.runs)
        compare.same_task(loaded)  # a regression run is not ranked against a classification run
    except ValueError as e:  # a folder that is not a run: exit 2, nothing written
        raise UsageError(str(e)) from e
    summary = recipe_run.compare_command(loaded, out, overwrite=args.overwrite, inputs=inputs(args))
    console.print(compare.rich_table(summary["groups"]))
    console.print(compare.TABLE_NOTE, soft_wrap=True)
    print_report(console, out)
    return 0

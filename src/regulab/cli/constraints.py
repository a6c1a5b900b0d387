"""`regulab constraints`: soft (penalty) vs hard (projection) L2, and the 2-D L1/L2 picture."""

import argparse

from regulab.cli._common import (
    add_out_arguments,
    fraction_list,
    positive_float,
    print_report,
    seed_int,
)
from regulab.errors import UsageError

HELP = "soft (penalty) vs hard (projection) L2, and why L1 gives zeros: a 2-D picture"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab constraints`."""
    p.add_argument(
        "--fractions",
        type=fraction_list,
        default=(0.1, 0.5, 0.9),
        metavar="F1,F2,...",
        help="radii theta as fractions of the unconstrained minimum-norm ||w||^2 "
        "(default: 0.1,0.5,0.9)",
    )
    p.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        help="seed of the demo's data set and initial weights (default: 0)",
    )
    p.add_argument(
        "--radius",
        type=positive_float,
        default=1.0,
        help="radius r of the L2 ball and the L1 diamond in the 2-D figure (default: 1)",
    )
    add_out_arguments(p, "constraints")


def run(args, console) -> int:
    """`regulab constraints`: the run folder, then the table and the 2-D optima."""
    from regulab import runs
    from regulab.demos import equivalence, equivalence_report, geometry
    from regulab.demos import run as demos

    try:
        geometry.check_radius(args.radius)  # before the run folder: the L1 optimum is exact
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    out = args.out or runs.default_run_dir("constraints")
    summary = demos.constraints(
        args.seed, args.fractions, args.radius, out, overwrite=args.overwrite
    )
    rows, geo = summary["equivalence"], summary["geometry"]
    console.print(equivalence_report.rich_table(rows))
    if not summary["converged"]:
        console.print(
            f"warning: some solvers did not converge within {equivalence.MAX_STEPS:,} steps; "
            "the comparison is not conclusive for those theta",
            soft_wrap=True,
        )
    console.print(
        f"2-D picture, r = {geo['radius']:g}: L2 optimum {_pair(geo['l2_optimum'])}, "
        f"L1 optimum {_pair(geo['l1_optimum'])} (exact zeros: L2 {geo['l2_exact_zeros']}, "
        f"L1 {geo['l1_exact_zeros']})",
        soft_wrap=True,
    )
    print_report(console, out, summary["seconds"])
    return 0


def _pair(w) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in w) + ")"

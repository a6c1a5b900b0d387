"""The `regulab` command: one subcommand per capability, each writing a run folder.

Usage errors print one line naming the option, what is allowed and what was
given, and exit with code 2; no traceback, nothing written.
"""

import argparse
import sys
import time

from regulab import __version__, cli_demo, cli_slim, cli_sweep, cli_train
from regulab.cli_args import (
    EXIT_USAGE,
    Parser,
    fraction_list,
    out_path,
    positive_float,
    typed,
)

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Settings that passed the parser but not the command's own checks."""


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


def add_constraints_arguments(p: argparse.ArgumentParser) -> None:
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
        type=typed(int, lambda v: 0 <= v < 2**63, "an integer in [0, 2^63)"),
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


def run_constraints(args, console) -> int:
    """`regulab constraints`: soft vs hard L2 on the demo's data, and the 2-D L1/L2 picture."""
    from regulab import equivalence, geometry, runs

    out = args.out or runs.default_run_dir("constraints")
    start = time.perf_counter()
    settings = {"seed": args.seed, "fractions": list(args.fractions), "radius": args.radius}
    with runs.run_folder(out, overwrite=args.overwrite) as tmp:
        runs.write_json(
            tmp / "config.json",
            {"command": "constraints", "settings": settings, **runs.environment()},
        )
        rows, info = equivalence.experiment(args.seed, args.fractions)
        geo = geometry.geometry(args.radius)
        geometry.plot_geometry(geo, tmp / "geometry.png")
        equivalence.write_csv(rows, tmp / "equivalence.csv")
        (tmp / "report.md").write_text(equivalence.report_md(rows, info, geo, "geometry.png"))
        seconds = time.perf_counter() - start
        runs.write_json(
            tmp / "summary.json",
            {
                "command": "constraints",
                "status": "completed",
                "seconds": round(seconds, 3),
                "data": info,
                "tolerance": equivalence.TOLERANCE,
                "max_rel_diff_w": max(r["rel_diff_w"] for r in rows),
                "converged": all(r["converged"] for r in rows),
                "equivalent": equivalence.equivalent(rows),
                "equivalence": rows,
                "geometry": geo,
            },
        )
    console.print(equivalence.rich_table(rows))
    if not all(r["converged"] for r in rows):
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
    console.print(f"Report: {out / 'report.md'}  ({seconds:.1f} s)", soft_wrap=True, markup=False)
    return 0


def _pair(w) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in w) + ")"


# name -> (help, add arguments, run); later capabilities add their entry here.
COMMANDS = {
    "demo": (
        "weight decay on high-dimensional linear regression (lambda = 0 vs 3)",
        cli_demo.add_demo_arguments,
        cli_demo.run_demo,
    ),
    "constraints": (
        "soft (penalty) vs hard (projection) L2, and why L1 gives zeros: a 2-D picture",
        add_constraints_arguments,
        run_constraints,
    ),
    "train": (
        "train a TOML recipe (its variants and seeds) with checkpoints, history and a report",
        cli_train.add_train_arguments,
        cli_train.run_train,
    ),
    "compare": (
        "one report over several training runs: curves, mean ± std over seeds, gap, sparsity",
        cli_train.add_compare_arguments,
        cli_train.run_compare,
    ),
    "sweep": (
        "train many regularization strengths at once; the path and the strength chosen on "
        "validation data",
        cli_sweep.add_sweep_arguments,
        cli_sweep.run_sweep,
    ),
    "slim": (
        "network slimming: L1 on BatchNorm scales, global channel pruning into a smaller "
        "network, fine-tuning, measured size and speed",
        cli_slim.add_slim_arguments,
        cli_slim.run_slim,
    ),
}


def build_parser() -> Parser:
    """The `regulab` argument parser with one subparser per command."""
    parser = Parser(prog="regulab", description="Regularization in deep learning, done correctly.")
    parser.add_argument("--version", action="version", version=f"regulab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, add_arguments, _) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `regulab` console script; returns the exit code."""
    from rich.console import Console

    from regulab.config import RecipeError
    from regulab.linear_regression import TrainingDiverged
    from regulab.runs import RunFolderError
    from regulab.sweep.select import NothingToChoose

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough that tables are not cut
        console = Console(width=160)
    run = COMMANDS[args.command][2]
    try:
        return run(args, console)
    except (
        UsageError,
        RunFolderError,
        RecipeError,
    ) as e:  # the parser checked each option on its own
        print(f"regulab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NothingToChoose as e:
        print(f"regulab {args.command}: error: {e}; nothing was written", file=sys.stderr)
        return EXIT_FAILED
    except TrainingDiverged as e:
        print(f"regulab {args.command}: error: {e}; nothing was written", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"regulab {args.command}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

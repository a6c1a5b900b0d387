"""`regulab train`: a recipe's variants and seeds, each trained into a run folder."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from regulab.cli._common import (
    add_recipe_argument,
    add_recipe_arguments,
    inputs,
    out_path,
    print_report,
    progress,
    seed_count,
)
from regulab.errors import UsageError

HELP = "train a TOML recipe (its variants and seeds) with checkpoints, history and a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab train`."""
    add_recipe_argument(p, "TOML recipe, e.g. recipes/dropout_mlp_fashion.toml", optional=True)
    p.add_argument(
        "--seeds",
        type=seed_count,
        metavar="N",
        help="train seeds train.seed .. train.seed+N-1 (default: 1, at most 10000)",
    )
    p.add_argument(
        "--resume",
        type=out_path,
        metavar="DIR",
        help="continue the run folder DIR from its newest checkpoints",
    )
    add_recipe_arguments(p, "train", variant=False, seed=False)


def run(args, console) -> int:
    """`regulab train`: check everything, train, print the table."""
    from regulab import recipe as recipes
    from regulab import runs
    from regulab.cli._common import EXIT_FAILED
    from regulab.recipe import run as recipe_run

    recipe, seeds, out = _plan(args)
    read = () if args.resume else inputs(args, *recipes.expand(recipe).values())
    rank = int(os.environ.get("RANK", "0"))  # torchrun's rank: only rank 0 writes, draws a bar
    if rank == 0:  # before the work (train_command checks again, holding the folder)
        runs.checked_out(out, args.overwrite, read, resume=bool(args.resume))
    recipe_run.preflight(recipe, seeds)
    start = time.perf_counter()
    with progress(console, rank) as bar:
        rank, out, summary = recipe_run.train_command(
            recipe, seeds, out, resume=bool(args.resume), overwrite=args.overwrite,
            inputs=read, progress=bar,
        )  # fmt: skip
    if rank != 0:
        return 0
    _print_result(console, out, time.perf_counter() - start)
    return 0 if summary["status"] == "completed" else EXIT_FAILED


def _plan(args):
    """(recipe, seeds, out) from a recipe file and overrides, or from the folder to resume."""
    from regulab import recipe as recipes
    from regulab import runs

    if args.resume:
        clash = [
            o
            for o, v in (
                ("--set", args.set),
                ("--seeds", args.seeds),
                ("--out", args.out),
                ("--overwrite", args.overwrite),
                ("--device", args.device),
            )
            if v
        ]
        if clash:
            raise UsageError(
                f"--resume continues a run as it was configured; {', '.join(clash)} "
                "cannot be combined with it"
            )
        runs.recover(args.resume)  # an --overwrite of it that a crash interrupted
        recipe, seeds = recipes.resumed(args.resume, args.recipe, args.data_dir)
        return recipe, seeds, args.resume
    if args.recipe is None:
        raise UsageError(
            "RECIPE is required (or --resume DIR); e.g. recipes/dropout_mlp_fashion.toml"
        )
    recipe = recipes.resolve(args.recipe, args.set, data_dir=args.data_dir, device=args.device)
    seeds = recipes.seeds(recipe, args.seeds or 1)
    return recipe, seeds, args.out or runs.default_run_dir("train")


def _print_result(console, out: Path, seconds: float) -> None:
    from regulab.recipe import compare

    loaded = compare.load_runs([out])
    console.print(compare.rich_table(compare.aggregate(loaded)))
    console.print(compare.TABLE_NOTE, soft_wrap=True)
    for run in loaded:
        if run.status != "completed":
            message = json.loads((run.path / "summary.json").read_text()).get("message", "")
            print(f"regulab train: {run.variant} seed {run.seed}: {message}", file=sys.stderr)
    print_report(console, out, seconds)

"""`regulab sweep`: the regularization path of a recipe and the strength chosen on validation."""

import argparse
import contextlib

from regulab.cli._common import (
    add_recipe_argument,
    add_recipe_arguments,
    inputs,
    non_negative_int,
    positive_float,
    positive_int,
    print_report,
    progress,
)
from regulab.errors import DataUnavailable, UsageError
from regulab.recipe.schema import SWEEPABLE

HELP = (
    "train many regularization strengths at once; the path and the strength chosen on "
    "validation data"
)
GRID_HELP = 'strengths: numbers and logspace(a,b,n) / linspace(a,b,n), e.g. "0,logspace(-3,2,32)"'


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab sweep`."""
    add_recipe_argument(p, "TOML recipe")
    p.add_argument(
        "--param",
        choices=tuple(SWEEPABLE),
        default="l2",
        help="what to sweep: penalty.l2, optim.weight_decay, penalty.l1, model.dropout "
        "(every dropout layer) or bn_sparsity (L1 on BatchNorm scales) (default: l2)",
    )
    p.add_argument("--grid", default="0,logspace(-3,2,32)", metavar="GRID", help=GRID_HELP)
    p.add_argument(
        "--folds",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="K-fold cross-validation on train+validation (default: 0, the recipe's "
        "validation split)",
    )
    p.add_argument(
        "--rule",
        choices=("min", "one_se"),
        default="min",
        help="lowest validation loss, or the strongest within one standard error of it",
    )
    p.add_argument(
        "--vary",
        action="store_true",
        help="own initial weights, batch order and dropout noise per strength "
        "(default: shared, so the path shows the strength alone)",
    )
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--chunks", type=positive_int, metavar="N", help="ray: trials (default: 2)")
    p.add_argument("--ray-address", metavar="ADDR", help="ray: an existing cluster's address")
    p.add_argument(
        "--max-memory",
        type=positive_float,
        metavar="GIB",
        help="refuse a sweep estimated to need more (default: 90%% of free memory)",
    )
    add_recipe_arguments(p, "sweep")


def run(args, console) -> int:
    """`regulab sweep`: check, train the grid inside the run folder, print the choice."""
    from regulab import recipe as recipes
    from regulab import runs
    from regulab.sweep import path, report
    from regulab.sweep import run as sweep_run
    from regulab.sweep.search import LambdaSearch

    recipe = recipes.resolve(
        args.recipe, args.set, variant=args.variant, data_dir=args.data_dir, device=args.device
    )
    seed = recipe.train.seed if args.seed is None else args.seed
    out = args.out or runs.default_run_dir("sweep")
    runs.checked_out(out, args.overwrite, inputs(args, recipe))  # before the work
    if args.folds == 1:
        raise UsageError("--folds must be 0 (the validation split) or at least 2; got 1")
    search = LambdaSearch(
        recipe,
        args.param,
        args.grid,
        folds=args.folds,
        rule=args.rule,
        seed=seed,
        vary=args.vary,
        engine=args.engine,
        chunks=args.chunks,
        ray_address=args.ray_address,
        device=recipe.train.device,
        max_memory=args.max_memory,
    )
    try:
        recipe, values = search.resolved()
    except ValueError as e:
        raise UsageError(str(e)) from e
    search.source = recipe
    if args.engine == "ray" and args.ray_address not in (None, "auto"):
        _probe(args.ray_address)
    k = len(values) if args.ray_address is None else -(-len(values) // (args.chunks or 2))
    try:  # before anything is written: the data, the model, the memory of k copies
        data = path.preflight(
            recipe, args.param, k, seed=seed, folds=args.folds, device=recipe.train.device,
            max_memory=args.max_memory,
        )  # fmt: skip
    except recipes.RecipeError:
        raise
    except (OSError, ValueError) as e:  # data not found, download failed, corrupt file
        raise DataUnavailable(str(e)) from e
    settings = {
        "param": args.param,
        "grid": values,
        "grid_text": args.grid,
        "folds": args.folds,
        "rule": args.rule,
        "seed": seed,
        "vary": args.vary,
        "engine": args.engine,
        "chunks": args.chunks,
        "ray_address": args.ray_address,
        "max_memory": args.max_memory,
        "examples": data["examples"],  # what the final fit trains on
        "inputs": data["inputs"],
    }
    data_files = data["data_files"]
    with _progress(console, args, recipe, len(values)) as advance:
        summary = sweep_run.write(
            search,
            recipe,
            values,
            settings,
            out,
            overwrite=args.overwrite,
            on_epoch=advance,
            inputs=inputs(args, recipe),
            data_files=data_files,
        )
    rows, best = search.path_, search.best_index_
    console.print(report.rich_table(rows, best))
    b = search.best_
    acc = f", val accuracy {b['val_accuracy']:.4f}" if b.get("val_accuracy") is not None else ""
    console.print(
        f"chosen {args.param} = {search.best_lambda_:g} "
        f"({summary['selection']}, rule {args.rule}): "
        f"val loss {b['val_loss']:.4g}{acc}, test loss {b['test_loss']:.4g}",
        soft_wrap=True,
        markup=False,
    )
    print_report(console, out, summary["seconds"])
    return 0


def _probe(address: str) -> None:
    """Fail fast on a cluster address nothing listens at (ray.init would retry for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise UsageError(
            f"--ray-address must be HOST:PORT (or ray://HOST:PORT, or auto) of a running Ray "
            f"cluster; cannot reach {address!r}: {e}"
        ) from e


@contextlib.contextmanager
def _progress(console, args, recipe, k: int):
    """A bar over the epochs of every fit (local engine), a spinner on Ray; quiet in logs."""
    what = f"{k} strengths of {args.param}"
    if args.engine == "ray":
        with console.status(f"training {what} on Ray"):
            yield None
        return
    total = recipe.train.epochs * (args.folds + 1 if args.folds else 1)
    with progress(console, description=f"training {what}, epochs") as bar:
        task = bar.add_task("epochs", total=total)
        yield lambda: bar.advance(task)

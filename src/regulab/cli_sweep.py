"""`regulab sweep`: the regularization path of a recipe and the strength chosen on validation."""

import argparse
import contextlib
import sys
import time
from pathlib import Path

from regulab.cli_args import device, non_negative_int, out_path, positive_float, positive_int

GRID_HELP = 'strengths: numbers and logspace(a,b,n) / linspace(a,b,n), e.g. "0,logspace(-3,2,32)"'


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab sweep`."""
    from regulab.cli import add_out_arguments
    from regulab.sweep.engine import PARAMS

    p.add_argument("recipe", type=Path, metavar="RECIPE", help="TOML recipe")
    p.add_argument(
        "--param",
        choices=PARAMS,
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
    p.add_argument("--variant", metavar="NAME", help="the recipe variant to sweep")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value (repeatable)",
    )
    p.add_argument("--seed", type=non_negative_int, help="seed (default: the recipe's train.seed)")
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
    p.add_argument("--data-dir", type=out_path, metavar="DIR", help="folder of the data files")
    p.add_argument("--device", type=device, help="torch device (sets train.device)")
    add_out_arguments(p, "sweep")


def run_sweep(args, console) -> int:
    """`regulab sweep`: train the grid, choose on validation, write the path and report."""
    from regulab import config, runs
    from regulab.cli import EXIT_FAILED, UsageError
    from regulab.sweep import path, report
    from regulab.sweep.search import LambdaSearch

    recipe = config.load(args.recipe, args.set)
    if args.variant is not None:
        variants = config.expand(recipe)
        if args.variant not in variants or not recipe.variants:
            names = ", ".join(recipe.variants) or "(none: the recipe has no variants)"
            raise config.RecipeError(f"--variant must be one of {names}; got {args.variant!r}")
        recipe = variants[args.variant]
    if args.data_dir is not None:
        recipe.data.root = str(args.data_dir)
    if args.device is not None:
        recipe.train.device = args.device
    seed = recipe.train.seed if args.seed is None else args.seed
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
    search.recipe = recipe
    if args.engine == "ray" and args.ray_address not in (None, "auto"):
        _probe(args.ray_address, UsageError)
    k = len(values) if args.ray_address is None else -(-len(values) // (args.chunks or 2))
    try:  # before anything is written: the data, the model, the memory of k copies
        data = path.preflight(
            recipe,
            args.param,
            k,
            seed=seed,
            folds=args.folds,
            device=recipe.train.device,
            max_memory=args.max_memory,
        )
    except config.RecipeError:
        raise
    except (OSError, ValueError) as e:  # data not found, download failed, corrupt file
        print(f"regulab sweep: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    out = args.out or runs.default_run_dir("sweep")
    start = time.perf_counter()
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
    try:
        summary = _write(args, console, recipe, values, seed, search, out, settings, start)
    except RuntimeError as e:  # a Ray trial failed: its error names the chunk
        print(f"regulab sweep: error: {e}; nothing was written", file=sys.stderr)
        return EXIT_FAILED
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
    console.print(
        f"Report: {out / 'report.md'}  ({summary['seconds']:.1f} s)", soft_wrap=True, markup=False
    )
    return 0


def _write(args, console, recipe, values, seed, search, out, settings, start) -> dict:
    """Train inside the run folder and write its files; return the summary."""
    from regulab import config, runs
    from regulab.sweep import plot, report

    with runs.run_folder(out, overwrite=args.overwrite) as tmp:
        runs.write_json(
            tmp / "config.json",
            {
                "command": "sweep",
                "settings": settings,
                "recipe": config.to_dict(recipe),
                **runs.environment(),
            },
        )
        with _progress(console, args, recipe, len(values)) as advance:
            search.fit(on_epoch=advance)
        rows, best = search.path_, search.best_index_
        summary = {
            "command": "sweep",
            "status": "completed",
            "seconds": round(time.perf_counter() - start, 3),
            "recipe": recipe.name,
            "param": args.param,
            "grid": values,
            "selection": f"{args.folds}-fold" if args.folds else "holdout",
            "rule": args.rule,
            "seed": seed,
            "best_lambda": search.best_lambda_,
            "best_index": best,
            "best": search.best_,
            "diverged": sum(r["status"] == "diverged" for r in rows),
            "engine": args.engine,
            "engine_info": search.engine_info_,
            "more_inputs_than_examples": settings["inputs"] > settings["examples"],
        }
        report.write_path_csv(rows, tmp / "path.csv", chosen=best)
        plot.plot_path(rows, best, tmp / "path.png", param=args.param, loss_name=recipe.train.loss)
        runs.write_text(tmp / "report.md", report.report_markdown(summary, rows, "path.png"))
        runs.write_json(tmp / "summary.json", summary)
    return summary


def _probe(address: str, error) -> None:
    """Fail fast on a cluster address nothing listens at (ray.init would retry for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise error(
            f"--ray-address must be HOST:PORT (or ray://HOST:PORT, or auto) of a running Ray "
            f"cluster; cannot reach {address!r}: {e}"
        ) from e


@contextlib.contextmanager
def _progress(console, args, recipe, k: int):
    """A bar over the epochs of every fit (local engine), a spinner on Ray; quiet in logs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    what = f"{k} strengths of {args.param}"
    if args.engine == "ray":
        with console.status(f"training {what} on Ray"):
            yield None
        return
    total = recipe.train.epochs * (args.folds + 1 if args.folds else 1)
    columns = (f"training {what}, epochs", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True,
                  disable=not console.is_terminal) as progress:  # fmt: skip
        task = progress.add_task("epochs", total=total)
        yield lambda: progress.advance(task)

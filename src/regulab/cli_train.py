"""`regulab train` and `regulab compare`: recipes to run folders, run folders to one report."""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from regulab.cli_args import device, out_path, positive_int


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab train`."""
    from regulab.cli import add_out_arguments

    p.add_argument(
        "recipe",
        nargs="?",
        type=Path,
        metavar="RECIPE",
        help="TOML recipe, e.g. recipes/dropout_mlp_fashion.toml",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value, checked against its type (repeatable), "
        "e.g. --set optim.lr=0.1 --set model.dropout=[0.2,0.5]",
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        metavar="N",
        help="train seeds train.seed .. train.seed+N-1 (default: 1)",
    )
    p.add_argument(
        "--resume",
        type=out_path,
        metavar="DIR",
        help="continue the run folder DIR from its newest checkpoints",
    )
    p.add_argument(
        "--data-dir",
        type=out_path,
        metavar="DIR",
        help="folder holding the data files (sets data.root; default: "
        "$REGULAB_DATA_DIR, then ~/.cache/regulab)",
    )
    p.add_argument("--device", type=device, help="torch device (sets train.device)")
    add_out_arguments(p, "train")


def run_train(args, console) -> int:
    """`regulab train`: train a recipe's variants and seeds into a run folder."""
    from regulab import config, experiment, runner, runs
    from regulab.cli import EXIT_FAILED, UsageError

    recipe, seeds, out = _plan(args, config, runs, UsageError)
    # Before anything is written or replaced: the data must be there (or downloadable)
    # and every variant must build (model, optimizer, loader, regularizers).
    for variant in config.expand(recipe).values():
        try:
            splits = experiment.load_data(variant, seeds[0])
        except (OSError, ValueError) as e:  # not found, download failed, corrupt file
            print(f"regulab train: error: {e}", file=sys.stderr)
            return EXIT_FAILED
        try:
            device(variant.train.device)  # a recipe's device must exist here too
            experiment.build(variant, splits, seeds[0])
        except (ValueError, argparse.ArgumentTypeError) as e:
            where = "train.device" if isinstance(e, argparse.ArgumentTypeError) else ""
            raise UsageError(f"{where} {e}".strip()) from e
    rank = _init_distributed(recipe)
    old = None
    try:
        out = _shared_out(out)
        if not args.resume:
            runs.check_out(out, args.overwrite)
            _barrier()
            if rank == 0 and args.overwrite and out.exists():
                old = _move_aside(out)  # deleted only once the new run has completed
        start = time.perf_counter()
        with _progress(console, rank) as progress:
            summary = runner.train_recipe(
                recipe, seeds, out, resume=bool(args.resume), progress=progress
            )
        if old is not None:  # the new run ended (completed or diverged): it replaces the old
            shutil.rmtree(old, ignore_errors=True)
            old = None
        if rank != 0:
            return 0
        _print_result(console, out, summary, time.perf_counter() - start)
        return 0 if summary["status"] == "completed" else EXIT_FAILED
    except BaseException:
        if old is not None:
            _put_back(old, out)
        raise
    finally:
        _destroy_distributed()


def _move_aside(out: Path) -> Path:
    """Rename an earlier run out of the way (--overwrite); it comes back if the new one crashes."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    os.rename(out, old)
    return old


def _put_back(old: Path, out: Path) -> None:
    """Replace the failed new run at out with the earlier run kept aside."""
    shutil.rmtree(out, ignore_errors=True)
    os.rename(old, out)


def _plan(args, config, runs, UsageError):
    """(recipe, seeds, out) from a recipe file and overrides, or from the folder to resume."""
    try:
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
            stored = _stored_config(args.resume, UsageError)
            recipe = config.from_dict(stored["recipe"], source=str(args.resume / "config.json"))
            if stored.get("variant") is not None:
                recipe.name = stored["variant"]  # one run of a multi-run folder keeps its name
            if args.recipe is not None:
                given = config.load(args.recipe)
                given.name = recipe.name
                if config.to_dict(given) != config.to_dict(recipe):
                    raise UsageError(
                        f"RECIPE {args.recipe} differs from the recipe of the run in "
                        f"{args.resume}; leave RECIPE out to resume that run"
                    )
            if args.data_dir is not None:
                recipe.data.root = str(args.data_dir)
            return recipe, stored["seeds"], args.resume
        if args.recipe is None:
            raise UsageError(
                "RECIPE is required (or --resume DIR); e.g. recipes/dropout_mlp_fashion.toml"
            )
        overrides = list(args.set)
        if args.data_dir is not None:
            overrides.append(f"data.root={json.dumps(str(args.data_dir))}")
        if args.device is not None:
            overrides.append(f"train.device={json.dumps(args.device)}")
        recipe = config.load(args.recipe, overrides)
        seeds = [recipe.train.seed + i for i in range(args.seeds or 1)]
        return recipe, seeds, args.out or runs.default_run_dir("train")
    except config.RecipeError as e:
        raise UsageError(str(e)) from e


def _stored_config(folder: Path, UsageError) -> dict:
    try:
        stored = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UsageError(
            f"--resume must be a run folder of `regulab train` (with its config.json); "
            f"cannot read '{folder / 'config.json'}': {e}"
        ) from e
    if stored.get("command") != "train" or "recipe" not in stored:
        raise UsageError(f"--resume must be a run folder of `regulab train`; '{folder}' is not")
    return stored


def _init_distributed(recipe) -> int:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); return the rank."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if recipe.train.device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank()


def _shared_out(out: Path) -> Path:
    """Rank 0's choice of folder, so a default timestamped name is the same everywhere."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return out
    box = [str(out)]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _destroy_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _progress(console, rank):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=rank != 0 or not console.is_terminal,
    )


def _print_result(console, out: Path, summary: dict, seconds: float) -> None:
    from regulab import compare

    loaded = compare.load_runs([out])
    console.print(compare.rich_table(compare.aggregate(loaded)))
    console.print(compare.TABLE_NOTE, soft_wrap=True)
    for run in loaded:
        if run.status != "completed":
            message = json.loads((run.path / "summary.json").read_text()).get("message", "")
            print(f"regulab train: {run.variant} seed {run.seed}: {message}", file=sys.stderr)
    console.print(f"Report: {out / 'report.md'}  ({seconds:.1f} s)", soft_wrap=True, markup=False)


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab compare`."""
    from regulab.cli import add_out_arguments

    p.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="run folders of `regulab train` (single or multi-run folders)",
    )
    add_out_arguments(p, "compare")


def run_compare(args, console) -> int:
    """`regulab compare`: one report over several training runs."""
    from regulab import compare, runner, runs
    from regulab.cli import UsageError

    try:
        loaded = compare.load_runs(args.runs)
    except ValueError as e:
        raise UsageError(str(e)) from e
    groups = compare.aggregate(loaded)
    out = args.out or runs.default_run_dir("compare")
    with runs.run_folder(out, overwrite=args.overwrite) as tmp:
        runs.write_json(
            tmp / "config.json",
            {"command": "compare", "runs": [str(r.path) for r in loaded], **runs.environment()},
        )
        runner.write_comparison(tmp, loaded, groups)
        runs.write_json(
            tmp / "summary.json",
            {
                "command": "compare",
                "status": "completed",
                "runs": [str(r.path) for r in loaded],
                "final": {g["variant"]: {k: g[k] for k in compare.METRICS} for g in groups},
                "groups": groups,
            },
        )
    console.print(compare.rich_table(groups))
    console.print(compare.TABLE_NOTE, soft_wrap=True)
    console.print(f"Report: {out / 'report.md'}", soft_wrap=True, markup=False)
    return 0

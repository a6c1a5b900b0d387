"""`regulab slim`: network slimming of a recipe (Liu et al., arXiv:1708.06519).

Sparsity-train the recipe (or take a finished `regulab train` run with --from),
then for every ratio: prune the lowest-|gamma| channels into a smaller network,
check it against the masked network, fine-tune, and measure accuracy, size and
latency; with --passes N, prune and fine-tune N times.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from regulab.cli_args import device, non_negative_int, out_path, positive_int, ratio, ratio_list

BN_MODELS = ("vgg_bn", "resnet_bn")


def add_slim_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab slim`."""
    from regulab.cli import add_out_arguments

    p.add_argument(
        "recipe",
        nargs="?",
        type=Path,
        metavar="RECIPE",
        help="TOML recipe with a vgg_bn or resnet_bn model, e.g. recipes/slim_vgg_fashion.toml "
        "(optional with --from: the run's own recipe)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--ratio", type=ratio, metavar="R", help="share of the channels to cut (sets slim.ratios)"
    )
    which.add_argument(
        "--ratios", type=ratio_list, metavar="R1,R2,...", help="several ratios, one network each"
    )
    p.add_argument(
        "--passes",
        type=positive_int,
        metavar="N",
        help="prune + fine-tune N times per ratio, each cutting the ratio of what is left "
        "(sets slim.passes; default 1)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=non_negative_int,
        metavar="N",
        help="epochs of fine-tuning after each pruning (sets slim.finetune_epochs; 0: none)",
    )
    p.add_argument(
        "--from",
        dest="source",
        type=out_path,
        metavar="RUN_DIR",
        help="start from this finished `regulab train` run instead of sparsity-training",
    )
    p.add_argument("--variant", metavar="NAME", help="the recipe variant to slim")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a recipe value (repeatable), e.g. --set slim.sparsity=1e-4",
    )
    p.add_argument("--seed", type=non_negative_int, help="seed (default: the recipe's train.seed)")
    p.add_argument(
        "--latency-repeats",
        type=positive_int,
        default=20,
        metavar="N",
        help="timed forwards per latency figure; the median is reported (default: 20)",
    )
    p.add_argument("--data-dir", type=out_path, metavar="DIR", help="folder of the data files")
    p.add_argument("--device", type=device, help="torch device (sets train.device)")
    add_out_arguments(p, "slim")


def run_slim(args, console) -> int:
    """`regulab slim`: sparsity-train (or --from), prune per ratio, fine-tune, measure, report."""
    from regulab import experiment, runs
    from regulab.cli import EXIT_FAILED, UsageError
    from regulab.cli_train import _progress
    from regulab.slim import run

    recipe, stored = _recipe(args, UsageError)
    seed = recipe.train.seed if args.seed is None else args.seed
    if stored is not None and stored.get("seed") is not None:  # its data split, batch order
        if args.seed is not None and args.seed != stored["seed"]:
            raise UsageError(
                f"--seed must be {stored['seed']}, the seed of the run in {args.source} (it "
                f"fixes the data split the run was trained on), or left out; got {args.seed}"
            )
        seed = stored["seed"]
    try:
        device(recipe.train.device)  # a recipe's (or a run's) device must exist here too
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"train.device {e}; use --device cpu") from e
    try:
        splits = experiment.load_data(recipe, seed)
    except (OSError, ValueError) as e:  # not found, download failed, corrupt file
        print(f"regulab slim: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    try:  # before anything is written: the model builds and every ratio can be planned
        _preflight(recipe, splits, seed)
    except ValueError as e:
        raise UsageError(str(e)) from e
    out = args.out or runs.default_run_dir("slim")
    runs.check_out(out, args.overwrite)
    start = time.perf_counter()
    with runs.run_folder(out, overwrite=args.overwrite) as tmp, _progress(console, 0) as progress:
        summary = run.write(
            recipe,
            splits,
            seed,
            tmp,
            source=args.source,
            latency_repeats=args.latency_repeats,
            progress=progress,
            console=console,
            start=start,
        )
    _print(console, summary, out)
    return 0


def _recipe(args, UsageError):
    """The recipe to slim (and the --from run's stored config, or None), overrides applied."""
    from regulab import config

    overrides = list(args.set)
    if args.ratio is not None:
        overrides.append(f"slim.ratios=[{args.ratio!r}]")
    if args.ratios is not None:
        overrides.append(f"slim.ratios=[{', '.join(repr(r) for r in args.ratios)}]")
    if args.passes is not None:
        overrides.append(f"slim.passes={args.passes}")
    if args.finetune_epochs is not None:
        overrides.append(f"slim.finetune_epochs={args.finetune_epochs}")
    if args.data_dir is not None:
        overrides.append(f"data.root={json.dumps(str(args.data_dir))}")
    if args.device is not None:
        overrides.append(f"train.device={json.dumps(args.device)}")
    stored = None
    try:
        if args.source is not None:
            stored = _stored_run(args.source, UsageError)
            if args.recipe is not None:  # its fine-tuning settings; the run's model and data
                raw = config.to_dict(_variant(config.load(args.recipe), args.variant, UsageError))
                raw["data"]["root"] = stored["recipe"]["data"]["root"]
            elif args.variant is not None:
                raise UsageError(
                    "--variant picks a variant of RECIPE; with --from alone, leave it out"
                )
            else:
                raw = stored["recipe"]
            raw = json.loads(json.dumps(raw))
            raw.pop("variants", None)
            for text in overrides:
                config.apply_override(raw, text)
            recipe = config.from_dict(raw, source=str(args.source / "config.json"))
        elif args.recipe is None:
            raise UsageError(
                "RECIPE is required (or --from RUN_DIR); e.g. recipes/slim_vgg_fashion.toml"
            )
        else:
            recipe = _variant(config.load(args.recipe, overrides), args.variant, UsageError)
    except config.RecipeError as e:
        raise UsageError(str(e)) from e
    if stored is not None:
        for section in ("model", "data"):
            mine = _without_location(config.to_dict(recipe)[section])
            theirs = _without_location(stored["recipe"][section])
            changed = [k for k in mine if mine[k] != theirs.get(k)]
            if changed:
                k = changed[0]
                by_set = any(t.partition("=")[0].strip() == f"{section}.{k}" for t in args.set)
                where = "--set" if by_set else f"RECIPE {args.recipe}"
                raise UsageError(
                    f"{section}.{k} must stay {theirs.get(k)!r}, the value the run in "
                    f"{args.source} was trained with; {where} gave {mine[k]!r}"
                )
    names = [f"ratio-{r:g}" for r in recipe.slim.ratios]
    if len(set(names)) != len(names):
        raise UsageError(
            "slim.ratios must differ in their first 6 significant digits (each names a folder "
            f"ratio-R); got {recipe.slim.ratios}"
        )
    if recipe.model.name not in BN_MODELS:
        raise UsageError(
            "model.name must be vgg_bn or resnet_bn: network slimming ranks channels by their "
            f"BatchNorm scales, and {recipe.model.name!r} has no BatchNorm"
        )
    return recipe, stored


def _variant(recipe, variant, UsageError):
    """The recipe's variant `variant` (a recipe with variants needs one named)."""
    from regulab import config

    if not recipe.variants and variant is None:
        return recipe
    if variant not in recipe.variants:
        names = ", ".join(recipe.variants) or "(none: the recipe has no variants)"
        raise UsageError(
            f"--variant must be one of {names} (regulab slim slims one run); got {variant!r}"
        )
    return config.expand(recipe)[variant]


def _without_location(section: dict) -> dict:
    """A recipe section without where the data lives (data.root, data.download)."""
    return {k: v for k, v in section.items() if k not in ("root", "download")}


def _stored_run(folder: Path, UsageError) -> dict:
    """config.json of a completed single run of `regulab train`."""
    from regulab import checkpoint

    try:
        stored = json.loads((folder / "config.json").read_text())
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError) as e:
        raise UsageError(
            f"--from must be a run folder of `regulab train`; cannot read it: {e}"
        ) from e
    if stored.get("command") != "train" or "recipe" not in stored:
        raise UsageError(f"--from must be a run folder of `regulab train`; '{folder}' is not")
    if "variant" not in summary:  # the top folder of several variants or seeds
        raise UsageError(
            f"--from must be one run; '{folder}' holds several: pass one of "
            f"{', '.join(summary.get('runs', [])) or 'its runs/VARIANT/seed-N folders'}"
        )
    if summary.get("status") != "completed":
        raise UsageError(
            f"--from must be a completed run; '{folder}' is {summary.get('status')!r} "
            "(resume it with `regulab train --resume` first)"
        )
    if checkpoint.latest(folder / "checkpoints") is None:
        raise UsageError(f"--from must be a run with its checkpoints; '{folder}' has none")
    return stored


def _preflight(recipe, splits, seed) -> None:
    """Build the model and plan every ratio on it: layers the surgery cannot handle fail here."""
    import torch

    from regulab import experiment
    from regulab.slim import pipeline

    torch.manual_seed(seed)
    model = experiment.build(recipe, splits, seed)["model"]  # optimizer, loader, penalties too
    for r in recipe.slim.ratios:
        pipeline.plan_for(model, r, splits.train[0][:1], recipe.slim)


def _print(console, summary: dict, out: Path) -> None:
    """The results table, then where the report is."""
    from rich.table import Table

    from regulab.slim import report

    batches = summary["latency_batches"]
    table = Table(title=f"network slimming: {summary['recipe']}")
    for col in ("ratio", "pass", "removed", "acc. before FT", "acc. after FT", "params", "MFLOPs",
                *(f"speed-up b{b}" for b in batches)):  # fmt: skip
        table.add_column(col, justify="right")
    for r in report.rows(summary):
        table.add_row(
            f"{r['ratio']:g}",
            str(r["pass"]),
            "-" if r["pass"] == 0 else f"{r['channels_removed']}/{r['channels_total']}",
            f"{100 * r['test_accuracy_before_finetune']:.2f} %",
            f"{100 * r['test_accuracy']:.2f} %",
            f"{r['params']:,}",
            f"{r['flops'] / 1e6:.2f}",
            *(f"{r[f'speedup_b{b}']:.2f}x" for b in batches),
        )
    console.print(table)
    for r in summary["results"]:
        if r["note"]:
            console.print(f"ratio {r['ratio']:g} pass {r['pass']}: {r['note']}", soft_wrap=True)
    console.print(
        f"Report: {out / 'report.md'}  ({summary['seconds']:.1f} s)", soft_wrap=True, markup=False
    )

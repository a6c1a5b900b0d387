"""`regulab slim`: network slimming of a recipe (Liu et al., arXiv:1708.06519).

Sparsity-train the recipe (or take a finished `regulab train` run with --from),
then for every ratio: prune the lowest-|gamma| channels into a smaller network,
check it against the masked network, fine-tune, and measure accuracy, size and
latency; with --passes N, prune and fine-tune N times.
"""

import argparse
from pathlib import Path

from regulab.cli._common import (
    add_recipe_argument,
    add_recipe_arguments,
    inputs,
    non_negative_int,
    out_path,
    positive_int,
    print_report,
    progress,
    ratio,
    ratio_list,
)

HELP = (
    "network slimming: L1 on BatchNorm scales, global channel pruning into a smaller "
    "network, fine-tuning, measured size and speed"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab slim`."""
    add_recipe_argument(
        p,
        "TOML recipe whose model has BatchNorm (vgg_bn, resnet_bn or your model.factory), e.g. "
        "recipes/slim_vgg_fashion.toml "
        "(optional with --from: the run's own recipe)",
        optional=True,
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
    p.add_argument(
        "--latency-repeats",
        type=positive_int,
        default=20,
        metavar="N",
        help="timed forwards per latency figure; the median is reported (default: 20)",
    )
    add_recipe_arguments(p, "slim")


def run(args, console) -> int:
    """`regulab slim`: check everything, then sparsity-train (or --from), prune, fine-tune."""
    from regulab import runs
    from regulab.slim import run as slim_run
    from regulab.slim import source

    recipe, stored = source.resolve(
        args.recipe, _overrides(args), variant=args.variant, source=args.source,
        data_dir=args.data_dir, device=args.device, sets=args.set,
    )  # fmt: skip
    seed = source.seed_of(recipe, stored, args.seed, args.source)
    out = args.out or runs.default_run_dir("slim")
    runs.checked_out(out, args.overwrite, inputs(args, recipe))  # before the work
    splits = source.preflight(recipe, seed)
    with progress(console) as bar:
        summary = slim_run.slim_command(
            recipe, splits, seed, out, overwrite=args.overwrite, source=args.source,
            inputs=inputs(args, recipe),
            latency_repeats=args.latency_repeats, progress=bar, console=console,
        )  # fmt: skip
    _print(console, summary, out)
    return 0


def _print(console, summary: dict, out: Path) -> None:
    """The results table, then where the report is."""
    from regulab.slim import report

    console.print(report.rich_table(summary))
    for r in summary["results"]:
        if r["note"]:
            console.print(f"ratio {r['ratio']:g} pass {r['pass']}: {r['note']}", soft_wrap=True)
    print_report(console, out, summary["seconds"])


def _overrides(args) -> list[str]:
    """The `--set` texts of the slim options (--ratio(s), --passes, --finetune-epochs)."""
    texts = list(args.set)
    if args.ratio is not None:
        texts.append(f"slim.ratios=[{args.ratio!r}]")
    if args.ratios is not None:
        texts.append(f"slim.ratios=[{', '.join(repr(r) for r in args.ratios)}]")
    if args.passes is not None:
        texts.append(f"slim.passes={args.passes}")
    if args.finetune_epochs is not None:
        texts.append(f"slim.finetune_epochs={args.finetune_epochs}")
    return texts

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

LATENCY_BATCHES = (1, 256)
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
        _preflight(recipe, splits, seed, stored)
    except ValueError as e:
        raise UsageError(str(e)) from e
    out = args.out or runs.default_run_dir("slim")
    runs.check_out(out, args.overwrite)
    start = time.perf_counter()
    with runs.run_folder(out, overwrite=args.overwrite) as tmp:
        summary = _slim(args, console, recipe, splits, seed, tmp, start)
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


def _preflight(recipe, splits, seed, stored) -> None:
    """Build the model and plan every ratio on it: layers the surgery cannot handle fail here."""
    import torch

    from regulab import experiment
    from regulab.slim import pipeline

    torch.manual_seed(seed)
    model = experiment.build(recipe, splits, seed)["model"]  # optimizer, loader, penalties too
    for r in recipe.slim.ratios:
        pipeline.plan_for(model, r, splits.train[0][:1], recipe.slim)


def _trained(recipe, splits, folder: Path, device):
    """The final model of a `regulab train` run folder (early stopping's best, if it restored)."""
    from regulab import checkpoint, experiment

    model = experiment.build_model(recipe, splits).to(device)
    latest = checkpoint.latest(folder / "checkpoints")
    if latest is None:
        raise ValueError(f"run folder '{folder}' has no checkpoint to start from")
    state, training = checkpoint.load(latest, device)
    stopping = training.get("early_stopping") or {}
    if stopping.get("best_state_") is not None:  # the run ended on its best epoch's weights
        state = stopping["best_state_"]
    model.load_state_dict(state)
    return model.eval()


def _slim(args, console, recipe, splits, seed, tmp: Path, start: float) -> dict:
    """Everything inside the run folder; returns the summary it wrote."""
    import shutil

    import torch

    from regulab import config, experiment, runner, runs
    from regulab.cli_train import _progress
    from regulab.linear_regression import TrainingDiverged
    from regulab.slim import export, pipeline, report, sparsity

    device = torch.device(recipe.train.device)
    runs.write_json(
        tmp / "config.json",
        {
            "command": "slim",
            "from": str(args.source) if args.source is not None else None,
            "seed": seed,
            "latency_batches": list(LATENCY_BATCHES),
            "latency_repeats": args.latency_repeats,
            "recipe": config.to_dict(recipe),
            **runs.environment(),
        },
    )
    with _progress(console, 0) as progress:
        if args.source is None:
            runner.train_one(recipe, "sparse", seed, tmp / "sparse", progress=progress)
            source = tmp / "sparse"
            trained = json.loads((source / "summary.json").read_text())
            if trained["status"] != "completed":
                raise TrainingDiverged(
                    f"sparsity training {trained['status']}: {trained['message']}",
                    trained["epochs"],
                )
        else:
            source = args.source
            if (source / "gamma.json").exists():
                (tmp / "sparse").mkdir()
                shutil.copy(source / "gamma.json", tmp / "sparse" / "gamma.json")
        data = splits.to(device)
        model = _trained(recipe, data, source, device)
        example = data.train[0][:1]
        name, kwargs = experiment.model_spec(recipe, data)
        unpruned = {
            **_evaluate(model, data, recipe),
            **pipeline.size(model, example),
            "channels": pipeline.plan_for(model, 0.0, example, recipe.slim).units,
            "widths": pipeline.widths(model),
        }
        results, nets = [], {"unpruned": model}
        for r in recipe.slim.ratios:
            current = model
            for k in range(1, recipe.slim.passes + 1):
                folder = tmp / f"ratio-{r:g}" / f"pass-{k}"
                row, current = _one_pass(current, r, k, recipe, data, seed, folder, progress)
                unpruned_accuracy = unpruned["test_accuracy"]
                row["accuracy_change"] = row["after_finetune"]["test_accuracy"] - unpruned_accuracy
                export.save(current, folder, {"name": name, "kwargs": kwargs})
                results.append(row)
                nets[row["model"]] = current
        # all networks timed side by side at the end, so that a busy spell hits them all
        with console.status("timing the networks"):
            times = pipeline.latencies(nets, example, LATENCY_BATCHES, args.latency_repeats)
        unpruned["latency_s"] = times["unpruned"]
        for row in results:
            row["latency_s"] = times[row["model"]]
            row.update(pipeline.reductions(unpruned, row))
    gammas = sparsity.gamma_histogram(model, bins=runner.GAMMA_BINS)
    over_epochs = tmp / "sparse" / "gamma.json"
    summary = {
        "command": "slim",
        "status": "completed",
        "seconds": round(time.perf_counter() - start, 3),
        "recipe": recipe.name,
        "from": str(args.source) if args.source is not None else None,
        "seed": seed,
        "device": str(device),
        "sparsity": recipe.slim.sparsity,
        "sparsity_mode": recipe.slim.sparsity_mode,
        "score": recipe.slim.score,
        "passes": recipe.slim.passes,
        "finetune_epochs": recipe.slim.finetune_epochs,
        "flops_convention": "2 FLOPs per multiply-add, one example (torch.utils.flop_counter)",
        "latency_batches": list(LATENCY_BATCHES),
        "unpruned": unpruned,
        "results": results,
        "gamma_histogram": gammas,
    }
    report.write_csv(summary, tmp / "slim.csv")
    report.plot_pareto(summary, tmp / "pareto.png")
    history = json.loads(over_epochs.read_text()) if over_epochs.exists() else None
    report.plot_gammas(summary, history, tmp / "gamma.png")
    runs.write_text(tmp / "report.md", report.markdown(summary, "pareto.png", "gamma.png"))
    runs.write_json(tmp / "summary.json", summary)
    return summary


def _evaluate(model, data, recipe) -> dict:
    from regulab.train import evaluate

    out = {}
    for split in ("val", "test"):
        pair = getattr(data, split)
        if pair is not None:
            out[f"{split}_loss"], out[f"{split}_accuracy"] = evaluate(
                model, pair, recipe.train.loss, 1024
            )
    return out


def _one_pass(model, r, k, recipe, data, seed, folder, progress):
    """Plan, prune, check, fine-tune and measure one pass; returns (row, pruned model)."""
    from regulab import runs
    from regulab.linear_regression import TrainingDiverged
    from regulab.runner import _csv
    from regulab.slim import pipeline
    from regulab.train import COLUMNS

    example = data.train[0][:1]
    plan = pipeline.plan_for(model, r, example, recipe.slim)
    check = data.val[0][:256] if data.val is not None else data.test[0][:256]
    pruned, diff = pipeline.prune_checked(model, plan, example, check)
    before = _evaluate(pruned, data, recipe)
    folder.mkdir(parents=True)
    runs.write_text(folder / "plan.txt", str(plan) + "\n")
    epochs = recipe.slim.finetune_epochs
    after, status = before, "not fine-tuned"
    if epochs:
        steps = epochs * -(-len(data.train[0]) // recipe.train.batch_size)
        task = progress.add_task(f"fine-tune ratio {r:g} pass {k}", total=steps)
        last = k == recipe.slim.passes  # the last fine-tuning is plain, earlier ones keep sparsity
        history = pipeline.finetune(
            pruned,
            recipe,
            data,
            seed,
            sparsity=0.0 if last else recipe.slim.sparsity,
            on_step=lambda: progress.advance(task),
        )
        progress.remove_task(task)
        runs.write_text(folder / "metrics.csv", _csv(history.rows, COLUMNS))
        if history.status != "completed":
            raise TrainingDiverged(
                f"fine-tuning ratio {r:g} pass {k} {history.status}: {history.message}",
                len(history.rows),
            )
        status = "completed"
        after = _evaluate(pruned, data, recipe)
    pruned.eval()
    size = pipeline.size(pruned, example)
    row = {
        "ratio": r,
        "pass": k,
        "model": f"ratio-{r:g}/pass-{k}",
        "channels_total": plan.units,
        "channels_requested": plan.requested,
        "channels_removed": plan.removed,
        "note": plan.note,
        "threshold": plan.threshold,
        "pruned_vs_masked": diff,
        "before_finetune": before,
        "after_finetune": after,
        "finetune": status,
        **size,
        "widths": pipeline.widths(pruned),
    }
    return row, pruned


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

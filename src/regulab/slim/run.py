"""A `regulab slim` run folder: sparsity training (or a finished run), then per ratio and
pass: plan, prune, check against masking, fine-tune, measure, export; the report.

The networks are timed side by side at the end (`pipeline.latencies`). Network
Slimming: Liu et al., arXiv:1708.06519.
"""

import json
import time
from pathlib import Path

LATENCY_BATCHES = (1, 256)


def trained(recipe, splits, folder: Path, device):
    """The final model of a `regulab train` run folder (early stopping's best, if it restored),
    or the model of the best/ folder of `regulab tune`."""
    from regulab import checkpoint, train_state
    from regulab.recipe import build
    from regulab.slim import export, source

    model = build.build_model(recipe, splits).to(device)
    if source.is_tuned(folder):
        return export.load(folder, model=model, device=device)
    latest = checkpoint.latest(folder / "checkpoints")
    if latest is None:
        raise ValueError(f"run folder '{folder}' has no checkpoint to start from")
    train_state.check(latest, model)  # names and shapes: RunFolderError naming the file
    state, training = checkpoint.load(latest, device)
    stopping = training.get("early_stopping") or {}
    if stopping.get("best_state_") is not None:  # the run ended on its best epoch's weights
        state = stopping["best_state_"]
    model.load_state_dict(state)
    return model.eval()


def write(
    recipe, splits, seed: int, tmp: Path, *, source, latency_repeats: int, progress, console, start
) -> dict:
    """Everything inside the run folder; returns the summary it wrote. progress: a rich
    Progress the training steps are reported to; console: where the timing spinner shows."""
    import shutil

    import torch

    from regulab import bn_sparsity, run_files, runs
    from regulab import recipe as recipes
    from regulab.errors import TrainingDiverged
    from regulab.recipe import build
    from regulab.recipe import run as recipe_run
    from regulab.slim import export, pipeline, report

    device = torch.device(recipe.train.device)
    runs.write_json(
        tmp / "config.json",
        {
            "command": "slim",
            "from": str(source) if source is not None else None,
            "seed": seed,
            "latency_batches": list(LATENCY_BATCHES),
            "latency_repeats": latency_repeats,
            "recipe": recipes.to_dict(recipe),
            "data_files": splits.files,  # the folder read and the files' md5, or None
            **runs.environment(),
        },
    )
    sparse = source  # the run folder whose final weights are pruned
    if source is None:
        sparse = tmp / "sparse"
        recipe_run.train_one(recipe, "sparse", seed, sparse, progress=progress)
        done = json.loads((sparse / "summary.json").read_text())
        if done["status"] != "completed":
            raise TrainingDiverged(
                f"sparsity training {done['status']}: {done['message']}", done["epochs"]
            )
    elif (source / "gamma.json").exists():
        (tmp / "sparse").mkdir()
        shutil.copy(source / "gamma.json", tmp / "sparse" / "gamma.json")
    data = splits.to(device)
    model = trained(recipe, data, sparse, device)
    example = data.train[0][:1]
    arch = build.model_arch(recipe, data)  # how slim.export.load builds the unpruned model
    unpruned = {
        **evaluate(model, data, recipe),
        **pipeline.size(model, example),
        "channels": pipeline.plan_for(model, 0.0, example, recipe.slim).units,
        "widths": pipeline.widths(model),
    }
    results, nets = [], {"unpruned": model}
    for r in recipe.slim.ratios:
        current = model
        for k in range(1, recipe.slim.passes + 1):
            into = tmp / runs.check_name(f"ratio-{r:g}", "a slim ratio") / f"pass-{k}"
            row, current = one_pass(current, r, k, recipe, data, seed, into, progress)
            unpruned_accuracy = unpruned["test_accuracy"]
            row["accuracy_change"] = row["after_finetune"]["test_accuracy"] - unpruned_accuracy
            export.save(current, into, arch)
            results.append(row)
            nets[row["model"]] = current
    # all networks timed side by side at the end, so that a busy spell hits them all
    with console.status("timing the networks"):
        times = pipeline.latencies(nets, example, LATENCY_BATCHES, latency_repeats)
    unpruned["latency_s"] = times["unpruned"]
    for row in results:
        row["latency_s"] = times[row["model"]]
        row.update(pipeline.reductions(unpruned, row))
    gammas = bn_sparsity.gamma_histogram(model, bins=recipe_run.GAMMA_BINS)
    over_epochs = tmp / "sparse" / "gamma.json"
    summary = {
        "command": "slim",
        "status": "completed",
        "seconds": round(time.perf_counter() - start, 3),
        "recipe": recipe.name,
        "from": str(source) if source is not None else None,
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
    history = run_files.gamma(over_epochs.parent)
    report.plot_gammas(summary, history, tmp / "gamma.png")
    runs.write_text(tmp / "report.md", report.markdown(summary, "pareto.png", "gamma.png"))
    runs.write_json(tmp / "summary.json", summary)
    return summary


def evaluate(model, data, recipe) -> dict:
    from regulab.recipe import build
    from regulab.train import evaluate

    loss, batch_fn = build.build_loss(recipe, data.train[0].device), build.build_batch_fn(recipe)
    out = {}
    for split in ("val", "test"):
        pair = getattr(data, split)
        if pair is not None:
            out[f"{split}_loss"], out[f"{split}_accuracy"] = evaluate(
                model, pair, loss, 1024, batch_fn=batch_fn
            )
    return out


def one_pass(model, r, k, recipe, data, seed, folder, progress):
    """Plan, prune, check, fine-tune and measure one pass; returns (row, pruned model)."""
    from regulab import runs
    from regulab.errors import TrainingDiverged
    from regulab.slim import pipeline
    from regulab.train import COLUMNS

    example = data.train[0][:1]
    plan = pipeline.plan_for(model, r, example, recipe.slim)
    check = data.val[0][:256] if data.val is not None else data.test[0][:256]
    pruned, diff = pipeline.prune_checked(model, plan, example, check)
    before = evaluate(pruned, data, recipe)
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
        runs.write_text(folder / "metrics.csv", runs.csv_text(history.rows, COLUMNS))
        if history.status != "completed":
            raise TrainingDiverged(
                f"fine-tuning ratio {r:g} pass {k} {history.status}: {history.message}",
                len(history.rows),
            )
        status = "completed"
        after = evaluate(pruned, data, recipe)
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


def slim_command(
    recipe, splits, seed: int, out: Path, *, overwrite=False, inputs=(), **kwargs
) -> dict:
    """`regulab slim` into the run folder out (see `write` for kwargs); returns the summary.
    inputs: (option, path) pairs out must not overlap (`runs.checked_out`)."""
    from regulab import runs

    start = time.perf_counter()
    with runs.run_folder(out, overwrite=overwrite, inputs=inputs) as tmp:
        return write(recipe, splits, seed, tmp, start=start, **kwargs)

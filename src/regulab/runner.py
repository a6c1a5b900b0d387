"""`regulab train`: run a recipe's variants and seeds, each into its own run folder.

A run folder is written while the run trains (config.json first, metrics.csv
after every epoch, a checkpoint after every epoch, summary.json with status
"running" until it ends), each file atomically, so a run stopped at any moment
can be resumed with `--resume`. With several variants or seeds, the runs live
in runs/VARIANT/seed-N/ under the folder given, which gets the comparison.
"""

import csv
import io
import json
import time
from pathlib import Path

import torch

from regulab import compare, config, experiment, runs
from regulab.metrics import world
from regulab.slim.sparsity import bn_layers, gamma_histogram
from regulab.train import COLUMNS, fit

GAMMA_BINS = 40  # bins of the |gamma| histogram recorded each epoch (BatchNorm models)


def run_path(out: Path, variant: str, seed: int, single: bool) -> Path:
    return out if single else out / "runs" / variant / f"seed-{seed}"


def train_recipe(recipe, seeds: list[int], out: Path, *, resume=False, progress=None) -> dict:
    """Train every (variant, seed) of recipe under out; return the top-level summary.

    With resume, runs that completed are kept, interrupted ones continue from
    their newest checkpoint and missing ones start. `progress`, if given, is a
    rich Progress the steps are reported to.
    """
    rank, _ = world()
    variants = config.expand(recipe)
    single = len(variants) * len(seeds) == 1
    started = time.perf_counter()
    plan = [(v, s) for v in variants for s in seeds]
    if rank == 0 and not single:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            runs.write_json(out / "config.json", _config(recipe, None, seeds))
    summaries = []
    for variant, seed in plan:
        folder = run_path(out, variant, seed, single)
        summaries.append(
            train_one(variants[variant], variant, seed, folder, resume=resume, progress=progress)
        )
    if single:
        return summaries[0]
    statuses = [s["status"] for s in summaries]
    summary = {
        "command": "train",
        "status": "completed"
        if all(s == "completed" for s in statuses)
        else "diverged"
        if "diverged" in statuses
        else "running",
        "recipe": recipe.name,
        "variants": list(variants),
        "seeds": seeds,
        "runs": [str(run_path(Path(""), v, s, False)) for v, s in plan],
        "seconds": round(time.perf_counter() - started, 3),
    }
    if rank == 0:
        loaded = compare.load_runs([run_path(out, v, s, False) for v, s in plan])
        groups = compare.aggregate(loaded)
        summary["final"] = {g["variant"]: {k: g[k] for k in compare.METRICS} for g in groups}
        summary["groups"] = groups
        write_comparison(out, loaded, groups)
        runs.write_json(out / "summary.json", summary)
    return summary


def write_comparison(out: Path, loaded, groups) -> None:
    """curves.png, table.csv, metrics.csv and report.md of several runs, into out."""
    compare.plot_curves(loaded, out / "curves.png")
    compare.write_table_csv(groups, out / "table.csv")
    rows = [{"variant": r.variant, "seed": r.seed, **h} for r in loaded for h in r.history]
    runs.write_text(out / "metrics.csv", _csv(rows, ("variant", "seed", *COLUMNS)))
    runs.write_text(out / "report.md", compare.report_md(groups, loaded, "curves.png"))


def train_one(recipe, variant: str, seed: int, folder: Path, *, resume=False, progress=None):
    """Train one run into folder (or continue it with resume); return its summary."""
    rank, _ = world()
    summary_path = folder / "summary.json"
    if resume and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") in ("completed", "diverged"):
            return summary  # a diverged run would diverge again: it needs a new recipe
    device = torch.device(_device(recipe.train.device))
    torch.manual_seed(seed)  # the model's initial weights
    splits = experiment.load_data(recipe, seed).to(device)
    parts = experiment.build(recipe, splits, seed)
    model, loader = parts.pop("model").to(device), parts["train"]
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        if not (resume and (folder / "config.json").exists()):
            runs.write_json(folder / "config.json", _config(recipe, variant, [seed]))
        runs.write_json(summary_path, _summary("running", variant, seed, recipe, None, 0.0))
    gammas = _gamma_record(folder / "gamma.json", model, resume)
    task = None
    if progress is not None:
        task = progress.add_task(f"{variant} seed {seed}", total=recipe.train.epochs * len(loader))

    def on_epoch(history):
        if rank == 0:
            runs.write_text(folder / "metrics.csv", _csv(history.rows, COLUMNS))
            if (
                gammas is not None
            ):  # the |gamma| distribution over epochs (arXiv:1708.06519, fig. 4)
                epoch = history.rows[-1]["epoch"]
                gammas["epochs"] = [g for g in gammas["epochs"] if g["epoch"] < epoch]
                gammas["epochs"].append({"epoch": epoch, **gamma_histogram(model, GAMMA_BINS)})
                runs.write_json(folder / "gamma.json", gammas)
        if task is not None:
            progress.update(task, completed=history.rows[-1]["epoch"] * len(loader))

    started = time.perf_counter()
    history = fit(
        model,
        epochs=recipe.train.epochs,
        val=splits.val,
        test=splits.test,
        loss=recipe.train.loss,
        clip_grad_norm=recipe.train.clip_grad_norm or None,
        seed=seed,
        eval_train=recipe.train.eval_train,
        checkpoint_dir=folder / "checkpoints",
        resume=resume,
        on_epoch=on_epoch,
        on_step=(lambda: progress.advance(task)) if task is not None else None,
        keep_checkpoints=recipe.train.keep_checkpoints,
        **parts,
    )
    if task is not None:
        progress.remove_task(task)
    summary = _summary(
        history.status, variant, seed, recipe, history, time.perf_counter() - started
    )
    if rank == 0:
        runs.write_text(folder / "metrics.csv", _csv(history.rows, COLUMNS))
        runs.write_json(summary_path, summary)
        loaded = compare.load_runs([folder])
        compare.plot_curves(loaded, folder / "curves.png")
        runs.write_text(
            folder / "report.md", compare.report_md(compare.aggregate(loaded), loaded, "curves.png")
        )
    return summary


def _gamma_record(path: Path, model, resume: bool) -> dict | None:
    """{"epochs": [...]} of |gamma| histograms for a model with BatchNorm (None without)."""
    if not bn_layers(model):
        return None
    if resume and path.exists():
        return json.loads(path.read_text())
    return {"bins": GAMMA_BINS, "epochs": [{"epoch": 0, **gamma_histogram(model, GAMMA_BINS)}]}


def _summary(status, variant, seed, recipe, history, seconds) -> dict:
    return {
        "command": "train",
        "status": status,
        "message": history.message if history is not None else "",
        "variant": variant,
        "seed": seed,
        "task": "classification" if recipe.train.loss == "cross_entropy" else "regression",
        "loss": recipe.train.loss,
        "epochs": len(history.rows) if history is not None else 0,
        "best_epoch": history.best_epoch if history is not None else None,
        "stopped_early": history.stopped_early if history is not None else False,
        "final": (
            history.final
            if history is not None and history.final
            else dict.fromkeys(compare.METRICS)
        ),
        "seconds": round(seconds, 3),
    }


def _config(recipe, variant, seeds) -> dict:
    return {
        "command": "train",
        "variant": variant,
        "seed": seeds[0] if variant is not None else None,
        "seeds": seeds,
        "recipe": config.to_dict(recipe),
        **runs.environment(),
    }


def _csv(rows, columns) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buf.getvalue()


def _device(name: str) -> str:
    rank, world_size = world()
    if world_size > 1 and name.startswith("cuda"):
        return f"cuda:{rank % torch.cuda.device_count()}"
    return name

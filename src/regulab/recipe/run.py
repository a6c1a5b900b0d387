"""`regulab train`: run a recipe's variants and seeds, each into its own run folder.

A run folder is written while the run trains (config.json first, metrics.csv
after every epoch, a checkpoint after every epoch, summary.json with status
"running" until it ends), each file atomically, so a run stopped at any moment
can be resumed with `--resume`. With several variants or seeds, the runs live
in runs/VARIANT/seed-N/ under the folder given, which gets the comparison.
An exception inside training (your model, loss or batch_fn on a batch the preflight
did not see) is `RunFailed`, one line naming the run, and the new folder is removed,
as for a recipe that fails its checks: nothing is written (a resumed folder is kept).
"""

import json
import shutil
import sysconfig
import time
import traceback
from pathlib import Path

import torch

from regulab import _checks, distributed, runs
from regulab import recipe as recipes
from regulab.bn_sparsity import bn_layers, gamma_histogram
from regulab.errors import RecipeError, RunFailed
from regulab.recipe import build, compare
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
    rank, _ = distributed.world()
    variants = recipes.expand(recipe)
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
    runs.write_text(out / "metrics.csv", runs.csv_text(rows, ("variant", "seed", *COLUMNS)))
    runs.write_text(out / "report.md", compare.markdown(groups, loaded, "curves.png"))


def train_one(recipe, variant: str, seed: int, folder: Path, *, resume=False, progress=None):
    """Train one run into folder (or continue it with resume); return its summary."""
    rank, _ = distributed.world()
    summary_path = folder / "summary.json"
    if resume and summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") in ("completed", "diverged"):
            return summary  # a diverged run would diverge again: it needs a new recipe
    device = torch.device(distributed.device_for(recipe.train.device))
    torch.manual_seed(seed)  # the model's initial weights
    splits = build.load_data(recipe, seed).to(device)
    model = build.build_model(recipe, splits).to(device)
    arguments = build.fit_arguments(recipe, model, splits, seed)
    loader = arguments["train"]
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        if not (resume and (folder / "config.json").exists()):
            config = {**_config(recipe, variant, [seed]), "data_files": splits.files}
            runs.write_json(folder / "config.json", config)  # data_files: the folder read
        runs.write_json(summary_path, _summary("running", variant, seed, splits, recipe, None, 0.0))
    gammas = _gamma_record(folder / "gamma.json", model, resume)
    task = None
    if progress is not None:
        task = progress.add_task(f"{variant} seed {seed}", total=recipe.train.epochs * len(loader))

    def on_epoch(history):
        if rank == 0:
            runs.write_text(folder / "metrics.csv", runs.csv_text(history.rows, COLUMNS))
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
    try:
        history = fit(
            model,
            checkpoint_dir=folder / "checkpoints",
            resume=resume,
            on_epoch=on_epoch,
            on_step=(lambda: progress.advance(task)) if task is not None else None,
            **arguments,
        )
    except Exception as e:  # your model, loss or batch_fn on a batch the preflight did not see
        raise RunFailed(
            f"training variant {variant!r} seed {seed} failed{_user_frame(e)}: "
            f"{type(e).__name__}: {_first_line(e)}"
        ) from e
    if task is not None:
        progress.remove_task(task)
    summary = _summary(
        history.status, variant, seed, splits, recipe, history, time.perf_counter() - started
    )
    if rank == 0:
        runs.write_text(folder / "metrics.csv", runs.csv_text(history.rows, COLUMNS))
        runs.write_json(summary_path, summary)
        loaded = compare.load_runs([folder])
        compare.plot_curves(loaded, folder / "curves.png")
        runs.write_text(
            folder / "report.md", compare.markdown(compare.aggregate(loaded), loaded, "curves.png")
        )
    return summary


def _user_frame(e: Exception) -> str:
    """Where e was raised in the user's own code (not regulab, torch or the standard
    library), as ' in FILE line N (function)'; "" if no frame of its traceback is there."""
    ours = (str(Path(torch.__file__).parent), str(Path(runs.__file__).parent))
    ours += (sysconfig.get_paths()["stdlib"],)
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        if not frame.filename.startswith(ours):
            return f" in {frame.filename} line {frame.lineno} ({frame.name})"
    return ""


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"


def _gamma_record(path: Path, model, resume: bool) -> dict | None:
    """{"epochs": [...]} of |gamma| histograms for a model with BatchNorm (None without)."""
    if not bn_layers(model):
        return None
    if resume and path.exists():
        return json.loads(path.read_text())
    return {"bins": GAMMA_BINS, "epochs": [{"epoch": 0, **gamma_histogram(model, GAMMA_BINS)}]}


def _summary(status, variant, seed, splits, recipe, history, seconds) -> dict:
    return {
        "command": "train",
        "status": status,
        "message": history.message if history is not None else "",
        "variant": variant,
        "seed": seed,
        "task": splits.task,
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
        "recipe": recipes.to_dict(recipe),
        **runs.environment(),
    }


def preflight(recipe, seed: int) -> None:
    """Before anything is written or replaced: the data must be there (or downloadable), and
    every variant must build (device, model, optimizer, loader, regularizers)."""
    for variant in recipes.expand(recipe).values():
        splits = build.load_checked(variant, seed)
        try:
            _checks.device("train.device", variant.train.device)  # a recipe's device must exist
            build.run_parts(variant, splits, seed)
        except ValueError as e:
            raise RecipeError(str(e)) from e


def train_command(recipe, seeds, out: Path, *, resume=False, overwrite=False, progress=None):
    """`regulab train`: train into out (or continue it) under torchrun or alone; return
    (rank, out, summary). With overwrite an earlier run at out is set aside and removed once
    the new run has ended; if the new run crashes, the earlier one is put back."""
    rank = distributed.init(recipe.train.device)
    old = None
    made = False
    try:
        out = distributed.shared_path(out)
        made = not out.exists()
        if not resume:
            runs.check_out(out, overwrite)
            distributed.barrier()
            if rank == 0 and overwrite and out.exists():
                old = runs.move_aside(out)  # deleted only once the new run has ended
        summary = train_recipe(recipe, seeds, out, resume=resume, progress=progress)
        if old is not None:  # the new run ended (completed or diverged): it replaces the old
            shutil.rmtree(old, ignore_errors=True)
            old = None
        return rank, out, summary
    except BaseException as e:
        if old is not None:
            runs.put_back(old, out)
        elif isinstance(e, RunFailed) and not resume and rank == 0:
            _discard(out, made)  # as a failed recipe: nothing written (Ctrl-C stays resumable)
        raise
    finally:
        distributed.destroy()


def _discard(out: Path, made: bool) -> None:
    """Remove the run folder out (made by this run), or what this run wrote into it."""
    if made:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in out.iterdir() if out.is_dir() else ():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def compare_command(loaded, out: Path, *, overwrite=False) -> dict:
    """`regulab compare`: one report over loaded runs (`compare.load_runs`), written to out."""
    groups = compare.aggregate(loaded)
    with runs.run_folder(out, overwrite=overwrite) as tmp:
        runs.write_json(
            tmp / "config.json",
            {"command": "compare", "runs": [str(r.path) for r in loaded], **runs.environment()},
        )
        write_comparison(tmp, loaded, groups)
        summary = {
            "command": "compare",
            "status": "completed",
            "runs": [str(r.path) for r in loaded],
            "final": {g["variant"]: {k: g[k] for k in compare.METRICS} for g in groups},
            "groups": groups,
        }
        runs.write_json(tmp / "summary.json", summary)
    return summary

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

import shutil
import sysconfig
import time
import traceback
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from regulab import _checks, checkpoint, claims, distributed, run_files, runs, train_state
from regulab import recipe as recipes
from regulab.bn_sparsity import bn_layers, gamma_histogram
from regulab.errors import RecipeError, RunFailed, RunFolderError, os_error
from regulab.recipe import build, compare
from regulab.train import COLUMNS, fit

GAMMA_BINS = 40  # bins of the |gamma| histogram recorded each epoch (BatchNorm models)


def run_path(out: Path, variant: str, seed: int, single: bool) -> Path:
    """out itself for a single run, else out/runs/VARIANT/seed-N (names checked: plain)."""
    if single:
        return out
    name = runs.check_name(variant, "a recipe's variant name ([variants.NAME])")
    return out / "runs" / name / runs.check_name(f"seed-{seed}", "the seed")


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
    folders = {(v, s): run_path(out, v, s, single) for v, s in plan}  # every name, first
    if rank == 0 and not single:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            runs.write_json(out / "config.json", _config(recipe, None, seeds))
    summaries = []
    for variant, seed in plan:
        folder = folders[variant, seed]
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
        summary = run_files.summary(folder)  # checked, as every file resumed from
        if summary["status"] in ("completed", "diverged"):
            return summary  # a diverged run would diverge again: it needs a new recipe
    device = torch.device(distributed.device_for(recipe.train.device))
    torch.manual_seed(seed)  # the model's initial weights
    splits = build.load_data(recipe, seed).to(device)
    model = build.build_model(recipe, splits).to(device)
    arguments = build.fit_arguments(recipe, model, splits, seed)
    loader = arguments["train"]
    latest = checkpoint.latest(folder / "checkpoints") if resume else None
    if latest is not None:  # before anything is written: the weights must fit this model
        train_state.check(latest, model, arguments["optimizer"], recipe.train.epochs)
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
        if (disk := os_error(e, where=folder)) is not None:  # the machine's: kept to resume
            raise disk from e
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
        return run_files.gamma(path.parent)
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


def preflight(recipe, seeds: list[int]) -> None:
    """Before anything is written or replaced: every variant's name and seed must make a
    plain folder name, the data must be there (or downloadable), and every variant must
    build (device, model, optimizer, loader, regularizers)."""
    variants, seed = recipes.expand(recipe), seeds[0]
    for name in variants if len(variants) * len(seeds) > 1 else ():
        for s in seeds:
            run_path(Path("."), name, s, single=False)
    for variant in variants.values():
        splits = build.load_checked(variant, seed)
        try:
            _checks.device("train.device", variant.train.device)  # a recipe's device must exist
            build.run_parts(variant, splits, seed)
        except ValueError as e:
            raise RecipeError(str(e)) from e


def train_command(
    recipe, seeds, out: Path, *, resume=False, overwrite=False, inputs=(), progress=None
):
    """`regulab train`: train into out (or continue it) under torchrun or alone; return
    (rank, out, summary). out is claimed (`runs.in_place`) on rank 0, the only writer; with
    overwrite an earlier run at out is set aside and removed once the new run has ended, and
    put back if the new run fails, is interrupted or dies. inputs: see `runs.checked_out`."""
    rank = distributed.init(recipe.train.device)
    try:
        given = distributed.shared_path(out)
        with _claimed(given, rank, resume, overwrite, inputs) as out:
            made = not out.exists()
            try:
                summary = train_recipe(recipe, seeds, out, resume=resume, progress=progress)
            except BaseException as e:
                if rank == 0:
                    _after_failure(e, out, made, resume)
                raise
        return rank, given, summary
    finally:
        distributed.destroy()


@contextmanager
def _claimed(out: Path, rank: int, resume: bool, overwrite: bool, inputs):
    """`runs.in_place` on rank 0; the other ranks learn rank 0's refusal, and raise it too."""
    with ExitStack() as stack:
        refusal = None
        if rank == 0:
            try:
                out = stack.enter_context(
                    runs.in_place(out, overwrite=overwrite, resume=resume, inputs=inputs)
                )
            except RunFolderError as e:
                refusal = e
        message = distributed.from_rank0(str(refusal) if refusal else "")
        if refusal is not None:
            raise refusal
        if message:
            raise RunFolderError(message)
        yield distributed.shared_path(out)


def _after_failure(e: BaseException, out: Path, made: bool, resume: bool):
    """A failed recipe writes nothing; an interrupted run is kept to resume, and says so
    (unless --overwrite set an earlier run aside: `runs.in_place` puts that back)."""
    if isinstance(e, RunFailed) and not resume:
        _discard(out, made)  # as a failed recipe: nothing written
    elif claims.journal_path(out).exists():
        e.add_note(f"the earlier run is back in '{out}'")
    elif not isinstance(e, RunFailed) and (out / "config.json").exists():
        e.add_note(f"the run so far is kept in '{out}': continue it with "
                   f"`regulab train --resume {out}`")  # fmt: skip


def _discard(out: Path, made: bool) -> None:
    """Remove the run folder out (made by this run), or what this run wrote into it."""
    if made:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in out.iterdir() if out.is_dir() else ():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def compare_command(loaded, out: Path, *, overwrite=False, inputs=()) -> dict:
    """`regulab compare`: one report over loaded runs (`compare.load_runs`), written to out;
    inputs: (option, path) pairs out must not overlap (`runs.checked_out`)."""
    groups = compare.aggregate(loaded)
    with runs.run_folder(out, overwrite=overwrite, inputs=inputs) as tmp:
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

"""The run folder of `regulab tune`: a recipe's `[tune]` section -> `Tuner` -> the files.

`with_options` lays the command's options over the recipe's `[tune]` section; `prepare`
loads the data, builds the model and the `Tuner` and checks them all (the space against
the model, the plan against the budget, the memory of the copies) before anything is
written; `write` tunes inside an atomic run folder (`runs.run_folder`): config.json,
trials.csv, summary.json, best/ (the chosen model, `slim.export.save`, and the recipe
with the chosen values written into their fields), report.md and the pictures. It also
trains the recipe once as written, with `fit` in the same process, for the wall time of
one run beside the tuning's (issue 15's budget contract) and its metrics beside the
tuned ones. The test split is evaluated once, on the chosen model, and never chooses.
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from regulab import recipe as recipes
from regulab import runs
from regulab.errors import RecipeError, RunFailed, UsageError
from regulab.metrics import evaluate
from regulab.recipe import build, schema
from regulab.sweep import memory, path
from regulab.sweep.update import FIELDS
from regulab.train import fit
from regulab.train_step import rng_fork
from regulab.tune import plot, report
from regulab.tune.budget import Plan
from regulab.tune.space import parse_space
from regulab.tune.tuner import Tuner

OPTIONS = tuple(f.name for f in dataclasses.fields(schema.Tune))
PICTURES = ("hparams.png", "curves.png", "budget.png")
# the recipe key each searched name sets (dropout and drop_path: the model's, below)
KEYS = {**FIELDS, "crop": "augment.random_crop", "cutout": "augment.cutout",
        "noise": "augment.gaussian_noise", "label_smoothing": "train.label_smoothing",
        "mixup": "train.mixup", "cutmix": "train.cutmix"}  # fmt: skip
PIXELS = ("crop", "cutout")  # integer keys


def with_options(recipe: recipes.Recipe, **options) -> recipes.Recipe:
    """recipe with the given `[tune]` keys replaced (None leaves a key as the recipe has it),
    checked like a recipe file; RecipeError names the key."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"options must be keys of [tune] ({', '.join(OPTIONS)}); got {unknown}")
    given = {k: v for k, v in options.items() if v is not None}
    out = dataclasses.replace(recipe, tune=dataclasses.replace(recipe.tune, **given))
    schema.check(out, "options")
    return out


@dataclass
class Prepared:
    """What `write` tunes: the recipe, its data and model, and the checked Tuner."""

    recipe: recipes.Recipe
    seed: int
    splits: build.Splits
    model: torch.nn.Module  # the recipe's model (with dropout layers when dropout is searched)
    loader: object  # the training TensorLoader
    tuner: Tuner
    plan: object  # the Tuner's Plan or PbtPlan


def prepare(
    recipe: recipes.Recipe, seed: int, on_epoch=None, ray_address=None, on_rung=None
) -> Prepared:
    """Everything checked before a file is written: RecipeError / UsageError (exit 2),
    DataUnavailable (exit 1). on_epoch() is called after every epoch of the stacked run and
    on_rung(rows) with each rung's trial rows (locally; under tune.engine = "ray" the
    brackets run in Ray tasks). ray_address: an existing cluster's address, or None to
    start a local Ray instance."""
    t = recipe.tune
    if not t.space.strip():
        raise UsageError(
            "space: nothing to tune: pass --space or set space in the recipe's [tune] section, "
            "e.g. 'weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6)'"
        )
    try:
        names = parse_space(t.space).names
    except ValueError as e:
        raise UsageError(str(e)) from e
    _check_recipe(recipe)
    device = torch.device(recipe.train.device)
    splits = build.load_checked(recipe, seed).to(device)
    if splits.val is None:
        raise RecipeError(
            "data.val_fraction: the tuner chooses on validation data; set it > 0 "
            "(--set data.val_fraction=0.2) or give validation arrays"
        )
    with rng_fork(device):
        torch.manual_seed(seed)  # the initial weights, as `regulab train` draws them
        model = build.build_model(_with_dropout_layers(recipe, names), splits).to(device)
    build.check_model(recipe, model, splits)
    loader = build.loader(recipe, splits, seed)
    settings = path.settings(recipe, splits, len(loader), seed, on_epoch=on_epoch)
    tuner = Tuner(
        t.space, t.budget, t.eta, t.scheduler, configs=t.configs or None, settings=settings,
        promotion=t.promotion, grace=t.grace, finalists=t.finalists or None,
        pbt_interval=t.pbt_interval or None, pbt_fraction=t.pbt_fraction, metric=t.metric,
        seed=seed, device=recipe.train.device, engine=t.engine, ray_address=ray_address,
        on_rung=on_rung,
    )  # fmt: skip
    try:
        _, _, plan = tuner.resolved(model)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from e
    k = getattr(plan, "population", None) or plan.configs  # PbtPlan | Plan, HyperbandPlan
    _check_memory(recipe, model, splits, k)
    return Prepared(recipe, seed, splits, model, loader, tuner, plan)


def _check_recipe(recipe) -> None:
    """What the stacked copies cannot honour, refused by the recipe key that asks for it."""
    if recipe.early_stopping.patience:
        raise RecipeError(
            "early_stopping.patience: the tuner trains every copy to its rung and stops none "
            f"early; got {recipe.early_stopping.patience} (use --set early_stopping.patience=0)"
        )
    if recipe.train.precision != "fp32":
        raise RecipeError(
            "train.precision: the tuner trains its stacked copies in fp32 only; got "
            f"{recipe.train.precision!r} (use --set train.precision=fp32)"
        )


def _with_dropout_layers(recipe, names):
    """A bundled MLP or VGG without dropout gets dropout layers when dropout is searched (the
    copies set their p), as `regulab sweep --param dropout` does, and a VGG-BN without
    DropBlock its DropBlock layers when drop_block is; other recipes as given."""
    m = recipe.model
    if m.factory:
        return recipe
    if "dropout" in names and not m.dropout and m.name in path.DROPOUT_MODELS:
        layers = len(m.hidden) if m.name == "mlp" else 1
        m = dataclasses.replace(m, dropout=[0.5] * layers)
    if "drop_block" in names and not m.drop_block and m.name == "vgg_bn":
        m = dataclasses.replace(m, drop_block=0.5)
    return dataclasses.replace(recipe, model=m)


def _check_memory(recipe, model, splits, k: int) -> None:
    """Refuse k copies estimated not to fit into 90 % of the device's free memory."""
    batch = path.first_inputs(recipe, splits)
    with rng_fork(batch.device):  # the estimate runs one forward in training mode
        need = memory.estimate(model, batch, k, memory.states_per_parameter(recipe.optim))
    free = memory.available(recipe.train.device)
    if free is not None and need["total"] > 0.9 * free:
        raise UsageError(
            f"configs: {k} copies of the model need an estimated {memory.size(need['total'])}, "
            f"more than 90 % of the {memory.size(free)} available on {recipe.train.device}: "
            "lower --budget or --configs, or train.batch_size"
        )


def tuned_recipe(recipe: recipes.Recipe, params: dict, seed: int | None = None):
    """recipe with each chosen value written into the key it sets (`KEYS`; dropout: every
    layer of a bundled model) and train.seed = seed (the tuning's: it fixed the data split).
    A model.factory's dropout and drop_path are its own arguments: those stay as the recipe
    has them (summary.json's best_params holds every value)."""
    raw = recipes.to_dict(recipe)
    if seed is not None:
        raw["train"]["seed"] = seed
    for name, value in params.items():
        if name in KEYS:
            section, key = KEYS[name].split(".")
            raw[section][key] = round(value) if name in PIXELS else value
        elif name == "dropout" and not recipe.model.factory:
            layers = len(recipe.model.hidden) if recipe.model.name == "mlp" else 1
            raw["model"]["dropout"] = [value] * layers
        elif name in ("drop_path", "drop_block") and not recipe.model.factory:
            raw["model"][name] = value
    return recipes.from_dict(raw, source="the tuned recipe")


def recipe_values(recipe: recipes.Recipe, names) -> dict:
    """The value the recipe as written gives each searched name (dropout: its largest p;
    None where a model.factory sets it or the recipe has no key for it)."""
    out = {}
    for name in names:
        out[name] = None
        if name in KEYS:
            section, key = KEYS[name].split(".")
            out[name] = float(getattr(getattr(recipe, section), key))
        elif name == "dropout" and not recipe.model.factory:
            out[name] = max(recipe.model.dropout, default=0.0)
        elif name in ("drop_path", "drop_block") and not recipe.model.factory:
            out[name] = getattr(recipe.model, name)
    return out


def write(
    prepared: Prepared, out: Path, *, options: dict, overwrite: bool = False, inputs=()
) -> dict:
    """Tune inside the run folder out and write its files; return the summary. options: how
    the command was called (config.json's `settings`). A RuntimeError from your code on
    the way is RunFailed; every copy diverging is NothingToChoose (exit 1, nothing written).
    inputs: (option, path) pairs out must not overlap (`runs.checked_out`)."""
    try:
        return _write(prepared, Path(out), options, overwrite, inputs)
    except RuntimeError as e:
        raise RunFailed(str(e)) from e


def _write(p: Prepared, out: Path, options: dict, overwrite: bool, inputs) -> dict:
    start, recipe = time.perf_counter(), p.recipe
    with runs.run_folder(out, overwrite=overwrite, inputs=inputs) as tmp:
        config = {"command": "tune", "settings": options, "recipe": recipes.to_dict(recipe),
                  "data_files": p.splits.files}  # fmt: skip
        runs.write_json(tmp / "config.json", {**config, **runs.environment()})
        t = p.tuner.fit(p.model, p.loader, p.splits.val)
        best = _metrics(recipe, t.best_model_, p.splits)
        ensemble = None
        if t.ensemble_model_ is not None:  # the finalists' averaged predictions, beside
            ensemble = {"members": t.finalists_, **_metrics(recipe, t.ensemble_model_, p.splits)}
            _export_finalists(t, recipe, p, tmp / "finalists")
        one_run = _one_run(recipe, p.splits, p.seed)
        one_run["params"] = recipe_values(recipe, t.best_params_)
        chosen = tuned_recipe(recipe, t.best_params_, p.seed)
        export_best(t.best_model_, chosen, p.splits, tmp / "best")
        names = parse_space(recipe.tune.space).names
        bracket = ["bracket"] * ("bracket" in t.trials_[0])  # engine ray: Hyperband's
        columns = [*bracket, "config", "rung", "epoch", *names, "val_loss", "val_accuracy",
                   "status"]  # fmt: skip
        runs.write_text(tmp / "trials.csv", runs.csv_text(t.trials_, columns))
        summary = _summary(p, t, best, one_run, time.perf_counter() - start)
        summary["ensemble"] = ensemble
        plot.plot_hparams(t.trials_, recipe.tune.space, summary, tmp / PICTURES[0])
        plot.plot_curves(t.trials_, summary, tmp / PICTURES[1])
        plot.plot_budget(t.trials_, summary, tmp / PICTURES[2])
        runs.write_text(tmp / "report.md", report.markdown(summary, t.trials_, PICTURES))
        runs.write_json(tmp / "summary.json", summary)
    return summary


def export_best(model, recipe, splits, folder: Path) -> None:
    """best/: the model (`slim.export.save`: model.safetensors, arch.json) and recipe.json,
    the recipe with the chosen values, so `regulab.slim.load(folder)` rebuilds it."""
    from regulab.slim import export

    export.save(model, folder, build.model_arch(recipe, splits))
    runs.write_json(folder / "recipe.json", recipes.to_dict(recipe))


def _export_finalists(t: Tuner, recipe, p: Prepared, folder: Path) -> None:
    """finalists/config-N/ for each member of the ensemble, as best/ is written."""
    # each configuration's last row: its values at the end (pbt changes a copy's values)
    params = {r["config"]: {n: r[n] for n in t.best_params_} for r in t.trials_}
    for config, model in zip(t.finalists_, t.ensemble_model_.members, strict=True):
        chosen = tuned_recipe(recipe, params[config], p.seed)
        export_best(model, chosen, p.splits, folder / f"config-{config}")


def _metrics(recipe, model, splits) -> dict:
    """val_loss, val_accuracy, test_loss, test_accuracy of model (eval mode)."""
    loss, batch_fn = build.build_loss(recipe, splits.train[0].device), build.build_batch_fn(recipe)
    out = {}
    for split, data in (("val", splits.val), ("test", splits.test)):
        value, accuracy = evaluate(model, data, loss, batch_fn=batch_fn)
        out[f"{split}_loss"], out[f"{split}_accuracy"] = value, accuracy
    return out


def _one_run(recipe, splits, seed: int) -> dict:
    """The recipe trained once as written, by `fit` as `regulab train` calls it (no run
    folder): its wall time and final metrics, or its status when it diverged."""
    device = splits.train[0].device
    with rng_fork(device):
        torch.manual_seed(seed)
        model = build.build_model(recipe, splits).to(device)
        arguments = build.fit_arguments(recipe, model, splits, seed)
        started = time.perf_counter()
        history = fit(model, **arguments)
        seconds = time.perf_counter() - started
    out = {"seconds": round(seconds, 3), "status": history.status}
    if history.status == "completed":
        out.update(_metrics(recipe, model, splits))
    return out


def _summary(p: Prepared, t: Tuner, best: dict, one_run: dict, seconds: float) -> dict:
    r = p.recipe
    plan = p.plan
    rungs = lambda q: [dataclasses.asdict(g) for g in q.rungs]  # noqa: E731
    if isinstance(plan, Plan):
        plan_json = {"configs": plan.configs, "rungs": rungs(plan)}
    elif hasattr(plan, "plans"):  # engine ray: Hyperband brackets, most cuts first
        brackets = [{"configs": q.configs, "rungs": rungs(q)} for q in plan.plans]
        plan_json = {"configs": plan.configs, "brackets": brackets}
    else:
        plan_json = {"configs": plan.population, "exploits": list(plan.exploits)}
    plan_json.update(epochs=plan.epochs, copy_epochs=plan.copy_epochs, cost=plan.cost)
    diverged = {row["config"] for row in t.trials_ if row["status"] == "diverged"}
    return {
        "command": "tune",
        "status": "completed",
        "seconds": round(seconds, 3),
        "recipe": r.name,
        "seed": p.seed,
        "space": str(parse_space(r.tune.space)),
        "scheduler": r.tune.scheduler,
        "metric": r.tune.metric,
        "budget": r.tune.budget,
        "spent": t.spent_,
        "plan": plan_json,
        "best_config": t.best_index_,
        "best_params": t.best_params_,
        "best_score": t.best_score_,
        "best": best,
        "tune_seconds": round(t.seconds_, 3),
        "one_run": one_run,
        "cost_ratio": round(t.seconds_ / one_run["seconds"], 3) if one_run["seconds"] else None,
        "rank_agreement": [
            {"rung": g, "rho": None if rho != rho else rho} for g, rho in t.rank_agreement_.items()
        ],
        "diverged": len(diverged),
        "lineage": t.lineage_.rows() if t.lineage_ is not None else None,
    }

"""The recipe `regulab slim` works on: a TOML recipe, or a finished `regulab train` run or the
best/ folder of `regulab tune` (--from).

With --from, the run's model and data are kept (its weights fix them), RECIPE and
`--set` may change only the fine-tuning settings, and the run's seed fixes the
data split. Every check happens here, before anything is written.
"""

import json
from pathlib import Path

from regulab import recipe as recipes
from regulab import run_files
from regulab.errors import RecipeError
from regulab.recipe.schema import BN_MODELS


def resolve(path, texts, *, variant=None, source=None, data_dir=None, device=None, sets=()):
    """(recipe, stored config of the --from run or None); `sets`: the user's --set texts."""
    one = "regulab slim slims one run"
    stored = None
    if source is None:
        if path is None:
            raise RecipeError(
                "RECIPE is required (or --from RUN_DIR); e.g. recipes/slim_vgg_fashion.toml"
            )
        recipe = recipes.resolve(
            path, texts, variant=variant, one=one, data_dir=data_dir, device=device
        )
    else:
        stored = stored_run(source)
        label = str(source / stored.get("file", "config.json"))  # its recipe, checked, whole
        stored["recipe"] = recipes.to_dict(recipes.from_dict(stored["recipe"], source=label))
        if path is not None:  # its fine-tuning settings; the run's model and data
            base = recipes.resolve(path, variant=variant, one=one)
            raw = recipes.to_dict(base)
            raw["data"]["root"] = stored["recipe"]["data"]["root"]
            raw["base"] = stored["recipe"].get("base", "")  # where the run's own code is
        elif variant is not None:
            raise RecipeError(
                "--variant picks a variant of RECIPE; with --from alone, leave it out"
            )
        else:
            raw = stored["recipe"]
        raw = json.loads(json.dumps(raw))
        raw.pop("variants", None)
        for text in texts:
            recipes.apply_override(raw, text)
        recipe = recipes.place(recipes.from_dict(raw, source=label), data_dir, device)
        _same_model_and_data(recipe, stored, path, source, sets)
    _check(recipe)
    return recipe, stored


def _same_model_and_data(recipe, stored: dict, path, source, sets) -> None:
    for section in ("model", "data"):
        mine = _without_location(recipes.to_dict(recipe)[section])
        theirs = _without_location(stored["recipe"][section])
        changed = [k for k in mine if mine[k] != theirs.get(k)]
        if changed:
            k = changed[0]
            by_set = any(t.partition("=")[0].strip() == f"{section}.{k}" for t in sets)
            where = "--set" if by_set else f"RECIPE {path}"
            raise RecipeError(
                f"{section}.{k} must stay {theirs.get(k)!r}, the value the run in "
                f"{source} was trained with; {where} gave {mine[k]!r}"
            )


def _check(recipe) -> None:
    names = [f"ratio-{r:g}" for r in recipe.slim.ratios]
    if len(set(names)) != len(names):
        raise RecipeError(
            "slim.ratios must differ in their first 6 significant digits (each names a folder "
            f"ratio-R); got {recipe.slim.ratios}"
        )
    if not recipe.model.factory and recipe.model.name not in BN_MODELS:  # factory: preflight
        raise RecipeError(
            "model.name must be vgg_bn or resnet_bn (or set model.factory to a model with "
            "BatchNorm): network slimming ranks channels by their BatchNorm scales, and "
            f"{recipe.model.name!r} has none"
        )


def _without_location(section: dict) -> dict:
    """A recipe section without where the data lives (data.root, data.download)."""
    return {k: v for k, v in section.items() if k not in ("root", "download")}


def stored_run(folder: Path) -> dict:
    """config.json of a completed single run of `regulab train` with its checkpoints, or the
    recipe of a tuned model (`tuned`); every file of the run checked (`run_files.check_run`)."""
    from regulab import checkpoint

    if is_tuned(folder):
        return tuned(folder)
    stored = recipes.stored_run(folder, "--from", " (or the best/ folder of `regulab tune`)")
    summary = run_files.summary(folder)
    if "variant" not in summary:  # the top folder of several variants or seeds
        raise RecipeError(
            f"--from must be one run; '{folder}' holds several: pass one of "
            f"{', '.join(summary['runs'])}"
        )
    if summary["status"] != "completed":
        raise RecipeError(
            f"--from must be a completed run; '{folder}' is {summary['status']!r} "
            "(resume it with `regulab train --resume` first)"
        )
    if checkpoint.latest(folder / "checkpoints") is None:
        raise RecipeError(f"--from must be a run with its checkpoints; '{folder}' has none")
    run_files.check_run(folder, "--from")
    return stored


def is_tuned(folder: Path) -> bool:
    """Whether folder is the best/ folder of `regulab tune` (a model and its recipe)."""
    return all((folder / name).is_file() for name in ("arch.json", "recipe.json"))


def tuned(folder: Path) -> dict:
    """The stored form of the best/ folder of `regulab tune`: its recipe.json (the recipe
    with the chosen values and the tuning's seed, which fixed the data split)."""
    path = folder / "recipe.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecipeError(f"--from: cannot read the tuned recipe '{path}': {e}") from e
    seed = raw.get("train", {}).get("seed") if isinstance(raw, dict) else None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RecipeError(
            f"--from: '{path}' must be the recipe `regulab tune` wrote, with train.seed; it is not"
        )
    return {"command": "tune", "recipe": raw, "seed": seed, "file": "recipe.json"}


def seed_of(recipe, stored, seed: int | None, source) -> int:
    """The seed to slim with: --seed, else the recipe's; a --from run's own seed is kept."""
    if stored is None or stored.get("seed") is None:
        return recipe.train.seed if seed is None else seed
    if seed is not None and seed != stored["seed"]:
        raise RecipeError(
            f"--seed must be {stored['seed']}, the seed of the run in {source} (it "
            f"fixes the data split the run was trained on), or left out; got {seed}"
        )
    return stored["seed"]


def preflight(recipe, seed: int):
    """Device, data, model, and a plan for every ratio, before anything is written; the data.

    Layers the surgery cannot handle fail here (RecipeError); missing data is DataUnavailable.
    """
    import warnings

    import torch

    from regulab import _checks, bn_sparsity
    from regulab.recipe import build
    from regulab.slim import pipeline

    try:
        _checks.device("train.device", recipe.train.device)  # a recipe's (or run's) device
    except ValueError as e:
        raise RecipeError(f"{e}; use --device cpu") from e
    splits = build.load_checked(recipe, seed)
    try:
        torch.manual_seed(seed)
        model = build.run_parts(recipe, splits, seed)["model"]  # optimizer, loader, penalties
        if not bn_sparsity.bn_layers(model):
            raise RecipeError(
                f"model.factory {recipe.model.factory!r} must build a model with BatchNorm "
                "layers: network slimming ranks channels by their BatchNorm scales"
            )
        with warnings.catch_warnings():  # a fresh model's scales all tie; the trained one's
            warnings.simplefilter("ignore")  # plan warns if they still do
            for r in recipe.slim.ratios:
                pipeline.plan_for(model, r, splits.train[0][:1], recipe.slim)
    except ValueError as e:
        raise RecipeError(str(e)) from e
    return splits

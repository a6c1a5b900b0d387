"""`LambdaSearch`: choose a regularization strength for a recipe, or for your own model
and data, on validation data.

Follows the scikit-learn contract: `__init__` stores the settings, `fit()` trains
and sets the learned attributes, which end in "_":

- `path_`: one row per strength (ascending), keys `PATH_COLUMNS`;
- `best_index_`, `best_lambda_`, `best_` (the chosen row);
- `engine_info_`, `seconds_`.

The test split never takes part in the choice: the rule reads `val_loss` and
`val_loss_se` only.
"""

import copy
import os
import time

from torch import nn

from regulab import _checks
from regulab import recipe as recipes
from regulab.sweep import model_path, path, select
from regulab.sweep.engine import PARAMS, Settings
from regulab.sweep.grid import parse_grid

ENGINES = ("local", "ray")
RULES = ("min", "one_se")


class LambdaSearch:
    """Train every strength of `grid` for `param` on a recipe or your own model, then choose one.

    source: a Recipe (without variants), the path of a TOML file, or an nn.Module (your
    own model; copied, never changed). param: l2, weight_decay, l1, dropout or
    bn_sparsity. grid: a list of strengths or a string such as "0,logspace(-3,2,32)".
    folds: 0 for holdout validation, K >= 2 for K-fold cross-validation. rule: "min"
    (lowest validation loss) or "one_se" (the strongest within one standard error of it).
    vary: give each strength its own batch order and dropout noise (a recipe also its
    own initial weights; default: shared, so the path reflects the strength alone).
    engine: "local" or "ray" (recipes only: chunks trials; ray_address: an existing
    cluster). seed: the run's seed (train.seed; for a model also the order of tensors and
    DataLoaders, the val_fraction split and the folds).

    With a model (`model_path`): data, the training data: (x, y) tensors, a TensorLoader
    or a finite DataLoader of (x, y) batches (read into tensors once; settings.batch_fn
    maps other batches). val: validation data of the same kinds, or val_fraction: the
    share of data held out (folds = 0 needs one of them). test: data only reported.
    settings: a `sweep.Settings` (optimizer, penalties, epochs, loss, ...; default
    `Settings()`); tensors are cut into batches of settings.train.batch_size.
    """

    def __init__(
        self,
        source,
        param: str = "l2",
        grid="0,logspace(-3,2,32)",
        *,
        data=None,
        val=None,
        val_fraction: float = 0.0,
        test=None,
        settings: Settings | None = None,
        folds: int = 0,
        rule: str = "min",
        seed: int = 0,
        vary: bool = False,
        engine: str = "local",
        chunks: int | None = None,
        ray_address: str | None = None,
        device: str = "cpu",
        max_memory: float | None = None,
    ):
        self.source = source
        self.param = param
        self.grid = grid
        self.data = data
        self.val = val
        self.val_fraction = val_fraction
        self.test = test
        self.settings = settings
        self.folds = folds
        self.rule = rule
        self.seed = seed
        self.vary = vary
        self.engine = engine
        self.chunks = chunks
        self.ray_address = ray_address
        self.device = device
        self.max_memory = max_memory

    def resolved(self) -> tuple:
        """(the recipe object or the model, the sorted grid), checked (no training)."""
        values = (
            parse_grid(self.grid)
            if isinstance(self.grid, str)
            else parse_grid(list(self.grid), name="grid")
        )
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}; got {self.rule!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if (
            isinstance(self.folds, bool)
            or not isinstance(self.folds, int)
            or self.folds in (1,)
            or self.folds < 0
        ):
            raise ValueError(f"folds must be 0 (holdout) or an integer >= 2; got {self.folds!r}")
        if isinstance(self.source, nn.Module):
            return _check_model(self, values), values
        return _check_recipe(self, values), values

    def fit(self, on_epoch=None) -> "LambdaSearch":
        """Train and choose; on_epoch() is called after every epoch (local engine only)."""
        source, values = self.resolved()
        started = time.perf_counter()
        if isinstance(source, nn.Module):
            rows = _model_rows(self, source, values, on_epoch)
            info = {"engine": "local", "chunks": 1}
        else:
            rows, info = _recipe_rows(self, source, values, on_epoch)
        self.path_ = rows
        self.best_index_ = select.choose(rows, self.rule)
        self.best_ = rows[self.best_index_]
        self.best_lambda_ = self.best_["lambda"]
        self.engine_info_ = info
        self.seconds_ = time.perf_counter() - started
        return self


def _check_recipe(search: LambdaSearch, values) -> recipes.Recipe:
    """The recipe search names, loaded and checked for this sweep."""
    recipe = search.source
    if not isinstance(recipe, recipes.Recipe | str | os.PathLike):
        raise TypeError(
            "source must be a Recipe, the path of a recipe file, or an nn.Module (your own "
            f"model, with data=...); got {type(recipe).__name__}"
        )
    given = [k for k in ("data", "val", "test", "settings") if getattr(search, k) is not None]
    if given or search.val_fraction:
        raise ValueError(
            f"{(given or ['val_fraction'])[0]}: a recipe brings its own data and settings; "
            "pass data, val, val_fraction, test and settings only with a model"
        )
    if not isinstance(recipe, recipes.Recipe):
        recipe = recipes.load(recipe)
    if recipe.variants:
        raise recipes.RecipeError(
            f"recipe {recipe.name!r} has variants ({', '.join(recipe.variants)}); a sweep "
            "runs one recipe: pass regulab.recipes.expand(recipe)[NAME] (CLI: --variant NAME)"
        )
    if search.engine == "ray":
        try:
            import ray.tune  # noqa: F401
        except ImportError as e:
            raise ValueError(
                "engine 'ray' needs Ray Tune, which is not installed: pip install 'regulab[ray]'"
            ) from e
    path.check(recipe, search.param, values)
    return recipe


def _check_model(search: LambdaSearch, values) -> nn.Module:
    """The model of search, once the arguments a model needs are checked."""
    _checks.one_of("param", search.param, PARAMS)
    if search.engine != "local":
        raise ValueError(
            f"engine: {search.engine!r} runs recipes only (each worker builds the model from "
            "the recipe); for your own model use engine='local'"
        )
    if search.data is None:
        raise ValueError(
            "data: LambdaSearch(model, ...) needs the training data: data=(x, y), a "
            "TensorLoader or a DataLoader"
        )
    if search.settings is not None and not isinstance(search.settings, Settings):
        raise TypeError(
            f"settings must be a regulab.sweep.Settings; got {type(search.settings).__name__}"
        )
    if search.param == "dropout" and max(values) >= 1:
        raise ValueError(f"grid: dropout p must be in [0, 1); got {max(values):g}")
    return search.source


def _model_rows(search: LambdaSearch, model, values, on_epoch) -> list[dict]:
    """The path of a model: its data read into tensors on the device, then `model_path`."""
    s = search.settings or Settings()
    data = model_path.resolve_data(
        search.data, search.val, search.val_fraction, search.test, s, search.seed, search.folds,
        search.device,
    )  # fmt: skip
    model = copy.deepcopy(model).to(search.device)
    model_path.check(model, data, s)
    model_path.check_memory(model, data, len(values), s, search.device, search.max_memory)
    return model_path.compute_rows(
        model, search.param, values, data, s, folds=search.folds, seed=search.seed,
        vary=search.vary, on_epoch=on_epoch,
    )  # fmt: skip


def _recipe_rows(search: LambdaSearch, recipe, values, on_epoch) -> tuple[list[dict], dict]:
    """The path of a recipe (`path.compute_rows`), here or in Ray trials; the engine info."""
    kwargs = {
        "recipe": recipes.to_dict(recipe),
        "param": search.param,
        "seed": search.seed,
        "folds": search.folds,
        "vary": search.vary,
        "device": search.device,
        "max_memory": search.max_memory,
        "grid": values,
    }
    if search.engine == "local":
        rows = path.compute_rows(values=values, on_epoch=on_epoch, **kwargs)
        return rows, {"engine": "local", "chunks": 1}
    from regulab.sweep import ray_engine

    parts = ray_engine.chunks(values, search.chunks or 2)
    # a local cluster runs every chunk at once on this machine; a remote one, one each
    k = len(values) if search.ray_address is None else max(map(len, parts))
    path.preflight(
        recipe,
        search.param,
        k,
        seed=search.seed,
        device=search.device,
        max_memory=search.max_memory,
    )
    rows, info = ray_engine.run_on_ray(
        path.compute_rows,
        kwargs,
        parts,
        address=search.ray_address,
        gpus_per_trial=1 if str(search.device).startswith("cuda") else 0,
    )
    info["chunks"] = len(parts)
    return rows, info

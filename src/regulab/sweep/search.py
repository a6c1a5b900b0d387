"""`LambdaSearch`: choose a regularization strength for a recipe on validation data.

Follows the scikit-learn contract: `__init__` stores the settings, `fit()` trains
and sets the learned attributes, which end in "_":

- `path_`: one row per strength (ascending), keys `PATH_COLUMNS`;
- `best_index_`, `best_lambda_`, `best_` (the chosen row);
- `engine_info_`, `seconds_`.

The test split never takes part in the choice: the rule reads `val_loss` and
`val_loss_se` only.
"""

import time

from regulab import recipe as recipes
from regulab.sweep import path, select
from regulab.sweep.grid import parse_grid

ENGINES = ("local", "ray")
RULES = ("min", "one_se")


class LambdaSearch:
    """Train every strength of `grid` for `param` on `recipe`, then choose one.

    recipe: a Recipe (without variants) or the path of a TOML file. param: l2,
    weight_decay, l1, dropout or bn_sparsity. grid: a list of strengths or a
    string such as "0,logspace(-3,2,32)". folds: 0 for the recipe's holdout
    validation split, K >= 2 for K-fold cross-validation. rule: "min" (lowest
    validation loss) or "one_se" (the strongest within one standard error of it).
    vary: give each strength its own batch order, dropout noise and initial
    weights (default: shared, so the path reflects the strength alone).
    engine: "local" or "ray" (chunks trials; ray_address: an existing cluster).
    """

    def __init__(
        self,
        recipe,
        param: str = "l2",
        grid="0,logspace(-3,2,32)",
        *,
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
        self.recipe = recipe
        self.param = param
        self.grid = grid
        self.folds = folds
        self.rule = rule
        self.seed = seed
        self.vary = vary
        self.engine = engine
        self.chunks = chunks
        self.ray_address = ray_address
        self.device = device
        self.max_memory = max_memory

    def resolved(self) -> tuple[recipes.Recipe, list[float]]:
        """The recipe object and the sorted grid, checked (no training)."""
        recipe = self.recipe
        if not isinstance(recipe, recipes.Recipe):
            recipe = recipes.load(recipe)
        if recipe.variants:
            raise recipes.RecipeError(
                f"recipe {recipe.name!r} has variants ({', '.join(recipe.variants)}); a sweep "
                "runs one recipe: pass regulab.recipes.expand(recipe)[NAME] (CLI: --variant NAME)"
            )
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
        if self.engine == "ray":
            try:
                import ray.tune  # noqa: F401
            except ImportError as e:
                raise ValueError(
                    "engine 'ray' needs Ray Tune, which is not installed: "
                    "pip install 'regulab[ray]'"
                ) from e
        path.check(recipe, self.param, values)
        return recipe, values

    def fit(self, on_epoch=None) -> "LambdaSearch":
        """Train and choose; on_epoch() is called after every epoch (local engine only)."""
        recipe, values = self.resolved()
        started = time.perf_counter()
        kwargs = {
            "recipe": recipes.to_dict(recipe),
            "param": self.param,
            "seed": self.seed,
            "folds": self.folds,
            "vary": self.vary,
            "device": self.device,
            "max_memory": self.max_memory,
            "grid": values,
        }
        if self.engine == "local":
            rows = path.compute_rows(values=values, on_epoch=on_epoch, **kwargs)
            info = {"engine": "local", "chunks": 1}
        else:
            from regulab.sweep import ray_engine

            parts = ray_engine.chunks(values, self.chunks or 2)
            # a local cluster runs every chunk at once on this machine; a remote one, one each
            k = len(values) if self.ray_address is None else max(map(len, parts))
            path.preflight(
                recipe,
                self.param,
                k,
                seed=self.seed,
                device=self.device,
                max_memory=self.max_memory,
            )
            rows, info = ray_engine.run_on_ray(
                path.compute_rows,
                kwargs,
                parts,
                address=self.ray_address,
                gpus_per_trial=1 if str(self.device).startswith("cuda") else 0,
            )
            info["chunks"] = len(parts)
        self.path_ = rows
        self.best_index_ = select.choose(rows, self.rule)
        self.best_ = rows[self.best_index_]
        self.best_lambda_ = self.best_["lambda"]
        self.engine_info_ = info
        self.seconds_ = time.perf_counter() - started
        return self

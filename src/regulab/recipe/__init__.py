"""Recipes: TOML experiment files -> checked dataclasses -> one training run folder.

`schema` declares the sections and fields, `load` reads files and `--set`
overrides, `build` turns a recipe into what `fit` needs, `run` trains a recipe
into a run folder and `compare` reports over run folders. This package face
re-exports the reading API, which needs no torch.
"""

from regulab.errors import RecipeError
from regulab.recipe.load import (
    apply_override,
    expand,
    from_dict,
    load,
    place,
    resolve,
    resumed,
    seeds,
    stored_run,
    to_dict,
)
from regulab.recipe.schema import SECTIONS, Recipe, check

__all__ = [
    "SECTIONS",
    "Recipe",
    "RecipeError",
    "apply_override",
    "check",
    "expand",
    "from_dict",
    "load",
    "place",
    "resolve",
    "resumed",
    "seeds",
    "stored_run",
    "to_dict",
]

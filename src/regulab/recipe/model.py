"""The recipe's model: your `model.factory(**model.kwargs)`, or a bundled `model.name` whose
inputs and outputs come from the data; and how to build it again (`model_arch`)."""

import math

import torch
from torch import nn

from regulab import models
from regulab.errors import RecipeError
from regulab.recipe.imports import call, resolve_callable
from regulab.recipe.schema import Recipe
from regulab.recipe.sources import Splits


def model_arch(recipe: Recipe, splits: Splits) -> dict:
    """How to build the recipe's (unpruned) model again, as JSON: {"name", "kwargs"} of a
    bundled model, {"factory", "kwargs", "base"} of a model.factory."""
    m = recipe.model
    if m.factory:
        return {"factory": m.factory, "kwargs": m.kwargs, "base": recipe.base}
    name, kwargs = model_spec(recipe, splits)
    return {"name": name, "kwargs": kwargs}


def model_spec(recipe: Recipe, splits: Splits) -> tuple[str, dict]:
    """(name in `models.MODELS`, keyword arguments) of the recipe's bundled model for this
    data (model.name; see `model_arch` for a model.factory)."""
    m = recipe.model
    x = splits.train[0]
    inputs, out = math.prod(x.shape[1:]), splits.num_classes
    if m.name == "linear":
        return "linear", {"in_features": inputs, "out_features": out}
    if m.name == "mlp":
        sizes = [inputs, *m.hidden, out]
        return "mlp", {"sizes": sizes, "dropout": m.dropout or 0.0, "activation": m.activation}
    if m.name == "vgg_bn":
        if len(m.dropout) > 1:
            raise RecipeError(f"model.dropout must hold at most one p for vgg_bn; got {m.dropout}")
        return "vgg_bn", {
            "cfg": list(m.cfg),
            "in_channels": x.shape[1],
            "num_classes": out,
            "dropout": m.dropout[0] if m.dropout else 0.0,
            "drop_block": m.drop_block,
            "drop_block_size": m.drop_block_size,
        }
    return "resnet_bn", {
        "widths": list(m.widths),
        "blocks": list(m.blocks),
        "in_channels": x.shape[1],
        "num_classes": out,
        "drop_path": m.drop_path,
    }


def build_model(recipe: Recipe, splits: Splits) -> nn.Module:
    """The recipe's model: model.factory(**model.kwargs), or the bundled model.name with
    inputs and outputs taken from the data."""
    m = recipe.model
    if m.factory:
        make = resolve_callable(m.factory, "model.factory", recipe.base)
        model = call(make, m.kwargs, "model.kwargs", m.factory, "model.factory")
        if not isinstance(model, nn.Module):
            raise RecipeError(
                f"model.factory {m.factory!r} must return a torch.nn.Module; it returned "
                f"{type(model).__name__}"
            )
    else:
        name, kwargs = model_spec(recipe, splits)
        model = models.MODELS[name](**kwargs)
    if m.init == "normal":  # the demo's init: weights N(0, 1), biases 0
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Linear | nn.Conv2d):
                    module.weight.normal_()
                    if module.bias is not None:
                        module.bias.zero_()
    return model


def from_arch(arch: dict):
    """A zero-argument callable building the unpruned model that `model_arch` describes (what
    `regulab.slim.export.load(folder, model=...)` takes for a model.factory's model)."""
    if "factory" in arch:
        make = resolve_callable(arch["factory"], "model.factory", arch.get("base", ""))
        return lambda: call(
            make, arch.get("kwargs", {}), "model.kwargs", arch["factory"], "model.factory"
        )
    return lambda: models.MODELS[arch["name"]](**arch.get("kwargs", {}))

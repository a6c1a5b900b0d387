"""The rules that join fields of a recipe, in the order `schema.check` tests them.

Each rule returns what is wrong, or None. Where a rule needs what only the data or the
model can say (your data's task, your model's layers), it passes here and
`regulab.recipe.build` tests the same thing once the data is loaded and the model built.
"""

from regulab.recipe.imports import is_spec
from regulab.recipe.schema import (
    BN_MODELS,
    CLASSIFICATION_DATASETS,
    LOSSES,
    MAX_SIZE,
    REGRESSION_DATASETS,
    VECTOR_MODELS,
    Data,
    Recipe,
)


def bundled(d: Data) -> str | None:
    """The bundled data set of a [data] section ("" = fashion_mnist), None for your own."""
    if d.path or d.factory:
        return None
    return d.name or "fashion_mnist"


def task_of(r: Recipe) -> str | None:
    """classification or regression, where the recipe alone says it; None for data.task auto."""
    name = bundled(r.data)
    if name is not None:
        return "classification" if name in CLASSIFICATION_DATASETS else "regression"
    return None if r.data.task == "auto" else r.data.task


def data_words(r: Recipe, task: str) -> str:
    """How errors name the data: "the classification data set digits", "regression data"."""
    name = bundled(r.data)
    return f"the {task} data set {name}" if name else f"{task} data"


def loss_problem(r: Recipe, task: str | None) -> str | None:
    """What is wrong with `train.loss` for data of task (None: not known yet)."""
    loss = r.train.loss
    if task is None or is_spec(loss):
        return None  # your own loss may serve any task
    if task == "classification" and loss != "cross_entropy":
        return f"train.loss must be cross_entropy for {data_words(r, task)}; got {loss!r}"
    if task == "regression" and loss == "cross_entropy":
        regression = " or ".join(loss for loss in LOSSES if loss != "cross_entropy")
        return f"train.loss must be {regression} for {data_words(r, task)}; got 'cross_entropy'"


def monitor_problem(r: Recipe, task: str | None) -> str | None:
    """What is wrong with `early_stopping.monitor` for data of task (None: not known yet)."""
    watch = r.early_stopping.monitor
    if task == "regression" and r.early_stopping.patience and watch != "val_loss":
        return (
            f"early_stopping.monitor must be val_loss for {data_words(r, task)} "
            f"(it has no accuracy); got {watch!r}"
        )


def one_source_of_data(r: Recipe) -> str | None:
    """One source of data: `data.name`, `data.path` or `data.factory`."""
    d = r.data
    given = [f"data.{k} {v!r}" for k, v in (("name", d.name), ("path", d.path),
                                            ("factory", d.factory)) if v]  # fmt: skip
    if len(given) > 1:
        return f"{' and '.join(given)} are two sources of data; set one"


def settings_of_your_code_need_it(r: Recipe) -> str | None:
    """`data.kwargs`, `data.arrays`, `data.task`, `model.kwargs` and `train.loss_kwargs` need
    the data.factory, data.path, your data, model.factory and a "module:callable" loss."""
    d = r.data
    unused = [
        ("data.kwargs", d.kwargs, not d.factory, "data.factory"),
        ("data.arrays", d.arrays, not d.path and d.arrays != {"x": "x", "y": "y"}, "data.path"),
        ("data.task", d.task, bundled(d) and d.task != "auto", "data.path or data.factory"),
        ("model.kwargs", r.model.kwargs, not r.model.factory, "model.factory"),
        ("train.loss_kwargs", r.train.loss_kwargs, not is_spec(r.train.loss),
         'train.loss = "module:callable"'),
    ]  # fmt: skip
    for key, value, idle, needs in unused:
        if value and idle:
            return f"{key} is used with {needs} only, which is not set; got {value!r}"


def early_stopping_needs_validation(r: Recipe) -> str | None:
    """`early_stopping.patience` > 0 needs a validation set: `data.val_fraction` > 0 or one
    given (`data.arrays` x_val, y_val; a data.factory's "val" is checked when it is called)."""
    given = r.data.factory or (r.data.path and "x_val" in r.data.arrays)
    if r.early_stopping.patience and r.data.val_fraction == 0 and not given:
        return (
            "early_stopping.patience > 0 needs a validation set: set data.val_fraction > 0 "
            "(it is 0)"
        )


def loss_fits_the_task(r: Recipe) -> str | None:
    """`train.loss` is cross_entropy for classification data, mse or half_mse for regression
    data, or your own "module:callable"; your data's task (auto) is checked once it is read."""
    return loss_problem(r, task_of(r))


def regression_monitors_val_loss(r: Recipe) -> str | None:
    """Early stopping on regression data watches val_loss (there is no accuracy)."""
    return monitor_problem(r, task_of(r))


def mlp_dropout_per_layer(r: Recipe) -> str | None:
    """mlp: `model.dropout` is [] or one probability per width in `model.hidden`."""
    n = len(r.model.hidden)
    if not r.model.factory and r.model.name == "mlp" and len(r.model.dropout) not in (0, n):
        return (
            f"model.dropout must be [] or {n} probabilities, one per width in model.hidden; "
            f"got {r.model.dropout!r}"
        )


def sparsity_needs_batchnorm(r: Recipe) -> str | None:
    """`slim.sparsity` > 0 needs a model with BatchNorm: vgg_bn, resnet_bn, or a
    model.factory's model with BatchNorm layers (checked when it is built)."""
    if r.slim.sparsity and not r.model.factory and r.model.name not in BN_MODELS:
        return (
            f"slim.sparsity acts on BatchNorm scales, and model.name {r.model.name!r} has none "
            f"(use {' or '.join(BN_MODELS)}); got {r.slim.sparsity!r}"
        )


def vector_data_needs_a_vector_model(r: Recipe) -> str | None:
    """The regression data sets are vectors: `model.name` is linear or mlp (your data's
    shape is checked against a bundled model when it is read)."""
    name = bundled(r.data)
    if name in REGRESSION_DATASETS and not r.model.factory and r.model.name not in VECTOR_MODELS:
        return (
            f"model.name must be {' or '.join(VECTOR_MODELS)} for {name} (vector inputs); "
            f"got {r.model.name!r}"
        )


def resnet_stages_match(r: Recipe) -> str | None:
    """resnet_bn: `model.widths` and `model.blocks` have one entry per stage."""
    m = r.model
    if not m.factory and m.name == "resnet_bn" and len(m.widths) != len(m.blocks):
        return (
            f"model.blocks must have one entry per stage, as many as model.widths "
            f"({len(m.widths)}); got {m.blocks!r}"
        )


def synthetic_data_fits(r: Recipe) -> str | None:
    """synthetic_linear: (n_train + n_test) * num_inputs is at most 10^8 (drawn at once)."""
    d = r.data
    values = (d.n_train + d.n_test) * d.num_inputs
    if bundled(d) == "synthetic_linear" and values > MAX_SIZE:
        return (
            f"data.n_train + data.n_test times data.num_inputs must be at most 10^8 "
            f"values (they are drawn at once); got ({d.n_train} + {d.n_test}) * "
            f"{d.num_inputs} = {values}"
        )


JOINT_RULES = (
    one_source_of_data,
    settings_of_your_code_need_it,
    mlp_dropout_per_layer,
    early_stopping_needs_validation,
    loss_fits_the_task,
    regression_monitors_val_loss,
    sparsity_needs_batchnorm,
    vector_data_needs_a_vector_model,
    resnet_stages_match,
    synthetic_data_fits,
)


# Keys that only some choices use: section -> (the key that chooses, {choice: keys it uses}).
# A key set (not its default) where the choice does not use it is refused (`idle_settings`).
CHOICES = {
    "model": ("name", {
        "linear": (),
        "mlp": ("hidden", "dropout", "activation"),
        "vgg_bn": ("cfg", "dropout", "drop_block", "drop_block_size"),
        "resnet_bn": ("widths", "blocks", "drop_path"),
    }),
    "optim": ("name", {"sgd": ("momentum", "nesterov"), "adam": ("betas",),
                       "adamw": ("betas",)}),
    "schedule": ("name", {
        "constant": (),
        "inverse_sqrt": ("gamma",),
        "inverse_time": ("decay_rate", "decay_steps"),
        "step": ("step_size", "gamma"),
        "exponential": ("gamma",),
        "cosine": ("warmup_steps", "min_factor"),
    }),
    "data": ("name", {"synthetic_linear": ("n_train", "n_test", "num_inputs"), "line": ("n",),
                      **{name: () for name in ("fashion_mnist", "mnist", "digits")}}),
}  # fmt: skip


def idle_settings(r: Recipe) -> dict[str, str]:
    """{"section.key": what is wrong} for every key set (not its default) that the recipe's
    choice of model, optimizer, schedule or data set does not use; a model.factory uses none
    of the bundled models' keys, a data.path or data.factory none of the bundled sets'."""
    idle = {}
    for section, (chooser, uses) in CHOICES.items():
        table = getattr(r, section)
        default = type(table)()
        choice = getattr(table, chooser) or "fashion_mnist"  # data.name "" = fashion_mnist
        own = {"model": r.model.factory, "data": r.data.path or r.data.factory}.get(section)
        used = () if own else uses.get(choice, ())
        for key in dict.fromkeys(k for keys in uses.values() for k in keys):
            value = getattr(table, key)
            if key in used or value == getattr(default, key):
                continue
            users = [name for name, keys in uses.items() if key in keys]
            what = (
                f"{section}.factory {own!r}" if section == "model" and own
                else "your data" if own else f"{section}.{chooser} {choice!r}"
            )  # fmt: skip
            idle[f"{section}.{key}"] = (
                f"{section}.{key} is used by {' and '.join(users)} only, and {what} does not use "
                f"it (it uses {', '.join(used) or 'none of them'}); got {value!r}"
            )
    return idle

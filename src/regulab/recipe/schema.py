"""The recipe schema: one dataclass per TOML section; each field's default, unit and allowed values.

A recipe has one table per section below; every field has a default, so a recipe states only
what differs. Each field declares beside it what it allows, `default(value, *allowed)`: the names
it may take or its range. `check` walks the dataclasses and tests every declared rule, then the
few rules that join fields (`regulab.recipe.rules`). `regulab.recipe.reference` renders all of
it for docs/recipes.md; `regulab.recipe.load` reads TOML files into these dataclasses.
"""

# ruff: noqa: RUF009 (`default(...)` returns a dataclasses.field, which ruff cannot see)

import copy
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass

from regulab.errors import RecipeError
from regulab.recipe.imports import is_spec


@dataclass(frozen=True)
class Allowed:
    """What a field may hold: `ok(value)` holds, or the error says '<key> must be <text>'."""

    text: str  # the allowed values in words, as error messages and docs/recipes.md say them
    ok: Callable[[typing.Any], bool]  # the test, given a value of the field's type


def one_of(*names: str) -> Allowed:
    return Allowed("one of " + ", ".join(names), lambda v: v in names)


def default(value, *allowed: Allowed | tuple[str, ...]):
    """A field with its default `value` and what it allows, tested in this order by `check`.

    A tuple of names stands for `one_of(*names)`; a list or table default is copied for each
    recipe.
    """
    rules = tuple(one_of(*a) if isinstance(a, tuple) else a for a in allowed)
    if isinstance(value, list | dict):
        return field(default_factory=lambda: copy.deepcopy(value), metadata={"allowed": rules})
    return field(default=value, metadata={"allowed": rules})


# Names that fields allow (other modules import these).
CLASSIFICATION_DATASETS = ("fashion_mnist", "mnist", "digits")  # images of 10 classes
REGRESSION_DATASETS = ("synthetic_linear", "line")  # vectors with a real-valued target
DATASETS = CLASSIFICATION_DATASETS + REGRESSION_DATASETS
VECTOR_MODELS = ("linear", "mlp")  # take any input as one flat vector
BN_MODELS = ("vgg_bn", "resnet_bn")  # images only; their BatchNorm scales are what slim prunes
MODELS = VECTOR_MODELS + BN_MODELS
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "inverse_sqrt", "inverse_time", "step", "exponential", "cosine")
LOSSES = ("cross_entropy", "mse", "half_mse")  # the names; train.loss may also be code
TASKS = ("auto", "classification", "regression")  # of the user's data (data.path, data.factory)
PRECISIONS = ("fp32", "bf16", "fp16")
L1_MODES = ("subgradient", "proximal")  # L1 as s*sign(w) in the grad, or a soft-threshold step

# Ranges that fields allow; each `text` completes "<key> must be ...; got <value>".
MAX_SIZE = 10**8  # examples or features of a generated data set (memory is allocated at once)
COUNT = Allowed("an integer >= 0", lambda v: v >= 0)
AT_LEAST_1 = Allowed("an integer >= 1", lambda v: v >= 1)
NONNEG = Allowed("a finite number >= 0", lambda v: 0 <= v < math.inf)
POSITIVE = Allowed("a finite number > 0", lambda v: 0 < v < math.inf)
PROBABILITY = Allowed("a probability in [0, 1]", lambda v: 0 <= v <= 1)
FRACTION = Allowed("in [0, 1)", lambda v: 0 <= v < 1)
OPEN_FRACTION = Allowed("in (0, 1)", lambda v: 0 < v < 1)
SHARE = Allowed("a number in (0, 1]", lambda v: 0 < v <= 1)
HALF_SHARE = Allowed("a number in (0, 0.5]", lambda v: 0 < v <= 0.5)
RUNS = Allowed("a finite number >= 1", lambda v: 1 <= v < math.inf)
AT_LEAST_2 = Allowed("an integer >= 2", lambda v: v >= 2)
DIM = Allowed("-1 or a dimension >= 0", lambda v: v >= -1)
INT64 = Allowed(  # every integer, also in lists: what torch and JSON readers hold
    "within [-2^63, 2^63)",
    lambda v: all(-(2**63) <= i < 2**63 for i in (v if isinstance(v, list) else [v])
                  if isinstance(i, int)),
)  # fmt: skip
SEED = Allowed("an integer in [0, 2^63)", lambda v: 0 <= v < 2**63)
SIZE = Allowed("an integer in [1, 10^8]", lambda v: 1 <= v <= MAX_SIZE)
RATE = Allowed("a probability in [0, 1) (0 = off)", lambda v: 0 <= v < 1)
BETAS = Allowed(
    "two numbers in [0, 1), such as [0.9, 0.999]",
    lambda b: len(b) == 2 and all(0 <= v < 1 for v in b),
)
WIDTHS = Allowed("a list of integers >= 1", lambda ws: all(w >= 1 for w in ws))
STAGES = Allowed(
    "a non-empty list of integers >= 1", lambda ws: len(ws) > 0 and all(w >= 1 for w in ws)
)
CFG = Allowed(
    'a list of channel counts >= 1 and "M" (max pool), with at least one count',
    lambda cfg: (
        any(isinstance(c, int) for c in cfg)
        and all(c == "M" if isinstance(c, str) else c >= 1 for c in cfg)
    ),
)
DROPOUTS = Allowed("probabilities in [0, 1)", lambda ps: all(0 <= p < 1 for p in ps))
RATIOS = Allowed(
    "a non-empty list of numbers in [0, 1)", lambda rs: len(rs) > 0 and all(0 <= r < 1 for r in rs)
)
CODE = Allowed(
    '"" or "module:callable" or "path/to/file.py:callable"', lambda v: not v or is_spec(v)
)
A_LOSS = Allowed(
    f'one of {", ".join(LOSSES)}, or "module:callable"', lambda v: v in LOSSES or is_spec(v)
)
A_DATASET = Allowed(f'one of {", ".join(DATASETS)}, or ""', lambda v: v in ("", *DATASETS))
ARRAY_FILE = Allowed(
    '"" or a file ending in .npz or .safetensors',
    lambda v: v.endswith((".npz", ".safetensors")) or not v,
)
ARRAY_KEYS = ("x", "y", "x_val", "y_val", "x_test", "y_test")
ARRAYS = Allowed(
    "a table of array names: x and y, optionally x_val and y_val, x_test and y_test, in pairs",
    lambda a: (
        {"x", "y"} <= a.keys() <= set(ARRAY_KEYS)
        and all(isinstance(v, str) for v in a.values())
        and ("x_val" in a) == ("y_val" in a)
        and ("x_test" in a) == ("y_test" in a)
    ),
)


@dataclass
class Data:
    name: str = default("", A_DATASET)  # a bundled set ("": fashion_mnist, unless path or factory)
    path: str = default("", ARRAY_FILE)  # your arrays, named in `arrays` (relative: to `base`)
    arrays: dict = default({"x": "x", "y": "y"}, ARRAYS)  # path: which array is x, y, x_val, ...
    factory: str = default("", CODE)  # your function -> {"train": (x, y), "val": .., "test": ..}
    kwargs: dict = default({})  # factory: its keyword arguments
    task: str = default("auto", TASKS)  # path, factory: auto = integer y classify, float y regress
    root: str = ""  # folder of the files, used alone; "": $REGULAB_DATA_DIR, ~/.cache/regulab
    download: bool = True  # fetch missing files from the official mirrors (md5-checked)
    val_fraction: float = default(0.1, FRACTION)  # no validation set given: share of training
    test_fraction: float = default(0.2, OPEN_FRACTION)  # no test set given: share held out
    seed: int = default(0, SEED)  # seed of the train/validation(/test) split and synthetic draws
    vary_seed: bool = False  # add the run's seed to `seed`: every seed sees fresh data
    n_train: int = default(20, SIZE)  # synthetic_linear: training examples
    n_test: int = default(100, SIZE)  # synthetic_linear: test examples
    num_inputs: int = default(200, SIZE)  # synthetic_linear: input features
    n: int = default(100, SIZE)  # line: examples of y = 3x + 5 + N(0, 1), x ~ U(0, 10)


@dataclass
class Model:
    name: str = default("mlp", MODELS)  # a bundled network (inputs, classes from the data)
    factory: str = default("", CODE)  # your function -> nn.Module; then the keys below are unused
    kwargs: dict = default({})  # factory: its keyword arguments
    hidden: list[int] = default([256, 256], WIDTHS)  # mlp: hidden layer widths
    dropout: list[float] = default([], DROPOUTS)  # mlp: p per hidden layer; vgg_bn: [p]
    activation: str = default("relu", ("relu", "gelu", "tanh"))  # mlp: between the layers
    cfg: list[int | str] = default([32, "M", 64, "M", 128, "M"], CFG)  # vgg_bn: "M" = max-pool
    drop_block: float = default(0.0, RATE)  # vgg_bn: DropBlock drop probability (0 = off)
    drop_block_size: int = default(3, AT_LEAST_1)  # vgg_bn: DropBlock block size, pixels
    widths: list[int] = default([16, 32, 64], STAGES)  # resnet_bn: stage widths
    blocks: list[int] = default([2, 2, 2], STAGES)  # resnet_bn: blocks per stage (as widths)
    drop_path: float = default(0.0, RATE)  # resnet_bn: DropPath probability of the last block
    init: str = default("default", ("default", "normal"))  # PyTorch's | N(0, 1), biases 0


@dataclass
class Optim:
    name: str = default("sgd", OPTIMIZERS)  # torch.optim.SGD | Adam | AdamW
    lr: float = default(0.1, POSITIVE)  # learning rate; gradients are means over the minibatch
    momentum: float = default(0.0, NONNEG)  # sgd: heavy-ball momentum
    nesterov: bool = False  # sgd: Nesterov momentum
    betas: list[float] = default([0.9, 0.999], BETAS)  # adam/adamw: moment decay rates
    weight_decay: float = default(0.0, NONNEG)  # sgd/adam: coupled, wd*||w||^2/2; adamw: decoupled
    no_decay: list[str] = default([])  # extra name patterns kept undecayed


@dataclass
class Penalty:
    l2: float = default(0.0, NONNEG)  # l2 * ||w||^2 / 2 on the weights (ndim >= 2), coupled
    l1: float = default(0.0, NONNEG)  # l1 * ||w||_1 on the weights
    l1_mode: str = default("subgradient", L1_MODES)  # proximal: soft-threshold, exact zeros
    max_norm: float = default(0.0, NONNEG)  # constraint ||w|| <= max_norm after each step (0 = off)
    max_norm_dim: int = default(-1, DIM)  # -1: whole tensor; 0: each output unit (torch.renorm)


@dataclass
class Schedule:
    name: str = default("constant", SCHEDULES)  # lr factor, a pure function of the step
    gamma: float = default(0.1, NONNEG)  # step, exponential: factor; inverse_sqrt: 1/sqrt(1+g^2 t)
    decay_rate: float = default(1.0, NONNEG)  # inverse_time: 1/(1 + decay_rate * t / decay_steps)
    decay_steps: int = default(1, AT_LEAST_1)  # inverse_time: steps per unit of decay
    step_size: int = default(1000, AT_LEAST_1)  # step: steps between multiplications by gamma
    warmup_steps: int = default(0, COUNT)  # cosine: linear warmup steps
    min_factor: float = default(0.0, PROBABILITY)  # cosine: final lr as a fraction of eta0


@dataclass
class EarlyStop:
    patience: int = default(0, COUNT)  # epochs without improvement before stopping (0 = off)
    monitor: str = default("val_loss", ("val_loss", "val_accuracy"))  # the metric to watch
    min_delta: float = default(0.0, NONNEG)  # smallest change that counts as an improvement


@dataclass
class Augment:
    hflip: float = default(0.0, NONNEG, PROBABILITY)  # probability of a left-right flip per image
    random_crop: int = default(0, COUNT)  # zero-padding before a random crop back to size, pixels
    cutout: int = default(0, COUNT)  # side of the zeroed square, pixels (0 = off)
    gaussian_noise: float = default(0.0, NONNEG)  # std of added noise, normalized input units


@dataclass
class Slim:
    sparsity: float = default(0.0, NONNEG)  # s*sum|gamma|, BN scales (paper: VGG 1e-4, ResNet 1e-5)
    sparsity_mode: str = default("subgradient", L1_MODES)  # proximal: soft-threshold, exact zeros
    ratios: list[float] = default([0.5], RATIOS)  # slim: shares of channels cut
    passes: int = default(1, AT_LEAST_1)  # slim: rounds of pruning ratio of the rest + fine-tuning
    finetune_epochs: int = default(10, COUNT)  # slim: fine-tuning epochs after a prune (0 = none)
    min_channels: int = default(1, AT_LEAST_1)  # slim: fewest channels a layer (group) keeps
    max_layer_ratio: float = default(1.0, SHARE)  # slim: largest share of one layer's channels cut
    score: str = default("gamma", ("gamma", "normalized"))  # slim: raw |gamma| (paper) or per layer


@dataclass
class Train:
    epochs: int = default(10, AT_LEAST_1)  # passes over the training set
    batch_size: int = default(256, AT_LEAST_1)  # examples per batch (global, over all processes)
    loss: str = default("cross_entropy", A_LOSS)  # half_mse = mse / 2; code: (output, y) -> mean
    loss_kwargs: dict = default({})  # code loss: a class's arguments, else bound; [1, 2]: tensor
    batch_fn: str = default("", CODE)  # your function: batch -> (inputs, target)
    label_smoothing: float = default(0.0, PROBABILITY)  # cross_entropy on (1-s) one-hot + s/C
    mixup: float = default(0.0, NONNEG)  # Beta(alpha, alpha) of mixup (0 = off)
    cutmix: float = default(0.0, NONNEG)  # Beta(alpha, alpha) of CutMix (0 = off)
    precision: str = default("fp32", PRECISIONS)  # autocast; fp16 + torch.amp.GradScaler (CPU too)
    accumulate: int = default(1, AT_LEAST_1)  # batches per optimizer step (gradients summed)
    seed: int = default(0, SEED)  # first seed; --seeds N runs seed, seed+1, ..., seed+N-1
    device: str = "cpu"  # cpu | cuda | cuda:N | mps
    clip_grad_norm: float = default(0.0, NONNEG)  # max total gradient norm (0 = off)
    eval_train: int = default(10000, COUNT)  # train examples re-evaluated in eval mode (0: running)
    keep_checkpoints: int = default(1, AT_LEAST_1)  # newest checkpoints kept in the run folder


@dataclass
class Tune:
    space: str = ""  # what to search: "weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6)|off"
    budget: float = default(3.0, RUNS)  # single-run equivalents: copy-epochs / train.epochs
    configs: int = default(0, COUNT)  # configurations drawn (0: the most the budget allows)
    eta: int = default(3, AT_LEAST_2)  # successive halving: each cut keeps one copy in eta
    scheduler: str = default("sh", ("sh", "pbt"))  # successive halving | population-based training
    promotion: bool = True  # sh: the best of every strength range goes on at each cut
    grace: int = default(1, AT_LEAST_1)  # sh: epochs before the first cut
    finalists: int = default(0, COUNT)  # trained to the end (2+: an ensemble); 0: 2 if budget >= 2
    pbt_interval: int = default(0, COUNT)  # pbt: epochs between exploit steps (0: epochs // 4)
    pbt_fraction: float = default(0.25, HALF_SHARE)  # pbt: share of copies replaced at each step
    metric: str = default("val_loss", ("val_loss", "val_accuracy"))  # what chooses (validation)
    engine: str = default("local", ("local", "ray"))  # ray: sh's Hyperband brackets as Ray tasks


@dataclass
class Recipe:
    name: str = ""  # label of the recipe (default: the file name)
    base: str = ""  # folder your files and modules resolve in (load: the recipe's; "": cwd)
    description: str = ""  # one line shown in the report
    data: Data = field(default_factory=Data)  # [data]: bundled, your file or your function; split
    model: Model = field(default_factory=Model)  # [model]: bundled, or your function
    optim: Optim = field(default_factory=Optim)  # [optim]: the optimizer and weight decay
    penalty: Penalty = field(default_factory=Penalty)  # [penalty]: L1/L2 penalties, max-norm
    schedule: Schedule = field(default_factory=Schedule)  # [schedule]: lr factor per step
    early_stopping: EarlyStop = field(default_factory=EarlyStop)  # [early_stopping]: patience
    augment: Augment = field(default_factory=Augment)  # [augment]: batch augmentations
    slim: Slim = field(default_factory=Slim)  # [slim]: network slimming (BatchNorm sparsity)
    train: Train = field(default_factory=Train)  # [train]: epochs, batch size, loss, seed, device
    tune: Tune = field(default_factory=Tune)  # [tune]: what `regulab tune` searches, its budget
    variants: dict = field(default_factory=dict)  # name -> overrides: {"penalty": {"l2": 1e-4}}


SECTIONS = {f.name: f.type for f in fields(Recipe) if is_dataclass(f.type)}

# What `regulab sweep --param` (and `regulab.sweep.fit_sweep`) sweeps -> the recipe field it sets.
SWEEPABLE = {
    "l2": "penalty.l2",
    "weight_decay": "optim.weight_decay",
    "l1": "penalty.l1",
    "dropout": "model.dropout",  # every dropout layer
    "bn_sparsity": "slim.sparsity",  # L1 on BatchNorm scales
}


def check(recipe: Recipe, source: str = "recipe") -> None:
    """Test every field's declared rules, section by section, then `rules.JOINT_RULES`; stop at
    the first that fails."""
    for key, value, allowed in _walk(recipe):
        for rule in (*allowed, INT64):
            if not rule.ok(value):
                raise RecipeError(f"{source}: {key} must be {rule.text}; got {value!r}")
    from regulab.recipe.rules import JOINT_RULES  # they read the dataclasses above

    for rule in JOINT_RULES:
        if problem := rule(recipe):
            raise RecipeError(f"{source}: {problem}")


def _walk(obj, prefix: str = "") -> Iterator[tuple[str, typing.Any, tuple[Allowed, ...]]]:
    """("section.key", value, declared rules) of every field, in declaration order."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            yield from _walk(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, f.metadata.get("allowed", ())

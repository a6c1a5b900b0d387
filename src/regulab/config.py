"""Recipes: TOML experiment files mapped onto dataclasses, with typed `--set` overrides.

A recipe has one table per section below; every field has a default, so a
recipe states only what differs. Unknown keys and wrong types are errors naming
the file and the key. `[variants.NAME]` tables hold overrides for named
variants of the base recipe (e.g. none / l2 / dropout), each trained as a run.
"""

import copy
import difflib
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


class RecipeError(ValueError):
    """A recipe or override that cannot be used; the message names the file and key."""


@dataclass
class Data:
    name: str = "fashion_mnist"  # fashion_mnist | mnist | digits | synthetic_linear | line
    root: str = ""  # folder holding the files; "" = $REGULAB_DATA_DIR, then ~/.cache/regulab
    download: bool = True  # fetch missing files from the official mirrors (md5-checked)
    val_fraction: float = 0.1  # share of the training set held out for validation (0 = none)
    test_fraction: float = 0.2  # digits and line only (no official test set): share held out
    seed: int = 0  # seed of the train/validation(/test) split and of synthetic draws
    vary_seed: bool = False  # add the run's seed to `seed`: every seed sees fresh data
    n_train: int = 20  # synthetic_linear: training examples
    n_test: int = 100  # synthetic_linear: test examples
    num_inputs: int = 200  # synthetic_linear: input features
    n: int = 100  # line: examples of y = 3x + 5 + N(0, 1), x ~ U(0, 10), before the split


@dataclass
class Model:
    name: str = "mlp"  # linear | mlp | vgg_bn | resnet_bn (inputs and classes come from the data)
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # mlp: hidden layer widths
    dropout: list[float] = field(default_factory=list)  # mlp: p per hidden layer; vgg_bn: [p]
    activation: str = "relu"  # mlp: relu | gelu | tanh
    cfg: list[int | str] = field(default_factory=lambda: [32, "M", 64, "M", 128, "M"])  # vgg_bn
    drop_block: float = 0.0  # vgg_bn: DropBlock drop probability (0 = off)
    drop_block_size: int = 3  # vgg_bn: DropBlock block size, pixels
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # resnet_bn: stage widths
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2])  # resnet_bn: blocks per stage
    drop_path: float = 0.0  # resnet_bn: DropPath probability of the last block (0 = off)
    init: str = "default"  # default (PyTorch's) | normal (weights N(0, 1), biases 0: the demo's)


@dataclass
class Optim:
    name: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1  # learning rate; gradients are means over the minibatch
    momentum: float = 0.0  # sgd: heavy-ball momentum
    nesterov: bool = False  # sgd: Nesterov momentum
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam/adamw
    weight_decay: float = 0.0  # sgd/adam: coupled, penalty wd*||w||^2/2; adamw: decoupled
    no_decay: list[str] = field(default_factory=list)  # extra name patterns kept undecayed


@dataclass
class Penalty:
    l2: float = 0.0  # l2 * ||w||^2 / 2 on the weights (ndim >= 2), coupled (added to the grad)
    l1: float = 0.0  # l1 * ||w||_1 on the weights
    l1_mode: str = "subgradient"  # subgradient (l1*sign(w) in the grad) | proximal (exact zeros)
    max_norm: float = 0.0  # hard constraint ||w|| <= max_norm after every step (0 = off)
    max_norm_dim: int = -1  # -1: whole tensor; 0: each output unit / filter (torch.renorm)


@dataclass
class Schedule:
    name: str = "constant"  # constant | inverse_sqrt | inverse_time | step | exponential | cosine
    gamma: float = 0.1  # inverse_sqrt: eta0/sqrt(1+gamma^2 t); step/exponential: factor
    decay_rate: float = 1.0  # inverse_time: eta0 / (1 + decay_rate * t / decay_steps)
    decay_steps: int = 1  # inverse_time: steps per unit of decay
    step_size: int = 1000  # step: steps between multiplications by gamma
    warmup_steps: int = 0  # cosine: linear warmup steps
    min_factor: float = 0.0  # cosine: final lr as a fraction of eta0


@dataclass
class EarlyStop:
    patience: int = 0  # epochs without improvement before stopping (0 = off)
    monitor: str = "val_loss"  # metric to watch: val_loss | val_accuracy
    min_delta: float = 0.0  # smallest change that counts as an improvement


@dataclass
class Augment:
    hflip: float = 0.0  # probability of a left-right flip per image (0 = off)
    random_crop: int = 0  # zero-padding before a random crop back to size, pixels (0 = off)
    cutout: int = 0  # side of the zeroed square, pixels (0 = off)
    gaussian_noise: float = 0.0  # std of added noise, in units of the normalized input (0 = off)


@dataclass
class Slim:
    sparsity: float = 0.0  # s in s * sum|gamma| on BatchNorm scales (paper: 1e-4 VGG, 1e-5 ResNet)
    sparsity_mode: str = "subgradient"  # subgradient (s*sign(gamma) in the grad) | proximal
    ratios: list[float] = field(default_factory=lambda: [0.5])  # slim: shares of channels cut
    passes: int = 1  # slim: prune + fine-tune rounds per ratio, each cutting ratio of the rest
    finetune_epochs: int = 10  # slim: epochs of fine-tuning after each pruning (0 = none)
    min_channels: int = 1  # slim: fewest channels a layer (coupled group) keeps
    max_layer_ratio: float = 1.0  # slim: largest share of one layer's channels cut
    score: str = "gamma"  # slim: gamma (raw |gamma|, the paper) | normalized (per layer)


@dataclass
class Train:
    epochs: int = 10  # passes over the training set
    batch_size: int = 256  # examples per step (global, over all processes)
    loss: str = "cross_entropy"  # cross_entropy | mse | half_mse (= mse / 2)
    seed: int = 0  # first seed; --seeds N runs seed, seed+1, ..., seed+N-1
    device: str = "cpu"  # cpu | cuda | cuda:N | mps
    clip_grad_norm: float = 0.0  # max total gradient norm (0 = off)
    eval_train: int = 10000  # training examples re-evaluated each epoch in eval mode (0 = running)
    keep_checkpoints: int = 1  # newest checkpoints kept in the run folder


@dataclass
class Recipe:
    name: str = ""  # label of the recipe (default: the file name)
    description: str = ""  # one line shown in the report
    data: Data = field(default_factory=Data)  # [data]: the data set and its split
    model: Model = field(default_factory=Model)  # [model]: the network
    optim: Optim = field(default_factory=Optim)  # [optim]: the optimizer and weight decay
    penalty: Penalty = field(default_factory=Penalty)  # [penalty]: L1/L2 penalties, max-norm
    schedule: Schedule = field(default_factory=Schedule)  # [schedule]: lr factor per step
    early_stopping: EarlyStop = field(default_factory=EarlyStop)  # [early_stopping]: patience
    augment: Augment = field(default_factory=Augment)  # [augment]: batch augmentations
    slim: Slim = field(default_factory=Slim)  # [slim]: network slimming (BatchNorm sparsity)
    train: Train = field(default_factory=Train)  # [train]: epochs, batch size, loss, seed, device
    variants: dict = field(default_factory=dict)  # name -> overrides: {"penalty": {"l2": 1e-4}}


SECTIONS = {f.name: f.type for f in fields(Recipe) if hasattr(f.type, "__dataclass_fields__")}


def load(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a recipe file, apply `--set section.key=value` overrides, and check everything."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise RecipeError(f"recipe '{path}' does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"recipe '{path}' cannot be read: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from e
    raw.setdefault("name", path.stem)
    for text in overrides:
        apply_override(raw, text)
    recipe = from_dict(raw, source=str(path))
    for text in overrides:  # an override that every variant replaces would do nothing
        section, name = text.partition("=")[0].strip().split(".")
        setters = [v for v, ov in recipe.variants.items() if name in ov.get(section, {})]
        if setters and len(setters) == len(recipe.variants):
            raise RecipeError(
                f"--set {section}.{name} has no effect: every variant of {path} sets it "
                f"([variants.{'], [variants.'.join(setters)}]); change it there"
            )
    return recipe


def from_dict(raw: dict, source: str = "recipe") -> Recipe:
    """Build a Recipe from nested dicts (a parsed TOML file); errors name `source` and the key."""
    raw = copy.deepcopy(raw)
    variants = raw.pop("variants", {})
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise RecipeError(f"{source}: variants must be tables [variants.NAME] of overrides")
    recipe = _build(Recipe, {k: v for k, v in raw.items()}, source, "")
    check(recipe, source)
    for name, overrides in variants.items():
        try:
            check(_build(Recipe, _merge(asdict(recipe), overrides), source, ""), source)
        except RecipeError as e:
            where = f"{source}: [variants.{name}]"
            raise RecipeError(str(e).replace(f"{source}:", where, 1)) from None
        if "variants" in overrides or "name" in overrides:
            raise RecipeError(f"{source}: [variants.{name}] may not set 'variants' or 'name'")
    recipe.variants = variants
    return recipe


def expand(recipe: Recipe) -> dict[str, Recipe]:
    """The runs of a recipe: {variant name: Recipe without variants}; one named after it if none."""
    base = asdict(recipe)
    base["variants"] = {}
    if not recipe.variants:
        return {recipe.name or "run": from_dict(base)}
    return {name: from_dict(_merge(base, ov)) for name, ov in recipe.variants.items()}


def to_dict(recipe: Recipe) -> dict:
    return asdict(recipe)


def apply_override(raw: dict, text: str) -> None:
    """Apply 'section.key=value' to raw (nested dicts); the value is read as TOML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or len(parts) != 2 or parts[0] not in SECTIONS or not parts[1]:
        raise RecipeError(
            f"--set must be section.key=value with a section among {', '.join(SECTIONS)} "
            f"(such as optim.lr=0.1); got {text!r}"
        )
    section, name = parts
    known = {f.name: f.type for f in fields(SECTIONS[section])}
    if name not in known:
        raise RecipeError(f"--set {key}: unknown key{_suggest(name, known)}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        if not _allows(known[name], str):
            raise RecipeError(
                f"--set {key}: {value.strip()!r} is not a value of type {_type_name(known[name])}"
            ) from None
        parsed = value.strip()  # a bare word for a text field: --set data.name=digits
    raw.setdefault(section, {})
    if not isinstance(raw[section], dict):
        raise RecipeError(f"--set {key}: [{section}] in the recipe is not a table")
    raw[section][name] = parsed
    _value(parsed, known[name], f"--set {key}")


def _build(cls, raw, source: str, prefix: str):
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: [{prefix.rstrip('.')}] must be a table; got {raw!r}")
    known = {f.name: f.type for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        where = f"{prefix}{key}"
        if key not in known:
            raise RecipeError(f"{source}: unknown key '{where}'{_suggest(key, known)}")
        kind = known[key]
        if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
            values[key] = _build(kind, value, source, f"{where}.")
        elif key == "variants":
            values[key] = value
        else:
            values[key] = _value(value, kind, f"{source}: {where}")
    return cls(**values)


def _value(value, kind, where: str):
    """Check value against the annotation kind; ints are accepted for floats."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _value(value, option, where)
            except RecipeError:
                continue
        raise RecipeError(f"{where} must be {_type_name(kind)}; got {value!r}")
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise RecipeError(f"{where} must be a list of {_type_name(item)}; got {value!r}")
        return [_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise RecipeError(
            f"{where} must be {_type_name(kind)}; got {value!r} ({type(value).__name__})"
        )
    return value


def _type_name(kind) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        kind, str(kind)
    )


def _allows(kind, base) -> bool:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return base in typing.get_args(kind)
    return kind is base


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f" (known: {', '.join(known)}){hint}"


def _merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "variants":
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


DATASETS = ("fashion_mnist", "mnist", "digits", "synthetic_linear", "line")
MODELS = ("linear", "mlp", "vgg_bn", "resnet_bn")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "inverse_sqrt", "inverse_time", "step", "exponential", "cosine")
LOSSES = ("cross_entropy", "mse", "half_mse")


def check(recipe: Recipe, source: str = "recipe") -> None:
    """Check the values that a type alone does not (names, ranges, combinations)."""

    def need(ok: bool, key: str, allowed: str, value) -> None:
        if not ok:
            raise RecipeError(f"{source}: {key} must be {allowed}; got {value!r}")

    def among(key: str, value, allowed) -> None:
        need(value in allowed, key, "one of " + ", ".join(allowed), value)

    r = recipe
    among("data.name", r.data.name, DATASETS)
    among("model.name", r.model.name, MODELS)
    among("optim.name", r.optim.name, OPTIMIZERS)
    among("schedule.name", r.schedule.name, SCHEDULES)
    among("train.loss", r.train.loss, LOSSES)
    among("penalty.l1_mode", r.penalty.l1_mode, ("subgradient", "proximal"))
    among("slim.sparsity_mode", r.slim.sparsity_mode, ("subgradient", "proximal"))
    among("slim.score", r.slim.score, ("gamma", "normalized"))
    need(
        len(r.slim.ratios) > 0 and all(0 <= v < 1 for v in r.slim.ratios),
        "slim.ratios",
        "a non-empty list of numbers in [0, 1)",
        r.slim.ratios,
    )
    need(
        0 < r.slim.max_layer_ratio <= 1,
        "slim.max_layer_ratio",
        "a number in (0, 1]",
        r.slim.max_layer_ratio,
    )
    among("model.activation", r.model.activation, ("relu", "gelu", "tanh"))
    among("model.init", r.model.init, ("default", "normal"))
    among("early_stopping.monitor", r.early_stopping.monitor, ("val_loss", "val_accuracy"))
    need(0 <= r.data.val_fraction < 1, "data.val_fraction", "in [0, 1)", r.data.val_fraction)
    need(0 < r.data.test_fraction < 1, "data.test_fraction", "in (0, 1)", r.data.test_fraction)

    def value(key: str):
        section, name = key.split(".")
        return getattr(getattr(r, section), name)

    for key in (
        "data.seed",
        "train.seed",
        "train.eval_train",
        "slim.finetune_epochs",
        "early_stopping.patience",
        "augment.random_crop",
        "augment.cutout",
    ):
        need(value(key) >= 0, key, "an integer >= 0", value(key))
    for key in (
        "data.n_train",
        "data.n_test",
        "data.num_inputs",
        "data.n",
        "train.epochs",
        "train.batch_size",
        "train.keep_checkpoints",
        "schedule.decay_steps",
        "schedule.step_size",
        "model.drop_block_size",
        "slim.passes",
        "slim.min_channels",
    ):
        need(value(key) >= 1, key, "an integer >= 1", value(key))
    for key in (
        "optim.momentum",
        "optim.weight_decay",
        "penalty.l1",
        "penalty.l2",
        "penalty.max_norm",
        "train.clip_grad_norm",
        "schedule.gamma",
        "schedule.decay_rate",
        "early_stopping.min_delta",
        "augment.gaussian_noise",
        "augment.hflip",
        "slim.sparsity",
    ):
        v = value(key)
        need(v >= 0 and v == v and v != float("inf"), key, "a finite number >= 0", v)
    need(
        r.optim.lr > 0 and r.optim.lr != float("inf"), "optim.lr", "a finite number > 0", r.optim.lr
    )
    need(r.augment.hflip <= 1, "augment.hflip", "a probability in [0, 1]", r.augment.hflip)
    need(
        r.penalty.max_norm_dim >= -1,
        "penalty.max_norm_dim",
        "-1 or a dimension >= 0",
        r.penalty.max_norm_dim,
    )
    for p in r.model.dropout:
        need(0 <= p < 1, "model.dropout", "probabilities in [0, 1)", r.model.dropout)
    need(
        r.model.name != "mlp" or len(r.model.dropout) in (0, len(r.model.hidden)),
        "model.dropout",
        f"[] or {len(r.model.hidden)} probabilities, one per width in model.hidden",
        r.model.dropout,
    )
    if r.early_stopping.patience and r.data.val_fraction == 0:
        raise RecipeError(
            f"{source}: early_stopping.patience > 0 needs a validation set: set "
            f"data.val_fraction > 0 (it is 0)"
        )
    classify = r.data.name in ("fashion_mnist", "mnist", "digits")
    if classify and r.train.loss != "cross_entropy":
        raise RecipeError(
            f"{source}: train.loss must be cross_entropy for the classification data set "
            f"{r.data.name}; got {r.train.loss!r}"
        )
    if not classify and r.train.loss == "cross_entropy":
        raise RecipeError(
            f"{source}: train.loss must be mse or half_mse for the regression data set "
            f"{r.data.name}; got 'cross_entropy'"
        )
    if not classify and r.early_stopping.patience and r.early_stopping.monitor != "val_loss":
        raise RecipeError(
            f"{source}: early_stopping.monitor must be val_loss for the regression data set "
            f"{r.data.name} (it has no accuracy); got {r.early_stopping.monitor!r}"
        )
    if r.slim.sparsity and r.model.name not in ("vgg_bn", "resnet_bn"):
        raise RecipeError(
            f"{source}: slim.sparsity acts on BatchNorm scales, and model.name "
            f"{r.model.name!r} has none (use vgg_bn or resnet_bn); got {r.slim.sparsity!r}"
        )
    if not classify and r.model.name != "linear" and r.model.name != "mlp":
        raise RecipeError(
            f"{source}: model.name must be linear or mlp for {r.data.name} (vector inputs); "
            f"got {r.model.name!r}"
        )

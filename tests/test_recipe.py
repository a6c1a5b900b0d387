"""Recipes: the shipped TOML files, typed loading, `--set` overrides, value checks, defaults,
and docs/recipes.md, whose reference part is generated from the schema."""

import inspect
import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from regulab import recipe as recipes
from regulab.recipe import RecipeError, reference, rules, schema

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

# the variants each shipped recipe expands to, in file order
EXPECTED_VARIANTS = {
    "compare_fashion": ["none", "l2", "l1", "dropout", "early_stopping"],
    "dropout_mlp_fashion": ["dropout_mlp_fashion"],
    "lr_decay_l2": ["constant", "inverse_sqrt"],
    "mlp_digits": ["mlp_digits"],
    "slim_vgg_fashion": ["slim_vgg_fashion"],
    "tune_digits": ["tune_digits"],
    "weight_decay_linear": ["lambda_0", "lambda_3"],
}

DIGITS = """
name = "digits_small"
[data]
name = "digits"
[model]
name = "mlp"
hidden = [16, 16]
[optim]
lr = 0.5
"""


def write(tmp_path, text, name="r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def flat(d: dict, prefix: str = "") -> dict:
    """{"section.key": value} of a nested dict; lists are values."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff(a, b) -> dict:
    """{"section.key": (value in a, value in b)} where the two recipes differ."""
    fa, fb = flat(recipes.to_dict(a)), flat(recipes.to_dict(b))
    assert fa.keys() == fb.keys()
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}


def error(tmp_path, text, overrides=()) -> str:
    """The message of the RecipeError that loading text (with overrides) raises."""
    with pytest.raises(RecipeError) as info:
        recipes.load(write(tmp_path, text), list(overrides))
    return str(info.value)


# --- the shipped recipes ---------------------------------------------------------------------


def test_every_shipped_recipe_is_listed_here():
    assert sorted(p.stem for p in RECIPES.glob("*.toml")) == sorted(EXPECTED_VARIANTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_VARIANTS))
def test_shipped_recipe_loads_and_expands(name):
    recipe = recipes.load(RECIPES / f"{name}.toml")
    assert recipe.name == name
    assert recipe.description  # one line for the report
    runs = recipes.expand(recipe)
    assert list(runs) == EXPECTED_VARIANTS[name]
    for run in runs.values():
        assert run.variants == {}
        assert run.name == name
        recipes.check(run)
        # what config.json stores reads back as the same recipe (resume relies on it)
        assert recipes.from_dict(recipes.to_dict(run)) == run


def test_dropout_mlp_fashion_is_the_classic_experiment():
    (r,) = recipes.expand(recipes.load(RECIPES / "dropout_mlp_fashion.toml")).values()
    assert r.data.name == "fashion_mnist"
    assert (r.model.name, r.model.hidden, r.model.dropout) == ("mlp", [256, 256], [0.2, 0.5])
    assert (r.optim.name, r.optim.lr, r.optim.weight_decay) == ("sgd", 0.5, 0.0)
    assert (r.train.batch_size, r.train.epochs, r.train.loss) == (256, 10, "cross_entropy")
    assert (r.penalty.l1, r.penalty.l2, r.early_stopping.patience) == (0.0, 0.0, 0)


def test_slim_vgg_fashion_is_a_sparsity_trained_vgg():
    (r,) = recipes.expand(recipes.load(RECIPES / "slim_vgg_fashion.toml")).values()
    assert (r.data.name, r.model.name) == ("fashion_mnist", "vgg_bn")
    assert r.model.cfg == [32, "M", 64, "M", 128, "M", 256, "M"]
    assert (r.slim.sparsity, r.slim.sparsity_mode, r.slim.score) == (1e-3, "subgradient", "gamma")
    assert (r.optim.name, r.optim.lr, r.optim.momentum, r.optim.weight_decay) == (
        "sgd", 0.05, 0.9, 1e-4,
    )  # fmt: skip
    assert (r.train.epochs, r.train.batch_size, r.schedule.name) == (10, 128, "cosine")
    assert (r.slim.ratios, r.slim.max_layer_ratio, r.slim.finetune_epochs) == ([0.5, 0.7], 0.9, 10)


def test_compare_fashion_variants_differ_only_in_their_regularizer():
    runs = recipes.expand(recipes.load(RECIPES / "compare_fashion.toml"))
    base = runs["none"]
    assert base.data.name == "fashion_mnist"
    assert base.data.val_fraction == 0.1  # early stopping needs it, so every variant has it
    assert (base.model.name, base.model.hidden, base.model.dropout) == ("mlp", [256, 256], [])
    assert (base.optim.name, base.optim.lr, base.optim.weight_decay) == ("sgd", 0.1, 0.0)
    assert (base.penalty.l1, base.penalty.l2, base.early_stopping.patience) == (0.0, 0.0, 0)
    assert (base.train.epochs, base.train.batch_size) == (20, 256)
    assert {name: diff(base, r) for name, r in runs.items()} == {
        "none": {},
        "l2": {"penalty.l2": (0.0, 5e-4)},
        "l1": {"penalty.l1": (0.0, 2e-5), "penalty.l1_mode": ("subgradient", "proximal")},
        "dropout": {"model.dropout": ([], [0.2, 0.5])},
        "early_stopping": {"early_stopping.patience": (0, 3)},
    }


def test_lr_decay_l2_is_inverse_sqrt_against_constant():
    runs = recipes.expand(recipes.load(RECIPES / "lr_decay_l2.toml"))
    constant, decay = runs["constant"], runs["inverse_sqrt"]
    d = constant.data
    assert (d.name, d.n, d.test_fraction, d.val_fraction) == ("line", 100, 0.2, 0.0)
    assert (constant.model.name, constant.train.loss) == ("linear", "mse")
    assert constant.optim.weight_decay == 0.01  # the L2 of "lr decay with L2"
    assert diff(constant, decay) == {
        "schedule.name": ("constant", "inverse_sqrt"),
        "schedule.gamma": (0.1, 0.3),  # the constant schedule ignores gamma
    }


def test_weight_decay_linear_is_lambda_0_against_3():
    runs = recipes.expand(recipes.load(RECIPES / "weight_decay_linear.toml"))
    r0, r3 = runs["lambda_0"], runs["lambda_3"]
    d = r0.data
    assert (d.name, d.n_train, d.n_test, d.num_inputs) == ("synthetic_linear", 20, 100, 200)
    assert (r0.model.name, r0.model.init, r0.train.loss) == ("linear", "normal", "half_mse")
    assert diff(r0, r3) == {"optim.weight_decay": (0.0, 3.0)}


def test_a_recipe_without_variants_is_one_run_named_after_the_file(tmp_path):
    recipe = recipes.load(write(tmp_path, "[data]\nname = 'digits'\n", "my_recipe.toml"))
    runs = recipes.expand(recipe)
    assert list(runs) == ["my_recipe"]
    assert runs["my_recipe"] == recipe


# --- unknown keys ----------------------------------------------------------------------------


def test_unknown_top_level_key_names_file_key_and_a_near_miss(tmp_path):
    msg = error(tmp_path, DIGITS + "[optimm]\nlr = 0.1\n")
    assert str(tmp_path / "r.toml") in msg
    assert "unknown key 'optimm'" in msg
    assert "did you mean 'optim'?" in msg


def test_unknown_key_in_a_section_lists_the_known_keys(tmp_path):
    msg = error(tmp_path, DIGITS.replace("lr = 0.5", "lr = 0.5\nweight_decy = 0.1"))
    assert str(tmp_path / "r.toml") in msg
    assert "unknown key 'optim.weight_decy'" in msg
    assert "did you mean 'weight_decay'?" in msg
    assert "known: name, lr, momentum" in msg
    far = error(tmp_path, DIGITS.replace("lr = 0.5", "lr = 0.5\nzzz = 1"))
    assert "unknown key 'optim.zzz'" in far
    assert "did you mean" not in far


def test_unknown_key_in_a_variant_names_the_variant(tmp_path):
    msg = error(tmp_path, DIGITS + "[variants.fast]\noptim.lrr = 1.0\n")
    assert str(tmp_path / "r.toml") in msg
    assert "[variants.fast]" in msg
    assert "unknown key 'optim.lrr'" in msg
    assert "did you mean 'lr'?" in msg


@pytest.mark.parametrize(
    "variant",
    ["[variants.a]\nname = 'b'\n", "[variants.a]\nvariants.b = {}\n", "[variants.a]\nbase = '.'\n"],
)
def test_a_variant_may_not_rename_nest_or_move(tmp_path, variant):
    msg = error(tmp_path, DIGITS + variant)
    assert "[variants.a] may not set 'variants', 'name' or 'base'" in msg


def test_variants_must_be_tables(tmp_path):
    msg = error(tmp_path, "variants = 3\n" + DIGITS)
    assert str(tmp_path / "r.toml") in msg
    assert "variants must be tables" in msg


# --- types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "expected", "given"),
    [
        ("[optim]\nlr = '0.1'", "optim.lr", "must be a number", "got '0.1' (str)"),
        ("[train]\nepochs = 2.5", "train.epochs", "must be an integer", "got 2.5 (float)"),
        ("[train]\nepochs = true", "train.epochs", "must be an integer", "got True (bool)"),
        ("[optim]\nlr = true", "optim.lr", "must be a number", "got True (bool)"),
        ("[data]\ndownload = 1", "data.download", "must be true or false", "got 1 (int)"),
        ("[data]\nname = 3", "data.name", "must be a string", "got 3 (int)"),
        ("[model]\nhidden = [16, 'a']", "model.hidden[1]", "must be an integer", "got 'a'"),
        ("[model]\nhidden = 16", "model.hidden", "must be a list of", "got 16"),
        ("[model]\ncfg = [32, true]", "model.cfg[1]", "must be an integer or a string", "got True"),
        ("[optim]\nlr = {value = 0.1}", "optim.lr", "must be a number", "got {'value': 0.1}"),
        ("optim = 0.1", "[optim]", "must be a table", "got 0.1"),
    ],
)
def test_wrong_type_names_file_key_expected_type_and_value(tmp_path, text, key, expected, given):
    msg = error(tmp_path, text + "\n")
    assert msg.startswith(f"{tmp_path / 'r.toml'}: ")
    assert f"{key} {expected}" in msg
    assert given in msg


def test_an_integer_is_accepted_for_a_float_and_converted(tmp_path):
    r = recipes.load(write(tmp_path, DIGITS.replace("lr = 0.5", "lr = 1\nmomentum = 0")))
    assert type(r.optim.lr) is float and r.optim.lr == 1.0
    assert type(r.optim.momentum) is float
    r = recipes.load(write(tmp_path, DIGITS), ["model.dropout=[0, 0.5]"])
    assert [type(p) for p in r.model.dropout] == [float, float]


def test_a_wrong_type_in_a_variant_names_the_variant(tmp_path):
    msg = error(tmp_path, DIGITS + "[variants.v]\ntrain.epochs = 'ten'\n")
    assert f"{tmp_path / 'r.toml'}: [variants.v]" in msg
    assert "train.epochs must be an integer; got 'ten'" in msg


# --- --set -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "section", "key", "value"),
    [
        ("optim.lr=0.01", "optim", "lr", 0.01),
        ("optim.lr=1e-3", "optim", "lr", 1e-3),
        ("optim.lr = 2", "optim", "lr", 2.0),
        ("train.epochs=3", "train", "epochs", 3),
        ("model.dropout=[0.2,0.5]", "model", "dropout", [0.2, 0.5]),
        ("model.hidden=[8, 4]", "model", "hidden", [8, 4]),
        ("data.name=mnist", "data", "name", "mnist"),
        ('data.name="mnist"', "data", "name", "mnist"),
        ("data.name='mnist'", "data", "name", "mnist"),
        ("data.root=/data/sets/fashion", "data", "root", "/data/sets/fashion"),
        ("train.device=cuda:0", "train", "device", "cuda:0"),
        ("data.download=false", "data", "download", False),
        ("data.vary_seed=true", "data", "vary_seed", True),
    ],
)
def test_set_overrides_a_value_with_its_type(tmp_path, text, section, key, value):
    r = recipes.load(write(tmp_path, DIGITS), [text])
    got = getattr(getattr(r, section), key)
    assert got == value
    assert type(got) is type(value)


def test_set_applies_after_the_file_and_in_order(tmp_path):
    r = recipes.load(write(tmp_path, DIGITS), ["optim.lr=0.2", "optim.lr=0.3", "optim.name=adam"])
    assert (r.optim.lr, r.optim.name) == (0.3, "adam")
    assert r.model.hidden == [16, 16]  # untouched values stay as the file has them


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optim.lr=fast", "--set optim.lr: 'fast' is not a value of type a number"),
        ("optim.lr=", "--set optim.lr: '' is not a value of type a number"),
        ("train.epochs=2.0", "--set train.epochs must be an integer; got 2.0 (float)"),
        ("train.epochs=two", "--set train.epochs: 'two' is not a value of type an integer"),
        ("data.download=yes", "--set data.download: 'yes' is not a value of type true or false"),
        ('optim.lr="0.1"', "--set optim.lr must be a number; got '0.1' (str)"),
        ("model.hidden=[8, 'a']", "--set model.hidden[1] must be an integer; got 'a'"),
        ("data.name=[1]", "--set data.name must be a string; got [1]"),
    ],
)
def test_set_with_a_value_of_the_wrong_type_is_an_error(tmp_path, text, expected):
    assert expected in error(tmp_path, DIGITS, [text])


def test_set_of_an_unknown_key_suggests_the_near_miss(tmp_path):
    msg = error(tmp_path, DIGITS, ["optim.lrr=0.1"])
    assert msg.startswith("--set optim.lrr: unknown key")
    assert "did you mean 'lr'?" in msg


@pytest.mark.parametrize(
    "text",
    ["optim.lr", "lr=0.1", "optimizer.lr=0.1", "optim.lr.x=0.1", "optim.=0.1", ".lr=0.1", "=1"],
)
def test_malformed_set_says_what_is_expected(tmp_path, text):
    msg = error(tmp_path, DIGITS, [text])
    assert "--set must be section.key=value" in msg
    assert "data, model, optim, penalty, schedule, early_stopping, augment, slim, train" in msg
    assert f"got {text!r}" in msg


# --- value checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lr=-0.1"], "optim.lr must be a finite number > 0; got -0.1"),
        (["optim.lr=0"], "optim.lr must be a finite number > 0; got 0.0"),
        (["optim.lr=inf"], "optim.lr must be a finite number > 0; got inf"),
        (["optim.weight_decay=-1"], "optim.weight_decay must be a finite number >= 0; got -1.0"),
        (["data.val_fraction=1"], "data.val_fraction must be in [0, 1); got 1.0"),
        (["train.epochs=0"], "train.epochs must be an integer >= 1; got 0"),
        (["model.dropout=[0.5, 1.0]"], "model.dropout must be probabilities in [0, 1)"),
        (
            ["model.dropout=[0.5]"],
            "model.dropout must be [] or 2 probabilities, one per width in model.hidden; got [0.5]",
        ),
        (["optim.name=lbfgs"], "optim.name must be one of sgd, adam, adamw; got 'lbfgs'"),
        (
            ["model.name=transformer"],
            "model.name must be one of linear, mlp, vgg_bn, resnet_bn; got 'transformer'",
        ),
        (
            ["data.name=cifar10"],
            "data.name must be one of fashion_mnist, mnist, digits, synthetic_linear, line, "
            "or \"\"; got 'cifar10'",
        ),
        (
            ["train.loss=hinge"],
            'train.loss must be one of cross_entropy, mse, half_mse, or "module:callable"',
        ),
        (
            ["schedule.name=cyclic"],
            "schedule.name must be one of constant, inverse_sqrt, inverse_time, step",
        ),
        (
            ["data.name=line", "model.name=linear"],
            "train.loss must be mse or half_mse for the regression data set line; "
            "got 'cross_entropy'",
        ),
        (
            ["train.loss=mse"],
            "train.loss must be cross_entropy for the classification data set digits; got 'mse'",
        ),
        (
            ["early_stopping.patience=3", "data.val_fraction=0"],
            "early_stopping.patience > 0 needs a validation set: set data.val_fraction > 0",
        ),
    ],
)
def test_check_names_file_key_allowed_values_and_value(tmp_path, overrides, expected):
    msg = error(tmp_path, DIGITS, overrides)
    assert msg.startswith(f"{tmp_path / 'r.toml'}: ")
    assert expected in msg


# one value outside what the field declares -> the message; every declared rule appears here
ARRAYS_TEXT = (
    "a table of array names: x and y, optionally x_val and y_val, x_test and y_test, in pairs"
)
CODE_TEXT = '"" or "module:callable" or "path/to/file.py:callable"'
OUTSIDE = [
    ("data.name", "cifar10", 'one of fashion_mnist, mnist, digits, synthetic_linear, line, or ""'),
    ("data.path", "x.csv", '"" or a file ending in .npz or .safetensors'),
    ("data.arrays", {"x": "a"}, ARRAYS_TEXT),
    ("data.arrays", {"x": "a", "y": "b", "x_val": "c"}, ARRAYS_TEXT),
    ("data.arrays", {"x": "a", "y": "b", "z": "c"}, ARRAYS_TEXT),
    ("data.arrays", {"x": "a", "y": 1}, ARRAYS_TEXT),
    ("data.factory", "data.load", CODE_TEXT),
    ("data.task", "ranking", "one of auto, classification, regression"),
    ("data.val_fraction", 1.0, "in [0, 1)"),
    ("data.test_fraction", 0.0, "in (0, 1)"),
    ("data.seed", -1, "an integer in [0, 2^63)"),
    ("data.seed", 2**63, "an integer in [0, 2^63)"),
    ("data.n_train", 0, "an integer in [1, 10^8]"),
    ("data.n_test", 10**8 + 1, "an integer in [1, 10^8]"),
    ("data.num_inputs", 0, "an integer in [1, 10^8]"),
    ("data.n", 0, "an integer in [1, 10^8]"),
    ("model.name", "transformer", "one of linear, mlp, vgg_bn, resnet_bn"),
    ("model.factory", "model.py", CODE_TEXT),
    ("model.factory", "model:make()", CODE_TEXT),
    ("model.hidden", [16, 0], "a list of integers >= 1"),
    ("model.dropout", [0.5, 1.0], "probabilities in [0, 1)"),
    (
        "model.cfg",
        ["M"],
        'a list of channel counts >= 1 and "M" (max pool), with at least one count',
    ),
    (
        "model.cfg",
        [8, "X"],
        'a list of channel counts >= 1 and "M" (max pool), with at least one count',
    ),
    ("model.drop_block", 1.0, "a probability in [0, 1) (0 = off)"),
    ("model.widths", [], "a non-empty list of integers >= 1"),
    ("model.blocks", [2, 0], "a non-empty list of integers >= 1"),
    ("model.drop_path", -0.1, "a probability in [0, 1) (0 = off)"),
    ("model.activation", "swish", "one of relu, gelu, tanh"),
    ("model.drop_block_size", 0, "an integer >= 1"),
    ("model.init", "xavier", "one of default, normal"),
    ("optim.name", "lbfgs", "one of sgd, adam, adamw"),
    ("optim.lr", float("nan"), "a finite number > 0"),
    ("optim.momentum", -0.9, "a finite number >= 0"),
    ("optim.betas", [0.9], "two numbers in [0, 1), such as [0.9, 0.999]"),
    ("optim.betas", [0.9, 1.0], "two numbers in [0, 1), such as [0.9, 0.999]"),
    ("optim.weight_decay", float("inf"), "a finite number >= 0"),
    ("penalty.l2", -1.0, "a finite number >= 0"),
    ("penalty.l1", float("nan"), "a finite number >= 0"),
    ("penalty.l1_mode", "hard", "one of subgradient, proximal"),
    ("penalty.max_norm", -2.0, "a finite number >= 0"),
    ("penalty.max_norm_dim", -2, "-1 or a dimension >= 0"),
    (
        "schedule.name",
        "cyclic",
        "one of constant, inverse_sqrt, inverse_time, step, exponential, cosine",
    ),
    ("schedule.gamma", -0.1, "a finite number >= 0"),
    ("schedule.decay_rate", float("-inf"), "a finite number >= 0"),
    ("schedule.decay_steps", 0, "an integer >= 1"),
    ("schedule.step_size", -5, "an integer >= 1"),
    ("schedule.warmup_steps", -1, "an integer >= 0"),
    ("schedule.min_factor", 1.5, "a probability in [0, 1]"),
    ("early_stopping.patience", -1, "an integer >= 0"),
    ("early_stopping.monitor", "train_loss", "one of val_loss, val_accuracy"),
    ("early_stopping.min_delta", -1e-3, "a finite number >= 0"),
    ("augment.hflip", -0.5, "a finite number >= 0"),
    ("augment.hflip", 1.5, "a probability in [0, 1]"),
    ("augment.random_crop", -1, "an integer >= 0"),
    ("augment.cutout", -4, "an integer >= 0"),
    ("augment.gaussian_noise", float("inf"), "a finite number >= 0"),
    ("slim.sparsity", -1e-4, "a finite number >= 0"),
    ("slim.sparsity_mode", "hard", "one of subgradient, proximal"),
    ("slim.ratios", [], "a non-empty list of numbers in [0, 1)"),
    ("slim.ratios", [0.5, 1.0], "a non-empty list of numbers in [0, 1)"),
    ("slim.passes", 0, "an integer >= 1"),
    ("slim.finetune_epochs", -1, "an integer >= 0"),
    ("slim.min_channels", 0, "an integer >= 1"),
    ("slim.max_layer_ratio", 0.0, "a number in (0, 1]"),
    ("slim.score", "l2", "one of gamma, normalized"),
    ("train.epochs", 0, "an integer >= 1"),
    ("train.batch_size", 0, "an integer >= 1"),
    ("train.loss", "hinge", 'one of cross_entropy, mse, half_mse, or "module:callable"'),
    ("train.batch_fn", "batches", CODE_TEXT),
    ("train.precision", "fp8", "one of fp32, bf16, fp16"),
    ("train.accumulate", 0, "an integer >= 1"),
    ("train.seed", -1, "an integer in [0, 2^63)"),
    ("train.seed", 2**63, "an integer in [0, 2^63)"),
    ("train.clip_grad_norm", -1.0, "a finite number >= 0"),
    ("train.eval_train", -1, "an integer >= 0"),
    ("train.keep_checkpoints", 0, "an integer >= 1"),
    ("tune.budget", 0.5, "a finite number >= 1"),
    ("tune.configs", -1, "an integer >= 0"),
    ("tune.eta", 1, "an integer >= 2"),
    ("tune.scheduler", "asha", "one of sh, pbt"),
    ("tune.grace", 0, "an integer >= 1"),
    ("tune.finalists", -1, "an integer >= 0"),
    ("train.label_smoothing", 1.5, "a probability in [0, 1]"),
    ("train.mixup", -0.1, "a finite number >= 0"),
    ("train.cutmix", float("inf"), "a finite number >= 0"),
    ("tune.pbt_interval", -1, "an integer >= 0"),
    ("tune.pbt_fraction", 0.75, "a number in (0, 0.5]"),
    ("tune.metric", "test_loss", "one of val_loss, val_accuracy"),
    ("tune.engine", "dask", "one of local, ray"),
]


@pytest.mark.parametrize(("key", "value", "allowed"), OUTSIDE, ids=[o[0] for o in OUTSIDE])
def test_a_value_outside_the_declared_rule_names_key_rule_and_value(key, value, allowed):
    section, name = key.split(".")
    raw = {"data": {"name": "digits"}, "model": {"hidden": [16, 16]}}
    raw.setdefault(section, {})[name] = value
    with pytest.raises(RecipeError) as info:
        recipes.from_dict(raw, source="r.toml")
    assert str(info.value) == f"r.toml: {key} must be {allowed}; got {value!r}"


def test_every_declared_rule_is_tried_above():
    declared = {
        (f"{section}.{f.name}", rule.text)
        for section, cls in recipes.SECTIONS.items()
        for f in fields(cls)
        for rule in f.metadata.get("allowed", ())
    }
    assert declared == {(key, allowed) for key, _, allowed in OUTSIDE}


def test_the_name_lists_other_modules_import_are_what_the_fields_allow():
    def allowed(cls, name):
        (rule,) = next(f for f in fields(cls) if f.name == name).metadata["allowed"]
        return rule.text

    assert allowed(schema.Data, "name") == "one of " + ", ".join(schema.DATASETS) + ', or ""'
    assert allowed(schema.Model, "name") == "one of " + ", ".join(schema.MODELS)
    assert allowed(schema.Optim, "name") == "one of " + ", ".join(schema.OPTIMIZERS)
    assert allowed(schema.Schedule, "name") == "one of " + ", ".join(schema.SCHEDULES)
    assert allowed(schema.Train, "loss").startswith("one of " + ", ".join(schema.LOSSES) + ", ")
    for param, key in schema.SWEEPABLE.items():
        section, name = key.split(".")
        assert name in {f.name for f in fields(recipes.SECTIONS[section])}, param


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"data": {"name": "line"}, "model": {"name": "vgg_bn"}, "train": {"loss": "mse"}},
            "model.name must be linear or mlp for line (vector inputs); got 'vgg_bn'",
        ),
        (
            {"data": {"name": "digits"}, "slim": {"sparsity": 1e-4}},
            "slim.sparsity acts on BatchNorm scales, and model.name 'mlp' has none "
            "(use vgg_bn or resnet_bn); got 0.0001",
        ),
        (
            {
                "data": {"name": "synthetic_linear"},
                "train": {"loss": "half_mse"},
                "early_stopping": {"patience": 2, "monitor": "val_accuracy"},
            },
            "early_stopping.monitor must be val_loss for the regression data set "
            "synthetic_linear (it has no accuracy); got 'val_accuracy'",
        ),
        (
            {"data": {"name": "digits", "path": "d.npz"}},
            "data.name 'digits' and data.path 'd.npz' are two sources of data; set one",
        ),
        (
            {"data": {"path": "d.npz", "factory": "data:load"}},
            "data.path 'd.npz' and data.factory 'data:load' are two sources of data; set one",
        ),
        (
            {"data": {"name": "digits", "kwargs": {"n": 3}}},
            "data.kwargs is used with data.factory only, which is not set; got {'n': 3}",
        ),
        (
            {"data": {"name": "digits", "arrays": {"x": "a", "y": "b"}}},
            "data.arrays is used with data.path only, which is not set; got {'x': 'a', 'y': 'b'}",
        ),
        (
            {"data": {"name": "digits", "task": "regression"}},
            "data.task is used with data.path or data.factory only, which is not set; "
            "got 'regression'",
        ),
        (
            {"model": {"kwargs": {"width": 8}}},
            "model.kwargs is used with model.factory only, which is not set; got {'width': 8}",
        ),
        (
            {"train": {"loss_kwargs": {"weight": [1, 2]}}},
            'train.loss_kwargs is used with train.loss = "module:callable" only, which is not '
            "set; got {'weight': [1, 2]}",
        ),
        (
            {"data": {"path": "d.npz", "task": "classification"}, "train": {"loss": "mse"}},
            "train.loss must be cross_entropy for classification data; got 'mse'",
        ),
        (
            {
                "data": {"factory": "data:load", "task": "regression"},
                "train": {"loss": "mse"},
                "early_stopping": {"patience": 2, "monitor": "val_accuracy"},
            },
            "early_stopping.monitor must be val_loss for regression data (it has no accuracy); "
            "got 'val_accuracy'",
        ),
        (
            {"data": {"path": "d.npz", "val_fraction": 0.0}, "early_stopping": {"patience": 2}},
            "early_stopping.patience > 0 needs a validation set: set data.val_fraction > 0 "
            "(it is 0)",
        ),
        (  # a field's own rule is tested before the rules that join fields
            {"data": {"name": "line"}, "model": {"name": "vgg_bn"}, "optim": {"lr": 0.0}},
            "optim.lr must be a finite number > 0; got 0.0",
        ),
    ],
)
def test_rules_that_join_fields(raw, expected):
    with pytest.raises(RecipeError) as info:
        recipes.from_dict(raw, source="r.toml")
    assert str(info.value) == f"r.toml: {expected}"


@pytest.mark.parametrize(
    "raw",
    [
        {"data": {"path": "d.npz"}, "train": {"loss": "mse"}},  # the task is known once read
        {"data": {"path": "d.npz", "val_fraction": 0.0, "arrays": {"x": "a", "y": "b",
          "x_val": "c", "y_val": "d"}}, "early_stopping": {"patience": 2}},
        {"data": {"factory": "data:load", "val_fraction": 0.0}, "early_stopping": {"patience": 2}},
        {"data": {"name": "digits"}, "train": {"loss": "torch.nn:CrossEntropyLoss",
                                              "loss_kwargs": {"weight": [1.0, 2.0]}}},
        {"data": {"name": "line"}, "model": {"name": "vgg_bn", "factory": "m:make"},
         "train": {"loss": "mse"}, "slim": {"sparsity": 1e-4}},  # model.name ignored
    ],
)  # fmt: skip
def test_what_only_the_data_or_the_model_can_say_is_left_to_build(raw):
    recipes.from_dict(raw, source="r.toml")


def test_check_applies_to_each_variant_at_load(tmp_path):
    msg = error(tmp_path, DIGITS + "[variants.ok]\n[variants.bad]\noptim.lr = -1\n")
    assert msg.startswith(f"{tmp_path / 'r.toml'}: [variants.bad] ")
    assert "optim.lr must be a finite number > 0; got -1.0" in msg


def test_early_stopping_with_a_validation_set_is_fine(tmp_path):
    r = recipes.load(write(tmp_path, DIGITS), ["early_stopping.patience=3"])
    assert r.early_stopping.patience == 3


# --- files -----------------------------------------------------------------------------------


def test_invalid_toml_names_the_file(tmp_path):
    msg = error(tmp_path, "[data\nname = 'digits'\n")
    assert msg.startswith(f"{tmp_path / 'r.toml'}: not valid TOML")


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(RecipeError, match="does not exist") as info:
        recipes.load(tmp_path / "nope.toml")
    assert str(tmp_path / "nope.toml") in str(info.value)


def test_a_folder_is_not_a_recipe(tmp_path):
    with pytest.raises(RecipeError, match="cannot be read") as info:
        recipes.load(tmp_path)
    assert str(tmp_path) in str(info.value)


# --- defaults (STYLE rule 5) -----------------------------------------------------------------


DATACLASSES = [recipes.Recipe, *recipes.SECTIONS.values()]


@pytest.mark.parametrize("cls", DATACLASSES, ids=lambda c: c.__name__)
def test_every_field_has_a_default_and_a_comment(cls):
    source = inspect.getsource(cls)
    for f in fields(cls):
        assert f.default is not MISSING or f.default_factory is not MISSING, f.name
        lines = [line for line in source.splitlines() if re.match(rf"\s+{f.name}: ", line)]
        assert len(lines) == 1, f"{cls.__name__}.{f.name}"
        code, _, comment = lines[0].partition("  # ")
        assert "=" in code, f"{cls.__name__}.{f.name}: the default belongs on the field's line"
        assert comment.strip(), f"{cls.__name__}.{f.name} has no comment"


def test_the_default_recipe_passes_the_checks():
    r = recipes.Recipe()
    recipes.check(r)
    assert r.model.hidden == [256, 256]
    assert recipes.Recipe().model.hidden is not r.model.hidden  # no shared mutable defaults


# --- docs/recipes.md -------------------------------------------------------------------------


def test_docs_recipes_md_ends_with_the_reference_the_schema_generates():
    docs = (ROOT / "docs" / "recipes.md").read_text()
    generated = reference.markdown()
    assert docs.endswith("\n" + generated), (
        "docs/recipes.md is out of date: replace its part from '## Reference' on with the "
        "output of: python -c 'from regulab.recipe import reference; "
        'print(reference.markdown(), end="")\''
    )
    for section, cls in recipes.SECTIONS.items():
        assert f"### [{section}]" in generated
        for f in fields(cls):
            assert f"| `{f.name}` |" in generated, f"{section}.{f.name}"
    assert generated.count("\n- ") == len(rules.JOINT_RULES) + len(rules.CHOICES)


def test_data_dir_and_device_win_over_a_variant_in_every_command(tmp_path):
    # they describe the machine: a variant's data.root or train.device gives way to them
    path = tmp_path / "v.toml"
    path.write_text(
        '[data]\nname = "digits"\n[variants.a.data]\nroot = "/elsewhere"\n'
        '[variants.a.train]\ndevice = "cuda"\n[variants.b.optim]\nlr = 0.2\n'
    )
    chosen = recipes.resolve(path, variant="a", data_dir=tmp_path, device="cpu")
    assert (chosen.data.root, chosen.train.device) == (str(tmp_path), "cpu")
    whole = recipes.resolve(path, data_dir=tmp_path, device="cpu")  # regulab train: all variants
    for variant in recipes.expand(whole).values():
        assert (variant.data.root, variant.train.device) == (str(tmp_path), "cpu")
    assert recipes.resolve(path, variant="a").data.root == "/elsewhere"  # without the flags

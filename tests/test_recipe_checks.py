"""Recipes and options are checked whole before anything is written (issue 16, items 4 and 5).

Every case here was a traceback, a late failure or a silently ignored setting before: each
now gives one line naming the key or option, exit 2, and no run folder.
"""

import hashlib
import json

import pytest
import torch

from conftest import run_cli
from regulab import recipe as recipes
from regulab.data import write_idx
from regulab.data.mnist_files import FILES
from regulab.demos import geometry
from regulab.errors import RecipeError

DIGITS = '[data]\nname = "digits"\n[model]\nhidden = [8]\n[train]\nepochs = 1\nbatch_size = 64\n'


def recipe_file(tmp_path, text=DIGITS, name="r.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def refused(capsys, tmp_path, *args):
    """Run `regulab ARGS --out tmp_path/out`; assert exit 2, one line, no folder; the line."""
    capsys.readouterr()
    out = tmp_path / "out"
    assert run_cli(*args, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert not out.exists()
    return err.strip()


# --- settings the model (optimizer, schedule, data set) cannot honour --------------------------


def test_drop_block_on_an_mlp_is_refused_naming_what_the_mlp_has(tmp_path, capsys):
    line = refused(
        capsys, tmp_path, "train", recipe_file(tmp_path), "--set", "model.drop_block=0.3"
    )
    assert line.endswith(
        "model.drop_block is used by vgg_bn only, and model.name 'mlp' does not use it "
        "(it uses hidden, dropout, activation); got 0.3"
    )


@pytest.mark.parametrize(
    "settings",
    [
        ['optim.name="adam"', "optim.momentum=0.9"],
        ["optim.betas=[0.5, 0.9]"],  # sgd
        ['schedule.name="cosine"', "schedule.gamma=0.5"],
        ["data.n_train=50"],  # digits
    ],
)
def test_every_choice_refuses_the_keys_it_does_not_use(tmp_path, settings):
    key = settings[-1].partition("=")[0]
    with pytest.raises(RecipeError, match=rf"{key} is used by .* does not use it"):
        recipes.load(recipe_file(tmp_path), settings)


def test_a_model_factory_uses_none_of_the_bundled_models_keys(tmp_path):
    text = DIGITS.replace("[model]", '[model]\nfactory = "m:make"')
    with pytest.raises(RecipeError, match=r"model.factory 'm:make' does not use it .*\[8\]$"):
        recipes.load(recipe_file(tmp_path, text))


VARIANTS = (
    '[data]\nname = "digits"\n[model]\ndrop_block = 0.2\n[variants.vgg.model]\nname = "vgg_bn"\n'
    'cfg = [8, "M"]\n[variants.mlp.model]\nhidden = [8]\n'
)


def test_a_key_one_variant_uses_may_sit_in_the_recipe(tmp_path):
    recipe = recipes.load(recipe_file(tmp_path, VARIANTS))  # vgg uses drop_block: accepted
    assert recipe.model.drop_block == 0.2


def test_a_key_no_variant_uses_is_refused(tmp_path):
    text = VARIANTS.replace('name = "vgg_bn"', 'name = "linear"').replace('cfg = [8, "M"]\n', "")
    with pytest.raises(RecipeError, match=r"^\S+r.toml: model.drop_block is used by vgg_bn only"):
        recipes.load(recipe_file(tmp_path, text))
    own = VARIANTS + "drop_path = 0.1\n"  # set by the mlp variant, which has no DropPath
    with pytest.raises(RecipeError, match=r"\[variants.mlp\] model.drop_path is used by resnet"):
        recipes.load(recipe_file(tmp_path, own))


# --- types, lengths and ranges at load ------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("optim.betas=[0.9]", "optim.betas must be two numbers in [0, 1), such as [0.9, 0.999]"),
        ("train.epochs=99999999999999999999", "train.epochs must be within [-2^63, 2^63)"),
        ("model.hidden=[8, 0]", "model.hidden must be a list of integers >= 1"),
    ],
)
def test_lengths_and_ranges_are_checked_at_load(tmp_path, capsys, setting, message):
    line = refused(capsys, tmp_path, "train", recipe_file(tmp_path), "--set", setting)
    assert message in line


def test_resnet_needs_a_block_count_per_stage_and_synthetic_data_a_bounded_size(tmp_path):
    text = '[data]\nname = "digits"\n[model]\nname = "resnet_bn"\nwidths = [8, 16]\nblocks = [1]\n'
    with pytest.raises(RecipeError, match=r"model.blocks must have one entry per stage, as many"):
        recipes.load(recipe_file(tmp_path, text))
    big = '[data]\nname = "synthetic_linear"\nn_train = 100000\nnum_inputs = 100000\n'
    with pytest.raises(
        RecipeError,
        match=r"at most 10\^8 values .*; got \(100000 \+ 100\) \* 100000 = 10010000000$",
    ):
        recipes.load(recipe_file(tmp_path, big + '[train]\nloss = "mse"\n'))


def test_max_norm_dim_is_checked_against_the_models_weights(tmp_path, capsys):
    # was: a traceback in the first step, the run folder left at "running"
    args = ("--set", "penalty.max_norm=1", "--set", "penalty.max_norm_dim=5")
    line = refused(capsys, tmp_path, "train", recipe_file(tmp_path), *args)
    assert line.endswith(
        "penalty.max_norm_dim must be -1 (whole tensor) or a dimension of every weight "
        "max_norm acts on, 0 .. 1: model.name 'mlp' has weights of 2 dimensions; got 5"
    )


# --- seeds and counts ---------------------------------------------------------------------


def test_seeds_are_integers_in_0_to_2_63(tmp_path, capsys):
    path = recipe_file(tmp_path)
    line = refused(capsys, tmp_path, "train", path, "--set", f"train.seed={2**63}")
    assert line.endswith(f"train.seed must be an integer in [0, 2^63); got {2**63}")
    line = refused(capsys, tmp_path, "train", path, "--set", f"train.seed={2**63 - 1}",
                   "--seeds", "2")  # fmt: skip
    assert "seeds must be integers in [0, 2^63)" in line and str(2**63) in line
    line = refused(capsys, tmp_path, "sweep", path, "--seed", str(2**63))
    assert f"--seed: must be an integer in [0, 2^63); got '{2**63}'" in line


def test_the_seed_count_is_bounded(tmp_path, capsys):
    # was: a list of 1e11 seeds built before anything else
    line = refused(capsys, tmp_path, "train", recipe_file(tmp_path), "--seeds", "100000000000")
    assert "--seeds: must be an integer in [1, 10000]; got '100000000000'" in line


def test_vary_seed_keeps_the_data_seed_in_range(tmp_path):
    text = DIGITS.replace(
        'name = "digits"', f'name = "digits"\nseed = {2**63 - 2}\nvary_seed = true'
    )
    recipe = recipes.load(recipe_file(tmp_path, text))
    assert recipes.seeds(recipe, 2) == [0, 1]
    with pytest.raises(RecipeError, match=r"\+ data.seed \d+ \(data.vary_seed\)"):
        recipes.seeds(recipe, 3)


# --- a split that leaves too few examples names its key -----------------------------------


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (["data.test_fraction=0.9999"], "data.test_fraction"),  # was: val_fraction, exit 1
        (['data.name="line"', "data.n=2", 'train.loss="mse"'],
         "data.test_fraction"),
        (['data.name="synthetic_linear"', "data.n_train=4", 'train.loss="mse"',
          "train.batch_size=1"], "data.val_fraction"),
    ],
)  # fmt: skip
def test_a_split_leaving_too_few_examples_names_the_key(tmp_path, capsys, settings, key):
    sets = [a for s in settings for a in ("--set", s)]
    line = refused(capsys, tmp_path, "train", recipe_file(tmp_path), *sets)
    assert f"{key} = " in line and f"choose {key} so that" in line


# --- an explicit data folder is used or refused ------------------------------------------


def fake_images(folder, only=FILES):
    """Tiny Fashion-MNIST-shaped IDX files (40 train, 10 test images) in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(50, dtype=torch.uint8) % 10
    parts = dict(zip(FILES, (images[:40], labels[:40], images[40:], labels[40:]), strict=True))
    for file in only:
        write_idx(folder / file, parts[file])
    return folder


FASHION = (
    '[data]\nname = "fashion_mnist"\ndownload = false\n[model]\nhidden = [8]\n'
    "[train]\nepochs = 1\nbatch_size = 16\neval_train = 0\n"
)


@pytest.fixture
def good_environment(tmp_path, monkeypatch):
    """$REGULAB_DATA_DIR holding a complete set: what the defect silently trained on."""
    monkeypatch.setenv("REGULAB_DATA_DIR", str(fake_images(tmp_path / "env")))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.mark.usefixtures("good_environment")
@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("typo", "data.root (--data-dir) must be a folder; got '{typo}': no such folder"),
        ("partial", "Fashion-MNIST not found: {partial} lacks train-labels-idx1-ubyte[.gz], "
                    "t10k-labels-idx1-ubyte[.gz]; set it to the folder"),
        ("empty", "neither {empty} nor {empty}/fashion-mnist holds train-images-idx3-ubyte[.gz]"),
    ],
)  # fmt: skip
def test_an_explicit_data_dir_is_used_or_refused(tmp_path, capsys, given, message):
    fake_images(tmp_path / "partial", only=(FILES[0], FILES[2]))
    (tmp_path / "empty").mkdir()
    folders = {name: tmp_path / name for name in ("typo", "partial", "empty")}
    path = recipe_file(tmp_path, FASHION)
    line = refused(capsys, tmp_path, "train", path, "--data-dir", str(folders[given]))
    assert message.format(**folders) in line
    if given == "empty":  # download = false; with it on, the files are downloaded into it
        assert "set data.download = true to download them into it" in line


@pytest.mark.usefixtures("good_environment")
def test_the_run_records_the_folder_read_and_the_md5s(tmp_path, one_thread):
    given = fake_images(tmp_path / "given")
    out = tmp_path / "run"
    path = recipe_file(tmp_path, FASHION)
    assert run_cli("train", path, "--data-dir", str(given), "--out", str(out)) == 0
    record = json.loads((out / "config.json").read_text())["data_files"]
    assert record["folder"] == str(given.resolve())
    assert record["md5"] == {f: hashlib.md5((given / f).read_bytes()).hexdigest() for f in FILES}
    env = tmp_path / "from-env"
    assert run_cli("train", path, "--out", str(env)) == 0  # no --data-dir: $REGULAB_DATA_DIR
    folder = json.loads((env / "config.json").read_text())["data_files"]["folder"]
    assert folder == str((tmp_path / "env").resolve())


# --- constraints --radius -----------------------------------------------------------------


@pytest.mark.parametrize("radius", [1e-6, 1e-4, 1e-2, 1.0, 1.3])
def test_the_l1_optimum_is_the_corner_to_nine_digits(radius):
    # for r <= 18/13 the optimum is the corner (0, r): there |dloss/dw1| <= |dloss/dw2|
    w, _ = geometry.l1_optimum(radius)
    assert w[0] == 0
    assert float(w[1]) == pytest.approx(radius, rel=1e-9)


def test_radii_below_the_exact_range_are_refused(tmp_path, capsys):
    # was: "L1 optimum (-0, 0)" for r = 1e-300, exit 0
    with pytest.raises(ValueError, match=r"radius must be a finite number >= 1e-06"):
        geometry.l1_optimum(1e-300)
    line = refused(capsys, tmp_path, "constraints", "--radius", "1e-300")
    assert line.startswith("regulab constraints: error: --radius must be a finite number >= 1e-06")

"""Recipes with your own code and data: "module:callable" resolved against the recipe's folder,
arrays from .npz / .safetensors files, data factories, task inference, your loss and batch_fn,
and every error naming the key and what was found."""

import json
import shutil
import sys
import textwrap
import tomllib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from conftest import run_cli
from regulab import recipe as recipes
from regulab.data import train_val_split
from regulab.recipe import RecipeError, build
from regulab.recipe.imports import resolve_callable
from regulab.recipe.model import from_arch as model_arch_from

MODEL = """
from torch import nn


def make(width=8, classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(4, width), nn.ReLU(), nn.Linear(width, classes))


def not_a_model():
    return [1, 2]


class Keywords(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make()

    def forward(self, *, pixels):
        return self.net(pixels)


def keywords():
    return Keywords()


def as_keywords(batch):
    x, y = batch
    return {"pixels": x}, y


def inputs_only(batch):
    return (batch[0],)


WIDTH = 3
"""


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def arrays(n=40, seed=0, classes=3):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, 4)).astype(np.float32)
    return x, (np.arange(n) % classes).astype(np.int64)


def recipe_in(folder, text, name="r.toml"):
    return recipes.load(write(folder, name, text))


def error(fn, *args) -> str:
    with pytest.raises(RecipeError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- "module:callable" ------------------------------------------------------------------------


def test_a_module_on_sys_path_and_a_dotted_attribute():
    assert resolve_callable("torch.nn:BCEWithLogitsLoss", "train.loss") is nn.BCEWithLogitsLoss
    assert resolve_callable("torch.nn:functional.mse_loss", "train.loss") is F.mse_loss


@pytest.mark.parametrize("spec", ["model:make", "model.py:make", "./model.py:make"])
def test_the_recipe_folder_comes_first_from_any_current_folder(tmp_path, monkeypatch, spec):
    write(tmp_path / "project", "model.py", MODEL)
    write(tmp_path / "elsewhere", "model.py", "def make():\n    return 'wrong one'\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    path_before = list(sys.path)
    make = resolve_callable(spec, "model.factory", tmp_path / "project")
    assert isinstance(make(), nn.Sequential)
    assert sys.path == path_before  # the folder is on sys.path only while importing


def test_two_folders_with_a_module_of_the_same_name_each_get_their_own(tmp_path):
    for k in (1, 2):
        write(tmp_path / f"p{k}", "model.py", f"def make():\n    return {k}\n")
    for k in (1, 2, 1):
        assert resolve_callable("model:make", "model.factory", tmp_path / f"p{k}")() == k
        assert resolve_callable("model.py:make", "model.factory", tmp_path / f"p{k}")() == k


def test_a_file_module_imports_its_neighbours(tmp_path):
    write(tmp_path / "src", "helpers.py", "WIDTH = 5\n")
    write(tmp_path / "src", "net.py", "from helpers import WIDTH\ndef make():\n    return WIDTH\n")
    assert resolve_callable("src/net.py:make", "model.factory", tmp_path)() == 5


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nomodule:make", "model.factory: no module 'nomodule' in the recipe's folder {base} or "
                          "on sys.path (from 'nomodule')"),
        ("nofile.py:make", "model.factory: no file {base}/nofile.py (from 'nofile.py'; a relative "
                           "path is relative to the recipe's folder {base})"),
        ("model:mkae", "model.factory: module 'model' ({base}/model.py) has no attribute 'mkae' "
                       "(from 'model:mkae'); it has: Keywords, as_keywords, inputs_only, "
                       "keywords, make, not_a_model"),
        ("model.py:mkae", "model.factory: file {base}/model.py has no attribute 'mkae' "
                          "(from 'model.py:mkae'); it has: Keywords, as_keywords, "
                          "inputs_only, keywords, make, not_a_model"),
        ("torch.nn:Linearr", "model.factory: module 'torch.nn' ("),
        ("model:WIDTH", "model.factory: 'model:WIDTH' is not callable (a function or class); "
                        "it is int 3"),
        ("model", "model.factory must be 'module:callable' or 'path/to/file.py:callable'; "
                  "got 'model'"),
        ("broken:make", "model.factory: importing module 'broken' raised ModuleNotFoundError: "
                        "No module named 'not_installed_here'"),
        ("syntax.py:make", "model.factory: importing {base}/syntax.py raised SyntaxError: "),
        ("raises:make", "model.factory: importing module 'raises' raised RuntimeError: no GPU"),
    ],
)  # fmt: skip
def test_import_errors_name_the_key_the_module_and_what_was_found(tmp_path, spec, expected):
    write(tmp_path, "model.py", MODEL)
    write(tmp_path, "broken.py", "import not_installed_here\n")
    write(tmp_path, "syntax.py", "def make(:\n")
    write(tmp_path, "raises.py", "raise RuntimeError('no GPU')\n")
    message = error(resolve_callable, spec, "model.factory", tmp_path)
    assert message.startswith(expected.format(base=tmp_path.resolve()))


# --- the recipe's folder survives into run folders ---------------------------------------------


def test_load_records_the_recipe_folder_and_a_relative_base_is_relative_to_it(tmp_path):
    r = recipe_in(tmp_path / "a", "[data]\nname = 'digits'\n")
    assert r.base == str((tmp_path / "a").resolve())
    r = recipe_in(tmp_path / "a", "base = '../b'\n[data]\nname = 'digits'\n")
    assert r.base == str((tmp_path / "b").resolve())
    assert recipes.from_dict(recipes.to_dict(r)).base == r.base  # config.json round trip
    assert recipes.from_dict({}).base == ""  # no file: the current folder


# --- data.path --------------------------------------------------------------------------------

FILE_RECIPE = """
[data]
path = "{path}"
arrays = {arrays}
val_fraction = 0.25
test_fraction = 0.2
seed = 3
[model]
name = "mlp"
hidden = [8]
[train]
batch_size = 8
"""


def file_recipe(folder, path, arrays="{x = 'x', y = 'y'}", extra=""):
    return recipe_in(folder, FILE_RECIPE.format(path=path, arrays=arrays) + extra)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_named_arrays_are_the_tensors_fit_sees(tmp_path, suffix):
    x, y = arrays(60)
    named = {"inputs": x[:30], "labels": y[:30], "xv": x[30:40], "yv": y[30:40],
             "xt": x[40:], "yt": y[40:]}  # fmt: skip
    path = tmp_path / "data" / f"d{suffix}"
    path.parent.mkdir()
    if suffix == ".npz":
        np.savez(path, **named)
    else:
        save_file({k: torch.from_numpy(v) for k, v in named.items()}, str(path))
    arrays_text = "{x='inputs', y='labels', x_val='xv', y_val='yv', x_test='xt', y_test='yt'}"
    r = file_recipe(tmp_path, f"data/d{suffix}", arrays_text)
    splits = build.load_data(r, seed=0)
    for got, (kx, ky) in zip(
        (splits.train, splits.val, splits.test), [("inputs", "labels"), ("xv", "yv"), ("xt", "yt")],
        strict=True,
    ):  # fmt: skip
        assert torch.equal(got[0], torch.from_numpy(named[kx]))
        assert torch.equal(got[1], torch.from_numpy(named[ky]))
    assert (splits.task, splits.num_classes) == ("classification", 3)
    loader = build.fit_arguments(r, build.build_model(r, splits), splits, 0)["train"]
    assert torch.equal(loader.tensors[0], torch.from_numpy(named["inputs"]))


def test_missing_test_and_validation_sets_are_held_out_as_for_digits(tmp_path):
    x, y = arrays(50)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    splits = build.load_data(file_recipe(tmp_path, "d.npz"), seed=0)
    # the reference: the bundled sets' two seeded splits, test first, on the same tensors
    rest, test = train_val_split(torch.from_numpy(x), torch.from_numpy(y), 0.2, 3)
    train, val = train_val_split(*rest, 0.25, 3)
    for got, want in zip((splits.train, splits.val, splits.test), (train, val, test), strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert [len(s[0]) for s in (splits.train, splits.val, splits.test)] == [30, 10, 10]


@pytest.mark.parametrize(
    ("x", "y", "task", "expected"),
    [
        (np.ones((6, 2)), np.array([0, 4, 1, 1, 0, 2]), "auto", ("classification", 5, torch.int64)),
        (np.ones((6, 2)), np.arange(6.0), "auto", ("regression", 1, torch.float32)),
        (np.ones((6, 2)), np.ones((6, 3)), "auto", ("regression", 3, torch.float32)),
        (np.ones((6, 2)), np.array([0.0, 1, 1, 0, 0, 1]), "classification",
         ("classification", 2, torch.int64)),
        (np.ones((6, 2)), np.arange(6), "regression", ("regression", 1, torch.float32)),
        (np.ones((6, 2), np.uint8), np.array([True, False] * 3), "auto",
         ("classification", 2, torch.int64)),
    ],
)  # fmt: skip
def test_the_task_from_data_task_or_the_targets_dtype(tmp_path, x, y, task, expected):
    np.savez(tmp_path / "d.npz", x=x, y=y)
    loss = "cross_entropy" if expected[0] == "classification" else "mse"
    r = file_recipe(tmp_path, "d.npz")
    r.data.task, r.train.loss, r.data.val_fraction = task, loss, 0.0
    splits = build.load_data(r, seed=0)
    assert (splits.task, splits.num_classes, splits.train[1].dtype) == expected
    assert splits.train[0].dtype == torch.float32


def test_data_errors_name_the_key_the_file_and_what_was_found(tmp_path):
    x, y = arrays(10)
    np.savez(tmp_path / "d.npz", x=x, y=y, short=y[:7], text=np.array(["a"] * 10),
             objects=np.array([{}] * 10, dtype=object), empty=x[:0], neg=y - 1,
             half=y / 2)  # fmt: skip
    file = tmp_path.resolve() / "d.npz"

    def load(arrays_text="{x='x', y='y'}", path="d.npz", task="auto"):
        r = file_recipe(tmp_path, path, arrays_text)
        r.data.task = task
        return build.load_data(r, 0)

    assert error(load, "{x='x', y='y'}", "nothere.npz") == (
        f"data.path: no file {tmp_path.resolve()}/nothere.npz (a relative path is relative to "
        f"the recipe's folder {tmp_path.resolve()})"
    )
    assert error(load, "{x='x', y='labels'}") == (
        f"data.arrays.y names 'labels', which {file} does not hold; it has: x, y, short, text, "
        "objects, empty, neg, half"
    )
    assert error(load, "{x='x', y='short'}") == (
        f"data.path {file}: train x and y must have as many examples; got 10 and 7"
    )
    assert error(load, "{x='text', y='y'}") == (
        f"data.path: array 'text' of '{file}' must hold numbers (bool, integer, floating); got <U1"
    )
    assert error(load, "{x='objects', y='y'}").startswith(
        f"data.path: array 'objects' of '{file}' holds Python objects, which need pickle"
    )
    assert error(load, "{x='empty', y='empty'}") == f"data.path {file}: train is empty (0 examples)"
    assert error(load, "{x='x', y='neg'}") == (
        f"data.path {file}: class labels must be >= 0; got -1"
    )
    assert error(load, "{x='x', y='half'}", "d.npz", "classification") == (
        f"data.path {file}: data.task = 'classification' needs whole-number class labels; got "
        "torch.float64 values such as 0.5"
    )
    assert error(load, "{x='x', y='half'}") == (  # float targets: regression, not cross_entropy
        "train.loss must be mse or half_mse for regression data; got 'cross_entropy' "
        f"(the task of data.path {file})"
    )
    (tmp_path / "bad.npz").write_text("not a zip")
    assert error(load, "{x='x', y='y'}", "bad.npz").startswith(
        f"data.path: '{tmp_path.resolve()}/bad.npz' is not a valid .npz (zip) file: it holds "
        "bytes b'not a zip', not a zip archive of arrays"
    )


def test_a_bundled_model_is_refused_for_inputs_it_cannot_take(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((10, 4), np.float32), y=np.arange(10) % 2)
    r = file_recipe(tmp_path, "d.npz")
    r.model.name = "vgg_bn"
    assert error(build.load_data, r, 0) == (
        f"model.name vgg_bn needs images (N, C, H, W); data.path {tmp_path.resolve()}/d.npz "
        "has inputs of shape (6, 4) (use linear or mlp, or your own model.factory)"
    )


# --- data.factory -----------------------------------------------------------------------------

DATA = """
import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset


class Pairs(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full(4, i, np.float32), i % 3


def arrays(n=30):
    x = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    return {"train": (x, np.arange(n) % 3)}


def datasets(n=30):
    x = torch.arange(n * 4.0).reshape(n, 4)
    return {"train": TensorDataset(x, torch.arange(n) % 3), "val": Pairs(6), "test": Pairs(5)}


def wrong():
    return [1, 2]


def keys():
    return {"train": Pairs(4), "holdout": Pairs(2)}


def items():
    return {"train": [(1, 2, 3)]}
"""


def factory_recipe(folder, factory, extra=""):
    write(folder, "data.py", DATA)
    text = f"[data]\nfactory = '{factory}'\nseed = 1\n[model]\nhidden = [8]\n{extra}"
    return recipe_in(folder, text)


def test_a_factory_of_arrays_is_split_as_a_file(tmp_path):
    splits = build.load_data(factory_recipe(tmp_path, "data:arrays", "[data.kwargs]\nn = 20\n"), 0)
    x = torch.arange(80.0).reshape(20, 4)
    rest, test = train_val_split(x, torch.arange(20) % 3, 0.2, 1)
    train, val = train_val_split(*rest, 0.1, 1)
    for got, want in zip((splits.train, splits.val, splits.test), (train, val, test), strict=True):
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_a_factory_of_datasets_is_read_into_tensors_once(tmp_path):
    splits = build.load_data(factory_recipe(tmp_path, "data:datasets"), 0)
    assert torch.equal(splits.train[0], torch.arange(120.0).reshape(30, 4))
    assert torch.equal(splits.val[0], torch.arange(6.0)[:, None].expand(6, 4))
    assert torch.equal(splits.test[1], torch.arange(5) % 3)
    assert splits.val[1].dtype == torch.int64 and splits.num_classes == 3


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        ("data:wrong", "data.factory 'data:wrong' must return a dict with 'train' and optionally "
                       "'val' and 'test', each an (x, y) pair or a Dataset of (x, y) items; it "
                       "returned list"),
        ("data:keys", "data.factory 'data:keys' must return a dict with 'train' and optionally "
                      "'val' and 'test', each an (x, y) pair or a Dataset of (x, y) items; it "
                      "returned a dict with keys ['holdout', 'train']"),
        ("data:items", "data.factory 'data:items': train[0] must be an (x, y) pair; got tuple "
                       "of 3"),
    ],
)  # fmt: skip
def test_factory_errors_name_the_key_and_what_was_returned(tmp_path, factory, expected):
    assert error(build.load_data, factory_recipe(tmp_path, factory), 0) == expected


def test_factory_kwargs_that_do_not_fit_are_named(tmp_path):
    r = factory_recipe(tmp_path, "data:arrays", "[data.kwargs]\nsize = 3\n")
    assert error(build.load_data, r, 0) == (
        "data.kwargs {'size': 3} do not fit 'data:arrays'(n=30): got an unexpected keyword "
        "argument 'size'"
    )


# --- model.factory, your loss, batch_fn -------------------------------------------------------

OWN = """
[data]
path = "d.npz"
[model]
factory = "model:make"
kwargs = {width = 6}
[train]
batch_size = 8
"""


def own(tmp_path, extra=""):
    write(tmp_path, "model.py", MODEL)
    x, y = arrays(40)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return recipe_in(tmp_path, OWN + extra)


def test_the_factory_builds_the_model_with_its_kwargs(tmp_path):
    r = own(tmp_path)
    splits = build.load_data(r, 0)
    model = build.run_parts(r, splits, 0)["model"]
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [6, 3]
    assert build.model_arch(r, splits) == {"factory": "model:make", "kwargs": {"width": 6},
                                           "base": r.base}  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("[model]\nfactory = 'model:not_a_model'\nkwargs = {}\n",
         "model.factory 'model:not_a_model' must return a torch.nn.Module; it returned list"),
        ("[model]\nkwargs = {depth = 2}\n",
         "model.kwargs {'depth': 2} do not fit 'model:make'(width=8, classes=3): got an "
         "unexpected keyword argument 'depth'"),
        ("[model]\nkwargs = {classes = 1}\n[train]\nloss = 'torch.nn:BCEWithLogitsLoss'\n",
         "train.loss 'torch.nn:BCEWithLogitsLoss' fails on the model's output of shape (8, 1) and "
         "the targets of shape (8,): ValueError: Target size (torch.Size([8])) must be the same "
         "as input size (torch.Size([8, 1]))"),
        ("[slim]\nsparsity = 1e-4\n",
         "slim.sparsity acts on BatchNorm scales, and the model of model.factory 'model:make' "
         "has no BatchNorm layers; got 0.0001"),
        ("[train]\nbatch_fn = 'model:inputs_only'\n",
         "train.batch_fn 'model:inputs_only' must map a batch (x, y) (of shape (8, 4), of shape "
         "(8,)) to (inputs, target): ValueError: not enough values to unpack (expected 2, got 1)"),
        ("[model]\nfactory = 'model:keywords'\nkwargs = {}\n",
         "the model of model.factory 'model:keywords' fails on 8 training examples, inputs of "
         "shape (8, 4): TypeError: Keywords.forward() takes 1 positional argument but 2 were "
         "given"),
    ],
)  # fmt: skip
def test_what_the_built_model_is_checked_for(tmp_path, extra, expected):
    r = own(tmp_path)
    raw = recipes.to_dict(r)
    for section, values in tomllib.loads(extra).items():
        raw[section].update(values)
    r = recipes.from_dict(raw)
    assert error(lambda: build.run_parts(r, build.load_data(r, 0), 0)) == expected


def test_a_loss_class_gets_its_kwargs_with_lists_as_float_tensors(tmp_path):
    r = own(tmp_path, "loss = 'torch.nn:CrossEntropyLoss'\nloss_kwargs = {weight = [1, 3, 2]}\n"
                      "precision = 'bf16'\naccumulate = 2\n")  # fmt: skip
    splits = build.load_data(r, 0)
    settings = build.run_settings(r, splits, 0)
    loss = settings["loss"]
    out, y = torch.randn(7, 3), torch.tensor([0, 1, 2, 1, 0, 2, 1])
    want = F.cross_entropy(out, y, weight=torch.tensor([1.0, 3.0, 2.0]))
    torch.testing.assert_close(loss(out, y), want, rtol=0, atol=1e-7)
    assert (settings["precision"], settings["accumulate"], settings["batch_fn"]) == (
        "bf16",
        2,
        None,
    )


def test_model_arch_builds_the_unpruned_model_again(tmp_path):
    for r in (
        own(tmp_path),
        recipes.from_dict({"data": {"name": "digits"}, "model": {"hidden": [8]}}),
    ):
        splits = build.load_data(r, 0)
        torch.manual_seed(0)
        want = build.build_model(r, splits).state_dict()
        torch.manual_seed(0)
        got = model_arch_from(build.model_arch(r, splits))().state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_a_loss_function_gets_its_kwargs_bound(tmp_path):
    r = own(tmp_path, "loss = 'torch.nn:functional.cross_entropy'\nloss_kwargs = "
                      "{label_smoothing = 0.1}\n")  # fmt: skip
    loss = build.build_loss(r)
    out, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    assert torch.equal(loss(out, y), F.cross_entropy(out, y, label_smoothing=0.1))


def test_train_with_your_loss_equals_the_named_loss_it_computes(tmp_path, one_thread):
    r = own(tmp_path, "epochs = 2\n")
    folders = {}
    for loss in ("cross_entropy", "torch.nn:CrossEntropyLoss"):
        folders[loss] = tmp_path / loss.replace(":", "_")
        assert run_cli("train", str(tmp_path / "r.toml"), "--set", f"train.loss={loss!r}",
                       "--out", str(folders[loss])) == 0  # fmt: skip
    a, b = (json.loads((f / "summary.json").read_text()) for f in folders.values())
    assert b["task"] == a["task"] == "classification"
    for key, value in a["final"].items():
        assert b["final"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert r.train.loss == "cross_entropy"


def test_batch_fn_maps_batches_to_keyword_inputs_and_trains_as_without_it(tmp_path, one_thread):
    own(tmp_path, "epochs = 2\n")
    args = ("--set", "model.kwargs={}", "--set", "train.eval_train=0")
    plain = ("--set", "model.factory='model:make'")
    keywords = (
        "--set",
        "model.factory='model:keywords'",
        "--set",
        "train.batch_fn='model:as_keywords'",
    )
    for name, more in (("plain", plain), ("keywords", keywords)):
        assert run_cli("train", str(tmp_path / "r.toml"), *args, *more, "--out",
                       str(tmp_path / name)) == 0  # fmt: skip
    a, b = (json.loads((tmp_path / f / "summary.json").read_text()) for f in ("plain", "keywords"))
    assert a["final"] == pytest.approx(b["final"], rel=1e-6)


# --- run folders: config.json, --resume from another folder ------------------------------------


def test_resume_of_a_factory_run_from_another_folder_ends_as_the_whole_run(
    tmp_path, monkeypatch, one_thread
):
    own(tmp_path / "project", "epochs = 4\nkeep_checkpoints = 4\n")
    recipe = str(tmp_path / "project" / "r.toml")
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", recipe, "--out", "whole") == 0
    assert run_cli("train", recipe, "--out", "cut") == 0
    stored = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert stored["recipe"]["base"] == str((tmp_path / "project").resolve())
    # as if stopped after epoch 2: the later checkpoints gone, the summary still running
    for epoch in (3, 4):
        shutil.rmtree(tmp_path / "cut" / "checkpoints" / f"epoch-{epoch:04d}")
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    (tmp_path / "cut" / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert run_cli("train", "--resume", str(tmp_path / "cut")) == 0
    rows = [(tmp_path / f / "metrics.csv").read_text().splitlines() for f in ("whole", "cut")]
    strip = lambda lines: [line.rsplit(",", 1)[0] for line in lines]  # noqa: E731 (seconds)
    assert strip(rows[0]) == strip(rows[1]) and len(rows[0]) == 5

"""Mistakes in your own code and data, each caught as one line: an exception inside your
factory, a model with fewer outputs than the data has classes, a loss that fits 2 examples
but not a batch, integer labels for BCE, NaN in the data, and an exception inside training
(RunFailed, exit 1, the new run folder removed)."""

import textwrap

import numpy as np
import pytest

from conftest import run_cli
from regulab import recipe as recipes
from regulab.recipe import RecipeError, build

CODE = """
import torch
from torch import nn


def make(width=8, classes=3):
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, classes))


def one_logit():
    return nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))


def raises():
    raise RuntimeError("boom")


class Refuses(nn.Module):
    def __init__(self, p=0.5):
        raise ValueError(f"p must be < 0.5; got {p}")


def no_column():
    raise KeyError("missing column")


def with_nan():
    x = torch.zeros(20, 4)
    x[3, 1] = float("nan")
    return {"train": (x, torch.arange(20) % 3)}


class Late(nn.Module):
    '''Fails in its 4th forward in train mode: after the preflight, in the first epoch.'''

    def __init__(self):
        super().__init__()
        self.net = make()
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls > 3:
                raise IndexError("late failure")
        return self.net(x)
"""

BASE = """
[data]
{data}
[model]
{model}
[train]
epochs = 1
batch_size = 8
{train}
"""


def folder_with(tmp_path, *, data='path = "d.npz"', model='factory = "code:make"', train="",
                extra="", x=None, y=None):  # fmt: skip
    """A recipe r.toml and code.py beside d.npz: 40 examples, labels 0, 1, 2, 0, ..."""
    (tmp_path / "code.py").write_text(textwrap.dedent(CODE))
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32) if x is None else x
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 3 if y is None else y)
    path = tmp_path / "r.toml"
    path.write_text(BASE.format(data=data, model=model, train=train) + extra)
    return path


def preflight_error(path) -> str:
    r = recipes.load(path)
    with pytest.raises(RecipeError) as info:
        build.run_parts(r, build.load_checked(r, 0), 0)
    message = str(info.value)
    assert "\n" not in message
    return message


BCE = "loss = 'torch.nn:BCEWithLogitsLoss'"
ONE_LOGIT = "factory = 'code:one_logit'"


@pytest.mark.parametrize(
    ("model", "train", "expected"),
    [
        ("factory = 'code:raises'", "",
         "model.factory 'code:raises' raised RuntimeError: boom"),
        ("factory = 'code:make'\nkwargs = {width = 'x'}", "",
         "model.factory 'code:make' raised TypeError with model.kwargs {'width': 'x'}: "),
        ("factory = 'code:Refuses'\nkwargs = {p = 0.9}", "",
         "model.factory 'code:Refuses' raised ValueError with model.kwargs {'p': 0.9}: p must "
         "be < 0.5; got 0.9"),
        ("factory = 'code:make'", "loss = 'code:Refuses'",
         "train.loss 'code:Refuses' raised ValueError: p must be < 0.5; got 0.5"),
    ],
)  # fmt: skip
def test_an_exception_inside_your_factory_is_one_line_naming_it(tmp_path, model, train, expected):
    path = folder_with(tmp_path, model=model, train=train)
    assert preflight_error(path).startswith(expected)


def test_an_exception_inside_your_data_factory_is_one_line_exit_2(tmp_path, capsys):
    path = folder_with(tmp_path, data="factory = 'code:no_column'")
    assert run_cli("train", str(path), "--out", str(tmp_path / "o")) == 2
    assert capsys.readouterr().err == (
        "regulab train: error: data.factory 'code:no_column' raised KeyError: 'missing column'\n"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("loss", ["cross_entropy", "torch.nn:CrossEntropyLoss"])
def test_a_model_with_fewer_outputs_than_classes_is_refused_before_training(tmp_path, loss):
    # the first 2 examples have labels 0 and 1: a check on 2 examples let this through
    model = "factory = 'code:make'\nkwargs = {classes = 2}"
    path = folder_with(tmp_path, model=model, train=f"loss = '{loss}'")
    assert preflight_error(path) == (
        "the model of model.factory 'code:make' and model.kwargs {'classes': 2} gives 2 "
        "outputs per example, and the data has 3 classes (labels 0 .. 2): the model needs at "
        "least 3 outputs"
    )


def test_one_logit_with_a_loss_of_yours_is_not_held_to_the_class_count(tmp_path):
    y = (np.arange(40) % 2).astype(np.float32)  # 0/1 floats: regressed by BCE
    path = folder_with(tmp_path, model=ONE_LOGIT, train=BCE, y=y,
                       extra="[train.loss_kwargs]\npos_weight = [2.0]\n")  # fmt: skip
    r = recipes.load(path)
    build.run_parts(r, build.load_checked(r, 0), 0)  # no error


def test_a_loss_that_fits_two_examples_but_not_a_batch_is_refused_before_training(tmp_path):
    y = (np.arange(40) % 2).astype(np.float32)
    path = folder_with(tmp_path, model=ONE_LOGIT, train=BCE, y=y,
                       extra="[train.loss_kwargs]\npos_weight = [1.0, 2.0]\n")  # fmt: skip
    assert preflight_error(path).startswith(
        "train.loss 'torch.nn:BCEWithLogitsLoss' fails on the model's output of shape (8,) and "
        "the targets of shape (8,): RuntimeError: The size of tensor a (2) must match"
    )


def test_integer_labels_for_bce_get_a_hint(tmp_path):
    path = folder_with(tmp_path, model=ONE_LOGIT, train=BCE, y=np.arange(40) % 2)
    assert preflight_error(path) == (
        "train.loss 'torch.nn:BCEWithLogitsLoss' fails on the model's output of shape (8,) and "
        "the targets of shape (8,): RuntimeError: result type Float can't be cast to the "
        "desired output type Long (the targets are int64 class labels; a loss such as "
        "BCEWithLogitsLoss needs float targets: store y as floats, set data.task = "
        '"regression", or cast them in train.batch_fn)'
    )


def test_nan_or_inf_in_your_data_is_refused_when_read(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    x[5, 2], x[7, 0] = np.nan, np.inf
    assert preflight_error(folder_with(tmp_path, x=x)) == (
        f"data.path: array 'x' of '{tmp_path.resolve() / 'd.npz'}' holds 2 non-finite values "
        "(NaN or inf) of 160: remove or impute them before training"
    )
    assert preflight_error(folder_with(tmp_path, data="factory = 'code:with_nan'")) == (
        "data.factory 'code:with_nan': train x holds 1 non-finite value (NaN or inf) of 80: "
        "remove or impute them before training"
    )
    x64 = np.zeros((40, 4))
    x64[0, 0] = 1e300  # finite as float64, inf as float32
    assert preflight_error(folder_with(tmp_path, x=x64)).endswith(
        "train x holds values beyond float32's range (+-3.4e38), which become inf: rescale them"
    )


@pytest.mark.parametrize("variants", ["", "[variants.a]\n[variants.b]\n"])
def test_an_exception_inside_training_is_one_line_exit_1_and_writes_nothing(
    tmp_path, capsys, one_thread, variants
):
    path = folder_with(tmp_path, model="factory = 'code:Late'", extra=variants)
    out = tmp_path / "o"
    assert run_cli("train", str(path), "--out", str(out)) == 1
    err = capsys.readouterr().err
    name = "a" if variants else "r"
    line = next(i for i, text in enumerate(CODE.splitlines(), 1) if "IndexError" in text)
    assert err == (
        f"regulab train: error: training variant '{name}' seed 0 failed in "
        f"{tmp_path / 'code.py'} line {line} (forward): IndexError: late failure; "
        "nothing was written\n"
    )
    assert not out.exists()
    out.mkdir()  # an empty folder given as --out is kept, and left empty
    assert run_cli("train", str(path), "--out", str(out)) == 1
    assert out.is_dir() and list(out.iterdir()) == []

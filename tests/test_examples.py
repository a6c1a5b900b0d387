"""examples/own_model: your own model file and data file through `regulab train`, `sweep` and
`slim`, from another current folder, as a new user would run them (tiny epochs)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from regulab import recipe as recipes
from regulab.metrics import evaluate
from regulab.recipe import build
from regulab.recipe.model import from_arch
from regulab.slim import export

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"
RECIPE = str(EXAMPLE / "recipe.toml")
TINY = ("--set", "train.epochs=1")


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`regulab train` of the example, run from an empty folder elsewhere."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as m:
        m.chdir(cwd)
        torch.set_num_threads(1)
        try:
            assert run_cli("train", RECIPE, *TINY, "--out", "train") == 0
        finally:
            torch.set_num_threads(threads)
    return cwd / "train"


def test_the_data_file_is_what_data_py_makes():
    stored = np.load(EXAMPLE / "data.npz", allow_pickle=False)
    assert sorted(stored.files) == ["images", "labels"]
    assert (EXAMPLE / "data.npz").stat().st_size < 200_000
    r = recipes.load(EXAMPLE / "recipe.toml")
    from_file = build.load_data(r, seed=0)
    raw = recipes.to_dict(r)
    raw["data"] = {
        **raw["data"],
        "path": "",
        "arrays": {"x": "x", "y": "y"},
        "factory": "data:load",
    }
    from_factory = build.load_data(recipes.from_dict(raw), seed=0)
    for a, b in zip(
        (from_file.train, from_file.val, from_file.test),
        (from_factory.train, from_factory.val, from_factory.test),
        strict=True,
    ):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert [len(s[0]) for s in (from_file.train, from_file.val, from_file.test)] == [1150, 288, 359]
    assert (from_file.task, from_file.num_classes, from_file.train[0].shape[1:]) == (
        "classification", 10, (1, 8, 8))  # fmt: skip


def test_train_writes_a_run_folder_that_knows_where_the_code_is(trained):
    s = summary(trained)
    assert (s["status"], s["task"], s["epochs"]) == ("completed", "classification", 1)
    assert s["final"]["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    config = json.loads((trained / "config.json").read_text())
    assert config["recipe"]["base"] == str(EXAMPLE)
    assert config["recipe"]["model"] == {**config["recipe"]["model"], "factory": "model:make",
                                         "kwargs": {"width": 16}}  # fmt: skip
    assert (trained / "gamma.json").exists()  # the model's own BatchNorm scales, recorded


def test_sweep_of_the_example_starts_from_the_trained_run(trained, tmp_path, monkeypatch,
                                                          one_thread):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    assert run_cli("sweep", RECIPE, *TINY, "--param", "weight_decay", "--grid", "0,1e-3",
                   "--out", str(out)) == 0  # fmt: skip
    s = summary(out)
    assert (s["status"], s["param"], len(s["grid"])) == ("completed", "weight_decay", 2)
    rows = (out / "path.csv").read_text().splitlines()
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(","), strict=True))
    # strength 0 of the stacked sweep is the run `regulab train` made, to float precision
    final = summary(trained)["final"]
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert float(first[key]) == pytest.approx(final[key], rel=1e-6, abs=1e-7), key


def test_slim_of_the_example_and_of_the_trained_run(trained, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    args = ("--ratio", "0.5", "--finetune-epochs", "1", "--latency-repeats", "1")
    for name, source in (("slim", (RECIPE, *TINY)), ("slim_from", ("--from", str(trained)))):
        assert run_cli("slim", *source, *args, "--out", name) == 0
        s = summary(tmp_path / name)
        assert s["status"] == "completed"
        (row,) = s["results"]
        assert row["channels_removed"] == row["channels_requested"] == 24  # half of 16 + 32
        assert row["pruned_vs_masked"] < 1e-4
        # the pruned model, saved without pickle, loads into the example's own model again
        folder = tmp_path / name / "ratio-0.5" / "pass-1"
        arch = json.loads((folder / "arch.json").read_text())["arch"]
        assert arch == {"factory": "model:make", "kwargs": {"width": 16}, "base": str(EXAMPLE)}
        loaded = export.load(folder)  # arch.json names the factory and its folder
        assert all(
            torch.equal(a, b)
            for a, b in zip(
                loaded.state_dict().values(),
                export.load(folder, model=from_arch(arch)).state_dict().values(),
                strict=True,
            )
        )
        test = build.load_data(recipes.load(RECIPE), seed=0).test
        assert evaluate(loaded, test, "cross_entropy")[1] == row["after_finetune"]["test_accuracy"]

"""`regulab slim`: the run folder against independent counts, passes, --from, gamma.json, errors.

Recipes are a two-convolution VGG on scikit-learn's 8x8 digits, one epoch of
sparsity training and one of fine-tuning, so that a whole slim run takes about a
second. Every number in summary.json is checked against the exported network
(loaded with `regulab.slim.export.load`) or against arithmetic done here.
"""

import copy
import csv
import json
import random
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import run_cli
from regulab import models, tables
from regulab import recipe as recipes
from regulab.recipe import build
from regulab.slim import export, pipeline, report
from regulab.slim.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 8  # digits images are 1 x 8 x 8
CFG = [8, "M", 16, "M"]

VGG = """
name = "slim_tiny"
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "vgg_bn"
cfg = [8, "M", 16, "M"]
[optim]
lr = 0.1
momentum = 0.9
[slim]
sparsity = 1e-3
finetune_epochs = 1
[train]
epochs = {epochs}
batch_size = 128
eval_train = 200
"""

MLP = """
name = "mlp_tiny"
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [16]
[train]
epochs = 1
batch_size = 128
eval_train = 200
"""

SUMMARY_KEYS = {"command", "status", "seconds", "recipe", "from", "seed", "device", "sparsity",
                "sparsity_mode", "score", "passes", "finetune_epochs", "flops_convention",
                "latency_batches", "unpruned", "results", "gamma_histogram"}  # fmt: skip


def write(folder, text, name="r.toml"):
    path = Path(folder) / name
    path.write_text(text)
    return path


def summary_of(folder):
    return json.loads((Path(folder) / "summary.json").read_text())


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def bn_widths(model):
    """{name: channels} of the BatchNorm layers, counted here (not with pipeline.widths)."""
    return {n: m.num_features for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


def hand_flops(model):
    """2 x multiply-adds of the VGG's convolutions and classifier for one 1 x 8 x 8 image.

    Conv 3x3 with padding 1 keeps the side, MaxPool2d(2) halves it, the linear layer's
    bias is not counted (flop_counter counts only the matrix product).
    """
    side, macs = SIDE, 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.kernel_size == (3, 3) and m.padding == (1, 1) and m.bias is None
            macs += side * side * m.out_channels * m.in_channels * 9
        elif isinstance(m, nn.MaxPool2d):
            side //= 2
        elif isinstance(m, nn.Linear):
            macs += m.in_features * m.out_features
    return 2 * macs


def hand_params(c1, c2, classes=10):
    """Parameters of vgg_bn([c1, "M", c2, "M"]) on one input channel, counted by hand."""
    return 9 * c1 + 2 * c1 + 9 * c1 * c2 + 2 * c2 + c2 * classes + classes


@torch.no_grad()
def accuracy_on_test(model, recipe_path):
    """Accuracy of model on the recipe's digits test split (seed 0), argmax counted here."""
    x, y = build.load_data(recipes.load(recipe_path), 0).test
    return float((model.eval()(x).argmax(1) == y).double().mean())


def slim(*args):
    return run_cli("slim", *args, "--latency-repeats", "1")


# --- fixtures: each run once per module ------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread_for_module_fixtures():
    """The module-scoped runs below are set up before the function-scoped `one_thread`:
    without this they would train on every core of a busy machine, several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    return write(tmp_path_factory.mktemp("recipe"), VGG.format(epochs=1))


@pytest.fixture(scope="module")
def slim_run(tmp_path_factory, recipe):
    out = tmp_path_factory.mktemp("slim") / "run"
    assert run_cli("slim", str(recipe), "--ratios", "0.3,0.6", "--latency-repeats", "2",
                   "--out", str(out)) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def passes_run(tmp_path_factory, recipe):
    out = tmp_path_factory.mktemp("passes") / "run"
    assert slim(str(recipe), "--ratio", "0.3", "--passes", "2", "--out", str(out)) == 0
    return out


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    """A finished `regulab train` run of the VGG recipe, two epochs."""
    folder = tmp_path_factory.mktemp("train")
    path = write(folder, VGG.format(epochs=2))
    assert run_cli("train", str(path), "--out", str(folder / "run")) == 0
    return folder / "run"


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory):
    """`regulab train --seeds 2`, each seed drawing its own split (data.vary_seed)."""
    folder = tmp_path_factory.mktemp("multi")
    text = VGG.format(epochs=1).replace(
        "val_fraction = 0.2", "val_fraction = 0.2\nvary_seed = true"
    )
    path = write(folder, text)
    assert run_cli("train", str(path), "--seeds", "2", "--out", str(folder / "run")) == 0
    return folder / "run"


# --- 1. end to end ---------------------------------------------------------------------------


def test_run_folder_holds_every_file_and_the_summary_keys(slim_run):
    names = {p.name for p in slim_run.iterdir()}
    assert {"config.json", "summary.json", "slim.csv", "pareto.png", "gamma.png", "report.md",
            "sparse", "ratio-0.3", "ratio-0.6"} <= names  # fmt: skip
    for png in ("pareto.png", "gamma.png"):
        assert (slim_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in ("0.3", "0.6"):
        folder = slim_run / f"ratio-{r}" / "pass-1"
        assert {p.name for p in folder.iterdir()} == {
            "model.safetensors", "arch.json", "plan.txt", "metrics.csv"}  # fmt: skip
        assert len(read_csv(folder / "metrics.csv")) == 1  # one fine-tuning epoch
    summary = summary_of(slim_run)
    assert summary.keys() == SUMMARY_KEYS
    assert summary["command"] == "slim" and summary["status"] == "completed"
    assert summary["from"] is None and summary["seed"] == 0
    assert summary["latency_batches"] == [1, 256]
    assert "2 FLOPs per multiply-add" in summary["flops_convention"]
    assert [(r["ratio"], r["pass"]) for r in summary["results"]] == [(0.3, 1), (0.6, 1)]
    assert summary["unpruned"]["widths"] == {"features.1": 8, "features.5": 16}
    assert summary["unpruned"]["params"] == hand_params(8, 16)
    assert sum(summary["gamma_histogram"]["counts"]) == 8 + 16
    # the pruned model is the last epoch of sparsity training: its last |gamma| histogram
    over_epochs = json.loads((slim_run / "sparse" / "gamma.json").read_text())
    last = over_epochs["epochs"][-1]
    assert summary["gamma_histogram"]["counts"] == last["counts"]
    assert np.allclose(summary["gamma_histogram"]["edges"], last["edges"], rtol=1e-6)
    settings = json.loads((slim_run / "config.json").read_text())
    assert settings["command"] == "slim" and settings["recipe"]["slim"]["ratios"] == [0.3, 0.6]
    assert (slim_run / "sparse" / "summary.json").exists()  # sparsity training happened


def test_each_result_matches_the_exported_network_and_hand_counts(slim_run, recipe):
    summary = summary_of(slim_run)
    unpruned = summary["unpruned"]
    total = sum(unpruned["widths"].values())
    for r in summary["results"]:
        folder = slim_run / r["model"]
        assert folder == slim_run / f"ratio-{r['ratio']:g}" / "pass-1"
        model = export.load(folder)
        widths = bn_widths(model)
        # exactly round(ratio x channels) go, counted from the widths before and after
        assert r["channels_total"] == total == 24
        assert r["channels_removed"] == r["channels_requested"] == round(r["ratio"] * total)
        assert total - sum(widths.values()) == round(r["ratio"] * total)
        assert r["note"] == "" and all(w >= 1 for w in widths.values())
        assert r["widths"] == widths
        c1, c2 = widths["features.1"], widths["features.5"]
        params = sum(p.numel() for p in model.parameters())
        assert r["params"] == params == hand_params(c1, c2)
        assert r["flops"] == hand_flops(model) == 2 * (64 * c1 * 9 + 16 * c2 * c1 * 9 + c2 * 10)
        assert r["macs"] == r["flops"] // 2
        # the accuracy after fine-tuning is the exported network's, recomputed here
        assert r["finetune"] == "completed"
        acc = accuracy_on_test(model, recipe)
        assert abs(r["after_finetune"]["test_accuracy"] - acc) <= 1e-6
        assert abs(r["accuracy_change"] - (acc - unpruned["test_accuracy"])) <= 1e-6
        assert abs(r["params_reduction"] - (1 - params / unpruned["params"])) <= 1e-12
        assert abs(r["flops_reduction"] - (1 - r["flops"] / unpruned["flops"])) <= 1e-12
        assert 0 <= r["pruned_vs_masked"] <= 1e-4
        for b in ("1", "256"):
            expected = unpruned["latency_s"][b] / r["latency_s"][b]
            assert r["speedup"][b] == pytest.approx(expected, rel=1e-12)
        plan_text = (folder / "plan.txt").read_text()
        assert plan_text.startswith(f"prune {r['channels_removed']} of {total} channels")


def test_slim_csv_has_one_row_per_network_matching_the_summary(slim_run):
    summary = summary_of(slim_run)
    rows = read_csv(slim_run / "slim.csv")
    assert len(rows) == len(summary["results"]) + 1
    assert rows[0]["pass"] == "0" and float(rows[0]["ratio"]) == 0.0
    assert int(rows[0]["params"]) == summary["unpruned"]["params"]
    assert float(rows[0]["test_accuracy"]) == summary["unpruned"]["test_accuracy"]
    for row, r in zip(rows[1:], summary["results"], strict=True):
        assert float(row["ratio"]) == r["ratio"] and int(row["pass"]) == r["pass"]
        for key in ("channels_total", "channels_requested", "channels_removed", "params", "flops"):
            assert int(row[key]) == r[key], key
        assert float(row["test_accuracy"]) == r["after_finetune"]["test_accuracy"]
        assert float(row["test_accuracy_before_finetune"]) == r["before_finetune"]["test_accuracy"]
        assert float(row["params_reduction"]) == r["params_reduction"]
        assert float(row["pruned_vs_masked"]) == r["pruned_vs_masked"]
        assert float(row["speedup_b256"]) == r["speedup"]["256"]
    assert tables.markdown_table(*report.rows(summary)) in (slim_run / "report.md").read_text()


# --- 2. passes -------------------------------------------------------------------------------


def test_each_pass_cuts_the_ratio_of_what_the_previous_pass_left(passes_run):
    summary = summary_of(passes_run)
    first, second = summary["results"]
    assert (first["pass"], second["pass"]) == (1, 2) and summary["passes"] == 2
    assert first["channels_total"] == 24 and first["channels_removed"] == round(0.3 * 24) == 7
    left = sum(first["widths"].values())
    assert left == 24 - 7
    assert second["channels_total"] == left
    assert second["channels_removed"] == round(0.3 * left) == 5
    assert sum(second["widths"].values()) == left - 5
    for name, w in first["widths"].items():
        assert 1 <= second["widths"][name] <= w, name
    for r in (first, second):
        model = export.load(passes_run / r["model"])
        assert bn_widths(model) == r["widths"]
        params = sum(p.numel() for p in model.parameters())
        # reductions are against the unpruned network, not the previous pass
        assert r["params"] == params
        assert abs(r["params_reduction"] - (1 - params / summary["unpruned"]["params"])) <= 1e-12
        assert (passes_run / r["model"] / "metrics.csv").exists()
    assert second["params"] < first["params"]


# --- 3. --from -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def from_run(tmp_path_factory, train_run):
    out = tmp_path_factory.mktemp("from") / "run"
    code = slim("--from", str(train_run), "--ratio", "0.5", "--finetune-epochs", "0",
                "--out", str(out))  # fmt: skip
    assert code == 0
    return out


def test_from_a_train_run_prunes_its_weights_without_training(from_run, train_run):
    summary = summary_of(from_run)
    trained = summary_of(train_run)
    assert summary["from"] == str(train_run)
    assert abs(summary["unpruned"]["test_accuracy"] - trained["final"]["test_accuracy"]) <= 1e-9
    assert abs(summary["unpruned"]["val_accuracy"] - trained["final"]["val_accuracy"]) <= 1e-9
    # no sparsity training: sparse/ holds only the run's gamma.json, copied
    assert [p.name for p in (from_run / "sparse").iterdir()] == ["gamma.json"]
    gamma = (from_run / "sparse" / "gamma.json").read_text()
    assert gamma == (train_run / "gamma.json").read_text()
    # the |gamma| histogram is that of the run's final weights
    assert summary["gamma_histogram"]["counts"] == json.loads(gamma)["epochs"][-1]["counts"]
    [r] = summary["results"]
    assert r["channels_removed"] == round(0.5 * 24) == 12
    assert r["finetune"] == "not fine-tuned" and summary["finetune_epochs"] == 0
    assert r["after_finetune"] == r["before_finetune"]
    assert not (from_run / r["model"] / "metrics.csv").exists()
    model = export.load(from_run / r["model"])
    assert bn_widths(model) == r["widths"]
    path = write(from_run.parent, VGG.format(epochs=1), "same.toml")
    assert abs(accuracy_on_test(model, path) - r["before_finetune"]["test_accuracy"]) <= 1e-6


def test_no_finetune_epochs_leaves_the_accuracy_as_pruned(tmp_path, recipe):
    out = tmp_path / "run"
    assert slim(str(recipe), "--ratio", "0.4", "--finetune-epochs", "0", "--out", str(out)) == 0
    [r] = summary_of(out)["results"]
    assert r["finetune"] == "not fine-tuned"
    assert r["after_finetune"] == r["before_finetune"]
    model = export.load(out / r["model"])
    assert abs(accuracy_on_test(model, recipe) - r["before_finetune"]["test_accuracy"]) <= 1e-6


def test_from_a_seed_run_takes_that_runs_seed_and_split(tmp_path, multi_run):
    """seed-1 of a vary_seed recipe drew its own test split: slim must evaluate on it."""
    run = multi_run / "runs" / "slim_tiny" / "seed-1"
    out = tmp_path / "run"
    assert slim("--from", str(run), "--ratio", "0.5", "--finetune-epochs", "0",
                "--out", str(out)) == 0  # fmt: skip
    summary = summary_of(out)
    assert summary["seed"] == 1
    assert abs(summary["unpruned"]["test_accuracy"]
               - summary_of(run)["final"]["test_accuracy"]) <= 1e-9  # fmt: skip


# --- 4. gamma.json of `regulab train` --------------------------------------------------------


def test_train_records_the_gamma_histogram_of_every_epoch(train_run):
    record = json.loads((train_run / "gamma.json").read_text())
    epochs = record["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1, 2]
    for e in epochs:
        assert sum(e["counts"]) == 8 + 16 and len(e["counts"]) == record["bins"] == 40
        assert len(e["edges"]) == 41
    assert epochs[0]["counts"] == [0] * 39 + [24]  # PyTorch initializes every gamma to 1
    newest = max((train_run / "checkpoints").glob("epoch-*"))
    assert newest.name == "epoch-0002"
    state = load_file(str(newest / "model.safetensors"))
    scales = {k: v for k, v in state.items() if k.endswith(".weight") and v.ndim == 1}
    assert set(scales) == {"features.1.weight", "features.5.weight"}  # the BatchNorms
    gammas = np.concatenate([v.abs().numpy() for v in scales.values()]).astype(np.float64)
    counts, edges = np.histogram(gammas, bins=40, range=(0, gammas.max()))
    last = epochs[-1]
    assert sum(last["counts"]) == counts.sum() == 24
    assert np.allclose(last["edges"], edges, rtol=1e-6, atol=0)
    # a value on a bin edge may fall on either side in float32
    assert np.abs(np.array(last["counts"]) - counts).max() <= 1


def test_train_of_a_model_without_batchnorm_writes_no_gamma_json(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", str(write(tmp_path, MLP)), "--out", str(out)) == 0
    assert (out / "summary.json").exists() and not (out / "gamma.json").exists()


# --- 5. bad input ----------------------------------------------------------------------------


@pytest.fixture
def inputs(tmp_path, train_run, multi_run):
    """Paths substituted into the bad-input cases below."""
    running = tmp_path / "running"
    shutil.copytree(train_run, running)
    s = summary_of(running)
    s["status"] = "running"
    (running / "summary.json").write_text(json.dumps(s))
    notrun = tmp_path / "notrun"
    notrun.mkdir()
    (notrun / "notes.txt").write_text("mine")
    other_command = tmp_path / "sweep_run"
    other_command.mkdir()
    (other_command / "config.json").write_text(json.dumps({"command": "sweep", "recipe": {}}))
    (other_command / "summary.json").write_text(json.dumps({"variant": None}))
    nockpt = tmp_path / "nockpt"
    shutil.copytree(train_run, nockpt)
    shutil.rmtree(nockpt / "checkpoints")
    vgg = VGG.format(epochs=1)
    two_variants = vgg + "[variants.a]\n[variants.b]\nslim.sparsity = 0.01\n"
    return {
        "recipe": str(write(tmp_path, vgg)),
        "mlp": str(write(tmp_path, MLP, "mlp.toml")),
        "other": str(write(tmp_path, vgg.replace("cfg = [8,", "cfg = [4,"), "other.toml")),
        "variants": str(write(tmp_path, two_variants, "variants.toml")),
        "run": str(train_run),
        "multi": str(multi_run),
        "running": str(running),
        "notrun": str(notrun),
        "sweep": str(other_command),
        "nockpt": str(nockpt),
    }


BAD = [
    (["{recipe}", "--ratio", "1"], ["--ratio", "[0, 1)", "got '1'"]),
    (["{recipe}", "--ratio", "-0.1"], ["--ratio", "got '-0.1'"]),
    (["{recipe}", "--ratios", "0.5,0.5"], ["--ratios", "distinct", "got '0.5,0.5'"]),
    (["{recipe}", "--ratio", "abc"], ["--ratio", "got 'abc'"]),
    (["{recipe}", "--passes", "0"], ["--passes", "got '0'"]),
    (["{mlp}"], ["model.name", "BatchNorm", "vgg_bn", "'mlp'"]),
    (["{recipe}", "--set", "slim.ratios=[1.5]"], ["slim.ratios", "[0, 1)", "got [1.5]"]),
    (["{recipe}", "--set", "slim.passes=0"], ["slim.passes", ">= 1", "got 0"]),
    (["{recipe}", "--set", 'slim.score="foo"'], ["slim.score", "gamma, normalized", "'foo'"]),
    (["{recipe}", "--set", "slim.max_layer_ratio=0"], ["slim.max_layer_ratio", "(0, 1]", "got 0"]),
    ([], ["RECIPE is required", "--from"]),
    (["--from", "{notrun}"], ["--from", "`regulab train`", "{notrun}"]),
    (["--from", "{sweep}"], ["--from", "`regulab train`", "{sweep}"]),
    (["--from", "{running}"], ["--from", "completed", "{running}", "'running'"]),
    (["{other}", "--from", "{run}"], ["{other}", "model.cfg", "{run}"]),
    (["--from", "{multi}"], ["--from", "one run", "{multi}", "seed-0", "seed-1"]),
    (["{variants}"], ["--variant", "a, b", "got None"]),
    (["--from", "{run}", "--seed", "3"], ["--seed", "must be 0", "got 3"]),
    (["{recipe}", "--set", 'train.device="cuda:7"'], ["train.device", "'cuda:7'", "--device cpu"]),
    (["--from", "{nockpt}"], ["--from", "checkpoints", "{nockpt}"]),
    (["--from", "{run}", "--variant", "a"], ["--variant", "RECIPE"]),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) or "nothing" for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, inputs, args, message):
    out = tmp_path / "out"
    code = slim(*(a.format(**inputs) for a in args), "--out", str(out))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("regulab slim: error: ") and err.count("\n") == 1, err
    for part in message:
        assert part.format(**inputs) in err, (part, err)
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_an_out_folder_that_is_not_a_run_is_left_alone(tmp_path, capsys, recipe, overwrite):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("do not delete")
    code = slim(str(recipe), "--ratio", "0.5", "--out", str(out), *overwrite)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--out" in err or "--overwrite" in err
    assert str(out) in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "do not delete"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


# --- 6. a layer the surgery cannot handle ----------------------------------------------------


class LearnedGate(nn.Module):
    """A per-channel scale of its own: Torch-Pruning does not know how to shrink it."""

    def __init__(self, channels):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.g


def test_plan_names_a_layer_the_surgery_cannot_handle():
    model = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 4, 3, padding=1, bias=False), bn=nn.BatchNorm2d(4),
        gate=LearnedGate(4), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(),
        fc=nn.Linear(4, 2),
    )).eval()  # fmt: skip
    with pytest.raises(ValueError, match="cannot handle") as info:
        plan(model, 0.5, torch.zeros(1, 1, SIDE, SIDE))
    message = str(info.value)
    assert "layer gate (LearnedGate)" in message and "gate.g" in message


# --- 7. report -------------------------------------------------------------------------------


def non_dominated(points):
    """Brute force: points that no other point matches or beats in both cost and accuracy."""
    return {
        p for p in points
        if not any(q != p and q[0] <= p[0] and q[1] >= p[1] for q in points)
    }  # fmt: skip


def test_front_keeps_exactly_the_non_dominated_points():
    points = [(3.0, 0.7), (1.0, 0.5), (2.0, 0.6), (2.0, 0.8), (4.0, 0.8), (5.0, 0.9),
              (0.5, 0.1), (5.0, 0.9), (6.0, 0.85), (1.0, 0.4)]  # fmt: skip
    front = report._front(points)
    assert front == [(0.5, 0.1), (1.0, 0.5), (2.0, 0.8), (5.0, 0.9)]
    assert set(front) == non_dominated(points)
    rng = random.Random(0)
    for _ in range(200):
        pts = [(rng.randint(0, 6) / 2, rng.randint(0, 8) / 8) for _ in range(rng.randint(1, 12))]
        front = report._front(pts)
        assert set(front) == non_dominated(pts) and len(front) == len(set(front))
        assert [c for c, _ in front] == sorted(c for c, _ in front)


def test_rows_and_table_have_one_entry_per_network(slim_run):
    summary = summary_of(slim_run)
    rows = report.networks(summary)
    assert len(rows) == 1 + len(summary["results"])
    u = rows[0]
    assert (u["ratio"], u["pass"], u["channels_removed"], u["params_reduction"]) == (0, 0, 0, 0)
    assert u["params"] == summary["unpruned"]["params"] and u["channels_total"] == 24
    assert u["speedup_b1"] == u["speedup_b256"] == 1.0
    for row, r in zip(rows[1:], summary["results"], strict=True):
        assert row["test_accuracy"] == r["after_finetune"]["test_accuracy"]
        assert row["test_accuracy_before_finetune"] == r["before_finetune"]["test_accuracy"]
        assert row["latency_b256_s"] == r["latency_s"]["256"]
    lines = tables.markdown_table(*report.rows(summary)).splitlines()
    assert len(lines) == 2 + len(rows)  # header, separator, one line per row
    for line, row in zip(lines[2:], rows, strict=True):
        assert line.startswith(f"| {row['ratio']:g} | {row['pass']} | ")
        assert f"{row['params']:,}" in line
    assert lines[2].startswith("| 0 | 0 | - |")
    assert lines[3].startswith("| 0.3 | 1 | 7 of 24 |") and lines[4].startswith("| 0.6 | 1 | 14 of")


# --- 8. pipeline helpers ---------------------------------------------------------------------


def test_reductions_are_shares_removed_and_latency_ratios():
    before = {"params": 1000, "flops": 5000, "latency_s": {"1": 2e-3, "256": 8e-2}}
    after = {"params": 250, "flops": 3000, "latency_s": {"1": 5e-4, "256": 1e-1}}
    r = pipeline.reductions(before, after)
    assert r["params_reduction"] == pytest.approx(0.75, rel=1e-12)
    assert r["flops_reduction"] == pytest.approx(0.4, rel=1e-12)
    assert r["speedup"] == pytest.approx({"1": 4.0, "256": 0.8}, rel=1e-12)


def test_max_output_difference_is_zero_for_a_copy_and_positive_after_a_change():
    torch.manual_seed(0)
    model = models.vgg_bn(CFG, in_channels=1, num_classes=10)
    x = torch.randn(16, 1, SIDE, SIDE)
    twin = copy.deepcopy(model)
    assert pipeline.max_output_difference(model, twin, x) == 0.0
    assert not model.training and not twin.training
    with torch.no_grad():
        twin.features[0].weight[0, 0, 1, 1] += 0.5
        ya, yb = model(x), twin(x)
    expected = float((ya - yb).abs().max() / ya.abs().max())
    got = pipeline.max_output_difference(model, twin, x)
    assert got > 0 and got == pytest.approx(expected, rel=1e-6)


def test_from_with_a_model_override_is_a_usage_error(tmp_path, train_run, capsys):
    out = tmp_path / "run"
    code = slim("--from", str(train_run), "--set", 'model.cfg=[4, "M", 8, "M"]',
                "--finetune-epochs", "0", "--out", str(out))  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "model.cfg must stay [8, 'M', 16, 'M']" in err and "--set gave [4, 'M', 8, 'M']" in err


def test_ratios_that_print_alike_are_refused_before_training(tmp_path, recipe, capsys):
    out = tmp_path / "run"
    code = slim(str(recipe), "--ratios", "0.1,0.1000001", "--finetune-epochs", "0",
                "--out", str(out))  # fmt: skip
    assert code == 2 and not out.exists()
    assert "slim.ratios must differ" in capsys.readouterr().err


# --- review findings ---------------------------------------------------------------------


def test_from_an_early_stopped_run_prunes_its_best_epoch_whatever_the_slim_recipe(tmp_path):
    text = VGG.format(epochs=3).replace("lr = 0.1", "lr = 0.5")  # best epoch 2 of 3
    text += '[early_stopping]\npatience = 10\nmonitor = "val_accuracy"\n'
    path = write(tmp_path, text)
    assert run_cli("train", str(path), "--out", str(tmp_path / "es")) == 0
    trained = summary_of(tmp_path / "es")
    final = trained["final"]["test_accuracy"]  # the restored best epoch's
    # a slim recipe without early stopping must still start from the run's best weights
    out = tmp_path / "slim"
    assert slim("--from", str(tmp_path / "es"), "--set", "early_stopping.patience=0",
                "--ratio", "0", "--finetune-epochs", "0", "--out", str(out)) == 0  # fmt: skip
    assert summary_of(out)["unpruned"]["test_accuracy"] == pytest.approx(final, abs=1e-12)
    last = read_csv(tmp_path / "es" / "metrics.csv")[-1]
    assert trained["best_epoch"] < int(last["epoch"])  # else this test could not fail
    assert float(last["test_accuracy"]) != pytest.approx(final, abs=1e-12)


def test_from_with_recipe_and_variant_uses_that_variant(tmp_path):
    text = VGG.format(epochs=1) + "[variants.plain]\n[variants.drop]\nmodel.dropout = [0.3]\n"
    path = write(tmp_path, text)
    assert run_cli("train", str(path), "--out", str(tmp_path / "t")) == 0
    run = tmp_path / "t" / "runs" / "drop" / "seed-0"
    out = tmp_path / "slim"
    code = slim(str(path), "--variant", "drop", "--from", str(run), "--ratio", "0.25",
                "--finetune-epochs", "0", "--out", str(out))  # fmt: skip
    assert code == 0
    stored = json.loads((out / "config.json").read_text())["recipe"]
    assert stored["model"]["dropout"] == [0.3]
    # the other variant's model differs: refused, naming the key
    code = slim(str(path), "--variant", "plain", "--from", str(run), "--out", str(tmp_path / "x"))
    assert code == 2 and not (tmp_path / "x").exists()


class Concat(nn.Module):
    """Two branches concatenated, then one BatchNorm over all their channels (DenseNet style)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6))
        self.bn = nn.BatchNorm2d(10)
        self.conv = nn.Conv2d(10, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        h = torch.relu(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1))
        return self.head(torch.relu(self.bn2(self.conv(torch.relu(self.bn(h))))))


def test_a_batchnorm_after_a_concatenation_is_coupled_with_each_input_channel_by_channel():
    from regulab.slim import masked, prune
    from regulab.slim.plan import dependency_groups

    torch.manual_seed(0)
    model = Concat().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.1, 1)
                m.bias.uniform_(-1, 1)
                m.running_mean.uniform_(-1, 1)
    x = torch.randn(16, 1, 8, 8)
    groups = {g[0][0]: dict(g) for g in dependency_groups(model, x[:1])}
    assert groups["a.1"]["bn"] == [0, 1, 2, 3]  # a's channels are bn's first four
    assert groups["b.1"]["bn"] == [4, 5, 6, 7, 8, 9]  # b's are the next six
    assert "bn" not in groups  # every channel of bn belongs to a's or b's group
    p = plan(model, 0.5, x[:1])
    assert p.removed == round(0.5 * (4 + 6 + 8))
    gammas = {n: m.weight.detach().abs() for n, m in model.named_modules()
              if isinstance(m, nn.BatchNorm2d)}  # fmt: skip
    for g in p.groups:  # a coupled channel's score is its larger |gamma|; the cut is lowest first
        if g.layers[0] == "a.1" and g.removed:
            c = g.removed[0]
            assert g.threshold >= max(gammas["a.1"][c], gammas["bn"][c]) - 1e-7
    small, big = prune(model, p, x[:1]).eval(), masked(model, p, x[:1]).eval()
    with torch.no_grad():
        assert (small(x) - big(x)).abs().max() <= 1e-5
    kept_a = 4 - len(next(g for g in p.groups if g.layers[0] == "a.1").removed)
    kept_b = 6 - len(next(g for g in p.groups if g.layers[0] == "b.1").removed)
    assert small.bn.num_features == kept_a + kept_b


def test_a_resnet_counts_each_coupled_channel_once_in_every_row(tmp_path):
    text = VGG.format(epochs=1).replace(
        'name = "vgg_bn"\ncfg = [8, "M", 16, "M"]',
        'name = "resnet_bn"\nwidths = [4, 8]\nblocks = [1, 1]',
    )
    path = write(tmp_path, text)
    out = tmp_path / "run"
    assert slim(str(path), "--ratio", "0.5", "--finetune-epochs", "0", "--out", str(out)) == 0
    s = summary_of(out)
    (r,) = s["results"]
    # stem + stage1 bn2 share 4 channels (the residual addition); the stage-2 block's bn2 and
    # its shortcut's bn share 8; stage1 bn1 has 4 and stage2 bn1 8 of their own: 24 units
    assert s["unpruned"]["channels"] == r["channels_total"] == 4 + 4 + 8 + 8
    assert sum(s["unpruned"]["widths"].values()) > r["channels_total"]  # 36 BatchNorm channels
    rows = read_csv(out / "slim.csv")
    assert {int(row["channels_total"]) for row in rows} == {24}
    assert r["channels_removed"] == 12 and r["pruned_vs_masked"] <= 1e-5

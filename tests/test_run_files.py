"""The one reader of run folders (`regulab.run_files`): a damaged or edited run folder is one
line naming the file, exit 2, for `train --resume`, `slim --from` and `compare`, and every file
of it is byte-identical afterwards; the normal paths still run.

The run is a two-convolution VGG (it has BatchNorm, so gamma.json) on scikit-learn's digits.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import run_cli
from regulab import checkpoint, run_files, train_state
from regulab.data.loader import TensorLoader
from regulab.errors import RunFolderError
from regulab.recipe import compare
from regulab.train import fit
from test_compare import curve, write_run

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = """
name = "files"
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "vgg_bn"
cfg = [4, "M", 8, "M"]
[optim]
momentum = 0.9
[slim]
sparsity = 1e-3
finetune_epochs = 0
[train]
epochs = 2
batch_size = 256
eval_train = 100
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A completed run of 2 epochs."""
    root = tmp_path_factory.mktemp("files")
    (root / "r.toml").write_text(RECIPE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert run_cli("train", str(root / "r.toml"), "--out", str(root / "run")) == 0
    torch.set_num_threads(threads)
    return root / "run"


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def interrupted(folder: Path) -> None:
    """As if killed after epoch 2 of 3: resuming it trains one more epoch."""
    edit_json(folder / "summary.json", lambda s: s.update(status="running"))
    edit_json(folder / "config.json", lambda c: c["recipe"]["train"].update(epochs=3))


def newest(folder: Path) -> Path:
    return checkpoint.latest(folder / "checkpoints")


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def files(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys, *args) -> str:
    capsys.readouterr()
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


# (case, damage, the file the message names); the damage of each is what the issue found
DAMAGES = {
    "model truncated": (lambda d: truncate(newest(d) / "model.safetensors"), "epoch-0002"),
    "state truncated": (lambda d: truncate(newest(d) / "state.safetensors"), "epoch-0002"),
    "config a list": (lambda d: (d / "config.json").write_text("[1, 2]"), "{run}"),
    "config without seeds": (
        lambda d: edit_json(d / "config.json", lambda c: c.pop("seeds")),
        "config.json",
    ),
    "epoch a string": (
        lambda d: edit_json(newest(d) / "state.json", lambda s: s.update(epoch="2")),
        "state.json",
    ),
    "epoch edited": (
        lambda d: edit_json(newest(d) / "state.json", lambda s: s.update(epoch=1)),
        "state.json",
    ),
    "a tensor missing": (
        lambda d: edit_json(
            newest(d) / "state.json",
            lambda s: s["optimizer"]["state"]["__items__"][0][1].update(
                momentum_buffer={"__tensor__": "gone"}
            ),
        ),
        "epoch-0002",
    ),
    "gamma.json corrupt": (lambda d: (d / "gamma.json").write_text('{"bins": '), "gamma.json"),
    "metrics.csv edited": (
        lambda d: (d / "metrics.csv").write_text(
            (d / "metrics.csv").read_text() + "3" + ",low" * 10 + "\n"
        ),
        "metrics.csv",
    ),
    "model of another shape": (
        lambda d: edit_json(
            d / "config.json", lambda c: c["recipe"]["model"].update(cfg=[6, "M", 8, "M"])
        ),
        "model.safetensors",
    ),
}


@pytest.mark.parametrize("case", DAMAGES)
@pytest.mark.parametrize("command", ["resume", "slim"])
def test_a_damaged_run_folder_is_one_line_and_nothing_is_written(
    trained, tmp_path, capsys, case, command
):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    if command == "resume":
        interrupted(run)
    damage, named = DAMAGES[case]
    damage(run)
    before = files(run)
    if command == "resume":
        line = one_line(capsys, "train", "--resume", str(run))
    else:
        args = ("--from", str(run), "--ratio", "0.5", "--out", str(tmp_path / "slim"))
        line = one_line(capsys, "slim", *args)
        assert not (tmp_path / "slim").exists()
    assert named.format(run=run) in line, line
    assert files(run) == before  # nothing appended, nothing rewritten


def test_an_interrupted_run_still_resumes(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    interrupted(run)
    assert run_cli("train", "--resume", str(run)) == 0
    assert [r["epoch"] for r in run_files.metrics(run)] == [1, 2, 3]
    assert [g["epoch"] for g in run_files.gamma(run)["epochs"]] == [0, 1, 2, 3]
    assert run_files.summary(run)["status"] == "completed"
    assert train_state.check(newest(run))["epoch"] == 3


def test_a_run_folder_as_regulab_wrote_it_passes_every_check(trained):
    run_files.check_run(trained, "--from")
    assert run_files.train_config(trained, "--from")["seeds"] == [0]


def test_the_weights_are_checked_against_the_model_before_loading(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    fit(model, opt, TensorLoader(x, y, batch_size=16), epochs=1, checkpoint_dir=tmp_path)
    path = checkpoint.latest(tmp_path)
    assert train_state.check(path, model, opt, epochs=1)["epoch"] == 1
    with pytest.raises(RunFolderError, match=r"epoch 1 is past the run's 0 epochs"):
        train_state.check(path, epochs=0)
    state = load_file(str(path / "model.safetensors"))
    state["1.weight"] = torch.zeros(2, 5)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(RunFolderError, match=r"model.safetensors' does not fit.*1\.weight"):
        train_state.check(path, model)
    with pytest.raises(RunFolderError, match=r"optimizer.*\[4\] parameters.*\[2\]"):
        train_state.check(path, optimizer=torch.optim.SGD([*model.parameters()][:2], lr=0.1))


def test_fit_refuses_a_checkpoint_of_another_model_naming_the_file(tmp_path):
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    small = nn.Linear(3, 2)
    opt = torch.optim.SGD(small.parameters(), lr=0.1)
    fit(small, opt, TensorLoader(x, y, batch_size=16), epochs=1, checkpoint_dir=tmp_path)
    other = nn.Linear(3, 3)
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    with pytest.raises(RunFolderError, match=r"epoch-0001/model.safetensors' does not fit"):
        fit(other, opt, TensorLoader(x, y, batch_size=16), epochs=2, checkpoint_dir=tmp_path,
            resume=True)  # fmt: skip


@pytest.mark.parametrize(
    ("skeleton", "fragment"),
    [
        ({"__tensor__": 3}, "tensor reference"),
        ({"__items__": [[[1], 2]]}, "__items__"),
        ({"__tuple__": 5}, "__tuple__"),
    ],
)
def test_a_malformed_state_json_is_named(tmp_path, skeleton, fragment):
    path = checkpoint.save(tmp_path, 1, {"w": torch.zeros(2)}, {})
    (path / "state.json").write_text(json.dumps(skeleton))
    with pytest.raises(RunFolderError, match=rf"checkpoint '{path}' cannot be read.*{fragment}"):
        checkpoint.load(path)


def test_gamma_json_is_checked(tmp_path):
    assert run_files.gamma(tmp_path) is None
    good = {"bins": 2, "epochs": [{"epoch": 0, "edges": [0, 0.5, 1], "counts": [3, 1]}]}
    for bad in ([], {"bins": 2, "epochs": []}, {**good, "bins": 3}):
        (tmp_path / "gamma.json").write_text(json.dumps(bad))
        with pytest.raises(RunFolderError, match=r"gamma\.json' is not as regulab wrote it"):
            run_files.gamma(tmp_path)
    (tmp_path / "gamma.json").write_text(json.dumps(good))
    assert run_files.gamma(tmp_path) == good


# --- compare ---------------------------------------------------------------------------------


def test_nan_never_has_the_lowest_test_loss(tmp_path):
    for name, loss in (("broken", math.nan), ("fine", 0.5), ("worse", 0.9)):
        history = curve(1.0)
        history[-1]["test_loss"] = loss
        write_run(tmp_path / name, name, 0, history)
    runs = compare.load_runs([tmp_path / n for n in ("broken", "fine", "worse")])
    text = " ".join(compare.findings(compare.aggregate(runs), runs))
    assert "**fine** has the lowest test loss" in text
    assert "**broken** has the lowest" not in text


def test_compare_refuses_a_regression_run_against_a_classification_run(tmp_path, capsys):
    write_run(tmp_path / "cls", "a", 0, curve(1.0))
    write_run(tmp_path / "reg", "b", 0, curve(1.0, task="regression"), task="regression")
    out = tmp_path / "cmp"
    line = one_line(
        capsys, "compare", str(tmp_path / "cls"), str(tmp_path / "reg"), "--out", str(out)
    )
    assert "different tasks" in line and "classification" in line and "regression" in line
    assert not out.exists()
    runs = compare.load_runs([tmp_path / "cls", tmp_path / "reg"])  # train's own report
    text = " ".join(compare.findings(compare.aggregate(runs), runs))
    assert "not ranked" in text and "has the lowest test loss" not in text


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda s: s.update(final={"test_loss": "low"}), "final.test_loss must be a number"),
        (lambda s: s.update(status="done"), "status must be"),
        (lambda s: s.update(seed="0"), "seed must be an integer"),
        (lambda s: s.update(task="ranking"), "task must be"),
    ],
)
def test_compare_checks_summary_json(tmp_path, capsys, edit, fragment):
    write_run(tmp_path / "a", "a", 0, curve(1.0))
    edit_json(tmp_path / "a" / "summary.json", edit)
    line = one_line(capsys, "compare", str(tmp_path / "a"), "--out", str(tmp_path / "cmp"))
    assert f"{tmp_path / 'a' / 'summary.json'}" in line and fragment in line


def test_compare_reads_only_runs_inside_a_multi_run_folder(tmp_path, capsys):
    write_run(tmp_path / "elsewhere", "a", 0, curve(1.0))
    (tmp_path / "multi").mkdir()
    listed = {"command": "train", "runs": ["../elsewhere"]}
    (tmp_path / "multi" / "summary.json").write_text(json.dumps(listed))
    line = one_line(capsys, "compare", str(tmp_path / "multi"), "--out", str(tmp_path / "cmp"))
    assert "'../elsewhere'" in line and "inside" in line


def test_metrics_csv_epochs_count_up_from_one(tmp_path):
    write_run(tmp_path / "a", "a", 0, curve(1.0))
    lines = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    (tmp_path / "a" / "metrics.csv").write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")
    with pytest.raises(RunFolderError, match="line 2: epoch must be 1; got 2"):
        run_files.metrics(tmp_path / "a")

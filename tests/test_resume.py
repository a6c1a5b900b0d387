"""A run killed with SIGKILL and resumed ends exactly as an uninterrupted run.

The recipe uses everything that carries state across epochs: dropout (random
masks), SGD momentum (optimizer state), an lr schedule (the step counter), an
L2 penalty, and early stopping (best weights, patience counter).
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import run_cli
from regulab import EarlyStopping, checkpoint
from regulab.data.loader import TensorLoader
from regulab.train import fit

RECIPE = """
name = "digits_resume"
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [48, 48]
dropout = [0.2, 0.3]
[optim]
name = "sgd"
lr = 0.05
momentum = 0.9
[penalty]
l2 = 1e-3
[schedule]
name = "inverse_sqrt"
gamma = 0.05
[early_stopping]
patience = 30
[train]
epochs = 40
batch_size = 16
eval_train = 300
"""


def _rows(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_sigkill_then_resume_gives_the_same_final_metrics(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    assert run_cli("train", str(recipe), "--out", str(tmp_path / "whole")) == 0

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "regulab.cli", "train", str(recipe), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while checkpoint.latest(out / "checkpoints") is None or (
        int(checkpoint.latest(out / "checkpoints").name[6:]) < 3
    ):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(checkpoint.latest(out / "checkpoints").name[6:])
    assert killed_at < 40
    assert json.loads((out / "summary.json").read_text())["status"] == "running"

    assert run_cli("train", "--resume", str(out)) == 0
    whole, resumed = _rows(tmp_path / "whole"), _rows(out)
    assert resumed == whole  # every metric of every epoch, exactly
    a = json.loads((tmp_path / "whole" / "summary.json").read_text())
    b = json.loads((out / "summary.json").read_text())
    assert b["status"] == a["status"] == "completed"
    assert b["final"] == a["final"]
    assert b["best_epoch"] == a["best_epoch"]


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 10, generator=g)
    y = (x[:, :3].sum(1) > 0).long()
    return x, y


def _run(tmp, epochs, resume=False):
    torch.manual_seed(0)
    x, y = _problem()
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    es = EarlyStopping(patience=50)
    history = fit(
        model, opt, TensorLoader(x[:200], y[:200], batch_size=32, seed=3), epochs=epochs,
        val=(x[200:], y[200:]), scheduler=sched, early_stopping=es, seed=5,
        checkpoint_dir=tmp, resume=resume, keep_checkpoints=2,
    )  # fmt: skip
    return model, history


def test_fit_resumes_in_process(tmp_path):
    whole_model, whole = _run(tmp_path / "a", 6)
    _run(tmp_path / "b", 3)
    assert [p.name for p in checkpoint.checkpoints(tmp_path / "b")] == ["epoch-0002", "epoch-0003"]
    model, resumed = _run(tmp_path / "b", 6, resume=True)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(resumed.rows) == strip(whole.rows)
    for p, q in zip(model.parameters(), whole_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    _, history = _run(tmp_path / "c", 2, resume=True)
    assert [r["epoch"] for r in history.rows] == [1, 2]


def test_resume_needs_a_folder():
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _run(None, 2, resume=True)

"""Two processes under torchrun (DistributedDataParallel, gloo on CPU) train like one process.

Each process takes half of every global batch; DDP averages the gradients of
sum-over-half / global-batch-size * 2, so the two together take exactly the
single-process step. Only the order of float additions differs.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

RECIPE = """
name = "digits_ddp"
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [32]
[optim]
name = "sgd"
lr = 0.1
momentum = 0.9
[penalty]
l2 = 1e-3
[train]
epochs = 3
batch_size = 64
eval_train = 500
"""


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "torch.distributed.run"]


def _metrics(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_two_processes_match_one(tmp_path):
    recipe = tmp_path / "digits.toml"
    recipe.write_text(RECIPE)
    assert run_cli("train", str(recipe), "--out", str(tmp_path / "one")) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*_torchrun(), "--standalone", "--nproc_per_node=2", "-m", "regulab.cli", "train",
         str(recipe), "--out", str(tmp_path / "two")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss", "test_loss", "w_norm"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5), key
        for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
            assert abs(float(b[key]) - float(a[key])) <= 1 / 300, key  # at most one example
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["status"] == "completed"
    # only rank 0 wrote: one checkpoint folder, no stray temporary files
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert [p.name for p in (tmp_path / "two" / "checkpoints").iterdir()] == ["epoch-0003"]

"""The regulab command: the demo's run folder, documented keys, and bad input."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from regulab.demos import weight_decay as demo

SUMMARY_KEYS = {
    "lambda",
    "seeds",
    "w_norm_mean",
    "w_norm_std",
    "train_loss_mean",
    "train_loss_std",
    "test_loss_mean",
    "test_loss_std",
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert run_cli("demo", "--seeds", "2", "--epochs", "6", "--out", str(out)) == 0
    return out


def test_demo_writes_the_documented_run_folder(demo_run):
    assert sorted(p.name for p in demo_run.iterdir()) == [
        "config.json",
        "curves.png",
        "metrics.csv",
        "path.csv",
        "path.png",
        "report.md",
        "summary.json",
    ]
    summary = json.loads((demo_run / "summary.json").read_text())
    assert set(summary) == {"command", "status", "seconds", "results", "sweep"}
    assert summary["status"] == "completed"
    assert [r["lambda"] for r in summary["results"]] == [0.0, 3.0]
    assert all(set(r) == SUMMARY_KEYS for r in summary["results"])
    config = json.loads((demo_run / "config.json").read_text())
    assert config["settings"] == {
        "lambdas": [0.0, 3.0],
        "seeds": 2,
        "epochs": 6,
        "lr": 0.003,
        "batch_size": 5,
        "n_train": 20,
        "n_test": 100,
        "num_inputs": 200,
        "impl": "scratch",
        "device": "cpu",
        "sweep_grid": "0,3,logspace(-3,2,32)",
        "sweep_folds": 5,
    }
    assert {"regulab_version", "git_revision", "torch_version"} <= set(config)


def test_metrics_csv_matches_the_summary(demo_run):
    with (demo_run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["lambda", "seed", "epoch", "train_loss", "test_loss", "w_norm"]
    assert len(rows) == 2 * 2 * 6
    summary = json.loads((demo_run / "summary.json").read_text())["results"]
    finals = [float(r["w_norm"]) for r in rows if r["lambda"] == "3.0" and r["epoch"] == "6"]
    assert summary[1]["w_norm_mean"] == pytest.approx(sum(finals) / 2, rel=1e-12)


def test_report_and_figure(demo_run):
    text = (demo_run / "report.md").read_text()
    assert "| λ | seeds | ‖w‖ |" in text and "![" in text and "(curves.png)" in text
    assert (demo_run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_prints_the_table_and_report_path(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        run_cli("demo", "--seeds", "1", "--epochs", "2", "--lambdas", "0,1.5", "--out", str(out))
        == 0
    )
    printed = capsys.readouterr().out
    assert "1.5" in printed and "‖w‖" in printed
    assert f"Report: {out / 'report.md'}" in printed


def test_default_out_is_a_timestamped_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_cli("demo", "--seeds", "1", "--epochs", "1") == 0
    (made,) = (tmp_path / "runs").iterdir()
    assert made.name.startswith("demo-") and (made / "summary.json").exists()


LAMBDAS_ALLOWED = "distinct finite numbers >= 0"
POSITIVE_INT = "a positive integer"

# (arguments, the option named, the value given, what is allowed)
BAD = [
    (["--lambdas", "-1"], "--lambdas", "'-1'", LAMBDAS_ALLOWED),
    (["--lambdas", "0,abc"], "--lambdas", "'0,abc'", LAMBDAS_ALLOWED),
    (["--lambdas", "0,0"], "--lambdas", "'0,0'", LAMBDAS_ALLOWED),
    (["--lambdas", "nan"], "--lambdas", "'nan'", LAMBDAS_ALLOWED),
    (["--lambdas", "1e400"], "--lambdas", "'1e400'", LAMBDAS_ALLOWED),
    (["--epochs", "0"], "--epochs", "'0'", POSITIVE_INT),
    (["--epochs", "-3"], "--epochs", "'-3'", POSITIVE_INT),
    (["--seeds", "0"], "--seeds", "'0'", "an integer in [1, 10000]"),
    (["--seeds", "2.5"], "--seeds", "'2.5'", "an integer in [1, 10000]"),
    (["--batch-size", "0"], "--batch-size", "'0'", POSITIVE_INT),
    (["--batch-size", "21"], "batch_size", "21", "at most n_train = 20"),
    (["--lr", "0"], "--lr", "'0'", "a finite number > 0"),
    (["--impl", "keras"], "--impl", "'keras'", "'scratch', 'concise'"),
    (["--device", "toaster"], "--device", "'toaster'", "available on this machine"),
    (["--out", ""], "--out", "''", "a folder path"),
    (["--unknown"], "--unknown", "--unknown", "unrecognized"),
]


@pytest.mark.parametrize(("args", "option", "given", "allowed"), BAD)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path, capsys, args, option, given, allowed
):
    out = tmp_path / "run"
    assert run_cli("demo", "--out", str(out), *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert option in err and given in err and allowed in err
    assert not out.exists()


def test_divergence_is_one_line_exit_1_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert run_cli("demo", "--lambdas", "0,1000", "--seeds", "1", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "diverged" in err and "lam = 1000" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_refused(capsys):
    assert run_cli("demo", "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert "available on this machine (cpu)" in err and "'cuda'" in err


def test_non_empty_out_is_refused_and_overwrite_replaces_only_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_cli("demo", "--epochs", "1", "--seeds", "1", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "--overwrite" in err and str(out) in err
    assert run_cli("demo", "--epochs", "1", "--seeds", "1", "--out", str(out), "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "left alone" in err
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert run_cli("demo", "--epochs", "1", "--seeds", "1", "--out", str(out)) == 0
    first = (out / "config.json").read_text()
    args = ("demo", "--epochs", "2", "--seeds", "1", "--out", str(out), "--overwrite")
    assert run_cli(*args) == 0
    assert (out / "config.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_unwritable_out_is_refused(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run_cli("demo", "--out", str(blocker / "run")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "writable" in err


def test_interrupt_writes_nothing(tmp_path, monkeypatch, capsys):
    def interrupted(cfg, on_run=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run", interrupted)
    assert run_cli("demo", "--out", str(tmp_path / "run")) == 130
    assert "nothing was written" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_no_command_prints_help(capsys):
    assert run_cli() == 0
    assert "demo" in capsys.readouterr().out


def test_console_script_version_and_help():
    script = Path(sys.executable).with_name("regulab")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("regulab ")
    done = subprocess.run([script, "demo", "--help"], capture_output=True, text=True, check=True)
    for option in ("--lambdas", "--seeds", "--epochs", "--out", "--overwrite", "--impl"):
        assert option in done.stdout


def test_core_import_stays_light():
    """`import regulab` loads torch but none of the heavy extras (they load when used)."""
    heavy = "('matplotlib', 'rich', 'sklearn')"
    code = f"import sys, regulab; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

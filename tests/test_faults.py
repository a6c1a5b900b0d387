"""Scripted faults (issue 16): two runs racing for one folder, SIGKILL during `--overwrite`,
SIGTERM and Ctrl-C during a run, a full disk, a read-only or mounted `--out`, and the replays
of the defects the issue lists, each against the contract of tests/test_fuzz_cli.py.

Signals and races need real processes; everything else runs in-process. Mounting a small
tmpfs needs root (or an unprivileged mount namespace): where the machine allows neither,
those tests are skipped with the reason.
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import regulab
import test_fuzz_cli
from conftest import snapshot
from test_fuzz_cli import TINY, call, contract, sandbox, toml_text

# the fixtures of the fuzz suite: earlier runs; plots stubbed, no network, memory bounded
earlier = test_fuzz_cli.earlier
quiet_and_bounded = test_fuzz_cli.quiet_and_bounded

SRC = Path(regulab.__file__).resolve().parents[1]
FASHION = Path("/work/shared/data/fashion-mnist")
SLOW = {  # digits, an MLP that takes ~0.1 s an epoch: long enough to be signalled mid-run
    **TINY,
    "name": "slow",
    "model": {"name": "mlp", "hidden": [32]},
    "train": {"epochs": 300, "batch_size": 16, "eval_train": 100},
}


# `python -m regulab.cli` with the plots stubbed, as in-process (drawing is most of a tiny run)
LAUNCH = """
import sys, matplotlib.figure
from pathlib import Path
matplotlib.figure.Figure.savefig = lambda self, path, *a, **k: Path(path).write_bytes(b"PNG")
from regulab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start(*args, cwd: Path) -> subprocess.Popen:
    """`regulab *args` as a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *map(str, args)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120, new=False) -> None:
    """Wait until path exists (the run has started writing), failing if proc ended first;
    new: until it is the SLOW run's (an earlier run's file does not count)."""
    end = time.monotonic() + seconds
    while not path.exists() or (
        new and b'"slow"' not in path.with_name("config.json").read_bytes()
    ):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def hidden(folder: Path) -> list[str]:
    """Hidden leftovers of a run beside folder: .NAME.*.partial and .NAME.*.old."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def finished(proc: subprocess.Popen, seconds: float = 180) -> tuple[int, str]:
    _, err = proc.communicate(timeout=seconds)
    return proc.returncode, err


def one_line(code, err, command="train") -> None:
    problems = contract(command, code, err)
    assert not problems, problems


# --- races -----------------------------------------------------------------------------------


def test_two_trains_on_one_new_out_one_wins_whole(tmp_path):
    """Two `train` on the same new --out: one completes, the other is refused in one line, and
    the folder holds one run's files (its config, metrics and summary agree)."""
    recipes = []
    for name, epochs in (("first", 3), ("second", 4)):
        recipes.append(tmp_path / f"{name}.toml")
        train = {**TINY["train"], "epochs": epochs}
        recipes[-1].write_text(toml_text({**TINY, "name": name, "train": train}))
    out = tmp_path / "out"
    procs = [start("train", r, "--out", out, cwd=tmp_path) for r in recipes]
    results = [finished(p) for p in procs]
    for code, err in results:
        one_line(code, err)
    assert sorted(code for code, _ in results) == [0, 2], results
    config = json.loads((out / "config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    rows = (out / "metrics.csv").read_text().strip().splitlines()[1:]
    assert config["recipe"]["name"] == summary["variant"]
    assert len(rows) == config["recipe"]["train"]["epochs"] == summary["epochs"]
    assert hidden(out) == []


def test_two_resumes_of_one_folder(earlier, tmp_path):
    run = tmp_path / "stopped"
    shutil.copytree(earlier["stopped"], run)
    procs = [start("train", "--resume", run, cwd=tmp_path) for _ in range(2)]
    results = [finished(p) for p in procs]
    for code, err in results:
        one_line(code, err)
    assert sorted(code for code, _ in results) in ([0, 0], [0, 2]), results
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


# --- signals ---------------------------------------------------------------------------------


def test_sigkill_during_overwrite_then_the_next_command(earlier, tmp_path):
    """The earlier run is back byte-identical, or the new run is complete: never hidden."""
    out = tmp_path / "run"
    shutil.copytree(earlier["tiny"], out)
    before = snapshot(out)
    short = {**SLOW, "train": {**SLOW["train"], "epochs": 10}}  # the resume below is quick
    (tmp_path / "slow.toml").write_text(toml_text(short))
    proc = start("train", tmp_path / "slow.toml", "--out", out, "--overwrite", cwd=tmp_path)
    wait_for(out / "metrics.csv", proc, new=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    code, err = call(["train", "--resume", out], tmp_path)
    assert code in (0, 2), err
    assert hidden(out) == [], "the earlier run is hidden beside --out"
    done = json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert snapshot(out) == before or done


@pytest.mark.parametrize("command", ["train", "demo"])
def test_sigterm_exits_like_ctrl_c_and_leaves_no_partial_folder(tmp_path, command):
    (tmp_path / "slow.toml").write_text(toml_text(SLOW))
    out = tmp_path / "out"
    if command == "train":
        proc = start("train", tmp_path / "slow.toml", "--out", out, cwd=tmp_path)
        wait_for(out / "metrics.csv", proc)
    else:
        proc = start("demo", "--epochs", "100000", "--seeds", "1", "--out", out, cwd=tmp_path)
        time.sleep(0.5)
        while not hidden(out):
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    code, err = finished(proc)
    assert code == 130, err
    one_line(code, err, command)
    assert hidden(out) == []


def test_ctrl_c_of_train_says_the_run_can_be_resumed(tmp_path):
    (tmp_path / "slow.toml").write_text(toml_text(SLOW))
    out = tmp_path / "out"
    proc = start("train", tmp_path / "slow.toml", "--out", out, cwd=tmp_path)
    wait_for(out / "metrics.csv", proc)
    proc.send_signal(signal.SIGINT)
    code, err = finished(proc)
    assert code == 130
    one_line(code, err)
    assert "nothing was written" not in err and "--resume" in err


# --- a full disk, a read-only or mounted --out -----------------------------------------------


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A small tmpfs mounted at folder (root only), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of folder until about `leave` bytes are free."""
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    with open(folder / "filler", "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(free - leave, 0))


CHEAP = {  # command -> arguments that run in well under a second (plots stubbed)
    "train": ["{recipe}"],
    "demo": ["--epochs", "2", "--seeds", "1", "--grid", "0,1", "--folds", "2"],
    "constraints": ["--fractions", "0.5"],
    "compare": ["{earlier}"],
    "sweep": ["{recipe}", "--grid", "0,0.1"],
    "tune": ["{recipe}", "--budget", "1", "--configs", "2", "--space", "lr=log(0.01,0.1)"],
}


def cheap(command: str, box, recipe: Path) -> list:
    names = {"{recipe}": recipe, "{earlier}": box.runs["tiny"]}
    return [command, *(names.get(a, a) for a in CHEAP[command])]


FULL_DISK = ()  # fixed in issue 16


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=FULL_DISK) if c not in ("train", "tune") else c for c in sorted(CHEAP)],
)
def test_a_full_disk_is_one_line_and_keeps_the_earlier_run(earlier, command):
    with sandbox(earlier) as box, tmpfs(box.root / "disk", "size=2m") as disk:
        shutil.copytree(earlier["tiny"], disk / "earlier")
        (box.root / "tiny.toml").write_text(toml_text(TINY))
        fill(disk, leave=20_000)
        before = snapshot(disk)
        code, err = call([*cheap(command, box, box.root / "tiny.toml"), "--out", disk / "out"],
                         box.cwd)  # fmt: skip
        assert code in (1, 2), err
        one_line(code, err, command)
        after = snapshot(disk)
        assert {k: v for k, v in after.items() if not k.startswith("out")} == before


LATE_OUT = ()  # fixed in issue 16


@pytest.mark.parametrize(
    ("command", "where"),
    [pytest.param("train", "read-only", marks=LATE_OUT), ("train", "mount point"),
     ("demo", "read-only"), pytest.param("demo", "mount point", marks=LATE_OUT)],
)  # fmt: skip
def test_an_out_that_cannot_take_the_run_is_refused_first(earlier, command, where):
    with sandbox(earlier) as box:
        (box.root / "tiny.toml").write_text(toml_text(TINY))
        options = "ro,size=1m" if where == "read-only" else "size=1m"
        with tmpfs(box.root / "mnt", options) as mnt:
            out = mnt / "out" if where == "read-only" else mnt
            code, err = call([*cheap(command, box, box.root / "tiny.toml"), "--out", out],
                             box.cwd)  # fmt: skip
            one_line(code, err, command)
            if where == "read-only" or code != 0:  # an empty mount point may take the run
                assert code == 2 and out.name in err, err


# --- replays of the defects, in-process ----------------------------------------------


@pytest.mark.parametrize("problem", ["under a file", "name over 255 bytes", "dangling symlink"])
def test_train_refuses_an_out_it_cannot_write(earlier, problem):
    with sandbox(earlier) as box:
        (box.root / "tiny.toml").write_text(toml_text(TINY))
        (box.root / "file").write_text("x")
        out = {
            "under a file": box.root / "file" / "out",
            "name over 255 bytes": box.root / ("x" * 300),
            "dangling symlink": box.root / "link",
        }[problem]
        if problem == "dangling symlink":
            out.symlink_to(box.root / "nowhere" / "out")
        box.run("train", box.root / "tiny.toml", "--out", out)


@pytest.mark.parametrize("command", ["compare", "slim"])
def test_out_equal_to_the_input_is_refused(earlier, command):
    with sandbox(earlier) as box:
        run = box.runs["bn"]
        args = {
            "compare": ["compare", run],
            "slim": ["slim", "--from", run, "--finetune-epochs", "0", "--latency-repeats", "1"],
        }[command]
        code, err = box.run(*args, "--out", run, "--overwrite")  # out=None: nothing may change
        assert code == 2, err


def test_an_explicit_data_dir_is_used_or_refused(earlier, monkeypatch):
    if not (FASHION / "train-labels-idx1-ubyte.gz").exists() and not FASHION.is_dir():
        pytest.skip(f"no Fashion-MNIST in {FASHION}")
    monkeypatch.setenv("REGULAB_DATA_DIR", str(FASHION))
    with sandbox(earlier) as box:
        recipe = {**TINY, "data": {"name": "fashion_mnist", "download": False}}
        (box.root / "f.toml").write_text(toml_text(recipe))
        code, err = box.run("train", box.root / "f.toml", "--data-dir", box.root / "mistyped",
                            "--out", box.root / "out", out=box.root / "out")  # fmt: skip
        assert code in (1, 2) and "mistyped" in err


def test_a_huge_seed_count_is_refused_at_once(earlier):
    with sandbox(earlier) as box:
        (box.root / "tiny.toml").write_text(toml_text(TINY))
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, hard))  # a MemoryError, not a swap
        try:
            code, err = call(["train", box.root / "tiny.toml", "--seeds", "100000000000",
                              "--out", box.root / "out"], box.cwd)  # fmt: skip
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        one_line(code, err)
        assert code == 2

"""Run folders that cannot be turned against their owner (issue 16): claimed by one process,
--overwrite journaled across crashes, --out checked against the command's inputs and the
machine before the work, names that stay inside their folder, SIGTERM as Ctrl-C, write
errors as one line. The commands use tiny recipes (scikit-learn's digits, one epoch)."""

import errno
import json
import os
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from conftest import run_cli
from regulab import claims, cli, errors, runs
from regulab.errors import RunFolderError

SRC = Path(__file__).resolve().parents[1] / "src"
TINY = """
name = "tiny"
[data]
name = "digits"
[model]
name = "mlp"
hidden = [8]
[train]
epochs = 1
batch_size = 64
eval_train = 100
"""
RUN_CONFIG = json.dumps({"command": "demo", "regulab_version": "0.1.0"})


def snapshot(folder: Path) -> dict:
    """Every file under folder (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def one_error(capsys, code: int, *args) -> str:
    """Run the command; assert exit `code` and one line on stderr, no traceback; return it."""
    capsys.readouterr()
    assert run_cli(*args) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread than with OpenMP spinning on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished single train run of TINY, and its recipe file."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.toml").write_text(TINY)
    assert run_cli("train", str(root / "tiny.toml"), "--out", str(root / "run")) == 0
    return root


def earlier_run(folder: Path) -> dict:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(RUN_CONFIG)
    (folder / "result.txt").write_text("earlier")
    return snapshot(folder)


# --- names that become folders ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["", ".", "..", "/abs/path", "x/../../victim", "a\0b", "é" * 128])
def test_a_name_that_would_leave_its_folder_is_refused(name):
    with pytest.raises(RunFolderError, match="plain folder name"):
        runs.check_name(name, "a variant name")


@pytest.mark.parametrize("name", ["plain", "l2 0.1", "seed-3", "ratio-0.5", ".hidden", "x" * 255])
def test_a_plain_name_is_accepted(name):
    assert runs.check_name(name, "a variant name") == name


@pytest.mark.parametrize("variant", ["VICTIM", "x/../../victim"])
def test_a_variant_name_cannot_write_outside_out(tmp_path, capsys, variant):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text('{"mine": 1}')
    variant = variant.replace("VICTIM", str(victim))
    recipe = tmp_path / "evil.toml"
    recipe.write_text(TINY + f'[variants."{variant}"]\n[variants.plain]\n')
    before = snapshot(tmp_path)
    line = one_error(capsys, 2, "train", str(recipe), "--out", str(tmp_path / "out"))
    assert "variant name" in line and repr(variant) in line
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.toml", "victim"]


# --- one writer at a time --------------------------------------------------------------------


def test_a_claimed_folder_is_refused_to_a_second_run(trained, tmp_path, capsys):
    out = tmp_path / "out"
    with claims.claim(out):
        (tmp_path / "out").mkdir()  # the first run writes in place
        line = one_error(capsys, 2, "train", str(trained / "tiny.toml"), "--out", str(out))
        assert "being written by another regulab process" in line and f"pid {os.getpid()}" in line
        refused = pytest.raises(RunFolderError, match="another regulab process")
        with refused, runs.run_folder(out, overwrite=True):
            pass
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the lock went with the claim


def test_resume_and_overwrite_of_a_folder_being_written_are_refused(trained, tmp_path, capsys):
    run = trained / "run"
    before = snapshot(run)
    with claims.claim(run):
        line = one_error(capsys, 2, "train", "--resume", str(run))
        assert "being written" in line
        args = ("train", str(trained / "tiny.toml"), "--out", str(run), "--overwrite")
        assert "being written" in one_error(capsys, 2, *args)
    assert snapshot(run) == before


def test_a_lock_held_by_another_process_is_seen_and_dies_with_it(tmp_path):
    out = tmp_path / "out"
    code = (
        "import sys, time; from pathlib import Path; from regulab import claims\n"
        f"with claims.claim(Path({str(out)!r})):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(RunFolderError, match=f"pid {holder.pid}"):
            runs.checked_out(out)
    finally:
        holder.kill()
        holder.wait()
    with runs.run_folder(out) as tmp:  # SIGKILL released the lock
        (tmp / "x").write_text("")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- --overwrite across crashes --------------------------------------------------------------


def killed_while_replacing(out: Path, new_files: bool) -> None:
    """A process that sets the run at out aside for --overwrite, writes, and is SIGKILLed."""
    code = (
        "import os, signal; from pathlib import Path; from regulab import claims\n"
        f"out = Path({str(out)!r})\n"
        "with claims.claim(out), claims.replacing(out):\n"
        f"    if {new_files}:\n"
        "        out.mkdir(); (out / 'config.json').write_text('{}')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], env=env)
    assert done.returncode == -signal.SIGKILL


@pytest.mark.parametrize("new_files", [True, False])
def test_a_crash_during_overwrite_is_rolled_back_by_the_next_run(tmp_path, new_files):
    out = tmp_path / "out"
    before = earlier_run(out)
    killed_while_replacing(out, new_files)
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert any(name.endswith(".old") for name in hidden) and ".out.regulab-journal" in hidden
    with runs.run_folder(tmp_path / "other") as tmp:  # any run in the same parent settles it
        (tmp / "x").write_text("")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out"]


def test_resume_settles_an_interrupted_overwrite_first(tmp_path):
    out = tmp_path / "out"
    before = earlier_run(out)
    killed_while_replacing(out, new_files=True)
    runs.recover(out)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_overwrite_that_had_ended_is_completed(tmp_path):
    out = tmp_path / "out"
    earlier_run(out)
    old = claims.sibling(out, "old")
    os.rename(out, old)
    out.mkdir()
    (out / "new.txt").write_text("new")
    record = {"old": old.name, "new": out.name, "state": "done"}
    claims.journal_path(out).write_text(json.dumps(record))
    with claims.claim(out):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["new.txt"]


def test_train_overwrite_that_fails_puts_the_earlier_run_back(
    trained, tmp_path, capsys, monkeypatch
):
    from regulab.recipe import run as recipe_run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe_run, "train_one", interrupted)
    out = tmp_path / "out"
    before = earlier_run(out)
    args = ("train", str(trained / "tiny.toml"), "--out", str(out), "--overwrite")
    assert "the earlier run is back" in one_error(capsys, 130, *args)
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# --- stale leftovers -------------------------------------------------------------------------


def test_partial_folders_of_dead_processes_are_removed_by_the_next_run(tmp_path):
    dead = tmp_path / ".gone.0123abcd.partial"
    dead.mkdir()
    (dead / "config.json").write_text("{}")
    (tmp_path / ".gone.regulab-lock").write_text("12345\n")
    (tmp_path / ".tool.lock").write_text("another program's\n")
    theirs = tmp_path / ".notes.partial"  # not a name regulab makes
    theirs.mkdir()
    with claims.claim(tmp_path / "busy"):  # a live run, writing its partial folder
        (tmp_path / ".busy.89abcdef.partial").mkdir()
        with runs.run_folder(tmp_path / "new") as tmp:
            (tmp / "x").write_text("")
        assert (tmp_path / ".busy.regulab-lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".busy.89abcdef.partial",
                                                          ".notes.partial", ".tool.lock",
                                                          "new"]  # fmt: skip


# --- --out against the command's inputs ------------------------------------------------------


@pytest.mark.parametrize("where", ["RUN", "RUN/sub", "PARENT"])
def test_compare_cannot_write_over_what_it_reads(trained, capsys, where):
    run = trained / "run"
    out = {"RUN": run, "RUN/sub": run / "sub", "PARENT": trained}[where]
    before = snapshot(trained)
    line = one_error(capsys, 2, "compare", str(run), "--out", str(out), "--overwrite")
    assert "--out must not be, hold or lie inside" in line and "RUN_DIR" in line
    assert snapshot(trained) == before


def test_train_overwrite_cannot_remove_its_own_recipe(trained, tmp_path, capsys):
    out = tmp_path / "out"
    earlier_run(out)
    (out / "tiny.toml").write_text(TINY)
    before = snapshot(out)
    line = one_error(capsys, 2, "train", str(out / "tiny.toml"), "--out", str(out), "--overwrite")
    assert "RECIPE" in line
    assert snapshot(out) == before


def test_check_out_against_inputs_names_the_option():
    with pytest.raises(RunFolderError, match="'/a/b' lies inside --from '/a'"):
        runs.check_out_against_inputs(Path("/a/b"), [("--from", Path("/a"))])
    runs.check_out_against_inputs(Path("/a/bc"), [("--from", Path("/a/b"))])  # a sibling


# --- write problems, before the work ---------------------------------------------------------


def test_out_problems_are_one_line_before_training(trained, tmp_path, capsys, monkeypatch):
    recipe = str(trained / "tiny.toml")
    afile = tmp_path / "file"
    afile.write_text("")
    assert "which is a file" in one_error(capsys, 2, "train", recipe, "--out", str(afile / "x"))
    long = tmp_path / ("n" * 250)
    assert "its last at most 237" in one_error(capsys, 2, "train", recipe, "--out", str(long))
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    line = one_error(capsys, 2, "train", recipe, "--out", str(tmp_path / "link"))
    assert "symbolic link to nothing" in line
    monkeypatch.setattr(runs.os.path, "ismount", lambda p: Path(p) == tmp_path / "vol")
    line = one_error(capsys, 2, "train", recipe, "--out", str(tmp_path / "vol"))
    assert "mount point" in line and str(tmp_path / "vol" / "run") in line
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: usage(2**30, 2**30, 2**20))
    assert "only 1.0 MB free" in one_error(capsys, 2, "train", recipe, "--out", str(tmp_path / "o"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link"]


def test_a_read_only_file_system_is_refused_before_the_work(tmp_path, monkeypatch):
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path):
            self.f_flag = real(path).f_flag | os.ST_RDONLY

    monkeypatch.setattr(runs.os, "statvfs", ReadOnly)
    with pytest.raises(RunFolderError, match="read-only file system"):
        runs.checked_out(tmp_path / "out")


# --- errors while writing: one line, exit 1, results kept ------------------------------------


def test_a_full_disk_is_one_line_naming_the_file(trained, tmp_path, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "cmp"
    line = one_error(capsys, 1, "compare", str(trained / "run"), "--out", str(out))
    assert line.startswith("regulab compare: error: '") and "No space left on device" in line
    assert "config.json" in line
    assert list(tmp_path.iterdir()) == []


def test_results_that_cannot_be_published_are_kept_beside(trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    rename = os.rename

    def busy(src, dst):
        if Path(dst) == out:
            raise OSError(errno.EBUSY, "Device or resource busy", str(dst))
        rename(src, dst)

    monkeypatch.setattr(runs.os, "rename", busy)
    line = one_error(capsys, 1, "compare", str(trained / "run"), "--out", str(out))
    assert "Device or resource busy" in line and "the finished results are kept in" in line
    (kept,) = tmp_path.iterdir()
    assert kept.name.startswith("cmp.unpublished-") and str(kept) in line
    assert (kept / "report.md").is_file()


# --- signals ---------------------------------------------------------------------------------


def test_sigterm_is_an_interrupt(capsys, monkeypatch):
    def terminated(args, console):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(cli.command("demo"), "run", terminated)
    line = one_error(capsys, 130, "demo")
    assert line == "regulab demo: interrupted by SIGTERM; nothing was written"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back


def test_an_interrupted_train_says_how_to_resume(trained, tmp_path, capsys, monkeypatch):
    from regulab.recipe import run as recipe_run

    original = recipe_run.train_one

    def interrupted(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe_run, "train_one", interrupted)
    out = tmp_path / "out"
    line = one_error(capsys, 130, "train", str(trained / "tiny.toml"), "--out", str(out))
    assert "nothing was written" not in line
    assert f"kept in '{out}'" in line and f"regulab train --resume {out}" in line
    assert (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


class SafetensorError(Exception):
    """As safetensors reports a failed write: only as text."""


def test_a_full_disk_while_training_keeps_the_run_to_resume(trained, tmp_path, capsys, monkeypatch):
    from regulab import checkpoint

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left (os error 28)")

    monkeypatch.setattr(checkpoint, "save", full)
    out = tmp_path / "out"
    line = one_error(capsys, 1, "train", str(trained / "tiny.toml"), "--out", str(out))
    assert f"'{out}': No space left on device (reported by SafetensorError)" in line
    assert f"regulab train --resume {out}" in line
    assert (out / "config.json").is_file()


def test_only_the_machines_os_errors_are_mapped():
    assert errors.os_error(SafetensorError("... (os error 30)")).errno == errno.EROFS
    assert errors.os_error(OSError(errno.ENOSPC, "full"), where="/x").filename == "/x"
    assert errors.os_error(FileNotFoundError(errno.ENOENT, "gone")) is None  # a bug's, or yours
    assert errors.os_error(ValueError("bad")) is None

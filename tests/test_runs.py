"""Run folders: published whole on success, nothing left behind on failure."""

import json
import os
import re
import shutil
import subprocess

import pytest

from regulab import runs

RUN_CONFIG = json.dumps({"command": "demo", "regulab_version": "0.1.0"})


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_success_publishes_the_folder(tmp_path):
    out = tmp_path / "a" / "run"
    with runs.run_folder(out) as tmp:
        assert tmp != out and not out.exists()
        (tmp / "x.txt").write_text("1")
    assert (out / "x.txt").read_text() == "1"
    assert leftovers(out.parent) == []


def test_failure_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), runs.run_folder(out) as tmp:
        (tmp / "x.txt").write_text("1")
        raise RuntimeError("boom")
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_interrupt_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), runs.run_folder(out):
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_non_empty_folder_is_refused_and_kept(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(runs.RunFolderError, match="--overwrite"), runs.run_folder(tmp_path):
        pass
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_only_after_success(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(RUN_CONFIG)
    with pytest.raises(RuntimeError), runs.run_folder(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    with runs.run_folder(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert leftovers(tmp_path) == []


def test_overwrite_never_replaces_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    with (
        pytest.raises(runs.RunFolderError, match="left alone"),
        runs.run_folder(tmp_path, overwrite=True),
    ):
        pass
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("config", ["{}", '{"command": "build"}', "not json", "[1]"])
def test_a_config_json_that_regulab_did_not_write_is_not_a_run(tmp_path, config):
    (tmp_path / "config.json").write_text(config)
    (tmp_path / "main.py").write_text("print(1)")
    assert not runs.is_run_folder(tmp_path)
    with (
        pytest.raises(runs.RunFolderError, match="left alone"),
        runs.run_folder(tmp_path, overwrite=True),
    ):
        pass
    assert (tmp_path / "main.py").exists()


def test_a_run_published_meanwhile_by_another_process_is_never_replaced(tmp_path):
    out = tmp_path / "run"
    refused = pytest.raises(runs.RunFolderError, match="another program")
    with refused as caught, runs.run_folder(out) as tmp:
        (tmp / "mine.txt").write_text("")
        out.mkdir()  # another program puts its files there first
        (out / "theirs.txt").write_text("")
    assert sorted(p.name for p in out.iterdir()) == ["theirs.txt"]
    assert leftovers(tmp_path) == []
    (kept,) = [p for p in tmp_path.iterdir() if p != out]  # this run's results, beside
    assert (kept / "mine.txt").exists() and str(kept) in caught.value.__notes__[0]


def test_run_folder_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with runs.run_folder(tmp_path / "run") as tmp:
            (tmp / "x").write_text("")
    finally:
        os.umask(old)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o755


def test_parent_folders_made_for_a_failed_run_are_removed(tmp_path):
    with pytest.raises(RuntimeError), runs.run_folder(tmp_path / "a" / "b" / "run"):
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_dot_is_a_usable_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with runs.run_folder(runs.Path(".")) as tmp:
        (tmp / "x").write_text("")
    assert (tmp_path / "x").exists()


def test_empty_folder_is_accepted(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with runs.run_folder(out) as tmp:
        (tmp / "x").write_text("")
    assert (out / "x").exists()


def test_unusable_out_is_refused(tmp_path):
    afile = tmp_path / "file.txt"
    afile.write_text("")
    with pytest.raises(runs.RunFolderError, match="existing file"), runs.run_folder(afile):
        pass
    with (
        pytest.raises(runs.RunFolderError, match=r"lies under .* a file"),
        runs.run_folder(afile / "run"),
    ):
        pass


def test_default_run_dir_is_unique(tmp_path):
    first = runs.default_run_dir("demo", tmp_path)
    assert re.fullmatch(r"demo-\d{8}-\d{6}", first.name)
    first.mkdir()
    second = runs.default_run_dir("demo", tmp_path)
    assert second != first and second.name.startswith(first.name)


def test_environment_records_versions():
    env = runs.environment()
    assert env["regulab_version"] and env["torch_version"] and env["python_version"]
    assert {"git_revision", "argv", "created"} <= set(env)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_revision_of_a_real_checkout(tmp_path):
    def git(*args):
        return subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    source = pkg / "runs.py"
    source.write_text("x = 1\n")
    git("init", "-q")
    assert runs.git_revision(source) is None  # not tracked yet
    git("add", "pkg/runs.py")
    git("commit", "-qm", "c")
    head = git("rev-parse", "HEAD")
    assert runs.git_revision(source) == head
    source.write_text("x = 2\n")
    assert runs.git_revision(source) == head + "+dirty"
    stray = tmp_path / "other" / "runs.py"  # an untracked copy inside the repository
    stray.parent.mkdir()
    stray.write_text("")
    assert runs.git_revision(stray) is None
    assert re.fullmatch(r"[0-9a-f]{40}", head)

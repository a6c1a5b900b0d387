"""Run folders: published whole on success, nothing left behind on failure."""

import re

import pytest

from regulab import runs


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
    (out / "config.json").write_text("{}")
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
    with pytest.raises(runs.RunFolderError, match="writable"), runs.run_folder(afile / "run"):
        pass


def test_default_run_dir_is_unique(tmp_path):
    first = runs.default_run_dir("demo", tmp_path)
    assert re.fullmatch(r"demo-\d{8}-\d{6}", first.name)
    first.mkdir()
    second = runs.default_run_dir("demo", tmp_path)
    assert second != first and second.name.startswith(first.name)


def test_environment_records_versions():
    env = runs.environment()
    assert env["regulab_version"]
    rev = env["git_revision"]
    assert rev is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", rev)

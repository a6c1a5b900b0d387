"""Run folders: where every `regulab` command writes its config, metrics and report.

A run is written into a hidden temporary folder beside its destination and
renamed into place only when complete, so an interrupted or failed run leaves
nothing half-written and an existing folder is replaced only by a finished one.
"""

import csv
import errno
import io
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch

from regulab import __version__
from regulab.errors import RunFolderError


def default_run_dir(command: str, root: Path = Path("runs")) -> Path:
    """Return runs/COMMAND-YYYYmmdd-HHMMSS, with -2, -3, ... appended if that exists."""
    base = root / f"{command}-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def is_run_folder(path: Path) -> bool:
    """True if path holds a config.json that regulab wrote (it names command and version)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"command", "regulab_version"} <= config.keys()


def check_out(out: Path, overwrite: bool = False) -> None:
    """Raise RunFolderError if `out` cannot receive a run.

    A non-empty folder is replaced only with overwrite, and only if it is an
    earlier regulab run: --overwrite never deletes other work.
    """
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out must be a folder; '{out}' is an existing file")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise RunFolderError(
            f"--out must be a new or empty folder; '{out}' exists and is not empty "
            "(pass --overwrite to replace it)"
        )
    if not is_run_folder(out):
        raise RunFolderError(
            "--overwrite replaces only an earlier regulab run folder (its config.json names "
            f"the command and regulab_version); '{out}' is not one, so it is left alone: "
            "choose another --out"
        )


@contextmanager
def run_folder(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to write the run into; publish it as `out` on success.

    Checks `out` and that its parent is writable before anything runs. On an
    exception (or Ctrl-C) the temporary folder, and any parent folders made for
    it, are removed and `out` is untouched.
    """
    check_out(Path(out), overwrite)
    out = Path(os.path.abspath(out))  # so that "." and "runs/.." have a name and a parent
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.partial"
        tmp.mkdir()  # not mkdtemp: that ignores the umask and makes the run private (0700)
    except OSError as e:
        _remove_empty(made)
        raise RunFolderError(
            f"--out must be a writable folder; cannot write '{out}': {e.strerror}"
        ) from e
    try:
        yield tmp
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(made)
        raise


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename tmp to out.

    Without overwrite, rename() itself refuses a non-empty out, so a run that
    another process published there meanwhile is never replaced. With overwrite,
    the old run is moved aside and removed only once the new one is in place.
    """
    if not (overwrite and out.exists()):
        try:
            os.rename(tmp, out)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise RunFolderError(
                f"--out '{out}' was filled by another process while this run worked; "
                "this run's results were not written"
            ) from e
        return
    check_out(out, overwrite)  # it must still be a regulab run
    old = out.parent / f".{out.name}.{secrets.token_hex(4)}.old"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove folders, deepest first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def write_json(path: Path, data) -> None:
    """Write data as indented JSON with a trailing newline, atomically (see write_text)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text to a temporary sibling, then rename it over path: never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def environment() -> dict:
    """Versions and revision that identify the code a run used."""
    return {
        "regulab_version": __version__,
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "argv": sys.argv,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def git_revision(source: Path = Path(__file__)) -> str | None:
    """Commit of the git checkout that tracks `source` (this package), else None.

    '+dirty' is appended when files in source's folder differ from that commit. An
    untracked copy inside some other repository (an installed package in a .venv
    of a project) gets None rather than that project's commit.
    """
    here = source.parent

    def git(*args):
        done = subprocess.run(
            ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=5
        )
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        if git("ls-files", "--error-unmatch", source.name) is None:
            return None
        rev = git("rev-parse", "HEAD")
        if rev and git("status", "--porcelain", "--untracked-files=no", "--", "."):
            rev += "+dirty"
        return rev
    except (OSError, subprocess.SubprocessError):
        return None


def move_aside(out: Path) -> Path:
    """Rename an earlier run out of the way (--overwrite); `put_back` restores it."""
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    os.rename(out, old)
    return old


def put_back(old: Path, out: Path) -> None:
    """Replace the failed new run at out with the earlier run kept aside."""
    shutil.rmtree(out, ignore_errors=True)
    os.rename(old, out)


def csv_text(rows, columns) -> str:
    """rows (dicts) as CSV text with a header of columns; None is written as an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buf.getvalue()

"""Run folders: where every `regulab` command writes its config, metrics and report.

A run is written into a hidden temporary folder beside its destination and
renamed into place only when complete, so an interrupted or failed run leaves
nothing half-written and an existing folder is replaced only by a finished one.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch

from regulab import __version__


class RunFolderError(ValueError):
    """The requested output folder cannot be used; the message says why and what to do."""


def default_run_dir(command: str, root: Path = Path("runs")) -> Path:
    """Return runs/COMMAND-YYYYmmdd-HHMMSS, with -2, -3, ... appended if that exists."""
    base = root / f"{command}-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_out(out: Path, overwrite: bool = False) -> None:
    """Raise RunFolderError if `out` cannot receive a run.

    A non-empty folder is replaced only with overwrite, and only if it is an
    earlier run (it holds config.json): --overwrite never deletes other work.
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
    if not (out / "config.json").is_file():
        raise RunFolderError(
            f"--overwrite replaces only an earlier run folder (one with config.json); "
            f"'{out}' is not one, so it is left alone: choose another --out"
        )


@contextmanager
def run_folder(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to write the run into; publish it as `out` on success.

    Checks `out` and that its parent is writable before anything runs. On an
    exception (or Ctrl-C) the temporary folder is removed and `out` is untouched.
    """
    check_out(Path(out), overwrite)
    out = Path(os.path.abspath(out))  # so that "." and "runs/.." have a name and a parent
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        raise RunFolderError(
            f"--out must be a writable folder; cannot write '{out}': {e.strerror}"
        ) from e
    try:
        yield tmp
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, out: Path) -> None:
    """Rename tmp to out; an existing out is moved aside first and removed only afterwards."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data) -> None:
    """Write data as indented JSON with a trailing newline."""
    path.write_text(json.dumps(data, indent=2) + "\n")


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


def git_revision() -> str | None:
    """Commit of the regulab checkout this package runs from ('+dirty' if modified), else None."""
    here = Path(__file__).parent

    def git(*args):
        done = subprocess.run(
            ["git", "-C", str(here), *args], capture_output=True, text=True, timeout=5
        )
        return done.stdout.strip() if done.returncode == 0 else None

    try:
        # Only a checkout that tracks this very file counts: an installed copy
        # inside some other repository (a .venv in a project) must not borrow its commit.
        if git("ls-files", "--error-unmatch", Path(__file__).name) is None:
            return None
        rev = git("rev-parse", "HEAD")
        if rev and git("status", "--porcelain", "--untracked-files=no", "--", "."):
            rev += "+dirty"
        return rev
    except (OSError, subprocess.SubprocessError):
        return None

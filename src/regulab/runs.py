"""Run folders: where every `regulab` command writes its config, metrics and report.

A run is written into a hidden temporary folder beside its destination and
renamed into place only when complete (`run_folder`), or, for `regulab train`, which
can be resumed, in place (`in_place`). Either way the destination is checked first
(`checked_out`: names, place, room, the command's inputs) and claimed for the whole run
(`claims`): one writer at a time, and --overwrite keeps the earlier run until the new
one is finished, across crashes.
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
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import torch

from regulab import __version__, claims
from regulab.errors import RunFolderError


def default_run_dir(command: str, root: Path = Path("runs")) -> Path:
    """Return runs/COMMAND-YYYYmmdd-HHMMSS, with -2, -3, ... appended if that exists (or
    another run has claimed it)."""
    base = root / f"{command}-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = base, 1
    while path.exists() or claims.lock_path(path).exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


MIN_FREE_MB = 10  # a run folder needs at least this much free space to start
SUFFIX = len(".xxxxxxxx.partial") + 1  # the hidden siblings add this to --out's name
PLAIN = "a plain folder name (not empty, '.' or '..', no '/' or NUL, at most 255 bytes)"


def is_run_folder(path: Path) -> bool:
    """True if path holds a config.json that regulab wrote (it names command and version)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"command", "regulab_version"} <= config.keys()


def check_name(name, what: str) -> str:
    """Return name if it can be one path component (a variant, `seed-N`, `ratio-R`) that stays
    inside its folder; else RunFolderError naming `what`."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or os.sep in name
        or "\0" in name
        or len(os.fsencode(name)) > 255
    ):
        raise RunFolderError(f"{what} becomes a folder name and must be {PLAIN}; got {name!r}")
    return name


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


def checked_out(out: Path, overwrite: bool = False, inputs=(), *, resume=False) -> Path:
    """out as an absolute path, once everything that can be known before the work is checked:
    its names, its place (not under a file, not a dangling link, not a mount point), that
    its file system is writable and has room, that it overlaps no input of the command, and
    (unless resume) that it is new, empty, or an earlier run to overwrite."""
    out = given = Path(out)
    if out.is_symlink() and not out.exists():
        raise RunFolderError(f"--out '{out}' is a symbolic link to nothing ('{os.readlink(out)}')")
    out = Path(os.path.realpath(out))  # "." and "runs/.." get a name; links resolve
    for part, most in [(p, 255) for p in out.parts[1:-1]] + [(out.name, 255 - SUFFIX)]:
        if len(os.fsencode(part)) > most:
            raise RunFolderError(
                f"--out's folder names must be at most 255 bytes, its last at most {most} "
                f"(regulab writes hidden siblings named after it); '{part[:40]}...' has "
                f"{len(os.fsencode(part))}"
            )
    if not out.name:
        raise RunFolderError("--out must be a folder with a name; got the root folder '/'")
    _check_writable(out, resume)
    check_out_against_inputs(out, inputs)
    claims.refuse_if_claimed(out)
    if not resume:
        check_out(given, overwrite)  # its messages name --out as the user wrote it
    return out


def _check_writable(out: Path, resume: bool) -> None:
    """RunFolderError if the run could not write at out (a file in the way, a read-only or
    full file system, a mount point that cannot be renamed)."""
    there = out.parent
    while not there.exists() and not there.is_symlink():
        there = there.parent
    if not there.is_dir():
        raise RunFolderError(f"--out '{out}' lies under '{there}', which is a file, not a folder")
    if os.path.ismount(out) and not resume:
        raise RunFolderError(
            f"--out '{out}' is a mount point, which cannot be replaced by renaming; "
            f"write into a folder inside it, e.g. --out {out / 'run'}"
        )
    if os.statvfs(there).f_flag & os.ST_RDONLY:
        raise RunFolderError(f"--out '{out}' is on a read-only file system")
    for folder in (there, out) if resume else (there,):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise RunFolderError(f"--out must be writable; '{folder}' is not (permission denied)")
    free = shutil.disk_usage(there).free / 2**20
    if free < MIN_FREE_MB:
        raise RunFolderError(
            f"--out '{out}': only {free:.1f} MB free on its file system; a run needs at least "
            f"{MIN_FREE_MB} MB"
        )


def check_out_against_inputs(out: Path, inputs) -> None:
    """RunFolderError if out is, holds or lies inside an input of the command: inputs are
    (option, path) pairs, such as ("RUN_DIR", run) or ("--from", run). An input folder whose
    --overwrite a crash interrupted is settled first (claims.settle)."""
    out = Path(os.path.realpath(out))
    for option, path in inputs:
        path = Path(os.path.realpath(path))
        claims.settle_unclaimed(path)
        if out == path or out in path.parents or path in out.parents:
            how = "is" if out == path else "lies inside" if path in out.parents else "holds"
            raise RunFolderError(
                f"--out must not be, hold or lie inside what the command reads; '{out}' {how} "
                f"{option} '{path}': choose another --out"
            )


def recover(folder: Path) -> None:
    """Complete or roll back an interrupted --overwrite of folder, unless it is being written."""
    claims.settle_unclaimed(Path(os.path.realpath(folder)))


@contextmanager
def run_folder(out: Path, overwrite: bool = False, inputs=()) -> Iterator[Path]:
    """Yield a temporary folder to write the run into; publish it as `out` on success.

    Everything `checked_out` checks is checked, and out is claimed (`claims.claim`) for the
    whole run, before anything runs. On an exception (or Ctrl-C) the temporary folder, and
    any parent folders made for it, are removed and `out` is untouched. If publishing fails,
    the finished results are kept beside out (the error says where).
    """
    out = checked_out(out, overwrite, inputs)
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    published = False
    try:
        _make(out.parent)
        with claims.claim(out):
            check_out(out, overwrite)  # again, under the lock
            tmp = claims.sibling(out, "partial")
            _make(tmp, exist_ok=False)  # not mkdtemp: that ignores the umask (0700)
            try:
                yield tmp
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _publish_or_keep(tmp, out, overwrite)
            published = True
    finally:
        if not published:
            _remove_empty(made)


@contextmanager
def in_place(out: Path, *, overwrite=False, resume=False, inputs=()) -> Iterator[Path]:
    """Claim out for a run written in place (`regulab train`, so that it can be resumed);
    yield its absolute path. With overwrite an earlier run there is set aside under a journal
    (`claims.replacing`): removed once the block ends, put back if it raises or dies."""
    out = checked_out(out, overwrite, inputs, resume=resume)
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # deepest first
    with ExitStack() as stack:
        try:
            _make(out.parent)
            stack.enter_context(claims.claim(out))
        except BaseException:
            _remove_empty(made)
            raise
        if not resume:
            check_out(out, overwrite)  # again, under the lock
            if overwrite and out.is_dir() and any(out.iterdir()):
                stack.enter_context(claims.replacing(out))
        yield out


def _make(folder: Path, exist_ok: bool = True) -> None:
    """mkdir (with parents), as RunFolderError naming the folder."""
    try:
        folder.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as e:
        raise RunFolderError(
            f"--out must be a writable folder; cannot write '{folder}': {e.strerror}"
        ) from e


def _publish_or_keep(tmp: Path, out: Path, overwrite: bool) -> None:
    """Publish tmp as out; if that fails, keep the finished results beside out, visibly, and
    say where in a note on the error."""
    try:
        _publish(tmp, out, overwrite)
    except (OSError, RunFolderError) as e:
        kept = out.with_name(f"{out.name}.unpublished-{tmp.name.split('.')[-2]}")
        try:
            os.rename(tmp, kept)
        except OSError:
            kept = tmp
        e.add_note(f"the finished results are kept in '{kept}'")
        raise


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename tmp to out.

    Without overwrite, rename() itself refuses a non-empty out, so a run that another
    program put there meanwhile is never replaced. With overwrite, the old run is set aside
    under a journal and removed only once the new one is in place.
    """
    if not (overwrite and out.exists()):
        try:
            os.rename(tmp, out)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise RunFolderError(
                f"--out '{out}' was filled by another program while this run worked"
            ) from e
        return
    check_out(out, overwrite)  # it must still be a regulab run
    with claims.replacing(out):
        os.rename(tmp, out)


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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file
            raise OSError(e.errno, e.strerror, str(path)) from e
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


def csv_text(rows, columns) -> str:
    """rows (dicts) as CSV text with a header of columns; None is written as an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buf.getvalue()

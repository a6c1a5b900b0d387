"""Claiming a run folder: one writer at a time, and an --overwrite that a crash cannot lose.

A run claims its destination OUT with an exclusive lock (`fcntl.flock`) on the hidden
file `.OUT.regulab-lock` beside it, held for the whole run: a second regulab process
that wants OUT (a second `train --out OUT`, `--resume OUT`, `--overwrite` of it) is
refused in one line. The lock dies with its process: a killed run never blocks the next.

`--overwrite` sets the earlier run aside as `.OUT.HEX.old` and writes the journal
`.OUT.regulab-journal` first ("the old run is at X, the new one at OUT"). Whoever next
claims OUT, or any run in the same parent folder, completes the move (the new run had
ended) or rolls it back (it had not): a crash never leaves the earlier run hidden. That
sweep of the parent also removes the `.partial` folders and locks of processes that died.
"""

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from regulab.errors import RunFolderError

try:
    import fcntl
except ImportError:  # Windows: no locks; everything else works as before
    fcntl = None

WAIT = 1.0  # seconds a claim waits for a lock held a moment (by another run's sweep)
HIDDEN = re.compile(
    r"^\.(?P<name>.+?)(?:\.(?P<tag>[0-9a-f]{8})\.(?:partial|old)|\.regulab-(?:lock|journal))$"
)


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.regulab-lock"


def journal_path(out: Path) -> Path:
    return out.parent / f".{out.name}.regulab-journal"


def sibling(out: Path, kind: str) -> Path:
    """A new hidden name beside out: `.OUT.HEX.partial` (kind "partial") or `.OUT.HEX.old`."""
    return out.parent / f".{out.name}.{secrets.token_hex(4)}.{kind}"


@contextmanager
def claim(out: Path) -> Iterator[None]:
    """Hold out's lock for the block; first settle an interrupted --overwrite of out and
    sweep the parent of what dead processes left. RunFolderError if another process has it."""
    fd = _lock(out, wait=WAIT)
    if fd is None:
        raise RunFolderError(
            f"--out '{out}' is being written by another regulab process ({_holder(out)}); "
            "wait until it ends, or choose another --out"
        )
    try:
        settle(out)
        sweep(out.parent, mine=out.name)
        yield
    finally:
        _unlock(out, fd)


def _lock(out: Path, wait: float) -> int | None:
    """An open descriptor of out's lock file, locked; None if another process holds it."""
    if fcntl is None:
        return -1
    path, deadline = lock_path(out), time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderError(
                f"--out must be in a writable folder; cannot write '{path}': {e.strerror}"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file that its last holder removed while we waited for it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _unlock(out: Path, fd: int) -> None:
    if fd < 0:
        return
    lock_path(out).unlink(missing_ok=True)  # while still held: nobody locks a removed file
    os.close(fd)


def _holder(out: Path) -> str:
    try:
        pid = lock_path(out).read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "its lock is held"


def refuse_if_claimed(out: Path) -> None:
    """RunFolderError if a live process holds out's lock (checked at once, not waited for)."""
    if fcntl is None or not out.parent.is_dir():
        return
    fd = _lock(out, wait=0)
    if fd is None:
        raise RunFolderError(
            f"--out '{out}' is being written by another regulab process ({_holder(out)}); "
            "wait until it ends, or choose another --out"
        )
    _unlock(out, fd)


def settle_unclaimed(out: Path) -> None:
    """`settle` out (a folder a command reads, say) unless a live process holds its lock."""
    if fcntl is None or not journal_path(out).exists():
        return
    fd = _lock(out, wait=0)
    if fd is not None:
        try:
            settle(out)
        finally:
            _unlock(out, fd)


@contextmanager
def replacing(out: Path) -> Iterator[Path]:
    """Set the earlier run at out aside for the block (journaled), yielding where it is;
    remove it once the block ends, put it back if the block raises (or the process dies)."""
    old = sibling(out, "old")
    _write_journal(out, {"old": old.name, "new": out.name, "state": "moving"})
    os.rename(out, old)
    try:
        yield old
    except BaseException:
        _roll_back(out, old)
        raise
    _write_journal(out, {"old": old.name, "new": out.name, "state": "done"})
    shutil.rmtree(old, ignore_errors=True)
    journal_path(out).unlink(missing_ok=True)


def settle(out: Path) -> None:
    """Complete (state "done") or roll back ("moving") an --overwrite of out that a crash
    interrupted, as its journal says. The caller holds out's lock."""
    journal = journal_path(out)
    try:
        record = json.loads(journal.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        record = None
    name = record.get("old") if isinstance(record, dict) else None
    if not (isinstance(name, str) and HIDDEN.match(name) and name.startswith(f".{out.name}.")):
        journal.unlink(missing_ok=True)  # not a journal regulab wrote: nothing to trust in it
        return
    old = out.parent / name
    if record.get("state") == "done" or not old.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        _roll_back(out, old)
    journal.unlink(missing_ok=True)


def _roll_back(out: Path, old: Path) -> None:
    """The new run at out did not finish: remove it and put the earlier run back."""
    if out.is_symlink() or out.is_file():
        out.unlink()
    else:
        shutil.rmtree(out, ignore_errors=True)
    os.rename(old, out)
    journal_path(out).unlink(missing_ok=True)


def _write_journal(out: Path, record: dict) -> None:
    journal = journal_path(out)
    tmp = journal.with_name(f"{journal.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, journal)


def sweep(parent: Path, mine: str | None = None) -> None:
    """Settle the journals and remove the `.partial` folders and lock files that processes
    which died left in parent (those whose lock nobody holds). `mine`: the name whose lock
    the caller holds; its leftovers are stale too."""
    try:
        names = {m["name"] for p in parent.iterdir() if (m := HIDDEN.match(p.name))}
    except OSError:
        return
    for name in sorted(names):
        out = parent / name
        if name == mine:
            _remove_partials(out)
            continue
        fd = _lock(out, wait=0) if fcntl is not None else None
        if fd is None:
            continue  # alive (or, without fcntl, unknowable): leave it
        try:
            settle(out)
            _remove_partials(out)
        finally:
            _unlock(out, fd)


def _remove_partials(out: Path) -> None:
    for path in out.parent.glob(f".{glob_escape(out.name)}.*.partial"):
        m = HIDDEN.match(path.name)
        if m and m["name"] == out.name and m["tag"]:
            shutil.rmtree(path, ignore_errors=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)

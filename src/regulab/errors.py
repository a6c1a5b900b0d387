"""Every user-facing exception of regulab, in one place (as scikit-learn's `exceptions.py`).

Each message names the parameter, what is allowed and what was given. The command
line maps them to exit codes in one table (`regulab.cli.EXIT_CODES`): bad input
exits 2, a run that could not finish exits 1.
"""


class UsageError(ValueError):
    """Command-line settings that passed the parser but not the command's own checks."""


class RecipeError(ValueError):
    """A recipe or override that cannot be used; the message names the file and key."""


class RunFolderError(ValueError):
    """The requested output folder cannot be used; the message says why and what to do."""


class IdxError(ValueError):
    """A file that is not a valid IDX file; the message names the file and the fault."""


class DataUnavailable(OSError):
    """A data set's files are missing, unreadable or corrupt, or no mirror gave them.

    The message names the folder or file and says how to supply them.
    """


class DownloadError(DataUnavailable):
    """No mirror gave a file with the right md5; the message lists each URL and its fault."""


class TrainingDiverged(RuntimeError):
    """The training loss or the weights stopped being finite; `epoch` says when (1-based)."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch


class NothingToChoose(ValueError):
    """Every strength diverged: no validation loss to choose by."""


class RunFailed(RuntimeError):
    """A run could not finish for a reason other than divergence (a Ray trial failed, say)."""


# what the machine, not regulab or your code, gets wrong while a run writes its files
MACHINE_ERRNOS = {"ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EBUSY", "EACCES", "EPERM", "EIO",
                  "ENAMETOOLONG", "EMFILE", "ENFILE", "EXDEV", "ENOTDIR", "ESTALE"}  # fmt: skip


def os_error(e: BaseException, where=None) -> OSError | None:
    """The machine's OSError behind e (an errno of MACHINE_ERRNOS): e itself, or the one a
    library reported only as text (safetensors' SafetensorError ends "(os error 28)" on a
    full disk); None otherwise. `where` names the file or folder when the error does not."""
    import errno
    import os
    import re

    if isinstance(e, OSError):
        found = e
    elif code := re.search(r"\(os error (\d+)\)\s*$", str(e)):
        number = int(code[1])
        found = OSError(number, f"{os.strerror(number)} (reported by {type(e).__name__})")
    else:
        return None
    if errno.errorcode.get(found.errno) not in MACHINE_ERRNOS:
        return None
    if found.filename is None and where is not None:
        found = OSError(found.errno, found.strerror, str(where))
    return found

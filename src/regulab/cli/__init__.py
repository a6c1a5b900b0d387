"""The `regulab` command: parse, call one function, print; the run folder is written below.

One module per command (`regulab.cli.demo`, `.train`, ...), none importing
another; each has `HELP`, `add_arguments(parser)` and `run(args, console)`.
Errors are mapped to exit codes in one table, `EXIT_CODES`: bad input prints
one line naming the option, what is allowed and what was given, and exits 2;
a run that could not finish exits 1 (a full disk, a read-only file system: one line
naming the file and the reason); Ctrl-C and SIGTERM exit 130. A note on the error
(`add_note`: where a run was kept, how to resume it) replaces "nothing was written".
The parser imports no torch, so `regulab --help` and `regulab COMMAND --help` appear
at once.
"""

import importlib
import signal
import sys
import threading
from contextlib import contextmanager

from regulab import __version__, errors
from regulab.cli._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Parser

COMMANDS = ("demo", "constraints", "train", "compare", "sweep", "slim", "tune")

# exception -> (exit code, what follows the message); the first match wins
EXIT_CODES = (
    ((errors.UsageError, errors.RunFolderError, errors.RecipeError), EXIT_USAGE, ""),
    (errors.DataUnavailable, EXIT_FAILED, ""),
    ((errors.NothingToChoose, errors.TrainingDiverged, errors.RunFailed), EXIT_FAILED,
     "; nothing was written"),
    (OSError, EXIT_FAILED, "; the run could not finish"),  # errors.MACHINE_ERRNOS only
)  # fmt: skip


def command(name: str):
    """The module of command `name` (imported on use: the parser needs only its options)."""
    return importlib.import_module(f"regulab.cli.{name}")


def build_parser() -> Parser:
    """The `regulab` argument parser with one subparser per command."""
    parser = Parser(prog="regulab", description="Regularization in deep learning, done correctly.")
    parser.add_argument("--version", action="version", version=f"regulab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = command(name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `regulab` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # logs and pipes: wide enough that tables are not cut
        console = Console(width=160)
    try:
        with sigterm_as_interrupt():
            return command(args.command).run(args, console)
    except KeyboardInterrupt as e:
        how = f" by {e.args[0]}" if e.args else ""
        print(f"regulab {args.command}: interrupted{how}; {_outcome(e)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as caught:
        machine = errors.os_error(caught)  # a full disk, a read-only file system, ...
        e = machine or caught
        for kinds, code, tail in EXIT_CODES:
            if isinstance(e, kinds) and (kinds is not OSError or machine is not None):
                notes = getattr(e, "__notes__", None) or getattr(caught, "__notes__", None)
                tail = f"; {'; '.join(notes)}" if notes else tail
                print(f"regulab {args.command}: error: {_message(e)}{tail}", file=sys.stderr)
                return code
        raise


def _message(e: Exception) -> str:
    """The error's one line: an OSError as 'PATH: reason'."""
    if isinstance(e, OSError) and not isinstance(e, errors.DataUnavailable) and e.strerror:
        where = f"'{e.filename}'" + (f" -> '{e.filename2}'" if e.filename2 else "")
        return f"{where}: {e.strerror}" if e.filename else e.strerror
    return str(e)


def _outcome(e: BaseException) -> str:
    notes = getattr(e, "__notes__", None)
    return "; ".join(notes) if notes else "nothing was written"


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a timeout, `docker stop`, Slurm) raises KeyboardInterrupt("SIGTERM") in the
    main thread, so that a run stops as at Ctrl-C: cleaned up, or kept to resume."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

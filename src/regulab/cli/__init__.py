"""The `regulab` command: parse, call one function, print; the run folder is written below.

One module per command (`regulab.cli.demo`, `.train`, ...), none importing
another; each has `HELP`, `add_arguments(parser)` and `run(args, console)`.
Errors are mapped to exit codes in one table, `EXIT_CODES`: bad input prints
one line naming the option, what is allowed and what was given, and exits 2;
a run that could not finish exits 1; Ctrl-C exits 130. The parser imports no
torch, so `regulab --help` and `regulab COMMAND --help` appear at once.
"""

import importlib
import sys

from regulab import __version__, errors
from regulab.cli._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Parser

COMMANDS = ("demo", "constraints", "train", "compare", "sweep", "slim", "tune")

# exception -> (exit code, what follows the message); the first match wins
EXIT_CODES = (
    ((errors.UsageError, errors.RunFolderError, errors.RecipeError), EXIT_USAGE, ""),
    (errors.DataUnavailable, EXIT_FAILED, ""),
    ((errors.NothingToChoose, errors.TrainingDiverged, errors.RunFailed), EXIT_FAILED,
     "; nothing was written"),
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
        return command(args.command).run(args, console)
    except KeyboardInterrupt:
        print(f"regulab {args.command}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        for kinds, code, tail in EXIT_CODES:
            if isinstance(e, kinds):
                print(f"regulab {args.command}: error: {e}{tail}", file=sys.stderr)
                return code
        raise

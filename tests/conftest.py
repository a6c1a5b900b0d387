"""Shared test helpers."""

from regulab import cli


def run_cli(*args):
    """Run the regulab command in-process; return its exit code (SystemExit included)."""
    try:
        return cli.main(list(args))
    except SystemExit as e:
        return e.code

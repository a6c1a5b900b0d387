"""Shared test helpers."""

import os
import tempfile

import pytest
import torch

from regulab import cli

# Hypothesis keeps caches in ./.hypothesis unless told otherwise: not in the checkout
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "regulab-hypothesis")
)


def run_cli(*args):
    """Run the regulab command in-process; return its exit code (SystemExit included)."""
    try:
        return cli.main(list(args))
    except SystemExit as e:
        return e.code


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread than with OpenMP spinning on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snapshot(root) -> dict:
    """Every entry under root: relative path -> its bytes (files), its target (links) or None.

    Two equal snapshots mean nothing under root was added, removed or changed.
    """
    from pathlib import Path

    root = Path(root)
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = ("link", str(path.readlink()))
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = None
    return found


def fuzz_settings(max_examples: int):
    """Hypothesis settings of the fuzz suite: the same cases on every run, no database.

    REGULAB_FUZZ=explore draws ten times as many cases at random and shrinks failures.
    """
    from hypothesis import HealthCheck, Phase, settings

    explore = os.environ.get("REGULAB_FUZZ") == "explore"
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if explore else [])
    return settings(
        max_examples=max_examples * (10 if explore else 1),
        deadline=None,
        derandomize=not explore,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )

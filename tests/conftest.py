"""Shared test helpers."""

import pytest
import torch

from regulab import cli


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

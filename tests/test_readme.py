"""The README's Python examples run, and the copies there agree with the library."""

import contextlib
import io
import re
from pathlib import Path

import torch

from regulab import synthetic_linear, train_concise, train_scratch

README = Path(__file__).parent.parent / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_examples_run_and_the_copies_match_the_library():
    namespace = {}
    blocks = python_blocks()
    assert len(blocks) == 14
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
    lines = printed.getvalue().splitlines()
    # what the README's comments say these examples print
    for expected in (
        "decay: weight_decay=0.0005, 2 tensors, 203,264 parameters",
        "no_decay: weight_decay=0, 4 tensors, 778 parameters",
        "12",
        "DropBlock2d(p=0.1, block_size=3) Dropout(p=0.5)",
        "0.5 1 3",
        "0.001 5 0.933",  # the sweep examples
        "['0.957', '0.956', '0.939'] Sequential",
        "24 48 True True",  # the slimming example: exact count, pruned == masked, smaller
    ):
        assert expected in lines
    assert any(line.startswith("0.0707") for line in lines)
    assert lines[lines.index("24 48 True True") + 1] == "True"  # the export round trip
    # the fit example: early stopping restored an epoch, and digits are easy
    _, best, accuracy = next(line for line in lines if line.startswith("completed ")).split()
    assert 1 <= int(best) <= 30 and float(accuracy) >= 0.95
    g = torch.Generator().manual_seed(1)
    x, y = synthetic_linear(20, generator=g)
    w0 = torch.randn(200, generator=g)
    for copy, ours in (
        (namespace["train_scratch_copy"], train_scratch),
        (namespace["train_concise_copy"], train_concise),
    ):
        w, b = copy(x, y, 3.0, w0, seed=4)
        fit = ours((x, y), None, 3.0, w0=w0, seed=4)
        assert (w - fit.w).abs().max() < 1e-5
        assert abs(float(b - fit.b)) < 1e-5


def test_readme_table_is_what_the_default_demo_prints():
    from regulab import demo, report

    summary = demo.summarize(demo.run(demo.DemoConfig()))
    readme_lines = {" ".join(line.split()) for line in README.read_text().splitlines()}
    for row in report.table_rows(summary):
        assert " ".join(" ".join(row).split()) in readme_lines


def test_readme_constraints_table_is_what_the_default_command_computes():
    from regulab import equivalence

    rows, _ = equivalence.experiment()
    readme_lines = {" ".join(line.split()) for line in README.read_text().splitlines()}
    for row in equivalence._table_rows(rows):
        assert "│ " + " │ ".join(row) + " │" in readme_lines

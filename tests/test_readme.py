"""The README's Python examples run, and the copies there agree with the library."""

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
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
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

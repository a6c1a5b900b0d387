"""The package's shape (docs/architecture.md): imports point down only, help imports no torch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from regulab.cli import COMMANDS

SRC = Path(__file__).resolve().parents[1] / "src" / "regulab"

# Lowest first; a module may import its own layer and the layers below it.
LAYERS = (
    ("errors", ("errors", "_checks")),
    ("library", ("penalties", "groups", "constraints", "layers", "normalization", "schedules",
                 "early_stopping", "augment", "ridge_regression", "bn_sparsity",
                 "linear_regression", "label_smoothing", "mixing")),
    ("engine", ("models", "data", "metrics", "data_checks", "checkpoint", "distributed", "train",
                "train_step", "train_state", "runs", "claims", "run_files", "tables")),
    ("recipe", ("recipe",)),
    ("capabilities", ("sweep", "slim", "tune")),
    ("demos", ("demos",)),
    ("cli", ("cli",)),
)  # fmt: skip
RANK = {top: rank for rank, (_, tops) in enumerate(LAYERS) for top in tops}


def modules():
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts == ("__init__",):
            continue  # the package face: lazy re-exports only
        yield path, parts[0]


def imported(path: Path):
    """(line, top-level regulab module) of every regulab import in path, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = node.module.split(".")
            if names[0] != "regulab":
                continue
            if len(names) > 1:
                yield node.lineno, names[1]
            else:
                for alias in node.names:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "regulab" and len(names) > 1:
                    yield node.lineno, names[1]


def test_every_module_belongs_to_a_layer():
    assert {top for _, top in modules()} <= RANK.keys()


def test_imports_point_down_only():
    upward = []
    for path, top in modules():
        for line, target in imported(path):
            if target == "__version__":
                continue  # the package face's version string
            if RANK[target] > RANK[top]:
                upward.append(f"{path.relative_to(SRC)}:{line} imports regulab.{target}")
    assert upward == []


def test_no_module_uses_another_modules_private_names():
    # the grep, less dunder methods (super().__init__) and torch's multi-tensor
    # kernels (torch._foreach_*, as torch.optim uses them: no public name exists)
    pattern = re.compile(r"import _[a-z]|\.(?!_[a-z_]+__\()(?!_foreach_)_[a-z_]*\(")
    found = [
        f"{path.relative_to(SRC)}:{i}: {line.strip()}"
        for path, _ in modules()
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and "_checks" not in line and "cli._common" not in line
    ]
    assert found == []


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_imports_no_torch(argv):
    code = (
        "import sys\n"
        "from regulab.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'matplotlib', 'ray') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: regulab" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_import_regulab_is_light_and_its_names_resolve():
    code = (
        "import sys, regulab\n"
        "print('torch' in sys.modules)\n"
        "regulab.fit, regulab.Penalty, regulab.TrainingDiverged\n"
        "print(all(getattr(regulab, n) is not None for n in regulab.__all__))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]


def test_architecture_doc_names_every_module_of_every_layer():
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    missing = [top for top in RANK if top not in doc]
    missing += [
        f"{path.parent.name}/{path.name}"
        for path in SRC.glob("*/*.py")
        if path.stem not in ("__init__", "__main__") and path.stem not in doc
    ]
    assert missing == []


def test_the_schemas_names_are_the_engines():
    # the schema stays torch-free (the CLI's help reads it), so it names the losses itself
    from regulab import metrics
    from regulab.recipe import schema

    assert tuple(metrics.LOSSES) == schema.LOSSES
    assert set(schema.CLASSIFICATION_DATASETS) | set(schema.REGRESSION_DATASETS) == set(
        schema.DATASETS
    )


def test_no_exported_name_is_also_a_submodule():
    # a submodule, once imported, is an attribute of the package and would hide the
    # lazily exported name of the same spelling (regulab.ridge was once both)
    import regulab

    submodules = {path.stem for path in SRC.glob("*.py")} | {p.name for p in SRC.iterdir()}
    assert set(regulab.__all__) & submodules == set()

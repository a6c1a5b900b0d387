"""Every python block of README.md and docs/*.md runs and prints what the docs show.

The convention, so that a new example needs no edit here:

- Each ```python block runs on its own: a fresh namespace, a fresh temporary working
  folder holding a link to the repository's `recipes/`, torch's random state put back
  afterwards. A block must not raise.
- A ```text block right after it (with only blank lines, or a line "Output:", between)
  is what the block must print. Lines are compared exactly, trailing spaces aside;
  "..." stands for any text, across lines too (doctest's ELLIPSIS).

A ```text block anywhere else is an error (it would check nothing).

A ```console block runs too: each "$ regulab ..." line in turn, in one fresh folder
(holding links to `recipes/` and `examples/`), and the lines after it, up to the next
"$ " line, are what that command must print (with "...").

Shell blocks are not run, with these exceptions, which also need no edit here:
- a "$ regulab ..." line followed by "regulab CMD: error: ..." runs, and must print
  that error (with "...") and write nothing;
- `regulab demo`, `constraints`, the README's `sweep` and `tune` run once each: what they
  print must be what the docs show, and the files and summary.json keys their
  sections of docs/commands.md list must be what they write, and the other way round.
Every relative link must lead to a file and heading that exist.
"""

import contextlib
import io
import itertools
import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from regulab import synthetic_linear, train_concise, train_scratch

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHARED_DATA = "/work/shared/data"  # Fashion-MNIST, where this project's machines keep it
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def fenced_blocks(path: Path) -> list[dict]:
    """Every fenced block of a Markdown file: its language, code, first code line, span."""
    text = path.read_text()
    return [
        {
            "lang": m.group(1),
            "code": m.group(2),
            "line": text.count("\n", 0, m.start()) + 2,
            "start": m.start(),
            "end": m.end(),
        }
        for m in FENCE.finditer(text)
    ]


def examples() -> list:
    """A pytest param (path, first line, code, expected output or None) per python block."""
    found = []
    for path in DOCS:
        text = path.read_text()
        blocks = fenced_blocks(path)
        for block, after in zip(blocks, [*blocks[1:], None], strict=True):
            if block["lang"] == "python":
                line, expected = block["line"], output_after(text, block, after)
                found.append(
                    pytest.param(path, line, block["code"], expected, id=where(path, line))
                )
    return found


def output_after(text: str, block: dict, after: dict | None) -> str | None:
    """The text block right after a python block (only blank lines or 'Output:' between)."""
    if after is None or after["lang"] != "text":
        return None
    between = text[block["end"] : after["start"]].strip()
    return after["code"] if between in ("", "Output:") else None


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def run_block(path: Path, line: int, code: str) -> str:
    """Run one block; return what it printed. Tracebacks point at the Markdown lines."""
    printed = io.StringIO()
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(printed):
        exec(compile("\n" * (line - 1) + code, str(path), "exec"), {"__name__": "__docs__"})
    return printed.getvalue()


def matches(expected: str, printed: str) -> bool:
    """Whether printed is expected, trailing spaces aside, with '...' as any text."""

    def clean(text):
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())

    pattern = ".*".join(re.escape(part) for part in clean(expected).split("..."))
    return re.fullmatch(pattern, clean(printed), flags=re.S) is not None


@pytest.fixture
def in_fresh_folder(tmp_path, monkeypatch):
    (tmp_path / "recipes").symlink_to(ROOT / "recipes", target_is_directory=True)
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("path", "line", "code", "expected"), examples())
def test_python_block_runs_and_prints_what_the_docs_show(
    in_fresh_folder, one_thread, path, line, code, expected
):
    printed = run_block(path, line, code)
    if expected is not None:
        assert matches(expected, printed), (
            f"{where(path, line)} printed:\n{printed}\nthe docs show:\n{expected}"
        )


def console_blocks() -> list:
    """A pytest param (path, first line, [(arguments, what it prints)]) per ```console block."""
    found = []
    for path in DOCS:
        for block in fenced_blocks(path):
            if block["lang"] == "console":
                steps = []
                for line in block["code"].splitlines():
                    if line.startswith("$ regulab "):
                        steps.append((shlex.split(line.removeprefix("$ regulab ")), []))
                    else:
                        assert steps, f"{where(path, block['line'])}: a console block starts with $"
                        steps[-1][1].append(line)
                steps = [(args, "\n".join(shown)) for args, shown in steps]
                found.append(
                    pytest.param(path, block["line"], steps, id=where(path, block["line"]))
                )
    return found


@pytest.mark.parametrize(("path", "line", "steps"), console_blocks())
def test_console_block_prints_what_the_docs_show(
    in_fresh_folder, capsys, one_thread, path, line, steps
):
    for args, shown in steps:
        assert run_cli(*args) == 0, f"{where(path, line)}: regulab {shlex.join(args)} failed"
        printed = capsys.readouterr().out
        assert matches(shown, printed), (
            f"{where(path, line)}: regulab {shlex.join(args)} printed:\n{printed}"
        )


def test_the_output_convention():
    assert matches("a 1\nb ...\n", "a 1  \nb 2.5\n\n")
    assert matches("first\n...\nlast", "first\nx\ny\nlast")
    assert not matches("a 1", "a 12")
    assert not matches("a\nb", "a")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_text_block_is_the_output_of_the_python_block_before_it(path):
    text = path.read_text()
    blocks = fenced_blocks(path)
    for before, block in zip([None, *blocks[:-1]], blocks, strict=True):
        if block["lang"] == "text":
            python = before is not None and before["lang"] == "python"
            assert python and output_after(text, before, block) is not None, (
                f"{where(path, block['line'])}: a text block must follow a python block"
            )


def test_the_copies_in_the_docs_match_the_library(in_fresh_folder):
    namespace = {}
    for path in DOCS:
        for block in fenced_blocks(path):
            if block["lang"] == "python" and "def train_" in block["code"]:
                exec(compile(block["code"], str(path), "exec"), namespace)
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


def normalized(text: str) -> set[str]:
    return {" ".join(line.split()) for line in text.splitlines()}


def command_section(name: str) -> str:
    """The part of docs/commands.md about `regulab NAME`."""
    text = (ROOT / "docs" / "commands.md").read_text()
    return text.split(f"## `regulab {name}`\n")[1].split("\n## ")[0]


def first_cells(section: str, header: str) -> list[str]:
    """The first column of the Markdown table of section whose first header cell is header."""
    table = section.split(f"\n| {header} |")[1].split("\n\n")[0]
    return [row.split(" | ")[0] for row in table.splitlines()[2:]]


def names(text: str) -> set[str]:
    """The `code` spans of Markdown text, fenced blocks left out; a key written as
    `results[].lambda` or `equivalence[]` is named by its last part."""
    spans = re.findall(r"`([^`\n]+)`", FENCE.sub("", text))
    return {span.split("[].")[-1].removesuffix("[]") for span in spans}


def keys(value) -> set[str]:
    """Every key of a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def run_folder_is_as_documented(name: str, folder: Path) -> None:
    """The files and summary.json keys docs/commands.md lists for a command are what it
    wrote, and every key it wrote is named there (nested ones may be named elsewhere in
    the page, as demo's sweep.best is by sweep's)."""
    section = command_section(name)
    if "\n| file |" in section:
        for cell in first_cells(section, "file"):
            for file in names(cell):
                assert (folder / file).exists(), f"regulab {name} wrote no {file}"
    else:  # the files are listed in a sentence
        files = {p.name for p in folder.iterdir()}
        assert files <= names(section), f"regulab {name}: {files - names(section)} not listed"
    written = keys(json.loads((folder / "summary.json").read_text()))
    listed = first_cells(section, "`summary.json` key")
    documented = {n for cell in listed for n in names(cell)}
    assert documented <= written, f"regulab {name}: {documented - written} not written"
    named = names((ROOT / "docs" / "commands.md").read_text())
    assert written <= named, f"regulab {name}: {written - named} not in docs/commands.md"


def output_block(text: str, marker: str) -> set[str]:
    """The lines a fenced block holding marker shows a command printing, normalized;
    the command line itself, the elided rows (…) and the report path left out."""
    block = next(m.group(2) for m in FENCE.finditer(text) if marker in m.group(2))
    return {
        line
        for line in normalized(block)
        if line and line != "…" and not line.startswith(("$ ", "Report: "))
    }


def printed_lines(capsys) -> set[str]:
    return {line for line in normalized(capsys.readouterr().out) if not line.startswith("Report: ")}


def test_demo_prints_what_the_readme_shows_and_writes_what_commands_md_lists(
    tmp_path, capsys, one_thread
):
    assert run_cli("demo", "--out", str(tmp_path / "demo")) == 0
    readme = (ROOT / "README.md").read_text()
    assert printed_lines(capsys) - {""} == output_block(readme, "validation-chosen λ")
    run_folder_is_as_documented("demo", tmp_path / "demo")


def test_constraints_prints_and_writes_what_commands_md_shows(tmp_path, capsys, one_thread):
    assert run_cli("constraints", "--out", str(tmp_path / "constraints")) == 0
    shown = output_block(command_section("constraints"), "$ regulab constraints")
    assert printed_lines(capsys) - {""} == shown
    run_folder_is_as_documented("constraints", tmp_path / "constraints")


def test_sweep_prints_what_the_docs_show_and_writes_what_commands_md_lists(
    in_fresh_folder, capsys, one_thread
):
    args = "recipes/weight_decay_linear.toml --variant lambda_0 --param weight_decay --folds 5"
    assert run_cli("sweep", *args.split(), "--out", "sweep") == 0
    printed = printed_lines(capsys)
    for doc in (ROOT / "README.md", ROOT / "docs" / "commands.md"):
        shown = output_block(doc.read_text(), f"$ regulab sweep {args} --out runs/readme-sweep")
        assert shown <= printed, f"{doc.name} shows lines regulab sweep does not print"
    run_folder_is_as_documented("sweep", in_fresh_folder / "sweep")


def test_tune_prints_what_the_docs_show_and_writes_what_commands_md_lists(
    in_fresh_folder, capsys, one_thread
):
    assert run_cli("tune", "recipes/tune_digits.toml", "--out", "tune") == 0
    shown = output_block(
        command_section("tune"), "$ regulab tune recipes/tune_digits.toml --out runs/tune-digits"
    )
    assert shown <= printed_lines(capsys), "commands.md shows lines regulab tune does not print"
    run_folder_is_as_documented("tune", in_fresh_folder / "tune")


def test_train_prints_what_the_readme_shows(in_fresh_folder, capsys):
    assert run_cli("train", "recipes/mlp_digits.toml", "--seeds", "3", "--out", "digits") == 0
    shown = output_block((ROOT / "README.md").read_text(), "$ regulab train recipes/mlp_digits")
    assert shown <= printed_lines(capsys)


def abridged_recipes() -> list:
    """A pytest param per ```toml block that starts '# recipes/NAME.toml (abridged)'."""
    found = []
    for path in DOCS:
        for block in fenced_blocks(path):
            first = block["code"].partition("\n")[0]
            if block["lang"] == "toml" and first.startswith("# recipes/"):
                name = first.removeprefix("# ").split()[0]
                found.append(pytest.param(block["code"], name, id=where(path, block["line"])))
    return found


@pytest.mark.parametrize(("code", "name"), abridged_recipes())
def test_an_abridged_recipe_says_what_the_file_says(code, name):
    def pairs(table, prefix=""):
        for key, value in table.items():
            if isinstance(value, dict):
                yield from pairs(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    whole = dict(pairs(tomllib.loads((ROOT / name).read_text())))
    shown = dict(pairs(tomllib.loads(code)))
    assert shown and {k: whole.get(k) for k in shown} == shown


def error_examples() -> list:
    """A pytest param (path, line, arguments, error shown) per '$ regulab ...' line of a
    shell block that the docs show failing: the next line is 'regulab ...: error: ...'."""
    found = []
    for path in DOCS:
        for block in fenced_blocks(path):
            lines = block["code"].splitlines()
            for i, (command, shown) in enumerate(itertools.pairwise(lines)):
                if command.startswith("$ regulab ") and re.match(r"regulab \w+: error: ", shown):
                    line = block["line"] + i
                    args = shlex.split(command.removeprefix("$ regulab "))
                    found.append(pytest.param(path, line, args, shown, id=where(path, line)))
    return found


@pytest.mark.parametrize(("path", "line", "args", "shown"), error_examples())
def test_bad_input_prints_the_error_the_docs_show(
    in_fresh_folder, capsys, one_thread, monkeypatch, path, line, args, shown
):
    (in_fresh_folder / "runs" / "readme").mkdir(parents=True)  # as after the README's demo
    (in_fresh_folder / "runs" / "readme" / "summary.json").write_text("{}")
    if Path(SHARED_DATA).is_dir() and "REGULAB_DATA_DIR" not in os.environ:
        monkeypatch.setenv("REGULAB_DATA_DIR", SHARED_DATA)
    assert run_cli(*args) in (1, 2)
    printed = capsys.readouterr().err
    if "could not download" in printed:
        pytest.skip("needs the Fashion-MNIST files: set REGULAB_DATA_DIR")
    assert matches(shown, printed), f"{where(path, line)} printed:\n{printed}"
    assert sorted(p.name for p in in_fresh_folder.rglob("*")) == [
        "examples",
        "readme",
        "recipes",
        "runs",
        "summary.json",
    ], "a refused command wrote something"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#+ (.*)$", text, flags=re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings_that_exist(path):
    text = FENCE.sub("", path.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name}: link to missing {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{path.name}: no heading for {target}"

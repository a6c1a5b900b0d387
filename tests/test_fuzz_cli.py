"""The fuzz suite of the command line (issue 16): generated recipes, `--set` values, option
values and corrupted run folders, each run in-process against the contract.

The contract: exit code 0, 1, 2 or 130; never a traceback; exit 2 is one line; nothing
outside `--out` is touched (a sibling folder, the working folder, an earlier run: byte-identical
afterwards); a refused command (exit 2) changes nothing at all, `--out` included.

Hypothesis draws the cases from a fixed seed and keeps no database, so CI replays the same
cases; `REGULAB_FUZZ=explore` draws ten times as many at random and shrinks failures. The
plots are stubbed (a few bytes written where the PNG goes): drawing is not what is fuzzed, and
it is most of a tiny run's time.
"""

import contextlib
import io
import json
import math
import re
import resource
import shutil
import signal
import tempfile
import traceback
import urllib.error
import urllib.request
from dataclasses import fields
from pathlib import Path

import matplotlib.figure
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from conftest import fuzz_settings, snapshot
from regulab import cli
from regulab.recipe import schema

SECONDS = 60  # one command may take this long before the case counts as a hang

TINY = {  # digits, an MLP 64-8-10, one epoch: a fraction of a second
    "name": "tiny",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"epochs": 1, "batch_size": 128, "eval_train": 100},
}
BN = {  # the same with BatchNorm (gamma.json, slim): VGG 8-M-8-M on the 8x8 images
    "name": "bn",
    "data": {"name": "digits"},
    "model": {"name": "vgg_bn", "cfg": [8, "M", 8, "M"]},
    "train": {"epochs": 2, "batch_size": 128, "eval_train": 100, "keep_checkpoints": 2},
    "slim": {"sparsity": 1e-4, "finetune_epochs": 1},
}

LIVE = {  # keys that TINY ignores put to use: Adam's betas, max-norm, early stopping
    **TINY,
    "optim": {"name": "adam", "lr": 0.01},
    "penalty": {"max_norm": 1.0},
    "early_stopping": {"patience": 1},
}

# keys whose large values make a valid run long or big: drawn small (or plainly invalid)
WORK = {
    "epochs", "n", "n_train", "n_test", "num_inputs", "hidden", "widths", "blocks", "cfg",
    "random_crop", "budget", "configs", "passes", "finetune_epochs", "batch_size", "eval_train",
    "accumulate", "drop_block_size", "cutout",
}  # fmt: skip


# --- what is drawn ---------------------------------------------------------------------------

NAMES = st.sampled_from(
    ["x", "", " ", ".", "..", "../victim", "x/../../victim", "/tmp/absolute", "a/b", "é",
     "con", "-rf", "x" * 300, "nul\\u0000", "\u202e", "variant one"]
)  # fmt: skip
SMALL = st.sampled_from([0, 1, 2, -1, 0.5, -0.0, 1e-300, math.nan, math.inf, -math.inf, True])
NUMBERS = st.one_of(
    SMALL,
    st.sampled_from([0.9999, 1.0, 3, 1e300, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63)]),
)
SCALARS = st.one_of(NUMBERS, NAMES, st.sampled_from(["relu", "sgd", "digits", "vgg_bn", "1"]))
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.lists(st.lists(SMALL, max_size=2), max_size=2),
    st.dictionaries(st.sampled_from(["x", "y", "l2", "p"]), SCALARS, max_size=2),
)
SMALL_VALUES = st.one_of(SMALL, NAMES, st.lists(SMALL, max_size=3), st.just([]))


def section_keys(section: str) -> list[str]:
    return [f.name for f in fields(schema.SECTIONS[section])]


@st.composite
def mutation(draw):
    """(section, key, value): a known key mostly, an unknown one sometimes."""
    section = draw(st.sampled_from([*schema.SECTIONS, "nosuch"]))
    known = section_keys(section) if section in schema.SECTIONS else []
    key = draw(st.sampled_from([*known, "nosuch"]) if known else st.just("nosuch"))
    return section, key, draw(SMALL_VALUES if key in WORK else VALUES)


@st.composite
def recipes(draw):
    """The tiny recipe with 1 to 3 keys changed, and maybe a variant with a drawn name."""
    recipe = json.loads(json.dumps(TINY))
    for section, key, value in draw(st.lists(mutation(), min_size=1, max_size=3)):
        recipe.setdefault(section, {})[key] = value
    if draw(st.booleans()):
        section, key, value = draw(mutation())
        recipe["variants"] = {draw(NAMES): {section: {key: value}}}
    if draw(st.booleans()):
        recipe[draw(st.sampled_from(["name", "description", "base", "nosuch"]))] = draw(VALUES)
    return recipe


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else {math.inf: "inf", -math.inf: "-inf"}.get(v, repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


def toml_text(table: dict, prefix: tuple = ()) -> str:
    """A nested dict as TOML: its plain values, then one [header] per sub-table."""
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in plain.items()]
    for k, v in table.items():
        if isinstance(v, dict):
            path = (*prefix, k)
            lines += ["", "[" + ".".join(json.dumps(p) for p in path) + "]", toml_text(v, path)]
    return "\n".join(lines)


# --- running one command against the contract ------------------------------------------------


class TooSlow(BaseException):
    """The command ran past SECONDS: a hang or an unbounded count."""


class Box:
    """A sandbox: a working folder, a sibling folder, earlier runs; every command runs in it."""

    def __init__(self, root: Path, earlier: dict[str, Path]):
        self.root = root
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        (root / "sibling").mkdir()
        (root / "sibling" / "config.json").write_text('{"mine": true}\n')
        self.runs = {}
        for name, source in earlier.items():
            self.runs[name] = root / name
            shutil.copytree(source, self.runs[name], symlinks=True)

    def run(self, *args, out=None, may_write=(), context=""):
        """Run `regulab *args`; assert the contract. `may_write`: paths a success may change;
        `context`: shown with a failure (the recipe, say)."""
        args = [str(a) for a in args]
        before = snapshot(self.root)
        code, err = call(args, self.cwd)
        problems = contract(args[0], code, err)
        after = snapshot(self.root)
        writable = [p for p in (out, *may_write) if p is not None] if code in (0, 1, 130) else []
        changed = [
            k for k in sorted(before.keys() | after.keys())
            if before.get(k) != after.get(k) and not under(self.root / k, writable)
        ]  # fmt: skip
        if changed:
            problems.append(f"touched outside --out: {changed[:5]}")
        assert not problems, (
            f"regulab {' '.join(args)} -> exit {code}: " + "; ".join(problems) + context
        )
        return code, err


def under(path: Path, folders) -> bool:
    """True if path is one of folders or inside one (hidden temporaries beside one are not)."""
    return any(path == Path(f) or Path(f) in path.parents for f in folders)


def call(args, cwd: Path) -> tuple:
    """Run the CLI in-process in cwd with a time limit; return (exit code, stderr)."""
    args = [str(a) for a in args]
    err, out = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise TooSlow(f"still running after {SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    quiet = contextlib.redirect_stderr(err), contextlib.redirect_stdout(out)
    try:
        with contextlib.chdir(cwd), quiet[0], quiet[1]:
            try:
                code = cli.main(args)
            except SystemExit as e:
                code = e.code
            except (Exception, TooSlow):
                code = "raised"
                err.write(traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, err.getvalue()


def contract(command: str, code, err: str) -> list[str]:
    """What is wrong with an exit code and stderr."""
    problems = []
    if code not in (0, 1, 2, 130):
        problems.append(f"exit code {code!r}")
    if "Traceback" in err:
        problems.append("traceback: " + err.strip().splitlines()[-1][:300])
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 2 and (len(lines) != 1 or not lines[0].startswith(f"regulab {command}")):
        problems.append(f"exit 2 without one 'regulab {command}: ...' line: {lines[:3]}")
    return problems


# --- fixtures: earlier runs made once, no network, no plots, bounded memory ------------------


@pytest.fixture(scope="module", autouse=True)
def quiet_and_bounded(tmp_path_factory):
    """One thread, plots stubbed, no download, an empty data folder, address space bounded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    limit = used + 8 * 2**30  # room for every tiny run; a huge tensor fails at once
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)

    def stub_savefig(self, fname, *args, **kwargs):
        if hasattr(fname, "write"):
            fname.write(b"PNG stub")
        else:
            Path(fname).write_bytes(b"PNG stub")

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in the fuzz suite")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "savefig", stub_savefig)
        mp.setattr(urllib.request, "urlopen", no_network)
        mp.setenv("REGULAB_DATA_DIR", str(tmp_path_factory.mktemp("nodata")))
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, quiet_and_bounded):
    """Finished runs to copy into each sandbox: `tiny` (MLP) and `bn` (VGG with BatchNorm,
    2 epochs, both checkpoints kept), and `stopped`: `bn` as if killed after epoch 1."""
    root = tmp_path_factory.mktemp("earlier")
    made = {}
    for name, recipe in (("tiny", TINY), ("bn", BN)):
        (root / f"{name}.toml").write_text(toml_text(recipe))
        made[name] = root / name
        code, err = call(["train", root / f"{name}.toml", "--out", made[name]], root)
        assert code == 0, err
    made["stopped"] = root / "stopped"
    shutil.copytree(made["bn"], made["stopped"])
    stop_after_epoch_1(made["stopped"])
    return made


def stop_after_epoch_1(run: Path) -> None:
    """Make a finished 2-epoch run look like one killed after its first epoch."""
    shutil.rmtree(run / "checkpoints" / "epoch-0002")
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(lines[:2]))
    summary = json.loads((run / "summary.json").read_text())
    summary["status"] = "running"
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    gamma = json.loads((run / "gamma.json").read_text())
    if isinstance(gamma, list):
        (run / "gamma.json").write_text(json.dumps(gamma[:2]) + "\n")


@contextlib.contextmanager
def sandbox(earlier):
    with tempfile.TemporaryDirectory(prefix="fuzz-") as root:
        yield Box(Path(root), earlier)


def test_the_stopped_run_resumes_and_the_sandbox_sees_a_change(earlier):
    """The helpers themselves: a resume of the stopped run completes, and the snapshot of a
    sandbox sees a file written outside --out."""
    with sandbox(earlier) as box:
        assert box.run("train", "--resume", box.runs["stopped"], out=box.runs["stopped"])[0] == 0
        assert json.loads((box.runs["stopped"] / "summary.json").read_text())["epochs"] == 2
        before = snapshot(box.root)
        (box.cwd / "stray").write_text("x")
        assert snapshot(box.root) != before


# --- the fuzz tests --------------------------------------------------------------------------


@fuzz_settings(max_examples=40)
@given(recipe=recipes())
@example(recipe={**TINY, "variants": {"x/../../../victim": {}, "b": {}}})
@example(recipe={**TINY, "variants": {"{sandbox}/victim": {}, "b": {}}})
@example(recipe={**TINY, "optim": {"name": "adam", "betas": [0.9]}})
@example(recipe={**TINY, "penalty": {"max_norm": 1.0, "max_norm_dim": 5}})
@example(recipe={**TINY, "train": {**TINY["train"], "seed": 2**64}})
@example(recipe={**TINY, "data": {"name": "digits", "test_fraction": 0.9999}})
def test_generated_recipes_keep_the_contract(earlier, recipe):
    with sandbox(earlier) as box:
        path = box.root / "r.toml"  # "{sandbox}" in a variant's name: an absolute path in it
        path.write_text(toml_text(recipe).replace("{sandbox}", str(box.root)))
        out = box.root / "out"
        box.run("train", path, "--out", out, out=out, context="\nrecipe:\n" + path.read_text())


SET_KEYS = st.sampled_from(
    [f"{s}.{k}" for s in schema.SECTIONS for k in section_keys(s)]
    + ["nosuch.lr", "optim.nosuch", "optim", ".", "optim.lr.x", "variants.x", "name"]
)
SET_TEXT = st.one_of(
    st.sampled_from(
        ["nan", "inf", "-inf", "-1", "0", "1e999", "0.5", "[]", "[0.9]", "[1, 2, 3, 4]", "{}",
         '"x"', "x", "", "true", "[[1]]", "9223372036854775808", "18446744073709551616",
         '"../victim"', '"/etc"', '{x = 1}', "1_000", "0x10", "'é'", "[nan]", "1979-05-27"]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=8),
)  # fmt: skip


REFUSED = {  # settings the issue found accepted, or refused late (exit 1, another key named)
    ("model.drop_block", "0.5"),  # an MLP has no DropBlock: ignored
    ("optim.betas", "[0.9]"),  # a traceback in the first step
    ("penalty.max_norm_dim", "5"),  # exit 1 in the first step
    ("data.test_fraction", "0.9999"),  # exit 1 naming val_fraction
    ("train.seed", "18446744073709551615"),  # seeds are in [0, 2^63)
}


@fuzz_settings(max_examples=40)
@given(base=st.sampled_from(["tiny", "live"]), key=SET_KEYS, text=SET_TEXT)
@example(base="live", key="optim.betas", text="[0.9]")
@example(base="live", key="penalty.max_norm_dim", text="5")
@example(base="tiny", key="train.seed", text="18446744073709551615")
@example(base="tiny", key="data.test_fraction", text="0.9999")
@example(base="tiny", key="model.drop_block", text="0.5")
def test_generated_set_values_keep_the_contract(earlier, base, key, text):
    if key.rsplit(".", 1)[-1] in WORK and re.fullmatch(r"[0-9_]{4,}|1e999|inf", text.strip()):
        text = "-1"  # a valid huge count is a long run, not a fault
    with sandbox(earlier) as box:
        path = box.root / "r.toml"
        path.write_text(toml_text(LIVE if base == "live" else TINY))
        out = box.root / "out"
        code, err = box.run("train", path, "--set", f"{key}={text}", "--out", out, out=out)
        if (key, text) in REFUSED:  # refused before any work, naming the key
            assert code == 2 and key.split(".")[-1] in err, f"{key}={text}: exit {code} {err}"


OPTION_TEXT = st.one_of(
    st.sampled_from(
        ["0", "-1", "1", "2", "0.5", "nan", "inf", "-inf", "", " ", "1e400", "x", "0,0", "1,",
         ",", "0,nan", "logspace(0,1,0)", "logspace(0,1,-1)", "linspace(1,0,2)", "1e-300",
         "9223372036854775808", "１", "cpu", "cuda:99", "meta", "/dev/null", "../victim"]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
)  # fmt: skip

# command -> (cheap arguments, the options whose values are drawn); {r}: the sandbox's recipe
COMMANDS = {
    "demo": (["--epochs", "2", "--seeds", "1", "--grid", "0,1", "--folds", "2"],
             ["--lambdas", "--epochs", "--lr", "--batch-size", "--grid", "--folds", "--device",
              "--impl"]),
    "constraints": (["--fractions", "0.5"], ["--fractions", "--seed", "--radius"]),
    "train": (["{tiny.toml}"], ["--data-dir", "--device", "--set"]),
    "compare": (["{tiny}"], ["--out"]),
    "sweep": (["{tiny.toml}", "--grid", "0,0.1"],
              ["--param", "--grid", "--folds", "--rule", "--chunks", "--max-memory", "--seed",
               "--variant", "--data-dir"]),
    "slim": (["--from", "{bn}", "--finetune-epochs", "0", "--latency-repeats", "1"],
             ["--ratio", "--ratios", "--passes", "--finetune-epochs", "--latency-repeats",
              "--seed", "--variant"]),
    "tune": (["{tiny.toml}", "--budget", "1", "--configs", "2", "--space", "lr=log(0.01,0.1)"],
             ["--space", "--budget", "--configs", "--eta", "--grace", "--finalists", "--metric",
              "--seed", "--variant"]),
}  # fmt: skip
UNBOUNDED = {"--epochs", "--passes", "--finetune-epochs", "--latency-repeats", "--budget",
             "--configs", "--chunks", "--folds", "--grace", "--finalists", "--seeds"}  # fmt: skip


def fill(args, box: Box):
    """Replace {tiny}, {bn}, {tiny.toml} by the sandbox's runs and recipe."""
    (box.root / "tiny.toml").write_text(toml_text(TINY))
    names = {"tiny.toml": box.root / "tiny.toml", **box.runs}
    return [names[a[1:-1]] if a.startswith("{") else a for a in args]


OPTIONS = [(command, option) for command in sorted(COMMANDS) for option in COMMANDS[command][1]]


@fuzz_settings(max_examples=60)
@given(chosen=st.sampled_from(OPTIONS), text=OPTION_TEXT)
@example(chosen=("sweep", "--seed"), text="18446744073709551616")
@example(chosen=("tune", "--seed"), text="9223372036854775808")
@example(chosen=("compare", "--out"), text="x" * 300)
def test_generated_option_values_keep_the_contract(earlier, chosen, text):
    command, option = chosen
    if option in UNBOUNDED and re.fullmatch(r"[0-9]{3,}|1e400|inf", text.strip()):
        text = "0"  # a valid huge count is a long run, not a fault
    with sandbox(earlier) as box:
        out = box.root / "out"
        args = [command, *fill(COMMANDS[command][0], box), option, text]
        if option != "--out":
            args += ["--out", out]
        else:
            out = (box.cwd / text) if text.strip() else None
        code, err = box.run(*args, out=out)
        if option == "--seed" and re.fullmatch(r"[0-9]{19,}", text) and int(text) >= 2**63:
            assert code == 2 and "--seed" in err, f"exit {code}: {err}"  # seeds in [0, 2^63)


CORRUPTIONS = ("truncate", "empty", "delete", "garbage", "edit")
FILES = ("config.json", "summary.json", "metrics.csv", "gamma.json",
         "checkpoints/epoch-0001/state.json", "checkpoints/epoch-0001/model.safetensors",
         "checkpoints/epoch-0001/state.safetensors")  # fmt: skip
JSON_VALUES = st.one_of(
    st.none(), st.booleans(), NUMBERS, NAMES, st.just([]), st.just({}), st.lists(SMALL, max_size=2)
)


@st.composite
def corruption(draw):
    """(file, how, detail): a run file truncated, emptied, deleted, garbled or edited."""
    name = draw(st.sampled_from(FILES))
    how = draw(st.sampled_from(CORRUPTIONS if name.endswith(".json") else CORRUPTIONS[:4]))
    if how == "truncate":
        return name, how, draw(st.floats(0.01, 0.99))
    if how == "edit":
        return name, how, (draw(st.sampled_from(["", "seeds", "recipe", "epoch", "command",
                                                 "status", "history", "variant"])),
                           draw(JSON_VALUES))  # fmt: skip
    return name, how, None


def corrupt(run: Path, name: str, how: str, detail) -> None:
    path = run / name
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * detail)])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "delete":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(b"\x00\xff garbage \x89PNG" * 3)
    else:
        key, value = detail
        data = json.loads(path.read_text())
        if key == "" or not isinstance(data, dict):
            data = value  # the whole file
        else:
            data[key] = value
        path.write_text(json.dumps(data))


READERS = {  # command -> (arguments, out); {run}: the corrupted run
    "resume": (["train", "--resume", "{run}"], "{run}"),
    "slim": (["slim", "--from", "{run}", "--finetune-epochs", "0", "--latency-repeats", "1",
              "--out", "{out}"], "{out}"),
    "compare": (["compare", "{run}", "--out", "{out}"], "{out}"),
}  # fmt: skip


@fuzz_settings(max_examples=50)
@given(reader=st.sampled_from(sorted(READERS)), damage=corruption())
@example(reader="resume", damage=("checkpoints/epoch-0001/model.safetensors", "truncate", 0.5))
@example(reader="resume", damage=("config.json", "edit", ("", [])))
@example(reader="resume", damage=("config.json", "edit", ("seeds", None)))
@example(reader="resume", damage=("checkpoints/epoch-0001/state.json", "edit", ("epoch", "x")))
@example(reader="resume", damage=("gamma.json", "garbage", None))
@example(reader="slim", damage=("checkpoints/epoch-0001/model.safetensors", "truncate", 0.5))
def test_corrupted_run_folders_keep_the_contract(earlier, reader, damage):
    """A refused command leaves the corrupted run byte-identical: nothing is appended."""
    with sandbox(earlier) as box:
        run = box.runs["stopped"] if reader == "resume" else box.runs["bn"]
        if reader == "slim":  # slim reads the finished run's newest checkpoint
            damage = (damage[0].replace("epoch-0001", "epoch-0002"), *damage[1:])
        corrupt(run, *damage)
        args, out = READERS[reader]
        names = {"{run}": run, "{out}": box.root / "out"}
        box.run(*[names.get(a, a) for a in args], out=names[out])

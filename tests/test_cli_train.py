"""`regulab train` and `regulab compare`: run folders, summaries, seeds, divergence, usage errors.

Recipes are tiny (scikit-learn's digits, a 1-D line) so that every run takes a
fraction of a second; one reduced Fashion-MNIST run checks where data is looked for.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from regulab import recipe as recipes

FASHION = Path("/work/shared/data/fashion-mnist")
RECIPES = Path(__file__).resolve().parents[1] / "recipes"

TINY = """
name = "tiny"
[data]
name = "digits"
[model]
name = "mlp"
hidden = [16]
[train]
epochs = 2
batch_size = 64
eval_train = 300
"""
TWO_VARIANTS = TINY + "[variants.plain]\n[variants.l2]\npenalty.l2 = 0.01\n"

# y = 3x + 5 + noise, x in [0, 10], full batch: SGD is stable for lr below ~0.03 and at
# lr 1 the error grows by a factor of ~70 per epoch, so float32 overflows after some epochs
LINE = """
name = "line"
[data]
name = "line"
val_fraction = 0
[model]
name = "linear"
[optim]
lr = 1.0
[train]
epochs = 30
batch_size = 80
loss = "mse"
"""

FINAL = (
    "train_loss",
    "val_loss",
    "test_loss",
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "w_norm",
    "zero_fraction",
)
SINGLE_FILES = ("config.json", "metrics.csv", "summary.json", "curves.png", "report.md")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: tiny models run faster without contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def rows(folder: Path, drop=("seconds",)) -> list[dict]:
    """metrics.csv as a list of {column: text}, without the timing column."""
    with (folder / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(f)]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def usage_error(capsys, *args) -> str:
    """Run the command, assert a one-line usage error (exit 2), return that line."""
    capsys.readouterr()
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"regulab {args[0]}: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A single run (with --set overrides) and a 2-variant x 2-seed run of TINY."""
    root = tmp_path_factory.mktemp("made")
    (root / "tiny.toml").write_text(TINY)
    (root / "two.toml").write_text(TWO_VARIANTS)
    sets = ["--set", "optim.lr=0.2", "--set", "model.activation=tanh"]
    single, multi = root / "single", root / "multi"
    assert run_cli("train", str(root / "tiny.toml"), *sets, "--out", str(single)) == 0
    assert run_cli("train", str(root / "two.toml"), "--seeds", "2", "--out", str(multi)) == 0
    return {"root": root, "single": single, "multi": multi, "sets": sets}


# --- one run ---------------------------------------------------------------------------------


def test_single_run_writes_its_folder(made):
    single = made["single"]
    for name in SINGLE_FILES:
        assert (single / name).is_file(), name
    assert [p.name for p in (single / "checkpoints").iterdir()] == ["epoch-0002"]
    assert not (single / "runs").exists()
    assert "# Comparison of 1 run: tiny" in (single / "report.md").read_text()
    assert (single / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_final_is_typed_and_equals_the_last_epoch(made):
    single = made["single"]
    summary = read_json(single / "summary.json")
    assert summary["command"] == "train"
    assert summary["status"] == "completed"
    assert (summary["variant"], summary["seed"], summary["epochs"]) == ("tiny", 0, 2)
    assert (summary["task"], summary["loss"]) == ("classification", "cross_entropy")
    final = summary["final"]
    assert set(final) == set(FINAL)
    assert all(type(final[k]) is float for k in FINAL), final
    last = rows(single)[-1]
    assert last["epoch"] == "2"
    assert {k: float(last[k]) for k in FINAL} == final  # exactly: csv keeps repr(float)
    assert 0 <= final["zero_fraction"] <= 1 and 0 <= final["test_accuracy"] <= 1


def test_config_json_holds_the_resolved_recipe_with_overrides(made):
    stored = read_json(made["single"] / "config.json")
    assert stored["command"] == "train"
    assert (stored["variant"], stored["seed"], stored["seeds"]) == ("tiny", 0, [0])
    assert {"regulab_version", "git_revision", "torch_version", "argv"} <= stored.keys()
    overrides = [v for v in made["sets"] if v != "--set"]
    recipe = recipes.load(made["root"] / "tiny.toml", overrides)
    assert stored["recipe"] == recipes.to_dict(recipes.expand(recipe)["tiny"])
    assert stored["recipe"]["optim"]["lr"] == 0.2
    assert stored["recipe"]["model"]["activation"] == "tanh"
    assert stored["recipe"]["model"]["hidden"] == [16]  # from the file
    assert stored["recipe"]["data"]["n_train"] == 20  # defaults are written out too


def test_the_same_seed_gives_the_same_metrics(made, tmp_path):
    out = tmp_path / "again"
    assert run_cli("train", str(made["root"] / "tiny.toml"), *made["sets"], "--out", str(out)) == 0
    assert rows(out) == rows(made["single"])
    summary, first = read_json(out / "summary.json"), read_json(made["single"] / "summary.json")
    assert summary["final"] == first["final"]


# --- variants and seeds ----------------------------------------------------------------------


def test_variants_and_seeds_get_a_folder_each(made):
    multi = made["multi"]
    expected = [f"runs/{v}/seed-{s}" for v in ("plain", "l2") for s in (0, 1)]
    summary = read_json(multi / "summary.json")
    assert summary["command"] == "train"
    assert summary["status"] == "completed"
    assert (summary["variants"], summary["seeds"]) == (["plain", "l2"], [0, 1])
    assert summary["runs"] == expected
    for rel in expected:
        for name in SINGLE_FILES:
            assert (multi / rel / name).is_file(), f"{rel}/{name}"
        run = read_json(multi / rel / "summary.json")
        assert (run["variant"], f"seed-{run['seed']}") == tuple(rel.split("/")[1:])
        assert read_json(multi / rel / "config.json")["recipe"]["variants"] == {}
    for name in ("config.json", "table.csv", "curves.png", "report.md", "metrics.csv"):
        assert (multi / name).is_file(), name
    top = read_json(multi / "config.json")
    assert (top["command"], top["seeds"]) == ("train", [0, 1])
    assert set(top["recipe"]["variants"]) == {"plain", "l2"}
    merged = rows(multi)
    assert [(r["variant"], r["seed"], r["epoch"]) for r in merged] == [
        (v, s, e) for v in ("plain", "l2") for s in ("0", "1") for e in ("1", "2")
    ]


def test_top_level_final_is_the_mean_over_seeds(made):
    multi = made["multi"]
    summary = read_json(multi / "summary.json")
    assert list(summary["final"]) == ["plain", "l2"]
    with (multi / "table.csv").open(newline="") as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(table) == ["plain", "l2"]
    for variant, means in summary["final"].items():
        finals = [
            read_json(multi / f"runs/{variant}/seed-{s}/summary.json")["final"] for s in (0, 1)
        ]
        assert set(means) == set(FINAL)
        for k in FINAL:
            expected = np.mean([f[k] for f in finals])
            np.testing.assert_allclose(means[k], expected, rtol=1e-12, atol=1e-12, err_msg=k)
            np.testing.assert_allclose(float(table[variant][k]), expected, rtol=1e-12, atol=1e-12)
        std = np.std([f["test_loss"] for f in finals], ddof=1)
        np.testing.assert_allclose(float(table[variant]["test_loss_std"]), std, rtol=1e-12)
        assert table[variant]["seeds"] == "2"


def test_different_seeds_differ_and_seed_0_repeats_the_single_run(made):
    multi = made["multi"]
    seed0, seed1 = rows(multi / "runs/plain/seed-0"), rows(multi / "runs/plain/seed-1")
    assert seed0 != seed1
    assert seed0[0]["lr"] == seed1[0]["lr"]  # only the seed differs
    l2 = read_json(multi / "runs/l2/seed-0/summary.json")["final"]
    plain = read_json(multi / "runs/plain/seed-0/summary.json")["final"]
    assert l2["w_norm"] < plain["w_norm"]  # the penalty reached the run


# --- divergence ------------------------------------------------------------------------------


def test_divergence_exits_1_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    (tmp_path / "line.toml").write_text(LINE)
    out = tmp_path / "out"
    capsys.readouterr()
    assert run_cli("train", str(tmp_path / "line.toml"), "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = int(rows(out)[-1]["epoch"])
    assert 3 <= last < 29  # a few good epochs, then the overflow
    assert f"training diverged in epoch {last + 1}" in err
    assert f"the last good checkpoint is epoch-{last:04d}" in err
    summary = read_json(out / "summary.json")
    assert summary["status"] == "diverged"
    assert f"diverged in epoch {last + 1}" in summary["message"]
    assert summary["epochs"] == last
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"epoch-{last:04d}"]
    assert all(np.isfinite(float(r["train_loss"])) for r in rows(out))


def test_divergence_in_the_first_epoch_keeps_no_checkpoint(tmp_path, capsys):
    (tmp_path / "line.toml").write_text(LINE)
    out = tmp_path / "out"
    capsys.readouterr()
    args = ("train", str(tmp_path / "line.toml"), "--set", "optim.lr=1e30", "--out", str(out))
    assert run_cli(*args) == 1
    err = capsys.readouterr().err
    assert "training diverged in epoch 1" in err
    assert "no checkpoint kept" in err
    assert read_json(out / "summary.json")["status"] == "diverged"
    assert rows(out) == []
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


# --- usage errors ----------------------------------------------------------------------------


def test_missing_recipe_is_a_usage_error(tmp_path, capsys):
    line = usage_error(capsys, "train", "--out", str(tmp_path / "out"))
    assert "RECIPE is required" in line
    assert not (tmp_path / "out").exists()


def test_missing_recipe_file_is_a_usage_error(tmp_path, capsys):
    line = usage_error(capsys, "train", str(tmp_path / "no.toml"), "--out", str(tmp_path / "o"))
    assert str(tmp_path / "no.toml") in line
    assert not (tmp_path / "o").exists()


def test_unknown_set_key_is_a_usage_error(made, tmp_path, capsys):
    args = ("train", str(made["root"] / "tiny.toml"), "--set", "optim.lrr=0.1")
    line = usage_error(capsys, *args, "--out", str(tmp_path / "out"))
    assert "--set optim.lrr: unknown key" in line
    assert "did you mean 'lr'?" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (("--set", "optim.lr=0.3"), "--set"),
        (("--seeds", "2"), "--seeds"),
        (("--out", "OTHER"), "--out"),
        (("--overwrite",), "--overwrite"),
    ],
)
def test_resume_cannot_change_the_run(made, tmp_path, capsys, extra, option):
    single = made["single"]
    before = {p: (single / p).read_bytes() for p in listing(single) if (single / p).is_file()}
    extra = tuple(str(tmp_path / "other") if a == "OTHER" else a for a in extra)
    line = usage_error(capsys, "train", "--resume", str(single), *extra)
    assert f"{option} cannot be combined with it" in line
    after = {p: (single / p).read_bytes() for p in listing(single) if (single / p).is_file()}
    assert after == before
    assert not (tmp_path / "other").exists()


def test_resume_of_a_folder_that_is_not_a_train_run(tmp_path, capsys):
    line = usage_error(capsys, "train", "--resume", str(tmp_path))
    assert "--resume must be a run folder of `regulab train`" in line
    assert str(tmp_path / "config.json") in line
    assert listing(tmp_path) == []
    (tmp_path / "config.json").write_text(json.dumps({"command": "compare", "runs": []}))
    line = usage_error(capsys, "train", "--resume", str(tmp_path))
    assert f"'{tmp_path}' is not" in line
    assert listing(tmp_path) == ["config.json"]


def test_an_out_folder_that_is_not_empty_needs_overwrite(made, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    recipe = str(made["root"] / "tiny.toml")
    line = usage_error(capsys, "train", recipe, "--out", str(out))
    assert f"'{out}' exists and is not empty" in line
    assert "--overwrite" in line
    line = usage_error(capsys, "train", recipe, "--out", str(out), "--overwrite")
    assert "is not one, so it is left alone" in line
    assert listing(out) == ["notes.txt"]


def test_overwrite_replaces_an_earlier_train_run(made, tmp_path, capsys):
    recipe = str(made["root"] / "tiny.toml")
    out = tmp_path / "out"
    assert run_cli("train", recipe, "--out", str(out)) == 0
    line = usage_error(capsys, "train", recipe, "--out", str(out), "--set", "train.epochs=1")
    assert "not empty" in line
    assert len(rows(out)) == 2  # untouched
    args = ("train", recipe, "--out", str(out), "--set", "train.epochs=1", "--overwrite")
    assert run_cli(*args) == 0
    assert [r["epoch"] for r in rows(out)] == ["1"]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["epoch-0001"]
    assert read_json(out / "config.json")["recipe"]["train"]["epochs"] == 1


def test_a_recipe_error_found_when_building_writes_nothing(made, tmp_path, capsys):
    out = tmp_path / "out"
    args = ("train", str(made["root"] / "two.toml"), "--set", "train.batch_size=100000")
    line = usage_error(capsys, *args, "--out", str(out))
    assert "train.batch_size must be at most" in line
    assert not out.exists()


def test_overwrite_keeps_the_earlier_run_when_the_new_one_cannot_start(made, tmp_path, capsys):
    recipe = str(made["root"] / "tiny.toml")
    out = tmp_path / "out"
    assert run_cli("train", recipe, "--out", str(out)) == 0
    before = listing(out)
    args = ("train", recipe, "--out", str(out), "--overwrite", "--set", "train.batch_size=100000")
    line = usage_error(capsys, *args)
    assert "train.batch_size must be at most" in line
    assert listing(out) == before


# --- compare ---------------------------------------------------------------------------------


def test_compare_two_run_folders(made, tmp_path):
    out = tmp_path / "cmp"
    assert run_cli("compare", str(made["single"]), str(made["multi"]), "--out", str(out)) == 0
    for name in ("config.json", "summary.json", "table.csv", "curves.png", "report.md"):
        assert (out / name).is_file(), name
    assert read_json(out / "config.json")["command"] == "compare"
    summary = read_json(out / "summary.json")
    assert (summary["command"], summary["status"]) == ("compare", "completed")
    assert list(summary["final"]) == ["tiny", "plain", "l2"]
    assert summary["final"]["tiny"] == read_json(made["single"] / "summary.json")["final"]
    multi = read_json(made["multi"] / "summary.json")["final"]
    for variant in ("plain", "l2"):
        for k in FINAL:
            np.testing.assert_allclose(summary["final"][variant][k], multi[variant][k], rtol=1e-12)
    assert len(summary["runs"]) == 5
    report = (out / "report.md").read_text()
    assert "# Comparison of 5 runs: tiny, plain, l2" in report


def test_compare_of_a_folder_that_is_not_a_run(made, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ("compare", str(made["single"]), str(tmp_path / "empty"))
    line = usage_error(capsys, *args, "--out", str(tmp_path / "cmp"))
    assert str(tmp_path / "empty") in line
    assert "no summary.json" in line
    assert not (tmp_path / "cmp").exists()


# --- where the data is looked for ------------------------------------------------------------


def _isolate_data_search(monkeypatch, tmp_path):
    """No REGULAB_DATA_DIR and an empty home: the data is only where the test says."""
    import matplotlib

    monkeypatch.setenv("MPLCONFIGDIR", matplotlib.get_configdir())  # keep the font cache
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REGULAB_DATA_DIR", raising=False)


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"Fashion-MNIST is not in {FASHION}")
def test_data_dir_and_environment_reach_the_fashion_mnist_loader(tmp_path, monkeypatch):
    _isolate_data_search(monkeypatch, tmp_path)
    reduced = ["--set", "train.epochs=1", "--set", "model.hidden=[8]", "--set",
               "model.dropout=[0.5]", "--set", "train.eval_train=100"]  # fmt: skip
    recipe = str(RECIPES / "dropout_mlp_fashion.toml")
    out = tmp_path / "dir"
    data_dir = ("--data-dir", str(FASHION.parent))
    assert run_cli("train", recipe, *reduced, *data_dir, "--out", str(out)) == 0
    assert read_json(out / "config.json")["recipe"]["data"]["root"] == str(FASHION.parent)
    first = read_json(out / "summary.json")
    assert first["status"] == "completed"
    assert first["final"]["test_accuracy"] > 0.2  # real images: better than chance after 1 epoch

    monkeypatch.setenv("REGULAB_DATA_DIR", str(FASHION.parent))
    env = tmp_path / "env"
    assert run_cli("train", recipe, *reduced, "--out", str(env)) == 0
    assert read_json(env / "config.json")["recipe"]["data"]["root"] == ""
    assert rows(env) == rows(out)  # the same files, the same run


def test_missing_data_without_download_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _isolate_data_search(monkeypatch, tmp_path)
    env = tmp_path / "env"
    monkeypatch.setenv("REGULAB_DATA_DIR", str(env))
    out = tmp_path / "out"
    args = ("train", str(RECIPES / "dropout_mlp_fashion.toml"))
    capsys.readouterr()
    code = run_cli(*args, "--set", "data.download=false", "--out", str(out))
    err = capsys.readouterr().err
    assert code == 1  # not a usage error: the data is missing, as a run that fails
    assert "Traceback" not in err
    assert err.startswith("regulab train: error: Fashion-MNIST not found")
    searched = [line.split()[0] for line in err.splitlines() if line.startswith("  ")]
    assert searched[:3] == [
        str(env / "fashion-mnist"),
        str(env),
        str(tmp_path / "home" / ".cache" / "regulab" / "fashion-mnist"),
    ]  # $REGULAB_DATA_DIR, then the cache (an explicit --data-dir is used alone)
    assert "point --data-dir or REGULAB_DATA_DIR at the folder" in err
    assert not out.exists()

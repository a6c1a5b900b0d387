"""`regulab constraints`: the run folder, its documented keys, and bad input."""

import csv
import json

import pytest

from conftest import run_cli
from regulab.demos import equivalence


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("constraints") / "run"
    assert run_cli("constraints", "--fractions", "0.5", "--radius", "0.5", "--out", str(out)) == 0
    return out


def test_writes_the_documented_run_folder(run):
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "equivalence.csv",
        "geometry.png",
        "report.md",
        "summary.json",
    ]
    config = json.loads((run / "config.json").read_text())
    assert config["command"] == "constraints"
    assert config["settings"] == {"seed": 0, "fractions": [0.5], "radius": 0.5}
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) == {
        "command",
        "status",
        "seconds",
        "data",
        "tolerance",
        "max_rel_diff_w",
        "converged",
        "equivalent",
        "equivalence",
        "geometry",
    }
    assert summary["equivalent"] is True
    assert summary["max_rel_diff_w"] < 1e-6
    assert summary["converged"] is True
    assert [set(r) for r in summary["equivalence"]] == [set(equivalence.COLUMNS)]
    assert summary["geometry"]["radius"] == 0.5
    assert summary["geometry"]["l1_exact_zeros"] == 1


def test_csv_and_report_hold_the_same_numbers(run):
    summary = json.loads((run / "summary.json").read_text())
    with open(run / "equivalence.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["lambda"]) == pytest.approx(summary["equivalence"][0]["lambda"])
    report = (run / "report.md").read_text()
    assert "![L2 ball and L1 diamond](geometry.png)" in report
    assert "the same solution" in report


def test_prints_the_table_and_the_report_path(tmp_path, capsys):
    out = tmp_path / "r"
    assert run_cli("constraints", "--fractions", "0.9", "--out", str(out)) == 0
    text = capsys.readouterr().out
    assert "penalty" in text and "exact zeros: L2 0, L1 1" in text
    assert str(out / "report.md") in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fractions", "1.5"], "--fractions: must be a comma-separated list of distinct numbers"),
        (["--fractions", "0.5,0.5"], "--fractions"),
        (["--radius", "0"], "--radius: must be a finite number > 0; got '0'"),
        (["--seed", "-1"], "--seed"),
        (["--seed", "99999999999999999999"], "--seed: must be an integer in [0, 2^63)"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "r"
    assert run_cli("constraints", *args, "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()

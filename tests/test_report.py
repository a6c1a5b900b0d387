"""Report pieces: findings text, convergence check, tables and the figure."""

import matplotlib
import pytest

from regulab import report


def entry(lam, w, train, test):
    return {
        "lambda": lam,
        "seeds": 3,
        "w_norm_mean": w,
        "w_norm_std": 0.1,
        "train_loss_mean": train,
        "train_loss_std": 0.0,
        "test_loss_mean": test,
        "test_loss_std": 0.0,
    }


def test_findings_describe_overfitting_and_the_fix():
    text = report.findings([entry(0, 14, 1e-5, 90), entry(3, 0.4, 1e-3, 0.09)], 20, 200)
    assert "overfits" in text
    assert "shrinks ‖w‖ to 0.4 (35 times smaller)" in text
    assert "falls to 0.09 (1e+03 times lower)" in text
    assert "narrows from 90 to 0.089" in text


def test_findings_report_a_penalty_that_hurts():
    text = report.findings([entry(0, 1, 0.1, 0.2), entry(100, 0.01, 5, 6)], 20, 200)
    assert "overfits" not in text
    assert "rises to 6 (30 times higher)" in text
    assert "does not narrow" in text


def test_findings_with_one_lambda():
    text = report.findings([entry(1, 1, 0.1, 0.2)], 20, 200)
    assert "λ = 1" in text and "shrinks" not in text


def rows_for(values, lam=0.0):
    return [
        {"lambda": lam, "seed": 0, "epoch": e + 1, "test_loss": v, "train_loss": v, "w_norm": 1.0}
        for e, v in enumerate(values)
    ]


def test_still_falling():
    assert report.still_falling(rows_for([10.0] * 18 + [9.0, 8.0])) == {0.0: pytest.approx(0.2)}
    assert report.still_falling(rows_for([10.0] * 19 + [9.9])) == {}
    assert report.still_falling(rows_for([1.0])) == {}


def test_markdown_table_has_one_cell_per_column():
    table = report.markdown_table([entry(0, 14, 1e-5, 90), entry(3, 0.4, 1e-3, 0.09)])
    counts = {line.count("|") for line in table.splitlines()}
    assert counts == {len(report.TABLE_COLUMNS) + 1}


def test_plot_writes_a_png_and_leaves_the_backend_alone(tmp_path):
    backend = matplotlib.get_backend()
    rows = rows_for([3.0, 2.0, 1.0]) + rows_for([3.0, 1.0, 0.5], lam=3.0)
    report.plot_curves(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend

"""Report pieces: findings text, convergence check, tables and the figure."""

import matplotlib
import numpy as np
import pytest

from regulab import tables
from regulab.demos import weight_decay_report as report


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
    table = tables.markdown_table(*report.rows([entry(0, 14, 1e-5, 90), entry(3, 0.4, 1e-3, 0.09)]))
    counts = {line.count("|") for line in table.splitlines()}
    assert counts == {len(report.TABLE_COLUMNS) + 1}


def test_plot_draws_mean_and_band_per_lambda_on_log_axes(tmp_path):
    backend = matplotlib.get_backend()
    rows = []
    for seed, scale in ((0, 1.0), (1, 3.0)):
        for lam in (0.0, 3.0):
            rows += [
                {
                    "lambda": lam,
                    "seed": seed,
                    "epoch": e,
                    "train_loss": scale / e,
                    "test_loss": scale * (1 + lam),
                    "w_norm": 1.0,
                }
                for e in (1, 2, 3)
            ]
    fig = report.plot_curves(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["λ = 0  (2 seeds)", "λ = 3  (2 seeds)"]
    for ax, lam in zip(axes, (0.0, 3.0), strict=True):
        assert ax.get_yscale() == "log"
        train, test = ax.get_lines()
        np.testing.assert_allclose(
            train.get_ydata(), [2 / e for e in (1, 2, 3)]
        )  # mean of 1/e, 3/e
        np.testing.assert_allclose(test.get_ydata(), [2 * (1 + lam)] * 3)
        bands = ax.collections
        assert len(bands) == 2
        low, high = (
            bands[0].get_paths()[0].vertices[:, 1].min(),
            bands[0].get_paths()[0].vertices[:, 1].max(),
        )
        assert low == pytest.approx(1 / 3) and high == pytest.approx(3.0)  # min and max seed

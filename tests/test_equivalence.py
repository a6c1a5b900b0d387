"""Soft (penalty) and hard (projection) L2 reach the same solution; the 2-D L1/L2 picture."""

import math

import pytest
import torch

from regulab import ridge, synthetic_linear
from regulab.demos import equivalence, geometry


def demo_data(seed=0):
    return synthetic_linear(20, 200, seed=seed, dtype=torch.float64)


def test_bisection_finds_the_lambda_of_a_radius():
    x, y = demo_data()
    theta = 0.3 * float(ridge(x, y, 0.0)[0].square().sum())
    lam = equivalence.lambda_for_radius(x, y, theta)
    assert float(ridge(x, y, lam)[0].square().sum()) == pytest.approx(theta, rel=1e-9)
    assert equivalence.lambda_for_radius(x, y, 10.0) == 0.0  # inactive constraint


def test_constrained_and_penalized_solutions_agree_on_the_demo_problem():
    rows, info = equivalence.experiment(seed=0, fractions=(0.2, 0.7))
    assert info["n_train"] == 20 and info["num_inputs"] == 200
    assert equivalence.equivalent(rows)
    for row in rows:
        assert row["converged"]
        assert row["rel_diff_w"] <= equivalence.TOLERANCE
        assert row["max_abs_diff_w"] < 1e-8  # what is actually reached
        assert row["abs_diff_b"] < 1e-8
        assert row["max_abs_diff_closed_form"] < 1e-8
        assert row["w_norm_sq_hard"] == pytest.approx(row["theta"], rel=1e-9)
        assert row["lambda"] > 0


def test_the_constraint_binds_only_below_the_unconstrained_norm():
    x, y = demo_data()
    theta = 0.5 * float(ridge(x, y, 0.0)[0].square().sum())
    w, _, _, converged = equivalence.solve_constrained(x, y, theta)
    assert converged
    unconstrained, _, _, _ = equivalence.solve_penalized(x, y, 0.0)
    assert float(w.square().sum()) == pytest.approx(theta, rel=1e-9)
    assert float(unconstrained.square().sum()) > 1.9 * theta


def brute_force(points, center, curvature):
    values = geometry.loss(points, center, curvature)
    return points[int(values.argmin())]


def test_l2_optimum_is_the_best_point_of_the_circle():
    w = geometry.l2_optimum(1.0)
    angles = torch.linspace(0, 2 * math.pi, 200_001, dtype=torch.float64)
    circle = torch.stack([angles.cos(), angles.sin()], 1)
    best = brute_force(circle, geometry.CENTER, geometry.CURVATURE)
    assert (w - best).abs().max() < 1e-4
    assert float(w.norm()) == pytest.approx(1.0, rel=1e-12)
    assert int((w == 0).sum()) == 0


def test_l1_optimum_is_a_corner_of_the_diamond_with_an_exact_zero():
    w, lam = geometry.l1_optimum(1.0)
    t = torch.linspace(-1, 1, 100_001, dtype=torch.float64)
    edges = [torch.stack([t, s * (1 - t.abs())], 1) for s in (1.0, -1.0)]
    best = brute_force(torch.cat(edges), geometry.CENTER, geometry.CURVATURE)
    assert (w - best).abs().max() < 1e-4
    assert w[0] == 0.0  # exactly
    assert float(w.abs().sum()) == pytest.approx(1.0, rel=1e-9)
    assert lam > 0


def test_geometry_summary_and_figure():
    result = geometry.geometry(1.0)
    assert result["l1_exact_zeros"] == 1 and result["l2_exact_zeros"] == 0
    fig = geometry.plot_geometry(result)
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax, key in zip(axes, ("l2_optimum", "l1_optimum"), strict=True):
        marker = next(line for line in ax.get_lines() if line.get_marker() == "o")
        assert list(marker.get_xydata()[0]) == pytest.approx(result[key])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="fractions"):
        equivalence.experiment(fractions=(1.5,))
    with pytest.raises(ValueError, match="radius"):
        geometry.l2_optimum(-1.0)
    with pytest.raises(ValueError, match="positive definite"):
        geometry.l1_optimum(1.0, curvature=((1.0, 2.0), (2.0, 1.0)))


def test_the_experiment_uses_the_demos_training_set_and_initial_weights():
    from regulab.demos import weight_decay as demo

    (x32, y32), _, _ = demo.problem(3, demo.DemoConfig())
    g = torch.Generator().manual_seed(3)
    x, y = synthetic_linear(20, 200, generator=g, dtype=torch.float64)
    assert torch.equal(x.float(), x32) and torch.equal(y.float(), y32)
    _, info = equivalence.experiment(seed=3, fractions=(0.5,))
    assert info["ls_norm_sq"] == pytest.approx(float(ridge(x, y, 0.0)[0].square().sum()))


def test_a_solver_that_runs_out_of_steps_says_so_and_is_not_called_equivalent():
    rows, _ = equivalence.experiment(seed=0, fractions=(0.5,), max_steps=50)
    assert not rows[0]["converged"]
    assert rows[0]["steps_hard"] == 50
    assert not equivalence.equivalent(rows)

"""The table, equivalence.csv and report.md of `regulab constraints` (soft vs hard L2).

`results` is the list of row dicts of `equivalence.experiment`, one per theta
(keys `equivalence.COLUMNS`); `geo` is the 2-D picture of `geometry.geometry`.
"""

import csv

from regulab import tables
from regulab.demos.equivalence import COLUMNS, TOLERANCE, equivalent

TITLE = "‖w‖² ≤ θ (projection) vs λ‖w‖²/2 (penalty)"
HEADERS = ("θ", "λ", "‖w‖² hard", "‖w‖² soft", "max abs Δw", "Δw / max abs w", "steps hard/soft")


def rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, cells per theta) of the comparison table."""
    cells = [
        [
            f"{r['theta']:.4g}",
            f"{r['lambda']:.4g}",
            f"{r['w_norm_sq_hard']:.4g}",
            f"{r['w_norm_sq_soft']:.4g}",
            f"{r['max_abs_diff_w']:.1e}",
            f"{r['rel_diff_w']:.1e}",
            f"{r['steps_hard']} / {r['steps_soft']}"
            + ("" if r["converged"] else " (not converged)"),
        ]
        for r in results
    ]
    return list(HEADERS), cells


def rich_table(results: list[dict]):
    """The comparison as a rich Table for the terminal, framed under its title."""
    return tables.rich_table(*rows(results), left=0, title=TITLE)


def write_csv(results: list[dict], path) -> None:
    """One line per theta with the COLUMNS."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(results)


def markdown(results: list[dict], info: dict, geo: dict, figure: str) -> str:
    """report.md of the run: the comparison table, what it shows, and the 2-D figure."""
    worst = max(r["rel_diff_w"] for r in results)
    lines = [
        "# Soft vs hard L2 regularization",
        "",
        f"Data: the weight-decay demo's training set for seed {info['seed']} "
        f"({info['n_train']} examples, {info['num_inputs']} inputs). Without a constraint "
        f"the minimum-norm least-squares solution has ||w||^2 = {info['ls_norm_sq']:.4g}; "
        "each theta is a fraction of it. Hard: gradient descent with `max_norm_` "
        "projection onto ||w||^2 <= theta. Soft: gradient descent with `Penalty(l2=lambda)`, "
        "lambda found by bisection so that the ridge solution has ||w||^2 = theta. Both "
        "start from the demo's random initial weights and run until no weight moves by "
        "more than 1e-13 in a step.",
        "",
        tables.markdown_table(*rows(results), right=True),
    ]
    verdict = "the same solution" if equivalent(results) else "NOT shown to be the same solution"
    unconverged = [r for r in results if not r["converged"]]
    lines += [
        "",
        f"Largest difference between the two solutions, relative to the largest weight: "
        f"{worst:.1e} (tolerance {TOLERANCE:g}): {verdict}.",
        "",
        *(
            [
                "Not converged within the step limit for theta = "
                + ", ".join(format(r["theta"], ".4g") for r in unconverged)
                + ": near fraction 1 the "
                "penalty is tiny and removes the random start's null-space part only slowly.",
                "",
            ]
            if unconverged
            else []
        ),
        "## Why L1 gives zeros and L2 only shrinks",
        "",
        f"![L2 ball and L1 diamond]({figure})",
        "",
        f"Loss (w - c)^T A (w - c) / 2 with c = {geo['center']}, A = {geo['curvature']}, "
        f"radius r = {geo['radius']:g}. The L2-constrained optimum "
        f"({geo['l2_optimum'][0]:.4g}, {geo['l2_optimum'][1]:.4g}) has "
        f"{geo['l2_exact_zeros']} exact zeros; the L1-constrained optimum "
        f"({geo['l1_optimum'][0]:.4g}, {geo['l1_optimum'][1]:.4g}) has "
        f"{geo['l1_exact_zeros']} (proximal steps at L1 strength {geo['l1_strength']:.4g}). "
        "Where the contours first touch the diamond at a corner, a weight is exactly zero; "
        "a ball has no corners.",
        "",
    ]
    return "\n".join(lines)

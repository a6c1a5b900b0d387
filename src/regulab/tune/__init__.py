"""Tuning the mix of regularizers and their strengths by validation (issue 15).

- `space`: the search space (`parse_space`: "weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6)|off"
  or a dict) and `draw`, its configurations by a scrambled Sobol sequence.
- `budget`: the successive-halving plan that spends a budget of single-run equivalents
  (`halving_plan`), and Hyperband's brackets (`hyperband_plans`).
- `schedulers`: the decisions as tensor operations on (K,) metrics: which copies a rung keeps
  (`successive_halving_keep`, with regularization-aware promotion by `strength_bins`),
  population-based training's exploit and explore (`pbt_exploit_explore`, `Lineage`), and
  the rank agreement between a rung and the end (`rank_agreement`).
"""

from regulab.tune.budget import Plan, Rung, halving_plan, hyperband_plans
from regulab.tune.schedulers import (
    Cut,
    Lineage,
    pbt_exploit_explore,
    rank_agreement,
    strength_bins,
    successive_halving_keep,
)
from regulab.tune.space import HYPERPARAMETERS, Range, Space, draw, parse_space

__all__ = [
    "HYPERPARAMETERS",
    "Cut",
    "Lineage",
    "Plan",
    "Range",
    "Rung",
    "Space",
    "draw",
    "halving_plan",
    "hyperband_plans",
    "parse_space",
    "pbt_exploit_explore",
    "rank_agreement",
    "strength_bins",
    "successive_halving_keep",
]

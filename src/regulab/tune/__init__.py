"""Tuning the mix of regularizers and their strengths by validation (issue 15).

- `space`: the search space (`parse_space`: "weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6)|off"
  or a dict) and `draw`, its configurations by a scrambled Sobol sequence.
- `budget`: the successive-halving plan that spends a budget of single-run equivalents
  (`halving_plan`), and Hyperband's brackets (`hyperband_plans`).
- `schedulers`: the decisions as tensor operations on (K,) metrics: which copies a rung keeps
  (`successive_halving_keep`, with regularization-aware promotion by `strength_bins`),
  population-based training's exploit and explore (`pbt_exploit_explore`, `Lineage`), and
  the rank agreement between a rung and the end (`rank_agreement`).
- `tuner`: `Tuner`, all of the above on one `sweep.StackedRun` behind the scikit-learn
  contract (`fit(model, train, val)` -> `best_params_`, `best_model_`, `trials_`, `spent_`);
  `pbt`: its population-based training (`PbtPlan`); `trials`: its rows, one per
  configuration and rung, and the rank agreement read from them.
- `ray_engine`: `Tuner(engine="ray")`, Hyperband's brackets (`HyperbandPlan`) as Ray tasks,
  each a stacked successive-halving run, merged into one result; Ray imported lazily.
"""

from regulab.tune.budget import Plan, Rung, halving_plan, hyperband_plans
from regulab.tune.pbt import PbtPlan
from regulab.tune.ray_engine import HyperbandPlan
from regulab.tune.schedulers import (
    Cut,
    Lineage,
    pbt_exploit_explore,
    rank_agreement,
    strength_bins,
    successive_halving_keep,
)
from regulab.tune.space import HYPERPARAMETERS, Range, Space, draw, parse_space
from regulab.tune.tuner import Tuner

__all__ = [
    "HYPERPARAMETERS",
    "Cut",
    "HyperbandPlan",
    "Lineage",
    "PbtPlan",
    "Plan",
    "Range",
    "Rung",
    "Space",
    "Tuner",
    "draw",
    "halving_plan",
    "hyperband_plans",
    "parse_space",
    "pbt_exploit_explore",
    "rank_agreement",
    "strength_bins",
    "successive_halving_keep",
]

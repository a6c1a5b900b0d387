"""Population-based training on one stacked run (Jaderberg et al. 2017, arXiv:1711.09846).

K copies train the whole run and K stays full: after each exploit epoch the worst share
take the weights and optimizer state of better ones (`StackedRun.copy_into`) and perturbed
hyperparameters (`set_hparams`), as `schedulers.pbt_exploit_explore` decides; `Lineage`
records who copied whom. A diverged copy is replaced like the worst; only when every copy
has diverged is `NothingToChoose` raised. The budget: K copies x all epochs = K single-run
equivalents.
"""

import math
from dataclasses import dataclass

import torch

from regulab import _checks
from regulab.tune import trials
from regulab.tune.schedulers import Lineage, pbt_exploit_explore


@dataclass(frozen=True)
class PbtPlan:
    """PBT's schedule: `population` copies for all `epochs`, exploit and explore after each
    epoch of `exploits`; it costs `population` single-run equivalents."""

    population: int
    epochs: int
    exploits: tuple[int, ...]
    budget: float

    @property
    def copy_epochs(self) -> int:
        return self.population * self.epochs

    @property
    def cost(self) -> float:
        return self.copy_epochs / self.epochs

    def __str__(self) -> str:
        return (
            f"population-based training: {self.population} copies for {self.epochs} epochs, "
            f"exploit and explore after epochs {', '.join(map(str, self.exploits))}; cost "
            f"{self.cost:.2f} of budget {self.budget:g} single-run equivalents"
        )


def pbt_plan(budget, epochs: int, configs=None, interval=None, fraction=0.25) -> PbtPlan:
    """The population (configs, by default floor(budget); at most budget) and the exploit
    epochs (every `interval`, by default epochs // 4), checked; ValueError in one line."""
    budget = _checks.positive("budget", budget)
    fraction = _checks.positive("pbt_fraction", fraction)
    if fraction > 0.5:
        raise ValueError(f"pbt_fraction must be a number in (0, 0.5]; got {fraction:g}")
    k = math.floor(budget) if configs is None else _checks.positive_int("configs", configs)
    if k > budget * (1 + 1e-12):
        raise ValueError(
            f"budget must be at least configs = {k} single-run equivalents for pbt ({k} copies "
            f"train all {epochs} epochs); got {budget:g}: raise the budget or lower configs"
        )
    if math.floor(fraction * k) < 1:
        raise ValueError(
            f"configs must be at least {math.ceil(1 / fraction)} for pbt with pbt_fraction "
            f"{fraction:g} (the worst share is replaced at each step); got {k}"
        )
    interval = max(1, epochs // 4) if interval is None else interval
    if _checks.positive_int("pbt_interval", interval) >= epochs:
        raise ValueError(
            f"pbt_interval must be an integer in [1, epochs = {epochs}) so that PBT exploits at "
            f"least once; got {interval}"
        )
    return PbtPlan(k, epochs, tuple(range(interval, epochs, interval)), budget)


def train(run, plan: PbtPlan, space, val, metric: str, fraction: float, seed: int, on_rung=None):
    """Train `run` (a `StackedRun`) by plan: (rows, copy-epochs, the last (K,) metric, the
    `Lineage`). Perturbations draw from a generator seeded by seed, not torch's own;
    on_rung(rows) is called with each step's rows."""
    rows, spent, mode = [], 0, trials.METRICS[metric]
    lineage, generator = Lineage(run.k), torch.Generator().manual_seed(seed)
    for i, epoch in enumerate((*plan.exploits, plan.epochs), 1):
        spent += run.k * (epoch - run.epoch)
        run.train_epochs(epoch - run.epoch)
        score, metrics = trials.score(run, val, metric)
        if not torch.isfinite(score).any():
            raise trials.all_diverged(run)
        status = ["alive" if ok else "diverged" for ok in torch.isfinite(score).tolist()]
        if epoch == plan.epochs:
            rows += trials.rows(run.ids, i, epoch, run.hparams, metrics, status)
            if on_rung is not None:
                on_rung(rows[-run.k :])
            break
        src, dst, new = pbt_exploit_explore(
            score, run.hparams, space, fraction, mode=mode, generator=generator
        )
        for k in dst.tolist():
            status[k] = "replaced" if status[k] == "alive" else status[k]
        rows += trials.rows(run.ids, i, epoch, run.hparams, metrics, status)
        if on_rung is not None:
            on_rung(rows[-run.k :])
        lineage.record(epoch, src, dst)
        if len(dst):
            run.copy_into(src, dst)
            run.set_hparams({name: v[dst] for name, v in new.items()}, index=dst)
    return rows, spent, score, lineage

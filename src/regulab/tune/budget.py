"""The budget planner: successive halving (Jamieson & Talwalkar 2016, arXiv:1502.07943) and
Hyperband's brackets (Li et al. 2018, arXiv:1603.06560) fitted to a budget.

The budget is in single-run equivalents: copy-epochs / E, where E is the epochs of one run.
Survivors train on from where they were (continuation: nothing restarts), so a plan with
rungs at epochs r_0 < r_1 < ... < r_s = E and n_i copies alive up to r_i costs

    sum_i n_i * (r_i - r_{i-1}) / E      (r_{-1} = 0)

With n_0 = eta**s and r_i = E / eta**(s-i) each rung after the first costs E (1 - 1/eta),
the first E, so the bracket costs 1 + s (1 - 1/eta): the issue's 27 configurations with
eta = 3 have rungs at E/27, E/9, E/3, E with 27, 9, 3, 1 alive and cost
1 + 2/3 + 2/3 + 2/3 = 3.0. (Restarting each rung from scratch, Hyperband's own accounting,
would cost s + 1 = 4.)

Rungs are whole epochs: r_i = E / eta**(s-i) rounded half up, the first no earlier than
`grace` (strong regularizers start slower) and each at least `min_epochs` after the one
before; a number of cuts s whose rungs collide is not used. A cut keeps
max(finalists, n_i // eta) copies (finalists = 1 by default: with more, the choice is made
among configurations trained to the end, and they can vote as an ensemble); a rung where
nothing would be cut is merged into the next.
"""

import math
from dataclasses import dataclass

from regulab import _checks


@dataclass(frozen=True)
class Rung:
    """Copies `alive` are trained up to `epoch` (counted from the start); then the cut."""

    epoch: int
    alive: int


@dataclass(frozen=True)
class Plan:
    """A successive-halving plan: its rungs, what one run is (epochs), eta and the budget."""

    rungs: tuple[Rung, ...]
    epochs: int  # E: the epochs of one run; the last rung's epoch
    eta: int  # a cut keeps one copy in eta
    budget: float  # single-run equivalents the plan was fitted to

    @property
    def configs(self) -> int:
        """Configurations drawn: the copies alive in the first rung."""
        return self.rungs[0].alive

    @property
    def copy_epochs(self) -> int:
        """Epochs trained, summed over copies (continuation: survivors go on from their rung)."""
        edges = [0, *(r.epoch for r in self.rungs)]
        return sum(r.alive * (edges[i + 1] - edges[i]) for i, r in enumerate(self.rungs))

    @property
    def cost(self) -> float:
        """Single-run equivalents spent: copy_epochs / epochs."""
        return self.copy_epochs / self.epochs

    def __str__(self) -> str:
        lines = [
            f"successive halving: {self.configs} configurations, eta {self.eta}, "
            f"{len(self.rungs)} rung{'s' * (len(self.rungs) > 1)}, cost {self.cost:.2f} of "
            f"budget {self.budget:g} "
            f"single-run equivalents ({self.copy_epochs} copy-epochs, {self.epochs} per run)",
            f"{'rung':>4} {'epoch':>6} {'alive':>6} {'kept':>6} {'copy-epochs':>12}",
        ]
        previous = 0
        for i, r in enumerate(self.rungs):
            kept = str(self.rungs[i + 1].alive) if i + 1 < len(self.rungs) else "-"
            spent = r.alive * (r.epoch - previous)
            lines.append(f"{i + 1:>4} {r.epoch:>6} {r.alive:>6} {kept:>6} {spent:>12}")
            previous = r.epoch
        return "\n".join(lines)


def rung_epochs(epochs: int, eta: int, cuts: int, grace: int = 1, min_epochs: int = 1):
    """The rung epochs of a bracket with `cuts` cuts (a list ending at epochs), or None if
    rounding, grace and min_epochs leave no room for them."""
    rungs = [math.floor(epochs / eta ** (cuts - i) + 0.5) for i in range(cuts + 1)]
    rungs[0] = max(rungs[0], grace, min_epochs)
    if any(b - a < min_epochs for a, b in zip([0, *rungs], rungs, strict=False)):
        return None
    return rungs


def _plan(n: int, rungs: list[int], epochs: int, eta: int, budget: float, finalists=1) -> Plan:
    """n configurations on these rung epochs; rungs where nothing is cut merge into the next."""
    alive = [n]
    for _ in rungs[1:]:
        alive.append(min(alive[-1], max(finalists, alive[-1] // eta)))
    kept = [
        Rung(epoch, a)
        for i, (epoch, a) in enumerate(zip(rungs, alive, strict=True))
        if i + 1 == len(rungs) or alive[i + 1] < a
    ]
    return Plan(tuple(kept), epochs, eta, budget)


def _fits(plan: Plan, budget: float) -> bool:
    return plan.copy_epochs <= budget * plan.epochs * (1 + 1e-12)


def _most_configs(rungs, epochs: int, eta: int, budget: float, least: int, finalists=1):
    """The plan on these rungs with the most configurations (>= least) within budget, or None."""
    plan = lambda n: _plan(n, rungs, epochs, eta, budget, finalists)  # noqa: E731
    lo, hi = least, max(least, math.floor(budget * epochs / rungs[0]))  # the first rung alone
    if not _fits(plan(lo), budget):
        return None
    while lo < hi:  # cost grows with n: the last n that fits
        mid = (lo + hi + 1) // 2
        if _fits(plan(mid), budget):
            lo = mid
        else:
            hi = mid - 1
    return plan(lo)


def _check(budget, epochs, eta, grace, min_epochs) -> float:
    budget = _checks.positive("budget", budget)
    _checks.positive_int("epochs", epochs)
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ValueError(f"eta must be an integer >= 2 (a cut keeps one copy in eta); got {eta!r}")
    for name, value in (("min_epochs", min_epochs), ("grace", grace)):
        if _checks.positive_int(name, value) > epochs:
            raise ValueError(f"{name} must be an integer in [1, epochs = {epochs}]; got {value}")
    if budget < 1:
        raise ValueError(
            f"budget must be at least 1 single-run equivalent (one configuration trained for all "
            f"{epochs} epochs); got {budget:g}"
        )
    return budget


def _brackets(epochs, eta, grace, min_epochs) -> dict[int, list[int]]:
    """cuts -> rung epochs, for every number of cuts whose rungs fit in the epochs."""
    out, cuts = {}, 0
    while eta**cuts <= epochs:
        rungs = rung_epochs(epochs, eta, cuts, grace, min_epochs)
        if rungs is not None:
            out[cuts] = rungs
        cuts += 1
    return out


def halving_plan(
    budget: float,
    epochs: int,
    eta: int = 3,
    *,
    configs: int | None = None,
    grace: int = 1,
    min_epochs: int = 1,
    finalists: int = 1,
) -> Plan:
    """The successive-halving plan that spends `budget` (single-run equivalents) best.

    Without `configs`: the plan with the most configurations whose cost <= budget; on a tie
    the one closest to the budget, then the one with fewer rungs. With `configs`: the plan
    for that many whose cost is closest to the budget from below. budget=3, epochs=27,
    eta=3 gives 27 configurations, rungs at epochs 1, 3, 9, 27 and cost 3.0. finalists:
    the copies trained to the last epoch (at least; every cut keeps at least that many).
    """
    budget = _check(budget, epochs, eta, grace, min_epochs)
    _checks.positive_int("finalists", finalists)
    if finalists > budget:
        raise ValueError(
            f"finalists must be at most the budget ({budget:g} single-run equivalents: each "
            f"finalist trains all {epochs} epochs); got {finalists}"
        )
    brackets = _brackets(epochs, eta, grace, min_epochs)
    if configs is None:
        plans = [
            _most_configs(r, epochs, eta, budget, finalists, finalists) for r in brackets.values()
        ]
        key = lambda p: (p.configs, p.copy_epochs, -len(p.rungs))  # noqa: E731
        return max((p for p in plans if p is not None), key=key)
    _checks.positive_int("configs", configs)
    if finalists > configs:
        raise ValueError(f"finalists must be at most configs = {configs}; got {finalists}")
    plans = [_plan(configs, r, epochs, eta, budget, finalists) for r in brackets.values()]
    fitting = [p for p in plans if _fits(p, budget)]
    if not fitting:
        cheapest = min(plans, key=lambda p: p.copy_epochs)
        raise ValueError(
            f"budget must be at least {cheapest.cost:.4g} single-run equivalents for "
            f"{configs} configurations (eta {eta}, rungs at epochs "
            f"{', '.join(str(r.epoch) for r in cheapest.rungs)} of {epochs}); got {budget:g}: "
            "raise the budget or lower configs"
        )
    return max(fitting, key=lambda p: (p.copy_epochs, -len(p.rungs)))


def hyperband_plans(
    budget: float,
    epochs: int,
    eta: int = 3,
    *,
    brackets: int | None = None,
    grace: int = 1,
    min_epochs: int = 1,
) -> list[Plan]:
    """Hyperband's brackets, most cuts first: each an independent successive halving with its
    own number of cuts s (rungs from E / eta**s), given an equal share of the budget and
    as many configurations (at least eta**s) as the share allows. `brackets` keeps the
    first few (the most aggressive); by default every s whose rungs fit in the epochs.
    """
    budget = _check(budget, epochs, eta, grace, min_epochs)
    found = _brackets(epochs, eta, grace, min_epochs)
    cuts = sorted(found, reverse=True)
    if brackets is not None:
        _checks.positive_int("brackets", brackets)
        if brackets > len(cuts):
            raise ValueError(
                f"brackets must be an integer in [1, {len(cuts)}] for {epochs} epochs with "
                f"eta {eta}; got {brackets}"
            )
        cuts = cuts[:brackets]
    share = budget / len(cuts)
    plans = [_most_configs(found[s], epochs, eta, share, eta**s) for s in cuts]
    if None in plans:
        need = max(_plan(eta**s, found[s], epochs, eta, share).cost for s in cuts)
        raise ValueError(
            f"budget must be at least {need * len(cuts):.4g} single-run equivalents for "
            f"{len(cuts)} Hyperband brackets (eta {eta}, {epochs} epochs: {need:.4g} each); "
            f"got {budget:g}: raise the budget or pass fewer brackets"
        )
    return plans

"""The budget planner: cost accounting against a loop over copy-epochs, and a brute-force search."""

import itertools
import math

import pytest

from regulab.tune.budget import Rung, halving_plan, hyperband_plans


def copy_epochs_by_loop(plan) -> int:
    """Walk the epochs one by one and count the copies trained in each."""
    total = 0
    for epoch in range(1, plan.epochs + 1):
        total += next(r.alive for r in plan.rungs if r.epoch >= epoch)
    return total


def test_the_issues_example_27_configurations_with_eta_3_cost_3():
    plan = halving_plan(3, epochs=27, eta=3)
    assert plan.rungs == (Rung(1, 27), Rung(3, 9), Rung(9, 3), Rung(27, 1))
    assert plan.configs == 27 and plan.copy_epochs == 81 and plan.cost == 3.0
    # 27 x 1 epoch + 9 x 2 more + 3 x 6 more + 1 x 18 more = E (1 + 3 x 2/3)
    assert copy_epochs_by_loop(plan) == 27 * 1 + 9 * 2 + 3 * 6 + 1 * 18
    longer = halving_plan(3, epochs=54, eta=3)
    assert [r.epoch for r in longer.rungs] == [2, 6, 18, 54] and longer.cost == 3.0


def test_a_plan_prints_as_a_small_table():
    lines = str(halving_plan(3, epochs=27)).splitlines()
    assert lines[0] == (
        "successive halving: 27 configurations, eta 3, 4 rungs, cost 3.00 of budget 3 "
        "single-run equivalents (81 copy-epochs, 27 per run)"
    )
    assert lines[1].split() == ["rung", "epoch", "alive", "kept", "copy-epochs"]
    assert [line.split() for line in lines[2:]] == [
        ["1", "1", "27", "9", "27"],
        ["2", "3", "9", "3", "18"],
        ["3", "9", "3", "1", "18"],
        ["4", "27", "1", "-", "18"],
    ]


COMBOS = list(
    itertools.product([1, 1.3, 2, 3, 4.5, 7, 12], [2, 3, 4], [1, 5, 10, 27, 30, 100], [1, 3])
)


@pytest.mark.parametrize("budget, eta, epochs, grace", COMBOS)
def test_cost_matches_a_loop_over_copy_epochs_and_stays_within_budget(budget, eta, epochs, grace):
    if grace > epochs:
        return
    plan = halving_plan(budget, epochs, eta, grace=grace)
    assert plan.copy_epochs == copy_epochs_by_loop(plan)
    assert plan.cost == plan.copy_epochs / epochs <= budget
    epochs_ = [r.epoch for r in plan.rungs]
    alive = [r.alive for r in plan.rungs]
    assert epochs_[-1] == epochs and epochs_ == sorted(set(epochs_))
    assert len(plan.rungs) == 1 or epochs_[0] >= grace
    assert alive == sorted(set(alive), reverse=True)  # every rung cuts
    assert all(b >= max(1, a // eta) for a, b in itertools.pairwise(alive))
    # the most configurations: one more fits no bracket
    with pytest.raises(ValueError, match="budget must be at least"):
        halving_plan(budget, epochs, eta, grace=grace, configs=plan.configs + 1)


def brute_force(budget, epochs, eta, grace=1, finalists=1):
    """The most configurations within budget over every bracket, by plain loops."""
    best = None
    for cuts in range(8):
        if eta**cuts > epochs:  # the first rung would be under one epoch before rounding
            break
        rungs = [math.floor(epochs / eta ** (cuts - i) + 0.5) for i in range(cuts + 1)]
        rungs[0] = max(rungs[0], grace)
        if any(b <= a for a, b in zip([0, *rungs], rungs, strict=False)):
            continue
        for n in range(finalists, 5000):
            alive, spent, previous = n, 0, 0
            for epoch in rungs:
                spent += alive * (epoch - previous)
                previous, alive = epoch, min(alive, max(finalists, alive // eta))
            if spent > budget * epochs:
                break
            if best is None or (n, spent) > best[:2]:
                best = (n, spent)
    return best


@pytest.mark.parametrize(
    "budget, eta, epochs", [(3, 3, 27), (3, 3, 30), (2.2, 2, 20), (5, 4, 64), (1.5, 3, 81)]
)
def test_the_plan_has_as_many_configurations_as_brute_force_finds(budget, eta, epochs):
    plan = halving_plan(budget, epochs, eta)
    assert (plan.configs, plan.copy_epochs) == brute_force(budget, epochs, eta)


@pytest.mark.parametrize(
    "budget, eta, epochs, finalists", [(3, 3, 20, 2), (4, 2, 20, 3), (6, 3, 27, 3), (3, 3, 27, 1)]
)
def test_finalists_train_to_the_end_and_the_plan_is_still_the_largest(
    budget, eta, epochs, finalists
):
    plan = halving_plan(budget, epochs, eta, finalists=finalists)
    assert plan.rungs[-1].alive == finalists and plan.rungs[-1].epoch == epochs
    assert all(r.alive >= finalists for r in plan.rungs)
    assert plan.copy_epochs == copy_epochs_by_loop(plan) and plan.cost <= budget
    assert (plan.configs, plan.copy_epochs) == brute_force(budget, epochs, eta, 1, finalists)
    with pytest.raises(ValueError, match=r"finalists must be at most the budget \(3 single"):
        halving_plan(3, epochs, eta, finalists=4)
    with pytest.raises(ValueError, match="finalists must be at most configs = 2; got 3"):
        halving_plan(3, epochs, eta, configs=2, finalists=3)


def test_with_configs_the_plan_comes_closest_to_the_budget_from_below():
    plan = halving_plan(10, epochs=27, eta=3, configs=20)
    # 20 full runs cost 20, one cut at epoch 9 costs 10.67: two cuts (epochs 3, 9) it is
    assert [(r.epoch, r.alive) for r in plan.rungs] == [(3, 20), (9, 6), (27, 2)]
    assert plan.cost == pytest.approx((20 * 3 + 6 * 6 + 2 * 18) / 27, abs=1e-12)
    assert halving_plan(5, epochs=27, configs=5).cost == 5.0  # five full runs fit


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"budget": 0.5}, r"budget must be at least 1 single-run equivalent \(one configuration "
                          r"trained for all 27 epochs\); got 0.5"),
        ({"budget": -1}, "budget must be a finite number > 0; got -1"),
        ({"budget": float("nan")}, "budget must be a finite number > 0; got nan"),
        # (100 x 1 + 33 x 2 + 11 x 6 + 3 x 18) / 27 = 10.59
        ({"budget": 2, "configs": 100}, r"budget must be at least 10.59 single-run equivalents "
                                         r"for 100 configurations \(eta 3, rungs at epochs 1, "
                                         r"3, 9, 27 of 27\); got 2: raise the budget or lower "
                                         r"configs"),
        ({"budget": 3, "eta": 1}, "eta must be an integer >= 2"),
        ({"budget": 3, "grace": 30}, r"grace must be an integer in \[1, epochs = 27\]; got 30"),
        ({"budget": 3, "configs": 0}, "configs must be a positive integer"),
        ({"budget": 3, "min_epochs": 28}, r"min_epochs must be an integer in \[1, epochs = 27\]"),
    ],
)  # fmt: skip
def test_bad_budgets_are_refused_with_the_numbers(kwargs, message):
    with pytest.raises(ValueError, match=message):
        halving_plan(epochs=27, **kwargs)


def test_a_grace_period_moves_the_first_cut_later():
    plan = halving_plan(3, epochs=27, eta=3, grace=5)
    assert plan.rungs[0].epoch >= 5
    assert [r.epoch for r in plan.rungs] == [5, 9, 27]  # rungs at 1 and 3 would cut too soon


def test_min_epochs_keeps_rungs_apart():
    plan = halving_plan(3, epochs=27, eta=3, min_epochs=3)
    assert [(r.epoch, r.alive) for r in plan.rungs] == [(3, 13), (9, 4), (27, 1)]  # not 1, 3, ...
    assert plan.cost == 3.0  # 13 x 3 + 4 x 6 + 1 x 18 = 81


def test_hyperband_brackets_share_the_budget():
    plans = hyperband_plans(12, epochs=27, eta=3)
    assert [p.rungs[0].epoch for p in plans] == [1, 3, 9, 27]  # most cuts first
    assert [p.configs for p in plans] == [27, 13, 5, 3]
    for cuts, plan in zip([3, 2, 1, 0], plans, strict=True):
        assert plan.configs >= 3**cuts and plan.cost <= 3.0
        assert plan.copy_epochs == copy_epochs_by_loop(plan)
    assert sum(p.cost for p in plans) <= 12
    two = hyperband_plans(6, epochs=27, eta=3, brackets=2)
    assert [len(p.rungs) for p in two] == [4, 3]


def test_hyperband_refuses_a_budget_too_small_for_its_brackets():
    message = (
        r"budget must be at least 12 single-run equivalents for 4 Hyperband brackets "
        r"\(eta 3, 27 epochs: 3 each\); got 4"
    )
    with pytest.raises(ValueError, match=message):
        hyperband_plans(4, epochs=27, eta=3)
    with pytest.raises(ValueError, match=r"brackets must be an integer in \[1, 4\]"):
        hyperband_plans(12, epochs=27, brackets=5)

"""The schedulers' decisions: against sorted() and hand-written loops, and scipy's Spearman."""

import numpy as np
import pytest
import torch
from scipy import stats

from regulab.tune.schedulers import (
    Lineage,
    pbt_exploit_explore,
    rank_agreement,
    strength_bins,
    successive_halving_keep,
)
from regulab.tune.space import draw, parse_space

NAN, INF = float("nan"), float("inf")


def key_of(metric, mode):
    """The sort key of a finite copy: best first, lowest index first on ties."""
    return lambda i: (metric[i] if mode == "min" else -metric[i], i)


def random_metric(seed, K):
    """Metrics with ties (few distinct values) and a few diverged copies."""
    rng = np.random.default_rng(seed)
    metric = rng.integers(0, 5, K).astype(float)
    metric[rng.random(K) < 0.15] = rng.choice([NAN, INF, -INF])
    return metric.tolist()


@pytest.mark.parametrize("seed", range(30))
def test_kept_copies_match_sorted(seed):
    K = 3 + seed % 10
    metric = random_metric(seed, K)
    finite = [i for i in range(K) if np.isfinite(metric[i])]
    for mode in ("min", "max"):
        for keep in range(1, K + 2):
            cut = successive_halving_keep(torch.tensor(metric), keep, mode)
            expected = sorted(sorted(finite, key=key_of(metric, mode))[:keep])
            assert cut.kept.tolist() == expected
            assert cut.diverged.tolist() == [i for i in range(K) if i not in finite]
            assert cut.kept.dtype == torch.long


def test_ties_go_to_the_lowest_index_and_diverged_copies_go_first():
    metric = torch.tensor([0.3, 0.1, NAN, 0.1, 0.1, INF, 0.0])
    cut = successive_halving_keep(metric, 3)
    assert cut.kept.tolist() == [1, 3, 6] and cut.diverged.tolist() == [2, 5]
    assert successive_halving_keep(metric, 10).kept.tolist() == [0, 1, 3, 4, 6]
    everything_diverged = successive_halving_keep(torch.full((3,), NAN), 1)
    assert everything_diverged.kept.tolist() == [] and everything_diverged.diverged.tolist() == [
        0,
        1,
        2,
    ]


def promoted_by_loop(metric, keep, mode, labels):
    """The definition, spelled out: the best finite copy of every label of every column goes
    first (best first), then the rest by rank, up to keep."""
    K = len(metric)
    finite = [i for i in range(K) if np.isfinite(metric[i])]
    key = key_of(metric, mode)
    protected = set()
    for column in zip(*labels, strict=True):
        for label in set(column):
            members = [i for i in finite if column[i] == label]
            if members:
                protected.add(min(members, key=key))
    order = sorted(finite, key=lambda i: (i not in protected, key(i)))
    return sorted(order[:keep])


@pytest.mark.parametrize("seed", range(30))
def test_regularization_aware_promotion_matches_its_definition(seed):
    rng = np.random.default_rng(100 + seed)
    K = 4 + seed % 12
    metric = random_metric(seed, K)
    labels = rng.integers(0, 4, (K, 1 + seed % 3)).tolist()
    for mode in ("min", "max"):
        for keep in range(1, K + 1):
            cut = successive_halving_keep(torch.tensor(metric), keep, mode, groups=labels)
            assert cut.kept.tolist() == promoted_by_loop(metric, keep, mode, labels)


def test_a_slow_strongly_regularized_configuration_survives_with_promotion_only():
    space = parse_space("weight_decay=log(1e-5,1e-1)")
    hparams = {"weight_decay": torch.tensor([1e-5, 2e-5, 5e-5, 1e-4, 3e-2, 5e-2])}
    # early in training the weakly regularized copies look best; the strong ones lag
    val_loss = torch.tensor([0.50, 0.52, 0.55, 0.60, 0.90, 0.95])
    bins = strength_bins(hparams, space, bins=2)  # [1e-5, 1e-3) and [1e-3, 1e-1]
    assert bins[:, 0].tolist() == [0, 0, 0, 0, 1, 1]
    assert successive_halving_keep(val_loss, 2).kept.tolist() == [0, 1]
    assert successive_halving_keep(val_loss, 2, groups=bins).kept.tolist() == [0, 4]


def test_strength_bins_split_each_range_on_its_own_scale_with_off_apart():
    space = parse_space("weight_decay=log(1e-4,1e-1)|off dropout=uniform(0,0.6)")
    hparams = {
        "weight_decay": torch.tensor([2e-4, 3e-3, 5e-2, 0.0, 1e-1]),
        "dropout": torch.tensor([0.0, 0.19, 0.21, 0.5, 0.6], dtype=torch.float64),
    }
    assert strength_bins(hparams, space, bins=3).tolist() == [
        [0, 0],
        [1, 0],
        [2, 1],
        [3, 2],  # weight decay off: a bin of its own
        [2, 2],  # the top of the range belongs to the last bin
    ]


def test_bad_arguments_are_refused_in_one_line():
    with pytest.raises(ValueError, match="keep must be a positive integer"):
        successive_halving_keep(torch.zeros(3), 0)
    with pytest.raises(ValueError, match="mode must be one of 'min', 'max'; got 'best'"):
        successive_halving_keep(torch.zeros(3), 1, "best")
    with pytest.raises(ValueError, match="metric must be a 1-D tensor"):
        successive_halving_keep(torch.zeros(3, 2), 1)
    with pytest.raises(ValueError, match=r"groups must be integer labels .* K = 3 .* \(4,\)"):
        successive_halving_keep(torch.zeros(3), 1, groups=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 0.5\]; got 0.6"):
        pbt_exploit_explore(torch.zeros(4), {}, "l2=uniform(0,1)", 0.6)
    with pytest.raises(ValueError, match=r"hparams must hold .* \(l2, l1\); l1 missing"):
        pbt_exploit_explore(torch.zeros(4), {"l2": torch.zeros(4)}, "l2=uniform(0,1) l1=log(1,2)")
    with pytest.raises(ValueError, match=r"hparams\['l2'\] must be a tensor of shape \(4,\)"):
        pbt_exploit_explore(torch.zeros(4), {"l2": torch.zeros(3)}, "l2=uniform(0,1)")


def test_pbt_copies_hyperparameters_outside_the_space_as_they_are():
    hparams = {"l2": torch.tensor([0.1, 0.2, 0.3, 0.4]), "seed": torch.tensor([10, 11, 12, 13])}
    src, dst, new = pbt_exploit_explore(
        torch.tensor([4.0, 3, 2, 1]), hparams, "l2=uniform(0,1)", resample=0.0
    )
    assert (src.tolist(), dst.tolist()) == ([3], [0])
    assert new["seed"].tolist() == [13, 11, 12, 13]
    assert new["l2"][0].item() in (pytest.approx(0.4 * 0.8), pytest.approx(0.4 * 1.25))


SPACE = parse_space("weight_decay=log(1e-5,1e-1)|off dropout=uniform(0,0.6) crop=uniform(0,4)")


@pytest.mark.parametrize("seed", range(10))
def test_pbt_bottom_copies_take_the_top_and_perturb_within_the_space(seed):
    K = 16
    metric = torch.tensor(random_metric(seed, K))
    hparams = draw(SPACE, K, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.get_rng_state()
    src, dst, new = pbt_exploit_explore(metric, hparams, SPACE, 0.25, resample=0.0, generator=gen)
    assert torch.equal(torch.get_rng_state(), torch_state)
    finite = [i for i in range(K) if torch.isfinite(metric[i])]
    order = sorted(finite, key=key_of(metric.tolist(), "min"))
    diverged = [i for i in range(K) if i not in finite]
    n = max(4, len(diverged))
    expected_dst = sorted(diverged + order[len(order) - (n - len(diverged)) :])
    assert dst.tolist() == expected_dst and len(src) == len(dst)
    assert set(src.tolist()) <= set(order[:4]) and not set(src.tolist()) & set(dst.tolist())
    for name, values in new.items():
        assert values.shape == (K,) and values.dtype == hparams[name].dtype
        unchanged = [i for i in range(K) if i not in expected_dst]
        assert torch.equal(values[unchanged], hparams[name][unchanged])
    for s, d in zip(src.tolist(), dst.tolist(), strict=True):
        wd, old = new["weight_decay"][d].item(), hparams["weight_decay"][s].item()
        if old == 0:
            assert wd == 0  # off stays off
        else:
            assert wd in (
                pytest.approx(min(max(old * f, 1e-5), 1e-1), rel=1e-12) for f in (0.8, 1.25)
            )
        p, p_old = new["dropout"][d].item(), hparams["dropout"][s].item()
        assert p in (pytest.approx(min(p_old * f, 0.6), rel=1e-12) for f in (0.8, 1.25))
        crop, crop_old = new["crop"][d].item(), hparams["crop"][s].item()
        assert 0 <= crop <= 4 and (crop != crop_old or crop_old in (0, 4))


def test_pbt_resampled_values_stay_in_the_space_and_runs_repeat_by_generator():
    metric = torch.arange(12.0)
    hparams = draw(SPACE, 12, seed=0)
    runs = [
        pbt_exploit_explore(
            metric, hparams, SPACE, 0.5, resample=1.0, generator=torch.Generator().manual_seed(3)
        )
        for _ in range(2)
    ]
    (src, dst, new), (src2, _, new2) = runs
    assert dst.tolist() == list(range(6, 12)) and set(src.tolist()) <= set(range(6))
    assert torch.equal(src, src2) and all(torch.equal(new[k], new2[k]) for k in new)
    for r in SPACE:
        on = new[r.name][new[r.name] != 0] if r.p_off else new[r.name]
        assert on.min() >= r.low and on.max() <= r.high


def test_pbt_with_every_copy_diverged_copies_nothing():
    src, dst, _ = pbt_exploit_explore(torch.full((4,), NAN), draw(SPACE, 4), SPACE)
    assert src.tolist() == dst.tolist() == []


def test_lineage_records_parents_and_follows_weights_back_to_their_origin():
    lineage = Lineage(4)
    lineage.record(2, src=[0], dst=[3])
    lineage.record(4, src=[3, 2], dst=[1, 0])
    assert lineage.parents.tolist() == [[0, 1, 2, 0], [2, 3, 2, 3]]
    assert lineage.origin().tolist() == [2, 0, 2, 0]
    assert lineage.rows() == [
        {"epoch": 2, "copy": 3, "parent": 0},
        {"epoch": 4, "copy": 0, "parent": 2},
        {"epoch": 4, "copy": 1, "parent": 3},
    ]


def test_lineage_origin_matches_copying_labels_step_by_step():
    K, gen = 10, torch.Generator().manual_seed(0)
    hparams = draw(SPACE, K)
    weights = list(range(K))  # each copy's weights, named by the copy they started in
    lineage = Lineage(K)
    for step in range(6):
        metric = torch.rand(K, generator=gen)
        src, dst, hparams = pbt_exploit_explore(metric, hparams, SPACE, 0.3, generator=gen)
        weights_before = list(weights)
        for s, d in zip(src.tolist(), dst.tolist(), strict=True):
            weights[d] = weights_before[s]
        lineage.record(step, src, dst)
    assert lineage.origin().tolist() == weights


@pytest.mark.parametrize("seed", range(10))
def test_rank_agreement_equals_scipys_spearman_over_copies_finite_in_both(seed):
    rng = np.random.default_rng(seed)
    rung = rng.integers(0, 6, 20).astype(float)  # ties
    end = rung + rng.normal(0, 2, 20)
    rung[rng.random(20) < 0.1] = NAN
    end[rng.random(20) < 0.1] = INF
    both = np.isfinite(rung) & np.isfinite(end)
    expected = stats.spearmanr(rung[both], end[both]).statistic
    assert rank_agreement(torch.tensor(rung), torch.tensor(end)) == pytest.approx(
        expected, abs=1e-12
    )


def test_rank_agreement_is_nan_without_two_ranked_copies():
    assert np.isnan(rank_agreement([1.0, NAN], [1.0, 2.0]))
    assert np.isnan(rank_agreement([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="end_metric must have one value per copy"):
        rank_agreement([1.0, 2.0], [1.0])

"""The schedulers' decisions as tensor operations on the (K,) metrics of K stacked copies.

- `successive_halving_keep`: the copies a rung keeps (Jamieson & Talwalkar 2016,
  arXiv:1502.07943), with regularization-aware promotion: the best copy of every strength
  range (`strength_bins`) goes first, so a strongly regularized configuration that starts
  slower competes with its own kind before the rest are ranked together.
- `pbt_exploit_explore`: population-based training's truncation selection and perturbation
  (Jaderberg et al. 2017, arXiv:1711.09846); `Lineage` records who copied whom.
- `rank_agreement`: Spearman's rank correlation between a rung's metric and the end's.

Metrics that are NaN or infinite mark copies that diverged: they are cut first and never
copied from. Ties go to the lowest copy index.
"""

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from regulab import _checks
from regulab.tune.space import OFF_VALUE, parse_space

MODES = ("min", "max")


class Cut(NamedTuple):
    """A rung's decision: copy indices kept and those that diverged, both ascending."""

    kept: torch.Tensor  # LongTensor: index into the stacked state (index_select keeps order)
    diverged: torch.Tensor  # LongTensor: copies whose metric was NaN or infinite


def best_first(metric: torch.Tensor, mode: str) -> torch.Tensor:
    """Copy indices best first, diverged last; equal metrics in index order."""
    _checks.one_of("mode", mode, MODES)
    if not isinstance(metric, torch.Tensor) or metric.ndim != 1:
        raise ValueError(f"metric must be a 1-D tensor, one value per copy; got {metric!r}")
    m = metric.detach().double()
    key = torch.where(torch.isfinite(m), m if mode == "min" else -m, torch.inf)
    return torch.sort(key, stable=True).indices


def successive_halving_keep(metric, keep: int, mode: str = "min", *, groups=None) -> Cut:
    """The `keep` best copies by `metric` ("min": lowest is best, "max": highest).

    Diverged copies are dropped first (and listed); if fewer than `keep` are finite, every
    finite one is kept. With `groups` ((K,) or (K, G) integer labels, such as
    `strength_bins`), the promotion is regularization-aware: in each column, the best
    finite copy of every label is protected; the kept copies are the protected ones best
    first, then the others best first, up to `keep`.
    """
    _checks.positive_int("keep", keep)
    order = best_first(metric, mode)
    K = len(order)
    finite = torch.isfinite(metric.detach())
    rank = torch.empty(K, dtype=torch.long)
    rank[order] = torch.arange(K)
    priority = rank.clone()
    if groups is not None:
        protected = _protected(rank, finite, _labels(groups, K))
        priority = torch.where(protected, rank, rank + K)  # protected ones first, by rank
    chosen = torch.sort(priority, stable=True).indices[: min(keep, int(finite.sum()))]
    diverged = torch.nonzero(~finite).flatten()
    return Cut(torch.sort(chosen).values, diverged)


def _labels(groups, K: int) -> torch.Tensor:
    given = torch.as_tensor(groups)
    g = given[:, None] if given.ndim == 1 else given
    if g.ndim != 2 or g.shape[0] != K or g.dtype.is_floating_point or g.dtype == torch.bool:
        raise ValueError(
            f"groups must be integer labels of shape (K,) or (K, G) with K = {K} copies; "
            f"got {given.dtype} of shape {tuple(given.shape)}"
        )
    return g.long()


def _protected(rank, finite, labels) -> torch.Tensor:
    """Copies that are the best finite one of their label in some column."""
    K = len(rank)
    score = torch.where(finite, rank, K)  # diverged copies never win a label
    protected = torch.zeros(K, dtype=torch.bool)
    for col in labels.T:
        _, label = torch.unique(col, return_inverse=True)
        best = torch.full((int(label.max()) + 1,), K).scatter_reduce(0, label, score, "amin")
        protected |= finite & (score == best[label])
    return protected


def strength_bins(hparams: dict, space, bins: int = 3) -> torch.Tensor:
    """(K, H) labels: each hyperparameter's range split into `bins` equal parts on its own
    scale (log for log ranges), label `bins` for copies where the technique is off."""
    space = parse_space(space)
    _checks.positive_int("bins", bins)
    columns = []
    for r in space:
        v = hparams[r.name]
        label = (r.unit(v) * bins).floor().long().clamp(max=bins - 1)
        off = v == OFF_VALUE if r.p_off > 0 else torch.zeros_like(label, dtype=torch.bool)
        columns.append(torch.where(off, bins, label))
    return torch.stack(columns, dim=1)


def pbt_exploit_explore(
    metric,
    hparams: dict,
    space,
    fraction: float = 0.25,
    perturb: tuple[float, float] = (0.8, 1.25),
    *,
    resample: float = 0.1,
    mode: str = "min",
    generator: torch.Generator | None = None,
):
    """PBT's exploit and explore: (src, dst, new hparams).

    The bottom floor(fraction K) copies (and every diverged one) take the weights of a copy
    drawn uniformly from the top floor(fraction K) finite ones: `state[dst] = state[src]`.
    Each of their hyperparameters in the space is the source's times a factor drawn from
    `perturb`, or with probability `resample` a fresh draw from the space; then clipped to
    the range. An off technique stays off unless resampled; pixels move by at least one.
    Other entries of `hparams` are copied from the source as they are. K is unchanged.
    """
    space = parse_space(space)
    fraction = _checks.positive("fraction", fraction)
    if fraction > 0.5:
        raise ValueError(f"fraction must be a number in (0, 0.5]; got {fraction:g}")
    resample = _checks.probability("resample", resample)
    if len(perturb) != 2 or not all(_checks.positive("perturb", f) for f in perturb):
        raise ValueError(f"perturb must be two factors > 0, such as (0.8, 1.25); got {perturb!r}")
    gen = generator if generator is not None else torch.Generator()
    order = best_first(metric, mode)
    _check_hparams(hparams, space, len(order))
    finite = torch.isfinite(metric.detach())
    n, n_diverged = int(fraction * len(order)), int((~finite).sum())
    top = order[: min(max(n, n_diverged > 0), len(order) - n_diverged)]
    bottom = order[len(order) - max(n, n_diverged) :]  # diverged copies sort last
    if len(top) == 0 or len(bottom) == 0:
        return order[:0], order[:0], {k: v.clone() for k, v in hparams.items()}
    dst = torch.sort(bottom).values
    src = top[torch.randint(len(top), (len(dst),), generator=gen)]
    new = {k: v.clone() for k, v in hparams.items()}
    for name, values in new.items():
        values[dst] = hparams[name][src]
    for r in space:
        new[r.name][dst] = _explore(r, hparams[r.name][src], perturb, resample, gen)
    return src, dst, new


def _check_hparams(hparams, space, K: int) -> None:
    missing = [n for n in space.names if n not in hparams]
    if missing:
        raise ValueError(
            f"hparams must hold a (K,) tensor for every hyperparameter of the space "
            f"({', '.join(space.names)}); {', '.join(missing)} missing"
        )
    for name, values in hparams.items():
        if not isinstance(values, torch.Tensor) or values.shape != (K,):
            shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values)
            raise ValueError(
                f"hparams[{name!r}] must be a tensor of shape ({K},), one value per copy; "
                f"got {shape}"
            )


def _explore(r, v, perturb, resample, gen) -> torch.Tensor:
    """Perturbed (or resampled) values of one range, clipped to it."""
    pick = torch.randint(2, v.shape, generator=gen)
    factor = torch.tensor(perturb, dtype=torch.float64)[pick]
    moved = v.double() * factor
    if r.integer:  # round, and move by one at least: 1 * 1.25 would stay at 1
        step = torch.where(factor > 1, 1.0, -1.0)
        moved = torch.where(moved.round() == v, v + step, moved.round())
    off = (v == OFF_VALUE) & (r.p_off > 0)  # a range without |off has no off value
    moved = torch.where(off, v.double(), moved.clamp(r.low, r.high))
    fresh = r.value(torch.rand(v.shape, generator=gen, dtype=torch.float64)).double()
    fresh = torch.where(torch.rand(v.shape, generator=gen) < r.p_off, OFF_VALUE, fresh)
    out = torch.where(torch.rand(v.shape, generator=gen) < resample, fresh, moved)
    return out.to(v.dtype)


@dataclass
class Lineage:
    """Who copied whom in PBT: for every exploit step, each copy's parent (itself if kept)."""

    copies: int  # K
    epochs: list[int] = field(default_factory=list)  # the epoch of each exploit step
    steps: list[torch.Tensor] = field(default_factory=list)  # (K,) parents, one per step

    def record(self, epoch: int, src, dst) -> None:
        parents = torch.arange(self.copies)
        parents[torch.as_tensor(dst, dtype=torch.long)] = torch.as_tensor(src, dtype=torch.long)
        self.epochs.append(epoch)
        self.steps.append(parents)

    @property
    def parents(self) -> torch.Tensor:
        """(steps, K) LongTensor: parents[t, k] = the copy whose weights k took at step t."""
        return torch.stack(self.steps) if self.steps else torch.empty(0, self.copies).long()

    def origin(self) -> torch.Tensor:
        """(K,): the copy at the start whose weights each copy descends from."""
        who = torch.arange(self.copies)
        for parents in reversed(self.steps):
            who = parents[who]
        return who

    def rows(self) -> list[dict]:
        """One row per copy replaced at a step: epoch, copy, parent (for trials.csv)."""
        return [
            {"epoch": e, "copy": k, "parent": int(p[k])}
            for e, p in zip(self.epochs, self.steps, strict=True)
            for k in torch.nonzero(p != torch.arange(self.copies)).flatten().tolist()
        ]


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n, ties sharing their mean rank (scipy.stats.rankdata's 'average')."""
    values, order = torch.sort(x)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = mean_rank[inverse]
    return ranks


def rank_agreement(rung_metric, end_metric) -> float:
    """Spearman's rho between two metrics over the copies finite in both (NaN if < 2 or
    either is constant): how well a rung's order predicts the end's."""
    a, b = (torch.as_tensor(m).detach().double().flatten() for m in (rung_metric, end_metric))
    if a.shape != b.shape:
        raise ValueError(
            f"end_metric must have one value per copy like rung_metric ({len(a)}); got {len(b)}"
        )
    both = torch.isfinite(a) & torch.isfinite(b)
    ra, rb = _average_ranks(a[both]), _average_ranks(b[both])
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))

"""Which channels to remove: a global ranking by |gamma| (arXiv:1708.06519, section 4).

Channels are grouped with Torch-Pruning's dependency graph (`slim.coupling`): the output
channels of a BatchNorm and everything that must shrink with them (the convolution before
it, the inputs of the layers after it, and for a residual addition every branch added to
it) form one group, whose channels are removed together.

A unit is what goes at once: one channel of one group, or where the group feeds a layer with
G channel groups (a grouped convolution) one position in each of the G groups,
so that every group keeps the same width (Torch-Pruning's MetaPruner does the same). A
channel's score is the largest |gamma| on it among the group's BatchNorms (a coupled channel
goes only when every scale on it is small), or with score="normalized" the same after
dividing each layer's |gamma| by its largest; a unit of several channels scores their mean
(as MetaPruner averages over channel groups). The plan removes exactly
round(ratio x units) units, lowest scores first, and never leaves a group below its floor of
channels (min_channels, max_layer_ratio); where units are G channels wide a group keeps at
least the floor rounded up to whole units. When the floors make the count impossible, the
plan says by how much. Equal scores (a fresh initialization: every gamma 1) are cut in
proportion across their groups, not in group order, with a warning. Groups whose channels
Torch-Pruning cannot re-index (a split, a channel shuffle) are held: listed, not pruned.
A plan is data: print it, then `surgery.prune` applies it.
"""

import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from regulab import _checks
from regulab.bn_sparsity import bn_layers
from regulab.slim.coupling import Coupling, build_graph, couplings, dependency_groups

__all__ = ["GroupPlan", "Plan", "build_graph", "dependency_groups", "plan"]

SCORES = ("gamma", "normalized")
FEW_TIES = 3  # more equal scores than this where the cut falls: warn


@dataclass
class GroupPlan:
    """One coupled group: its BatchNorms, its width before and after, what goes."""

    layers: list[str]  # names of the group's BatchNorm layers (the first one is its root)
    channels: int  # width before
    floor: int  # the fewest channels it may keep
    removed: list[int] = field(default_factory=list)  # channel indices of the root BatchNorm
    threshold: float | None = None  # the largest score removed here
    unit: int = 1  # channels that go together (G where a layer has G channel groups)
    held: str = ""  # why some or all of its channels may not go ("" if all may)
    fixed: int = 0  # how many of its channels may not go (see held)

    @property
    def keep(self) -> int:
        return self.channels - len(self.removed)


@dataclass
class Plan:
    """The channels to remove; `requested` may exceed `removed` only when floors forbid."""

    ratio: float
    score: str
    units: int  # prunable units (a channel, or one per channel group), each counted once
    requested: int
    removed: int  # units removed
    threshold: float | None  # the largest score removed overall
    groups: list[GroupPlan]
    note: str = ""

    def __str__(self) -> str:
        lines = [
            f"prune {self.removed} of {self.units} {_what(self.groups)} (ratio {self.ratio:g}, "
            f"requested {self.requested}), score {self.score}, global threshold "
            f"{'-' if self.threshold is None else f'{self.threshold:.4g}'}",
            f"{'layer':<40} {'before':>6} {'after':>6} {'threshold':>10}",
        ]
        for g in self.groups:
            name = g.layers[0] + (f" (+{len(g.layers) - 1} coupled)" if len(g.layers) > 1 else "")
            t = "-" if g.threshold is None else f"{g.threshold:.4g}"
            flags = (f" units of {g.unit} channels" if g.unit > 1 else "") + (
                " held" if g.held else ""
            )
            lines.append(f"{name:<40} {g.channels:>6} {g.keep:>6} {t:>10}{flags}")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def _what(groups: list[GroupPlan]) -> str:
    """What the plan counts: channels, or units where a grouped layer joins channels (a
    group's row then says how many channels its unit holds)."""
    return "channels" if all(g.unit == 1 for g in groups) else "units"


def _check(model, ratio, min_channels, max_layer_ratio, score) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio < 1:
        raise ValueError(f"ratio must be a number in [0, 1); got {ratio!r}")
    _checks.positive_int("min_channels", min_channels)
    if not 0 < max_layer_ratio <= 1:
        raise ValueError(f"max_layer_ratio must be in (0, 1]; got {max_layer_ratio!r}")
    _checks.one_of("score", score, SCORES)
    if not bn_layers(model):
        raise ValueError(
            f"model must have BatchNorm layers to slim (their scales rank the channels); "
            f"{type(model).__name__} has none"
        )


def channel_scores(model: nn.Module, coupling: Coupling, score: str) -> torch.Tensor:
    """Per root channel, the largest (normalized) |gamma| on it among the group's BatchNorms."""
    modules = dict(model.named_modules())
    scores = torch.zeros(coupling.channels, dtype=torch.float64)
    for name, idx in coupling.members:
        gamma = modules[name].weight.detach().abs().double().cpu()
        if score == "normalized":
            gamma = gamma / gamma.max().clamp_min(1e-30)
        reached = [c for c in range(coupling.channels) if idx[c] is not None]
        member = gamma[[idx[c] for c in reached]]
        scores[reached] = torch.maximum(scores[reached], member)
    return scores


def ranked_units(couples: list[Coupling], scores: list) -> list:
    """(score, share, group index, channels) of every unit (its score: its channels' mean),
    in removal order: lowest score first; among equal scores, the unit whose group has lost
    the smallest share of its equal units first, so that ties are cut in proportion across
    groups, not in group order."""
    units = []
    for gi, (couple, s) in enumerate(zip(couples, scores, strict=True)):
        values = [float(s[u].mean()) for u in couple.units]
        tied: dict[float, int] = {}
        for v in values:
            tied[v] = tied.get(v, 0) + 1
        seen: dict[float, int] = {}
        for u, v in zip(couple.units, values, strict=True):
            j = seen[v] = seen.get(v, -1) + 1
            units.append((v, (j + 0.5) / tied[v], gi, sorted(u)))
    return sorted(units, key=lambda t: (t[0], t[1], t[2], t[3][0]))


def plan(
    model: nn.Module,
    ratio: float,
    example_input,
    *,
    min_channels: int = 1,
    max_layer_ratio: float = 1.0,
    score: str = "gamma",
) -> Plan:
    """Plan the removal of round(ratio x prunable units), lowest scores first.

    min_channels: the fewest channels any group keeps; max_layer_ratio: the largest
    share of one group's channels that may go (1.0: no limit beyond min_channels).
    Warns when equal scores decide the cut and when groups are held; raises ValueError
    when ratio > 0 and every group is held.
    """
    _check(model, ratio, min_channels, max_layer_ratio, score)
    couples = couplings(model, example_input)
    groups, scores = [], []
    for c in couples:
        floor = max(min_channels, math.ceil(c.channels * (1 - max_layer_ratio) - 1e-9))
        unit = max((len(u) for u in c.units), default=1)
        names = list(dict.fromkeys(n for n, _ in c.members))
        fixed = c.channels - sum(len(u) for u in c.units)
        groups.append(GroupPlan(names, c.channels, min(floor, c.channels), unit=unit,
                                held=c.held, fixed=fixed))  # fmt: skip
        scores.append(channel_scores(model, c, score))
    units = ranked_units(couples, scores)
    _refuse_if_all_held(model, ratio, groups, units)
    requested = round(ratio * len(units))
    removed, last = 0, None
    for value, _, gi, channels in units:
        if removed == requested:
            break
        g = groups[gi]
        if g.keep - len(channels) >= g.floor:
            g.removed += channels
            g.threshold = last = value
            removed += 1
    for g in groups:
        g.removed.sort()
    if removed == requested and last is not None:
        _warn_ties(units, groups, last)
    thresholds = [g.threshold for g in groups if g.threshold is not None]
    return Plan(
        ratio=float(ratio),
        score=score,
        units=len(units),
        requested=requested,
        removed=removed,
        threshold=max(thresholds) if thresholds else None,
        groups=groups,
        note=_note(groups, removed, requested, min_channels, max_layer_ratio),
    )


def _refuse_if_all_held(model, ratio, groups: list[GroupPlan], units: list) -> None:
    held = [g for g in groups if g.held]
    if held and not units and ratio > 0:
        more = f" (and {len(held) - 1} more groups)" if len(held) > 1 else ""
        raise ValueError(
            f"nothing in {type(model).__name__} can be pruned: layer {held[0].layers[0]}"
            f"{more}: {held[0].held}"
        )
    if held and ratio > 0:
        warnings.warn(_held_line(groups), stacklevel=3)


def _held_line(groups: list[GroupPlan]) -> str:
    held = [g for g in groups if g.held]
    return (
        f"{sum(g.fixed for g in held)} channels in {len(held)} of the {len(groups)} groups "
        f"are left unpruned; first: layer {held[0].layers[0]}: {held[0].held}"
    )


def _warn_ties(units: list, groups: list[GroupPlan], last: float) -> None:
    """Warn when more than FEW_TIES units share the score the cut stopped at, some cut and
    some kept: which of them go is then arbitrary (a scale of 0 is no such case)."""
    tied = [(gi, ch[0]) for v, _, gi, ch in units if v == last]
    removed = [set(g.removed) for g in groups]
    cut = sum(1 for gi, c in tied if c in removed[gi])
    if last > 0 and len(tied) > FEW_TIES and cut < len(tied):
        warnings.warn(
            f"{len(tied)} of the {len(units)} channel scores tie at {last:.4g} where the cut "
            f"falls, so which of them go is arbitrary (cut in proportion across their layers); "
            "BatchNorm sparsity training (slim.sparsity_penalty, [slim] sparsity) is what "
            "makes the scales differ",
            stacklevel=3,
        )


def _note(groups, removed, requested, min_channels, max_layer_ratio) -> str:
    lines = []
    if removed < requested:
        lines.append(
            f"the floors allow removing only {removed} of the {requested} {_what(groups)} "
            "requested "
            f"({requested - removed} fewer: min_channels={min_channels}, "
            f"max_layer_ratio={max_layer_ratio:g})"
        )
    if any(g.held for g in groups):
        lines.append(_held_line(groups))
    return "\n".join(lines)

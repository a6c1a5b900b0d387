"""Which channels to remove: a global ranking by |gamma| (arXiv:1708.06519, section 4).

Channels are grouped with Torch-Pruning's dependency graph: the output channels of
a BatchNorm and everything that must shrink with them (the convolution before it,
the inputs of the layers after it, and for a residual addition every branch added
to it) form one group, whose channels are removed together. A unit is one channel
of one group; its score is the largest |gamma| among the group's BatchNorms at that
channel (a coupled channel goes only when every scale on it is small), or with
score="normalized" the same after dividing each layer's |gamma| by its largest.
The plan removes exactly round(ratio x units), the lowest scores first, and never
leaves a group below its floor; when the floors make that impossible it says by
how much. A plan is data: print it, then `surgery.prune` applies it.
"""

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from regulab import _checks
from regulab.bn_sparsity import BATCH_NORMS, bn_layers

SCORES = ("gamma", "normalized")


@dataclass
class GroupPlan:
    """One coupled group: its BatchNorms, its width before and after, what goes."""

    layers: list[str]  # names of the group's BatchNorm layers (the first one is its root)
    channels: int  # width before
    floor: int  # the fewest channels it may keep
    removed: list[int] = field(default_factory=list)  # channel indices of the root BatchNorm
    threshold: float | None = None  # the largest score removed here

    @property
    def keep(self) -> int:
        return self.channels - len(self.removed)


@dataclass
class Plan:
    """The channels to remove; `requested` may exceed `removed` only when floors forbid."""

    ratio: float
    score: str
    units: int  # prunable channels, each coupled channel counted once
    requested: int
    removed: int
    threshold: float | None  # the largest score removed overall
    groups: list[GroupPlan]
    note: str = ""

    def __str__(self) -> str:
        lines = [
            f"prune {self.removed} of {self.units} channels (ratio {self.ratio:g}, "
            f"requested {self.requested}), score {self.score}, global threshold "
            f"{'-' if self.threshold is None else f'{self.threshold:.4g}'}",
            f"{'layer':<40} {'before':>6} {'after':>6} {'threshold':>10}",
        ]
        for g in self.groups:
            name = g.layers[0] + (f" (+{len(g.layers) - 1} coupled)" if len(g.layers) > 1 else "")
            t = "-" if g.threshold is None else f"{g.threshold:.4g}"
            lines.append(f"{name:<40} {g.channels:>6} {g.keep:>6} {t:>10}")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def build_graph(model: nn.Module, example_input):
    """Torch-Pruning's dependency graph of model (traced by a forward: model must be in eval
    mode, or its BatchNorm statistics move). Refuses parameters outside the layers that
    Torch-Pruning can index-prune, which it would otherwise cut along a guessed dimension."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=example_input, verbose=False
    )
    if graph.unwrapped_parameters:
        names = sorted(graph._param_to_name[p] for p, _ in graph.unwrapped_parameters)
        owners = {n.rpartition(".")[0] or "(the model itself)" for n in names}
        kinds = {type(model.get_submodule(o)).__name__ if o != "(the model itself)" else
                 type(model).__name__ for o in owners}  # fmt: skip
        raise ValueError(
            f"the surgery cannot handle layer {', '.join(sorted(owners))} "
            f"({', '.join(sorted(kinds))}): its parameter(s) {', '.join(names)} are not part "
            "of a layer Torch-Pruning knows how to shrink (Conv, Linear, BatchNorm, ...); "
            "remove the layer or register a pruner for it"
        )
    return graph


def dependency_groups(model: nn.Module, example_input) -> list[list[tuple[str, list]]]:
    """Coupled BatchNorm groups, each a list of (name, idx) with the root first: idx[c] is the
    member's channel that goes with root channel c, or None if c does not reach it (a
    BatchNorm after a concatenation takes part of its channels from each input's group).

    A BatchNorm is a root unless an earlier group reached it. The graph is traced on a
    copy in eval mode, so the model's BatchNorm statistics are not touched.
    """
    import torch_pruning as tp

    traced = copy.deepcopy(model).eval()
    names = {m: n for n, m in traced.named_modules()}
    graph = build_graph(traced, example_input)
    groups, seen = [], set()
    for name, _ in bn_layers(model):
        if name in seen:
            continue
        bn = traced.get_submodule(name)
        everything = list(range(bn.num_features))
        group = graph.get_pruning_group(bn, tp.prune_batchnorm_out_channels, idxs=everything)
        maps = {name: dict(enumerate(everything))}  # root channel -> member channel
        for item in group.items:
            target = item.dep.target.module
            if isinstance(target, BATCH_NORMS) and names.get(target) != name:
                pairs = zip(item.root_idxs, item.idxs, strict=True)
                maps.setdefault(names[target], {}).update({int(r): int(i) for r, i in pairs})
        seen.update(maps)
        groups.append([(n, [m.get(c) for c in everything]) for n, m in maps.items()])
    return groups


def plan(
    model: nn.Module,
    ratio: float,
    example_input,
    *,
    min_channels: int = 1,
    max_layer_ratio: float = 1.0,
    score: str = "gamma",
) -> Plan:
    """Plan the removal of round(ratio x prunable channels), lowest scores first.

    min_channels: the fewest channels any group keeps; max_layer_ratio: the largest
    share of one group's channels that may go (1.0: no limit beyond min_channels).
    """
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
    modules = dict(model.named_modules())
    groups, units = [], []
    for members in dependency_groups(model, example_input):
        channels = len(members[0][1])
        floor = max(min_channels, math.ceil(channels * (1 - max_layer_ratio) - 1e-9))
        scores = torch.zeros(channels, dtype=torch.float64)
        for name, idx in members:
            gamma = modules[name].weight.detach().abs().double().cpu()
            if score == "normalized":
                gamma = gamma / gamma.max().clamp_min(1e-30)
            reached = [c for c in range(channels) if idx[c] is not None]
            member = gamma[[idx[c] for c in reached]]
            scores[reached] = torch.maximum(scores[reached], member)
        g = GroupPlan([n for n, _ in members], channels, min(floor, channels))
        groups.append(g)
        units += [(float(scores[c]), len(groups) - 1, c) for c in range(channels)]
    requested = round(ratio * len(units))
    removed = 0
    for value, gi, c in sorted(units):
        if removed == requested:
            break
        g = groups[gi]
        if g.keep > g.floor:
            g.removed.append(c)
            g.threshold = value
            removed += 1
    for g in groups:
        g.removed.sort()
    note = ""
    if removed < requested:
        note = (
            f"the floors allow removing only {removed} of the {requested} channels requested "
            f"({requested - removed} fewer: min_channels={min_channels}, "
            f"max_layer_ratio={max_layer_ratio:g})"
        )
    thresholds = [g.threshold for g in groups if g.threshold is not None]
    return Plan(
        ratio=float(ratio),
        score=score,
        units=len(units),
        requested=requested,
        removed=removed,
        threshold=max(thresholds) if thresholds else None,
        groups=groups,
        note=note,
    )

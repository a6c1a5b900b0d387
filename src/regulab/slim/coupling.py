"""Which channels must go together: Torch-Pruning's dependency groups, read into data.

Every BatchNorm that no earlier group reached roots a group: Torch-Pruning's graph
lists every layer that must shrink with its output channels. From it:

- members: the group's BatchNorms, root first, and which channel of each goes with each
  root channel (after a concatenation a BatchNorm takes part of its channels from each input);
- units: the root channels that go together. A layer with G channel groups (a grouped
  convolution; a depthwise one is not grouped here) stays valid only if each of its groups
  loses the same positions, so channel p goes with p + w, p + 2w, ... (w = channels / G), as
  Torch-Pruning's own pruners do (MetaPruner's channel groups); root channels that reach one
  channel of a layer go together too (a concatenation feeding a residual addition);
- held: why channels cannot go (`held.held_reason`: ops Torch-Pruning cannot re-index,
  norms over channels together). Such a group is held whole.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn

from regulab.bn_sparsity import BATCH_NORMS, bn_layers
from regulab.metrics import forward
from regulab.slim.held import held_reason


@dataclass
class Coupling:
    """One group of coupled channels (see the module docstring)."""

    members: list[tuple[str, list]]  # (BatchNorm name, idx): idx[c] goes with root channel c;
    # a BatchNorm that a root channel reaches in several places is listed once per place
    units: list[list[int]]  # root channels that go together; channels in none stay
    held: str = ""  # why channels in no unit stay ("" when every channel is in a unit)

    @property
    def channels(self) -> int:
        return len(self.members[0][1])


def build_graph(model: nn.Module, example_input):
    """Torch-Pruning's dependency graph of model (traced by a forward: model must be in eval
    mode, or its BatchNorm statistics move). Refuses parameters outside the layers that
    Torch-Pruning can index-prune, which it would otherwise cut along a guessed dimension.
    An example_input the model does not take is refused first (`check_input`)."""
    import torch_pruning as tp

    check_input(model, example_input)

    try:
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input, verbose=False
        )
    except (ArithmeticError, IndexError) as e:  # raised inside Torch-Pruning
        raise ValueError(
            f"Torch-Pruning cannot trace {type(model).__name__} ({type(e).__name__}: {e}); "
            "slimming needs a graph it can follow"
        ) from e
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


def check_input(model: nn.Module, example_input) -> None:
    """One forward of model on example_input (as the trace calls it); ValueError naming
    example_input, its shape and torch's message if the model does not take it."""
    try:
        with torch.no_grad():
            forward(model, example_input)
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else "(no message)"
        raise ValueError(
            f"example_input must be an input {type(model).__name__} takes (a batch of one "
            f"is enough); got {_shape(example_input)}, on which the model raised "
            f"{type(e).__name__}: {text}"
        ) from e


def _shape(value) -> str:
    """A tensor's shape, or the shapes in a tuple or dict of tensors, for error messages."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_shape(v)}" for k, v in value.items()) + "}"
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_shape(v) for v in value) + ")"
    return f"a {type(value).__name__}"


def couplings(model: nn.Module, example_input) -> list[Coupling]:
    """The coupled groups of model, one per root BatchNorm, in the model's order.

    The graph is traced on a copy in eval mode, so the model's BatchNorm statistics are
    not touched.
    """
    traced = copy.deepcopy(model).eval()
    names = {m: n for n, m in traced.named_modules()}
    graph = build_graph(traced, example_input)
    out, seen = [], set()
    for name, _ in bn_layers(model):
        if name not in seen:
            try:
                out.append(coupling(graph, traced, name, names))
            except (ArithmeticError, IndexError) as e:  # raised inside Torch-Pruning
                raise ValueError(
                    f"Torch-Pruning cannot follow the channels of layer {name} "
                    f"({type(e).__name__}: {e}); slimming needs a graph it can follow"
                ) from e
            seen.update(n for n, _ in out[-1].members)
    return out


def coupling(graph, traced: nn.Module, name: str, names: dict) -> Coupling:
    """The group rooted at BatchNorm `name` of the traced model."""
    import torch_pruning as tp

    bn = traced.get_submodule(name)
    everything = list(range(bn.num_features))
    group = graph.get_pruning_group(bn, tp.prune_batchnorm_out_channels, idxs=everything)
    maps = {name: {c: {c} for c in everything}}  # root channel -> member channels
    for item in group.items:
        target = item.dep.target.module
        if isinstance(target, BATCH_NORMS) and names.get(target) != name:
            member = maps.setdefault(names[target], {})
            for r, i in zip(item.root_idxs, item.idxs, strict=True):
                member.setdefault(int(r), set()).add(int(i))
    members = [
        (n, idx)
        for n, m in maps.items()
        for idx in _columns(m, traced.get_submodule(n).num_features, everything)
    ]
    held = held_reason(group, names)
    if held:
        return Coupling(members, [], held)
    items = group.items
    if cyclic(graph, bn, items):  # each channel's own group shows what it takes along
        probes = (graph.get_pruning_group(bn, tp.prune_batchnorm_out_channels, idxs=[c])
                  for c in everything)  # fmt: skip
        items = [item for probe in probes for item in probe.items]
    return Coupling(members, *channel_units(items, graph, names, len(everything)))


def _columns(mapping: dict, size: int, everything: list) -> list[list]:
    """mapping (root channel -> member channels) as lists over the root channels, one list per
    place a root channel reaches the member (twice after concatenating a tensor with a function
    of itself, as GhostNet does); None where a channel is not reached, or is mapped out of
    range (as Torch-Pruning maps through ops it cannot follow)."""
    inside = {c: sorted(i for i in mapping.get(c, ()) if 0 <= i < size) for c in everything}
    depth = max((len(v) for v in inside.values()), default=0)
    return [[v[k] if k < len(v) else None for v in inside.values()] for k in range(depth)]


def dependency_groups(model: nn.Module, example_input) -> list[list[tuple[str, list]]]:
    """The members of every coupled group: a list of (name, idx) with the root first; idx[c]
    is the member's channel that goes with root channel c, or None if c does not reach it."""
    return [c.members for c in couplings(model, example_input)]


def cyclic(graph, bn, items) -> bool:
    """True if root channel 0 reaches a channel that the whole group credits to another root
    channel (Torch-Pruning keeps one root per channel when it merges a group), so that root
    channels take each other along: a concatenation feeding a residual addition."""
    import torch_pruning as tp

    credited = {}
    for item in items:
        space = _space(graph, item.dep)
        for r, i in zip(item.root_idxs, item.idxs, strict=True):
            credited.setdefault((space, int(i)), r)
    probe = graph.get_pruning_group(bn, tp.prune_batchnorm_out_channels, idxs=[0])
    return any(
        credited.get((_space(graph, item.dep), int(i)), 0) != 0
        for item in probe.items
        for i in item.idxs
    )


def channel_units(items, graph, names: dict, channels: int) -> tuple[list[list[int]], str]:
    """(units, held): the root channels that go together, and why channels in no unit stay.

    Root channels go together when they reach one channel of one layer (a cycle through a
    concatenation and a residual addition, as in GhostNetV2), and when they hold the same
    position in the groups of a grouped layer. A channel whose position in some group is not
    in this group stays (the grouped layer also takes channels from another group).
    """
    parent = list(range(channels))

    def find(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    reached: dict[tuple, int] = {}
    blocked, why = set(), ""
    for item in items:
        root_of = {int(i): int(r) for r, i in zip(item.root_idxs, item.idxs, strict=True)
                   if r is not None}  # fmt: skip
        space = _space(graph, item.dep)
        for i, r in root_of.items():
            parent[find(r)] = find(reached.setdefault((space, i), r))
        grouped = _channel_groups(graph, item.dep)
        if grouped is None:
            continue
        width, count = grouped
        for i, r in root_of.items():
            for j in (i % width + g * width for g in range(count)):
                if j in root_of:
                    parent[find(r)] = find(root_of[j])
                else:
                    blocked.add(r)
                    module = item.dep.target.module
                    why = why or (
                        f"layer {names.get(module, type(module).__name__)} has {count} channel "
                        "groups shared with channels of another group"
                    )
    classes: dict[int, list[int]] = {}
    for c in range(channels):
        classes.setdefault(find(c), []).append(c)
    bad = {find(c) for c in blocked}
    return [u for root, u in classes.items() if root not in bad], why


def _space(graph, dep) -> tuple:
    """The channel space dep's target is cut in: its input or its output channels, one space
    for a layer whose input and output channels are the same (a norm, a depthwise conv)."""
    module = dep.target.module
    kind = type(graph.get_pruner_of_module(module))
    same = getattr(kind, "prune_in_channels", 0) is getattr(kind, "prune_out_channels", 1)
    return id(module), "same" if same else graph.is_out_channel_pruning_fn(dep.handler)


def _channel_groups(graph, dep):
    """(width, groups) if dep's target keeps channel groups in dep's direction, else None."""
    from torch_pruning import ops

    module = dep.target.module
    if not isinstance(module, nn.Module) or isinstance(module, BATCH_NORMS):
        return None
    pruner = graph.get_pruner_of_module(module)
    depthwise = isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels
    if pruner is None or depthwise:
        return None  # no pruner, or depthwise: in and out channels go together
    out = graph.is_out_channel_pruning_fn(dep.handler)
    groups = pruner.get_out_channel_groups(module) if out else pruner.get_in_channel_groups(module)
    channels = graph.get_out_channels(module) if out else graph.get_in_channels(module)
    if groups <= 1 or not channels:
        return None
    return channels // groups, groups

"""Apply a pruning plan: a genuinely smaller network, and the masked copy it must equal.

`prune` removes the planned channels with Torch-Pruning's dependency graph (index
pruning of every coupled layer: new weight shapes, BatchNorm running statistics
kept for the channels that stay). `masked` keeps the shapes and zeroes the scale
and shift of the planned channels in every BatchNorm of their group; in eval mode
those channels then carry zeros, so the two networks compute the same function.
"""

import copy

import torch
from torch import nn

from regulab.slim.coupling import build_graph
from regulab.slim.plan import Plan


def prune(model: nn.Module, plan: Plan, example_input) -> nn.Module:
    """A pruned copy of model (model itself is not changed)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model)
    was = pruned.training
    pruned.eval()  # tracing runs a forward: BatchNorm statistics must not move
    graph = build_graph(pruned, example_input)
    for g in plan.groups:
        if not g.removed:
            continue
        bn = pruned.get_submodule(g.layers[0])
        if bn.num_features != g.channels:
            raise ValueError(
                f"plan does not fit this model: layer {g.layers[0]} has {bn.num_features} "
                f"channels, the plan was made for {g.channels}"
            )
        group = graph.get_pruning_group(bn, tp.prune_batchnorm_out_channels, idxs=g.removed)
        group.prune()
    pruned.train(was)
    return pruned


def masked(model: nn.Module, plan: Plan, example_input=None) -> nn.Module:
    """A copy of model with the planned channels' BatchNorm scale and shift set to zero."""
    from regulab.slim.coupling import dependency_groups

    out = copy.deepcopy(model)
    members = {}
    if example_input is not None:  # the member indices of coupled layers
        for group in dependency_groups(model, example_input):
            members[group[0][0]] = group
    with torch.no_grad():
        for g in plan.groups:
            if not g.removed:
                continue
            layers = members.get(g.layers[0]) or [(name, None) for name in g.layers]
            for name, idx in layers:
                bn = out.get_submodule(name)
                channels = g.removed if idx is None else [idx[c] for c in g.removed]
                channels = [c for c in channels if c is not None]  # not reached (concatenation)
                bn.weight[channels] = 0
                bn.bias[channels] = 0
    return out

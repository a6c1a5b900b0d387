"""One slimming pass: plan, prune, check against masking, evaluate, fine-tune, measure.

The paper's scheme (arXiv:1708.06519, fig. 2): train with sparsity on the
BatchNorm scales, prune the channels of small |gamma|, fine-tune; repeated for
several passes, each pass cuts `ratio` of the channels that are left and its
fine-tuning keeps the sparsity term so that the next pass has small scales to
cut (the last pass fine-tunes without it).
"""

import torch
from torch import nn

from regulab.bn_sparsity import bn_layers
from regulab.slim import measure, surgery
from regulab.slim.plan import Plan, plan

MATCH_TOLERANCE = 1e-5  # largest |pruned - masked| output accepted, relative to max |output|


def widths(model: nn.Module) -> dict[str, int]:
    """{BatchNorm layer name: channels} of model."""
    return {name: m.num_features for name, m in bn_layers(model)}


@torch.no_grad()
def max_output_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """max |a(x) - b(x)| / max |a(x)| in eval mode (both models are left in eval mode)."""
    ya, yb = a.eval()(x), b.eval()(x)
    return float((ya - yb).abs().max() / ya.abs().max().clamp_min(1e-12))


def prune_checked(model: nn.Module, p: Plan, example_input, check_input) -> tuple[nn.Module, float]:
    """The pruned network and its largest relative output difference from the masked one.

    Raises RuntimeError if they differ by more than MATCH_TOLERANCE: the surgery
    then removed something other than the planned channels.
    """
    pruned = surgery.prune(model, p, example_input)
    reference = surgery.masked(model, p, example_input)
    diff = max_output_difference(reference, pruned, check_input)
    if not diff <= MATCH_TOLERANCE:
        raise RuntimeError(
            f"the pruned network differs from the masked one by {diff:.3g} (relative, "
            f"tolerance {MATCH_TOLERANCE:g}): a layer was not shrunk consistently"
        )
    return pruned, diff


def plan_for(model: nn.Module, ratio: float, example_input, settings) -> Plan:
    """`plan` with the floors and score of a recipe's [slim] section."""
    return plan(
        model,
        ratio,
        example_input,
        min_channels=settings.min_channels,
        max_layer_ratio=settings.max_layer_ratio,
        score=settings.score,
    )


def size(model: nn.Module, example_input) -> dict:
    """{"params", "flops", "macs"} of model (FLOPs at 2 per multiply-add, one example)."""
    f = measure.flops(model, example_input)
    return {"params": measure.parameters(model), "flops": f, "macs": f // 2}


def latencies(models: dict, example_input, batches, repeats: int, rounds: int = 3) -> dict:
    """{name: {str(batch): seconds}}: the models timed side by side, in turn within each of
    `rounds` rounds (so a busy spell hits them all), each figure the median over rounds of
    `measure.latency`'s median of `repeats` forwards."""
    import statistics

    times = {name: {b: [] for b in batches} for name in models}
    for _ in range(rounds):
        for b in batches:
            for name, model in models.items():
                times[name][b].append(measure.latency(model, example_input, b, repeats))
    return {
        name: {str(b): statistics.median(v) for b, v in per.items()} for name, per in times.items()
    }


def reductions(before: dict, after: dict) -> dict:
    """Shares of parameters and FLOPs removed, and latency speed-ups (before / after)."""
    return {
        "params_reduction": 1 - after["params"] / before["params"],
        "flops_reduction": 1 - after["flops"] / before["flops"],
        "speedup": {b: before["latency_s"][b] / after["latency_s"][b] for b in before["latency_s"]},
    }


def finetune(model: nn.Module, recipe, data, seed: int, *, sparsity: float, on_step=None):
    """Fine-tune a pruned model in place for recipe.slim.finetune_epochs with the recipe's
    optimizer, schedule (restarted), augmentation and penalties, and BatchNorm sparsity
    `sparsity` (0 for the last pass); returns fit's History."""
    import copy

    from regulab.recipe import build
    from regulab.train import fit

    tune = copy.deepcopy(recipe)
    tune.train.epochs = recipe.slim.finetune_epochs
    tune.slim.sparsity = sparsity
    model.train()
    return fit(model, on_step=on_step, **build.fit_arguments(tune, model, data, seed))

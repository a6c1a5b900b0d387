"""Estimate the memory of K stacked models before training, and refuse what would not fit.

Per model: parameters, their gradients, the optimizer's state (momentum: one
copy, Adam: two) and one temporary copy for the per-model strengths, plus the
activations of one training batch, counted with forward hooks on one copy and
doubled for the backward pass. Times K. The limit is the memory available on
the device (Linux MemAvailable, or `torch.cuda.mem_get_info`), or max_memory.
"""

import copy

import torch
from torch import nn

from regulab.metrics import forward
from regulab.recipe import RecipeError

GiB = 2**30


def estimate(model: nn.Module, batch, k: int, optimizer_states: int) -> dict:
    """Bytes needed by k stacked copies of model training on batch (the model's inputs: a
    tensor, or a tuple or dict as `batch_fn` gives them): params, activations, total."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    params += sum(b.numel() * b.element_size() for b in model.buffers())
    sizes = []

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel() * output.element_size())

    model = copy.deepcopy(model)  # a training-mode forward updates BatchNorm statistics
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    with torch.no_grad():
        model.train()
        forward(model, batch)
    for h in handles:
        h.remove()
    per_model_params = params * (3 + optimizer_states)
    per_model_acts = 2 * sum(sizes)
    return {
        "params": k * per_model_params,
        "activations": k * per_model_acts,
        "total": k * (per_model_params + per_model_acts),
    }


def available(device) -> int | None:
    """Free bytes on device (None when unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def size(n: float) -> str:
    """Bytes as text in GiB, MiB or KiB, whichever shows them best."""
    for unit, scale in (("GiB", GiB), ("MiB", 2**20)):
        if n >= 0.1 * scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def states_per_parameter(optim) -> int:
    """Tensors of state the optimizer keeps per parameter (optim: a `schema.Optim`)."""
    return {"sgd": 1 if optim.momentum else 0, "adam": 2, "adamw": 2}[optim.name]


def check(model, batch, k: int, recipe, device, max_memory: float | None = None) -> dict:
    """Raise RecipeError when k copies would not fit (into max_memory GiB, or 90 % of the
    free memory); return the estimate otherwise. batch: the model's inputs for one batch."""
    need = estimate(model, batch, k, states_per_parameter(recipe.optim))
    limit = max_memory * GiB if max_memory is not None else available(device)
    if limit is None:
        return need
    where = (
        f"--max-memory {max_memory:g} GiB"
        if max_memory is not None
        else (f"90 % of the {limit / GiB:.1f} GiB available on {device}")
    )
    if max_memory is None:
        limit = 0.9 * limit
    if need["total"] > limit:
        raise RecipeError(
            f"--grid: {k} strengths of model {recipe.model.factory or recipe.model.name!r} need "
            "an estimated "
            f"{need['total'] / GiB:.2f} GiB ({need['params'] / GiB:.2f} GiB of parameters, "
            f"gradients and optimizer state; {need['activations'] / GiB:.2f} GiB of activations "
            f"for a batch of {recipe.train.batch_size}), more than {where}. Use fewer strengths, "
            "a smaller train.batch_size, or --engine ray with --chunks so each trial trains fewer"
        )
    return need

"""Optimizer parameter groups: which tensors get weight decay.

Matrices and convolution kernels (ndim >= 2) decay; biases, the scale and shift
of normalization layers, and any names the user lists do not. Decaying a
BatchNorm scale or a bias only fights the layer's purpose (shifts and scales
carry no capacity to overfit that a penalty should remove), a mistake that
`optimizer(model.parameters(), weight_decay=...)` makes silently. The grouping
follows nanoGPT's `configure_optimizers`.
"""

from fnmatch import fnmatchcase

from torch import nn

from regulab import _checks

NORM_LAYERS = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm
    nn.GroupNorm,
    nn.LayerNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),  # torch >= 2.4
)


def param_groups(
    model: nn.Module, weight_decay: float, *, no_decay: str | tuple[str, ...] = ()
) -> list[dict]:
    """Split the trainable parameters of `model` into a decayed and an undecayed group.

    Decayed: tensors with ndim >= 2 outside normalization layers, whose names match
    none of the `no_decay` patterns (shell wildcards on the names of
    `model.named_parameters()`, such as "embed.*" or "*.pos_emb"). Everything else
    gets weight_decay = 0. Frozen parameters (requires_grad=False) are left out.

    The result goes to any torch optimizer, e.g. `torch.optim.AdamW(groups, lr=1e-3)`.
    Each group also holds "name" ("decay" or "no_decay"), "names" (the parameter
    names; not torch's reserved "param_names", so the groups mix with others) and
    "penalize" (True for the decayed group; `Penalty` skips groups where it is
    False). Empty groups are left out. `describe_groups` reports their sizes.

    What `weight_decay` means is the optimizer's: SGD and Adam add
    weight_decay * w to the gradient (coupled L2, penalty weight_decay * ||w||^2 / 2);
    AdamW multiplies w by 1 - lr * weight_decay each step (decoupled).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    weight_decay = _checks.non_negative("weight_decay", weight_decay)
    if no_decay is None:
        no_decay = ()
    if isinstance(no_decay, str):
        no_decay = (no_decay,)
    try:
        no_decay = tuple(no_decay)  # a generator would be used up by the first check
    except TypeError:
        no_decay = (no_decay,)
    if not all(isinstance(p, str) for p in no_decay):
        raise ValueError(
            f"no_decay must be a tuple of name patterns such as ('*.bias', 'embed.*'); "
            f"got {no_decay!r}"
        )
    in_norm = {
        id(p)
        for module in model.modules()
        if isinstance(module, NORM_LAYERS)
        for p in module.parameters(recurse=False)
    }
    names = dict(model.named_parameters())
    for pattern in no_decay:
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"no_decay pattern {pattern!r} matches no parameter name; the names "
                f"are {', '.join(list(names)[:8])}{', ...' if len(names) > 8 else ''}"
            )
    decay, keep = [], []
    for name, p in names.items():
        if not p.requires_grad:
            continue
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"parameter {name!r} of a lazy module is not initialized yet; run one "
                "forward pass before building the groups"
            )
        undecayed = (
            p.ndim < 2
            or id(p) in in_norm
            or any(fnmatchcase(name, pattern) for pattern in no_decay)
        )
        (keep if undecayed else decay).append(name)
    if not decay and not keep:
        raise ValueError("model has no trainable parameters (all have requires_grad=False)")
    groups = []
    for group_name, members, wd in (("decay", decay, weight_decay), ("no_decay", keep, 0.0)):
        if members:
            groups.append(
                {
                    "params": [names[n] for n in members],
                    "weight_decay": wd,
                    "name": group_name,
                    "names": members,
                    "penalize": group_name == "decay",
                }
            )
    return groups


def describe_groups(groups: list[dict]) -> str:
    """One line per group: its name, weight decay, number of tensors and of parameters."""
    lines = []
    for i, group in enumerate(groups):
        params = list(group["params"])
        lines.append(
            f"{group.get('name', f'group {i}')}: weight_decay={group.get('weight_decay', 0.0):g}, "
            f"{len(params)} tensors, {sum(p.numel() for p in params):,} parameters"
        )
    return "\n".join(lines)

"""Optimizer parameter groups: which tensors get weight decay.

Matrices and convolution kernels (ndim >= 2) decay; biases, the scale and shift
of normalization layers, and any names the user lists do not. Decaying a
BatchNorm scale or a bias only fights the layer's purpose (shifts and scales
carry no capacity to overfit that a penalty should remove), a mistake that
`optimizer(model.parameters(), weight_decay=...)` makes silently. The grouping
follows nanoGPT's `configure_optimizers` and timm's `param_groups_weight_decay`:
the names a model returns from `no_weight_decay()` are not decayed, nor are
position embeddings, class tokens and per-channel layer scales (ViT, ConvNeXt, CaiT).
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
# the last part of a parameter's name: embeddings kept undecayed whatever their shape
EMBEDDINGS = ("pos_embed", "pos_embed_*", "*_pos_embed", "pos_embedding", "cls_token",
              "class_token", "dist_token", "reg_token")  # fmt: skip
# ... and layer scales, when they hold one value per channel (shape (C,), (C, 1, 1), ...)
LAYER_SCALES = ("layer_scale", "layer_scale_*", "gamma", "gamma_*")
# why a parameter is not decayed, in the order the rules are tried
REASONS = ("no_decay pattern", "no_weight_decay()", "embedding", "layer scale", "norm layer", "1-D")
LISTED = REASONS[:4]  # the reasons `describe_groups` lists by name


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay: str | tuple[str, ...] = (),
    conventions: bool = True,
) -> list[dict]:
    """Split the trainable parameters of `model` into a decayed and an undecayed group.

    Decayed: tensors with ndim >= 2 outside normalization layers, whose names match
    none of the `no_decay` patterns (shell wildcards on the names of
    `model.named_parameters()`, such as "embed.*" or "*.pos_emb"). With conventions
    (the default) these are not decayed either: the names `no_weight_decay()`
    returns, on the model or any submodule (timm's convention: names relative to
    the module, exact, a prefix ending at a dot, or a wildcard pattern); embeddings
    named like EMBEDDINGS (`pos_embed`, `cls_token`, ...); layer scales named like
    LAYER_SCALES with one value per channel. Everything else gets weight_decay = 0.
    Frozen parameters (requires_grad=False) are left out.

    The result goes to any torch optimizer, e.g. `torch.optim.AdamW(groups, lr=1e-3)`.
    Each group also holds "name" ("decay" or "no_decay"), "names" (the parameter
    names; not torch's reserved "param_names", so the groups mix with others) and
    "penalize" (True for the decayed group; `Penalty` skips groups where it is
    False); the undecayed group holds "reasons" ({name: one of REASONS}). Empty
    groups are left out. `describe_groups` reports their sizes and reasons.

    What `weight_decay` means is the optimizer's: SGD and Adam add
    weight_decay * w to the gradient (coupled L2, penalty weight_decay * ||w||^2 / 2);
    AdamW multiplies w by 1 - lr * weight_decay each step (decoupled).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    weight_decay = _checks.non_negative("weight_decay", weight_decay)
    no_decay = _patterns(no_decay)
    names = dict(model.named_parameters())
    for pattern in no_decay:
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"no_decay pattern {pattern!r} matches no parameter name; the names "
                f"are {', '.join(list(names)[:8])}{', ...' if len(names) > 8 else ''}"
            )
    declared = _declared(model) if conventions else set()
    in_norm = {
        id(p)
        for module in model.modules()
        if isinstance(module, NORM_LAYERS)
        for p in module.parameters(recurse=False)
    }
    decay, reasons = [], {}
    for name, p in names.items():
        if not p.requires_grad:
            continue
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"parameter {name!r} of a lazy module is not initialized yet; run one "
                "forward pass before building the groups"
            )
        rules = (
            any(fnmatchcase(name, pattern) for pattern in no_decay),
            id(p) in declared,
            conventions and _named(name, EMBEDDINGS),
            conventions and _named(name, LAYER_SCALES) and max(p.shape, default=1) == p.numel(),
            id(p) in in_norm,
            p.ndim < 2,
        )
        reason = next((r for r, hit in zip(REASONS, rules, strict=True) if hit), None)
        if reason is None:
            decay.append(name)
        else:
            reasons[name] = reason
    if not decay and not reasons:
        raise ValueError("model has no trainable parameters (all have requires_grad=False)")
    groups = []
    for group_name, members, wd in (("decay", decay, weight_decay), ("no_decay", reasons, 0.0)):
        if members:
            group = {
                "params": [names[n] for n in members],
                "weight_decay": wd,
                "name": group_name,
                "names": list(members),
                "penalize": group_name == "decay",
            }
            if group_name == "no_decay":
                group["reasons"] = reasons
            groups.append(group)
    return groups


def _patterns(no_decay) -> tuple[str, ...]:
    """no_decay as a tuple of name patterns (one string, any iterable of strings, or None)."""
    if no_decay is None:
        return ()
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
    return no_decay


def _declared(model: nn.Module) -> set[int]:
    """ids of the parameters named by `no_weight_decay()` of model or any submodule."""
    found = set()
    for path, module in model.named_modules():
        method = getattr(module, "no_weight_decay", None)
        if not callable(method):
            continue
        listed = method()
        where = f"{path}.no_weight_decay()" if path else "model.no_weight_decay()"
        if isinstance(listed, str) or not all(isinstance(n, str) for n in listed):
            raise TypeError(
                f"{where} must return parameter names (a set of strings such as "
                f"{{'pos_embed'}}); got {listed!r}"
            )
        for name, p in module.named_parameters():
            if any(
                name == entry or name.startswith(entry + ".") or fnmatchcase(name, entry)
                for entry in listed
            ):
                found.add(id(p))
    return found


def _named(name: str, patterns: tuple[str, ...]) -> bool:
    """Whether the last part of a parameter's name matches one of the patterns."""
    leaf = name.rsplit(".", 1)[-1]
    return any(fnmatchcase(leaf, pattern) for pattern in patterns)


def describe_groups(groups: list[dict]) -> str:
    """One line per group (name, weight decay, tensors, parameters), then the listed reasons.

    The parameters kept undecayed by a no_decay pattern, `no_weight_decay()`, an
    embedding name or a layer-scale name follow their group, one line per reason.
    """
    lines = []
    for i, group in enumerate(groups):
        params = list(group["params"])
        lines.append(
            f"{group.get('name', f'group {i}')}: weight_decay={group.get('weight_decay', 0.0):g}, "
            f"{len(params)} tensors, {sum(p.numel() for p in params):,} parameters"
        )
        reasons = group.get("reasons", {})
        for reason in LISTED:
            names = [n for n, r in reasons.items() if r == reason]
            if names:
                shown = ", ".join(names[:4]) + (
                    f", ... ({len(names)} tensors)" if len(names) > 4 else ""
                )
                lines.append(f"  {reason}: {shown}")
    return "\n".join(lines)

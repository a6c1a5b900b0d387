"""Save a (pruned) network without pickle: weights in safetensors, its shape in JSON.

`save(model, folder, arch)` writes model.safetensors (the state dict: parameters and
buffers such as BatchNorm running statistics) and arch.json: `arch` as given (any JSON
dict; regulab's own models use `{"name": "vgg_bn", "kwargs": {...}}`, a function of
`regulab.models`, and a recipe's model `{"factory", "kwargs", "base"}`) and, for every
layer that pruning can reshape, the sizes it has now (convolutions, transposed ones too:
in/out channels and groups; linear layers; BatchNorm, InstanceNorm, LayerNorm, GroupNorm,
PReLU, Embedding). `load(folder, model)` takes the unpruned model (an instance, a
zero-argument callable returning one, or nothing when arch names a regulab model or a
recipe's factory, imported again from its `base` folder), gives each layer its recorded
sizes and the saved tensors, and loads the weights with `safetensors` (never
`torch.load`). A parameter-holding layer of another type whose tensor shapes differ from
the saved ones is refused by name.
"""

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from regulab import models

# the attributes each reshapable layer type records, in the names torch gives them
SIZES = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
      nn.ConvTranspose3d), ("in_channels", "out_channels", "groups")),
    (nn.Linear, ("in_features", "out_features")),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
      nn.InstanceNorm2d, nn.InstanceNorm3d), ("num_features",)),
    (nn.LayerNorm, ("normalized_shape",)),
    (nn.GroupNorm, ("num_groups", "num_channels")),
    (nn.PReLU, ("num_parameters",)),
    (nn.Embedding, ("num_embeddings", "embedding_dim")),
)  # fmt: skip


def _sizes(m: nn.Module) -> tuple[str, ...] | None:
    return next((attrs for kinds, attrs in SIZES if isinstance(m, kinds)), None)


def layer_shapes(model: nn.Module) -> dict[str, dict]:
    """{layer name: {"type": class name, size attribute: value}} of every reshapable layer."""
    shapes = {}
    for name, m in model.named_modules():
        attrs = _sizes(m)
        if attrs is not None:
            values = {a: getattr(m, a) for a in attrs}
            values = {a: list(v) if isinstance(v, tuple) else v for a, v in values.items()}
            shapes[name] = {"type": type(m).__name__, **values}
    return shapes


def save(model: nn.Module, folder: str | Path, arch: dict | None = None) -> Path:
    """Write model.safetensors and arch.json into folder (each written whole, then renamed).

    arch: any JSON dict, stored as is for whoever loads the model; `{"name": ..., "kwargs":
    ...}` naming a model of `regulab.models` lets `load(folder)` rebuild it alone.
    """
    if arch is not None and not isinstance(arch, dict):
        raise TypeError(f"arch must be a dict or None; got {type(arch).__name__}")
    try:
        spec = json.dumps({"arch": arch, "layers": layer_shapes(model)}, indent=2)
    except (TypeError, ValueError) as e:
        raise TypeError(f"arch must hold only JSON values (str, number, list, dict); {e}") from e
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    tmp = folder / ".model.safetensors.partial"
    save_file(state, str(tmp))
    os.replace(tmp, folder / "model.safetensors")
    tmp = folder / ".arch.json.partial"
    tmp.write_text(spec)
    os.replace(tmp, folder / "arch.json")
    return folder


def _unpruned(arch, model) -> nn.Module:
    """The unpruned model: model itself, model() for a callable, or the regulab model arch
    names."""
    if model is None and isinstance(arch, dict) and "factory" in arch:
        from regulab.recipe.model import from_arch  # a recipe's model.factory: import it again

        model = from_arch(arch)
    if model is None:
        name = arch.get("name") if isinstance(arch, dict) else None
        if name not in models.MODELS:
            raise ValueError(
                f"arch.json's arch {arch!r} names no regulab model ({', '.join(models.MODELS)}) "
                "and no recipe's model.factory; pass model= (the unpruned model, or a "
                "zero-argument callable returning one)"
            )
        return models.MODELS[name](**arch.get("kwargs", {}))
    built = model if isinstance(model, nn.Module) else model() if callable(model) else None
    if not isinstance(built, nn.Module):
        got = type(model if built is None else built).__name__
        raise TypeError(
            "model must be an nn.Module or a zero-argument callable returning one; "
            f"got {got}" + (" from the callable" if built is not None else "")
        )
    return built


def _tensors(model: nn.Module, key: str):
    """(module, parameters, buffers, the tensor) that state-dict key names, or None."""
    owner, _, attr = key.rpartition(".")
    try:
        m = model.get_submodule(owner)
    except AttributeError:
        return None  # not a module's tensor: load_state_dict reports it
    params = dict(m.named_parameters(recurse=False))
    buffers = dict(m.named_buffers(recurse=False))
    return m, params, buffers, params.get(attr, buffers.get(attr))


def _check_fits(model: nn.Module, layers: dict, state: dict) -> None:
    """Refuse, before anything is changed, a model whose layers are not the saved ones, and
    layers that `save` recorded no sizes for whose tensors changed shape."""
    for name, shape in layers.items():
        try:
            m = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"the saved layer {name} ({shape['type']}) is not in the {type(model).__name__} "
                "given: pass the unpruned model that was pruned"
            ) from None
        if type(m).__name__ != shape["type"]:
            raise ValueError(
                f"layer {name} is a {type(m).__name__} in the model given but was saved as a "
                f"{shape['type']}: pass the unpruned model that was pruned"
            )
    for key, tensor in state.items():
        found = _tensors(model, key)
        owner, _, attr = key.rpartition(".")
        old = found[3] if found else None
        if old is not None and old.shape != tensor.shape and owner not in layers:
            raise ValueError(
                f"layer {owner or '(the model itself)'} ({type(found[0]).__name__}) has {attr} "
                f"of shape {tuple(tensor.shape)} saved but {tuple(old.shape)} in the model "
                "given; load can resize only convolution, linear and norm layers"
            )


def _reshape(model: nn.Module, layers: dict, state: dict) -> None:
    """Give every recorded layer its saved sizes, and the tensors whose shape changed."""
    for name, shape in layers.items():
        m = model.get_submodule(name)
        for attr in _sizes(m):
            if attr in shape:  # (groups: not recorded before)
                value = shape[attr]
                setattr(m, attr, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        found = _tensors(model, key)
        if found is None or found[3] is None or found[3].shape == tensor.shape:
            continue
        m, params, _, old = found
        attr = key.rpartition(".")[2]
        new = tensor.to(old.dtype, copy=True)  # own memory: safetensors' may be unaligned
        setattr(m, attr, nn.Parameter(new, old.requires_grad) if attr in params else new)


def _upgrade(spec: dict) -> dict:
    """arch.json as written before arch was stored as given (regulab models only)."""
    names = {"Conv2d": ("in_channels", "out_channels"), "Linear": ("in_features", "out_features")}
    layers = {}
    for name, shape in spec["layers"].items():
        ins, outs = names.get(shape["type"], (None, "num_features"))
        layers[name] = {"type": shape["type"], outs: shape["out"]}
        if ins:
            layers[name][ins] = shape["in"]
    return {"arch": {"name": spec["name"], "kwargs": spec["kwargs"]}, "layers": layers}


def load(folder: str | Path, model=None, device="cpu") -> nn.Module:
    """The model saved by `save`, with its pruned shapes and weights, in eval mode.

    model: the unpruned model (reshaped in place and returned), or a zero-argument callable
    returning one (a factory); None rebuilds the regulab model or the recipe's model.factory
    that arch.json names.
    """
    folder = Path(folder)
    spec = json.loads((folder / "arch.json").read_text())
    if "arch" not in spec:
        spec = _upgrade(spec)
    net = _unpruned(spec["arch"], model)
    state = load_file(str(folder / "model.safetensors"), device="cpu")
    _check_fits(net, spec["layers"], state)
    _reshape(net, spec["layers"], state)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"the saved weights do not fit the {type(net).__name__} given: missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}; pass the "
            "unpruned model that was pruned"
        )
    return net.to(torch.device(device)).eval()

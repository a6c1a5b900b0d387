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
from safetensors import SafetensorError
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


def _unpruned(arch, model, path: Path) -> nn.Module:
    """The unpruned model: model itself, model() for a callable, or the regulab model arch
    (of the arch.json at path) names."""
    if model is None and isinstance(arch, dict) and "factory" in arch:
        from regulab.recipe.model import from_arch  # a recipe's model.factory: import it again

        model = from_arch(arch)
    if model is None:
        name = arch.get("name") if isinstance(arch, dict) else None
        if name not in models.MODELS:
            raise ValueError(
                f"{path}: arch {arch!r} names no regulab model ({', '.join(models.MODELS)}) "
                "and no recipe's model.factory; pass model= (the unpruned model, or a "
                "zero-argument callable returning one)"
            )
        kwargs = arch.get("kwargs", {})
        try:
            return models.MODELS[name](**kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: arch's kwargs {kwargs!r} do not build {name}: {e}") from None
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
        fault = _sizes_fault(m, shape)
        if fault:
            raise ValueError(f"layer {name} in arch.json {fault}; got {shape}")
        for attr, dims in _leading_sizes(m, shape).items():
            tensor = state.get(f"{name}.{attr}" if name else attr)
            if tensor is not None and tuple(tensor.shape[: len(dims)]) != dims:
                raise ValueError(
                    f"layer {name} ({shape['type']}) has sizes {shape} in arch.json but {attr} "
                    f"of shape {tuple(tensor.shape)} in model.safetensors, where the sizes ask "
                    f"for {dims}: the two files do not belong together"
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


def _sizes_fault(m: nn.Module, shape: dict) -> str:
    """What is wrong with the sizes arch.json records for layer m, or "" when nothing is."""
    if _sizes(m) is None:
        return f"names a {type(m).__name__} of the model, a layer type load cannot resize"
    for attr in _sizes(m):
        value = shape.get(attr, 1 if attr == "groups" else None)  # groups: not always recorded
        values = value if attr == "normalized_shape" and isinstance(value, list) else [value]
        if not values or not all(type(v) is int and v >= 1 for v in values):
            kind = "a list of integers" if attr == "normalized_shape" else "an integer"
            return f"needs {attr} as {kind} >= 1"
    groups = shape.get("groups", 1)
    if "groups" in _sizes(m) and (shape["in_channels"] % groups or shape["out_channels"] % groups):
        return "needs in_channels and out_channels divisible by groups"
    return ""


def _leading_sizes(m: nn.Module, shape: dict) -> dict[str, tuple]:
    """{tensor name: its leading sizes} that the recorded sizes of layer m ask for (a
    convolution's kernel sizes are not recorded)."""
    get = shape.get
    if isinstance(m, SIZES[0][0]):  # convolutions
        groups, ins, outs = get("groups", 1), get("in_channels"), get("out_channels")
        transposed = isinstance(m, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d)
        first, second = (ins, outs) if transposed else (outs, ins)
        return {"weight": (first, second // groups), "bias": (outs,)}
    if isinstance(m, nn.Linear):
        return {"weight": (get("out_features"), get("in_features")), "bias": (get("out_features"),)}
    if isinstance(m, nn.Embedding):
        return {"weight": (get("num_embeddings"), get("embedding_dim"))}
    if isinstance(m, nn.LayerNorm):
        return dict.fromkeys(("weight", "bias"), tuple(get("normalized_shape")))
    size = get("num_features", get("num_channels", get("num_parameters")))
    return dict.fromkeys(("weight", "bias", "running_mean", "running_var"), (size,))


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
    that arch.json names. Files that `save` did not write (a missing or edited key, a layer
    not in the model, sizes that do not fit the tensors, a truncated safetensors file) are
    refused with one ValueError naming the file, before the model is changed.
    """
    folder = Path(folder)
    spec = read_arch(folder)
    net = _unpruned(spec["arch"], model, folder / "arch.json")
    state = _read_weights(folder / "model.safetensors")
    try:
        _check_fits(net, spec["layers"], state)
    except ValueError as e:
        raise ValueError(f"{folder}: {e}") from None
    _reshape(net, spec["layers"], state)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        text = " ".join(str(e).split())  # torch's message spans lines
        raise ValueError(f"{folder}: the saved weights do not fit the model: {text}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{folder}: the saved weights do not fit the {type(net).__name__} given: missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}; pass the "
            "unpruned model that was pruned"
        )
    return net.to(torch.device(device)).eval()


def read_arch(folder: Path) -> dict:
    """arch.json of folder as `save` writes it ({"arch", "layers"}; the older form upgraded),
    each layer's type and sizes checked; else ValueError naming the file and the fault."""
    path = Path(folder) / "arch.json"
    if not path.is_file():
        raise ValueError(
            f"{folder} holds no arch.json: pass a folder written by regulab.slim.save "
            "(arch.json and model.safetensors)"
        )
    try:
        spec = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not JSON ({e}); it was not written by slim.save") from None
    if isinstance(spec, dict) and "arch" not in spec and {"name", "layers"} <= spec.keys():
        try:
            spec = _upgrade(spec)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: the older arch.json form lacks {e}") from None
    if not isinstance(spec, dict) or not {"arch", "layers"} <= spec.keys():
        got = f"keys {sorted(spec)}" if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(
            f"{path} is not an arch.json written by regulab.slim.save: it must hold a dict "
            f"with 'arch' and 'layers'; got {got}"
        )
    if not isinstance(spec["layers"], dict):
        raise ValueError(f"{path}: 'layers' must map layer names to sizes; got {spec['layers']!r}")
    for name, shape in spec["layers"].items():
        if not isinstance(shape, dict) or not isinstance(shape.get("type"), str):
            raise ValueError(f"{path}: layer {name!r} must be a dict with a 'type'; got {shape!r}")
    return spec


def _read_weights(path: Path) -> dict:
    """The tensors of a safetensors file; ValueError naming it when missing or unreadable."""
    if not path.is_file():
        raise ValueError(
            f"{path.parent} holds no model.safetensors: pass a folder written by regulab.slim.save"
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}): it is truncated or was not "
            "written by regulab.slim.save"
        ) from None

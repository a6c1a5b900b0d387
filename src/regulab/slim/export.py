"""Save a (pruned) network without pickle: weights in safetensors, its shape in JSON.

`save(model, folder, arch)` writes model.safetensors (the state dict) and
arch.json: the constructor of the unpruned model (`{"name": "vgg_bn", "kwargs":
{...}}`, a function of `regulab.models`) and the shape of every convolution,
linear and BatchNorm layer as pruning left it. `load(folder)` builds the model
from its constructor, replaces each layer by one of the recorded shape, and loads
the weights with `safetensors` (never `torch.load`).
"""

import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from regulab import models

LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def _shape(m: nn.Module) -> dict:
    if isinstance(m, nn.Conv2d):
        return {"type": "Conv2d", "in": m.in_channels, "out": m.out_channels}
    if isinstance(m, nn.Linear):
        return {"type": "Linear", "in": m.in_features, "out": m.out_features}
    return {"type": type(m).__name__, "out": m.num_features}


def save(model: nn.Module, folder: str | Path, arch: dict) -> Path:
    """Write model.safetensors and arch.json into folder (each written whole, then renamed)."""
    if arch.get("name") not in models.MODELS:
        raise ValueError(
            f"arch['name'] must be one of {', '.join(models.MODELS)}; got {arch.get('name')!r}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": arch["name"],
        "kwargs": arch.get("kwargs", {}),
        "layers": {n: _shape(m) for n, m in model.named_modules() if isinstance(m, LAYERS)},
    }
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    tmp = folder / ".model.safetensors.partial"
    save_file(state, str(tmp))
    os.replace(tmp, folder / "model.safetensors")
    tmp = folder / ".arch.json.partial"
    tmp.write_text(json.dumps(spec, indent=2))
    os.replace(tmp, folder / "arch.json")
    return folder


def _resized(m: nn.Module, shape: dict) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(
            shape["in"], shape["out"], m.kernel_size, m.stride, m.padding, m.dilation,
            groups=m.groups, bias=m.bias is not None,
        )  # fmt: skip
    if isinstance(m, nn.Linear):
        return nn.Linear(shape["in"], shape["out"], bias=m.bias is not None)
    return type(m)(shape["out"], eps=m.eps, momentum=m.momentum, affine=m.affine)


def load(folder: str | Path, device="cpu") -> nn.Module:
    """The model saved by `save`, with its pruned shapes and weights, in eval mode."""
    folder = Path(folder)
    spec = json.loads((folder / "arch.json").read_text())
    model = models.MODELS[spec["name"]](**spec["kwargs"])
    for name, shape in spec["layers"].items():
        parent, _, attr = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, attr, _resized(getattr(owner, attr), shape))
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)))
    return model.to(device).eval()

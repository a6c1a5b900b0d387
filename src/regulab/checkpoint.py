"""Checkpoints without pickle: weights in safetensors, everything else in JSON.

A checkpoint is a folder `epoch-NNNN` holding `model.safetensors` (the state
dict), `state.safetensors` (the tensors of the training state: optimizer
moments, early stopping's best weights) and `state.json` (the rest, with
`{"__tensor__": key}` where a tensor was). It is written into a hidden sibling
and renamed into place, so a run killed at any moment leaves only complete
checkpoints; the newest complete one is the one to resume from. (Files are not
fsync'ed: a killed process loses nothing, a power cut may lose the last epoch.)
"""

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from regulab.errors import RunFolderError

NAME = re.compile(r"^epoch-(\d{4,})$")


def split_tensors(obj, tensors: dict, key: str = "state"):
    """Return obj with every tensor replaced by {"__tensor__": name}; the tensors go to `tensors`.

    Dicts with non-string keys (optimizer state is keyed by parameter index) and
    tuples are tagged so that `join_tensors` rebuilds them exactly.
    """
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: split_tensors(v, tensors, f"{key}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, split_tensors(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {key} of type {type(obj).__name__} in a checkpoint")


def join_tensors(obj, tensors: dict):
    """Inverse of `split_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: join_tensors(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def save(folder: Path, epoch: int, model_state: dict, state: dict, keep: int = 1) -> Path:
    """Write checkpoint `folder/epoch-NNNN` atomically; keep only the newest `keep` checkpoints."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"epoch-{epoch:04d}"
    tmp = folder / f".{final.name}.partial"
    for stale in folder.glob(".epoch-*.partial"):  # left by runs killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    # clone: safetensors refuses tensors that share memory (tied weights, views)
    save_file(
        {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model_state.items()},
        str(tmp / "model.safetensors"),
    )
    tensors: dict = {}
    skeleton = split_tensors(state, tensors)
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(skeleton, indent=1) + "\n")
    if final.exists():  # a checkpoint of the same epoch from an earlier, resumed attempt
        shutil.rmtree(final)
    os.rename(tmp, final)
    for old in checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in folder, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and NAME.match(p.name)]
    return sorted(found, key=lambda p: int(NAME.match(p.name).group(1)))


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint in folder, or None."""
    found = checkpoints(folder)
    return found[-1] if found else None


def header(file: Path) -> dict[str, list[int]]:
    """{tensor name: shape} of a safetensors file, from its header alone (which safetensors
    checks against the file's size); RunFolderError naming the checkpoint otherwise."""
    file = Path(file)
    try:
        with safe_open(str(file), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (OSError, ValueError, SafetensorError) as e:  # SafetensorError: truncated, not one
        raise RunFolderError(f"checkpoint '{file.parent}' cannot be read: {file.name}: {e}") from e


def inspect(path: Path) -> tuple[dict, dict, object]:
    """(model shapes, state shapes, state.json) of the checkpoint folder `path`, every tensor
    that state.json names present in state.safetensors; reads no tensor data."""
    path = Path(path)
    model, tensors = header(path / "model.safetensors"), header(path / "state.safetensors")
    try:
        skeleton = json.loads((path / "state.json").read_text())
        names = references(skeleton)
    except (OSError, ValueError) as e:
        raise RunFolderError(f"checkpoint '{path}' cannot be read: state.json: {e}") from e
    missing = sorted(set(names) - set(tensors))
    if missing:
        raise RunFolderError(
            f"checkpoint '{path}' cannot be read: state.json names the tensor {missing[0]!r}, "
            "which state.safetensors does not hold"
        )
    return model, tensors, skeleton


def references(obj) -> list[str]:
    """The tensor names a skeleton of `split_tensors` refers to; ValueError for a malformed tag."""
    if isinstance(obj, list):
        return [name for v in obj for name in references(v)]
    if not isinstance(obj, dict):
        return []
    if "__tensor__" in obj:
        if set(obj) != {"__tensor__"} or not isinstance(obj["__tensor__"], str):
            raise ValueError(f'a tensor reference must be {{"__tensor__": name}}; got {obj}')
        return [obj["__tensor__"]]
    if set(obj) == {"__items__"}:
        items = obj["__items__"]
        if not isinstance(items, list) or not all(_pair(item) for item in items):
            raise ValueError(f"__items__ must be a list of [key, value] pairs; got {items!r:.80}")
        return [name for _, v in items for name in references(v)]
    if set(obj) == {"__tuple__"}:
        if not isinstance(obj["__tuple__"], list):
            raise ValueError(f"__tuple__ must be a list; got {obj['__tuple__']!r:.80}")
        return references(obj["__tuple__"])
    return references(list(obj.values()))


def _pair(item) -> bool:
    return isinstance(item, list) and len(item) == 2 and not isinstance(item[0], list | dict)


def load(path: Path, device: torch.device | str = "cpu") -> tuple[dict, dict]:
    """Return (model_state, state) of the checkpoint folder `path`, tensors on `device`.

    The files are checked first (`inspect`); a fault is a RunFolderError (a ValueError)
    naming the checkpoint. Nothing is unpickled.
    """
    path = Path(path)
    _, _, skeleton = inspect(path)
    try:
        model_state = load_file(str(path / "model.safetensors"), device=str(device))
        tensors = load_file(str(path / "state.safetensors"), device=str(device))
    except (OSError, ValueError, SafetensorError) as e:  # changed since inspect
        raise RunFolderError(f"checkpoint '{path}' cannot be read: {e}") from e
    return model_state, join_tensors(skeleton, tensors)

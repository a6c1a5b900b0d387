"""Named arrays from .npz and .safetensors files, read without pickle, and (x, y) data as tensors.

`read_arrays(path, names)` opens a NumPy .npz file with `np.load(allow_pickle=False)` or a
safetensors file with `safetensors.safe_open`, and returns the arrays asked for as tensors;
`array_names(path)` lists what a file holds. Only numbers are read (bool, integer, floating),
and only finite ones: an array with NaN or inf is refused, naming it and how many there are.
`pair_tensors(data, what)` reads an (x, y) pair of tensors or arrays, or a torch Dataset of
(x, y) items (read once, item by item, and stacked), into two tensors.
"""

import zipfile
from pathlib import Path

import numpy as np
import torch

SUFFIXES = (".npz", ".safetensors")


def array_names(path: str | Path) -> list[str]:
    """The names of the arrays in an .npz or .safetensors file, in file order."""
    path = _checked(path)
    if path.suffix == ".npz":
        with _npz(path) as f:
            return list(f.files)
    with _safetensors(path) as f:
        return list(f.keys())


def read_arrays(path: str | Path, names) -> dict[str, torch.Tensor]:
    """{name: tensor} of the named arrays of an .npz or .safetensors file."""
    path = _checked(path)
    names = list(names)
    present = array_names(path)
    missing = [n for n in names if n not in present]
    if missing:
        raise ValueError(
            f"'{path}' has no array {missing[0]!r}; it has: {', '.join(present) or 'none'}"
        )
    out = {}
    if path.suffix == ".npz":
        with _npz(path) as f:
            for n in names:
                try:
                    a = f[n]
                except ValueError as e:  # object arrays need pickle, which is refused
                    raise ValueError(
                        f"array {n!r} of '{path}' holds Python objects, which need pickle: "
                        f"save arrays of numbers ({e})"
                    ) from None
                out[n] = _numbers(np.ascontiguousarray(a, a.dtype.newbyteorder("=")), n, path)
        return out
    with _safetensors(path) as f:
        return {n: _numbers(f.get_tensor(n), n, path) for n in names}


def pair_tensors(data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) tensors of an (x, y) pair of tensors / arrays or a Dataset of (x, y) items.

    what: how errors name the data, e.g. "train".
    """
    if isinstance(data, tuple | list) and len(data) == 2 and all(map(_is_array, data)):
        return _numbers(data[0], f"{what} x"), _numbers(data[1], f"{what} y")
    items = None
    if isinstance(data, str | bytes | dict):
        pass  # indexable, but not a data set
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        items = [data[i] for i in range(len(data))]
    elif isinstance(data, torch.utils.data.IterableDataset):
        items = list(data)
    if items is None:
        raise ValueError(
            f"{what} must be an (x, y) pair of tensors or arrays, or a Dataset of (x, y) "
            f"items; got {type(data).__name__}"
        )
    if not items:
        raise ValueError(f"{what} is empty (a Dataset of 0 items)")
    for i, item in enumerate(items):
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise ValueError(
                f"{what}[{i}] must be an (x, y) pair; got {type(item).__name__}"
                + (f" of {len(item)}" if isinstance(item, tuple | list) else "")
            )
    return tuple(_stack([item[k] for item in items], f"{what} {'xy'[k]}") for k in (0, 1))


def _checked(path) -> Path:
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"path must end in {' or '.join(SUFFIXES)}; got '{path}'")
    if not path.is_file():
        raise FileNotFoundError(f"no file '{path}'")
    return path


def _npz(path: Path):
    if not zipfile.is_zipfile(path):  # else np.load takes it for a pickle and says so
        with open(path, "rb") as f:
            head = f.read(17)
        more = "..." if len(head) > 16 else ""
        found = "one .npy array" if head.startswith(b"\x93NUMPY") else f"bytes {head[:16]!r}{more}"
        raise ValueError(
            f"'{path}' is not a valid .npz (zip) file: it holds {found}, not a zip archive "
            "of arrays (np.savez writes one)"
        )
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"'{path}' is not a readable .npz file: {e}") from None
    return f


def _safetensors(path: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # safetensors' own error type is not importable by name
        raise ValueError(f"'{path}' is not a readable .safetensors file: {e}") from None


def _is_array(a) -> bool:
    return isinstance(a, torch.Tensor | np.ndarray)


def _numbers(a, name: str, path: Path | None = None) -> torch.Tensor:
    """a as a tensor, if it holds bool, integer or floating numbers."""
    t = torch.from_numpy(a) if isinstance(a, np.ndarray) and a.dtype.kind in "biuf" else a
    if not isinstance(t, torch.Tensor) or t.is_complex():
        kind = a.dtype if hasattr(a, "dtype") else type(a).__name__
        where = f"array {name!r} of '{path}'" if path is not None else name
        raise ValueError(f"{where} must hold numbers (bool, integer, floating); got {kind}")
    if t.is_floating_point():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            where = f"array {name!r} of '{path}'" if path is not None else name
            raise ValueError(
                f"{where} holds {bad} non-finite value{'s' * (bad != 1)} (NaN or inf) of "
                f"{t.numel()}: remove or impute them before training"
            )
    return t


def _stack(values, name: str) -> torch.Tensor:
    try:
        tensors = [torch.as_tensor(v) for v in values]
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{name}: an item is not numbers: {e}") from None
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise ValueError(f"{name}: items differ in shape: {', '.join(map(str, sorted(shapes)))}")
    return _numbers(torch.stack(tensors), name)

"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

The format ("FILE FORMATS" at http://yann.lecun.com/exdb/mnist/): two zero bytes, a
type code, the number of dimensions n, then n sizes as big-endian int32, then the
values, big-endian, last dimension fastest. A name ending in .gz means gzip.
"""

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from regulab.errors import IdxError

# type code: (name, big-endian numpy dtype, torch dtype)
TYPES = {
    0x08: ("ubyte", np.dtype(">u1"), torch.uint8),
    0x09: ("byte", np.dtype(">i1"), torch.int8),
    0x0B: ("short", np.dtype(">i2"), torch.int16),
    0x0C: ("int", np.dtype(">i4"), torch.int32),
    0x0D: ("float", np.dtype(">f4"), torch.float32),
    0x0E: ("double", np.dtype(">f8"), torch.float64),
}
_CODES = {torch_dtype: code for code, (_, _, torch_dtype) in TYPES.items()}


def read_idx(path) -> torch.Tensor:
    """Read an IDX file (gzip-compressed when the name ends in .gz) into a new CPU tensor.

    The dtype follows the type code (ubyte -> uint8, byte -> int8, short -> int16,
    int -> int32, float -> float32, double -> float64) and the shape the header.
    Raises IdxError for a corrupt gzip stream, a bad header, or a file whose length
    is not exactly header + prod(sizes) * itemsize.
    """
    path = Path(path)
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise IdxError(f"{path}: corrupt gzip file ({e})") from e

    def fail(reason):
        return IdxError(f"{path}: {reason}")

    if len(data) < 4:
        raise fail(f"too short for the 4-byte magic number: file has {len(data)} bytes")
    if data[:2] != b"\0\0":
        hint = " (it looks gzip-compressed: name it .gz)" if data[:2] == b"\x1f\x8b" else ""
        raise fail(
            f"bad magic number 0x{data[:4].hex()}: IDX files start with two zero bytes{hint}"
        )
    code, ndim = data[2], data[3]
    if code not in TYPES:
        known = ", ".join(f"0x{c:02X} ({name})" for c, (name, _, _) in TYPES.items())
        raise fail(f"unknown type code 0x{code:02X}; IDX types are {known}")
    if ndim == 0:
        raise fail("the magic number gives 0 dimensions; IDX files have at least 1")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise fail(
            f"truncated header: {ndim} dimensions need {header} header bytes, file has {len(data)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if any(s < 0 for s in shape):
        raise fail(f"negative dimension size in {shape}")
    name, dtype, _ = TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        sizes = "x".join(map(str, shape))
        if dtype.itemsize > 1:
            sizes += f" {name}s of {dtype.itemsize} bytes"
        fault = "truncated" if got < expected else f"{got - expected} extra bytes at the end"
        raise fail(f"{fault}: header says {sizes} = {expected} bytes of data, file has {got}")
    values = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("=")))  # a native, writable copy


def write_idx(path, tensor: torch.Tensor) -> None:
    """Write tensor to an IDX file, gzip-compressed when the name ends in .gz.

    tensor must have 1 to 255 dimensions and one of the dtypes uint8, int8, int16,
    int32, float32, float64. The gzip header carries no time stamp, so equal
    tensors give byte-identical files.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"tensor must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.dtype not in _CODES:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in _CODES)
        raise ValueError(f"tensor must have dtype {allowed}; got {tensor.dtype}")
    if not 1 <= tensor.ndim <= 255:
        raise ValueError(f"tensor must have 1 to 255 dimensions; got {tensor.ndim}")
    code = _CODES[tensor.dtype]
    header = bytes([0, 0, code, tensor.ndim]) + np.array(tensor.shape, dtype=">i4").tobytes()
    values = tensor.detach().cpu().numpy().astype(TYPES[code][1]).tobytes()
    data = header + values
    path = Path(path)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)

"""read_idx/write_idx: round trips, a real file against gzip + struct, every kind of bad file."""

import gzip
import struct
import warnings
from pathlib import Path

import pytest
import torch

from regulab.data import IdxError, read_idx, write_idx

REAL_LABELS = Path("/work/shared/data/fashion-mnist/t10k-labels-idx1-ubyte.gz")


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64]
)
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5), (2, 0, 3)])
def test_round_trip(tmp_path, dtype, shape, suffix):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(shape, generator=g, dtype=torch.float64) * 100
    if dtype == torch.uint8:
        values = values.abs()
    tensor = values.to(dtype)
    path = tmp_path / f"t.idx{suffix}"
    write_idx(path, tensor)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "NumPy array is not writable"
        back = read_idx(path)
    assert back.dtype == dtype and back.shape == shape
    assert torch.equal(back, tensor)
    back += 1  # writable, and its own memory


def test_big_endian_on_disk(tmp_path):
    """Independent of read_idx: the bytes write_idx produces are the documented layout."""
    path = tmp_path / "t.idx"
    write_idx(path, torch.tensor([[1, -2, 3]], dtype=torch.int16))
    assert path.read_bytes() == bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 3]) + struct.pack(
        ">3h", 1, -2, 3
    )
    gz = tmp_path / "t.idx.gz"
    write_idx(gz, torch.tensor([[1, -2, 3]], dtype=torch.int16))
    assert gzip.decompress(gz.read_bytes()) == path.read_bytes()


def test_reads_big_endian_floats_written_by_hand(tmp_path):
    path = tmp_path / "f.idx"
    path.write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 3]) + struct.pack(">3f", 1.5, -2.0, 1e-3))
    torch.testing.assert_close(read_idx(path), torch.tensor([1.5, -2.0, 1e-3]), rtol=0, atol=0)


def test_real_fashion_mnist_labels_match_gzip_and_struct():
    if not REAL_LABELS.exists():
        pytest.skip(f"{REAL_LABELS} is absent")
    with gzip.open(REAL_LABELS) as f:
        raw = f.read()
    magic, n = struct.unpack(">ii", raw[:8])
    assert magic == 0x801
    expected = list(struct.unpack(f">{n}B", raw[8:]))
    labels = read_idx(REAL_LABELS)
    assert labels.dtype == torch.uint8 and labels.shape == (n,) == (10000,)
    assert labels.tolist() == expected


def test_write_refuses_what_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"tensor must have dtype .*int64"):
        write_idx(tmp_path / "x.idx", torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="tensor must have 1 to 255 dimensions; got 0"):
        write_idx(tmp_path / "x.idx", torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"tensor must be a torch\.Tensor; got list"):
        write_idx(tmp_path / "x.idx", [1, 2])


def _good_bytes():
    """An int32 IDX file of shape (2, 3)."""
    return bytes([0, 0, 0x0C, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + struct.pack(">6i", *range(6))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_good_bytes()[:-1], r"truncated: header says 2x3 ints of 4 bytes = 24 bytes of data, "),
        (_good_bytes()[:-4], r"file has 20$"),
        (_good_bytes() + b"\0", r"1 extra bytes at the end: header says .* file has 25$"),
        (
            b"\x01" + _good_bytes()[1:],
            r"bad magic number 0x01000c02: IDX files start with two zero bytes$",
        ),
        (bytes([0, 0, 0x0A]) + _good_bytes()[3:], r"unknown type code 0x0A; IDX types are"),
        (bytes([0, 0, 0x08, 0]), r"0 dimensions"),
        (_good_bytes()[:10], r"truncated header: 2 dimensions need 12 header bytes, file has 10"),
        (b"\0\0", r"too short"),
        (bytes([0, 0, 8, 1, 0xFF, 0xFF, 0xFF, 0xFF]), r"negative dimension size"),
    ],
    ids=["short", "short-4", "extra", "magic", "type", "ndim", "header", "tiny", "negative"],
)
def test_bad_raw_files(tmp_path, data, reason):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(IdxError, match=reason) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")


def test_truncated_message_reads_like_the_spec(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + struct.pack(">3i", 60000, 28, 28)
    path.write_bytes(gzip.compress(header + bytes(1000)))
    with pytest.raises(IdxError) as info:
        read_idx(path)
    assert str(info.value) == (
        f"{path}: truncated: header says 60000x28x28 = 47040000 bytes of data, file has 1000"
    )


def test_zero_size_dimension_is_fine(tmp_path):
    path = tmp_path / "empty.idx"
    path.write_bytes(bytes([0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 5]))
    assert read_idx(path).shape == (0, 5)


def test_gzip_data_under_a_raw_name_gets_a_hint(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(gzip.compress(_good_bytes()))
    with pytest.raises(IdxError, match=r"looks gzip-compressed: name it \.gz"):
        read_idx(path)


def _corrupt_crc(data):
    data = bytearray(data)
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    return bytes(data)


def _corrupt_body(data):
    data = bytearray(data)
    for i in range(10, len(data) - 8):
        data[i] ^= 0x5A
    return bytes(data)


@pytest.mark.parametrize(
    "damage",
    [
        _corrupt_crc,
        _corrupt_body,
        lambda data: data[: len(data) // 2],  # truncated stream
        lambda data: data[:-4],  # trailer cut short
        lambda data: gzip.decompress(data),  # not gzip at all
    ],
    ids=["crc", "body", "half", "trailer", "not-gzip"],
)
def test_corrupt_gzip(tmp_path, damage):
    good = tmp_path / "good.gz"
    write_idx(good, torch.arange(200, dtype=torch.int32).reshape(10, 20))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(damage(good.read_bytes()))
    with pytest.raises(IdxError, match=r"corrupt gzip file") as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.idx")

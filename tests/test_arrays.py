"""regulab.data.arrays: named arrays of .npz / .safetensors files without pickle, and (x, y)
pairs or Datasets as tensors."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import IterableDataset, TensorDataset

from regulab.data.arrays import array_names, pair_tensors, read_arrays

NAMED = {
    "x": np.arange(24, dtype=np.float32).reshape(6, 4),
    "y": np.array([0, 2, 1, 1, 0, 2]),
    "u8": np.arange(6, dtype=np.uint8),
    "flags": np.array([True, False] * 3),
    "big_endian": np.arange(6, dtype=">f8"),
}


def test_npz_arrays_are_read_as_saved(tmp_path):
    np.savez(tmp_path / "a.npz", **NAMED)
    assert array_names(tmp_path / "a.npz") == list(NAMED)
    got = read_arrays(tmp_path / "a.npz", ["y", "x", "u8", "flags", "big_endian"])
    for name, t in got.items():
        assert torch.equal(
            t, torch.from_numpy(NAMED[name].astype(NAMED[name].dtype.newbyteorder("=")))
        )
    assert (got["x"].dtype, got["y"].dtype, got["u8"].dtype) == (
        torch.float32,
        torch.int64,
        torch.uint8,
    )


def test_safetensors_arrays_are_read_as_saved(tmp_path):
    tensors = {k: torch.from_numpy(v) for k, v in NAMED.items() if k != "big_endian"}
    save_file(tensors, str(tmp_path / "a.safetensors"))
    assert sorted(array_names(tmp_path / "a.safetensors")) == sorted(tensors)
    got = read_arrays(tmp_path / "a.safetensors", ["x", "flags"])
    assert torch.equal(got["x"], tensors["x"]) and torch.equal(got["flags"], tensors["flags"])


def test_what_cannot_be_read_is_named_with_the_file(tmp_path):
    np.savez(tmp_path / "a.npz", x=NAMED["x"], text=np.array(["a", "b"]),
             objects=np.array([{}, []], dtype=object))  # fmt: skip
    np.save(tmp_path / "one.npy", NAMED["x"])
    (tmp_path / "one.npy").rename(tmp_path / "one.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    cases = [
        (tmp_path / "a.csv", ["x"], ValueError, "path must end in .npz or .safetensors; got"),
        (tmp_path / "none.npz", ["x"], FileNotFoundError, "no file"),
        (tmp_path / "a.npz", ["x", "z"], ValueError, "has no array 'z'; it has: x, text, objects"),
        (tmp_path / "a.npz", ["text"], ValueError, "array 'text' of '"),
        (tmp_path / "a.npz", ["objects"], ValueError, "holds Python objects, which need pickle"),
        (tmp_path / "one.npz", ["x"], ValueError,
         "is not a valid .npz (zip) file: it holds one .npy array, not a zip archive of arrays"),
        (tmp_path / "garbage.npz", ["x"], ValueError,
         "garbage.npz' is not a valid .npz (zip) file: it holds bytes b'not a zip', not a zip"),
        (tmp_path / "junk.safetensors", ["x"], ValueError, "is not a readable .safetensors file"),
    ]  # fmt: skip
    for path, names, kind, message in cases:
        with pytest.raises(kind) as info:
            read_arrays(path, names)
        assert message in str(info.value), str(info.value)


class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return np.full((2, 2), i, np.float32), i


class Stream(IterableDataset):
    def __iter__(self):
        return iter([(torch.ones(3), 1.5), (torch.zeros(3), 0.5)])


def test_pairs_and_datasets_become_two_tensors():
    x, y = torch.randn(4, 3), torch.arange(4)
    assert all(a is b for a, b in zip(pair_tensors((x, y), "train"), (x, y), strict=True))
    got = pair_tensors((NAMED["x"], NAMED["y"]), "train")
    assert torch.equal(got[0], torch.from_numpy(NAMED["x"]))
    got = pair_tensors(TensorDataset(x, y), "train")
    assert torch.equal(got[0], x) and torch.equal(got[1], y)
    got = pair_tensors(Items(), "val")
    assert torch.equal(got[0], torch.arange(5.0)[:, None, None].expand(5, 2, 2))
    assert torch.equal(got[1], torch.arange(5))
    got = pair_tensors(Stream(), "test")
    assert torch.equal(got[1], torch.tensor([1.5, 0.5]))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"x": 1}, "train must be an (x, y) pair of tensors or arrays, or a Dataset of (x, y) "
                   "items; got dict"),
        (3, "train must be an (x, y) pair of tensors or arrays, or a Dataset of (x, y) items; "
            "got int"),
        ([], "train is empty (a Dataset of 0 items)"),
        ([(1, 2, 3)], "train[0] must be an (x, y) pair; got tuple of 3"),
        ([(torch.ones(2), 0), (torch.ones(3), 1)], "train x: items differ in shape: (2,), (3,)"),
        ([("a", 0)], "train x: an item is not numbers"),
        ((torch.ones(2, dtype=torch.complex64), torch.ones(2)), "train x must hold numbers"),
    ],
)  # fmt: skip
def test_what_is_not_data_is_refused_in_one_line(data, message):
    with pytest.raises(ValueError) as info:
        pair_tensors(data, "train")
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_nan_and_inf_are_refused_naming_the_array_and_how_many(tmp_path, suffix):
    x = np.ones((4, 3), np.float32)
    x[0, 1], x[2, 2], x[3, 0] = np.nan, np.inf, -np.inf
    path = tmp_path / f"a{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x, y=np.arange(4))
    else:
        from safetensors.numpy import save_file

        save_file({"x": x, "y": np.arange(4)}, str(path))
    assert read_arrays(path, ["y"])["y"].tolist() == [0, 1, 2, 3]  # integers: always finite
    with pytest.raises(ValueError) as info:
        read_arrays(path, ["x", "y"])
    assert str(info.value) == (
        f"array 'x' of '{path}' holds 3 non-finite values (NaN or inf) of 12: remove or "
        "impute them before training"
    )


def test_nan_in_a_pair_or_a_dataset_is_refused_naming_it():
    y = torch.tensor([0.5, float("nan")])
    with pytest.raises(ValueError, match=r"^train y holds 1 non-finite value \(NaN or inf\) of 2"):
        pair_tensors((torch.zeros(2, 3), y), "train")
    items = [(torch.tensor([1.0, float("inf")]), 0), (torch.ones(2), 1)]
    with pytest.raises(ValueError, match=r"^val x holds 1 non-finite value \(NaN or inf\) of 4"):
        pair_tensors(items, "val")

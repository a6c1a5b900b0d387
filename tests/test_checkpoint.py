"""Checkpoints: exact round trips of optimizer state, atomic writes, pruning, no pickle.

References: the optimizer that never went through a checkpoint (one further
step must agree bit for bit), Python's own equality of the original structure,
and the file system (which files and folders exist).
"""

import json
import math
import pickle

import pytest
import torch
from torch import nn

from regulab import checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))


def _same(a, b, where="state"):
    """Exact structural equality: same types (tuple stays tuple, int keys stay int), same bits."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _same(u, v, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _steps(model, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=1e-3),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_state_round_trip_then_one_more_step_is_identical(tmp_path, name):
    model = _model()
    groups = [
        {"params": [model[0].weight, model[2].weight], "max_grad": math.inf},
        {"params": [model[0].bias, model[2].bias], "lr": 0.003, "note": None},
    ]
    opt = OPTIMIZERS[name](groups)
    _steps(model, opt, 3, seed=1)
    state = opt.state_dict()
    assert isinstance(next(iter(state["state"])), int)  # int keys are what is tested

    # in memory and through the files (JSON skeleton + safetensors)
    tensors: dict = {}
    skeleton = checkpoint.split_tensors(state, tensors)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    _same(state, checkpoint.join_tensors(json.loads(json.dumps(skeleton)), tensors))
    path = checkpoint.save(tmp_path, 3, model.state_dict(), {"optimizer": state})
    model_state, loaded = checkpoint.load(path)
    _same(state, loaded["optimizer"])
    assert loaded["optimizer"]["param_groups"][0]["max_grad"] == math.inf
    if "adam" in name:  # _same checked the type too: a tuple, not a list
        assert loaded["optimizer"]["param_groups"][1]["betas"] == state["param_groups"][1]["betas"]

    fresh = _model()
    fresh.load_state_dict(model_state)
    fresh_groups = [
        {"params": [fresh[0].weight, fresh[2].weight], "max_grad": math.inf},
        {"params": [fresh[0].bias, fresh[2].bias], "lr": 0.003, "note": None},
    ]
    fresh_opt = OPTIMIZERS[name]([{**g, "lr": 123.0} for g in fresh_groups])  # lr must come back
    fresh_opt.load_state_dict(loaded["optimizer"])
    _steps(model, opt, 1, seed=2)
    _steps(fresh, fresh_opt, 1, seed=2)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    _same(opt.state_dict(), fresh_opt.state_dict())


def test_split_join_keeps_types_and_special_floats():
    state = {
        "ints": {0: torch.arange(3), 7: None, -2: 1.5},
        "tuple": (0.9, 0.999, (1, "a")),
        "list": [torch.ones(2, dtype=torch.float64), -math.inf, math.inf, math.nan, True, "s"],
        "empty": {},
        "scalar": torch.tensor(4.0),
    }
    tensors: dict = {}
    skeleton = checkpoint.split_tensors(state, tensors)
    text = json.dumps(skeleton)
    _same(state, checkpoint.join_tensors(json.loads(text), tensors))
    # tensors are copies: changing the original does not change what was stored
    state["scalar"] += 1
    assert checkpoint.join_tensors(json.loads(text), tensors)["scalar"] == 4.0
    with pytest.raises(TypeError, match=r"cannot store state.bad of type object"):
        checkpoint.split_tensors({"bad": object()}, {})


def _write(tmp_path, epoch, keep=1):
    model = _model()
    return checkpoint.save(tmp_path, epoch, model.state_dict(), {"epoch": epoch}, keep=keep)


def test_partial_folders_are_ignored_and_cleaned_by_the_next_save(tmp_path):
    _write(tmp_path, 1, keep=5)
    _write(tmp_path, 2, keep=5)
    # a run killed while writing epoch 3 leaves the hidden folder, with a half-written file
    partial = tmp_path / ".epoch-0003.partial"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    stale = tmp_path / ".epoch-0009.partial"  # from some earlier run
    stale.mkdir()
    assert checkpoint.latest(tmp_path) == tmp_path / "epoch-0002"
    assert checkpoint.checkpoints(tmp_path) == [tmp_path / "epoch-0001", tmp_path / "epoch-0002"]
    path = _write(tmp_path, 3, keep=5)
    assert path == tmp_path / "epoch-0003" and checkpoint.latest(tmp_path) == path
    assert checkpoint.load(path)[1] == {"epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001", "epoch-0002", "epoch-0003"]


def test_saving_an_epoch_again_replaces_it(tmp_path):
    _write(tmp_path, 2)
    model = _model()
    checkpoint.save(tmp_path, 2, model.state_dict(), {"attempt": 2})
    assert checkpoint.load(tmp_path / "epoch-0002")[1] == {"attempt": 2}


@pytest.mark.parametrize("keep", [1, 2, 3])
def test_keep_keeps_the_newest(tmp_path, keep):
    for epoch in (1, 2, 9, 10, 11):
        _write(tmp_path, epoch, keep=keep)
    names = ["epoch-0001", "epoch-0002", "epoch-0009", "epoch-0010", "epoch-0011"]
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == names[-keep:]
    assert sorted(p.name for p in tmp_path.iterdir()) == names[-keep:]


def test_epochs_past_9999_sort_by_number(tmp_path):
    _write(tmp_path, 9999, keep=2)
    _write(tmp_path, 10000, keep=2)
    assert [p.name for p in checkpoint.checkpoints(tmp_path)] == ["epoch-9999", "epoch-10000"]
    assert checkpoint.latest(tmp_path).name == "epoch-10000"


def test_latest_of_a_missing_or_empty_folder_is_none(tmp_path):
    assert checkpoint.latest(tmp_path / "nothing") is None
    assert checkpoint.latest(tmp_path) is None


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("model.safetensors", lambda b: b[: len(b) // 2]),  # truncated in the data
        ("model.safetensors", lambda b: b[:6]),  # truncated in the header
        ("model.safetensors", lambda b: b"not a safetensors file"),
        ("state.safetensors", lambda b: b[:-3]),
        ("state.json", lambda b: b[: len(b) // 2]),
        ("state.json", lambda b: b""),
    ],
)
def test_load_of_a_damaged_checkpoint_names_the_path(tmp_path, file, damage):
    model = _model()
    state = {"moments": [torch.randn(50), torch.randn(50)], "epoch": 4}
    path = checkpoint.save(tmp_path, 4, model.state_dict(), state)
    target = path / file
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(ValueError, match=rf"checkpoint '{path}' cannot be read"):
        checkpoint.load(path)


def test_load_of_a_missing_file_names_the_path(tmp_path):
    path = _write(tmp_path, 1)
    (path / "state.json").unlink()
    with pytest.raises(ValueError, match=rf"checkpoint '{path}' cannot be read"):
        checkpoint.load(path)


def test_no_pickle_anywhere(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("dumps", "dump", "loads", "load"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "save", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = _model()
    opt = torch.optim.Adam(model.parameters())
    _steps(model, opt, 2, seed=0)
    path = checkpoint.save(tmp_path, 1, model.state_dict(), {"optimizer": opt.state_dict()})
    checkpoint.load(path)
    files = sorted(p.name for p in path.iterdir())
    assert files == ["model.safetensors", "state.json", "state.safetensors"]
    assert all(p.is_file() for p in path.iterdir())
    json.loads((path / "state.json").read_text())  # plain JSON text
    assert not any(p.read_bytes().startswith(b"\x80") for p in path.iterdir())  # pickle protocol 2+


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 3, bias=False)
        self.decoder = nn.Linear(3, 4, bias=False)
        self.head = nn.Linear(4, 3, bias=False)
        self.head.weight = self.encoder.weight  # one Parameter in two modules


def test_tied_weights_save_and_load(tmp_path):
    torch.manual_seed(1)
    model = Tied()
    path = checkpoint.save(tmp_path, 1, model.state_dict(), {})
    model_state, _ = checkpoint.load(path)
    assert set(model_state) == {"encoder.weight", "decoder.weight", "head.weight"}
    torch.manual_seed(2)
    fresh = Tied()
    fresh.load_state_dict(model_state)
    assert fresh.head.weight is fresh.encoder.weight  # still tied
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k

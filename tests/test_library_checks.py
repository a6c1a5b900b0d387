"""Library arguments refused in one line naming the argument (issue 16, defect 11): fit's data
(label range, dtypes, shapes, devices, empty data) checked on the first batch before any step,
the stacked runs' data, a Penalty with nothing to act on, and slim.load of foreign files."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from regulab import LambdaSearch, Penalty, TensorLoader, fit, fit_sweep, models, slim
from regulab.data_checks import check_data
from regulab.recipe import schema
from regulab.sweep import Settings

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=40, features=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randint(0, classes, (n,), generator=g)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def _refused(kind, call, *words):
    """call() raises kind with one line holding every word; return the message."""
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


# --- fit's data -------------------------------------------------------------------------------

X, Y = _data()
BAD_TRAIN = {
    "labels >= classes": ((X, Y + 3), ValueError, ["train", "[0, 3)", "3 .. 5"]),
    "negative labels": ((X, Y - 5), ValueError, ["train", "[0, 3)", "-5"]),
    "float labels": ((X, Y.float()), ValueError, ["train", "integer class labels", "float32"]),
    "feature count": ((torch.randn(40, 7), Y), ValueError, ["train", "(8, 7)", "in_features=5"]),
    "meta data": ((X.to("meta"), Y.to("meta")), ValueError, ["train", "meta device"]),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_fit_refuses_train_data_before_any_step(case):
    (x, y), kind, words = BAD_TRAIN[case]
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    epochs = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = TensorLoader(x, y, batch_size=8)
    _refused(
        kind,
        lambda: fit(model, optimizer, loader, epochs=2, on_epoch=lambda h: epochs.append(1)),
        *words,
    )
    assert epochs == []  # no epoch was trained
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("where", ["val", "test"])
@pytest.mark.parametrize(
    "data, words",
    [
        ((torch.randn(10, 7), Y[:10]), ["(10, 7)", "Linear(in_features=5"]),
        ((X[:10], Y[:10] + 4), ["[0, 3)"]),
        ((X[:0], Y[:0]), ["no examples"]),
        ((X[:10], Y[:5]), ["one length", "[10, 5]"]),
        ([], ["no batches"]),
    ],
)
def test_fit_checks_val_and_test_before_training(where, data, words):
    model = _model()
    before = [p.clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = TensorLoader(X, Y, batch_size=8)
    message = _refused(
        ValueError, lambda: fit(model, optimizer, loader, epochs=1, **{where: data}), *words
    )
    assert message.startswith(where)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_fit_checks_a_dataloader_and_keeps_its_order():
    g = torch.Generator().manual_seed(3)
    loader = DataLoader(TensorDataset(X, Y + 3), batch_size=8, shuffle=True, generator=g)
    model = _model()
    state = g.get_state()
    _refused(
        ValueError,
        lambda: fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, epochs=1),
        "train",
        "[0, 3)",
    )
    assert torch.equal(g.get_state(), state)  # the peek left the loader's order alone


def test_a_later_batch_with_a_bad_label_is_named():
    # a DataLoader is checked on its first batch; later labels are the loss's to refuse
    y = Y.clone()
    y[-1] = 7
    loader = DataLoader(TensorDataset(X, y), batch_size=8)
    model = _model()
    _refused(
        ValueError,
        lambda: fit(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, epochs=1),
        "cross_entropy",
        "[0, 3)",
        "0 .. 7",
    )


def test_fit_refuses_models_optimizers_and_train_it_cannot_use():
    model = _model()
    other = torch.optim.SGD(_model().parameters(), lr=0.1)  # another model's parameters
    loader = TensorLoader(X, Y, batch_size=8)
    _refused(ValueError, lambda: fit(model, other, loader, epochs=1), "optimizer", "none of")
    _refused(TypeError, lambda: fit(model, "sgd", loader, epochs=1), "optimizer", "str")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    _refused(TypeError, lambda: fit(model, optimizer, (X, Y), epochs=1), "TensorLoader(x, y")
    meta = nn.Linear(5, 3, device="meta")
    _refused(
        ValueError,
        lambda: fit(meta, torch.optim.SGD(meta.parameters(), lr=0.1), loader, epochs=1),
        "meta device",
    )
    empty = torch.optim.SGD(model.parameters(), lr=0.1)
    _refused(ValueError, lambda: fit(nn.ReLU(), empty, loader, epochs=1), "no", "parameters")


def test_the_check_leaves_modes_and_random_state_as_found():
    model = _model()
    model[0].eval()  # a mixed state: only the first layer in eval mode
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    check_data("train", model, TensorLoader(X, Y, batch_size=8), "cross_entropy")
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)


def test_an_empty_tensor_loader_is_named():
    _refused(ValueError, lambda: TensorLoader(X[:0], Y[:0], batch_size=8), "length 0")


# --- the stacked runs ---------------------------------------------------------------------------

SETTINGS = Settings(train=schema.Train(epochs=1))


@pytest.mark.parametrize(
    "x, y, words",
    [
        (X, Y + 3, ["train", "[0, 3)"]),
        (torch.randn(40, 7), Y, ["train", "(8, 7)"]),
        (X.to("meta"), Y.to("meta"), ["train", "meta device"]),
    ],
)
def test_fit_sweep_refuses_data_in_one_line(x, y, words):
    loader = TensorLoader(x, y, batch_size=8)
    _refused(ValueError, lambda: fit_sweep(_model(), "l2", [0.0, 0.1], loader, SETTINGS), *words)


def test_fit_sweep_refuses_an_empty_iterable():
    _refused(ValueError, lambda: fit_sweep(_model(), "l2", [0.0], [], SETTINGS), "no batches")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"data": (X, Y + 3), "val_fraction": 0.25}, ["data", "[0, 3)"]),
        ({"data": (torch.randn(40, 7), Y), "val_fraction": 0.25}, ["data", "(30, 7)"]),
        ({"data": (X, Y), "val": (torch.randn(10, 7), Y[:10])}, ["val", "(10, 7)"]),
    ],
)
def test_lambda_search_refuses_data_in_one_line(kwargs, words):
    search = LambdaSearch(_model(), "l2", [0.0, 0.1], settings=SETTINGS, **kwargs)
    _refused(ValueError, search.fit, *words)


# --- Penalty ------------------------------------------------------------------------------------


def test_a_penalty_with_nothing_to_act_on_is_refused():
    model = _model()
    params = model.parameters()
    torch.optim.SGD(params, lr=0.1)  # reads the generator up
    for given in ([], params, [{"params": []}], [{"params": [model[0].weight], "penalize": False}]):
        _refused(ValueError, lambda g=given: Penalty(g, l2=1e-3), "param_groups(model)")
    _refused(ValueError, lambda: Penalty(params, l2=1e-3), "used up")


# --- slim.load ------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    model = models.mlp((5, 4, 3))
    slim.save(model, tmp_path / "saved", {"name": "mlp", "kwargs": {"sizes": [5, 4, 3]}})
    return tmp_path / "saved"


def _edit_arch(edit):
    def apply(folder):
        path = folder / "arch.json"
        spec = edit(json.loads(path.read_text()))
        path.write_text(spec if isinstance(spec, str) else json.dumps(spec))

    return apply


def _edit_weights(edit):
    def apply(folder):
        path = folder / "model.safetensors"
        state = load_file(str(path))
        save_file(edit(state), str(path))

    return apply


def _set(layer, key, value):
    def edit(spec):
        spec["layers"][layer][key] = value
        return spec

    return edit


def _add_layer(spec):
    spec["layers"]["nope"] = {"type": "Linear", "in_features": 1, "out_features": 2}
    return spec


def _truncate(folder):
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:40])


FOREIGN = {
    "not JSON": (_edit_arch(lambda s: "{oops"), "arch.json", "not JSON"),
    "a list": (_edit_arch(lambda s: [1, 2]), "arch.json", "'arch' and 'layers'"),
    "no layers": (_edit_arch(lambda s: {"arch": s["arch"]}), "arch.json", "'layers'"),
    "foreign": (_edit_arch(lambda s: {"architectures": ["Bert"]}), "arch.json", "slim.save"),
    "layers a list": (_edit_arch(lambda s: {**s, "layers": [1]}), "arch.json", "layer names"),
    "no type": (_edit_arch(lambda s: {**s, "layers": {"1": {}}}), "arch.json", "'type'"),
    "unknown layer": (_edit_arch(_add_layer), "saved", "nope"),
    "size a string": (_edit_arch(_set("1", "in_features", "5")), "saved", "in_features"),
    "size edited": (_edit_arch(_set("1", "out_features", 7)), "saved", "(7, 5)"),
    "bad kwargs": (
        _edit_arch(lambda s: {**s, "arch": {"name": "mlp", "kwargs": {"bogus": 1}}}),
        "arch.json",
        "bogus",
    ),
    "tensor reshaped": (
        _edit_weights(lambda st: {**st, "1.weight": torch.zeros(9, 9)}),
        "saved",
        "(9, 9)",
    ),
    "foreign tensors": (_edit_weights(lambda st: {"foo": torch.zeros(2)}), "saved", "foo"),
    "truncated": (_truncate, "model.safetensors", "truncated"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "saved", "model.safetensors"),
    "no folder": (lambda f: shutil.rmtree(f), "saved", "arch.json"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_slim_load_refuses_edited_or_foreign_files_naming_them(saved, case):
    edit, named, fault = FOREIGN[case]
    edit(saved)
    message = _refused(ValueError, lambda: slim.load(saved), named, fault)
    assert str(saved) in message


def test_slim_load_leaves_the_given_model_alone_when_the_sizes_do_not_fit(saved):
    _edit_arch(_set("1", "out_features", 7))(saved)
    model = models.mlp((5, 4, 3))
    shapes = [tuple(p.shape) for p in model.parameters()]
    _refused(ValueError, lambda: slim.load(saved, model=model), "do not belong together")
    assert [tuple(p.shape) for p in model.parameters()] == shapes

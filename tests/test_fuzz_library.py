"""The fuzz suite of the library (issue 16): generated arguments to `fit`, `Penalty`, the
in-place regularizers and `slim.load`, against the library's promise: a call succeeds, or
raises a `ValueError` or `TypeError` whose message names the argument. Never a raw torch
error (RuntimeError, IndexError, ...) from deep inside, never silently doing nothing.

Cases are drawn from a fixed seed, with no database (`conftest.fuzz_settings`).
"""

import json
import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from torch import nn

from conftest import fuzz_settings
from regulab import Penalty, TensorLoader, fit, max_norm_, prox_l1_, slim

ODD_NUMBERS = st.sampled_from([0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-300, 1e300, 2])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def promised(call, *names):
    """Run call(); it may succeed, or raise ValueError/TypeError naming one of names."""
    try:
        return call()
    except (ValueError, TypeError) as e:
        assert any(n in str(e) for n in names), f"{type(e).__name__} names none of {names}: {e}"
    return None


@st.composite
def data(draw):
    """(x, y, classes): 4 features and 3 classes mostly, with one thing wrong sometimes."""
    n = draw(st.sampled_from([1, 2, 7, 16]))
    features = draw(st.sampled_from([4, 4, 4, 3, 5]))
    shape = draw(st.sampled_from([(n, features), (n, features), (n, 2, 2), (n,)]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.float16]))
    x = torch.randn(shape).to(dtype)
    labels = draw(st.sampled_from(["ok", "ok", "too big", "negative", "float", "2-d", "short"]))
    y = torch.arange(n) % 3
    y = {
        "ok": y, "too big": y + 3, "negative": y - 1, "float": y.float() / 3,
        "2-d": y[:, None], "short": y[: max(n - 1, 1)],
    }[labels]  # fmt: skip
    return x, y


@fuzz_settings(max_examples=60)
@given(xy=data(), batch_size=st.sampled_from([1, 4, 64]), loss=st.sampled_from(
    ["cross_entropy", "mse", "half_mse"]))  # fmt: skip
@example(xy=(torch.randn(8, 4), torch.arange(8) % 3 + 3), batch_size=4, loss="cross_entropy")
@example(xy=(torch.randn(8, 4), torch.rand(8)), batch_size=4, loss="cross_entropy")
@example(xy=(torch.randn(8, 5), torch.arange(8) % 3), batch_size=4, loss="cross_entropy")
def test_fit_checks_its_data(xy, batch_size, loss):
    x, y = xy
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def run():
        loader = TensorLoader(x, y, batch_size=batch_size)
        return fit(model, opt, loader, epochs=1, loss=loss, eval_train=0)

    promised(run, "x", "y", "tensors", "train", "label", "loss", "batch", "input", "feature",
             "dtype")  # fmt: skip


def test_fit_refuses_data_on_the_meta_device():
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4, device="meta"), torch.zeros(8, dtype=torch.long, device="meta")
    with pytest.raises((ValueError, TypeError), match="device"):
        fit(model, opt, TensorLoader(x, y, batch_size=4), epochs=1, eval_train=0)


@pytest.mark.parametrize("nothing", ["empty list", "used generator", "empty group"])
def test_penalty_with_nothing_to_act_on_is_refused(nothing):
    model = nn.Linear(3, 2)
    params = {
        "empty list": lambda: [],
        "used generator": lambda: (g := model.parameters(), list(g))[0],
        "empty group": lambda: [{"params": []}],
    }[nothing]()
    with pytest.raises(ValueError, match="params"):
        Penalty(params, l2=0.1)


@fuzz_settings(max_examples=40)
@given(l1=ODD_NUMBERS, l2=ODD_NUMBERS, dim=st.sampled_from([None, 0, 1, -1, 2, 5]),
       max_norm=ODD_NUMBERS)  # fmt: skip
def test_regularizers_check_their_strengths(l1, l2, dim, max_norm):
    model = nn.Linear(3, 2)
    penalty = promised(lambda: Penalty(model.parameters(), l1=l1, l2=l2), "l1", "l2")
    if penalty is not None:
        penalty.value()  # may be inf for a huge strength: arithmetic, not a fault
    promised(lambda: max_norm_(model.parameters(), max_norm, dim=dim), "max_norm", "dim")
    promised(lambda: prox_l1_(model.parameters(), l1), "threshold")
    assert all(torch.isfinite(p).all() for p in model.parameters())


FOREIGN = st.sampled_from(["missing arch", "arch not json", "arch a list", "no layers",
                           "layers wrong", "weights garbage", "weights missing",
                           "weights foreign"])  # fmt: skip


@fuzz_settings(max_examples=24)
@given(fault=FOREIGN)
def test_slim_load_of_a_foreign_folder_is_one_error(tmp_path_factory, fault):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("saved")
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    slim.save(model, folder)
    arch, weights = folder / "arch.json", folder / "model.safetensors"
    spec = json.loads(arch.read_text())
    if fault == "missing arch":
        arch.unlink()
    elif fault == "arch not json":
        arch.write_text("{not json")
    elif fault == "arch a list":
        arch.write_text("[]")
    elif fault == "no layers":
        arch.write_text(json.dumps({"arch": None}))
    elif fault == "layers wrong":
        arch.write_text(json.dumps({**spec, "layers": {"0": "x"}}))
    elif fault == "weights garbage":
        weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    elif fault == "weights missing":
        weights.unlink()
    else:
        save_file({"other.weight": torch.zeros(2, 2)}, str(weights))
    fresh = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    named = r"arch\.json|model\.safetensors|saved weights"  # the file at fault
    with pytest.raises((ValueError, TypeError, FileNotFoundError), match=named):
        slim.load(folder, fresh)

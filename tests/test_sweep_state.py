"""StackedRun: training epoch by epoch, dropping copies (keep) and copying them (copy_into).

References: an uninterrupted StackedRun (a survivor of keep must continue exactly as
it would have), and one sequential `fit` whose hyperparameters change after the epoch
of the copy (the receiver of copy_into must continue as the donor would with its new
values). Tolerances: 1e-6 against the stacked run, 1e-5 against fit (float32).
"""

import copy
import functools

import pytest
import torch
from torch import nn

from regulab import Penalty, digits, inverse_sqrt, models, param_groups
from regulab.data.loader import TensorLoader
from regulab.layers import Dropout
from regulab.recipe import schema
from regulab.sweep.engine import Settings, fit_stacked
from regulab.sweep.state import StackedRun
from regulab.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

LOADER_SEED = 3


@functools.cache
def _digits():
    x, y = digits()
    return x.unsqueeze(1), y


def _loader(n=64, batch_size=16):
    x, y = _digits()
    return TensorLoader(x[:n], y[:n], batch_size=batch_size, seed=LOADER_SEED)


def _seeded(factory, seed=0):
    torch.manual_seed(seed)
    return factory()


def _tensors(run: StackedRun, k: int) -> dict:
    """Copy k's parameters and buffers (p buffers included) by name."""
    return {
        n: t[k].detach().clone() for n, t in {**run.stacked.params, **run.stacked.buffers}.items()
    }


def _assert_close(got: dict, want: dict, atol: float):
    assert list(got) == list(want)
    for name, t in want.items():
        torch.testing.assert_close(
            got[name], t, rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}"
        )


VGG = functools.partial(models.vgg_bn, [4, "M", 8, "M"], dropout=0.3)
OPTIMS = {
    "sgd-nesterov": schema.Optim(lr=0.05, momentum=0.9, nesterov=True),
    "adam": schema.Optim(name="adam", lr=0.01),
    "adamw": schema.Optim(name="adamw", lr=0.01),
}
HPARAMS = {  # five copies, four hyperparameters, BatchNorm and dropout
    "weight_decay": [0.0, 1e-2, 0.1, 1e-3, 3e-2],
    "dropout": [0.1, 0.5, 0.3, 0.2, 0.4],
    "bn_sparsity": [0.0, 1e-2, 1e-3, 0.1, 3e-2],
    "lr": [1.0, 0.5, 2.0, 0.3, 1.5],  # times optim.lr below
}


def _vgg_run(optim, vary=False, epochs=None):
    hparams = {**HPARAMS, "lr": [v * optim.lr for v in HPARAMS["lr"]]}
    s = Settings(
        optim=optim, train=schema.Train(epochs=4, seed=2, clip_grad_norm=1.0),
        schedule=inverse_sqrt(0.5), vary=vary,
    )  # fmt: skip
    return StackedRun(_seeded(VGG), hparams, _loader(48), s)


@pytest.mark.parametrize("optim", list(OPTIMS))
def test_a_survivors_later_epochs_equal_the_uninterrupted_copys(optim):
    whole = _vgg_run(OPTIMS[optim]).train_epochs(4)
    cut = _vgg_run(OPTIMS[optim]).train_epochs(2)
    cut.keep([3, 1])
    assert cut.k == 2 and cut.ids.tolist() == [3, 1]
    assert cut.hparams["dropout"].tolist() == [0.2, 0.5]
    cut.train_epochs(1).train_epochs(1)  # resumable epoch by epoch
    assert (cut.epoch, cut.step) == (4, whole.step)
    for new, old in ((0, 3), (1, 1)):
        _assert_close(_tensors(cut, new), _tensors(whole, old), atol=1e-6)
    # the stacked state shrank: parameters, buffers, optimizer state, hyperparameters
    for t in (*cut.stacked.params.values(), *cut.stacked.buffers.values()):
        assert t.shape[0] == 2
    for state in cut.opt.buffers.values():
        assert state and all(t.shape[0] == 2 for t in state.values())
    assert cut.opt.steps.tolist() == [whole.step] * 2
    assert all(len(v) == 2 for v in cut.hparams.values())
    assert cut.strengths.lr.shape == (2,) and cut.diverged_epoch.shape == (2,)
    got = cut.evaluate(_loader(40))
    want = whole.evaluate(_loader(40))
    torch.testing.assert_close(got["loss"], want["loss"][[3, 1]], rtol=1e-6, atol=0)


def test_with_vary_a_survivor_keeps_its_own_batch_order():
    # no dropout: with vary the noise is one (K, ...) draw, which keep cannot preserve
    hparams = {"l2": [0.0, 0.1, 1e-2, 0.3], "lr": [0.1, 0.05, 0.2, 0.1]}
    s = Settings(optim=schema.Optim(momentum=0.5), train=schema.Train(seed=1), vary=True)
    build = functools.partial(models.mlp, [64, 16, 10])
    whole = StackedRun(_seeded(build), hparams, _loader(), s).train_epochs(3)
    cut = StackedRun(_seeded(build), hparams, _loader(), s).train_epochs(1)
    cut.keep(torch.tensor([False, True, False, True])).train_epochs(2)
    assert [loader.seed for loader in cut.loaders] == [LOADER_SEED + 1, LOADER_SEED + 3]
    for new, old in ((0, 1), (1, 3)):
        _assert_close(_tensors(cut, new), _tensors(whole, old), atol=1e-6)
    cut.keep([1]).train_epochs(1)  # one copy left: its own loader still
    whole.train_epochs(1)
    _assert_close(_tensors(cut, 0), _tensors(whole, 3), atol=1e-6)


def test_epoch_by_epoch_equals_fit_stacked_in_one_call():
    s = Settings(optim=schema.Optim(lr=0.05, momentum=0.9), train=schema.Train(epochs=3, seed=4))
    hparams = {"l1": [0.0, 1e-3], "max_norm": [0.0, 1.0], "dropout": [0.2, 0.4]}
    model = _seeded(lambda: models.mlp([64, 16, 10], dropout=0.5))
    stacked = fit_stacked(model, hparams, _loader(), s)
    run = StackedRun(model, hparams, _loader(), s)
    for _ in range(3):
        run.train_epochs()
    for name, t in {**stacked.params, **stacked.buffers}.items():
        assert torch.equal(t, {**run.stacked.params, **run.stacked.buffers}[name]), name


# --- copy_into: PBT's exploit -------------------------------------------------------------------

DONOR = {"lr": 0.1, "weight_decay": 1e-2, "dropout": 0.2}
NEW = {"lr": 0.03, "weight_decay": 0.1, "dropout": 0.5}


def _sequential(model, optim, loader, s, epochs, switch):
    """`fit` with DONOR's values for `switch` epochs, then NEW's: one model, one optimizer."""
    m = copy.deepcopy(model)
    for layer in m.modules():
        if type(layer) is Dropout:
            layer.p = DONOR["dropout"]
    groups = param_groups(m, DONOR["weight_decay"])
    if optim.name == "sgd":
        opt = torch.optim.SGD(groups, lr=DONOR["lr"], momentum=optim.momentum)
    else:
        opt = torch.optim.Adam(groups, lr=DONOR["lr"])

    def change(history):
        if history.rows[-1]["epoch"] == switch:
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] = NEW["lr"]
                g["weight_decay"] = NEW["weight_decay"] if g["penalize"] else 0.0
            for layer in m.modules():
                if type(layer) is Dropout:
                    layer.p = NEW["dropout"]

    weights = [p for g in groups if g["penalize"] for p in g["params"]]
    history = fit(
        m, opt, loader, epochs=epochs, penalty=Penalty(weights, l2=1e-3), schedule=s.schedule,
        seed=s.train.seed, eval_train=0, on_epoch=change,
    )  # fmt: skip
    assert history.status == "completed"
    return m


@pytest.mark.parametrize("optim", [OPTIMS["sgd-nesterov"], OPTIMS["adam"]], ids=["sgd", "adam"])
def test_after_copy_into_the_receiver_continues_as_the_donor_with_its_new_values(optim):
    optim = schema.Optim(name=optim.name, lr=0.1, momentum=optim.momentum)
    s = Settings(
        optim=optim, penalty=schema.Penalty(l2=1e-3), train=schema.Train(seed=6),
        schedule=inverse_sqrt(0.3),
    )  # fmt: skip
    hparams = {  # copy 0 is the donor, copy 2 receives
        name: [DONOR[name], 0.5 * DONOR[name], 2 * DONOR[name]] for name in DONOR
    }
    model = _seeded(lambda: models.mlp([64, 16, 10], dropout=0.5))
    run = StackedRun(model, hparams, _loader(), s).train_epochs(2)
    whole = StackedRun(model, hparams, _loader(), s).train_epochs(4)
    run.copy_into([0], [2]).set_hparams({name: [NEW[name]] for name in NEW}, index=[2])
    assert run.hparams["lr"].tolist() == pytest.approx([0.1, 0.05, 0.03])
    for state in run.opt.buffers.values():  # momentum, or Adam's two moments
        assert state and all(torch.equal(t[2], t[0]) for t in state.values())
    assert torch.equal(run.opt.steps, torch.full((3,), float(run.step), dtype=torch.float64))
    run.train_epochs(2)
    ref = _sequential(model, optim, _loader(), s, epochs=4, switch=2)
    got = run.model(2).state_dict()
    for name, t in ref.state_dict().items():
        torch.testing.assert_close(got[name], t, rtol=0, atol=1e-5, msg=name)
    rates = [float(m.p) for m in run.model(2).modules() if type(m) is Dropout]
    assert rates == pytest.approx([NEW["dropout"]])  # its own rate, not the donor's
    own = _tensors(whole, 2)  # where the receiver would have gone without the copy
    assert max((own[n] - t).abs().max() for n, t in _tensors(run, 2).items()) > 1e-2
    for k in (0, 1):  # donor and bystander: as if nothing happened
        _assert_close(_tensors(run, k), _tensors(whole, k), atol=1e-6)


def test_copy_into_reads_every_source_before_writing_and_copies_batchnorm_statistics():
    run = _vgg_run(schema.Optim(lr=0.05, momentum=0.9)).train_epochs(1)
    old = [_tensors(run, k) for k in range(run.k)]
    run.copy_into([1, 0], [0, 1])  # a swap: both read first
    for dst, src in ((0, 1), (1, 0)):
        got = _tensors(run, dst)
        for name, t in old[src].items():
            if name.endswith(".p"):  # the rates stay with the slot
                assert torch.equal(got[name], old[dst][name]), name
            else:
                assert torch.equal(got[name], t), name
    assert "features.1.running_var" in old[0]


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda r: r.keep([]), ValueError, r"index must name at least one copy; got none"),
        (lambda r: r.keep([0, 3]), ValueError,
         r"index must hold positions in \[0, 3\); got \[0, 3\]"),
        (lambda r: r.keep([1, 1]), ValueError, r"index must not repeat a copy; got \[1, 1\]"),
        (lambda r: r.keep([True, False]), ValueError,
         r"index as a mask must have 3 entries; got 2"),
        (lambda r: r.keep([0.5]), TypeError, r"index must hold integer positions or a bool mask"),
        (lambda r: r.copy_into([0], [1, 2]), ValueError,
         r"src and dst must have the same length; got 1 and 2"),
        (lambda r: r.copy_into([0, 0], [1, 1]), ValueError, r"dst must not repeat a copy"),
        (lambda r: r.set_hparams({"l1": [0.1, 0.1, 0.1]}), ValueError,
         r"values: 'l1' is not searched in this run; it searches l2, lr"),
        (lambda r: r.set_hparams({"lr": [0.1]}, index=[0, 1]), ValueError,
         r"values\['lr'\] must hold 2 values, one per copy of index; got 1"),
        (lambda r: r.set_hparams({"lr": [-1.0]}, index=[0]), ValueError,
         r"lr must be a finite number > 0; got -1.0"),
        (lambda r: r.set_hparams([0.1]), TypeError, r"values must be a dict name -> values"),
    ],
)  # fmt: skip
def test_bad_input_names_the_argument(call, error, match):
    s = Settings(train=schema.Train(seed=1))
    run = StackedRun(models.mlp([64, 8, 10]), {"l2": [0.0, 0.1, 1.0], "lr": [0.1] * 3},
                     _loader(16), s)  # fmt: skip
    with pytest.raises(error, match=match):
        call(run)
    assert run.k == 3 and run.hparams["l2"].tolist() == [0.0, 0.1, 1.0]  # nothing half-done


def test_train_epochs_leaves_the_callers_random_state_alone():
    model = _seeded(lambda: models.mlp([64, 8, 10], dropout=0.5))
    run = StackedRun(model, {"dropout": [0.1, 0.5]}, _loader(32), Settings())
    torch.manual_seed(3)
    state = torch.get_rng_state()
    run.train_epochs(1).keep([1]).train_epochs(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(run.model(0), nn.Module)

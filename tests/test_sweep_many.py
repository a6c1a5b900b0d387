"""fit_stacked: several hyperparameters per copy, against one sequential `fit` per copy.

Reference: for each copy, `regulab.fit` with torch.optim over `param_groups` (lr and
weight decay of that copy), `Penalty`, `prox_l1_` and `max_norm_` with its strengths,
on the model built with its dropout / drop path rate. Every parameter and buffer
(BatchNorm running statistics included) must agree to 1e-5 in float32, 1e-10 in float64.
"""

import copy
import functools

import pytest
import torch
from torch import nn

from regulab import Penalty, digits, inverse_sqrt, max_norm_, models, param_groups, prox_l1_
from regulab.data.loader import TensorLoader
from regulab.layers import Dropout, DropPath
from regulab.recipe import schema
from regulab.sweep.engine import Settings, fit_stacked, fit_sweep
from regulab.sweep.hparams import searchable
from regulab.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
LOADER_SEED = 3


@functools.cache
def _digits():
    x, y = digits()
    return x.unsqueeze(1), y


def _images(n, dtype=torch.float32):
    x, y = _digits()
    return x[:n].to(dtype), y[:n]


def _seeded(factory, seed=0):
    torch.manual_seed(seed)
    return factory()


def _configs(hparams: dict) -> list[dict]:
    """The K configurations of hparams (name -> K values), one dict per copy."""
    k = len(next(iter(hparams.values())))
    return [{name: values[i] for name, values in hparams.items()} for i in range(k)]


def _reference(model, x, y, s: Settings, config: dict, batch_size=16):
    """One sequential `fit` of a copy of model with the scalars of s replaced by config."""
    m = copy.deepcopy(model)
    o, pen, t = s.optim, s.penalty, s.train
    lr = config.get("lr", o.lr)
    wd = config.get("weight_decay", o.weight_decay)
    l2, l1 = config.get("l2", pen.l2), config.get("l1", pen.l1)
    bound, bn_s = config.get("max_norm", pen.max_norm), config.get("bn_sparsity", s.slim.sparsity)
    groups = param_groups(m, wd, no_decay=tuple(o.no_decay))
    if o.name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=o.momentum, nesterov=o.nesterov)
    else:
        cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=lr, betas=tuple(o.betas))
    weights = [p for g in groups if g["penalize"] for p in g["params"]]
    l1_grad = l1 if pen.l1_mode == "subgradient" else 0.0
    terms = [{"params": weights, "l2": l2, "l1": l1_grad}]
    scales = [mod.weight for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    after = []
    if bn_s and s.slim.sparsity_mode == "subgradient":
        terms.append({"params": scales, "l2": 0.0, "l1": bn_s})
    elif bn_s:
        after.append(lambda: prox_l1_(scales, opt.param_groups[0]["lr"] * bn_s))
    if l1 and pen.l1_mode == "proximal":
        after.append(lambda: prox_l1_(weights, opt.param_groups[0]["lr"] * l1))
    if bound:
        dim = None if pen.max_norm_dim == -1 else pen.max_norm_dim
        after.append(lambda: max_norm_(weights, bound, dim))
    history = fit(
        m, opt, TensorLoader(x, y, batch_size=batch_size, seed=LOADER_SEED), epochs=t.epochs,
        loss=t.loss, penalty=Penalty(terms), after_step=after, schedule=s.schedule,
        clip_grad_norm=t.clip_grad_norm or None, seed=t.seed, eval_train=0,
    )  # fmt: skip
    assert history.status == "completed"
    return m


def _assert_same(ref: nn.Module, got: nn.Module, atol: float):
    a, b = ref.state_dict(), got.state_dict()
    b = {name: t for name, t in b.items() if not name.endswith(".p")}  # the stacked rates
    assert list(a) == list(b)
    for name, p in a.items():
        torch.testing.assert_close(b[name], p, rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def _compare(build, hparams, x, y, s, *, rates=(), ref_build=None):
    """fit_stacked on build(...)'s model, each copy against its sequential fit (of the model
    ref_build builds, default build); rates: the names build takes as keyword arguments
    (dropout, drop_path). Returns the Stacked."""
    first = {name: hparams[name][0] for name in rates}
    model = _seeded(lambda: build(**first))
    loader = TensorLoader(x, y, batch_size=16, seed=LOADER_SEED)
    stacked = fit_stacked(model, hparams, loader, s)
    assert stacked.diverged_epoch.tolist() == [0] * stacked.k
    for k, config in enumerate(_configs(hparams)):
        ref_model = _seeded(lambda c=config: (ref_build or build)(**{n: c[n] for n in rates}))
        ref = _reference(ref_model, x, y, s, config)
        _assert_same(ref, stacked.model(k), TOL[x.dtype])
    spread = max((p[-1] - p[0]).abs().max().item() for p in stacked.params.values())
    assert spread > 1e-3  # the values mattered
    return stacked


MLP_CASES = {  # [optim], the searched values
    "sgd-nesterov": (
        {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"weight_decay": [0.0, 1e-2, 0.1, 3e-2], "dropout": [0.1, 0.5, 0.3, 0.2],
         "lr": [0.05, 0.02, 0.1, 0.2]},
    ),
    "adam": (
        {"name": "adam", "lr": 0.01},
        {"l2": [0.0, 0.1, 1e-2, 0.3], "dropout": [0.4, 0.1, 0.2, 0.3],
         "lr": [0.01, 3e-3, 0.02, 1e-3], "weight_decay": [1e-3, 0.0, 1e-2, 0.1]},
    ),
    "adamw": (
        {"name": "adamw", "lr": 0.01, "betas": [0.8, 0.99]},
        {"weight_decay": [0.0, 0.1, 3.0], "lr": [0.01, 0.03, 3e-3], "l1": [0.0, 1e-3, 1e-2]},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MLP_CASES))
def test_mlp_with_three_or_four_hyperparameters_equals_fit_per_copy(case):
    optim, hparams = MLP_CASES[case]
    x, y = _images(96)
    s = Settings(
        optim=schema.Optim(**optim), train=schema.Train(epochs=3, clip_grad_norm=0.5, seed=7),
        schedule=inverse_sqrt(0.5),
    )  # fmt: skip
    build = functools.partial(models.mlp, [64, 32, 16, 10])
    rates = ("dropout",) if "dropout" in hparams else ()
    if not rates:
        build = functools.partial(build, dropout=0.2)  # fixed dropout, the same for every copy
    _compare(build, hparams, x, y, s, rates=rates)


@pytest.mark.parametrize("mode", ["subgradient", "proximal"])
def test_vgg_bn_l1_max_norm_bn_sparsity_and_lr_equal_fit_per_copy(mode):
    x, y = _images(48)
    hparams = {
        "l1": [0.0, 1e-3, 1e-2],
        "max_norm": [0.0, 0.5, 0.3],  # 0: no constraint, as the recipe's
        "bn_sparsity": [1e-2, 0.0, 0.1],
        "lr": [0.05, 0.1, 0.02],
    }
    s = Settings(
        optim=schema.Optim(lr=0.05, momentum=0.9),
        penalty=schema.Penalty(l1_mode=mode, max_norm_dim=0),
        slim=schema.Slim(sparsity_mode=mode),
        train=schema.Train(epochs=2, seed=2),
    )
    build = functools.partial(models.vgg_bn, [4, "M", 8, "M"], dropout=0.2)
    stacked = _compare(build, hparams, x, y, s)
    w = stacked.params["features.4.weight"].detach()  # (K, out, in, kh, kw)
    norms = w.flatten(2).norm(dim=2)
    assert norms[2].max() <= 0.3 * (1 + 1e-6) and norms[0].max() > 0.5  # copy 0: no cap
    bn = stacked.model(0).features[1]
    assert bn.num_batches_tracked.item() == 2 * 3  # the running statistics trained


def test_resnet_drop_path_with_bn_sparsity_and_weight_decay_equals_fit_per_copy():
    x, y = _images(32)
    hparams = {
        "drop_path": [0.2, 0.5, 0.3],  # resnet_bn's largest rate: block l of L drops p * l / L
        "bn_sparsity": [0.0, 1e-2, 0.1],
        "weight_decay": [0.1, 0.0, 1e-2],
    }
    s = Settings(optim=schema.Optim(lr=0.05, momentum=0.9), train=schema.Train(epochs=2, seed=5))
    build = functools.partial(models.resnet_bn, widths=(4, 8), blocks=(1, 1))
    stacked = _compare(build, hparams, x, y, s, rates=("drop_path",))
    second = stacked.model(1).stage2[0].drop_path  # block 2 of 2: the largest rate
    first = stacked.model(1).stage1[0].drop_path
    assert (float(first.p), float(second.p)) == pytest.approx((0.25, 0.5))


def test_float64_four_hyperparameters_equal_fit_to_1e_10():
    x, y = _images(64, torch.float64)
    hparams = {
        "weight_decay": [0.0, 1e-2, 0.1],
        "l1": [1e-2, 0.0, 1e-3],
        "dropout": [0.2, 0.5, 0.1],
        "lr": [0.1, 0.05, 0.2],
    }
    s = Settings(
        optim=schema.Optim(lr=0.1, momentum=0.5), penalty=schema.Penalty(l1_mode="proximal"),
        train=schema.Train(epochs=2, seed=1),
    )  # fmt: skip

    def build(dropout):
        return models.mlp([64, 16, 10], dropout=dropout).double()

    _compare(build, hparams, x, y, s, rates=("dropout",))


def test_fit_sweep_is_fit_stacked_with_one_name_and_takes_the_new_names():
    x, y = _images(48)
    model = _seeded(lambda: models.mlp([64, 16, 10], dropout=0.3))
    s = Settings(optim=schema.Optim(lr=0.1), train=schema.Train(epochs=2, seed=3))
    loader = TensorLoader(x, y, batch_size=16, seed=LOADER_SEED)
    one = fit_sweep(model, "lr", [0.05, 0.2], loader, s)
    many = fit_stacked(model, {"lr": torch.tensor([0.05, 0.2])}, loader, s)
    for name, p in one.params.items():
        assert torch.equal(p, many.params[name]), name
    ref = _reference(model, x, y, s, {"lr": 0.2})
    _assert_same(ref, one.model(1), TOL[torch.float32])


def test_a_model_of_your_own_with_torch_dropout_layers():
    class Net(nn.Module):
        def __init__(self, dropout=0.5, layer=nn.Dropout):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), layer(dropout))
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            return self.head(self.body(x))

    x, y = _images(48)
    hparams = {"dropout": [0.1, 0.4], "l2": [0.0, 0.1], "lr": [0.1, 0.05]}
    s = Settings(optim=schema.Optim(lr=0.1, momentum=0.5), train=schema.Train(epochs=2, seed=4))
    # the copies' nn.Dropout became regulab's Dropout: the same law, its own draws
    ref_build = functools.partial(Net, layer=Dropout)
    _compare(Net, hparams, x, y, s, rates=("dropout",), ref_build=ref_build)


# --- what each model takes; bad input ---------------------------------------------------------

OPTIMIZER_LEVEL = ["lr", "weight_decay", "l2", "l1", "max_norm"]
BATCH_LEVEL = ["label_smoothing", "mixup", "cutmix", "crop", "cutout", "noise"]  # any model


def test_searchable_names_what_each_model_takes():
    assert searchable(models.mlp([64, 8, 10])) == [*OPTIMIZER_LEVEL, *BATCH_LEVEL]
    with_dropout = [*OPTIMIZER_LEVEL, "dropout", *BATCH_LEVEL]
    assert searchable(models.mlp([64, 8, 10], dropout=0.1)) == with_dropout
    vgg = models.vgg_bn([4, "M"], dropout=0.1)
    assert searchable(vgg) == [*OPTIMIZER_LEVEL, "bn_sparsity", "dropout", *BATCH_LEVEL]
    res = models.resnet_bn(widths=(4,), blocks=(1,), drop_path=0.1)
    assert searchable(res) == [*OPTIMIZER_LEVEL, "bn_sparsity", "drop_path", *BATCH_LEVEL]
    assert "dropout" in searchable(nn.Sequential(nn.Linear(2, 2), nn.Dropout2d(0.1)))
    assert "drop_path" not in searchable(models.resnet_bn(widths=(4,), blocks=(1,)))
    blocks = models.vgg_bn([4, "M", 8, "M"], drop_block=0.1)
    assert searchable(blocks) == [*OPTIMIZER_LEVEL, "bn_sparsity", "drop_block", *BATCH_LEVEL]


def test_vgg_bn_drop_block_with_weight_decay_and_lr_equals_fit_per_copy():
    """DropBlock (arXiv:1810.12890) per copy: each copy against a fit of a VGG-BN whose
    DropBlock2d layers have its p (a float), from the same draws."""
    x, y = _images(48)
    hparams = {
        "drop_block": [0.1, 0.4, 0.25],
        "weight_decay": [1e-2, 0.0, 1e-3],
        "lr": [0.05, 0.1, 0.02],
    }
    s = Settings(optim=schema.Optim(lr=0.05, momentum=0.9), train=schema.Train(epochs=2, seed=3))
    build = functools.partial(models.vgg_bn, [4, 8, "M", 8, "M"], drop_block_size=2)
    stacked = _compare(build, hparams, x, y, s, rates=("drop_block",))
    layers = [m for m in stacked.model(1).modules() if type(m).__name__ == "DropBlock2d"]
    assert layers and all(float(m.p) == pytest.approx(0.4) for m in layers)


@pytest.mark.parametrize(
    "model, hparams, error, match",
    [
        ("mlp", {}, ValueError, r"hparams must be a non-empty dict name -> values; got \{\}"),
        ("mlp", {"l3": [0.1]}, ValueError, r"hparams name must be one of 'lr', .*; got 'l3'"),
        ("mlp", {"drop_block": [0.1]}, ValueError,
         r"hparams 'drop_block' needs a model with DropBlock layers \(regulab.DropBlock2d\); "
         r"it has none"),
        ("mlp", {"dropout": [0.1]}, ValueError,
         r"hparams 'dropout' needs a model with Dropout layers \(.*\); it has none \(this "
         r"model takes: lr, weight_decay, l2, l1, max_norm, label_smoothing, mixup, cutmix, "
         r"crop, cutout, noise\)"),
        ("mlp", {"bn_sparsity": [0.1]}, ValueError,
         r"hparams 'bn_sparsity' needs a model with BatchNorm layers; it has none"),
        ("vgg", {"drop_path": [0.1]}, ValueError,
         r"hparams 'drop_path' needs a model with DropPath layers \(regulab.DropPath\); it has "
         r"none \(this model takes: lr, weight_decay, l2, l1, max_norm, bn_sparsity, "
         r"label_smoothing, .*\)"),
        ("mlp", {"l2": [0.1, 0.2], "lr": [0.1]}, ValueError,
         r"every hyperparameter needs one value per copy; got \{'l2': 2, 'lr': 1\}"),
        ("mlp", {"lr": [0.1, 0.0]}, ValueError, r"lr must be a finite number > 0; got 0.0"),
        ("mlp", {"l1": [float("nan")]}, ValueError, r"l1 must be a finite number >= 0; got nan"),
        ("drop", {"dropout": [0.2, 1.0]}, ValueError, r"dropout p must be in \[0, 1\); got 1.0"),
        ("mlp", {"l2": []}, ValueError, r"hparams\['l2'\] must hold one value per copy; got none"),
        ("mlp", {"l2": "abc"}, TypeError, r"hparams\['l2'\] must be a sequence of numbers"),
        ("list", {"l2": [0.1, 0.2, 0.3]}, ValueError, r"model: got 2 models for 3 values"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_in_one_line_naming_it(model, hparams, error, match):
    x, y = _images(16)
    mlp = models.mlp([64, 8, 10], dropout=0.5 if model == "drop" else 0.0)
    given = {"list": [mlp, mlp], "vgg": models.vgg_bn([4, "M"])}.get(model, mlp)
    with pytest.raises(error, match=match):
        fit_stacked(given, hparams, TensorLoader(x, y, batch_size=8),
                    Settings(train=schema.Train(epochs=1)))  # fmt: skip


def test_the_callers_model_and_random_state_are_left_alone():
    x, y = _images(32)
    model = _seeded(lambda: models.resnet_bn(widths=(4,), blocks=(2,), drop_path=0.4))
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(11)
    state = torch.get_rng_state()
    loader, s = TensorLoader(x, y, batch_size=16), Settings(train=schema.Train(epochs=1))
    fit_stacked(model, {"drop_path": [0.1, 0.3], "lr": [0.1, 0.2]}, loader, s)
    assert torch.equal(torch.get_rng_state(), state)
    paths = [m for m in model.modules() if isinstance(m, DropPath)]
    assert [m.p for m in paths] == pytest.approx([0.2, 0.4])  # floats, as built
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name

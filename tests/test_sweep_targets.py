"""Label smoothing, mixup/CutMix and augmentation strengths as per-copy hyperparameters.

Reference: for each copy, one sequential `regulab.fit` with its values: loss
`LabelSmoothingCrossEntropy(s)`, batch_fn `Mixup(alpha, cutmix_alpha)`, augment the fixed
augmentation then random_crop / cutout / gaussian_noise with its strengths (a strength of 0
still draws: the call is made and its result dropped). Every parameter and buffer must agree
to 1e-5 in float32, 1e-10 in float64; a survivor of keep to 1e-6 with the uninterrupted run.
"""

import copy
import functools

import pytest
import torch
from torch.nn import functional as F

from regulab import LabelSmoothingCrossEntropy, Mixup, augment, digits, models, param_groups
from regulab.data.loader import TensorLoader
from regulab.recipe import schema
from regulab.sweep.engine import Settings, fit_stacked
from regulab.sweep.state import StackedRun
from regulab.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
LOADER_SEED = 3
CLASSES = 10
STEPS = {  # searched augmentation: (function, a strength that draws), in the recipe's order
    "crop": (augment.random_crop, 1),
    "cutout": (augment.cutout, 1),
    "noise": (augment.gaussian_noise, 1.0),
}


@functools.cache
def _digits():
    x, y = digits()
    return x.unsqueeze(1), y  # (N, 1, 8, 8): images for CutMix and the augmentations


def _data(n, dtype=torch.float32):
    x, y = _digits()
    return x[:n].to(dtype), y[:n]


def _loader(x, y):
    return TensorLoader(x, y, batch_size=16, seed=LOADER_SEED)


def _seeded(factory, seed=0):
    torch.manual_seed(seed)
    return factory()


def _configs(hparams: dict) -> list[dict]:
    k = len(next(iter(hparams.values())))
    return [{name: values[i] for name, values in hparams.items()} for i in range(k)]


def _augment(config: dict, fixed=None):
    """fit's augment for one copy: fixed, then its searched steps; 0 draws and keeps x."""

    def apply(x):
        x = fixed(x) if fixed is not None else x
        for name, (fn, draws) in STEPS.items():
            if name in config:
                v = config[name]
                if v > 0:
                    x = fn(x, int(v) if name != "noise" else v)
                else:
                    fn(x, draws)  # the stacked copy's stream advances as the others'
        return x

    return apply if fixed is not None or any(n in config for n in STEPS) else None


def _reference(model, x, y, s: Settings, config: dict):
    """One sequential fit of a copy of model with the values of config."""
    m = copy.deepcopy(model)
    o = s.optim
    groups = param_groups(m, config.get("weight_decay", o.weight_decay))
    opt = torch.optim.SGD(groups, lr=config.get("lr", o.lr), momentum=o.momentum)
    mixes = "mixup" in config or "cutmix" in config
    history = fit(
        m, opt, _loader(x, y), epochs=s.train.epochs, seed=s.train.seed, eval_train=0,
        loss=LabelSmoothingCrossEntropy(config["label_smoothing"])
        if "label_smoothing" in config else "cross_entropy",
        batch_fn=Mixup(config.get("mixup", 0.0), config.get("cutmix", 0.0), num_classes=CLASSES)
        if mixes else None,
        augment=_augment(config, s.augment),
    )  # fmt: skip
    assert history.status == "completed"
    return m


def _assert_same(ref, got, atol):
    a = ref.state_dict()
    b = {n: t for n, t in got.state_dict().items() if not n.endswith(".p")}  # stacked rates
    assert list(a) == list(b)
    for name, t in a.items():
        torch.testing.assert_close(b[name], t, rtol=0, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def _compare(build, hparams, s, n=48, dtype=torch.float32):
    x, y = _data(n, dtype)
    model = _seeded(build)
    stacked = fit_stacked(model, hparams, _loader(x, y), s)
    assert stacked.diverged_epoch.tolist() == [0] * stacked.k
    for k, config in enumerate(_configs(hparams)):
        _assert_same(_reference(model, x, y, s, config), stacked.model(k), TOL[dtype])
    return stacked


def _settings(epochs=2, seed=7, **kwargs):
    optim = schema.Optim(lr=0.05, momentum=0.9)
    return Settings(optim=optim, train=schema.Train(epochs=epochs, seed=seed), **kwargs)


MLP = functools.partial(models.mlp, [64, 32, 10], dropout=0.3)  # dropout draws after mixing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_label_smoothing_mixup_and_weight_decay_at_once_equal_fit_per_copy(dtype):
    hparams = {
        "label_smoothing": [0.0, 0.1, 0.3, 0.05],
        "mixup": [0.4, 0.0, 1.0, 0.2],  # 0: no mixing, one-hot targets (Mixup(0))
        "weight_decay": [1e-2, 0.1, 0.0, 3e-2],
        "lr": [0.05, 0.02, 0.1, 0.05],
    }

    def build():
        return MLP().to(dtype)

    stacked = _compare(build, hparams, _settings(epochs=3), dtype=dtype)
    spread = max((p[-1] - p[0]).abs().max().item() for p in stacked.params.values())
    assert spread > 1e-3  # the values mattered


def test_mixup_and_cutmix_chosen_per_copy_as_mixup_chooses():
    # both alphas > 0: Mixup's switch draw picks one per batch; one of them 0: the other always
    hparams = {
        "mixup": [0.5, 0.0, 1.0, 0.0],
        "cutmix": [1.0, 0.7, 0.0, 0.0],
        "label_smoothing": [0.1, 0.0, 0.2, 0.1],
    }
    _compare(MLP, hparams, _settings(epochs=2, seed=11), n=64)


def test_crop_cutout_and_noise_after_the_fixed_augmentation_equal_fit_per_copy():
    hparams = {
        "crop": [0, 1, 2, 1],  # 0: the copy's batch is not cropped; the stream moves on
        "cutout": [3, 0, 2, 3],  # copies of one value are cropped (cut out) in one call
        "noise": [0.1, 0.3, 0.0, 0.2],
        "mixup": [0.3, 1.0, 0.0, 0.5],
    }
    s = _settings(augment=functools.partial(augment.hflip, p=0.5))
    _compare(MLP, hparams, s)


def test_a_strength_no_copy_uses_still_draws_as_one_that_does():
    hparams = {"crop": [0, 0], "noise": [0.0, 0.2], "weight_decay": [0.0, 0.1]}
    _compare(MLP, hparams, _settings())


def test_a_survivors_later_epochs_equal_the_uninterrupted_copys():
    hparams = {
        "label_smoothing": [0.1, 0.0, 0.2, 0.05, 0.3],
        "mixup": [0.5, 1.0, 0.0, 0.2, 0.4],
        "cutmix": [0.0, 1.0, 0.5, 0.0, 0.3],
        "crop": [1, 0, 2, 0, 1],  # the survivors have no crop: the stream still advances
        "noise": [0.1, 0.0, 0.2, 0.05, 0.0],
    }
    x, y = _data(48)
    s = _settings(epochs=4)
    whole = StackedRun(_seeded(MLP), hparams, _loader(x, y), s).train_epochs(4)
    cut = StackedRun(_seeded(MLP), hparams, _loader(x, y), s).train_epochs(2)
    cut.keep([3, 1]).train_epochs(2)
    for new, old in ((0, 3), (1, 1)):
        for name, t in {**whole.stacked.params, **whole.stacked.buffers}.items():
            got = {**cut.stacked.params, **cut.stacked.buffers}[name][new]
            torch.testing.assert_close(got, t[old], rtol=0, atol=1e-6)
    assert cut.hparams["crop"].tolist() == [0, 0]


def test_evaluation_never_mixes_and_uses_hard_labels():
    x, y = _data(48)
    hparams = {"label_smoothing": [0.0, 0.3], "mixup": [1.0, 0.5], "cutmix": [0.5, 1.0]}
    run = StackedRun(_seeded(MLP), hparams, _loader(x, y), _settings()).train_epochs(1)
    xv, yv = _data(96)
    xv, yv = xv[48:], yv[48:]
    state = torch.get_rng_state()
    got = run.evaluate((xv, yv))
    assert torch.equal(torch.get_rng_state(), state)
    for k in range(2):
        with torch.no_grad():
            out = run.model(k)(xv)
        want = F.cross_entropy(out, yv).item()  # unsmoothed, unmixed
        assert got["loss"][k].item() == pytest.approx(want, rel=1e-6)
        acc = (out.argmax(1) == yv).double().mean().item()
        assert got["accuracy"][k].item() == pytest.approx(acc, abs=1e-12)


def test_vary_label_smoothing_equals_fit_with_each_copys_own_order():
    x, y = _data(48)
    s = _settings(vary=True)
    hparams = {"label_smoothing": [0.0, 0.2, 0.1], "weight_decay": [0.1, 0.0, 1e-2]}
    build = functools.partial(models.mlp, [64, 32, 10])  # no random layer: vary is exact
    model = _seeded(build)
    stacked = fit_stacked(model, hparams, _loader(x, y), s)
    for k, config in enumerate(_configs(hparams)):
        m, o = copy.deepcopy(model), s.optim
        opt = torch.optim.SGD(param_groups(m, config["weight_decay"]), lr=o.lr, momentum=0.9)
        own = TensorLoader(x, y, batch_size=16, seed=LOADER_SEED + k)
        loss = LabelSmoothingCrossEntropy(config["label_smoothing"])
        fit(m, opt, own, epochs=2, seed=s.train.seed, eval_train=0, loss=loss)
        _assert_same(m, stacked.model(k), TOL[torch.float32])


def test_vary_mixes_and_augments_each_copys_own_batch():
    x, y = _data(48)
    hparams = {"mixup": [1.0, 1.0], "cutmix": [0.0, 0.5], "noise": [0.1, 0.1]}
    stacked = fit_stacked(_seeded(MLP), hparams, _loader(x, y), _settings(vary=True))
    assert stacked.diverged_epoch.tolist() == [0, 0]
    assert not torch.equal(stacked.params["1.weight"][0], stacked.params["1.weight"][1])


def test_set_hparams_changes_smoothing_and_alpha_between_epochs():
    x, y = _data(48)
    s = _settings(epochs=2)
    hparams = {"label_smoothing": [0.1, 0.2], "mixup": [0.5, 0.0]}
    run = StackedRun(_seeded(MLP), hparams, _loader(x, y), s).train_epochs(2)
    again = StackedRun(_seeded(MLP), hparams, _loader(x, y), s).train_epochs(1)
    again.set_hparams({"label_smoothing": [0.1, 0.2], "mixup": [0.5, 0.0]}).train_epochs(1)
    for name, t in run.stacked.params.items():
        assert torch.equal(t, again.stacked.params[name]), name


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hparams, settings, flat, error, match",
    [
        ({"label_smoothing": [0.1]}, {"loss": torch.nn.CrossEntropyLoss()}, False, ValueError,
         r"hparams 'label_smoothing' need the loss 'cross_entropy' \(settings.train.loss, "
         r"settings.loss None\); got CrossEntropyLoss"),
        ({"mixup": [0.1], "cutmix": [0.2]}, {"train": schema.Train(loss="mse")}, False,
         ValueError, r"hparams 'mixup', 'cutmix' need the loss 'cross_entropy' .*; got 'mse'"),
        ({"cutmix": [0.5]}, {}, True, ValueError,
         r"hparams 'cutmix' needs images \(N, \.\.\., H, W\); the training inputs have shape "
         r"\(16, 64\)"),
        ({"crop": [1]}, {}, True, ValueError, r"hparams 'crop' needs images \(N, C, H, W\)"),
        ({"crop": [1.5]}, {}, False, ValueError,
         r"crop must hold whole pixels \(integers >= 0\); got 1.5"),
        ({"cutout": [-1]}, {}, False, ValueError, r"cutout must be a finite number >= 0; got -1"),
        ({"label_smoothing": [0.1, 1.5]}, {}, False, ValueError,
         r"label_smoothing must be in \[0, 1\]; got 1.5"),
        ({"mixup": [float("nan")]}, {}, False, ValueError, r"mixup must be a finite number"),
        ({"noise": [0.1]}, {}, "int", ValueError,
         r"hparams 'noise' needs floating-point inputs; the training inputs are torch.int64"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_in_one_line_naming_it(hparams, settings, flat, error, match):
    x, y = _data(16)
    x = x.long() if flat == "int" else x.flatten(1) if flat else x
    s = Settings(**{"train": schema.Train(epochs=1), **settings})
    with pytest.raises(error, match=match):
        fit_stacked(models.mlp([64, 8, 10]), hparams, TensorLoader(x, y, batch_size=8), s)

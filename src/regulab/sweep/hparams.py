"""The hyperparameters a stacked run takes per copy, their checks, and the model parts they need.

Each searched hyperparameter is a (K,) tensor, copy k's value at index k, replacing
for that copy the field of `engine.Settings` (or the model's layers) that HPARAMS
names. The optimizer-level ones act on any model; dropout needs dropout layers
(`native.swap_dropout` turns torch's into regulab's tensor-p layers) and sets them all
to its value; drop_path needs regulab's `DropPath` (stochastic depth, arXiv:1603.09382)
and is the largest rate, each layer keeping its ratio to the model's largest (the
linear rule of `models.resnet_bn`); bn_sparsity needs BatchNorm layers (Network
Slimming, arXiv:1708.06519); drop_block needs regulab's `DropBlock2d` (Ghiasi et al.,
arXiv:1810.12890) and sets them all to its value. The names of `batch.BATCH` (label_smoothing,
mixup, cutmix, crop, cutout, noise) act on the batch and the loss, not the model:
`batch.check` refuses them for a loss other than cross-entropy or for inputs that are not
images.
"""

import torch
from torch import nn

from regulab import _checks
from regulab.metrics import LOSSES
from regulab.recipe.schema import L1_MODES, OPTIMIZERS
from regulab.sweep.batch import BATCH, INTEGER
from regulab.sweep.native import DROP_BLOCK, DROP_PATH, SWEPT, set_dropout, swap_dropout
from regulab.sweep.update import FIELDS, bn_scale_names

LAYERS = {  # the hyperparameters set on the model's layers: the layer types that take them
    "dropout": "Dropout layers (regulab.Dropout, nn.Dropout, nn.Dropout1d/2d/3d)",
    "drop_path": "DropPath layers (regulab.DropPath)",
    "drop_block": "DropBlock layers (regulab.DropBlock2d)",
}
# lr, weight_decay, l2, l1, max_norm, bn_sparsity, dropout, drop_path, drop_block, then the
# batch's and loss's own (`batch.BATCH`): label_smoothing, mixup, cutmix, crop, cutout, noise
HPARAMS = (*FIELDS, *LAYERS, *BATCH)
PRECISION = "fp32"  # the one train.precision the stacked step runs (no autocast, no scaler)


def searchable(model: nn.Module) -> list[str]:
    """The names of HPARAMS that model can take (dropout, drop_path, bn_sparsity need layers)."""
    kinds = {type(m) for m in model.modules()}
    torch_dropout = any(isinstance(m, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d)
                        for m in model.modules())  # fmt: skip
    has = {
        "dropout": torch_dropout or bool(kinds & set(SWEPT)),
        "drop_path": bool(kinds & set(DROP_PATH)),
        "drop_block": bool(kinds & set(DROP_BLOCK)),
        "bn_sparsity": bool(bn_scale_names(model)),
    }
    return [name for name in HPARAMS if has.get(name, True)]


def check_hparams(hparams, what: str = "hparams") -> dict[str, torch.Tensor]:
    """name -> (K,) float64 CPU tensor for each entry of hparams (a dict of sequences or
    tensors, K the same for all); refuse unknown names and out-of-range values."""
    if not isinstance(hparams, dict) or not hparams:
        raise ValueError(f"{what} must be a non-empty dict name -> values; got {hparams!r}")
    out = {}
    for name, values in hparams.items():
        _checks.one_of(f"{what} name", name, HPARAMS)
        out[name] = check_values(name, values, what)
    sizes = {name: len(v) for name, v in out.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{what}: every hyperparameter needs one value per copy; got {sizes}")
    return out


def check_values(name: str, values, what: str = "hparams") -> torch.Tensor:
    """values of hyperparameter name as a (K,) float64 CPU tensor, each checked."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().reshape(-1).tolist()
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise TypeError(f"{what}[{name!r}] must be a sequence of numbers; got {values!r}") from None
    if not values:
        raise ValueError(f"{what}[{name!r}] must hold one value per copy; got none")
    for v in values:
        if name == "lr":
            _checks.positive(name, v)
        else:
            _checks.non_negative(name, v)
    if name in LAYERS and max(values) >= 1:
        raise ValueError(f"{name} p must be in [0, 1); got {max(values)}")
    if name == "label_smoothing" and max(values) > 1:
        raise ValueError(f"label_smoothing must be in [0, 1]; got {max(values)}")
    if name in INTEGER and any(v != int(v) for v in values):
        bad = next(v for v in values if v != int(v))
        raise ValueError(f"{name} must hold whole pixels (integers >= 0); got {bad}")
    return torch.tensor(values, dtype=torch.float64)


def prepare(models: list[nn.Module], names, what: str = "hparams") -> None:
    """Ready the copies (in place) for the searched names: torch's dropout layers swapped
    and given tensor p (dropout), DropPath given tensor p; refuse what the model cannot take."""
    if "dropout" in names:
        for m in models:
            swap_dropout(m)  # refuses AlphaDropout by name
    can = searchable(models[0])
    for name in names:
        if name not in can:
            needs = LAYERS.get(name, "BatchNorm layers")
            raise ValueError(
                f"{what} {name!r} needs a model with {needs}; it has none "
                f"(this model takes: {', '.join(can)})"
            )
    for m in models:
        if "dropout" in names:
            set_dropout(m, 0.5)
        if "drop_path" in names:
            set_dropout(m, 0.5, DROP_PATH)
        if "drop_block" in names:
            set_dropout(m, 0.5, DROP_BLOCK)


def rate_ratios(model: nn.Module, name: str) -> dict[str, float]:
    """The p buffers that hyperparameter name sets, each with the factor its value takes:
    dropout (drop_block) sets every Dropout (DropBlock2d) layer to the value; drop_path sets
    each DropPath layer to
    the value times its rate over the model's largest (resnet_bn's linear rule; all 1
    when the model's rates are 0)."""
    layers = {"dropout": SWEPT, "drop_path": DROP_PATH, "drop_block": DROP_BLOCK}[name]
    named = [(f"{n}.p" if n else "p", m) for n, m in model.named_modules() if type(m) in layers]
    if name != "drop_path":
        return {buffer: 1.0 for buffer, _ in named}
    rates = {buffer: float(m.p) for buffer, m in named}
    top = max(rates.values(), default=0.0)
    return {buffer: rate / top if top > 0 else 1.0 for buffer, rate in rates.items()}


def check_settings(s) -> None:
    """Refuse settings (`engine.Settings`) the stacked step cannot honour, naming the field."""
    _checks.one_of("settings.optim.name", s.optim.name, OPTIMIZERS)
    _checks.one_of("settings.penalty.l1_mode", s.penalty.l1_mode, L1_MODES)
    _checks.one_of("settings.slim.sparsity_mode", s.slim.sparsity_mode, L1_MODES)
    if s.loss is None and s.train.loss not in LOSSES:
        raise ValueError(
            f"settings.train.loss must be one of {', '.join(map(repr, LOSSES))}; got "
            f"{s.train.loss!r} (a loss of your own: Settings(loss=callable))"
        )
    if s.batch_fn is None and getattr(s.train, "batch_fn", ""):
        raise ValueError(
            f"settings.train.batch_fn {s.train.batch_fn!r} names code; fit_sweep takes the "
            "callable itself: Settings(batch_fn=callable)"
        )
    for name in ("loss", "batch_fn"):
        if getattr(s, name) is not None and not callable(getattr(s, name)):
            raise TypeError(
                f"settings.{name} must be a callable or None; got {type(getattr(s, name)).__name__}"
            )
    precision = getattr(s.train, "precision", PRECISION)
    if precision != PRECISION:
        raise ValueError(
            f"settings.train.precision must be {PRECISION!r} (the stacked copies train without "
            f"autocast); got {precision!r}"
        )
    _checks.positive_int("settings.train.accumulate", getattr(s.train, "accumulate", 1))

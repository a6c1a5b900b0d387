"""Each copy's batch and loss: mixup/CutMix, augmentation strengths and label smoothing per copy.

The names of BATCH act on the data a step trains on, each with the operation `fit` applies:
copy k of a stacked run equals `fit(loss=LabelSmoothingCrossEntropy(label_smoothing_k),
batch_fn=Mixup(mixup_k, cutmix_k, num_classes=C), augment=...)`, the augmentation being
`settings.augment`, then `random_crop(pad=crop_k)`, `cutout(size=cutout_k)` and
`gaussian_noise(std=noise_k)` (the recipe's order). Label smoothing (arXiv:1512.00567) is a
(K,) tensor in the loss under vmap; mixup (arXiv:1710.09412) and CutMix (arXiv:1905.04899)
mix one batch K ways with shared draws (`regulab.mixing`'s batched form), giving inputs
(K, N, ...) and soft targets (K, N, C), C the model's outputs.

Common random numbers: every copy sees the draws its own `fit` would see. Mixup's draws do
not depend on alpha; an augmentation runs copy by copy from the same generator state, so
every copy draws the same numbers, and the stream then continues as after one call. A
searched augmentation always draws: a copy at strength 0 keeps its batch, and the stream
advances as if it had drawn, as a dropout layer with p = 0 still draws; a copy at mixup
alpha 0 is Mixup(0): its batch unmixed, its targets one-hot. The draws do not depend on K,
so `StackedRun.keep` leaves the survivors' batches as they were. With vary=True each copy
mixes and augments its own batch in turn, from the stream as the previous copy left it.

Evaluation never mixes: `StackedRun.evaluate` uses the settings' loss on hard labels.
"""

import torch
from torch.func import functional_call, vmap

from regulab import augment, mixing
from regulab.data.loader import TensorLoader
from regulab.label_smoothing import label_smoothing_cross_entropy
from regulab.metrics import mean_loss, to_device, unpack
from regulab.train_step import rng_fork

BATCH = {  # name: what copy k's value is in the `fit` it equals
    "label_smoothing": "LabelSmoothingCrossEntropy(smoothing), in [0, 1]",
    "mixup": "Mixup(alpha), the Beta(alpha, alpha) of mixup",
    "cutmix": "Mixup(cutmix_alpha), the Beta(alpha, alpha) of CutMix",
    "crop": "random_crop(pad), pixels of zero padding",
    "cutout": "cutout(size), pixels of the zeroed square's side",
    "noise": "gaussian_noise(std), in input units",
}
TARGETS = ("label_smoothing", "mixup", "cutmix")  # need the cross-entropy loss
INTEGER = ("crop", "cutout")  # values are whole pixels
AUGMENTS = {  # in the recipe's order (`recipe.build.build_augment`); a strength that draws
    "crop": (augment.random_crop, 1),
    "cutout": (augment.cutout, 1),
    "noise": (augment.gaussian_noise, 1.0),
}
FLOATING = ("mixup", "cutmix", "noise")  # need floating-point inputs
IMAGES = {"crop": 4, "cutout": 4, "cutmix": 3}  # the least dimensions of a batch of inputs
MIXES = ("mixup", "cutmix")  # Mixup's alpha and cutmix_alpha
SWITCH_PROB = 0.5  # Mixup's: CutMix rather than mixup when both alphas are > 0


def check(names, s, train, what: str = "hparams") -> None:
    """Refuse searched names of BATCH that the settings' loss or the data cannot take."""
    targets = [n for n in names if n in TARGETS]
    if targets and (s.loss is not None or s.train.loss != "cross_entropy"):
        got = type(s.loss).__name__ if s.loss is not None else repr(s.train.loss)
        raise ValueError(
            f"{what} {', '.join(map(repr, targets))} need the loss 'cross_entropy' "
            f"(settings.train.loss, settings.loss None); got {got}"
        )
    if isinstance(train, TensorLoader) and s.batch_fn is None:
        x = train.tensors[0]
        for name in names:
            if name in FLOATING and not x.is_floating_point():
                raise ValueError(
                    f"{what} {name!r} needs floating-point inputs; the training inputs are "
                    f"{x.dtype}: pass x.float()"
                )
            if name in IMAGES and x.ndim < IMAGES[name]:
                shape = "(N, C, H, W)" if IMAGES[name] == 4 else "(N, ..., H, W)"
                raise ValueError(
                    f"{what} {name!r} needs images {shape}; the training inputs have shape "
                    f"{tuple(x.shape)}"
                )


def with_fixed(hparams: dict, s) -> dict:
    """hparams and, for each name of TARGETS not searched, the settings' own value
    (settings.train.label_smoothing, mixup, cutmix) as a constant column when > 0."""
    k = len(next(iter(hparams.values())))
    out = dict(hparams)
    for name in TARGETS:
        value = getattr(s.train, name, 0.0)
        if value and name not in out:
            out[name] = torch.full((k,), float(value), dtype=torch.float64)
    return out


def inputs(batches, s, hparams: dict, device, classes):
    """(x, y, x batched, y batched) of one step: batches (one shared batch, or one per copy
    with vary) mapped by s.batch_fn, moved to device, mixed and augmented per copy. hparams:
    name -> (K,); classes(x): the model's outputs per example (for one-hot targets)."""
    pairs = [to_device(unpack(b, s.batch_fn), device) for b in batches]
    mixes = any(n in hparams for n in MIXES)
    steps = [n for n in AUGMENTS if n in hparams]
    if (mixes or steps or len(pairs) > 1) and not all(torch.is_tensor(x) for x, _ in pairs):
        raise TypeError(
            "mixing, searched augmentations and vary=True need tensor inputs; got "
            f"{type(pairs[0][0]).__name__}: search other names, or return a tensor from batch_fn"
        )
    if len(pairs) > 1:
        return _each_in_turn(pairs, s, hparams, steps, classes)
    x, y = pairs[0]
    if not mixes and not steps:
        return (s.augment(x) if s.augment is not None else x), y, False, False
    k = len(next(iter(hparams.values())))
    if mixes:
        x, y = mix(x, y, hparams.get("mixup"), hparams.get("cutmix"), classes(x))
        if s.augment is not None:
            x = _same_draws(s.augment, x)
    else:
        x = s.augment(x) if s.augment is not None else x  # one batch: one call, as fit's
        x = x.expand(k, *x.shape)
    for name in steps:
        if name == "noise":
            x = _noise(x, hparams[name])
        else:
            x = _by_value(name, x, _values(name, hparams))
    return x, y, True, mixes


def mix(x, y, alpha, cutmix_alpha, num_classes: int):
    """Mixup(alpha_k, cutmix_alpha_k, num_classes) on one batch for every copy k, with the
    draws one Mixup call makes: x (K, N, ...), soft targets (K, N, C). alpha, cutmix_alpha:
    (K,) tensors, or None for 0 (not searched)."""
    k = len(alpha if alpha is not None else cutmix_alpha)
    alpha = torch.zeros(k, dtype=torch.float64) if alpha is None else alpha.double().cpu()
    _, switch = torch.rand(2, device="cpu").tolist()  # Mixup's (apply, switch); prob is 1
    start = torch.get_rng_state()
    mixed, target = mixing.mixup(x, y, alpha, num_classes)
    if cutmix_alpha is None:
        return mixed, target
    cut = cutmix_alpha.double().cpu()
    end = torch.get_rng_state()
    torch.set_rng_state(start)  # CutMix's draws are mixup's: u, then the partners
    cut_x, cut_target = mixing.cutmix(x, y, cut, num_classes)
    torch.set_rng_state(end)
    use = ((cut > 0) & ((alpha == 0) | (switch < SWITCH_PROB))).to(x.device)
    mixed = torch.where(use.view(k, *[1] * (mixed.ndim - 1)), cut_x, mixed)
    return mixed, torch.where(use.view(k, 1, 1), cut_target, target)


def losses(loss, out, y, y_batched: bool, smoothing) -> torch.Tensor:
    """(K,) mean losses of the copies' outputs out (K, N, C): the settings' loss, or with
    smoothing ((K,) tensor) label-smoothed cross-entropy, copy k with smoothing[k]."""
    dims = 0 if y_batched else None
    if smoothing is None:
        return vmap(lambda z, t: mean_loss(loss, z, t), in_dims=(0, dims))(out, y)
    smoothing = smoothing.to(out.device, out.dtype)
    each = vmap(label_smoothing_cross_entropy, in_dims=(0, dims, 0))
    return each(out, y, smoothing)


@torch.no_grad()
def output_width(stacked, x) -> int:
    """The outputs per example of copy 0 on x's first example (eval mode, random state kept)."""
    params = {n: p[0] for n, p in stacked.params.items()}
    buffers = {n: b[0] for n, b in stacked.buffers.items()}
    was = stacked.base.training
    stacked.base.eval()
    try:
        with rng_fork(x.device):
            out = functional_call(stacked.base, (params, buffers), (x[:1],))
    finally:
        stacked.base.train(was)
    return int(out.shape[-1])


def _values(name: str, hparams: dict) -> list:
    """Copy by copy, the argument the augmentation takes: ints for pixels, else floats."""
    values = hparams[name].tolist()
    return [int(v) for v in values] if name in INTEGER else values


def _same_draws(fn, x):
    """fn(x[k]) for every copy k from the same random state, which then continues as after
    one call (fn's draws must depend on the shape of x[k] only)."""
    states, outs = _state(x.device), []
    for xk in x:
        _set(states, x.device)
        outs.append(fn(xk))
    return torch.stack(outs)


def _noise(x, std):
    """gaussian_noise(x[k], std[k]) for every copy k from one draw of its noise (N, ...)."""
    noise = torch.randn(x.shape[1:], device=x.device, dtype=x.dtype)  # gaussian_noise's draw
    return x + std.to(x.device, x.dtype).view(-1, *[1] * (x.ndim - 1)) * noise


def _by_value(name: str, x, values: list):
    """crop or cutout of every copy k of images x (K, N, C, H, W) with values[k] pixels, all
    from the same random state: one call per distinct value, its copies stacked as channels
    (the offsets and squares are drawn per example, the same for every channel). A copy at 0
    keeps its images; the state then continues as after one call that draws."""
    if x.ndim != 5:
        raise ValueError(
            f"{name} needs images (N, C, H, W) per copy; got inputs of shape {tuple(x.shape[1:])}"
        )
    fn, draws = AUGMENTS[name]
    n, c = x.shape[1:3]
    start, out = _state(x.device), x.clone()
    for v in sorted(set(values) - {0}) or [None]:
        _set(start, x.device)
        if v is None:  # no copy crops: draw as one that does
            fn(x[0], draws)
            break
        idx = [i for i, u in enumerate(values) if u == v]
        folded = x[idx].transpose(0, 1).reshape(n, len(idx) * c, *x.shape[-2:])
        out[idx] = fn(folded, v).reshape(n, len(idx), c, *x.shape[-2:]).transpose(0, 1)
    return out


def _each_in_turn(pairs, s, hparams, steps, classes):
    """vary: copy k mixes and augments its own batch, the stream continuing from copy k - 1."""
    xs, ys = [], []
    mixes = any(n in hparams for n in MIXES)
    for k, (x, y) in enumerate(pairs):
        if mixes:
            alpha, cut = (float(hparams[n][k]) if n in hparams else 0.0 for n in MIXES)
            x, y = mixing.Mixup(alpha, cut, num_classes=classes(x))((x, y))
        x = s.augment(x) if s.augment is not None else x
        for name in steps:
            v = _values(name, hparams)[k]
            x = AUGMENTS[name][0](x, v) if v > 0 else x
        xs.append(x)
        ys.append(y)
    return torch.stack(xs), torch.stack(ys), True, True


def _state(device) -> list:
    """The CPU generator's state and, off the CPU, device's (what mixing and augment use)."""
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _set(states, device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda":
        torch.cuda.set_rng_state(states[1], device)

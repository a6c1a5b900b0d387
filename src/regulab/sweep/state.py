"""A stacked run as an explicit state: K copies trained epoch by epoch, shrunk and copied.

`StackedRun` holds what `fit` would hold for each of K copies (the stacked parameters
and buffers, the optimizer state, the step counter, the epoch), with a (K,) tensor per
searched hyperparameter. Successive halving and population-based training (Jaderberg
et al., arXiv:1711.09846) act on it as tensor operations: `keep(index)` drops copies
(parameters, buffers, optimizer state, hyperparameters, loader orders: every later epoch
costs K' copies), `copy_into(src, dst)` gives copies dst the weights and optimizer state
of copies src, and `set_hparams` changes values between epochs.

Random streams: torch is reseeded at every epoch from (settings.train.seed, epoch), as
`fit` does, inside a fork of the caller's state. With vary=False all copies share one
draw per random layer (`randomness="same"`), which depends on (seed, epoch) and not on
K: dropping copies leaves the survivors' noise and batch order exactly as they were.
With vary=True each copy has its own loader (seed + first + k), which `keep` carries
along, so a survivor's batch order is unchanged; its dropout noise is one (K, ...) draw
split over the copies, so after `keep` the survivors draw fresh noise of the same law,
not the numbers they would have drawn. `copy_into` moves weights, not streams: a slot
keeps its own loader. Mixup, CutMix and the searched augmentations draw what one `fit`
call draws, whatever K (`batch`), so `keep` leaves the survivors' batches as they were.
"""

import copy

import torch
from torch import nn

from regulab.data.loader import TensorLoader, epoch_seed
from regulab.data_checks import check_data
from regulab.sweep import batch, update
from regulab.sweep import hparams as hp
from regulab.sweep.native import check_train
from regulab.sweep.optimizer import StackedOptimizer
from regulab.sweep.stacked import Stacked
from regulab.train_step import mean_of_partial_group_, reseed, rng_fork, set_epoch, with_last


class StackedRun:
    """K copies of model training as one; hparams: name -> K values (`hparams.HPARAMS`).

    model: an nn.Module (copied K times: shared initial weights) or a list of K modules.
    train: a TensorLoader or any iterable of batches (a DataLoader; not with settings.vary).
    settings: `engine.Settings`; a searched name replaces its field for each copy.
    State: `stacked` (`Stacked`), `hparams` (name -> (K,) float64), `epoch`, `step`,
    `ids` (each copy's index in the first K: which configurations remain),
    `diverged_epoch` (K,): the first epoch whose loss or weights were not finite, else 0.
    """

    def __init__(self, model, hparams: dict, train, settings, *, what: str = "hparams"):
        hp.check_settings(settings)
        check_train(train, settings.vary)
        self.hparams = hp.check_hparams(hparams, what)
        batch.check(batch.with_fixed(self.hparams, settings), settings, train, what)
        k = len(next(iter(self.hparams.values())))
        shared = isinstance(model, nn.Module)
        given = [model] if shared else model
        if not isinstance(given, list | tuple) or not all(isinstance(m, nn.Module) for m in given):
            raise TypeError(
                f"model must be an nn.Module or a list of them; got {type(model).__name__}"
            )
        check_data(  # the first batch through the model and loss, before any copy is made
            "train", given[0], train, settings.loss_function(), batch_fn=settings.batch_fn,
            augment=settings.augment,
        )  # fmt: skip
        models = [copy.deepcopy(m) for m in given]
        if not shared and len(models) != k:
            raise ValueError(f"model: got {len(models)} models for {k} values")
        # each p buffer and its factor: DropPath's from the caller's rates, which prepare
        # overwrites on the copies; dropout's from the copies, whose torch layers it swaps
        self.rates = {"drop_path": hp.rate_ratios(given[0], "drop_path")}
        hp.prepare(models, list(self.hparams), what)
        self.rates["dropout"] = hp.rate_ratios(models[0], "dropout")
        self.rates["drop_block"] = hp.rate_ratios(models[0], "drop_block")
        self.like = models[0]  # the model's structure: names of weights and scales
        self.stacked = Stacked(models, k=k if shared else None)
        self.stacked.diverged_epoch = torch.zeros(k, dtype=torch.long)
        self.settings = settings
        self.train = train
        self.loaders = _loaders(train, settings, k)
        o = settings.optim
        self.opt = StackedOptimizer(o.name, o.momentum, o.nesterov, o.betas)
        self.epoch = 0  # epochs trained
        self.step = 0  # optimizer steps taken: the schedule's argument
        self.ids = torch.arange(k)
        self.classes = None  # the model's outputs per example, read when mixing first needs it
        _refresh(self)

    @property
    def k(self) -> int:
        """How many copies train."""
        return self.stacked.k

    @property
    def diverged_epoch(self) -> torch.Tensor:
        return self.stacked.diverged_epoch

    def train_epochs(self, n: int = 1) -> "StackedRun":
        """Train every copy n more epochs (epochs self.epoch + 1, ..., self.epoch + n)."""
        device = next(iter(self.stacked.params.values())).device
        with rng_fork(device):  # the epochs reseed torch; the caller's state is restored after
            for _ in range(n):
                self.epoch += 1
                _epoch(self, device)
                if self.settings.on_epoch is not None:
                    self.settings.on_epoch()
        return self

    def evaluate(self, data, loss=None, batch_size: int = 1024, batch_fn=None) -> dict:
        """Per-copy metrics (K,) in eval mode (`Stacked.evaluate`); loss and batch_fn
        default to the settings' own."""
        s = self.settings
        loss = s.loss_function() if loss is None else loss
        return self.stacked.evaluate(data, loss, batch_size, batch_fn or s.batch_fn)

    def model(self, k: int) -> nn.Module:
        """Copy k as an ordinary module (`Stacked.model`)."""
        return self.stacked.model(k)

    def keep(self, index) -> "StackedRun":
        """Keep copies index (distinct positions in [0, K), or a (K,) bool mask), in that
        order, and drop the others from every stacked tensor, state and stream."""
        index = _positions(index, self.k, "index")
        self.stacked.keep(index)
        self.opt.keep(index)
        self.hparams = {name: v[index].clone() for name, v in self.hparams.items()}
        self.ids = self.ids[index].clone()
        if self.settings.vary:
            self.loaders = [self.loaders[i] for i in index.tolist()]
        _refresh(self)
        return self

    def copy_into(self, src, dst) -> "StackedRun":
        """Copies dst take the weights, buffers (BatchNorm statistics) and optimizer state of
        copies src (PBT's exploit), all read before any is written; each keeps its own
        hyperparameters (change them with `set_hparams`) and random stream."""
        src = _positions(src, self.k, "src", distinct=False)
        dst = _positions(dst, self.k, "dst")
        if len(src) != len(dst):
            raise ValueError(
                f"src and dst must have the same length; got {len(src)} and {len(dst)}"
            )
        self.stacked.copy_(src, dst)
        self.opt.copy_(src, dst)
        _refresh(self)  # the p buffers were copied with the others: rewrite dst's own rates
        return self

    def set_hparams(self, values: dict, index=None) -> "StackedRun":
        """Set hyperparameters of the copies index (all copies if None): values maps a
        searched name to one value per copy of index."""
        index = torch.arange(self.k) if index is None else _positions(index, self.k, "index")
        if not isinstance(values, dict):
            raise TypeError(f"values must be a dict name -> values; got {type(values).__name__}")
        checked = {}
        for name, given in values.items():
            if name not in self.hparams:
                raise ValueError(
                    f"values: {name!r} is not searched in this run; it searches "
                    f"{', '.join(self.hparams)} (a name must be given when the run starts)"
                )
            checked[name] = hp.check_values(name, given, "values")
            if len(checked[name]) != len(index):
                raise ValueError(
                    f"values[{name!r}] must hold {len(index)} values, one per copy of index; "
                    f"got {len(checked[name])}"
                )
        for name, v in checked.items():
            self.hparams[name][index] = v
        _refresh(self)
        return self


def _refresh(run: StackedRun) -> None:
    """Write the dropout rates into the p buffers; rebuild the per-copy strengths."""
    s, params = run.settings, run.stacked.params
    for name in hp.LAYERS:
        if name in run.hparams:
            for buffer, factor in run.rates[name].items():
                run.stacked.buffers[buffer].copy_(run.hparams[name] * factor)
    decayed = [params[n] for n in update.decayed_names(run.like, s.optim.no_decay)]
    scales = [params[n] for n in update.bn_scale_names(run.like)]
    run.strengths = update.strengths(decayed, scales, run.hparams, s)


def _epoch(run: StackedRun, device) -> None:
    """One epoch of `fit`'s steps on the K copies; record the copies that diverged."""
    s, stacked, params = run.settings, run.stacked, run.stacked.params
    reseed(epoch_seed(s.train.seed, run.epoch, stream=1), device)
    for loader in run.loaders:
        set_epoch(loader, run.epoch)
    loss, accumulate = s.loss_function(), getattr(s.train, "accumulate", 1)
    stacked.base.train()
    epoch_loss, micro = 0.0, 0
    hparams = batch.with_fixed(run.hparams, s)  # the settings' own smoothing and mixing too
    smoothing = hparams.get("label_smoothing")
    for batches, last in with_last(zip(*run.loaders, strict=True)):
        x, y, bx, by = batch.inputs(batches, s, hparams, device, lambda x: _classes(run, x))
        out = stacked.forward(x, "different" if s.vary else "same", batched_x=bx)
        losses = batch.losses(loss, out, y, by, smoothing)
        (losses.sum() / accumulate if accumulate > 1 else losses.sum()).backward()
        epoch_loss = epoch_loss + losses.detach()
        micro += 1
        if micro == accumulate or last:
            if micro < accumulate:
                mean_of_partial_group_(list(params.values()), accumulate, micro)
            update.step(run.opt, params, run.strengths, run.step, s)
            run.step += 1
            micro = 0
    # as `fit`: diverged when the loss or the weights stop being finite
    p_finite = [p.detach().flatten(1).isfinite().all(1) for p in params.values()]
    finite = torch.stack(p_finite).all(0) & torch.isfinite(epoch_loss)
    bad = ~finite.cpu() & (stacked.diverged_epoch == 0)
    stacked.diverged_epoch[bad] = run.epoch


def _positions(index, k: int, name: str, distinct: bool = True) -> torch.Tensor:
    """index as a 1-D long tensor of positions in [0, k): from ints or a (k,) bool mask."""
    try:
        t = torch.as_tensor(index).reshape(-1).cpu()
    except (TypeError, ValueError, RuntimeError):
        t = None
    if t is None or (len(t) and (t.is_floating_point() or t.is_complex())):
        raise TypeError(f"{name} must hold integer positions or a bool mask; got {index!r}")
    if len(t) == 0:
        raise ValueError(f"{name} must name at least one copy; got none")
    if t.dtype == torch.bool:
        if len(t) != k:
            raise ValueError(f"{name} as a mask must have {k} entries; got {len(t)}")
        t = t.nonzero().reshape(-1)
        if len(t) == 0:
            raise ValueError(f"{name} must name at least one copy; got a mask of False only")
    t = t.long()
    if bool(((t < 0) | (t >= k)).any()):
        raise ValueError(f"{name} must hold positions in [0, {k}); got {t.tolist()}")
    if distinct and len(t.unique()) != len(t):
        raise ValueError(f"{name} must not repeat a copy; got {t.tolist()}")
    return t


def _classes(run: StackedRun, x) -> int:
    """The model's outputs per example (the classes of mixing's one-hot targets), read once."""
    if run.classes is None:
        run.classes = batch.output_width(run.stacked, x)
    return run.classes


def _loaders(train, s, k: int) -> list:
    """One loader shared by the copies, or (vary) one per copy with seed + first + k."""
    if not s.vary:
        return [train]
    return [
        TensorLoader(
            *train.tensors,
            batch_size=train.batch_size,
            shuffle=train.shuffle,
            seed=train.seed + s.first + i,
            drop_last=train.drop_last,
        )
        for i in range(k)
    ]

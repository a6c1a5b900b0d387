"""The training loop: any optimizer plus the library's regularizers, with history and checkpoints.

`fit` checks its arguments, restores a checkpoint when resuming, then runs epochs.
One epoch of steps (`regulab.train_step`): batches, autocast for bf16/fp16,
gradient accumulation, the penalty's gradient, clipping, the schedule, the
optimizer step and the after-step projections. One end of epoch (`_end_epoch`):
evaluate, check for divergence, record a history row, ask early stopping, write
a checkpoint, call on_epoch. Both read fit's settings and the loop's state (step
counter, History) from one `_Loop`. Divergence is checked once per epoch.

Reproducibility: the loop reseeds torch's generators at the start of every epoch
from (seed, epoch, rank) and the loader draws the epoch's order from
(seed, epoch), so an epoch resumed from a checkpoint sees exactly the random
numbers (dropout masks, augmentations, order) of the uninterrupted run. It does
so inside `torch.random.fork_rng`: the caller's generators are left as they were.
Under torchrun (a process group is initialized) `regulab.distributed.wrap` gives
each process its share of every global batch and wraps the model in
DistributedDataParallel; metrics are summed over processes.
"""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from regulab import _checks, checkpoint, data_checks, distributed, train_state, train_step
from regulab.data.loader import TensorLoader
from regulab.early_stopping import EarlyStopping
from regulab.metrics import check_loss, evaluate, weight_stats
from regulab.penalties import Penalty

COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "w_norm",
    "zero_fraction",
    "seconds",
)
FINAL = COLUMNS[2:10]


@dataclass
class History:
    """What `fit` returns: one row per epoch (keys COLUMNS) and how the run ended.

    status is "completed" or "diverged"; `final` holds the metrics of the weights
    the model ends with (the best epoch's when early stopping restored them).
    train_metrics: how train_loss/train_accuracy were measured, "eval" (the first
    eval_train examples re-evaluated in eval mode) or "running" (the mean over the
    epoch's minibatches, in train mode).
    """

    rows: list[dict] = field(default_factory=list)
    status: str = "completed"
    message: str = ""
    best_epoch: int | None = None
    stopped_early: bool = False
    final: dict = field(default_factory=dict)
    train_metrics: str = "eval"


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: TensorLoader | Iterable,
    *,
    epochs: int,
    val=None,
    test=None,
    loss: str | Callable = "cross_entropy",
    eval_loss: str | Callable | None = None,
    batch_fn: Callable | None = None,
    precision: str = "fp32",
    accumulate: int = 1,
    penalty: Penalty | None = None,
    after_step: Iterable[Callable[[], None]] = (),
    schedule: Callable[[int], float] | None = None,
    scheduler=None,
    early_stopping: EarlyStopping | None = None,
    augment: Callable | None = None,
    clip_grad_norm: float | None = None,
    seed: int = 0,
    eval_train: int = 10_000,
    eval_batch_size: int = 1024,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    keep_checkpoints: int = 1,
    on_epoch: Callable[["History"], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> History:
    """Train model for `epochs` epochs; return its History.

    train: a TensorLoader (preferred: index slicing on the device) or any iterable
    of batches, such as a torch DataLoader. val / test: (x, y) tensors or iterables
    of batches; val is what early stopping monitors, test is only reported.
    batch_fn(batch) -> (inputs, target) maps batches that are not (x, y) pairs
    (dicts, longer tuples) for train, val and test; inputs may be a tensor
    (`model(x)`), a tuple (`model(*inputs)`) or a dict (`model(**inputs)`).
    loss: "cross_entropy", "mse", "half_mse" (mean squared error / 2), or any
    callable (output, target) -> scalar mean loss, e.g. nn.CrossEntropyLoss(weight=w)
    or nn.BCEWithLogitsLoss() (accuracy: see `metrics.correct`). eval_loss: the loss
    the evaluations report (None: loss), e.g. plain cross-entropy beside a smoothed one.

    precision: "fp32", "bf16" or "fp16": forward and loss run under torch.autocast;
    fp16 scales the loss with a torch.amp.GradScaler (a step with inf gradients is
    skipped, not counted, and is no divergence). Weights and evaluation stay fp32.
    accumulate: each optimizer step sums the gradients of `accumulate` consecutive
    micro-batches, each loss divided by accumulate: with equal micro-batches, one
    step on their concatenation. A trailing partial group at the epoch's end still
    steps, on the mean of its micro-batches. The step counter (the schedule's
    argument, checkpoints), penalty, clipping and after_step act once per step.

    penalty: a `Penalty` whose gradient is added after backward (coupled L1/L2).
    after_step: functions called after every optimizer step, e.g.
    `lambda: max_norm_(weights, 3.0)` or a proximal L1 step.
    schedule: factor(step) multiplying each group's initial lr, set before every
    step (`regulab.schedules`); scheduler: a torch LR scheduler stepped once per
    epoch. clip_grad_norm: max total gradient norm (torch.nn.utils.clip_grad_norm_).
    augment: a function applied to each training batch's inputs before the forward pass.

    eval_train: the first eval_train training examples are re-evaluated in eval
    mode after each epoch for train_loss/train_accuracy (0: the running mean of
    the minibatch losses, in train mode, instead). Only a TensorLoader can be sliced
    so: with any other train (a DataLoader) the running mean is used whatever
    eval_train is, and History.train_metrics says which ("eval" or "running").
    eval_batch_size: examples per forward pass when evaluating. Before any step, the
    first batch of train, val and test goes through batch_fn, the model and the loss
    (`data_checks`): data the run cannot use is one ValueError or TypeError naming it.

    seed: torch's generators are reseeded from (seed, epoch, rank) at the start of
    every epoch (dropout masks, augmentations) inside `torch.random.fork_rng`, so
    the caller's random state is as it was; the loader's order has its own seed.
    checkpoint_dir: a checkpoint is written there after every good epoch; with
    resume=True training continues from the newest one; the newest keep_checkpoints
    are kept. on_epoch(history) is called after each epoch, on_step() after each
    optimizer step, taken or skipped (for progress display). A non-finite loss or
    weight norm ends training with status "diverged" and keeps the last good
    checkpoint (the model itself is left as it was when that was detected).

    Under torchrun (a process group initialized, see `regulab.distributed`) the
    model is wrapped in DistributedDataParallel and a TensorLoader is sharded by
    rank (`distributed.wrap`): the processes together take the steps of one (a
    callable loss is taken to be a mean over examples, as it is summed over them).
    """
    epochs = _checks.positive_int("epochs", epochs)
    data_checks.check_model(model)
    data_checks.check_optimizer(optimizer, model)
    loss = check_loss(loss)
    eval_loss = loss if eval_loss is None else check_loss(eval_loss)
    train_step.check_precision(precision)
    _checks.positive_int("accumulate", accumulate)
    _checks.non_negative_int("seed", seed)
    _checks.non_negative_int("eval_train", eval_train)
    _checks.positive_int("keep_checkpoints", keep_checkpoints)
    _checks.positive_int("eval_batch_size", eval_batch_size)
    if clip_grad_norm is not None:
        _checks.positive("clip_grad_norm", clip_grad_norm)
    if batch_fn is not None and not callable(batch_fn):
        kind = type(batch_fn).__name__
        raise TypeError(f"batch_fn must be a callable batch -> (inputs, target); got {kind}")
    train_state.check_folder(checkpoint_dir, resume)
    data_checks.check_fit_data(
        model, train, loss, val=val, test=test, eval_loss=eval_loss, batch_fn=batch_fn,
        augment=augment, rows=eval_batch_size,
    )  # fmt: skip
    after_step = list(after_step)
    stepped, train = distributed.wrap(model, train)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    loop = _Loop(
        model=stepped,
        module=model,
        optimizer=optimizer,
        train=train,
        loss=loss,
        eval_loss=eval_loss,
        batch_fn=batch_fn,
        precision=precision,
        accumulate=accumulate,
        seed=seed,
        penalty=penalty,
        after_step=after_step,
        schedule=schedule,
        augment=augment,
        clip_grad_norm=clip_grad_norm,
        on_step=on_step,
        train_eval=_train_eval_data(train, eval_train, batch_fn),
        val=val,
        test=test,
        eval_batch_size=eval_batch_size,
        scheduler=scheduler,
        early_stopping=early_stopping,
        checkpoint_dir=checkpoint_dir,
        keep_checkpoints=keep_checkpoints,
        on_epoch=on_epoch,
    )
    loop.history.train_metrics = "running" if loop.train_eval is None else "eval"
    with train_step.rng_fork(loop.device):
        start_epoch = 1
        if resume and checkpoint.latest(checkpoint_dir) is not None:
            start_epoch = train_state.restore(loop)
        for epoch in range(start_epoch, epochs + 1):
            if early_stopping is not None and early_stopping.stopped_epoch_ is not None:
                break  # resumed after the epoch that stopped
            started = time.perf_counter()
            running = train_step.train_epoch(loop, epoch)
            if _end_epoch(loop, epoch, running, started):
                break
    return _finish(loop)


@dataclass
class _Loop:
    """One `fit` call: the settings its steps and epoch ends read, and the state they advance."""

    model: nn.Module  # what a step calls: the user's module, or its DDP wrapper
    module: nn.Module  # the user's module: evaluated, checkpointed, restored
    optimizer: torch.optim.Optimizer
    train: Iterable  # this process's batches
    loss: str | Callable  # a key of LOSSES or a callable (output, target) -> mean loss
    eval_loss: str | Callable  # what evaluations report
    batch_fn: Callable | None  # batch -> (inputs, target); None: batches are (x, y)
    precision: str  # a key of train_step.PRECISIONS
    accumulate: int  # micro-batches per optimizer step
    seed: int  # with the epoch and rank, seeds torch's generators each epoch
    # one step
    penalty: Penalty | None
    after_step: list[Callable[[], None]]
    schedule: Callable[[int], float] | None  # lr factor of the step
    augment: Callable | None
    clip_grad_norm: float | None
    on_step: Callable[[], None] | None
    # one end of epoch
    train_eval: tuple | None  # the training subset re-evaluated, or None for running means
    val: object
    test: object
    eval_batch_size: int
    scheduler: object  # a torch LR scheduler, or None
    early_stopping: EarlyStopping | None
    checkpoint_dir: Path | None
    keep_checkpoints: int
    on_epoch: Callable[[History], None] | None
    # the state
    step: int = 0  # optimizer steps taken so far: the schedule's argument
    history: History = field(default_factory=History)

    def __post_init__(self):
        self.rank, self.world_size = distributed.world()
        self.device = next(self.module.parameters()).device
        self.clip_params = [p for p in self.module.parameters() if p.requires_grad]
        self.scaler = train_step.grad_scaler(self.precision, self.device)


def _end_epoch(loop: _Loop, epoch: int, running: torch.Tensor, started: float) -> bool:
    """Evaluate, check for divergence, record the row, ask early stopping, checkpoint, on_epoch.

    Return True when training ends here: it diverged (status "diverged", the row is
    not recorded) or early stopping says stop. started: perf_counter() at the epoch's start.
    """
    history = loop.history
    row = _epoch_row(loop, epoch, running)
    if loop.scheduler is not None:  # after the row: its lr is the one this epoch trained with
        loop.scheduler.step()
    row["seconds"] = round(time.perf_counter() - started, 4)
    bad = [
        k
        for k in ("train_loss", "val_loss", "test_loss", "w_norm")
        if row[k] is not None and not math.isfinite(row[k])
    ]
    if bad:
        history.status = "diverged"
        kept = checkpoint.latest(loop.checkpoint_dir) if loop.checkpoint_dir is not None else None
        history.message = (
            f"training diverged in epoch {epoch}: {', '.join(bad)} not finite "
            f"(lr {row['lr']:g}); "
            + (f"the last good checkpoint is {kept.name}" if kept else "no checkpoint kept")
        )
        return True
    history.rows.append(row)
    stop = False
    if loop.early_stopping is not None:
        stop = loop.early_stopping.update(row, loop.module)
    if loop.checkpoint_dir is not None and loop.rank == 0:
        checkpoint.save(
            loop.checkpoint_dir,
            epoch,
            loop.module.state_dict(),
            train_state.state(loop, epoch),
            keep=loop.keep_checkpoints,
        )
    if loop.on_epoch is not None:
        loop.on_epoch(history)
    return stop


def _finish(loop: _Loop) -> History:
    """Restore early stopping's best weights and fill in History's best_epoch and final."""
    history, early_stopping = loop.history, loop.early_stopping
    if early_stopping is not None and history.status == "completed":
        early_stopping.restore(loop.module)  # also at the natural end, not only on a stop
        if early_stopping.best_epoch_ is not None and early_stopping.restore_best:
            history.best_epoch = early_stopping.best_epoch_ + 1
        history.stopped_early = early_stopping.stopped_epoch_ is not None
    if history.rows:
        best = history.best_epoch or history.rows[-1]["epoch"]
        history.final = {k: history.rows[best - 1][k] for k in FINAL}
    return history


def _train_eval_data(train, eval_train: int, batch_fn):
    """The fixed training subset evaluated each epoch, or None for running means (eval_train
    0, or a train that is not a TensorLoader and so cannot be sliced)."""
    if eval_train == 0 or not isinstance(train, TensorLoader):
        return None
    tensors = train.tensors if batch_fn is not None else train.tensors[:2]
    return tuple(t[:eval_train] for t in tensors)


def _epoch_row(loop: _Loop, epoch: int, running: torch.Tensor) -> dict:
    """The history row of an epoch (keys COLUMNS), "seconds" left to the caller."""
    module = loop.module

    def metrics(data):
        return evaluate(module, data, loop.eval_loss, loop.eval_batch_size, loop.batch_fn)

    row = dict.fromkeys(COLUMNS)
    row["epoch"] = epoch
    row["lr"] = float(loop.optimizer.param_groups[0]["lr"])
    if loop.train_eval is not None:
        row["train_loss"], row["train_accuracy"] = metrics(loop.train_eval)
    else:
        total, correct, count, no_accuracy = distributed.all_sum(running).tolist()
        row["train_loss"] = total / count
        row["train_accuracy"] = correct / count if no_accuracy == 0 else None
    if loop.val is not None:
        row["val_loss"], row["val_accuracy"] = metrics(loop.val)
    if loop.test is not None:
        row["test_loss"], row["test_accuracy"] = metrics(loop.test)
    row["w_norm"], row["zero_fraction"] = weight_stats(module)
    return row

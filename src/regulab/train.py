"""The training loop: any optimizer plus the library's regularizers, with history and checkpoints.

`fit` checks its arguments, restores a checkpoint when resuming, then runs epochs.
One step (`_step`): augment the batch, forward, backward, add the penalty's
gradient (`Penalty.apply_`), clip the gradient norm, set the learning rate from
the schedule (a pure function of the step), step the optimizer, then run the
after-step projections (`max_norm_`, `prox_l1_`). One end of epoch
(`_end_epoch`): evaluate, check for divergence, record a history row, ask early
stopping, write a checkpoint, call on_epoch. Both read fit's settings and the
loop's state (step counter, History) from one `_Loop`. Nothing in a step waits
for the device; divergence is checked once per epoch.

Reproducibility: the loop reseeds torch's generator at the start of every epoch
from (seed, epoch, rank) and the loader draws the epoch's order from
(seed, epoch), so an epoch resumed from a checkpoint sees exactly the random
numbers (dropout masks, augmentations, order) of the uninterrupted run.
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

from regulab import _checks, checkpoint, distributed
from regulab.data.loader import TensorLoader, epoch_seed
from regulab.early_stopping import EarlyStopping
from regulab.metrics import CLASSIFICATION, LOSSES, evaluate, weight_stats
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
EARLY_STOPPING_STATE = ("best_", "best_epoch_", "wait_", "epochs_", "stopped_epoch_", "best_state_")


@dataclass
class History:
    """What `fit` returns: one row per epoch (keys COLUMNS) and how the run ended.

    status is "completed" or "diverged"; `final` holds the metrics of the weights
    the model ends with (the best epoch's when early stopping restored them).
    """

    rows: list[dict] = field(default_factory=list)
    status: str = "completed"
    message: str = ""
    best_epoch: int | None = None
    stopped_early: bool = False
    final: dict = field(default_factory=dict)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: TensorLoader | Iterable,
    *,
    epochs: int,
    val=None,
    test=None,
    loss: str = "cross_entropy",
    penalty: Penalty | None = None,
    after_step: Iterable[Callable[[], None]] = (),
    schedule: Callable[[int], float] | None = None,
    scheduler=None,
    early_stopping: EarlyStopping | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
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
    of (x, y) batches, such as a torch DataLoader. val / test: (x, y) tensors or
    iterables of batches; val is what early stopping monitors, test is only
    reported. loss: "cross_entropy", "mse" or "half_mse" (mean squared error / 2).

    penalty: a `Penalty` whose gradient is added after backward (coupled L1/L2).
    after_step: functions called after every optimizer step, e.g.
    `lambda: max_norm_(weights, 3.0)` or a proximal L1 step.
    schedule: factor(step) multiplying each group's initial lr, set before every
    step (`regulab.schedules`); scheduler: a torch LR scheduler stepped once per
    epoch. clip_grad_norm: max total gradient norm (torch.nn.utils.clip_grad_norm_).
    augment: a function applied to each training batch x before the forward pass.

    eval_train: the first eval_train training examples are re-evaluated in eval
    mode after each epoch for train_loss/train_accuracy (0: the running mean of
    the minibatch losses, in train mode, instead). Needs a TensorLoader.
    eval_batch_size: examples per forward pass when evaluating.

    seed: torch's generator is reseeded from (seed, epoch, rank) at the start of
    every epoch (dropout masks, augmentations); the loader's order has its own seed.
    checkpoint_dir: a checkpoint is written there after every good epoch; with
    resume=True training continues from the newest one; the newest keep_checkpoints
    are kept. on_epoch(history) is called after each epoch, on_step() after each
    step (for progress display). A non-finite loss or
    weight norm ends training with status "diverged" and keeps the last good
    checkpoint (the model itself is left as it was when that was detected).

    Under torchrun (a process group initialized, see `regulab.distributed`) the
    model is wrapped in DistributedDataParallel and a TensorLoader is sharded by
    rank (`distributed.wrap`): the processes together take the steps of one.
    """
    epochs = _checks.positive_int("epochs", epochs)
    _checks.one_of("loss", loss, tuple(LOSSES))
    _checks.non_negative_int("seed", seed)
    _checks.non_negative_int("eval_train", eval_train)
    _checks.positive_int("keep_checkpoints", keep_checkpoints)
    if clip_grad_norm is not None:
        _checks.positive("clip_grad_norm", clip_grad_norm)
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir, the folder of the checkpoints")
    if not resume and checkpoint_dir is not None and checkpoint.latest(checkpoint_dir):
        raise ValueError(
            f"checkpoint_dir '{checkpoint_dir}' already holds checkpoints "
            f"({checkpoint.latest(checkpoint_dir).name}) of another run: pass resume=True to "
            "continue it, or give an empty folder"
        )
    after_step = list(after_step)
    stepped, train = distributed.wrap(model, train)
    train_eval = _train_eval_data(train, eval_train)
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    loop = _Loop(
        model=stepped,
        module=model,
        optimizer=optimizer,
        train=train,
        loss=loss,
        seed=seed,
        penalty=penalty,
        after_step=after_step,
        schedule=schedule,
        augment=augment,
        clip_grad_norm=clip_grad_norm,
        on_step=on_step,
        train_eval=train_eval,
        val=val,
        test=test,
        eval_batch_size=eval_batch_size,
        scheduler=scheduler,
        early_stopping=early_stopping,
        checkpoint_dir=checkpoint_dir,
        keep_checkpoints=keep_checkpoints,
        on_epoch=on_epoch,
    )
    start_epoch = 1
    if resume and checkpoint.latest(checkpoint_dir) is not None:
        start_epoch, loop.step = _restore(
            checkpoint_dir, model, optimizer, scheduler, early_stopping, loop.history
        )
    for epoch in range(start_epoch, epochs + 1):
        if early_stopping is not None and early_stopping.stopped_epoch_ is not None:
            break  # resumed after the epoch that stopped
        started = time.perf_counter()
        running = _train_epoch(loop, epoch)
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
    loss: str  # a key of LOSSES
    seed: int  # with the epoch and rank, seeds torch's generator each epoch
    # one step
    penalty: Penalty | None
    after_step: list[Callable[[], None]]
    schedule: Callable[[int], float] | None  # lr factor of the step
    augment: Callable[[torch.Tensor], torch.Tensor] | None
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
        self.loss_fn = LOSSES[self.loss]
        self.device = next(self.module.parameters()).device
        self.clip_params = [p for p in self.module.parameters() if p.requires_grad]


def _train_epoch(loop: _Loop, epoch: int) -> torch.Tensor:
    """Run one epoch of steps; return (sum of example losses, correct, examples) of its batches."""
    torch.manual_seed(epoch_seed(loop.seed, epoch, stream=1 + loop.rank))
    train = loop.train
    if hasattr(train, "set_epoch"):
        train.set_epoch(epoch)
    elif hasattr(getattr(train, "sampler", None), "set_epoch"):
        train.sampler.set_epoch(epoch)
    loop.model.train()
    count_correct = loop.loss in CLASSIFICATION and loop.train_eval is None
    losses, counts, correct = [], [], []
    sizes = getattr(train, "batch_sizes", None)  # a TensorLoader's global batch sizes
    for i, (x, y) in enumerate(train):
        x, y = x.to(loop.device, non_blocking=True), y.to(loop.device, non_blocking=True)
        global_size = None
        if loop.world_size > 1:
            global_size = sizes[i] if sizes is not None else len(y) * loop.world_size
        batch_loss, out = _step(loop, x, y, global_size)
        losses.append(batch_loss)  # summed once per epoch: no work per step
        counts.append(len(y))
        if count_correct:
            correct.append((out.argmax(-1) == y).sum())
        if loop.on_step is not None:
            loop.on_step()
    return _running(losses, counts, correct, loop.device)


def _step(loop: _Loop, x, y, global_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the batch (x, y); return its mean loss and the output, detached.

    global_size: under DDP, the number of examples in the global batch x is a share of.
    """
    if loop.augment is not None:
        x = loop.augment(x)
    out = loop.model(x)
    batch_loss = _backward(loop, out, y, global_size)
    if loop.penalty is not None:
        loop.penalty.apply_()
    if loop.clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(loop.clip_params, loop.clip_grad_norm)
    if loop.schedule is not None:
        factor = loop.schedule(loop.step)
        for group in loop.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
    loop.optimizer.step()
    loop.optimizer.zero_grad(set_to_none=True)
    for fn in loop.after_step:
        fn()
    loop.step += 1
    return batch_loss.detach(), out.detach()


def _backward(loop: _Loop, out, y, global_size: int | None) -> torch.Tensor:
    """Backpropagate the batch's loss; return the mean loss over this process's examples."""
    if loop.world_size == 1:
        batch_loss = loop.loss_fn(out, y)
        batch_loss.backward()
        return batch_loss
    # sum / global batch size, times world_size because DDP averages gradients:
    # together the processes take the gradient of the global batch's mean loss
    batch_loss = loop.loss_fn(out, y, reduction="sum") * (loop.world_size / global_size)
    batch_loss.backward()
    return batch_loss * (global_size / loop.world_size / len(y))  # the local mean


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
            _state(loop, epoch),
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


def _running(losses, counts, correct, device) -> torch.Tensor:
    """(sum of example losses, correct, examples) of an epoch's minibatches."""
    if not losses:
        raise ValueError("train yielded no batches")
    n = torch.tensor(counts, dtype=torch.float64, device=device)
    total = torch.stack(losses).double() @ n
    right = torch.stack(correct).sum().double() if correct else torch.zeros((), device=device)
    return torch.stack([total, right, n.sum()])


def _train_eval_data(train, eval_train: int):
    """The fixed training subset evaluated each epoch, or None for running means."""
    if eval_train == 0:
        return None
    if not isinstance(train, TensorLoader):
        raise ValueError(
            "eval_train > 0 needs train as a TensorLoader (it re-evaluates the first "
            f"eval_train examples); got {type(train).__name__}: pass eval_train=0"
        )
    x, y = train.tensors[:2]
    return x[:eval_train], y[:eval_train]


def _epoch_row(loop: _Loop, epoch: int, running: torch.Tensor) -> dict:
    """The history row of an epoch (keys COLUMNS), "seconds" left to the caller."""
    module, loss, batch_size = loop.module, loop.loss, loop.eval_batch_size
    row = dict.fromkeys(COLUMNS)
    row["epoch"] = epoch
    row["lr"] = float(loop.optimizer.param_groups[0]["lr"])
    if loop.train_eval is not None:
        row["train_loss"], row["train_accuracy"] = evaluate(
            module, loop.train_eval, loss, batch_size
        )
    else:
        total, correct, count = distributed.all_sum(running).tolist()
        row["train_loss"] = total / count
        row["train_accuracy"] = correct / count if loss in CLASSIFICATION else None
    if loop.val is not None:
        row["val_loss"], row["val_accuracy"] = evaluate(module, loop.val, loss, batch_size)
    if loop.test is not None:
        row["test_loss"], row["test_accuracy"] = evaluate(module, loop.test, loss, batch_size)
    row["w_norm"], row["zero_fraction"] = weight_stats(module)
    return row


def _state(loop: _Loop, epoch: int) -> dict:
    """The training state a checkpoint holds beside the weights (what `_restore` reads)."""
    early_stopping, scheduler = loop.early_stopping, loop.scheduler
    return {
        "epoch": epoch,
        "step": loop.step,
        "rng": {
            "seed": loop.seed,
            "scheme": "torch and loader reseeded each epoch from (seed, epoch)",
        },
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "early_stopping": (
            {k: getattr(early_stopping, k) for k in EARLY_STOPPING_STATE}
            if early_stopping is not None
            else None
        ),
        "history": loop.history.rows,
    }


def _restore(folder, module, optimizer, scheduler, early_stopping, history) -> tuple[int, int]:
    """Load the newest checkpoint of folder; return (next epoch, step)."""
    device = next(module.parameters()).device
    model_state, state = checkpoint.load(checkpoint.latest(folder), device)
    module.load_state_dict(model_state)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if early_stopping is not None and state["early_stopping"] is not None:
        for k, v in state["early_stopping"].items():
            setattr(early_stopping, k, v)
    history.rows = list(state["history"])
    return state["epoch"] + 1, state["step"]

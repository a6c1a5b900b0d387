"""The training loop: any optimizer plus the library's regularizers, with history and checkpoints.

`fit` runs epochs of minibatch steps. In each step: augment the batch, forward,
backward, add the penalty's gradient (`Penalty.apply_`), clip the gradient norm,
set the learning rate from the schedule (a pure function of the step), step the
optimizer, then run the after-step projections (`max_norm_`, `prox_l1_`). After
each epoch it evaluates, records a history row, asks early stopping, and writes
a checkpoint. Nothing in a step waits for the device; divergence is checked
once per epoch.

Reproducibility: the loop reseeds torch's generator at the start of every epoch
from (seed, epoch, rank) and the loader draws the epoch's order from
(seed, epoch), so an epoch resumed from a checkpoint sees exactly the random
numbers (dropout masks, augmentations, order) of the uninterrupted run.
Under torchrun (a process group is initialized) the model is wrapped in
DistributedDataParallel, each process takes its share of every global batch,
and metrics are summed over processes.
"""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from regulab import _checks, checkpoint
from regulab.data.loader import TensorLoader, epoch_seed
from regulab.early_stopping import EarlyStopping
from regulab.metrics import CLASSIFICATION, LOSSES, all_sum, evaluate, weight_stats, world
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

    eval_train: the first eval_train training examples are re-evaluated in eval
    mode after each epoch for train_loss/train_accuracy (0: the running mean of
    the minibatch losses, in train mode, instead). Needs a TensorLoader.

    checkpoint_dir: a checkpoint is written there after every good epoch; with
    resume=True training continues from the newest one; the newest keep_checkpoints
    are kept. on_epoch(history) is called after each epoch, on_step() after each
    step (for progress display). A non-finite loss or
    weight norm ends training with status "diverged" and keeps the last good
    checkpoint (the model itself is left as it was when that was detected).
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
    rank, world_size = world()
    module = model
    if world_size > 1:
        if isinstance(train, TensorLoader) and train.world_size != world_size:
            t = train
            train = TensorLoader(
                *t.tensors,
                batch_size=t.batch_size,
                shuffle=t.shuffle,
                seed=t.seed,
                drop_last=t.drop_last,
                rank=rank,
                world_size=world_size,
            )
        model = nn.parallel.DistributedDataParallel(module)
    train_eval = _train_eval_data(train, eval_train)
    loss_fn = LOSSES[loss]
    classify = loss in CLASSIFICATION
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    history = History()
    start_epoch, step = 1, 0
    if resume and checkpoint.latest(checkpoint_dir) is not None:
        start_epoch, step = _restore(
            checkpoint_dir, module, optimizer, scheduler, early_stopping, history
        )
    clip_params = [p for p in module.parameters() if p.requires_grad]
    device = next(module.parameters()).device

    for epoch in range(start_epoch, epochs + 1):
        if early_stopping is not None and early_stopping.stopped_epoch_ is not None:
            break  # resumed after the epoch that stopped
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(seed, epoch, stream=1 + rank))
        if hasattr(train, "set_epoch"):
            train.set_epoch(epoch)
        elif hasattr(getattr(train, "sampler", None), "set_epoch"):
            train.sampler.set_epoch(epoch)
        model.train()
        losses, counts, correct = [], [], []
        sizes = getattr(train, "batch_sizes", None)
        for i, (x, y) in enumerate(train):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x)
            out = model(x)
            if world_size == 1:
                batch_loss = loss_fn(out, y)
                batch_loss.backward()
            else:
                # sum / global batch size, times world_size because DDP averages gradients:
                # together the processes take the gradient of the global batch's mean loss
                total = sizes[i] if sizes is not None else len(y) * world_size
                batch_loss = loss_fn(out, y, reduction="sum") * (world_size / total)
                batch_loss.backward()
                batch_loss = batch_loss * (total / world_size / len(y))  # the local mean
            if penalty is not None:
                penalty.apply_()
            if clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(clip_params, clip_grad_norm)
            if schedule is not None:
                factor = schedule(step)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * factor
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for fn in after_step:
                fn()
            step += 1
            losses.append(batch_loss.detach())  # summed once per epoch: no work per step
            counts.append(len(y))
            if classify and train_eval is None:
                correct.append((out.detach().argmax(-1) == y).sum())
            if on_step is not None:
                on_step()
        running = _running(losses, counts, correct, device)
        row = _epoch_row(
            epoch, module, optimizer, running, train_eval, val, test, loss, eval_batch_size
        )
        if scheduler is not None:  # after the row: its lr is the one this epoch trained with
            scheduler.step()
        row["seconds"] = round(time.perf_counter() - started, 4)
        bad = [
            k
            for k in ("train_loss", "val_loss", "test_loss", "w_norm")
            if row[k] is not None and not math.isfinite(row[k])
        ]
        if bad:
            history.status = "diverged"
            kept = checkpoint.latest(checkpoint_dir) if checkpoint_dir is not None else None
            history.message = (
                f"training diverged in epoch {epoch}: {', '.join(bad)} not finite "
                f"(lr {row['lr']:g}); "
                + (f"the last good checkpoint is {kept.name}" if kept else "no checkpoint kept")
            )
            break
        history.rows.append(row)
        stop = False
        if early_stopping is not None:
            stop = early_stopping.update(row, module)
        if checkpoint_dir is not None and rank == 0:
            checkpoint.save(
                checkpoint_dir,
                epoch,
                module.state_dict(),
                _state(epoch, step, seed, optimizer, scheduler, early_stopping, history),
                keep=keep_checkpoints,
            )
        if on_epoch is not None:
            on_epoch(history)
        if stop:
            break

    if early_stopping is not None and history.status == "completed":
        early_stopping.restore(module)  # also at the natural end, not only on a stop
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


def _epoch_row(epoch, module, optimizer, running, train_eval, val, test, loss, batch_size):
    row = dict.fromkeys(COLUMNS)
    row["epoch"] = epoch
    row["lr"] = float(optimizer.param_groups[0]["lr"])
    if train_eval is not None:
        row["train_loss"], row["train_accuracy"] = evaluate(module, train_eval, loss, batch_size)
    else:
        total, correct, count = all_sum(running).tolist()
        row["train_loss"] = total / count
        row["train_accuracy"] = correct / count if loss in CLASSIFICATION else None
    if val is not None:
        row["val_loss"], row["val_accuracy"] = evaluate(module, val, loss, batch_size)
    if test is not None:
        row["test_loss"], row["test_accuracy"] = evaluate(module, test, loss, batch_size)
    row["w_norm"], row["zero_fraction"] = weight_stats(module)
    return row


def _state(epoch, step, seed, optimizer, scheduler, early_stopping, history) -> dict:
    return {
        "epoch": epoch,
        "step": step,
        "rng": {"seed": seed, "scheme": "torch and loader reseeded each epoch from (seed, epoch)"},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "early_stopping": (
            {k: getattr(early_stopping, k) for k in EARLY_STOPPING_STATE}
            if early_stopping is not None
            else None
        ),
        "history": history.rows,
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

"""Early stopping with restore-best: stop when a monitored metric stops improving.

Early stopping acts as a regularizer: with gradient descent on a quadratic loss
it is equivalent to an L2 penalty whose strength falls as training goes on
(Goodfellow, Bengio & Courville, Deep Learning, section 7.8). The weights kept
are those of the best epoch, not the last.
"""

import math
from numbers import Real

import torch

from regulab import _checks


class EarlyStopping:
    """Call `update(value, model)` once per epoch; it returns True when training should stop.

    An epoch improves when value < best - min_delta (mode "min") or
    value > best + min_delta (mode "max"); a NaN never improves. After `patience`
    epochs in a row without improvement `update` returns True. With
    restore_best=True the best weights are loaded back into the model when
    `update` says stop; call `restore(model)` after the last epoch too, so that the
    best weights are used whether or not training stopped early.

    `value` is a number or a dict of metrics from which `monitor` is read. Without a
    model, `update` only tracks the metric; once it has kept weights it needs the
    model on every call.
    Learned state: best_, best_epoch_ (0-based count of updates), wait_,
    stopped_epoch_ (None until stopping), best_state_ (a copy of the state dict).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ):
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a metric name such as 'val_loss'; got {monitor!r}")
        self.monitor = monitor
        self.mode = _checks.one_of("mode", mode, ("min", "max"))
        self.patience = _checks.positive_int("patience", patience)
        self.min_delta = _checks.non_negative("min_delta", min_delta)
        if not isinstance(restore_best, bool):
            raise ValueError(f"restore_best must be True or False; got {restore_best!r}")
        self.restore_best = restore_best
        self.best_ = math.inf if mode == "min" else -math.inf
        self.best_epoch_ = None
        self.best_state_ = None
        self.wait_ = 0
        self.epochs_ = 0
        self.stopped_epoch_ = None

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, "
            f"patience={self.patience}, min_delta={self.min_delta}, "
            f"restore_best={self.restore_best})"
        )

    def improved(self, value: float) -> bool:
        """Whether value beats the best so far by more than min_delta."""
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best_ - self.min_delta
        return value > self.best_ + self.min_delta

    def update(self, value, model: torch.nn.Module | None = None) -> bool:
        """Record one epoch's metric; keep the weights if best; return True to stop."""
        if self.stopped_epoch_ is not None:
            raise RuntimeError("update() called after EarlyStopping said stop; make a new one")
        value = _read(self.monitor, value)
        if model is None and self.best_state_ is not None:
            raise ValueError(
                "model must be given on every update once best weights are kept "
                "(restore_best=True); otherwise a later best epoch would restore stale weights"
            )
        epoch = self.epochs_
        self.epochs_ += 1
        if self.improved(value):
            self.best_, self.best_epoch_, self.wait_ = value, epoch, 0
            if model is not None and self.restore_best:
                self.best_state_ = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.wait_ += 1
        if self.wait_ >= self.patience:
            self.stopped_epoch_ = epoch
            if model is not None:
                self.restore(model)
            return True
        return False

    def restore(self, model: torch.nn.Module) -> bool:
        """Load the best weights into model (when restore_best); return whether it did."""
        if not self.restore_best or self.best_state_ is None:
            return False
        model.load_state_dict(self.best_state_)
        return True


def _read(monitor: str, value) -> float:
    """The monitored number in value (a number, a 0-d tensor, or a dict of metrics)."""
    if isinstance(value, dict):
        if monitor not in value:
            raise ValueError(
                f"monitor {monitor!r} is not among the metrics given: {', '.join(value)}"
            )
        value = value[monitor]
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"value must be one number; got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"value must be a number or a dict of numbers; got {value!r}")
    return float(value)

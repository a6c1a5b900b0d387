"""The rows of a tuning run (`Tuner.trials_`) and the rank agreement read from them.

One row per configuration and rung: `config` (its index among the drawn configurations;
PBT: the copy, whose configuration changes when it is replaced), `rung` (1-based), `epoch`
(epochs trained), the value of each searched hyperparameter, `val_loss`, `val_accuracy`
(None where not finite or not defined) and `status`:

- "alive": trains on after this rung (at the last rung: a final survivor);
- "cut": dropped by successive halving at this rung;
- "diverged": its loss or weights stopped being finite (dropped, or replaced in PBT);
- "replaced": PBT gave this copy the weights of a better one and new hyperparameters.
"""

import math

import torch

from regulab.errors import NothingToChoose
from regulab.tune.schedulers import rank_agreement

STATUSES = ("alive", "cut", "diverged", "replaced")
METRICS = {"val_loss": "min", "val_accuracy": "max"}  # the columns a run may choose by


def rows(ids, rung: int, epoch: int, hparams: dict, metrics: dict, status: list) -> list[dict]:
    """The rows of one rung: ids (K,) configurations, hparams name -> (K,) values, metrics
    `StackedRun.evaluate`'s dict of (K,) tensors, status one of STATUSES per copy."""
    assert all(s in STATUSES for s in status) and len(status) == len(ids)
    out = []
    for k, config in enumerate(ids.tolist()):
        row = {"config": config, "rung": rung, "epoch": epoch}
        row.update({name: float(v[k]) for name, v in hparams.items()})
        row["val_loss"] = _num(metrics["loss"], k)
        row["val_accuracy"] = _num(metrics["accuracy"], k)
        row["status"] = status[k]
        out.append(row)
    return out


def agreement(trials: list[dict], metric: str = "val_loss") -> dict[int, float]:
    """rung -> Spearman's rho between that rung's metric and the last rung's, over the
    configurations alive at both and unchanged in between (never replaced or diverged);
    NaN where fewer than two reach both. The last rung is not listed."""
    rungs = sorted({r["rung"] for r in trials})
    by = {(r["rung"], r["config"]): r for r in trials}
    end = [c for (rung, c) in by if rung == rungs[-1]]
    out = {}
    for rung in rungs[:-1]:
        later = [q for q in rungs if rung <= q < rungs[-1]]
        both = [c for c in end if all(by.get((q, c), {}).get("status") == "alive" for q in later)]
        a, b = (
            torch.tensor([_nan(by[q, c][metric]) for c in both], dtype=torch.float64)
            for q in (rung, rungs[-1])
        )
        out[rung] = rank_agreement(a, b)
    return out


def score(run, val, metric: str):
    """((K,) metric of the copies of run (a `StackedRun`) on val, NaN where a copy
    diverged; the evaluation's metrics)."""
    m = run.evaluate(val)
    if metric == "val_accuracy" and m["accuracy"] is None:
        raise ValueError(
            "metric: 'val_accuracy' needs a classification loss and class scores; this run has "
            "no accuracy: use metric='val_loss'"
        )
    loss = m["loss"].cpu()
    value = loss if metric == "val_loss" else m["accuracy"].cpu()
    ok = torch.isfinite(loss) & (run.diverged_epoch == 0)
    return torch.where(ok, value, torch.nan), m


def all_diverged(run) -> NothingToChoose:
    """The error when no copy of run is left to choose."""
    return NothingToChoose(
        f"every configuration diverged by epoch {run.epoch} (loss or weights not finite): "
        "lower lr or the space's upper bounds"
    )


def _num(t, k):
    if t is None:
        return None
    v = float(t[k])
    return v if math.isfinite(v) else None


def _nan(v):
    return float("nan") if v is None else float(v)

"""The weight-decay experiment: high-dimensional linear regression, several lambdas and seeds.

20 training examples, 200 inputs: without a penalty the model fits the training
set exactly and generalizes badly; lam * ||w||^2 / 2 shrinks w and closes the
gap (Dive into Deep Learning, section 3.7, Zhang et al., d2l.ai).
"""

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch

from regulab import _checks
from regulab.data import synthetic_linear
from regulab.linear_regression import TRAINERS, FitResult, TrainingDiverged

METRICS = ("train_loss", "test_loss", "w_norm")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the weight-decay demo; every field is validated on creation."""

    lambdas: tuple[float, ...] = (0.0, 3.0)  # L2 strengths; penalty lam * ||w||^2 / 2
    seeds: int = 5  # number of seeds, run as 0, 1, ..., seeds - 1
    epochs: int = 100  # passes over the training set
    lr: float = 0.003  # SGD step size; gradients are means over the minibatch
    batch_size: int = 5  # examples per minibatch
    n_train: int = 20  # training examples
    n_test: int = 100  # test examples
    num_inputs: int = 200  # input features
    impl: str = "scratch"  # "scratch" (hand-written loss and step) or "concise" (torch.optim.SGD)
    device: str = "cpu"  # torch device the models train on

    def __post_init__(self):
        if not self.lambdas:
            raise ValueError("lambdas must hold at least one value; got none")
        for lam in self.lambdas:
            _checks.non_negative("lambdas", lam)
        if len(set(self.lambdas)) != len(self.lambdas):
            raise ValueError(f"lambdas must be distinct; got {list(self.lambdas)}")
        # -0.0 + 0.0 is 0.0: a user's "-0" must not be reported as λ = -0
        object.__setattr__(self, "lambdas", tuple(float(lam) + 0.0 for lam in self.lambdas))
        for name in ("seeds", "epochs", "batch_size", "n_train", "n_test", "num_inputs"):
            _checks.positive_int(name, getattr(self, name))
        if self.batch_size > self.n_train:
            raise ValueError(
                f"batch_size must be at most n_train = {self.n_train}, the number of "
                f"training examples; got {self.batch_size}"
            )
        _checks.positive("lr", self.lr)
        _checks.one_of("impl", self.impl, tuple(TRAINERS))


def problem(seed: int, cfg: DemoConfig) -> tuple:
    """Return (train, test, w0) for one seed: data and initial weights w0 ~ N(0, 1).

    One generator draws the training set, then the test set, then w0, so every
    lambda at a given seed sees the same data and starts from the same weights.
    """
    g = torch.Generator().manual_seed(seed)
    train = synthetic_linear(cfg.n_train, cfg.num_inputs, generator=g)
    test = synthetic_linear(cfg.n_test, cfg.num_inputs, generator=g)
    w0 = torch.randn(cfg.num_inputs, generator=g, dtype=torch.float64).float()
    device = torch.device(cfg.device)
    train = tuple(t.to(device) for t in train)
    test = tuple(t.to(device) for t in test)
    return train, test, w0.to(device)


def run(
    cfg: DemoConfig, on_run: Callable[[], None] | None = None
) -> dict[tuple[float, int], FitResult]:
    """Train one model per (lambda, seed); return the results keyed by (lambda, seed).

    `on_run` is called after each model, for progress display. A model whose loss
    stops being finite raises TrainingDiverged naming its seed, lambda and epoch.
    """
    trainer = TRAINERS[cfg.impl]
    results = {}
    for seed in range(cfg.seeds):
        train, test, w0 = problem(seed, cfg)
        for lam in cfg.lambdas:
            try:
                results[lam, seed] = trainer(
                    train,
                    test,
                    lam,
                    w0=w0,
                    lr=cfg.lr,
                    batch_size=cfg.batch_size,
                    epochs=cfg.epochs,
                    seed=seed,
                )
            except TrainingDiverged as e:
                raise TrainingDiverged(f"seed {seed}: {e}", e.epoch) from e
            if on_run is not None:
                on_run()
    return results


def metric_rows(results: dict[tuple[float, int], FitResult]) -> list[dict]:
    """Flatten histories into rows: lambda, seed, epoch (1-based) and METRICS."""
    rows = []
    for (lam, seed), fit in sorted(results.items()):
        for epoch, values in enumerate(zip(*(fit.history[m] for m in METRICS), strict=True), 1):
            rows.append(
                {
                    "lambda": lam,
                    "seed": seed,
                    "epoch": epoch,
                    **dict(zip(METRICS, values, strict=True)),
                }
            )
    return rows


def summarize(results: dict[tuple[float, int], FitResult]) -> list[dict]:
    """Mean and sample standard deviation over seeds of the final-epoch metrics, per lambda.

    The standard deviation uses n - 1 and is 0.0 for a single seed.
    """
    summary = []
    for lam in sorted({lam for lam, _ in results}):
        fits = [fit for (key, _), fit in sorted(results.items()) if key == lam]
        entry = {"lambda": lam, "seeds": len(fits)}
        for m in ("w_norm", "train_loss", "test_loss"):
            finals = [fit.history[m][-1] for fit in fits]
            entry[f"{m}_mean"] = statistics.fmean(finals)
            entry[f"{m}_std"] = statistics.stdev(finals) if len(finals) > 1 else 0.0
        summary.append(entry)
    return summary


def sweep(cfg: DemoConfig, grid: str = "0,logspace(-3,2,32)", folds: int = 5, seed: int = 0):
    """The validation-chosen lambda: the demo's protocol on one data set, all lambdas at once.

    The 20 training examples of `seed` are split into `folds` folds (the test set
    takes no part); every lambda of grid trains in one vectorized run
    (`regulab.sweep`). Returns the fitted `LambdaSearch`.
    """
    from regulab.recipe import from_dict
    from regulab.sweep.search import LambdaSearch

    recipe = from_dict(
        {
            "name": "demo",
            "data": {
                "name": "synthetic_linear",
                "n_train": cfg.n_train,
                "n_test": cfg.n_test,
                "num_inputs": cfg.num_inputs,
                "val_fraction": 0.0,
                "seed": seed,
            },
            "model": {"name": "linear", "init": "normal"},
            "optim": {"name": "sgd", "lr": cfg.lr},
            "train": {
                "epochs": cfg.epochs,
                "batch_size": cfg.batch_size,
                "loss": "half_mse",
                "seed": seed,
                "device": cfg.device,
            },
        }
    )
    return LambdaSearch(recipe, "l2", grid, folds=folds, seed=seed, device=cfg.device).fit()

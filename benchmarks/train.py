"""Training throughput of `regulab.train.fit` on Fashion-MNIST, beside two plain loops.

The MLP 784-256-256-10 at batch 256 with SGD, timed three ways in one process,
interleaved, median over repeats:
  fit         regulab.train.fit with a TensorLoader (index slicing on the device)
  dataloader  a plain loop over DataLoader(TensorDataset(x, y), batch_size=256, shuffle=True)
  limit       the same forward and backward matrix products alone (the matmul-bound limit)
Then both training paths run the same epochs from the same initial weights and
their test accuracies are compared.

    python benchmarks/train.py [--quick]

Data: $REGULAB_DATA_DIR, ~/.cache/regulab or ../shared/data beside the project.
The last line printed is one JSON object with the figures and ratios.
"""

import argparse
import itertools
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from regulab import models
from regulab.data import fashion_mnist
from regulab.data.loader import TensorLoader
from regulab.metrics import evaluate
from regulab.train import fit

SIZES = (784, 256, 256, 10)
BATCH = 256
LR = 0.5


def data_root():
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if os.environ.get("REGULAB_DATA_DIR") or not shared.is_dir():
        return None
    return shared


def load():
    (x, y), (xt, yt) = fashion_mnist(data_root())
    return (x.float() / 255).unsqueeze(1), y, (xt.float() / 255).unsqueeze(1), yt


def model_and_optimizer(seed=0):
    torch.manual_seed(seed)
    model = models.mlp(SIZES)
    return model, torch.optim.SGD(model.parameters(), lr=LR)


def time_fit(x, y, steps):
    model, opt = model_and_optimizer()
    n = steps * BATCH
    loader = TensorLoader(x[:n], y[:n], batch_size=BATCH, seed=1)
    start = time.perf_counter()
    fit(model, opt, loader, epochs=1, eval_train=0)
    return n / (time.perf_counter() - start)


def time_dataloader(x, y, steps):
    model, opt = model_and_optimizer()
    n = steps * BATCH
    loader = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=BATCH, shuffle=True)
    start = time.perf_counter()
    dataloader_epoch(model, opt, loader)
    return n / (time.perf_counter() - start)


def dataloader_epoch(model, opt, loader):
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def time_limit(steps):
    """Forward and backward products of the three Linear layers, nothing else."""
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(o, i, generator=g) * 0.05 for i, o in itertools.pairwise(SIZES)]
    x = torch.randn(BATCH, SIZES[0], generator=g)
    grads = [torch.randn(BATCH, o, generator=g) for o in SIZES[1:]]
    start = time.perf_counter()
    for _ in range(steps):
        h = [x]
        for w in ws:
            h.append(h[-1] @ w.T)  # forward
        g_out = grads[-1]
        for k in range(len(ws) - 1, -1, -1):
            _ = g_out.T @ h[k]  # weight gradient
            if k:
                g_out = g_out @ ws[k]  # input gradient (not needed for the first layer)
    return steps * BATCH / (time.perf_counter() - start)


def accuracy_check(x, y, xt, yt, epochs, seeds):
    """Mean test accuracy of both training paths over `seeds` (same initial weights per seed)."""
    fit_acc, loader_acc = [], []
    for seed in range(seeds):
        model, opt = model_and_optimizer(seed)
        fit(model, opt, TensorLoader(x, y, batch_size=BATCH, seed=seed), epochs=epochs,
            eval_train=0, seed=seed)  # fmt: skip
        fit_acc.append(evaluate(model, (xt, yt), "cross_entropy")[1])
        model, opt = model_and_optimizer(seed)
        loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
        torch.manual_seed(seed)
        for _ in range(epochs):
            dataloader_epoch(model, opt, loader)
        loader_acc.append(evaluate(model, (xt, yt), "cross_entropy")[1])
    return statistics.mean(fit_acc), statistics.mean(loader_acc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    steps, repeats, epochs, seeds = (30, 3, 1, 1) if args.quick else (200, 7, 3, 3)
    x, y, xt, yt = load()
    torch.manual_seed(0)
    time_fit(x, y, 5), time_dataloader(x, y, 5), time_limit(5)  # warm up
    results = {"fit": [], "dataloader": [], "limit": []}
    for _ in range(repeats):  # interleaved, so that machine noise hits all three alike
        results["fit"].append(time_fit(x, y, steps))
        results["dataloader"].append(time_dataloader(x, y, steps))
        results["limit"].append(time_limit(steps))
    med = {k: statistics.median(v) for k, v in results.items()}
    acc_fit, acc_dl = accuracy_check(x, y, xt, yt, epochs, seeds)
    print(
        f"MLP 784-256-256-10, batch {BATCH}, SGD lr {LR}, {steps} steps x {repeats} repeats, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'path':<12}{'examples/s (median)':>22}{'of limit':>10}")
    for k in ("fit", "dataloader", "limit"):
        print(f"{k:<12}{med[k]:>22,.0f}{med[k] / med['limit']:>10.1%}")
    print(f"fit / dataloader: {med['fit'] / med['dataloader']:.2f}x")
    print(f"test accuracy after {epochs} epoch(s), mean of {seeds} seed(s): "
          f"fit {acc_fit:.4f}, dataloader {acc_dl:.4f}")  # fmt: skip
    print(
        json.dumps(
            {
                "benchmark": "train",
                "quick": args.quick,
                "steps": steps,
                "repeats": repeats,
                "examples_per_s": {k: round(v, 1) for k, v in med.items()},
                "fit_of_limit": round(med["fit"] / med["limit"], 4),
                "dataloader_of_limit": round(med["dataloader"] / med["limit"], 4),
                "fit_over_dataloader": round(med["fit"] / med["dataloader"], 4),
                "test_accuracy": {
                    "fit": acc_fit,
                    "dataloader": acc_dl,
                    "epochs": epochs,
                    "seeds": seeds,
                },
            }
        )
    )


if __name__ == "__main__":
    main()

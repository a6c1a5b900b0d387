"""Overhead of the fused gradient penalty in a training step.

    python benchmarks/penalty.py [--quick]

For an MLP 784-256-256-10 and a small CNN (two conv-BN-ReLU-pool blocks) at batch
256, one SGD step (forward, cross-entropy, backward, step) is timed four ways,
alternating in one loop so all see the same machine load:

* none:     no penalty;
* penalty:  `Penalty(params, l1, l2).apply_()` between backward() and step();
* penalty_l2: the same with L2 only (no sign computation);
* autograd: l1 * l1_penalty(params) + l2 * l2_penalty(params) added to the loss
            (the tutorial way).

Each repeat times one step of every variant, in rotating order; the figure is
the median step time over repeats (300, or 20 with --quick).
Target: penalty / none <= 1.05. Prints a table, then one JSON line.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from regulab import Penalty, l1_penalty, l2_penalty

L1, L2 = 1e-5, 5e-4
BATCH = 256


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip


def make_step(model: nn.Module, variant: str, x: torch.Tensor, y: torch.Tensor):
    """A function doing one training step of `model` with the given penalty variant."""
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    penalty = Penalty(params, l1=0.0 if variant == "penalty_l2" else L1, l2=L2)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if variant == "autograd":
            loss = loss + L1 * l1_penalty(params) + L2 * l2_penalty(params)
        loss.backward()
        if variant.startswith("penalty"):
            penalty.apply_()
        opt.step()

    return step


VARIANTS = ("none", "penalty", "penalty_l2", "autograd")


def time_model(build, repeats: int) -> dict[str, float]:
    """Median seconds per step of each variant; single steps interleaved, order rotating."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 1, 28, 28, generator=g)
    y = torch.randint(10, (BATCH,), generator=g)
    runs = {}
    for variant in VARIANTS:
        torch.manual_seed(0)
        runs[variant] = make_step(build(), variant, x, y)
    times = {v: [] for v in VARIANTS}
    for r in range(repeats + 3):  # the first 3 rounds warm up and are dropped
        k = r % len(VARIANTS)
        for variant in VARIANTS[k:] + VARIANTS[:k]:  # no variant always goes first
            start = time.perf_counter()
            runs[variant]()
            if r >= 3:
                times[variant].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    quick = parser.parse_args().quick
    repeats = 20 if quick else 300

    figures = {"benchmark": "penalty", "quick": quick, "threads": torch.get_num_threads(),
               "repeats": repeats, "batch": BATCH, "l1": L1, "l2": L2}  # fmt: skip
    rows = []
    for name, build in (("mlp_784_256_256_10", mlp), ("cnn_small", cnn)):
        t = time_model(build, repeats)
        for v in VARIANTS:
            figures[f"{name}_{v}_step_s"] = t[v]
        figures[f"{name}_penalty_over_none"] = t["penalty"] / t["none"]
        figures[f"{name}_penalty_l2_over_none"] = t["penalty_l2"] / t["none"]
        figures[f"{name}_autograd_over_none"] = t["autograd"] / t["none"]
        rows.append((name, t))

    print(f"{'model':<20} {'none ms':>9} {'penalty ms':>11} {'autograd ms':>12} "
          f"{'penalty/none':>13} {'l2 only/none':>13} {'autograd/none':>14}")  # fmt: skip
    for name, t in rows:
        print(
            f"{name:<20} {t['none'] * 1e3:9.2f} {t['penalty'] * 1e3:11.2f} "
            f"{t['autograd'] * 1e3:12.2f} {t['penalty'] / t['none']:13.3f} "
            f"{t['penalty_l2'] / t['none']:13.3f} {t['autograd'] / t['none']:14.3f}"
        )
    print("target: penalty/none <= 1.05")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

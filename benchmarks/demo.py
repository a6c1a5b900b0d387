"""Speed of the weight-decay demo: per-model training time and the whole command.

    python benchmarks/demo.py [--quick]

1. One model (20 examples, 200 inputs, 100 epochs, batch 5) trained by the
   scratch and the concise implementation, alternating in one loop so both see
   the same machine load; median over repeats and their ratio.
2. `regulab demo` end to end in a fresh process (imports, 2 lambdas x 5 seeds,
   report and figure), median wall time, against the 15 s target; the time of
   `import regulab` (lazy: it imports no torch) and of `import regulab; regulab.fit`
   against `import torch`; and `regulab --help` / `regulab train --help`, which
   must not import torch (target: under 0.3 s on an idle machine).

Prints a table, then one JSON line with every figure.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from regulab.demos import weight_decay as demo
from regulab.linear_regression import TRAINERS


def time_models(repeats: int) -> dict[str, float]:
    """Median seconds to train one demo model, per implementation (interleaved)."""
    cfg = demo.DemoConfig()
    train, test, w0 = demo.problem(0, cfg)
    times = {name: [] for name in TRAINERS}
    for r in range(repeats + 1):  # the first round warms up and is dropped
        for name, trainer in TRAINERS.items():
            start = time.perf_counter()
            trainer(train, test, 3.0, w0=w0, seed=0)
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def time_commands(commands: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """Median wall seconds of each command in a fresh process, run alternately."""
    times = {name: [] for name in commands}
    for _ in range(repeats):
        for name, args in commands.items():
            start = time.perf_counter()
            subprocess.run(args, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    quick = parser.parse_args().quick
    model_repeats, command_repeats = (3, 1) if quick else (15, 9)

    per_model = time_models(model_repeats)
    script = Path(sys.executable).with_name("regulab")
    with tempfile.TemporaryDirectory() as tmp:
        seconds = time_commands(
            {
                "demo": [str(script), "demo", "--out", f"{tmp}/run", "--overwrite"],
                "regulab": [sys.executable, "-c", "import regulab"],
                "regulab_fit": [sys.executable, "-c", "import regulab; regulab.fit"],
                "torch": [sys.executable, "-c", "import torch"],
                "help": [str(script), "--help"],
                "train_help": [str(script), "train", "--help"],
            },
            command_repeats,
        )
    demo_s, import_s, torch_s = seconds["demo"], seconds["regulab"], seconds["torch"]
    fit_s, help_s, train_help_s = seconds["regulab_fit"], seconds["help"], seconds["train_help"]

    figures = {
        "benchmark": "demo",
        "quick": quick,
        "threads": torch.get_num_threads(),
        "model_repeats": model_repeats,
        "command_repeats": command_repeats,
        "scratch_model_s": per_model["scratch"],
        "concise_model_s": per_model["concise"],
        "concise_over_scratch": per_model["concise"] / per_model["scratch"],
        "demo_command_s": demo_s,
        "demo_target_s": 15.0,
        "demo_over_target": demo_s / 15.0,
        "import_regulab_s": import_s,
        "import_torch_s": torch_s,
        "import_regulab_over_torch": import_s / torch_s,
        "import_regulab_fit_s": fit_s,
        "help_s": help_s,
        "train_help_s": train_help_s,
        "help_target_s": 0.3,
        "help_over_torch": help_s / torch_s,
    }
    print(f"{'figure':<40}{'value':>12}")
    print(f"{'one model, scratch (median s)':<40}{per_model['scratch']:>12.4f}")
    print(f"{'one model, concise (median s)':<40}{per_model['concise']:>12.4f}")
    print(f"{'concise / scratch':<40}{figures['concise_over_scratch']:>12.2f}")
    print(f"{'regulab demo end to end (median s)':<40}{demo_s:>12.2f}")
    print(f"{'  as a fraction of the 15 s target':<40}{figures['demo_over_target']:>12.2f}")
    print(f"{'import regulab (median s)':<40}{import_s:>12.2f}")
    print(f"{'import torch (median s)':<40}{torch_s:>12.2f}")
    print(f"{'import regulab / import torch':<40}{figures['import_regulab_over_torch']:>12.2f}")
    print(f"{'import regulab; regulab.fit (median s)':<40}{fit_s:>12.2f}")
    print(f"{'regulab --help (median s)':<40}{help_s:>12.2f}")
    print(f"{'regulab train --help (median s)':<40}{train_help_s:>12.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""Your own model and data: what the torch-native paths cost, side by side in one process.

The model is examples/own_model/model.py's CNN (BatchNorm, nn.Dropout) on scikit-learn's
digits (8x8 images, 1,437 training examples), one thread, median over repeats, the
variants run in turn within each repeat:
  loader     one epoch of `fit` from a torch DataLoader (a Dataset of dict items and a
             batch_fn) against the same epoch from a TensorLoader
  precision  one epoch with precision="bf16" (torch.autocast on CPU) against fp32
  accumulate batch 256 as 4 accumulated micro-batches of 64 against one batch of 256
  search     LambdaSearch(model, "dropout", 8 values) on the model's own nn.Dropout,
             the 8 copies stacked, against 8 sequential `fit` runs of deep copies

    python benchmarks/own_model.py [--quick]

The last line printed is one JSON object with the figures and ratios.
"""

import argparse
import copy
import importlib.util
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from regulab import TensorLoader, digits, fit, param_groups
from regulab.recipe.schema import Optim, Train
from regulab.sweep import LambdaSearch, Settings

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model" / "model.py"


def make_model():
    spec = importlib.util.spec_from_file_location("own_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make(width=16)


class Items(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, the functions run in turn within each repeat."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def epoch(model_proto, train, epochs=1, **kwargs):
    def run():
        model = copy.deepcopy(model_proto)
        opt = torch.optim.SGD(param_groups(model, 1e-4), lr=0.05, momentum=0.9)
        fit(model, opt, train, epochs=epochs, eval_train=0, **kwargs)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and epochs")
    args = parser.parse_args()
    repeats, epochs = (3, 1) if args.quick else (7, 3)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = digits()
    x = x.unsqueeze(1)[:1437]
    y = y[:1437]
    proto = make_model()
    tensors = TensorLoader(x, y, batch_size=64, seed=0)
    items = DataLoader(Items(x, y), batch_size=64, shuffle=True)
    by_key = lambda b: (b["image"], b["label"])  # noqa: E731
    t = interleaved(
        {
            "tensor_loader": epoch(proto, tensors, epochs),
            "data_loader": epoch(proto, items, epochs, batch_fn=by_key),
            "bf16": epoch(proto, tensors, epochs, precision="bf16"),
            "batch_256": epoch(proto, TensorLoader(x, y, batch_size=256, seed=0), epochs),
            "accumulate_4x64": epoch(proto, tensors, epochs, accumulate=4),
        },
        repeats,
    )
    grid = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    train = Train(epochs=epochs, batch_size=64)
    settings = Settings(optim=Optim(lr=0.05, momentum=0.9), train=train)
    n_val = 288

    def stacked():
        data, val = (x[n_val:], y[n_val:]), (x[:n_val], y[:n_val])
        LambdaSearch(proto, "dropout", grid, data=data, val=val, settings=settings).fit()

    def sequential():
        for p in grid:
            model = copy.deepcopy(proto)
            model[8].p = p  # the model's own nn.Dropout
            opt = torch.optim.SGD(param_groups(model, 0.0), lr=0.05, momentum=0.9)
            train = TensorLoader(x[n_val:], y[n_val:], batch_size=64, seed=0)
            fit(model, opt, train, epochs=epochs, val=(x[:n_val], y[:n_val]), eval_train=0)

    s = interleaved({"search_stacked": stacked, "search_sequential": sequential}, repeats)
    figures = {
        "seconds": {**t, **s},
        "data_loader_over_tensor_loader": t["data_loader"] / t["tensor_loader"],
        "bf16_over_fp32": t["bf16"] / t["tensor_loader"],
        "accumulate_4x64_over_batch_256": t["accumulate_4x64"] / t["batch_256"],
        "sequential_over_stacked_search": s["search_sequential"] / s["search_stacked"],
        "repeats": repeats,
        "epochs": epochs,
    }
    for key, value in figures.items():
        if key.endswith(("_over_tensor_loader", "_over_fp32", "_over_batch_256", "_search")):
            print(f"{key:40} {value:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

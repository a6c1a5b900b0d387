"""Network slimming on Fashion-MNIST (`regulab slim`), against the paper and Torch-Pruning.

Sections, all on the shipped recipe recipes/slim_vgg_fashion.toml (VGG-BN
32-64-128-256, 10 epochs, s = 1e-3 on |gamma|):
  baseline   `regulab train` of the recipe without sparsity (s = 0): the reference accuracy
  slim       `regulab slim --ratios 0.5,0.7`: sparsity training, global |gamma| pruning,
             10 fine-tuning epochs; accuracy change, parameter and FLOP reduction
  torch-pruning
             the same sparse model pruned by Torch-Pruning's BNScalePruner at the same
             requested ratio, with its defaults (per-layer ratio, BNScaleImportance with
             its mean normalizer) and with global_pruning=True; channels actually removed,
             accuracy after the same fine-tuning
  latency    every network timed side by side in one loop (interleaved, median of the
             repeats' medians) at batch 1 and 256 on the CPU
The paper's VGGNet / CIFAR-10 row (arXiv:1708.06519, table 1) is printed beside.

    python benchmarks/slim.py [--quick] [--slim SLIM_RUN | --from SPARSE_RUN]
                              [--baseline BASE_RUN] [--data-dir DIR] [--out DIR]

--slim reuses a finished `regulab slim RECIPE --ratios 0.5,0.7` run; --from a
finished sparse `regulab train` run of the recipe; --baseline one trained with
`--set slim.sparsity=0`; each instead of training again. --quick runs a
tiny VGG on scikit-learn digits in about a minute. The last line printed is one
JSON object with the figures and ratios.
"""

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from regulab import cli
from regulab import recipe as recipes
from regulab.recipe import build
from regulab.slim import export, measure, pipeline
from regulab.slim.run import trained
from regulab.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "slim_vgg_fashion.toml"
RATIOS = (0.5, 0.7)
PAPER = {  # arXiv:1708.06519, table 1: VGGNet on CIFAR-10, 70 % of channels pruned
    "baseline_error": 6.34,
    "pruned_error": 6.20,
    "params_reduction": 0.885,  # 20.04 M -> 2.30 M
    "flops_reduction": 0.510,  # 7.97e8 -> 3.91e8
}
QUICK = """
name = "slim_quick"
[data]
name = "digits"
[model]
name = "vgg_bn"
cfg = [16, "M", 32, "M"]
[optim]
lr = 0.1
momentum = 0.9
[schedule]
name = "cosine"
[slim]
sparsity = 1e-3
finetune_epochs = 3
[train]
epochs = 6
batch_size = 64
"""


def run(argv: list[str]) -> None:
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"regulab {' '.join(argv)} failed with exit code {code}")


def accuracy(model, pair) -> float:
    return evaluate(model, pair, "cross_entropy", 1024)[1]


def torch_pruning(model, ratio: float, example, global_pruning: bool):
    """BNScalePruner with its defaults at `ratio` (the classifier's outputs are kept)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    last = [m for m in pruned.modules() if isinstance(m, torch.nn.Linear)][-1]
    pruner = tp.pruner.BNScalePruner(
        pruned,
        example,
        importance=tp.importance.BNScaleImportance(),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        ignored_layers=[last],
    )
    pruner.step()
    return pruned


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny VGG on digits")
    parser.add_argument(
        "--slim",
        type=Path,
        action="append",
        help="finished `regulab slim` run of the recipe (repeatable: e.g. with and without "
        "slim.max_layer_ratio); Torch-Pruning prunes the first one's sparse model",
    )
    parser.add_argument("--from", dest="source", type=Path, help="finished sparse training run")
    parser.add_argument("--baseline", type=Path, help="finished run of the recipe with s = 0")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a temp folder)")
    args = parser.parse_args()
    torch.manual_seed(0)
    out = args.out or Path(tempfile.mkdtemp(prefix="slim-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    recipe_path = RECIPE
    if args.quick:
        recipe_path = out / "slim_quick.toml"
        recipe_path.write_text(QUICK)
    data_dir = ["--data-dir", str(args.data_dir)] if args.data_dir.exists() else []
    ratios = ",".join(f"{r:g}" for r in RATIOS)
    started = time.perf_counter()

    # baseline: the recipe without sparsity
    base = args.baseline
    if base is None:
        base = out / "baseline"
        run(["train", str(recipe_path), "--set", "slim.sparsity=0", "--out", str(base),
             "--overwrite", *data_dir])  # fmt: skip
    base_summary = json.loads((base / "summary.json").read_text())
    base_acc = base_summary["final"]["test_accuracy"]

    # regulab slim
    slim_dirs = args.slim or [out / "slim"]
    source = ["--from", str(args.source)] if args.source else []
    recipe_arg = [] if args.source and not args.quick else [str(recipe_path)]
    if args.slim is None:
        run(["slim", *recipe_arg, *source, "--ratios", ratios, "--out", str(slim_dirs[0]),
             "--overwrite", *data_dir])  # fmt: skip
    summaries = [json.loads((d / "summary.json").read_text()) for d in slim_dirs]
    caps = [
        json.loads((d / "config.json").read_text())["recipe"]["slim"]["max_layer_ratio"]
        for d in slim_dirs
    ]
    summary = summaries[0]
    stored = json.loads((slim_dirs[0] / "config.json").read_text())
    recipe = recipes.from_dict(stored["recipe"])
    seed = stored["seed"]
    splits = build.load_data(recipe, seed)
    sparse_run = Path(summary["from"]) if summary["from"] else slim_dirs[0] / "sparse"
    sparse = trained(recipe, splits, sparse_run, "cpu")
    example = splits.train[0][:1]
    total = summary["unpruned"]["channels"]  # prunable channels, a coupled one counted once

    def name(r, cap):
        return f"regulab {r:g}" + (f" cap {cap:g}" if len(slim_dirs) > 1 else "")

    # Torch-Pruning's BNScalePruner on the same sparse model, the same fine-tuning
    tp_rows = []
    nets = {"unpruned": sparse}
    for r in RATIOS:
        for d, cap in zip(slim_dirs, caps, strict=True):
            nets[name(r, cap)] = export.load(d / f"ratio-{r:g}" / "pass-1")
        for mode, global_pruning in (("default", False), ("global", True)):
            pruned = torch_pruning(sparse, r, example, global_pruning)
            kept = sum(pipeline.widths(pruned).values())
            before = accuracy(pruned, splits.test)
            history = pipeline.finetune(pruned, recipe, splits, seed, sparsity=0.0)
            pruned.eval()
            tp_rows.append(
                {
                    "ratio": r,
                    "mode": mode,
                    "channels_requested": round(r * total),
                    "channels_removed": total - kept,
                    "accuracy_before_finetune": before,
                    "accuracy": accuracy(pruned, splits.test),
                    "finetune_status": history.status,
                    "params": measure.parameters(pruned),
                    "flops": measure.flops(pruned, example),
                }
            )
            nets[f"tp-{mode} {r:g}"] = pruned
    batches = (1, 256)
    lat = pipeline.latencies(nets, example, batches, repeats=10, rounds=3 if args.quick else 5)
    lat = {n: {int(b): t for b, t in per.items()} for n, per in lat.items()}

    # table
    u = summary["unpruned"]
    print(f"baseline (s = 0): test accuracy {100 * base_acc:.2f} %")
    print(f"sparse (s = {recipe.slim.sparsity:g}), unpruned: {100 * u['test_accuracy']:.2f} %")
    head = (f"{'network':<22} {'removed':>9} {'acc before FT':>13} {'acc':>7} {'vs base':>8} "
            f"{'params':>9} {'-params':>8} {'MFLOPs':>7} {'-FLOPs':>7} {'b1 ms':>7} "
            f"{'b256 ms':>8} {'x b256':>7}")  # fmt: skip
    print(head)
    rows = []

    def line(label, removed, before, acc, params, flops):
        row = {
            "network": label,
            "channels_removed": removed,
            "accuracy_before_finetune": before,
            "accuracy": acc,
            "change_vs_baseline": acc - base_acc,
            "params": params,
            "params_reduction": 1 - params / u["params"],
            "flops": flops,
            "flops_reduction": 1 - flops / u["flops"],
            "latency_s": {str(b): lat[label][b] for b in batches},
            "speedup_b256": lat["unpruned"][256] / lat[label][256],
            "speedup_b1": lat["unpruned"][1] / lat[label][1],
        }
        rows.append(row)
        print(f"{label:<22} {removed:>9} {100 * before:>12.2f}% {100 * acc:>6.2f}% "
              f"{100 * row['change_vs_baseline']:>+8.2f} {params:>9,} "
              f"{100 * row['params_reduction']:>7.1f}% {flops / 1e6:>7.2f} "
              f"{100 * row['flops_reduction']:>6.1f}% {1e3 * lat[label][1]:>7.3f} "
              f"{1e3 * lat[label][256]:>8.2f} {row['speedup_b256']:>6.2f}x")  # fmt: skip

    line("unpruned", f"0/{total}", u["test_accuracy"], u["test_accuracy"], u["params"], u["flops"])
    for r in RATIOS:
        for one, cap in zip(summaries, caps, strict=True):
            res = next(x for x in one["results"] if x["ratio"] == r and x["pass"] == 1)
            line(name(r, cap), f"{res['channels_removed']}/{total}",
                 res["before_finetune"]["test_accuracy"], res["after_finetune"]["test_accuracy"],
                 res["params"], res["flops"])  # fmt: skip
        for t in (t for t in tp_rows if t["ratio"] == r):
            line(f"tp-{t['mode']} {t['ratio']:g}", f"{t['channels_removed']}/{total}",
                 t["accuracy_before_finetune"], t["accuracy"], t["params"], t["flops"])  # fmt: skip
    p = PAPER
    print(
        f"paper, VGGNet CIFAR-10 70 %: error {p['baseline_error']} -> {p['pruned_error']} %, "
        f"params -{100 * p['params_reduction']:.1f} %, FLOPs -{100 * p['flops_reduction']:.1f} %"
    )
    print(f"({time.perf_counter() - started:.0f} s; runs in {out})")
    result = {
        "quick": args.quick,
        "recipe": recipe.name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "baseline_accuracy": base_acc,
        "sparse_accuracy": u["test_accuracy"],
        "rows": rows,
        "torch_pruning": tp_rows,
        "paper": PAPER,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

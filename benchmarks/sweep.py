"""Vectorized lambda sweeps (`regulab.sweep`) against K sequential runs, side by side.

Each section times, in one process and interleaved, median over repeats:
  linear    the weight-decay demo (20 x 200 linear regression, 100 epochs, batch 5):
            K = 33 and K = 512 strengths as one (K, d) weight tensor, against K
            sequential runs of the same code (the engine with one strength) and
            against K runs of `regulab.fit`
  digits    MLP 64-64-64-10 on scikit-learn digits, K = 32 L2 strengths, 5 epochs:
            vmap engine against K sequential runs of the same code, and of `fit`
  fashion   MLP 784-256-256-10 on Fashion-MNIST, K = 16 weight decays, one epoch,
            batch 256: vmap engine against sequential, and against the matmul-bound
            limit (the same matrix products, for all K models, timed alone)
  ray       `LambdaSearch` on the linear sweep with engine="ray" (2 chunks, start-up
            of the local Ray instance included) against engine="local"
  ridge     the closed-form ridge path (one SVD per fold) against scikit-learn
            RidgeCV on the same grid: 5-fold selection, same folds, same lambda?

    python benchmarks/sweep.py [--quick] [--skip ray,fashion]

The last line printed is one JSON object with the figures and ratios.
"""

import argparse
import copy
import itertools
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from regulab import TensorLoader, digits, fit, models, synthetic_linear
from regulab import recipe as recipes
from regulab.groups import param_groups
from regulab.recipe.schema import Optim, Train
from regulab.sweep.engine import Settings, fit_sweep

GRID33 = [0.0, *np.logspace(-3, 2, 32).tolist()]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each function, the functions run in turn within each repeat."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


# ---------------------------------------------------------------- linear


def linear_problem():
    x, y = synthetic_linear(20, 200, seed=0)
    torch.manual_seed(0)
    model = models.linear(200)
    with torch.no_grad():
        model[1].weight.normal_()
        model[1].bias.zero_()
    return x, y, model


def linear_section(k: int, repeats: int, fit_runs: int) -> dict:
    x, y, model = linear_problem()
    grid = GRID33 if k == 33 else [0.0, *np.logspace(-3, 2, k - 1).tolist()]
    s = Settings(optim=Optim(lr=0.003), train=Train(epochs=100, loss="half_mse", seed=0))

    def loader():
        return TensorLoader(x, y, batch_size=5, seed=0)

    def vectorized():
        fit_sweep(model, "l2", grid, loader(), s)

    def sequential():
        for lam in grid:
            fit_sweep(model, "l2", [lam], loader(), s)

    def generic():
        fit_sweep(model, "l2", grid, loader(), s, fast=False)

    def fit_runs_():  # a sample of fit runs, scaled to K below
        for lam in grid[:fit_runs]:
            m = copy.deepcopy(model)
            opt = torch.optim.SGD(param_groups(m, lam), lr=0.003)
            fit(m, opt, loader(), epochs=100, loss="half_mse", eval_train=0)

    def vectorized_10():  # ~20 ms each: ten in a row, so that one scheduler hiccup is a tenth
        for _ in range(10):
            vectorized()

    vectorized()  # warm-up
    t = interleaved({"vectorized": vectorized_10, "sequential": sequential}, repeats)
    t["vectorized"] /= 10
    t["vmap_generic"] = median_time(generic, max(1, repeats // 2))
    t["fit"] = median_time(fit_runs_, 1) * len(grid) / fit_runs
    # the same result: strength k of the vectorized run against a sequential one
    st = fit_sweep(model, "l2", grid, loader(), s)
    k_mid = len(grid) // 2
    one = fit_sweep(model, "l2", [grid[k_mid]], loader(), s)
    diff = max(
        (a[k_mid] - b[0]).abs().max().item()
        for a, b in zip(st.params.values(), one.params.values(), strict=True)
    )
    return {
        "k": len(grid),
        "seconds": t,
        "speedup_vs_sequential": t["sequential"] / t["vectorized"],
        "speedup_vs_fit": t["fit"] / t["vectorized"],
        "speedup_generic_vmap_vs_sequential": t["sequential"] / t["vmap_generic"],
        "max_abs_diff": diff,
    }


# ---------------------------------------------------------------- digits


def digits_section(k: int, epochs: int, repeats: int, fit_runs: int) -> dict:
    x, y = digits()
    x = x.unsqueeze(1)
    torch.manual_seed(0)
    model = models.mlp([64, 64, 64, 10])
    grid = [0.0, *np.logspace(-5, -1, k - 1).tolist()]
    s = Settings(optim=Optim(lr=0.1, momentum=0.9), train=Train(epochs=epochs, seed=0))

    def loader():
        return TensorLoader(x, y, batch_size=64, seed=0)

    def vectorized():
        fit_sweep(model, "l2", grid, loader(), s)

    def sequential():
        for lam in grid:
            fit_sweep(model, "l2", [lam], loader(), s)

    def fit_runs_():
        for lam in grid[:fit_runs]:
            m = copy.deepcopy(model)
            opt = torch.optim.SGD(param_groups(m, lam), lr=0.1, momentum=0.9)
            fit(m, opt, loader(), epochs=epochs, eval_train=0)

    vectorized()
    t = interleaved({"vectorized": vectorized, "sequential": sequential}, repeats)
    t["fit"] = median_time(fit_runs_, 1) * len(grid) / fit_runs
    return {
        "k": len(grid),
        "epochs": epochs,
        "seconds": t,
        "speedup_vs_sequential": t["sequential"] / t["vectorized"],
        "speedup_vs_fit": t["fit"] / t["vectorized"],
    }


# ---------------------------------------------------------------- fashion


def fashion_root():
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if os.environ.get("REGULAB_DATA_DIR") or not shared.is_dir():
        return None
    return str(shared)


def fashion_section(k: int, steps: int, repeats: int) -> dict:
    from regulab.data import fashion_mnist

    (x, y), _ = fashion_mnist(fashion_root())
    n = steps * 256
    x, y = (x[:n].float() / 255).unsqueeze(1), y[:n]
    torch.manual_seed(0)
    sizes = (784, 256, 256, 10)
    model = models.mlp(sizes)
    grid = [0.0, *np.logspace(-5, -2, k - 1).tolist()]
    s = Settings(
        optim=Optim(name="sgd", lr=0.1), train=Train(epochs=1, loss="cross_entropy", seed=0)
    )

    def loader():
        return TensorLoader(x, y, batch_size=256, seed=0)

    def vectorized():
        fit_sweep(model, "weight_decay", grid, loader(), s)

    def sequential():
        for lam in grid:
            fit_sweep(model, "weight_decay", [lam], loader(), s)

    # the matmul-bound limit: per step, for each layer, the forward product and the
    # backward products (input gradient except at the first layer, weight gradient),
    # with K models stacked as the engine holds them
    xs = x.flatten(1)[:256]
    ws = [torch.randn(k, o, i) for i, o in itertools.pairwise(sizes)]
    acts = [torch.randn(k, 256, o) for o in sizes[1:]]

    def limit():
        for _ in range(steps):
            h = xs
            for layer, w in enumerate(ws):  # forward: first layer shares x across models
                h = (
                    (h @ w.flatten(0, 1).T).view(256, k, -1).transpose(0, 1)
                    if layer == 0
                    else torch.bmm(h, w.transpose(1, 2))
                )
            for layer in range(len(ws) - 1, -1, -1):  # backward
                g = acts[layer]
                if layer:
                    torch.bmm(g, ws[layer])
                    torch.bmm(g.transpose(1, 2), acts[layer - 1])
                else:
                    g.transpose(1, 2).flatten(0, 1) @ xs

    vectorized()
    t = interleaved({"vectorized": vectorized, "sequential": sequential, "limit": limit}, repeats)
    return {
        "k": k,
        "steps": steps,
        "seconds": t,
        "speedup_vs_sequential": t["sequential"] / t["vectorized"],
        "fraction_of_limit": t["limit"] / t["vectorized"],
    }


# ---------------------------------------------------------------- ray


def ray_section(chunks: int) -> dict:
    from regulab.sweep.search import LambdaSearch

    recipe = recipes.expand(
        recipes.load(Path(__file__).parents[1] / "recipes" / "weight_decay_linear.toml")
    )["lambda_0"]
    recipe.data.val_fraction = 0.0
    grid = "0,logspace(-3,2,32)"
    start = time.perf_counter()
    local = LambdaSearch(recipe, "weight_decay", grid, folds=5).fit()
    t_local = time.perf_counter() - start
    start = time.perf_counter()
    remote = LambdaSearch(recipe, "weight_decay", grid, folds=5, engine="ray", chunks=chunks).fit()
    t_ray = time.perf_counter() - start
    diff = max(
        abs(a["val_loss"] - b["val_loss"]) for a, b in zip(local.path_, remote.path_, strict=True)
    )
    return {
        "chunks": chunks,
        "seconds": {"local": t_local, "ray": t_ray},
        "ray_over_local": t_ray / t_local,
        "same_choice": local.best_lambda_ == remote.best_lambda_,
        "best_lambda": local.best_lambda_,
        "max_val_loss_diff": diff,
        "engine_info": {k: v for k, v in remote.engine_info_.items() if k.startswith("seconds")},
    }


# ---------------------------------------------------------------- ridge


def ridge_section(repeats: int) -> dict:
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold

    from regulab.ridge_regression import ridge_path

    x, y = synthetic_linear(20, 200, seed=0, dtype=torch.float64)
    n = len(y)
    lams = np.logspace(-3, 2, 32)
    folds = list(KFold(5, shuffle=True, random_state=0).split(x.numpy()))

    def ours():
        scores = torch.zeros(len(lams), dtype=torch.float64)
        for tr, va in folds:
            w, b = ridge_path(x[tr], y[tr], lams.tolist())
            pred = x[va] @ w.T + b
            scores += ((pred - y[va, None]) ** 2).mean(0) * len(va)
        return int(scores.argmin())

    def sklearn():
        alphas = lams * (
            n * 4 / 5
        )  # each training fold has 4/5 of the examples: alpha = n_fold * lam
        cv = RidgeCV(alphas=alphas, cv=folds, scoring="neg_mean_squared_error").fit(
            x.numpy(), y.numpy()
        )
        return int(np.flatnonzero(np.isclose(alphas, cv.alpha_))[0])

    t = interleaved({"closed_form": ours, "ridgecv": sklearn}, repeats)
    # one fit: the path at every lambda against Ridge coefficients
    w, _ = ridge_path(x, y, lams.tolist())
    from sklearn.linear_model import Ridge

    worst = max(
        float(
            np.abs(
                w[i].numpy() - Ridge(alpha=n * lam, solver="svd").fit(x.numpy(), y.numpy()).coef_
            ).max()
            / np.abs(w[i].numpy()).max()
        )
        for i, lam in enumerate(lams)
    )
    return {
        "k": len(lams),
        "seconds": t,
        "ridgecv_over_closed_form": t["ridgecv"] / t["closed_form"],
        "same_choice": ours() == sklearn(),
        "chosen_lambda": float(lams[ours()]),
        "max_rel_coef_diff_vs_ridge": worst,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    quick = args.quick
    torch.set_num_threads(os.cpu_count() or 1)
    out = {"quick": quick, "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"{'section':<16}{'K':>5}  {'vectorized s':>12}  {'sequential s':>12}  ratios")
    if "linear" not in skip:
        for k in (33, 512):
            r = linear_section(k, repeats=3 if quick else 7, fit_runs=4 if quick else 11)
            out[f"linear_k{k}"] = r
            print(
                f"{'linear':<16}{k:>5}  {r['seconds']['vectorized']:>12.3f}  "
                f"{r['seconds']['sequential']:>12.3f}  x{r['speedup_vs_sequential']:.1f} "
                f"(vs fit x{r['speedup_vs_fit']:.0f}, generic vmap "
                f"x{r['speedup_generic_vmap_vs_sequential']:.1f}; diff {r['max_abs_diff']:.1e})"
            )
    if "digits" not in skip:
        r = digits_section(
            32, epochs=2 if quick else 5, repeats=3 if quick else 5, fit_runs=4 if quick else 8
        )
        out["digits_k32"] = r
        print(
            f"{'digits MLP':<16}{32:>5}  {r['seconds']['vectorized']:>12.3f}  "
            f"{r['seconds']['sequential']:>12.3f}  x{r['speedup_vs_sequential']:.2f} "
            f"(vs fit x{r['speedup_vs_fit']:.2f})"
        )
    if "fashion" not in skip:
        r = fashion_section(16, steps=40 if quick else 211, repeats=3 if quick else 5)
        out["fashion_k16"] = r
        print(
            f"{'fashion MLP':<16}{16:>5}  {r['seconds']['vectorized']:>12.3f}  "
            f"{r['seconds']['sequential']:>12.3f}  x{r['speedup_vs_sequential']:.2f} "
            f"({r['fraction_of_limit']:.0%} of the matmul limit {r['seconds']['limit']:.3f} s)"
        )
    if "ray" not in skip:
        try:
            r = ray_section(2)
        except ImportError as e:
            r = {"skipped": str(e)}
            print(f"{'ray':<16}skipped: {e}")
        else:
            print(
                f"{'ray vs local':<16}{33:>5}  {r['seconds']['ray']:>12.3f}  "
                f"{r['seconds']['local']:>12.3f}  ray/local x{r['ray_over_local']:.1f}, "
                f"same λ: {r['same_choice']}"
            )
        out["ray"] = r
    if "ridge" not in skip:
        r = ridge_section(repeats=5 if quick else 21)
        out["ridge"] = r
        print(
            f"{'ridge path':<16}{32:>5}  {r['seconds']['closed_form']:>12.4f}  "
            f"{r['seconds']['ridgecv']:>12.4f}  RidgeCV/closed form "
            f"x{r['ridgecv_over_closed_form']:.1f}, same λ: {r['same_choice']}, "
            f"coef rel diff {r['max_rel_coef_diff_vs_ridge']:.1e}"
        )
    print(json.dumps(out, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))


if __name__ == "__main__":
    main()

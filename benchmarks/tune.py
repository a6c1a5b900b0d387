"""`regulab.Tuner` against Optuna, Ray Tune ASHA, random search and "one epoch, keep the top 3".

Same search space for everyone (weight_decay log(1e-5,1e-1), dropout uniform(0,0.6), lr
log(1e-3,3e-1)); one run = E epochs of SGD (momentum 0.9, coupled weight decay on the weights,
batch 64) of an MLP with dropout. Every method chooses its configuration by the final validation
accuracy; the test accuracy of that choice is reported, never used. Per seed, in one process:

  one run     `regulab.fit` of the hand-set configuration, timed: the cost unit
  regulab     Tuner(space, budget=3, eta=3, metric="val_accuracy"): its wall time T (by default
              2 finalists trained to E, the better chosen); ensemble: the 2 finalists' averaged
              probabilities; finalists1: Tuner(..., finalists=1), one trained to E
  optuna      TPESampler + HyperbandPruner(1, E, 3), a plain loop per trial reporting val
              accuracy each epoch; the choice among the trials completed by T, and the time
              until that choice's test accuracy first reaches regulab's (stopped at 10 T)
  random      random search, full runs of the plain loop; the same two figures
  one_epoch   Egele et al. 2023 (arXiv:2307.15422): N configurations trained one epoch, the
              top 3 (one_epoch1: the top 1) by val accuracy trained on to E; on regulab's
              stacked engine (the scheduler compared, not the engine), N fitted to the wall
              time T from the epoch time at K = top and 64 (calibration not timed; N >= 3 top)
  ray         Ray Tune ASHAScheduler(max_t=E, grace_period=1, reduction_factor=3), local Ray
              with 2 CPUs, reuse_actors=True, time_budget_s=10 T; the choice among trials
              completed by T after tune.Tuner.fit started (ray.init excluded, reported)
  hand-set    wd 5e-4, dropout 0.2, lr 0.05; none: wd 0, dropout 0, lr 0.05 (its train/test gap)

Data: scikit-learn digits (1000 train / 400 val / 397 test, split fixed), MLP 64-128-10;
Fashion-MNIST, the first 2,000 training images to train, the next 2,000 to validate, the
10,000 test images, MLP 784-256-10.

The honesty of the cuts (digits): per seed, the Tuner's own configurations (its plan's number,
`draw` with its seed) all trained to E in one stacked run, val accuracy read at every rung epoch
and at E; then the Tuner with promotion=True and with promotion=False. regret: the best
full-training val accuracy minus the full-training val accuracy of the Tuner's choice (by
config id); rho: Spearman's rank agreement between each rung's val accuracy and E's, over all
configurations of the full-training run (the same for both variants).

    python benchmarks/tune.py [--quick] [--seeds 3] [--skip ray,fashion,digits,honesty]

--quick: 1 seed, 9 epochs, digits and honesty only, no Ray. Optuna and random search stop once
past T with their choice at regulab's test accuracy; "reach" is that time over T ("no": not
within 10 T).
Wall times are one measurement per seed: on a shared machine they move by tens of percent.
The last line printed is one JSON object.
"""

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from regulab import TensorLoader, Tuner, digits, fit, models, param_groups
from regulab.metrics import evaluate
from regulab.recipe.schema import Optim, Train
from regulab.sweep import Settings, StackedRun
from regulab.sweep.model_path import resolve_data
from regulab.train_step import rng_fork
from regulab.tune import draw, successive_halving_keep, trials

SPACE = "weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6) lr=log(1e-3,3e-1)"
RANGES = {
    "weight_decay": ("log", 1e-5, 1e-1),
    "dropout": ("lin", 0.0, 0.6),
    "lr": ("log", 1e-3, 3e-1),
}
HAND_SET = {"weight_decay": 5e-4, "dropout": 0.2, "lr": 0.05}
NONE = {"weight_decay": 0.0, "dropout": 0.0, "lr": 0.05}
MOMENTUM, BATCH, HORIZON = 0.9, 64, 10  # HORIZON: optuna/random/ray stop at 10 T


@dataclass
class Problem:
    name: str
    train: tuple
    val: tuple
    test: tuple
    sizes: tuple
    epochs: int

    def model(self, seed: int, dropout: float = 0.3):
        torch.manual_seed(seed)  # the same initial weights for every method of a seed
        return models.mlp(list(self.sizes), dropout=dropout)

    def loader(self, seed: int) -> TensorLoader:
        return TensorLoader(*self.train, batch_size=BATCH, seed=seed)


def digits_problem(epochs: int) -> Problem:
    x, y = digits()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, va, te = order[:1000], order[1000:1400], order[1400:]
    return Problem("digits", (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]), (64, 128, 10), epochs)


def fashion_problem(epochs: int) -> Problem:
    from regulab import fashion_mnist

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    (x, y), (xt, yt) = fashion_mnist(str(shared) if shared.is_dir() else None, download=False)
    x, xt = x.float() / 255, xt.float() / 255
    return Problem(
        "fashion2k", (x[:2000], y[:2000]), (x[2000:4000], y[2000:4000]), (xt, yt), (784, 256, 10),
        epochs,
    )  # fmt: skip


def accuracy(model, data) -> float:
    return evaluate(model, data, "cross_entropy")[1]


# ---------------------------------------------------------------- one configuration, plain loop


def train_plain(p: Problem, params: dict, seed: int, epochs: int, report=None):
    """A user's loop: SGD with coupled weight decay on the weights (`param_groups`), dropout p;
    report(epoch, model) after each epoch may raise to stop. Returns the model."""
    torch.manual_seed(seed)
    model = p.model(seed, params["dropout"])
    opt = torch.optim.SGD(
        param_groups(model, params["weight_decay"]), lr=params["lr"], momentum=MOMENTUM
    )
    loader = p.loader(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        loader.set_epoch(epoch)
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        if report is not None:
            report(epoch, model)
    return model


def reference(p: Problem, params: dict, seed: int) -> dict:
    m = train_plain(p, params, seed, p.epochs)
    train, test = accuracy(m, p.train), accuracy(m, p.test)
    return {"val": accuracy(m, p.val), "test": test, "train": train, "gap": train - test}


def sample(rng: np.random.Generator) -> dict:
    out = {}
    for name, (scale, low, high) in RANGES.items():
        if scale == "log":
            out[name] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        else:
            out[name] = float(rng.uniform(low, high))
    return out


# ---------------------------------------------------------------- the methods


def one_run_seconds(p: Problem, seed: int) -> float:
    """Wall time of one `regulab.fit` of the hand-set configuration (the cost unit)."""
    model = p.model(seed, HAND_SET["dropout"])
    opt = torch.optim.SGD(
        param_groups(model, HAND_SET["weight_decay"]), lr=HAND_SET["lr"], momentum=MOMENTUM
    )
    start = time.perf_counter()
    fit(model, opt, p.loader(seed), epochs=p.epochs, seed=seed, eval_train=0)
    return time.perf_counter() - start


def settings(p: Problem) -> Settings:
    return Settings(optim=Optim(momentum=MOMENTUM), train=Train(epochs=p.epochs))


def regulab_tune(p: Problem, seed: int, finalists: int | None = None) -> dict:
    tuner = Tuner(
        SPACE, budget=3, eta=3, settings=settings(p), metric="val_accuracy", seed=seed,
        finalists=finalists,
    )  # fmt: skip
    model = p.model(seed)
    start = time.perf_counter()
    tuner.fit(model, p.loader(seed), p.val)
    seconds = time.perf_counter() - start
    ensemble = tuner.ensemble_model_
    return {
        "ensemble_test": accuracy(ensemble, p.test) if ensemble is not None else None,
        "test": accuracy(tuner.best_model_, p.test),
        "val": tuner.best_score_,
        "seconds": seconds,
        "configs": tuner.plan_.configs,
        "spent": tuner.spent_,
        "params": tuner.best_params_,
    }


def choice_over_time(done: list, t: float, target: float) -> dict:
    """done: (seconds, val, test, params) of completed trials in order of completion. The choice
    among those completed by t, and when the choice's test accuracy first reached target."""
    best, reach, at_t = None, None, None
    for seconds, val, test, params in sorted(done, key=lambda r: r[0]):
        if best is None or val > best[1]:
            best = (seconds, val, test, params)
        if reach is None and best[2] >= target:
            reach = seconds
        if seconds <= t:
            at_t = best
    n = sum(1 for r in done if r[0] <= t)
    return {
        "test": at_t[2] if at_t else None,
        "val": at_t[1] if at_t else None,
        "params": at_t[3] if at_t else None,
        "trials": n,
        "seconds_to_reach": reach,
    }


def optuna_search(p: Problem, seed: int, t: float, target: float) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done, pruned = [], [0]
    start = time.perf_counter()
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=p.epochs, reduction_factor=3
        ),
    )

    def objective(trial):
        params = {
            "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
            "dropout": trial.suggest_float("dropout", 0.0, 0.6),
            "lr": trial.suggest_float("lr", 1e-3, 3e-1, log=True),
        }
        val = [0.0]

        def report(epoch, model):
            val[0] = accuracy(model, p.val)
            trial.report(val[0], epoch)
            if trial.should_prune():
                pruned[0] += 1
                raise optuna.TrialPruned()

        model = train_plain(p, params, seed, p.epochs, report)
        done.append((time.perf_counter() - start, val[0], accuracy(model, p.test), params))
        if done[-1][0] > t and choice_over_time(done, t, target)["seconds_to_reach"]:
            study.stop()
        return val[0]

    study.optimize(objective, timeout=HORIZON * t)
    out = choice_over_time(done, t, target)
    return {**out, "started": len(study.trials), "pruned": pruned[0]}


def random_search(p: Problem, seed: int, t: float, target: float) -> dict:
    rng = np.random.default_rng(seed)
    done, start = [], time.perf_counter()
    while time.perf_counter() - start < HORIZON * t:
        params = sample(rng)
        model = train_plain(p, params, seed, p.epochs)
        done.append(
            (time.perf_counter() - start, accuracy(model, p.val), accuracy(model, p.test), params)
        )
        if done[-1][0] > t and choice_over_time(done, t, target)["seconds_to_reach"]:
            break
    return choice_over_time(done, t, target)


def epoch_seconds(p: Problem, seed: int, k: int, repeats: int = 3) -> float:
    """Median seconds of one stacked epoch of k copies (after a warm-up epoch)."""
    hp = {name: v.double() for name, v in draw(SPACE, k, seed).items()}
    run = StackedRun(p.model(seed), hp, p.loader(seed), settings(p), what="space")
    run.train_epochs(1)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run.train_epochs(1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_epoch_top(p: Problem, seed: int, t: float, top: int) -> dict:
    """Egele et al. 2023: n configurations one epoch, the top `top` on to E, as one stacked
    run; n such that the calibrated time (epoch time linear in K) is t, at least 3 * top."""
    small, big = epoch_seconds(p, seed, top), epoch_seconds(p, seed, 64)
    slope = max((big - small) / (64 - top), 1e-9)
    n = int(min(512, max(3 * top, top + (t - p.epochs * small) // slope)))
    hp = {name: v.double() for name, v in draw(SPACE, n, seed).items()}
    start = time.perf_counter()
    run = StackedRun(p.model(seed), hp, p.loader(seed), settings(p), what="space")
    run.train_epochs(1)
    score = run.evaluate(p.val)["accuracy"]
    run.keep(successive_halving_keep(score, top, "max").kept)
    run.train_epochs(p.epochs - 1)
    score = run.evaluate(p.val)["accuracy"]
    best = int(successive_halving_keep(score, 1, "max").kept[0])
    seconds = time.perf_counter() - start
    return {
        "test": accuracy(run.model(best), p.test),
        "val": float(score[best]),
        "seconds": seconds,
        "configs": n,
        "params": {name: float(v[best]) for name, v in run.hparams.items()},
    }


def ray_trainable(config, problem=None, seed=0):
    from ray import tune

    torch.set_num_threads(1)

    def report(epoch, model):
        metrics = {"val_accuracy": accuracy(model, problem.val), "epoch": epoch}
        if epoch == problem.epochs:
            metrics |= {"test_accuracy": accuracy(model, problem.test), "done_at": time.time()}
        tune.report(metrics)

    train_plain(problem, dict(config), seed, problem.epochs, report)


def ray_asha(p: Problem, seed: int, t: float, target: float) -> dict:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    space = {
        "weight_decay": tune.loguniform(1e-5, 1e-1),
        "dropout": tune.uniform(0.0, 0.6),
        "lr": tune.loguniform(1e-3, 3e-1),
    }
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_parameters(ray_trainable, problem=p, seed=seed),
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="val_accuracy",
                mode="max",
                search_alg=BasicVariantGenerator(random_state=seed),
                scheduler=ASHAScheduler(max_t=p.epochs, grace_period=1, reduction_factor=3),
                num_samples=-1,
                time_budget_s=HORIZON * t,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        start_wall, start = time.time(), time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # Ray's banner, not the table
            results = tuner.fit()
        seconds = time.perf_counter() - start
    done = [
        (r.metrics["done_at"] - start_wall, r.metrics["val_accuracy"], r.metrics["test_accuracy"],
         {k: r.config[k] for k in RANGES})
        for r in results
        if r.metrics and r.metrics.get("epoch") == p.epochs
    ]  # fmt: skip
    reported = sum(1 for r in results if r.metrics)
    return {**choice_over_time(done, t, target), "started": reported, "seconds": seconds}


# ---------------------------------------------------------------- the honesty of the cuts


def full_training(p: Problem, seed: int) -> dict:
    """The Tuner's configurations (its plan's count, `draw` with its seed, its data and
    settings) all trained to E in one stacked run: val accuracy at every rung epoch and E."""
    tuner = Tuner(SPACE, budget=3, eta=3, settings=settings(p), metric="val_accuracy", seed=seed)
    model = p.model(seed)
    space, s, plan = tuner.resolved(model)
    epochs = sorted({r.epoch for r in plan.rungs} | {plan.epochs})
    with rng_fork(torch.device("cpu")):  # as Tuner.fit: the caller's random state untouched
        data = resolve_data(p.loader(seed), p.val, 0.0, None, s, seed, 0, "cpu")
        s = dataclasses.replace(s, batch_fn=None)
        hp = {name: v.double() for name, v in draw(space, plan.configs, seed).items()}
        run = StackedRun(copy.deepcopy(model), hp, data.train, s, what="space")
        acc = {}
        for epoch in epochs:
            run.train_epochs(epoch - run.epoch)
            acc[epoch] = trials.score(run, data.val, "val_accuracy")[0].double().numpy()
        test = run.evaluate(p.test)["accuracy"].double().numpy()
    return {"configs": plan.configs, "rungs": [r.epoch for r in plan.rungs], "acc": acc,
            "test": test, "hparams": {name: v.tolist() for name, v in hp.items()}}  # fmt: skip


def honesty(p: Problem, seed: int) -> dict:
    """Regret of successive halving's choice against full training, with and without the
    regularization-aware promotion, and the rung-vs-end rank agreement of full training."""
    full = full_training(p, seed)
    end = full["acc"][p.epochs]
    out = {
        "configs": full["configs"],
        "rungs": full["rungs"],
        "best_full": float(np.nanmax(end)),
        # the test accuracy of the best configuration by full-training val accuracy: what
        # any chooser of these configurations by validation can reach at best
        "oracle_test": float(full["test"][int(np.nanargmax(end))]),
        "hand_set_test": reference(p, HAND_SET, seed)["test"],
        "rho": {
            e: float(spearmanr(a, end, nan_policy="omit").statistic)
            for e, a in full["acc"].items()
            if e != p.epochs
        },
    }
    for promotion in (True, False):
        t = Tuner(
            SPACE, budget=3, eta=3, settings=settings(p), metric="val_accuracy", seed=seed,
            promotion=promotion,
        )  # fmt: skip
        t.fit(p.model(seed), p.loader(seed), p.val)
        c = t.best_index_
        assert all(
            math.isclose(t.best_params_[n], full["hparams"][n][c], rel_tol=1e-9)
            for n in t.best_params_
        ), "the Tuner drew other configurations than the full-training run"
        out["promotion" if promotion else "no_promotion"] = {
            "config": c,
            "regret": out["best_full"] - float(end[c]),
            "test": float(full["test"][c]),
            "rank_full": 1 + int(np.sum(end > end[c])),  # 1: (tied with) the best
            "tuner_val": t.best_score_,
            "full_val": float(end[c]),
            "promoted": {  # rung -> the configurations it sent on
                r: [
                    row["config"]
                    for row in t.trials_
                    if row["rung"] == r and row["status"] == "alive"
                ]
                for r in range(1, len(full["rungs"]))
            },
        }
    return out


def summarize_honesty(rows: list, epochs: int) -> dict:
    out = {"epochs": epochs, "configs": rows[0]["configs"], "rungs": rows[0]["rungs"]}
    out["rho"] = {e: mean_std(r["rho"][e] for r in rows)[:2] for e in rows[0]["rho"]}
    out["oracle_test"] = mean_std(r["oracle_test"] for r in rows)[:2]
    out["hand_set_test"] = mean_std(r["hand_set_test"] for r in rows)[:2]
    for v in ("promotion", "no_promotion"):
        out[v] = {
            "test": mean_std(r[v]["test"] for r in rows)[:2],
            "regret": mean_std(r[v]["regret"] for r in rows)[:2],
            "regret_per_seed": [r[v]["regret"] for r in rows],
            "rank_full_per_seed": [r[v]["rank_full"] for r in rows],
        }
    return out


def print_honesty(name: str, s: dict) -> None:
    rungs = ", ".join(map(str, s["rungs"]))
    print(f"\nhonesty ({name}): E = {s['epochs']}, {s['configs']} configurations, rungs at {rungs}")
    print(f"{'variant':<14}{'regret (val acc)':>18}  {'per seed':<24}  rank of choice in full")
    for v in ("promotion", "no_promotion"):
        e = s[v]
        m, sd = e["regret"]
        per = ",".join(f"{r:.4f}" for r in e["regret_per_seed"])
        ranks = ",".join(map(str, e["rank_full_per_seed"]))
        print(f"{v:<14}{m:>10.4f} ± {sd:.4f}  {per:<24}  {ranks}")
    rho = ", ".join(f"epoch {e}: {m:.3f} ± {sd:.3f}" for e, (m, sd) in s["rho"].items())
    print(f"Spearman rho, rung vs E (full training, all configurations): {rho}")
    test = {v: s[v]["test"] for v in ("promotion", "no_promotion")}
    test |= {"best by full-training val": s["oracle_test"], "hand-set": s["hand_set_test"]}
    print("test accuracy: " + ", ".join(f"{k} {m:.4f} ± {sd:.4f}" for k, (m, sd) in test.items()))


# ---------------------------------------------------------------- the experiment


def run_problem(p: Problem, seeds: list, skip: set) -> dict:
    rows = {
        k: []
        for k in ("one_run", "regulab", "ensemble", "finalists1", "optuna", "random",
                  "one_epoch", "one_epoch1", "ray")
    }  # fmt: skip
    rows |= {"hand_set": [], "none": []}
    one_run_seconds(p, 0), regulab_tune(p, 0)  # warm-up: first-call costs out of the figures
    for seed in seeds:
        rows["one_run"].append({"seconds": one_run_seconds(p, seed)})
        r = regulab_tune(p, seed)
        rows["regulab"].append(r)
        t, target = r["seconds"], r["test"]
        rows["ensemble"].append({**r, "test": r["ensemble_test"]})  # the 2 finalists voting
        rows["finalists1"].append(regulab_tune(p, seed, finalists=1))  # one trained to the end
        rows["optuna"].append(optuna_search(p, seed, t, target))
        rows["random"].append(random_search(p, seed, t, target))
        rows["one_epoch"].append(one_epoch_top(p, seed, t, 3))
        rows["one_epoch1"].append(one_epoch_top(p, seed, t, 1))
        if "ray" not in skip:
            rows["ray"].append(ray_asha(p, seed, t, target))
        rows["hand_set"].append(reference(p, HAND_SET, seed))
        rows["none"].append(reference(p, NONE, seed))
        print(f"  {p.name} seed {seed}: T = {t:.2f} s, regulab test {target:.4f}", flush=True)
    return {k: v for k, v in rows.items() if v}


def mean_std(values) -> tuple:
    v = [x for x in values if x is not None]
    if not v:
        return None, None, 0
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


def summarize(rows: dict, epochs: int) -> dict:
    t = [r["seconds"] for r in rows["regulab"]]
    one = [r["seconds"] for r in rows["one_run"]]
    out = {
        "epochs": epochs,
        "regulab_seconds": mean_std(t)[:2],
        "one_run_seconds": mean_std(one)[:2],
        "cost_ratio": mean_std([a / b for a, b in zip(t, one, strict=True)])[:2],
    }
    for name, rs in rows.items():
        if name == "one_run":
            continue
        m, s, n = mean_std(r["test"] for r in rs)
        entry = {"test_mean": m, "test_std": s, "seeds_with_a_choice": n}
        if "seconds_to_reach" in rs[0]:
            ratios = [
                None if r["seconds_to_reach"] is None else r["seconds_to_reach"] / tt
                for r, tt in zip(rs, t, strict=True)
            ]
            entry["reach_over_T"] = ratios
            entry["trials_by_T"] = [r["trials"] for r in rs]
        if name == "none":
            entry["gap_mean"], entry["gap_std"], _ = mean_std(r["gap"] for r in rs)
        if "seconds" in rs[0]:
            entry["seconds"] = [r["seconds"] for r in rs]
        for extra in ("configs", "started", "pruned"):
            if extra in rs[0]:
                entry[extra] = [r[extra] for r in rs]
        out[name] = entry
    return out


def print_table(name: str, s: dict) -> None:
    rt, ro = s["regulab_seconds"], s["one_run_seconds"]
    print(
        f"\n{name}: E = {s['epochs']}, T (regulab) = {rt[0]:.2f} s, one fit = {ro[0]:.2f} s, "
        f"cost ratio {s['cost_ratio'][0]:.2f}"
    )
    print(f"{'method':<11}{'test acc':>18}  {'seconds':>6}  {'configs':>9}  reach regulab (x T)")
    for k, e in s.items():
        if not isinstance(e, dict) or "test_mean" not in e:
            continue
        acc = "-" if e["test_mean"] is None else f"{e['test_mean']:.4f} ± {e['test_std']:.4f}"
        trials = ",".join(map(str, e.get("trials_by_T", e.get("configs", []))))
        secs = f"{statistics.fmean(e['seconds']):.2f}" if "seconds" in e else ""
        reach = ",".join("no" if r is None else f"{r:.1f}" for r in e.get("reach_over_T", []))
        gap = f"  train-test gap {e['gap_mean']:.4f}" if "gap_mean" in e else ""
        print(f"{k:<11}{acc:>18}  {secs:>6}  {trials:>9}  {reach}{gap}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer epochs, digits, no ray")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3, quick 1)")
    parser.add_argument("--skip", default="", help="comma-separated: ray, fashion, digits, honesty")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        skip |= {"ray", "fashion"}
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    epochs = 9 if args.quick else 20
    torch.set_num_threads(args.threads)
    out = {"quick": args.quick, "threads": args.threads, "torch": torch.__version__, "seeds": seeds}
    if "ray" not in skip:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        out["ray_init_seconds"] = time.perf_counter() - start
    problems = [("digits", digits_problem), ("fashion", fashion_problem)]
    for name, make in problems:
        if name in skip:
            continue
        p = make(epochs)
        rows = run_problem(p, seeds, skip)
        out[p.name] = summarize(rows, epochs)
        out[p.name]["rows"] = rows
        print_table(p.name, out[p.name])
    if "honesty" not in skip:  # digits always; Fashion-MNIST unless skipped
        for name, make in problems[: 1 if "fashion" in skip else 2]:
            p = make(epochs)
            rows = [honesty(p, seed) for seed in seeds]
            key = "honesty" if name == "digits" else f"honesty_{name}"
            out[key] = summarize_honesty(rows, epochs)
            out[key]["rows"] = rows
            print_honesty(name, out[key])
    if "ray" not in skip:
        ray.shutdown()
    print(json.dumps(out, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))


if __name__ == "__main__":
    main()

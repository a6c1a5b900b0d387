"""`Tuner(engine="ray")`: Hyperband's brackets (Li et al. 2018, arXiv:1603.06560) as Ray
tasks, each a stacked successive-halving run, merged into one result.

`hyperband_plan` splits the budget into brackets (`budget.hyperband_plans`: different n and
rung epochs); `bracket_draws` draws every bracket's configurations as one Sobol sequence and
gives each bracket its own contiguous slice, so no configuration repeats across brackets and
config ids stay unique. `run_bracket` is one bracket: the Tuner's SH loop (`tuner.halving`)
on a `StackedRun` of its slice; it returns its rows and the winner's weights as a state dict
of CPU tensors. `fit_brackets` runs the brackets as Ray tasks and merges them: the rows with
a `bracket` column, the best over brackets by the validation metric (ties: the earlier
bracket), spent = the sum, best_model_ rebuilt locally from the winner's state dict. Ray is
imported lazily: `pip install 'regulab[ray]'`.
"""

import copy
import dataclasses
import os
import time
from dataclasses import dataclass

import torch

from regulab.sweep.hparams import prepare
from regulab.sweep.model_path import loader_like, resolve_data
from regulab.sweep.state import StackedRun
from regulab.train_step import rng_fork
from regulab.tune import trials
from regulab.tune.budget import Plan, hyperband_plans
from regulab.tune.ensemble import ensemble
from regulab.tune.schedulers import best_first
from regulab.tune.space import draw
from regulab.tune.tuner import halving

INSTALL_HINT = "pip install 'regulab[ray]'"
CPUS_PER_TASK = 1  # a bracket's share of a node's cores; torch uses as many threads


@dataclass(frozen=True)
class HyperbandPlan:
    """Hyperband's brackets, most cuts first; each an independent successive halving."""

    plans: tuple[Plan, ...]
    budget: float  # single-run equivalents the brackets share equally

    @property
    def epochs(self) -> int:
        return self.plans[0].epochs

    @property
    def configs(self) -> int:
        """Configurations drawn over all brackets."""
        return sum(p.configs for p in self.plans)

    @property
    def firsts(self) -> tuple[int, ...]:
        """Each bracket's first config id: its slice of the draws starts there."""
        return tuple(sum(p.configs for p in self.plans[:b]) for b in range(len(self.plans)))

    @property
    def copy_epochs(self) -> int:
        return sum(p.copy_epochs for p in self.plans)

    @property
    def cost(self) -> float:
        """Single-run equivalents spent: copy_epochs / epochs."""
        return self.copy_epochs / self.epochs

    def __str__(self) -> str:
        head = (
            f"hyperband: {len(self.plans)} brackets as Ray tasks, {self.configs} configurations, "
            f"cost {self.cost:.2f} of budget {self.budget:g} single-run equivalents"
        )
        parts = [f"bracket {b}: {p}" for b, p in enumerate(self.plans, 1)]
        return "\n".join([head, *parts])


@dataclass(frozen=True)
class Bracket:
    """One bracket's work: its number (1-based), plan, first config id and configurations."""

    number: int
    plan: Plan
    first: int
    hparams: dict  # name -> (n,) float64, the slice [first, first + plan.configs) of the draws


def check_address(address) -> str | None:
    """address as given: None (start a local instance), "auto", "host:port" or
    "ray://host:port"; ValueError or TypeError in one line."""
    if address is None or address == "auto":
        return address
    if not isinstance(address, str):
        raise TypeError(f"ray_address must be None, 'auto' or 'host:port'; got {address!r}")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    ok = host and not any(c.isspace() for c in host) and port.isdigit()
    if not ok or not 0 < int(port) < 2**16:
        raise ValueError(
            "ray_address must be None (start a local Ray instance), 'auto' (the cluster on "
            f"this machine) or 'host:port' / 'ray://host:port' (port 1-65535); got {address!r}"
        )
    return address


def hyperband_plan(tuner, epochs: int) -> HyperbandPlan:
    """The brackets that spend tuner.budget, checked with the Tuner's settings for Ray."""
    if tuner.scheduler != "sh":
        raise ValueError(
            "scheduler must be 'sh' with engine='ray' (Hyperband's brackets of successive "
            f"halving); got {tuner.scheduler!r}: use engine='local' for pbt"
        )
    if tuner.configs is not None:
        raise ValueError(
            "configs must be None with engine='ray' (each Hyperband bracket draws as many as "
            f"its share of the budget allows); got {tuner.configs!r}"
        )
    check_address(tuner.ray_address)
    plans = hyperband_plans(tuner.budget, epochs, tuner.eta, grace=tuner.grace)
    return HyperbandPlan(tuple(plans), float(tuner.budget))


def bracket_draws(space, plan: HyperbandPlan, seed: int) -> list[Bracket]:
    """Every bracket with its own slice of one draw of plan.configs configurations."""
    drawn = {name: v.double() for name, v in draw(space, plan.configs, seed).items()}
    return [
        Bracket(b, p, first, {name: v[first : first + p.configs] for name, v in drawn.items()})
        for b, (p, first) in enumerate(zip(plan.plans, plan.firsts, strict=True), 1)
    ]


def run_bracket(tuner, model, data, space, settings, bracket: Bracket) -> dict:
    """One bracket's successive halving on a stacked run of its configurations: rows (config
    ids global, a `bracket` column), copy_epochs, the best config's id, score, params and
    state (CPU tensors), rank_agreement, seconds. data: `model_path.Data` on the CPU."""
    started, device = time.perf_counter(), torch.device(tuner.device)
    x, y = data.train.tensors[:2]
    train = loader_like(data.train, x.to(device), y.to(device))
    val = tuple(t.to(device) for t in data.val)
    with rng_fork(device):  # the caller's random state, untouched
        m = copy.deepcopy(model).to(device)
        run = StackedRun(m, bracket.hparams, train, settings, what="space")
        if tuner.metric == "val_accuracy":
            trials.score(run, val, tuner.metric)  # no accuracy (regression): refuse
        rows, spent, score, _ = halving(tuner, run, bracket.plan, space, val)
    finite = int(torch.isfinite(score).sum())
    order = best_first(score, trials.METRICS[tuner.metric])[: min(tuner.finalists_wanted(), finite)]
    rows = [{"bracket": bracket.number, **r, "config": r["config"] + bracket.first} for r in rows]
    finalists = [
        {
            "config": bracket.first + int(run.ids[k]),
            "score": float(score[k]),
            "params": {name: float(v[k]) for name, v in run.hparams.items()},
            "state": {n: t.detach().cpu().clone() for n, t in run.model(k).state_dict().items()},
        }
        for k in order.tolist()
    ]  # best first
    return {
        "bracket": bracket.number,
        "rows": rows,
        "copy_epochs": spent,
        "best": finalists[0]["config"],
        "score": finalists[0]["score"],
        "params": finalists[0]["params"],
        "finalists": finalists,
        "rank_agreement": trials.agreement(rows, tuner.metric),
        "seconds": time.perf_counter() - started,
    }


def fit_brackets(tuner, model, train, val, space, settings, plan: HyperbandPlan) -> dict:
    """Tuner.fit with engine="ray": the learned attributes (name -> value) of the merged
    brackets; space, settings and plan as `Tuner.resolved` gives them."""
    started = time.perf_counter()
    with rng_fork(torch.device("cpu")):  # read once here; the tasks get tensors
        data = resolve_data(train, val, 0.0, None, settings, tuner.seed, 0, "cpu")
    # the data is (x, y) already; callbacks would run on the workers, not here
    s = dataclasses.replace(settings, batch_fn=None, on_epoch=None)
    shipped = copy.copy(tuner)  # the tuner's own settings may hold a progress callback
    shipped.settings, shipped.on_rung = s, None
    brackets = bracket_draws(space, plan, tuner.seed)
    results, info = run_on_ray((shipped, model, data, space, s), brackets, tuner.ray_address)
    every = [f for r in results for f in r["finalists"]]  # each bracket's, best first
    at = torch.tensor([f["score"] for f in every], dtype=torch.float64)
    chosen = [every[i] for i in best_first(at, trials.METRICS[tuner.metric]).tolist()]
    models = [rebuild(model, space.names, f["state"], tuner.device) for f in chosen]
    models = models[: tuner.finalists_wanted()]
    return {
        "best_index_": chosen[0]["config"],
        "best_params_": chosen[0]["params"],
        "best_score_": chosen[0]["score"],
        "best_model_": models[0],
        "finalists_": [f["config"] for f in chosen[: tuner.finalists_wanted()]],
        "ensemble_model_": ensemble(models, settings),
        "trials_": [row for r in results for row in r["rows"]],
        "plan_": plan,
        "spent_": sum(r["copy_epochs"] for r in results) / plan.epochs,
        "lineage_": None,
        "rank_agreement_": next(r for r in results if r["best"] == chosen[0]["config"])[
            "rank_agreement"
        ],  # the winning bracket's
        "brackets_": [
            {k: v for k, v in r.items() if k not in ("rows", "finalists")} for r in results
        ],
        "engine_": info,
        "seconds_": time.perf_counter() - started,
    }


def rebuild(model, names, state: dict, device) -> torch.nn.Module:
    """A copy of model readied for the searched names (as the stacked run readies it) with
    the weights and buffers of state, in eval mode on device."""
    m = copy.deepcopy(model)
    prepare([m], list(names), "space")
    m.load_state_dict(state)
    return m.to(device).train(False)


def run_on_ray(job: tuple, brackets: list[Bracket], address=None) -> tuple[list[dict], dict]:
    """run_bracket(*job, b) for every bracket b as a Ray task: (results in bracket order,
    info). Without address, and with Ray not yet running, a local instance with every core
    is started and shut down afterwards; an instance the caller started is reused."""
    t0 = time.perf_counter()
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"engine='ray' needs Ray, not installed: {INSTALL_HINT}") from e
    started = not ray.is_initialized()
    if started:
        _init(ray, check_address(address))
    t1 = time.perf_counter()
    try:
        gpus = 1 if torch.device(job[0].device).type == "cuda" else 0
        task = ray.remote(_task).options(num_cpus=CPUS_PER_TASK, num_gpus=gpus, max_retries=0)
        shared = ray.put(job)  # one copy of the model and data in the object store
        results = ray.get([task.remote(shared, b) for b in brackets])
        info = {
            "engine": "ray",
            "tasks": len(brackets),
            "address": ray.get_runtime_context().gcs_address,
            "ray_version": ray.__version__,
            "cluster_cpus": ray.cluster_resources().get("CPU", 0),
            "started_ray": started,
        }
    finally:
        if started:
            ray.shutdown()
    info["seconds_startup"] = t1 - t0  # import and ray.init
    info["seconds_total"] = time.perf_counter() - t0
    return results, info


def _init(ray, address) -> None:
    """Start a local instance (address None) or join the cluster at address."""
    quiet = {"logging_level": "ERROR", "log_to_driver": False}
    if address is None:  # "local": never attach to RAY_ADDRESS or an earlier cluster
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
        return
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as e:
        raise ConnectionError(
            f"ray_address: no Ray cluster answered at {address!r} ({e}); start one with "
            "`ray start --head` or pass ray_address=None for a local instance"
        ) from e


def _task(job: tuple, bracket: Bracket) -> dict:
    """A Ray task: one bracket on CPUS_PER_TASK threads (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(CPUS_PER_TASK)
    try:
        return run_bracket(*job, bracket)
    finally:
        torch.set_num_threads(threads)

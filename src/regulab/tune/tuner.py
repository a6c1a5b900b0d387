"""`Tuner`: choose the mix of regularizers and their strengths on validation data, every
configuration a copy of one stacked model (issue 15).

scikit-learn's contract: `__init__` stores the settings, `fit(model, train, val)` trains and
sets the learned attributes, which end in "_".

scheduler="sh", successive halving with continuation (Jamieson & Talwalkar 2016,
arXiv:1502.07943): `draw` n configurations, `halving_plan` fits n and the rungs to the
budget, the copies train to each rung as one `StackedRun`, and the best 1/eta by the
validation metric train on while the others leave the stacked state (`StackedRun.keep`), so
the compute shrinks with them. Promotion is regularization-aware (`strength_bins`): the best
copy of every strength range of every hyperparameter goes first. scheduler="pbt",
population-based training (Jaderberg et al. 2017, arXiv:1711.09846): K copies train the whole
run; every pbt_interval epochs the worst pbt_fraction take the weights and optimizer state of
better ones (`StackedRun.copy_into`) and perturbed hyperparameters. A copy that diverges is
dropped (PBT: replaced) and recorded; `NothingToChoose` only when every copy has diverged.
"""

import copy
import dataclasses
import time

import torch
from torch import nn

from regulab import _checks
from regulab.sweep.engine import Settings
from regulab.sweep.hparams import HPARAMS, LAYERS, check_settings, searchable
from regulab.sweep.model_path import resolve_data
from regulab.sweep.state import StackedRun
from regulab.train_step import rng_fork
from regulab.tune import pbt, trials
from regulab.tune.budget import Plan, halving_plan
from regulab.tune.ensemble import ensemble
from regulab.tune.pbt import PbtPlan
from regulab.tune.schedulers import best_first, strength_bins, successive_halving_keep
from regulab.tune.space import Space, draw, parse_space
from regulab.tune.trials import METRICS

SCHEDULERS = ("sh", "pbt")
ENGINES = ("local", "ray")


class Tuner:
    """Choose regularizers and their strengths for your model on validation data.

    space: the search space (`tune.space.parse_space`: "weight_decay=log(1e-5,1e-1)
    dropout=uniform(0,0.6)|off" or a dict); the stacked engine searches every name of
    `sweep.hparams.HPARAMS` (every name of the space). budget: single-run equivalents
    (copy-epochs / epochs of one run). eta: a rung keeps one copy in eta. scheduler: "sh"
    (successive halving) or "pbt". configs: the configurations drawn (sh: by default the
    most the budget allows; pbt: the population, by default floor(budget), at most budget).
    epochs: one run's epochs (default settings.train.epochs). settings: a `sweep.Settings`
    (optimizer, penalties, loss, batch size of tensors; default `Settings()`); seed replaces
    settings.train.seed and orders (x, y) tensors and DataLoaders. promotion, bins: keep the
    best copy of each of `bins` strength ranges per hyperparameter at every cut. grace: the
    first rung's earliest epoch. finalists (None: 2 when the budget allows them, else 1;
    pbt and ray: 2): sh: the copies trained to the last epoch, every
    cut keeping at least that many (the choice is made among them); pbt: the best of the
    population at the end; engine "ray": the best of the brackets' final survivors; with 2
    or more they also vote as an ensemble. pbt_interval:
    epochs between exploit steps (default epochs // 4); pbt_fraction: the share replaced at
    each. metric: "val_loss" or "val_accuracy". device: where the copies train. engine:
    "local" (one stacked run) or "ray" (Hyperband's brackets as Ray tasks, `tune.ray_engine`;
    sh only); ray_address: None (start a local Ray instance), "auto" or "host:port" (join a
    cluster).

    Learned: best_params_ (name -> float; pbt: the values at the end), best_index_ (the
    configuration; pbt: the copy), best_score_ (its metric), best_model_ (an nn.Module),
    finalists_ (the configurations of the finalists, best first, diverged ones left out),
    ensemble_model_ (`Ensemble` of the finalists' models, averaged probabilities for
    cross-entropy, else outputs; None with fewer than two),
    trials_ (`tune.trials` rows), plan_, spent_ (single-run equivalents trained: the plan's
    cost, less when copies diverged and were dropped early),
    lineage_ (pbt's `Lineage`, else None), rank_agreement_ (rung -> Spearman's rho against the
    last rung), seconds_. engine="ray" adds brackets_ and engine_ (`ray_engine.fit_brackets`).
    on_rung(rows): called with each rung's rows (pbt: each exploit step's) as they are
    recorded, for a progress display (locally; not from Ray's tasks).
    """

    def __init__(
        self,
        space,
        budget: float = 3.0,
        eta: int = 3,
        scheduler: str = "sh",
        *,
        configs: int | None = None,
        epochs: int | None = None,
        settings: Settings | None = None,
        promotion: bool = True,
        bins: int = 3,
        grace: int = 1,
        finalists: int | None = None,
        pbt_interval: int | None = None,
        pbt_fraction: float = 0.25,
        metric: str = "val_loss",
        seed: int = 0,
        device: str = "cpu",
        engine: str = "local",
        ray_address: str | None = None,
        on_rung=None,
    ):
        self.space = space
        self.budget = budget
        self.eta = eta
        self.scheduler = scheduler
        self.configs = configs
        self.epochs = epochs
        self.settings = settings
        self.promotion = promotion
        self.bins = bins
        self.grace = grace
        self.finalists = finalists
        self.pbt_interval = pbt_interval
        self.pbt_fraction = pbt_fraction
        self.metric = metric
        self.seed = seed
        self.device = device
        self.engine = engine
        self.ray_address = ray_address
        self.on_rung = on_rung

    def finalists_wanted(self) -> int:
        """finalists, checked; None: 2, or 1 where a budget under 2 has room for one (sh)."""
        if self.finalists is None:
            small = _checks.positive("budget", self.budget) < 2
            return 1 if self.scheduler == "sh" and self.engine == "local" and small else 2
        return _checks.positive_int("finalists", self.finalists)

    def resolved(self, model) -> tuple[Space, Settings, Plan | PbtPlan]:
        """(space, settings, plan), checked against model without training; ValueError or
        TypeError in one line naming the argument."""
        _checks.one_of("scheduler", self.scheduler, SCHEDULERS)
        _checks.one_of("metric", self.metric, tuple(METRICS))
        _checks.non_negative_int("seed", self.seed)
        _checks.positive_int("bins", self.bins)
        _checks.device("device", self.device)
        _checks.one_of("engine", self.engine, ENGINES)
        if not isinstance(self.promotion, bool):
            raise TypeError(f"promotion must be True or False; got {self.promotion!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        space = _check_space(self.space, model)
        s = self.settings if self.settings is not None else Settings()
        if not isinstance(s, Settings):
            raise TypeError(f"settings must be a regulab.sweep.Settings; got {type(s).__name__}")
        check_settings(s)
        epochs = s.train.epochs if self.epochs is None else self.epochs
        _checks.positive_int("epochs", epochs)
        s = dataclasses.replace(
            s, train=dataclasses.replace(s.train, epochs=epochs, seed=self.seed)
        )
        if self.engine == "ray":  # lazily: Hyperband's brackets as Ray tasks
            from regulab.tune import ray_engine

            plan = ray_engine.hyperband_plan(self, epochs)
        elif self.ray_address is not None:
            raise ValueError(
                f"ray_address is for engine='ray'; got {self.ray_address!r} with engine='local'"
            )
        elif self.scheduler == "sh":
            plan = halving_plan(
                self.budget,
                epochs,
                self.eta,
                configs=self.configs,
                grace=self.grace,
                finalists=self.finalists_wanted(),
            )
        else:
            plan = pbt.pbt_plan(
                self.budget, epochs, self.configs, self.pbt_interval, self.pbt_fraction
            )
            if self.finalists_wanted() > plan.population:
                raise ValueError(
                    f"finalists must be at most the population ({plan.population}); "
                    f"got {self.finalists_wanted()}"
                )
        return space, s, plan

    def fit(self, model, train, val) -> "Tuner":
        """Tune on train ((x, y) tensors, a TensorLoader or a DataLoader), choosing by val
        ((x, y) tensors or a DataLoader); model is copied, never changed."""
        space, s, plan = self.resolved(model)
        if val is None:
            raise ValueError(
                "val: the Tuner chooses on validation data: pass (x_val, y_val) or a DataLoader"
            )
        if self.engine == "ray":
            from regulab.tune import ray_engine

            vars(self).update(ray_engine.fit_brackets(self, model, train, val, space, s, plan))
            return self
        started = time.perf_counter()
        with rng_fork(torch.device(self.device)):  # the caller's random state, untouched
            data = resolve_data(train, val, 0.0, None, s, self.seed, 0, self.device)
            s = dataclasses.replace(s, batch_fn=None)  # the data was read into (x, y) already
            n = plan.configs if isinstance(plan, Plan) else plan.population
            hparams = {name: v.double() for name, v in draw(space, n, self.seed).items()}
            model = copy.deepcopy(model).to(self.device)
            run = StackedRun(model, hparams, data.train, s, what="space")
            if self.metric == "val_accuracy":
                trials.score(run, data.val, self.metric)  # no accuracy (regression): refuse
            if isinstance(plan, Plan):
                rows, spent, score, lineage = halving(self, run, plan, space, data.val)
            else:
                rows, spent, score, lineage = pbt.train(
                    run,
                    plan,
                    space,
                    data.val,
                    self.metric,
                    self.pbt_fraction,
                    self.seed,
                    on_rung=self.on_rung,
                )
        finite = int(torch.isfinite(score).sum())  # best first, diverged copies left out
        order = best_first(score, METRICS[self.metric])[: min(self.finalists_wanted(), finite)]
        best = int(order[0])
        self.best_index_ = int(run.ids[best])
        self.best_params_ = {name: float(v[best]) for name, v in run.hparams.items()}
        self.best_score_ = float(score[best])
        self.best_model_ = run.model(best)
        self.finalists_ = [int(run.ids[k]) for k in order.tolist()]
        self.ensemble_model_ = ensemble([run.model(k) for k in order.tolist()], s)
        self.trials_ = rows
        self.plan_ = plan
        self.spent_ = spent / plan.epochs
        self.lineage_ = lineage
        self.rank_agreement_ = trials.agreement(rows, self.metric)
        self.seconds_ = time.perf_counter() - started
        return self


def _check_space(given, model: nn.Module) -> Space:
    """The parsed space, once every name is one the engine searches and the model takes."""
    space = parse_space(given)
    for name in space.names:
        if name not in HPARAMS:
            raise ValueError(
                f"space: {name!r} cannot be tuned (the stacked engine does not search it); the "
                "Tuner searches "
                f"{', '.join(HPARAMS)}: remove {name} from the space"
            )
    can = searchable(model)
    for name in space.names:
        if name not in can:
            needs = LAYERS.get(name, "BatchNorm layers")
            raise ValueError(
                f"space: {name!r} needs a model with {needs}; this model has none "
                f"(it takes: {', '.join(can)})"
            )
    return space


def halving(t: Tuner, run: StackedRun, plan: Plan, space: Space, val):
    """Successive halving: train to each rung, evaluate, keep the best (rows, copy-epochs,
    the last rung's metric, None)."""
    rows, spent, mode = [], 0, METRICS[t.metric]
    for i, rung in enumerate(plan.rungs, 1):
        spent += run.k * (rung.epoch - run.epoch)
        run.train_epochs(rung.epoch - run.epoch)
        score, metrics = trials.score(run, val, t.metric)
        last = i == len(plan.rungs)
        keep = run.k if last else plan.rungs[i].alive
        groups = strength_bins(run.hparams, space, t.bins) if t.promotion and not last else None
        cut = successive_halving_keep(score, keep, mode, groups=groups)
        status = ["cut"] * run.k
        for k in cut.kept.tolist():
            status[k] = "alive"
        for k in cut.diverged.tolist():
            status[k] = "diverged"
        rows += trials.rows(run.ids, i, run.epoch, run.hparams, metrics, status)
        if t.on_rung is not None:
            t.on_rung(rows[-len(status) :])
        if len(cut.kept) == 0:
            raise trials.all_diverged(run)
        if not last:
            run.keep(cut.kept)
    return rows, spent, score, None

"""`regulab tune`: choose the mix of regularizers and their strengths on validation data."""

import argparse
import contextlib

from regulab.cli._common import (
    add_recipe_argument,
    add_recipe_arguments,
    inputs,
    non_negative_int,
    positive_int,
    print_report,
    progress,
    typed,
)

HELP = (
    "choose regularizers and their strengths on validation data: many configurations as one "
    "stacked run, within a budget of single-run equivalents"
)
SPACE_HELP = (
    'what to search, e.g. "weight_decay=log(1e-5,1e-1) dropout=uniform(0,0.6)|off '
    "lr=log(1e-3,1e-1)\" (default: the recipe's [tune] space)"
)
budget = typed(float, lambda v: 1 <= v < float("inf"), "a finite number >= 1")
eta = typed(int, lambda v: v >= 2, "an integer >= 2")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab tune`; each overrides the recipe's [tune] key of the same name."""
    add_recipe_argument(p, "TOML recipe, e.g. recipes/tune_digits.toml")
    p.add_argument("--space", metavar="SPACE", help=SPACE_HELP)
    p.add_argument(
        "--budget",
        type=budget,
        metavar="B",
        help="single-run equivalents: copy-epochs / train.epochs (default: tune.budget, 3)",
    )
    p.add_argument(
        "--configs",
        type=non_negative_int,
        metavar="N",
        help="configurations drawn; 0: the most the budget allows (default: tune.configs)",
    )
    p.add_argument("--eta", type=eta, help="each cut keeps one copy in ETA (default: tune.eta, 3)")
    p.add_argument(
        "--scheduler",
        choices=("sh", "pbt"),
        help="sh: successive halving; pbt: population-based training (default: tune.scheduler)",
    )
    p.add_argument(
        "--grace", type=positive_int, metavar="E", help="epochs before the first cut (tune.grace)"
    )
    p.add_argument(
        "--finalists",
        type=non_negative_int,
        metavar="K",
        help="configurations trained to the end, the choice made among them; 2 or more are "
        "also evaluated as an ensemble; 0: 2 when the budget allows (default: tune.finalists, 0)",
    )
    p.add_argument(
        "--metric",
        choices=("val_loss", "val_accuracy"),
        help="what chooses, on the validation split (default: tune.metric, val_loss)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        help="ray: successive halving's Hyperband brackets as Ray tasks (default: tune.engine)",
    )
    p.add_argument("--ray-address", metavar="ADDR", help="ray: an existing cluster's address")
    add_recipe_arguments(p, "tune")


def run(args, console) -> int:
    """`regulab tune`: check, print the plan, tune inside the run folder, print the choice."""
    from regulab import recipe as recipes
    from regulab import runs
    from regulab.tune import report
    from regulab.tune import run as tune_run

    recipe = recipes.resolve(
        args.recipe, args.set, variant=args.variant, one="regulab tune tunes one recipe",
        data_dir=args.data_dir, device=args.device,
    )  # fmt: skip
    options = {k: getattr(args, k) for k in ("space", "budget", "configs", "eta", "scheduler",
                                             "grace", "finalists", "metric",
                                             "engine")}  # fmt: skip
    recipe = tune_run.with_options(recipe, **options)
    seed = recipe.train.seed if args.seed is None else args.seed
    out = args.out or runs.default_run_dir("tune")
    runs.checked_out(out, args.overwrite, inputs(args, recipe))  # before the work
    shown = _Progress(console)
    prepared = tune_run.prepare(
        recipe, seed, on_epoch=shown.epoch_done, ray_address=args.ray_address,
        on_rung=shown.rung_done,
    )  # fmt: skip
    console.print(str(prepared.plan), soft_wrap=True, markup=False, highlight=False)
    with shown.bar(prepared.plan):
        summary = tune_run.write(
            prepared, out, options={**options, "seed": seed}, overwrite=args.overwrite,
            inputs=inputs(args, recipe),
        )  # fmt: skip
    trials = prepared.tuner.trials_
    console.print(report.rich_table(trials, summary))
    best = summary["best"]
    values = ", ".join(f"{k} = {v:.4g}" for k, v in summary["best_params"].items())
    acc = lambda split: (  # noqa: E731
        f", {split} accuracy {best[f'{split}_accuracy']:.4f}"
        if best.get(f"{split}_accuracy") is not None else ""
    )  # fmt: skip
    console.print(
        f"chosen {values} (configuration {summary['best_config']}): val loss "
        f"{best['val_loss']:.4g}{acc('val')}; test loss {best['test_loss']:.4g}{acc('test')}",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    print_report(console, out, summary["seconds"])
    return 0


class _Progress:
    """A bar over the copy-epochs of the plan, saying the rung and the copies alive; the
    stacked run calls `epoch_done` after every epoch."""

    def __init__(self, console):
        self.console, self.update, self.best = console, None, ""

    def rung_done(self, rows) -> None:
        """Keep the best validation loss (and accuracy) reached so far, for the bar."""
        losses = [r["val_loss"] for r in rows if r["val_loss"] is not None]
        if losses:
            old = float(self.best.split()[-1]) if self.best else float("inf")
            self.best = f", best val loss so far {min(old, *losses):.4g}"

    def epoch_done(self) -> None:
        if self.update is not None:
            self.update()

    @contextlib.contextmanager
    def bar(self, plan):
        rungs = getattr(plan, "rungs", None)  # successive halving; PBT keeps its population
        epoch = 0
        with progress(self.console, description="{task.description}") as bar:
            task = bar.add_task("tuning", total=plan.copy_epochs)

            def update():
                nonlocal epoch
                epoch += 1
                if rungs is None:
                    alive, where = plan.population, f"epoch {epoch}/{plan.epochs}"
                else:
                    i = next(i for i, r in enumerate(rungs) if epoch <= r.epoch)
                    alive, where = rungs[i].alive, f"rung {i + 1}/{len(rungs)}"
                text = f"{where}: {alive} copies alive{self.best}"
                bar.update(task, advance=alive, description=text)

            self.update = update
            yield

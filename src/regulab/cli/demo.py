"""`regulab demo`: the weight-decay experiment, its table, curves and validation sweep."""

import argparse

from regulab.cli._common import (
    add_out_arguments,
    device,
    lambda_list,
    positive_float,
    positive_int,
    print_report,
    progress,
    seed_count,
    typed,
)
from regulab.errors import UsageError

HELP = "weight decay on high-dimensional linear regression (lambda = 0 vs 3)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `regulab demo`."""
    p.add_argument(
        "--lambdas",
        type=lambda_list,
        default=(0.0, 3.0),
        metavar="L1,L2,...",
        help="L2 strengths, penalty lambda*||w||^2/2 (default: 0,3)",
    )
    p.add_argument(
        "--seeds",
        type=seed_count,
        default=5,
        metavar="N",
        help="number of seeds, run as 0..N-1 (default: 5)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=100,
        metavar="N",
        help="passes over the 20 training examples (default: 100)",
    )
    p.add_argument(
        "--lr", type=positive_float, default=0.003, help="SGD learning rate (default: 0.003)"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=5,
        metavar="N",
        help="examples per minibatch (default: 5)",
    )
    p.add_argument(
        "--impl",
        choices=("scratch", "concise"),
        default="scratch",
        help="hand-written loss and step, or nn.Linear + torch.optim.SGD "
        "weight_decay (same result; default: scratch)",
    )
    p.add_argument(
        "--grid",
        type=grid,
        default="0,3,logspace(-3,2,32)",
        metavar="GRID",
        help="strengths of the validation sweep: numbers, logspace(a,b,n), linspace(a,b,n) "
        '(default: "0,3,logspace(-3,2,32)")',
    )
    p.add_argument(
        "--folds",
        type=typed(int, lambda v: v >= 2, "an integer >= 2"),
        default=5,
        metavar="K",
        help="cross-validation folds of the sweep, on the training examples (default: 5)",
    )
    p.add_argument("--device", type=device, default="cpu", help="torch device (default: cpu)")
    add_out_arguments(p, "demo")


def grid(text: str) -> str:
    """An argparse type: a sweep grid that parses (kept as text)."""
    from regulab.sweep.grid import parse_grid

    try:
        parse_grid(text, name="the grid")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def run(args, console) -> int:
    """`regulab demo`: the weight-decay experiment, written to a run folder."""
    from regulab import runs
    from regulab.demos import run as demos
    from regulab.demos import weight_decay as demo
    from regulab.demos import weight_decay_report as report

    try:
        cfg = demo.DemoConfig(
            lambdas=args.lambdas,
            seeds=args.seeds,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            impl=args.impl,
            device=args.device,
        )
    except ValueError as e:
        raise UsageError(str(e)) from e
    fold_train = cfg.n_train - -(-cfg.n_train // args.folds)  # examples a fold trains on
    if args.folds > cfg.n_train or cfg.batch_size > fold_train:
        raise UsageError(
            f"--folds must leave at least --batch-size {cfg.batch_size} of the {cfg.n_train} "
            f"training examples to train on in each fold; got {args.folds}"
        )
    out = args.out or runs.default_run_dir("demo")
    with progress(console, description="training") as bar:
        task = bar.add_task("runs", total=len(cfg.lambdas) * cfg.seeds)
        summary = demos.weight_decay(
            cfg, args.grid, args.folds, out, overwrite=args.overwrite,
            on_run=lambda: bar.advance(task),
        )  # fmt: skip
    sweep = summary["sweep"]
    console.print(report.rich_table(summary["results"]))
    console.print(report.TABLE_NOTE, soft_wrap=True)
    b = sweep["best"]
    console.print(
        f"validation-chosen λ = {sweep['best_lambda']:.3g} ({args.folds}-fold on the "
        f"{cfg.n_train} training examples of seed 0, {len(sweep['grid'])} λ in one vectorized "
        f"run): test loss {b['test_loss']:.3g}, ‖w‖ {b['w_norm']:.3g}; path in path.png",
        soft_wrap=True,
    )
    print_report(console, out, summary["seconds"])
    return 0

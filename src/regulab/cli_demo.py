"""`regulab demo`: the weight-decay experiment, its table, curves and validation sweep."""

import argparse
import time
from dataclasses import asdict

from regulab.cli_args import device, lambda_list, positive_float, positive_int, typed


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
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
        type=positive_int,
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
    from regulab.cli import add_out_arguments

    add_out_arguments(p, "demo")


def grid(text: str) -> str:
    """An argparse type: a sweep grid that parses (kept as text)."""
    from regulab.sweep.grid import parse_grid

    try:
        parse_grid(text, name="the grid")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def run_demo(args, console) -> int:
    """`regulab demo`: the weight-decay experiment, written to a run folder."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from regulab import demo, report, runs
    from regulab.cli import UsageError

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
    start = time.perf_counter()
    with runs.run_folder(out, overwrite=args.overwrite) as tmp:
        settings = {**asdict(cfg), "sweep_grid": args.grid, "sweep_folds": args.folds}
        runs.write_json(
            tmp / "config.json", {"command": "demo", "settings": settings, **runs.environment()}
        )
        total = len(cfg.lambdas) * cfg.seeds
        with Progress(
            "training",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,  # a bar is noise in logs and pipes
        ) as progress:
            task = progress.add_task("runs", total=total)
            results = demo.run(cfg, on_run=lambda: progress.advance(task))
        rows = demo.metric_rows(results)
        summary = demo.summarize(results)
        search = demo.sweep(cfg, args.grid, args.folds)
        report.write_metrics_csv(rows, tmp / "metrics.csv")
        report.plot_curves(rows, tmp / "curves.png")
        report.write_report(tmp / "report.md", summary, rows, settings, "curves.png")
        sweep_summary = _demo_sweep(search, args, cfg, tmp)
        seconds = time.perf_counter() - start
        runs.write_json(
            tmp / "summary.json",
            {
                "command": "demo",
                "status": "completed",
                "seconds": round(seconds, 3),
                "results": summary,
                "sweep": sweep_summary,
            },
        )
    console.print(report.rich_table(summary))
    console.print(report.TABLE_NOTE, soft_wrap=True)
    b = sweep_summary["best"]
    console.print(
        f"validation-chosen λ = {sweep_summary['best_lambda']:.3g} ({args.folds}-fold on the "
        f"{cfg.n_train} training examples of seed 0, {len(search.path_)} λ in one vectorized run): "
        f"test loss {b['test_loss']:.3g}, ‖w‖ {b['w_norm']:.3g}; path in path.png",
        soft_wrap=True,
    )
    # a path must stay whole for copy and paste: no wrapping, no markup
    console.print(f"Report: {out / 'report.md'}  ({seconds:.1f} s)", soft_wrap=True, markup=False)
    return 0


def _demo_sweep(search, args, cfg, folder) -> dict:
    """Write the demo's path (path.csv, path.png, a report section); return its summary."""
    from regulab.sweep import plot as sweep_plot
    from regulab.sweep import report as sweep_report

    rows, best = search.path_, search.best_index_
    summary = {
        "param": "l2",
        "grid": [r["lambda"] for r in rows],
        "selection": f"{args.folds}-fold",
        "rule": "min",
        "data_seed": 0,
        "best_lambda": search.best_lambda_,
        "best_index": best,
        "best": search.best_,
        "seconds": round(search.seconds_, 3),
        "more_inputs_than_examples": cfg.num_inputs > cfg.n_train,
    }
    sweep_report.write_path_csv(rows, folder / "path.csv", chosen=best)
    sweep_plot.plot_path(rows, best, folder / "path.png", param="λ (L2)", loss_name="half_mse")
    section = sweep_report.report_markdown({**summary, "recipe": None}, rows, "path.png")
    section = section.replace(
        "# Regularization path", "## Choosing λ on validation data: the path", 1
    )
    intro = (
        f"\nThe same protocol on the data of seed 0, with λ chosen by {args.folds}-fold "
        f"cross-validation on the {cfg.n_train} training examples; all {len(rows)} λ train "
        "at once (`regulab sweep`).\n\n"
    )
    head, _, rest = section.partition("\n")
    with open(folder / "report.md", "a") as f:
        f.write("\n" + head + "\n" + intro + rest)
    return summary

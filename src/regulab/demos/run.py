"""The run folders of `regulab demo` and `regulab constraints`: config, results, report, summary."""

import time
from dataclasses import asdict
from pathlib import Path

from regulab import runs
from regulab.demos import equivalence, equivalence_report, geometry
from regulab.demos import weight_decay as demo
from regulab.demos import weight_decay_report as report


def weight_decay(cfg, grid: str, folds: int, out: Path, *, overwrite=False, on_run=None) -> dict:
    """Run the weight-decay demo and its validation sweep into out; return the summary."""
    start = time.perf_counter()
    with runs.run_folder(out, overwrite=overwrite) as tmp:
        settings = {**asdict(cfg), "sweep_grid": grid, "sweep_folds": folds}
        runs.write_json(
            tmp / "config.json", {"command": "demo", "settings": settings, **runs.environment()}
        )
        results = demo.run(cfg, on_run=on_run)
        rows = demo.metric_rows(results)
        summary = demo.summarize(results)
        search = demo.sweep(cfg, grid, folds)
        report.write_metrics_csv(rows, tmp / "metrics.csv")
        report.plot_curves(rows, tmp / "curves.png")
        (tmp / "report.md").write_text(report.markdown(summary, rows, settings, "curves.png"))
        sweep_summary = _demo_sweep(search, folds, cfg, tmp)
        seconds = time.perf_counter() - start
        result = {
            "command": "demo",
            "status": "completed",
            "seconds": round(seconds, 3),
            "results": summary,
            "sweep": sweep_summary,
        }
        runs.write_json(tmp / "summary.json", result)
    return result


def _demo_sweep(search, folds: int, cfg, folder: Path) -> dict:
    """Write the demo's path (path.csv, path.png, a report section); return its summary."""
    from regulab.sweep import plot as sweep_plot
    from regulab.sweep import report as sweep_report

    rows, best = search.path_, search.best_index_
    summary = {
        "param": "l2",
        "grid": [r["lambda"] for r in rows],
        "selection": f"{folds}-fold",
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
    section = sweep_report.markdown({**summary, "recipe": None}, rows, "path.png")
    section = section.replace(
        "# Regularization path", "## Choosing λ on validation data: the path", 1
    )
    intro = (
        f"\nThe same protocol on the data of seed 0, with λ chosen by {folds}-fold "
        f"cross-validation on the {cfg.n_train} training examples; all {len(rows)} λ train "
        "at once (`regulab sweep`).\n\n"
    )
    head, _, rest = section.partition("\n")
    with open(folder / "report.md", "a") as f:
        f.write("\n" + head + "\n" + intro + rest)
    return summary


def constraints(seed: int, fractions, radius: float, out: Path, *, overwrite=False) -> dict:
    """Soft vs hard L2 on the demo's data and the 2-D L1/L2 picture, into out; the summary."""
    start = time.perf_counter()
    settings = {"seed": seed, "fractions": list(fractions), "radius": radius}
    with runs.run_folder(out, overwrite=overwrite) as tmp:
        runs.write_json(
            tmp / "config.json",
            {"command": "constraints", "settings": settings, **runs.environment()},
        )
        rows, info = equivalence.experiment(seed, fractions)
        geo = geometry.geometry(radius)
        geometry.plot_geometry(geo, tmp / "geometry.png")
        equivalence_report.write_csv(rows, tmp / "equivalence.csv")
        (tmp / "report.md").write_text(equivalence_report.markdown(rows, info, geo, "geometry.png"))
        summary = {
            "command": "constraints",
            "status": "completed",
            "seconds": round(time.perf_counter() - start, 3),
            "data": info,
            "tolerance": equivalence.TOLERANCE,
            "max_rel_diff_w": max(r["rel_diff_w"] for r in rows),
            "converged": all(r["converged"] for r in rows),
            "equivalent": equivalence.equivalent(rows),
            "equivalence": rows,
            "geometry": geo,
        }
        runs.write_json(tmp / "summary.json", summary)
    return summary

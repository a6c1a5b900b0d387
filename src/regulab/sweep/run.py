"""The run folder of `regulab sweep`: config.json, path.csv, path.png, report.md, summary.json."""

import time
from pathlib import Path

from regulab import recipe as recipes
from regulab import runs
from regulab.errors import RunFailed
from regulab.sweep import plot, report


def write(
    search, recipe, values, settings: dict, out: Path, *, overwrite=False, on_epoch=None,
    inputs=(), data_files=None,
):  # fmt: skip
    """Fit `search` (a LambdaSearch) inside the run folder and write its files; the summary.

    A RuntimeError on the way (a Ray trial failed: its error names the chunk) is RunFailed.
    inputs: (option, path) pairs out must not overlap (`runs.checked_out`); data_files: the
    data folder read and its files' md5 (config.json's `data_files`), or None.
    """
    try:
        return _write(
            search, recipe, values, settings, out, overwrite, on_epoch, inputs, data_files
        )
    except RuntimeError as e:
        raise RunFailed(str(e)) from e


def _write(search, recipe, values, settings, out, overwrite, on_epoch, inputs, data_files) -> dict:
    start = time.perf_counter()
    with runs.run_folder(out, overwrite=overwrite, inputs=inputs) as tmp:
        runs.write_json(
            tmp / "config.json",
            {
                "command": "sweep",
                "settings": settings,
                "recipe": recipes.to_dict(recipe),
                "data_files": data_files,
                **runs.environment(),
            },
        )
        search.fit(on_epoch=on_epoch)
        rows, best = search.path_, search.best_index_
        folds = settings["folds"]
        summary = {
            "command": "sweep",
            "status": "completed",
            "seconds": round(time.perf_counter() - start, 3),
            "recipe": recipe.name,
            "param": settings["param"],
            "grid": values,
            "selection": f"{folds}-fold" if folds else "holdout",
            "rule": settings["rule"],
            "seed": settings["seed"],
            "best_lambda": search.best_lambda_,
            "best_index": best,
            "best": search.best_,
            "diverged": sum(r["status"] == "diverged" for r in rows),
            "engine": settings["engine"],
            "engine_info": search.engine_info_,
            "more_inputs_than_examples": settings["inputs"] > settings["examples"],
        }
        report.write_path_csv(rows, tmp / "path.csv", chosen=best)
        plot.plot_path(
            rows, best, tmp / "path.png", param=settings["param"], loss_name=recipe.train.loss
        )
        runs.write_text(tmp / "report.md", report.markdown(summary, rows, "path.png"))
        runs.write_json(tmp / "summary.json", summary)
    return summary

"""The tables and report.md of a tuning run, from its trials (`Tuner.trials_`) and summary.

`rows(...)` returns (headers, cells) of the best configurations, `rich_table(...)` is what
the terminal shows, `markdown(...)` the whole report.md; `rung_rows` is the table of rungs.
"""

import math

from regulab import tables
from regulab.tune.plot import last_rows
from regulab.tune.trials import METRICS

NOT_HPARAMS = ("config", "rung", "epoch", "val_loss", "val_accuracy", "status", "bracket")


def _fmt(value, spec: str = ".4g") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


def hparam_names(trials: list[dict]) -> list[str]:
    """The searched hyperparameters: the columns of trials that are not bookkeeping."""
    return [k for k in trials[0] if k not in NOT_HPARAMS]


def ranked(trials: list[dict], metric: str) -> list[dict]:
    """Each configuration's last row, best first: the furthest epoch trained to (the rung
    numbers of Hyperband brackets differ), then the metric (diverged, without one, last)."""
    sign = 1 if METRICS[metric] == "min" else -1

    def key(row):
        value = row[metric]
        missing = value is None or not math.isfinite(value)
        return (-row["epoch"], missing, 0.0 if missing else sign * value)

    return sorted(last_rows(trials), key=key)


def rows(trials: list[dict], summary: dict, top: int = 10) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of the `top` best configurations, the chosen one marked →."""
    names = hparam_names(trials)
    accuracy = any(r["val_accuracy"] is not None for r in trials)
    headers = ["", "config", "rung", "epoch", *names, "val loss", *["val acc"] * accuracy]
    cells = []
    for row in ranked(trials, summary["metric"])[:top]:
        line = ["→" if row["config"] == summary["best_config"] else "", str(row["config"])]
        line += [str(row["rung"]), str(row["epoch"]), *(_fmt(row[n], ".3g") for n in names)]
        line += [_fmt(row["val_loss"]), *[_fmt(row["val_accuracy"], ".2%")] * accuracy]
        cells.append([*line, row["status"]])
    return [*headers, "status"], cells


def rich_table(trials: list[dict], summary: dict, top: int = 10):
    """The best configurations as a rich Table, the chosen one in bold."""
    headers, cells = rows(trials, summary, top)
    styles = ["bold" if c[0] else None for c in cells]
    return tables.rich_table(headers, cells, left=2, styles=styles)


def rung_rows(trials: list[dict], metric: str) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) per rung: its epoch, the copies evaluated, how many went on, the best
    metric and its configuration."""
    sign = 1 if METRICS[metric] == "min" else -1
    cells = []
    for rung in sorted({r["rung"] for r in trials}):
        at = [r for r in trials if r["rung"] == rung]
        scored = [r for r in at if r[metric] is not None and math.isfinite(r[metric])]
        best = min(scored, key=lambda r: sign * r[metric]) if scored else None
        kept = sum(r["status"] == "alive" for r in at)
        cells.append([
            str(rung), str(at[0]["epoch"]), str(len(at)), str(kept),
            _fmt(best[metric] if best else None), str(best["config"]) if best else "—",
        ])  # fmt: skip
    label = metric.replace("_", " ")
    return ["rung", "epoch", "copies", "alive after", f"best {label}", "config"], cells


def _agreement(summary: dict) -> str:
    pairs = [(a["rung"], a["rho"]) for a in summary["rank_agreement"] if a["rho"] is not None]
    if not pairs:
        return "Rank agreement with the last rung: too few configurations reached both."
    text = ", ".join(f"rung {g}: {rho:.2f}" for g, rho in pairs)
    return (
        f"Rank agreement with the last rung (Spearman's rho over the configurations that "
        f"reached both): {text}."
    )


def _chosen(summary: dict) -> list[list[str]]:
    """metric / value rows: the chosen values, then its metrics beside the recipe as written."""
    best, one = summary["best"], summary["one_run"]
    given = one.get("params", {})
    out = [
        [f"`{name}`", _fmt(v), _fmt(given.get(name))] for name, v in summary["best_params"].items()
    ]
    for key in ("val_loss", "val_accuracy", "test_loss", "test_accuracy"):
        if best.get(key) is not None:
            spec = ".2%" if "accuracy" in key else ".4g"
            out.append([key, _fmt(best[key], spec), _fmt(one.get(key), spec)])
    return out


def _ensemble(summary: dict) -> list[str]:
    """The finalists' ensemble beside the chosen model, when there is one."""
    e = summary.get("ensemble")
    if not e:
        return []
    best = summary["best"]
    keys = [
        k for k in ("val_loss", "val_accuracy", "test_loss", "test_accuracy") if e[k] is not None
    ]
    cells = [
        [
            k,
            _fmt(best[k], ".2%" if "acc" in k else ".4g"),
            _fmt(e[k], ".2%" if "acc" in k else ".4g"),
        ]
        for k in keys
    ]
    members = ", ".join(map(str, e["members"]))
    return [
        f"## The {len(e['members'])} finalists as an ensemble (configurations {members})",
        "",
        "Their predicted probabilities averaged (outputs, for losses other than "
        "cross-entropy), beside the chosen model alone:",
        "",
        tables.markdown_table(["", "chosen", "ensemble"], cells),
        "",
    ]


def markdown(summary: dict, trials: list[dict], pictures=()) -> str:
    """report.md: what was tuned, the choice beside the recipe as written, the pictures,
    the rungs and the best configurations."""
    metric = summary["metric"]
    how = "population-based training" if summary["scheduler"] == "pbt" else "successive halving"
    plan = summary["plan"]
    ratio = summary.get("cost_ratio")
    one_run = (
        f"one run of the recipe took {summary['one_run']['seconds']:.2f} s in the same process "
        f"(ratio {ratio:.2f})"
        if ratio is not None
        else "one run of the recipe was not timed"
    )
    text = [
        f"# Tuning `{summary['recipe']}` by {how}",
        "",
        f"Searched `{summary['space']}`: {plan['configs']} configurations, "
        f"{plan['epochs']} epochs a run, chosen by `{metric}` on the validation split; the "
        "test split was evaluated once, on the chosen model, and took no part in the choice. "
        f"Budget {summary['budget']:g} single-run equivalents, spent {summary['spent']:.3g} "
        f"(plan {plan['cost']:.3g}); the tuning took {summary['tune_seconds']:.2f} s and "
        f"{one_run}.",
        "",
        f"## Chosen: configuration {summary['best_config']}",
        "",
        tables.markdown_table(["", "tuned", "recipe as written"], _chosen(summary)),
        "",
        _agreement(summary),
        "",
    ]
    text += _ensemble(summary)
    if summary["diverged"]:
        text += [f"{summary['diverged']} configurations diverged and were dropped.", ""]
    alt = {"hparams.png": "each hyperparameter against the validation metric",
           "curves.png": "the validation metric of every copy at each rung, cuts marked",
           "budget.png": "single-run equivalents spent against the plan; wall time"}  # fmt: skip
    text += [f"![{alt.get(p, p)}]({p})\n" for p in pictures]
    text += ["## Rungs", "", tables.markdown_table(*rung_rows(trials, metric)), ""]
    text += ["## Best configurations", "", tables.markdown_table(*rows(trials, summary)), ""]
    return "\n".join(text)

"""The tables, slim.csv, plots and report.md of a `regulab slim` run: accuracy, size and
speed per ratio and pass.

The Pareto plot puts test accuracy against FLOPs and against latency (the
non-dominated networks joined by a line); the gamma plot shows the |gamma|
histogram over the sparsity-training epochs and the thresholds each ratio cut at
(arXiv:1708.06519, fig. 4). matplotlib is imported only when plotting.
"""

from pathlib import Path

from regulab import runs, tables

CSV_COLUMNS = (
    "ratio",
    "pass",
    "channels_total",
    "channels_requested",
    "channels_removed",
    "threshold",
    "test_accuracy_before_finetune",
    "test_accuracy",
    "accuracy_change",
    "params",
    "params_reduction",
    "flops",
    "flops_reduction",
    "latency_b1_s",
    "latency_b256_s",
    "speedup_b1",
    "speedup_b256",
    "pruned_vs_masked",
    "note",
)


def networks(summary: dict) -> list[dict]:
    """One flat dict for the unpruned network (ratio 0, pass 0) and one per (ratio, pass)."""
    u = summary["unpruned"]
    out = [
        {
            "ratio": 0.0,
            "pass": 0,
            "channels_total": u["channels"],
            "channels_requested": 0,
            "channels_removed": 0,
            "test_accuracy": u["test_accuracy"],
            "test_accuracy_before_finetune": u["test_accuracy"],
            "accuracy_change": 0.0,
            "params": u["params"],
            "params_reduction": 0.0,
            "flops": u["flops"],
            "flops_reduction": 0.0,
            **{f"latency_b{b}_s": t for b, t in u["latency_s"].items()},
            **{f"speedup_b{b}": 1.0 for b in u["latency_s"]},
            "note": "unpruned",
        }
    ]
    for r in summary["results"]:
        out.append(
            {
                **{k: r[k] for k in CSV_COLUMNS if k in r},
                "test_accuracy_before_finetune": r["before_finetune"]["test_accuracy"],
                "test_accuracy": r["after_finetune"]["test_accuracy"],
                **{f"latency_b{b}_s": t for b, t in r["latency_s"].items()},
                **{f"speedup_b{b}": s for b, s in r["speedup"].items()},
            }
        )
    return out


def write_csv(summary: dict, path: Path) -> None:
    """slim.csv: one line per network with the CSV_COLUMNS, atomically."""
    runs.write_text(path, runs.csv_text(networks(summary), CSV_COLUMNS))


def _label(row: dict) -> str:
    if row["pass"] == 0:
        return "unpruned"
    return f"{row['ratio']:g}" + (f" x{row['pass']}" if row["pass"] > 1 else "")


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points (lower cost, higher accuracy), by cost."""
    front, best = [], -1.0
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def plot_pareto(summary: dict, path: Path) -> None:
    """pareto.png: test accuracy against MFLOPs and against latency at the largest batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = networks(summary)
    batch = max(summary["unpruned"]["latency_s"], key=int)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, unit, scale in (
        (axes[0], "flops", "MFLOPs per example (2 per multiply-add)", 1e-6),
        (axes[1], f"latency_b{batch}_s", f"latency at batch {batch}, ms (median)", 1e3),
    ):
        after = [(r[key] * scale, 100 * r["test_accuracy"]) for r in table]
        before = [(r[key] * scale, 100 * r["test_accuracy_before_finetune"]) for r in table[1:]]
        ax.plot(*zip(*_front(after), strict=True), "-", color="C0", alpha=0.4, label="Pareto front")
        ax.scatter(*zip(*after, strict=True), color="C0", zorder=3, label="after fine-tuning")
        if before:
            ax.scatter(*zip(*before, strict=True), facecolors="none", edgecolors="C3", zorder=3,
                       label="before fine-tuning")  # fmt: skip
        for r, (x, y) in zip(table, after, strict=True):
            ax.annotate(_label(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(unit)
        ax.set_ylabel("test accuracy, %")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Network slimming of {summary['recipe']}: accuracy against cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gammas(summary: dict, history: dict | None, path: Path) -> None:
    """gamma.png: |gamma| histograms over sparsity training, and the final one with thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, 2 if history else 1, figsize=(11 if history else 6, 4), squeeze=False
    )
    axes = axes[0]
    if history:
        epochs = history["epochs"]
        picks = sorted({0, len(epochs) // 4, len(epochs) // 2, len(epochs) - 1})
        for i in picks:
            h = epochs[i]
            mids = [(a + b) / 2 for a, b in zip(h["edges"], h["edges"][1:], strict=False)]
            axes[0].plot(mids, h["counts"], drawstyle="steps-mid", label=f"epoch {h['epoch']}")
        axes[0].set_yscale("symlog", linthresh=1)
        axes[0].set_xlabel("|gamma|")
        axes[0].set_ylabel("channels")
        axes[0].set_title("during sparsity training")
        axes[0].legend(fontsize=8)
    ax = axes[-1]
    h = summary["gamma_histogram"]
    ax.stairs(h["counts"], h["edges"], fill=True, alpha=0.6)
    raw = summary["score"] == "gamma"  # a normalized score is not on this axis
    cuts = [x for x in summary["results"] if x["pass"] == 1 and x["threshold"] is not None]
    for i, r in enumerate(cuts if raw else []):
        ax.axvline(r["threshold"], color=f"C{i + 1}", ls="--",
                   label=f"ratio {r['ratio']:g}: cut below {r['threshold']:.3g}")  # fmt: skip
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("|gamma| of the model that was pruned")
    ax.set_ylabel("channels")
    ax.set_title("before pruning")
    if raw and cuts:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, cells per network) of report.md's results table: the unpruned network, then
    one line per ratio and pass."""
    batches = list(summary["unpruned"]["latency_s"])
    headers = ["ratio", "pass", "channels removed", "test acc. before FT, %",
               "test acc. after FT, %", "change, points", "params", "FLOPs",
               *(f"latency b{b}, ms (speed-up)" for b in batches)]  # fmt: skip
    cells = []
    for r in networks(summary):
        removed = "-" if r["pass"] == 0 else f"{r['channels_removed']} of {r['channels_total']}"
        cells.append(
            [
                f"{r['ratio']:g}",
                str(r["pass"]),
                removed,
                _pct(r["test_accuracy_before_finetune"]),
                _pct(r["test_accuracy"]),
                f"{100 * r['accuracy_change']:+.2f}",
                f"{r['params']:,} (-{_pct(r['params_reduction'])} %)",
                f"{r['flops'] / 1e6:.2f} M (-{_pct(r['flops_reduction'])} %)",
                *(f"{1e3 * r[f'latency_b{b}_s']:.3g} ({r[f'speedup_b{b}']:.2f}x)" for b in batches),
            ]
        )
    return headers, cells


def rich_table(summary: dict):
    """The terminal's table, framed under its title: accuracy, size and speed-up per network
    (report.md's table also has the latencies)."""
    batches = summary["latency_batches"]
    headers = ["ratio", "pass", "removed", "acc. before FT", "acc. after FT", "params", "MFLOPs",
               *(f"speed-up b{b}" for b in batches)]  # fmt: skip
    cells = [
        [
            f"{r['ratio']:g}",
            str(r["pass"]),
            "-" if r["pass"] == 0 else f"{r['channels_removed']}/{r['channels_total']}",
            f"{100 * r['test_accuracy_before_finetune']:.2f} %",
            f"{100 * r['test_accuracy']:.2f} %",
            f"{r['params']:,}",
            f"{r['flops'] / 1e6:.2f}",
            *(f"{r[f'speedup_b{b}']:.2f}x" for b in batches),
        ]
        for r in networks(summary)
    ]
    title = f"network slimming: {summary['recipe']}"
    return tables.rich_table(headers, cells, left=0, title=title)


def width_rows(summary: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, cells per BatchNorm layer) of the channels table: unpruned and after each
    pass."""
    unpruned, results = summary["unpruned"]["widths"], summary["results"]
    headers = ["layer", "unpruned", *(_label(r) for r in results)]
    cells = [
        [name, str(unpruned[name]), *(str(r["widths"].get(name, "-")) for r in results)]
        for name in unpruned
    ]
    return headers, cells


def markdown(summary: dict, pareto: str, gammas: str) -> str:
    """report.md of a slim run."""
    u = summary["unpruned"]
    source = (
        f"the finished run `{summary['from']}`"
        if summary["from"]
        else f"sparsity training in `sparse/` (s = {summary['sparsity']:g}, "
        f"{summary['sparsity_mode']})"
    )
    notes = [f"- ratio {r['ratio']:g} pass {r['pass']}: {r['note']}" for r in summary["results"]
             if r["note"]]  # fmt: skip
    worst = max((r["pruned_vs_masked"] for r in summary["results"]), default=0.0)
    ranking = "raw |gamma| (the paper)" if summary["score"] == "gamma" else "normalized |gamma|"
    parts = [
        f"# Network slimming: {summary['recipe']}",
        "",
        f"Model from {source}; channels ranked globally by "
        f"{ranking}, "
        f"{summary['passes']} pass(es) per ratio, {summary['finetune_epochs']} fine-tuning epochs "
        f"after each pruning. Unpruned test accuracy {_pct(u['test_accuracy'])} %.",
        "",
        tables.markdown_table(*rows(summary)),
        "",
        f"FLOPs: {summary['flops_convention']}. Latency: median of repeated eval-mode forwards "
        f"on {summary['device']}. Every pruned network was checked against the network it was "
        f"cut from with the same channels masked (gamma and beta zeroed): largest relative output "
        f"difference {worst:.2g}.",
        "",
        *(["Floors:", *notes, ""] if notes else []),
        f"![accuracy against FLOPs and latency]({pareto})",
        "",
        "## Channels per layer",
        "",
        tables.markdown_table(*width_rows(summary)),
        "",
        "## |gamma| of the BatchNorm scales",
        "",
        f"![gamma histograms]({gammas})",
        "",
    ]
    return "\n".join(parts)

"""Reading a run folder back: one checked reader for the files `regulab train` writes.

`train --resume`, `slim --from` and `compare` read config.json, summary.json,
metrics.csv, gamma.json and the checkpoints through these functions only. Each
file is checked against what regulab writes (its types, its fields, its epochs);
anything else is a `RunFolderError`, one line naming the file and the fault,
raised before the command writes or appends anything. Imports no torch.
"""

import csv
import json
import math
from pathlib import Path

from regulab.errors import RunFolderError

STATUSES = ("completed", "diverged", "running")
TASKS = ("classification", "regression")
SEED_LIMIT = 2**63  # seeds are in [0, 2^63), as a recipe's are
EXPECTED = (
    "expected a run folder written by `regulab train` (summary.json and metrics.csv) or a "
    "multi-run folder (a summary.json listing its runs)"
)


def fault(file: Path, what: str) -> RunFolderError:
    """The error for a file of a run folder that regulab did not write so: names file and fault."""
    return RunFolderError(f"'{file}' is not as regulab wrote it: {what}")


def read_json(file: Path):
    """The JSON value of file; OSError (missing, unreadable) or ValueError (not JSON) as raised."""
    return json.loads(Path(file).read_text())


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite(value) -> bool:
    """A number that is neither NaN nor infinite (None is not)."""
    return is_number(value) and math.isfinite(value)


def train_config(folder: Path, option: str, also: str = "") -> dict:
    """config.json of a run folder of `regulab train`, checked; errors name `option`
    (and end the "must be" with `also`, another kind of folder the option takes)."""
    file = Path(folder) / "config.json"
    try:
        stored = read_json(file)
    except (OSError, ValueError) as e:
        raise RunFolderError(
            f"{option} must be a run folder of `regulab train`{also} (with its config.json); "
            f"cannot read '{file}': {e}"
        ) from None
    if not isinstance(stored, dict) or stored.get("command") != "train" or "recipe" not in stored:
        raise RunFolderError(
            f"{option} must be a run folder of `regulab train`{also}; '{folder}' is not"
        )
    if not isinstance(stored["recipe"], dict):
        raise fault(file, f"recipe must be a JSON object; got {_kind(stored['recipe'])}")
    seeds = stored.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(_seed(s) for s in seeds):
        raise fault(file, f"seeds must be a non-empty list of integers in [0, 2^63); got {seeds!r}")
    variant, seed = stored.get("variant"), stored.get("seed")
    if variant is not None and (not isinstance(variant, str) or seeds != [seed]):
        raise fault(
            file, f"a run's variant must be a name and its seeds [seed]; got variant {variant!r}, "
            f"seed {seed!r}, seeds {seeds!r}",
        )  # fmt: skip
    return stored


def _seed(value) -> bool:
    return is_int(value) and 0 <= value < SEED_LIMIT


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), repr(value))


def summary(folder: Path) -> dict:
    """summary.json of a run folder or a multi-run folder of `regulab train`, checked."""
    folder = Path(folder)
    if not folder.exists():
        raise RunFolderError(f"run folder '{folder}' does not exist; {EXPECTED}")
    if not folder.is_dir():
        raise RunFolderError(f"'{folder}' is a file, not a folder; {EXPECTED}")
    file = folder / "summary.json"
    try:
        found = read_json(file)
    except FileNotFoundError:
        raise RunFolderError(f"'{folder}' has no summary.json; {EXPECTED}") from None
    except (OSError, ValueError) as e:
        raise RunFolderError(f"cannot read '{file}' ({e}); {EXPECTED}") from None
    if not isinstance(found, dict) or found.get("command") != "train":
        command = found.get("command") if isinstance(found, dict) else None
        raise RunFolderError(
            f"'{file}' is not from `regulab train` (command {command!r}); {EXPECTED}"
        )
    if "runs" in found:
        _check_listed(file, found["runs"])
    else:
        _check_single(file, found)
    return found


def _check_listed(file: Path, listed) -> None:
    if not isinstance(listed, list) or not all(isinstance(r, str) for r in listed):
        raise RunFolderError(
            f"'{file}': \"runs\" must be a list of run folder paths relative to "
            f"'{file.parent}'; got {listed!r}"
        )
    if not listed:
        raise RunFolderError(f"'{file}' lists no runs; {EXPECTED}")
    outside = [r for r in listed if not r or Path(r).is_absolute() or ".." in Path(r).parts]
    if outside:
        raise fault(file, f"its runs must be folders inside '{file.parent}'; got {outside[0]!r}")


def _check_single(file: Path, found: dict) -> None:
    missing = [k for k in ("variant", "seed", "status", "final") if k not in found]
    if missing:
        raise RunFolderError(f"'{file}' lacks {missing}; {EXPECTED}")
    checks = (
        ("variant", isinstance(found["variant"], str), "a name"),
        ("seed", is_int(found["seed"]), "an integer"),
        ("status", found["status"] in STATUSES, " or ".join(STATUSES)),
        ("task", found.get("task") in (None, *TASKS), " or ".join(TASKS)),
        ("loss", found.get("loss") is None or isinstance(found["loss"], str), "a loss name"),
        ("final", found["final"] is None or isinstance(found["final"], dict), "an object"),
    )
    for key, good, allowed in checks:
        if not good:
            raise fault(file, f"{key} must be {allowed}; got {found.get(key)!r}")
    for key, value in (found["final"] or {}).items():
        if value is not None and not is_number(value):
            raise fault(file, f"final.{key} must be a number or null; got {value!r}")


def metrics(folder: Path) -> list[dict]:
    """The rows of folder/metrics.csv: floats (None for empty cells), epochs 1, 2, 3, ..."""
    from regulab.train import COLUMNS

    file = Path(folder) / "metrics.csv"
    try:
        with file.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            body = list(enumerate(reader, start=2))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RunFolderError(f"cannot read '{file}' ({e}); {EXPECTED}") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise RunFolderError(f"'{file}' lacks the columns {missing}; expected {','.join(COLUMNS)}")
    rows = []
    for line, cells in body:
        if len(cells) != len(header):
            raise RunFolderError(
                f"'{file}' line {line} has {len(cells)} cells; expected {len(header)}, one per "
                "column of the header"
            )
        try:
            row = {k: float(v) if v != "" else None for k, v in zip(header, cells, strict=True)}
            row["epoch"] = int(cells[header.index("epoch")])
        except ValueError:
            raise RunFolderError(
                f"'{file}' line {line} holds a cell that is not a number: {cells}; expected "
                "numbers, or empty cells for values not measured, and an integer epoch"
            ) from None
        if row["epoch"] != len(rows) + 1:
            raise fault(file, f"line {line}: epoch must be {len(rows) + 1}; got {row['epoch']}")
        rows.append(row)
    return rows


def gamma(folder: Path) -> dict | None:
    """folder/gamma.json (the |gamma| histograms over epochs of a BatchNorm model), checked;
    None if the run has none."""
    file = Path(folder) / "gamma.json"
    if not file.exists():
        return None
    try:
        found = read_json(file)
    except (OSError, ValueError) as e:
        raise fault(file, f"cannot read it ({e})") from None
    bins = found.get("bins") if isinstance(found, dict) else None
    epochs = found.get("epochs") if isinstance(found, dict) else None
    if not is_int(bins) or bins < 1 or not isinstance(epochs, list) or not epochs:
        raise fault(file, 'expected {"bins": a positive integer, "epochs": a non-empty list}')
    for i, h in enumerate(epochs):
        if not _histogram(h, bins) or (i and h["epoch"] <= epochs[i - 1]["epoch"]):
            raise fault(
                file, f"epochs[{i}] must be {{\"epoch\", \"edges\", \"counts\"}} with {bins + 1} "
                f"edges and {bins} counts, epochs increasing; got {str(h)[:80]}",
            )  # fmt: skip
    return found


def _histogram(h, bins: int) -> bool:
    return (
        isinstance(h, dict)
        and is_int(h.get("epoch"))
        and h["epoch"] >= 0
        and isinstance(h.get("edges"), list)
        and len(h["edges"]) == bins + 1
        and all(finite(e) for e in h["edges"])
        and isinstance(h.get("counts"), list)
        and len(h["counts"]) == bins
        and all(is_int(c) and c >= 0 for c in h["counts"])
    )


def check_run(folder: Path, option: str) -> None:
    """Check every file a run folder of `regulab train` has (it may be unfinished): its
    config.json, summary.json, metrics.csv, gamma.json and newest checkpoint. Reads no
    tensor data. (metrics.csv may run ahead of the newest checkpoint, whose history
    rewrites it on resume: later checkpoints deleted to resume from an earlier one.)"""
    from regulab import checkpoint, train_state

    folder = Path(folder)
    if (folder / "config.json").exists():
        train_config(folder, option)
    if (folder / "summary.json").exists():
        summary(folder)
    if (folder / "metrics.csv").exists():
        metrics(folder)
    gamma(folder)
    latest = checkpoint.latest(folder / "checkpoints")
    if latest is not None:
        train_state.check(latest)

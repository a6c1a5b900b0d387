"""What a checkpoint of `fit` holds beside the weights, and resuming from it.

The state is the step counter, the optimizer's (and fp16's GradScaler's)
state, the LR scheduler's, early stopping's (best weights, patience), the
history rows, and the settings an exact resume needs unchanged (precision,
accumulate). `regulab.checkpoint` writes it without pickle. The loop object is
`regulab.train`'s `_Loop`.
"""

from pathlib import Path

from regulab import checkpoint
from regulab.errors import RunFolderError
from regulab.run_files import fault, is_int, is_number

EARLY_STOPPING_STATE = ("best_", "best_epoch_", "wait_", "epochs_", "stopped_epoch_", "best_state_")


def check_folder(checkpoint_dir, resume: bool) -> None:
    """Refuse resume without a folder, and a new run in a folder holding another run's."""
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir, the folder of the checkpoints")
    if not resume and checkpoint_dir is not None and checkpoint.latest(checkpoint_dir):
        raise ValueError(
            f"checkpoint_dir '{checkpoint_dir}' already holds checkpoints "
            f"({checkpoint.latest(checkpoint_dir).name}) of another run: pass resume=True to "
            "continue it, or give an empty folder"
        )


def state(loop, epoch: int) -> dict:
    """The training state a checkpoint holds beside the weights (what `restore` reads)."""
    early_stopping, scheduler, scaler = loop.early_stopping, loop.scheduler, loop.scaler
    return {
        "epoch": epoch,
        "step": loop.step,
        "rng": {
            "seed": loop.seed,
            "scheme": "torch and loader reseeded each epoch from (seed, epoch)",
        },
        "precision": loop.precision,
        "accumulate": loop.accumulate,
        "optimizer": loop.optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "early_stopping": (
            {k: getattr(early_stopping, k) for k in EARLY_STOPPING_STATE}
            if early_stopping is not None
            else None
        ),
        "history": loop.history.rows,
    }


def check(path: Path, module=None, optimizer=None, epochs: int | None = None) -> dict:
    """state.json of the checkpoint folder `path`, checked against what `state` writes and,
    if given, against the module's weights (names and shapes), the optimizer's parameter
    groups and the number of epochs; RunFolderError naming the file otherwise. Reads the
    safetensors headers, no tensor data."""
    path = Path(path)
    model, tensors, skeleton = checkpoint.inspect(path)
    file = path / "state.json"
    _check_state(skeleton, path)
    if epochs is not None and skeleton["epoch"] > epochs:
        raise fault(file, f"epoch {skeleton['epoch']} is past the run's {epochs} epochs")
    if module is not None:
        shapes = {k: list(v.shape) for k, v in module.state_dict().items()}
        _same_weights(path / "model.safetensors", model, shapes)
        best = (skeleton["early_stopping"] or {}).get("best_state_")
        if best is not None:
            if not isinstance(best, dict) or not all(_is_ref(v) for v in best.values()):
                raise fault(file, "early_stopping.best_state_ must map names to tensors")
            best = {k: tensors[v["__tensor__"]] for k, v in best.items()}
            _same_weights(path / "state.safetensors", best, shapes, "early stopping's best ")
    if optimizer is not None:
        _same_groups(file, skeleton["optimizer"]["param_groups"], optimizer)
    return skeleton


def _check_state(state, path: Path) -> None:
    """The fields `state` writes, with their types; history holds one row per epoch."""
    file = path / "state.json"
    if not isinstance(state, dict):
        raise fault(file, f"it must be a JSON object; got {type(state).__name__}")
    number = checkpoint.NAME.match(path.name)
    expected = int(number.group(1)) if number else state.get("epoch")
    epoch = state.get("epoch")
    if not is_int(epoch) or epoch < 1 or epoch != expected:
        raise fault(file, f"epoch must be {expected}, the number of its folder; got {epoch!r}")
    history = state.get("history")
    if not isinstance(history, list) or len(history) != epoch:
        raise fault(file, f"history must be a list of {epoch} rows, one per epoch")
    for i, row in enumerate(history, 1):
        if not _row(row, i):
            raise fault(file, f"history[{i - 1}] must be the numbers of epoch {i}; got {row!r:.80}")
    for key, good, allowed in (
        ("step", is_int(state.get("step")) and state["step"] >= 0, "a count of steps"),
        ("optimizer", _optimizer(state.get("optimizer")), "an optimizer's state_dict"),
        ("scheduler", _table(state, "scheduler"), "null or an object"),
        ("scaler", _table(state, "scaler", required=False), "null or an object"),
        ("early_stopping", _table(state, "early_stopping", EARLY_STOPPING_STATE),
         f"null or an object of {', '.join(EARLY_STOPPING_STATE)}"),
        ("precision", isinstance(state.get("precision", ""), str), "a precision's name"),
        ("accumulate", is_int(state.get("accumulate", 1)) and state.get("accumulate", 1) >= 1,
         "a positive integer"),
    ):  # fmt: skip
        if not good:
            raise fault(file, f"{key} must be {allowed}; got {state.get(key)!r:.80}")


def _row(row, epoch: int) -> bool:
    """A history row of `epoch`: numbers, or None for values not measured."""
    numbers = isinstance(row, dict) and all(v is None or is_number(v) for v in row.values())
    return numbers and row.get("epoch") == epoch


def _optimizer(value) -> bool:
    groups = value.get("param_groups") if isinstance(value, dict) else None
    return (
        isinstance(value, dict)
        and isinstance(value.get("state"), dict)
        and isinstance(groups, list)
        and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
    )


def _table(state: dict, key: str, keys=None, required: bool = True) -> bool:
    """state[key] is None or an object (of some of `keys`); present unless not required."""
    if key not in state:
        return not required
    value = state[key]
    return value is None or (isinstance(value, dict) and (keys is None or set(value) <= set(keys)))


def _same_weights(file: Path, found: dict, shapes: dict, what: str = "") -> None:
    """found (name: shape) must be the module's state_dict, name for name and shape for shape."""
    missing, extra = sorted(shapes.keys() - found.keys()), sorted(found.keys() - shapes.keys())
    wrong = [k for k in shapes if k in found and list(found[k]) != shapes[k]]
    if missing or extra or wrong:
        if wrong:
            k = wrong[0]
            why = f"{k} has shape {list(found[k])}, the model's is {shapes[k]}"
        else:
            why = f"it lacks {missing[0]}" if missing else f"the model has no {extra[0]}"
        raise RunFolderError(
            f"'{file}' does not fit the model of the run's recipe ({what}weights: {why}); "
            "the checkpoint or the recipe in config.json was changed"
        )


def _same_groups(file: Path, groups: list, optimizer) -> None:
    sizes = [len(g["params"]) for g in groups]
    mine = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != mine:
        raise RunFolderError(
            f"'{file}' does not fit the optimizer of the run's recipe: its parameter groups "
            f"hold {sizes} parameters, the optimizer's {mine}"
        )


def _is_ref(value) -> bool:
    return isinstance(value, dict) and set(value) == {"__tensor__"}


def restore(loop) -> int:
    """Load the newest checkpoint of loop.checkpoint_dir into the loop; return the next epoch.

    The checkpoint is checked first (`check`): a fault is a RunFolderError naming the file.
    """
    path = checkpoint.latest(loop.checkpoint_dir)
    check(path, loop.module, loop.optimizer)
    model_state, state = checkpoint.load(path, loop.device)
    for key in ("precision", "accumulate"):  # older checkpoints: fp32, one micro-batch
        was = state.get(key, {"precision": "fp32", "accumulate": 1}[key])
        if was != getattr(loop, key):
            raise ValueError(
                f"{key} must be {was!r} to resume '{path}', as it was trained; "
                f"got {getattr(loop, key)!r}"
            )
    loop.module.load_state_dict(model_state)
    loop.optimizer.load_state_dict(state["optimizer"])
    if loop.scaler is not None and state.get("scaler") is not None:
        loop.scaler.load_state_dict(state["scaler"])
    if loop.scheduler is not None and state["scheduler"] is not None:
        loop.scheduler.load_state_dict(state["scheduler"])
    if loop.early_stopping is not None and state["early_stopping"] is not None:
        for k, v in state["early_stopping"].items():
            setattr(loop.early_stopping, k, v)
    loop.history.rows = list(state["history"])
    loop.step = state["step"]
    return state["epoch"] + 1

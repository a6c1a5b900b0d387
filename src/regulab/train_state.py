"""What a checkpoint of `fit` holds beside the weights, and resuming from it.

The state is the step counter, the optimizer's (and fp16's GradScaler's)
state, the LR scheduler's, early stopping's (best weights, patience), the
history rows, and the settings an exact resume needs unchanged (precision,
accumulate). `regulab.checkpoint` writes it without pickle. The loop object is
`regulab.train`'s `_Loop`.
"""

from regulab import checkpoint

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


def restore(loop) -> int:
    """Load the newest checkpoint of loop.checkpoint_dir into the loop; return the next epoch."""
    path = checkpoint.latest(loop.checkpoint_dir)
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

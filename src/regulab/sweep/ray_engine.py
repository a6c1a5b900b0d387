"""The Ray Tune engine for lambda sweeps (`--engine ray`).

The grid is split into contiguous chunks; each Ray Tune trial runs
`fn(values=chunk, **kwargs)`, one vectorized run of several strengths, and reports its
rows once as a JSON string. Actors are reused between trials. The rows are gathered
back in grid order, so the output equals the local engine's. Ray is imported lazily:
`pip install 'regulab[ray]'`.
"""

import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "pip install 'regulab[ray]'"


def chunks(values: list[float], n: int) -> list[list[float]]:
    """Split values into n contiguous chunks of near-equal size, in order.

    No chunk is empty: n is capped at len(values).
    """
    if n < 1:
        raise ValueError(f"n (the number of chunks) must be >= 1, got {n}")
    n = min(n, len(values))
    if n == 0:
        return []
    size, extra = divmod(len(values), n)  # the first `extra` chunks get one value more
    out, start = [], 0
    for i in range(n):
        stop = start + size + (i < extra)
        out.append(list(values[start:stop]))
        start = stop
    return out


def _trial(config: dict, fn, kwargs: dict, chunks: list[list[float]], cwd: str, threads=1):
    """One Ray Tune trial: the rows of one chunk, reported once as a JSON string."""
    import torch
    from ray import tune

    if os.path.isdir(cwd):  # Tune starts a trial in a directory of its own
        os.chdir(cwd)  # relative paths in kwargs mean the caller's
    torch.set_num_threads(max(1, int(threads)))  # the trial's share of the node's cores
    rows = fn(values=chunks[config["chunk"]], **kwargs)
    tune.report({"rows_json": json.dumps(rows)})


def run_on_ray(
    fn,
    kwargs: dict,
    chunks: list[list[float]],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: float = 1,
    gpus_per_trial: float = 0,
    storage: str | Path | None = None,
) -> tuple[list[dict], dict]:
    """Run fn(values=chunk, **kwargs) for every chunk as a Ray Tune trial; return (rows, info).

    The rows are those of all chunks, concatenated in chunk order.

    `fn` must be picklable (a module-level function) and return one JSON-serializable
    row per value.
    Without `address` and with Ray not yet initialized, a local instance with `num_cpus`
    (default: all cores) is started and shut down afterwards; an instance the caller
    started is reused and left running. Ray's result files go into `storage`, or into a
    temporary directory that is deleted afterwards. A trial asks for cpus_per_trial
    cores (torch then uses that many threads) and gpus_per_trial GPUs: Ray hides the
    GPUs from a trial that asks for none.
    """
    if not chunks or any(len(c) == 0 for c in chunks):
        raise ValueError(f"chunks must be a non-empty list of non-empty lists, got {chunks!r}")
    if cpus_per_trial <= 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial}")
    t0 = time.perf_counter()
    try:
        import ray
        from ray import tune
    except ImportError as e:
        raise ImportError(f"the ray engine needs Ray Tune, not installed: {INSTALL_HINT}") from e
    started = not ray.is_initialized()
    if started and address is None:
        num_cpus = num_cpus or os.cpu_count() or 1
        if cpus_per_trial > num_cpus:
            raise ValueError(f"cpus_per_trial ({cpus_per_trial}) exceeds num_cpus ({num_cpus})")
        # "local": never attach to RAY_ADDRESS or to the last cluster started on this machine
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
        )
    elif started:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    t1 = time.perf_counter()

    if storage is None:
        root = Path(tempfile.mkdtemp(prefix="regulab-ray-"))
    else:
        root = Path(storage).resolve()
    try:
        cpus = ray.cluster_resources().get("CPU", 1)
        trainable = tune.with_parameters(
            _trial, fn=fn, kwargs=kwargs, chunks=chunks, cwd=os.getcwd(), threads=cpus_per_trial
        )
        resources = {"cpu": cpus_per_trial, **({"gpu": gpus_per_trial} if gpus_per_trial else {})}
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space={"chunk": tune.grid_search(list(range(len(chunks))))},
            tune_config=tune.TuneConfig(
                reuse_actors=True,
                max_concurrent_trials=max(1, min(len(chunks), int(cpus // cpus_per_trial))),
            ),
            run_config=tune.RunConfig(
                name=f"regulab_sweep_{time.strftime('%Y-%m-%d_%H-%M-%S')}",
                storage_path=str(root),
                verbose=0,
                # one failed chunk spoils the sweep: stop at once
                failure_config=tune.FailureConfig(fail_fast=True),
            ),
        )
        with contextlib.redirect_stdout(io.StringIO()):  # Tune prints a header even at verbose=0
            grid = tuner.fit()

        by_chunk, errors = {}, {}
        for result in grid:
            if not result.config:
                continue  # a trial that fail_fast stopped before it started
            i = result.config["chunk"]
            if result.error is not None:
                errors[i] = result.error
            elif result.metrics and "rows_json" in result.metrics:
                by_chunk[i] = json.loads(result.metrics["rows_json"])
        if errors:
            i = min(errors)
            cause = getattr(errors[i], "cause", None) or errors[i]  # the error fn raised
            raise RuntimeError(
                f"Ray trial for chunk {i} (strengths {chunks[i]}) failed: "
                f"{type(cause).__name__}: {cause}"
            ) from errors[i]
        missing = [i for i in range(len(chunks)) if i not in by_chunk]
        if missing:
            raise RuntimeError(f"Ray returned no rows for chunks {missing} of {len(chunks)}")
        for i, chunk in enumerate(chunks):
            if len(by_chunk[i]) != len(chunk):
                raise RuntimeError(
                    f"chunk {i} has {len(chunk)} strengths but fn returned {len(by_chunk[i])} rows"
                )
        info = {
            "engine": "ray",
            "trials": len(chunks),
            "address": ray.get_runtime_context().gcs_address,
            "ray_version": ray.__version__,
            "cluster_cpus": cpus,
            "started_ray": started,
            "storage": grid.experiment_path if storage is not None else None,
        }
    finally:
        if storage is None:
            shutil.rmtree(root, ignore_errors=True)
        if started:
            ray.shutdown()
    info["seconds_startup"] = t1 - t0  # import and ray.init
    info["seconds_total"] = time.perf_counter() - t0
    return [row for i in range(len(chunks)) for row in by_chunk[i]], info

"""The Ray Tune engine: chunking, rows in grid order equal to a local run, errors, storage."""

import os
import sys
import tempfile
from pathlib import Path

import pytest

from regulab.sweep.ray_engine import chunks, run_on_ray

ray = pytest.importorskip("ray")
# Ray's workers cannot import this test module: pickle its toy functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

GRID = [0.0, 0.001, 0.01, 0.1, 0.3, 1.0, 3.0]


def toy_rows(values, scale, data_file):
    """A stand-in for compute_rows: one row per strength; reads a path relative to the cwd."""
    offset = float(Path(data_file).read_text())
    return [
        {
            "lambda": v,
            "loss": scale * v**2 + offset,
            "chunk_size": len(values),
            "note": None,
            "path": [v, -v],
        }
        for v in values
    ]


def failing_rows(values):
    if 0.5 in values:
        raise ValueError("loss diverged at lambda=0.5")
    return [{"lambda": v} for v in values]


def pid_rows(values):
    return [{"lambda": v, "pid": os.getpid()} for v in values]


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module: start-up takes seconds."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def test_chunks_sizes_and_order():
    parts = chunks(GRID, 3)
    assert [len(p) for p in parts] == [3, 2, 2]
    assert [v for p in parts for v in p] == GRID
    assert chunks(GRID, 1) == [GRID]
    assert chunks(GRID, 100) == [[v] for v in GRID]  # n capped at len(values)
    assert chunks([], 4) == []
    with pytest.raises(ValueError, match="n"):
        chunks(GRID, 0)


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'regulab\[ray\]'"):
        run_on_ray(failing_rows, {}, [[0.1]])


def test_rows_in_grid_order_equal_local_run(ray_instance, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("offset.txt").write_text("0.25")
    results_home = Path.home() / "ray_results"
    existed = results_home.exists()
    kwargs = {"scale": 2.0, "data_file": "offset.txt"}  # a relative path, as a user would give
    parts = chunks(GRID, 3)
    # Pretend Ray is not running, to see run_on_ray start and stop its own instance
    # (for real it reuses the shared one: a second start-up would cost seconds).
    calls = []
    answers, real = iter([False]), ray.is_initialized  # only run_on_ray's own first call
    monkeypatch.setattr(ray, "is_initialized", lambda: next(answers, real()))
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append(("shutdown", {})))
    rows, info = run_on_ray(toy_rows, kwargs, parts, num_cpus=2)
    assert rows == [row for p in parts for row in toy_rows(p, **kwargs)]
    assert [r["lambda"] for r in rows] == GRID
    assert calls[0][0] == "init" and calls[-1][0] == "shutdown" and len(calls) == 2
    assert calls[0][1]["address"] == "local" and calls[0][1]["num_cpus"] == 2
    assert calls[0][1]["include_dashboard"] is False
    assert info["engine"] == "ray" and info["trials"] == 3 and info["started_ray"]
    assert info["ray_version"] == ray.__version__ and info["cluster_cpus"] == 2
    assert info["seconds_total"] > info["seconds_startup"] > 0
    assert info["storage"] is None  # temporary results: deleted, so not named
    assert not list(Path(tempfile.gettempdir()).glob("regulab-ray-*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["offset.txt"]  # nothing in the cwd
    assert results_home.exists() == existed


def test_storage_kept_and_actors_reused(ray_instance, tmp_path):
    values = [0.1 * k for k in range(6)]
    rows, info = run_on_ray(pid_rows, {}, chunks(values, 6), storage=tmp_path / "results")
    assert [r["lambda"] for r in rows] == values
    assert not info["started_ray"] and ray.is_initialized()  # the caller's instance is kept
    assert len({r["pid"] for r in rows}) <= 2  # 6 trials on 2 CPUs: actors are reused
    assert Path(info["storage"]).parent == tmp_path / "results"
    assert (Path(info["storage"]) / "tuner.pkl").exists()


def test_failing_chunk_raises_naming_it(ray_instance):
    match = r"chunk 1 \(strengths \[0.5\]\).*ValueError: loss diverged at lambda=0.5"
    with pytest.raises(RuntimeError, match=match):
        run_on_ray(failing_rows, {}, [[0.1], [0.5], [0.9]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        run_on_ray(failing_rows, {}, [[0.1], []])
    with pytest.raises(ValueError, match="cpus_per_trial"):
        run_on_ray(failing_rows, {}, [[0.1]], cpus_per_trial=0)

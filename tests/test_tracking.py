"""MLflow conventions: URI handling, fail-fast checks, get-or-create under a race, the Lightning logger."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tglassmlp.tracking import (
    MlflowTracking,
    TrackingStoreError,
    check_tracking_uri,
    get_or_create_experiment,
    make_client,
    normalize_tracking_uri,
    retry,
)
from tglassmlp.training.logger import MlflowRunLogger


def fresh_store(request, directory: Path) -> str:
    """URI of a new sqlite store in ``directory``, copied from a template with MLflow's schema.

    Creating the schema runs MLflow's migrations (7-40 s on this machine); the template is made once and kept
    in pytest's cache directory, keyed by the MLflow version.
    """
    import mlflow

    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    folder = Path(cache.mkdir("mlflow-store")) if cache is not None else Path(tempfile.gettempdir())
    template = folder / f"tglassmlp-empty-mlflow-{mlflow.__version__}-uid{os.getuid()}.db"
    if not template.exists():
        tmp = template.with_name(f"{template.name}.tmp-{os.getpid()}")
        make_client(f"sqlite:///{tmp}")
        os.replace(tmp, template)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_relative_sqlite_uri_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_tracking_uri("sqlite:///outputs/mlflow.db") == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    assert normalize_tracking_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert normalize_tracking_uri("http://host:5000") == "http://host:5000"
    with pytest.raises(TrackingStoreError, match="folder store"):
        normalize_tracking_uri("mlruns")


def test_unreachable_server_fails_fast():
    t0 = time.perf_counter()
    with pytest.raises(TrackingStoreError, match="cannot be reached"):
        check_tracking_uri(f"http://127.0.0.1:{_closed_port()}", timeout=2)
    assert time.perf_counter() - t0 < 5


def test_unwritable_sqlite_store_fails_fast(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TrackingStoreError, match="cannot be opened"):
        check_tracking_uri(f"sqlite:///{blocker}/sub/mlflow.db")


def test_get_or_create_experiment_under_a_race(request, tmp_path):
    # the schema exists beforehand, as PrepareTrackingStore ensures before parallel jobs
    uri = check_tracking_uri(fresh_store(request, tmp_path))
    ids, errors = [], []

    def worker():
        try:
            ids.append(get_or_create_experiment(make_client(uri), "race", (tmp_path / "art").as_uri()))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1 and len(ids) == 4


def test_retry_only_retries_transient_errors():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    assert retry(flaky, "x", delay=0.001) == "ok" and len(calls) == 3
    with pytest.raises(ValueError):
        retry(lambda: (_ for _ in ()).throw(ValueError("bad value")), "y", delay=0.001)


def test_run_lifecycle_and_lightning_logger(request, tmp_path):
    tracking = MlflowTracking(fresh_store(request, tmp_path), "study", str(tmp_path / "art"))
    exp = tracking.prepare()
    run_id = tracking.start_run({"seed": 0, "sweep_id": "s", "skipped": None}, run_name="seed0")
    tracking.log_params({"model.n_bottleneck": 2, "long": "x" * 10000})
    logger = MlflowRunLogger(tracking)
    logger.log_metrics({"val/T0.600_c0.50/pearson": 0.5, "epoch": 3}, step=3)
    (tmp_path / "a.txt").write_text("hello")
    tracking.log_artifact(tmp_path / "a.txt", "misc")
    tracking.end()
    run = tracking.client.get_run(run_id)
    assert run.info.experiment_id == exp and run.info.status == "FINISHED"
    assert run.data.tags["seed"] == "0" and "skipped" not in run.data.tags
    assert run.data.tags["mlflow.runName"] == "seed0"
    assert run.data.metrics == {"val/T0.600_c0.50/pearson": 0.5}
    assert len(run.data.params["long"]) == 6000
    assert [f.path for f in tracking.client.list_artifacts(run_id, "misc")] == ["misc/a.txt"]
    assert tracking.ui_link().endswith(f"/#/experiments/{exp}/runs")

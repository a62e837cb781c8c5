"""Parallel training sweeps on one shared sqlite MLflow store: 3 joblib multiruns of 4 jobs, nothing lost.

Each sweep is ``train.py -m seed=... launcher=joblib hydra.launcher.n_jobs=4 debug=fast`` on a small synthetic
dataset: 4 processes create their runs, log params, metrics (every step) and artefacts into one sqlite
database at the same time, then the launching process scores and tags the 4 runs (self-consistency
selection). The three sweeps run one after the other in one Python process (each a full Hydra multirun
with its own sweep folder); joblib keeps its 4 worker processes between them, which saves the import of
torch / Lightning / MLflow in each (the expensive part on 2 cores) without changing what reaches the store.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from test_datamodule import make_synthetic_dataset
from test_tracking import fresh_store
from tglassmlp.paths import PROJECT_ROOT

N_JOBS, N_SWEEPS = 4, 3

DRIVER = textwrap.dedent("""
    import runpy, sys
    from hydra.core.global_hydra import GlobalHydra

    common = sys.argv[1:]
    for k in range({n_sweeps}):
        seeds = ",".join(str({n_jobs} * k + j) for j in range({n_jobs}))
        sys.argv = ["train.py", "-m", f"seed={{seeds}}", f"hydra.sweep.dir={{common[0]}}/sweep{{k}}", *common[1:]]
        try:
            runpy.run_path("train.py", run_name="__main__")
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
        GlobalHydra.instance().clear()
        print(f"SWEEP {{k}} DONE", flush=True)
    # stop the reused joblib workers now rather than in the interpreter's exit handlers
    from joblib.externals.loky import get_reusable_executor
    get_reusable_executor().shutdown(wait=True, kill_workers=True)
""").format(n_sweeps=N_SWEEPS, n_jobs=N_JOBS)


def _joblib_installed():
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.skipif(not _joblib_installed(), reason="hydra-joblib-launcher not installed")
def test_three_parallel_sweeps_on_one_sqlite_store_lose_no_run(request, tmp_path):
    root = make_synthetic_dataset(tmp_path / "data", temperatures=(0.5, 0.6), n_structures=4, n=60, box=8.5,
                                  no_md_temperatures=(0.4,))
    uri = fresh_store(request, tmp_path)
    db = tmp_path / "mlflow.db"
    common = [str(tmp_path / "sweeps"), "launcher=joblib", f"hydra.launcher.n_jobs={N_JOBS}", "debug=fast",
              f"data.root={root}", f"logger.tracking_uri={uri}", f"paths.output_dir={tmp_path}/out",
              "trainer.enable_progress_bar=false", "logger.log_figures=false", "trainer.limit_train_batches=4",
              "trainer.limit_val_batches=2", "study=parallel"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", DRIVER, *common], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    assert all(f"SWEEP {k} DONE" in proc.stdout for k in range(N_SWEEPS)), proc.stdout[-3000:]

    # the database itself is sound
    con = sqlite3.connect(str(db))
    try:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("parallel/train")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("kind") == "sweep"}
    assert len(parents) == N_SWEEPS and all(p.info.status == "FINISHED" for p in parents.values())
    runs = [r for r in runs if r.info.run_id not in parents]
    assert len(runs) == N_JOBS * N_SWEEPS, [(r.info.run_name, r.info.status) for r in runs]
    assert sorted(int(r.data.tags["seed"]) for r in runs) == list(range(N_JOBS * N_SWEEPS))
    by_sweep: dict[str, list] = {}
    for r in runs:
        assert r.info.status == "FINISHED", (r.info.run_name, r.info.status)
        assert r.data.params["seed"] == r.data.tags["seed"]
        assert "test/avg/pearson" in r.data.metrics and "train/loss" in r.data.metrics
        # every logged step of the training loss reached the store (4 batches x 3 epochs, one per step)
        history = client.get_metric_history(r.info.run_id, "train/loss")
        assert len({m.step for m in history}) == len(history) >= 3
        arts = {f.path for f in client.list_artifacts(r.info.run_id, "model")}
        assert {"model/state_dict.pt", "model/scaler.npz", "model/network.yaml"} <= arts
        assert r.data.tags["ensemble.selected"] in ("true", "false")
        by_sweep.setdefault(r.data.tags["sweep_id"], []).append(int(r.data.tags["seed"]))
        # the joblib workers found their sweep's parent run (written by the launching process)
        assert parents[r.data.tags["mlflow.parentRunId"]].data.tags["sweep_id"] == r.data.tags["sweep_id"]
    assert sorted(sorted(s) for s in by_sweep.values()) == [
        list(range(N_JOBS * k, N_JOBS * (k + 1))) for k in range(N_SWEEPS)]


def test_unreachable_store_stops_the_sweep_before_any_job(tmp_path):
    """An http store that does not answer: `train.py -m` exits non-zero with the reason, launching no job."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the socket is
    # no data needed: the sweep must stop before any job would look for them
    proc = subprocess.run([sys.executable, "train.py", "-m", "seed=0,1", "launcher=joblib", f"data.root={tmp_path}",
                           f"logger.tracking_uri=http://127.0.0.1:{port}", f"paths.output_dir={tmp_path}/out"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert f"train.py: MLflow server http://127.0.0.1:{port} cannot be reached" in proc.stderr, proc.stderr[-2000:]
    assert "Launching" not in proc.stdout + proc.stderr

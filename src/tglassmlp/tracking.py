"""MLflow conventions of the project: experiments by purpose, one parent run per sweep, one run per job.

* Experiments: ``<study>/train`` (the training runs of every sweep of the study), ``<study>/predict`` and
  ``<study>/analyze`` (:func:`experiment_name`), so that the UI's experiment list reads like the study. Stores
  written before this layout have one experiment ``<study>`` with everything in it; the readers fall back
  on it (:func:`legacy_experiment_names`).
* A multirun of train.py has a parent run (tag ``kind`` = ``sweep``), created before the jobs start
  (:class:`tglassmlp.callbacks.PrepareTrackingStore`) and recorded in ``<sweep dir>/mlflow_parent.json``
  (:func:`write_sweep_parent`), which every job reads to make its run a child (tag ``mlflow.parentRunId``):
  the jobs may run in other processes (joblib, SLURM) that share only the sweep folder and the store. At the
  end of the sweep it receives the selection table and the registered ensemble
  (:mod:`tglassmlp.ensemble.registry`). A single train.py run has no parent.
* The runs table opens on the columns that compare networks: an experiment tag ``mlflow.sharedViewState.<key>``
  holds a view (columns, order, expanded parents) that the printed link selects with ``?viewStateShareKey=``
  (:func:`set_default_view`, :meth:`MlflowTracking.ui_link`); MLflow's own default shows no metric column.
* Store: ``sqlite:///outputs/mlflow.db`` by default (a database, not a ./mlruns folder); artefacts under
  ``outputs/mlflow-artifacts/<experiment id>/<run id>/artifacts``. A relative sqlite path is made absolute
  (a job that changes directory still writes to the same database).
* Parallel jobs (Hydra joblib/SLURM launchers) share the store. The database schema and the experiment are
  created once before the jobs start (:class:`tglassmlp.callbacks.PrepareTrackingStore`, a Hydra callback run at
  ``on_multirun_start``); creation is also get-or-create with retries, so a job started without the callback
  tolerates a concurrent creator. Writes retry briefly on a locked sqlite database.
* A store that cannot be reached fails the job before any data is read or any epoch is spent
  (:meth:`MlflowTracking.prepare`).
* Tags of every run: ``seed``, ``sweep_id`` (the Hydra multirun directory, or the run directory of a single
  job), ``dataset_hash``, ``git_commit`` (+ ``git_dirty``), and MLflow's own ``mlflow.source.git.commit``.
  Params are a curated set (model sizes, schedule, data state points, seed), not the flattened config.

Lightning sees the run through :class:`tglassmlp.training.logger.MlflowRunLogger`, which logs metrics only (params and tags are set
here, once).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: MLflow refuses longer param values (MLflow >= 2.x allows 6000 characters).
MAX_PARAM_LENGTH = 6000
#: the purposes of a study's experiments (``<study>/<purpose>``)
PURPOSES = ("train", "predict", "analyze")
#: tag of MLflow's nested runs (the UI groups children under their parent)
PARENT_RUN_TAG = "mlflow.parentRunId"
#: where a multirun records its parent run (in the sweep folder)
SWEEP_PARENT_FILE = "mlflow_parent.json"
#: the key of the runs-table view that the printed links open (experiment tag mlflow.sharedViewState.<key>)
VIEW_KEY = "tglassmlp"
#: the columns of that view: the numbers that compare networks, then what the selection made of them
KEY_COLUMNS = ("metrics.`test/pearson_mean`", "metrics.`test/rho_max_mean`", "metrics.`test/pearson_over_ceiling`",
               "metrics.`selection/score`", "metrics.`selection/selected`", "metrics.`selection/n_selected`",
               "params.`seed`", "tags.`ensemble.selection_basis`")


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store cannot be reached or used (the message names the URI and the fix)."""


# ------------------------------------------------------------------------------------------------- store
def normalize_tracking_uri(uri: str) -> str:
    """Absolute sqlite path for a relative ``sqlite:///relative/path.db``; other URIs are returned unchanged.

    (``sqlite:///`` + a relative path is relative to the working directory; ``sqlite:////abs`` is absolute.)
    """
    uri = str(uri)
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if not path.startswith("/") and path != ":memory:":
            return "sqlite:///" + str(Path(path).resolve())
    elif "://" not in uri and not uri.startswith("databricks"):
        raise TrackingStoreError(f"tracking URI {uri!r} is a plain path, which MLflow treats as a ./mlruns-style "
                                 f"folder store; use sqlite:///{uri}.db (or an http:// server)")
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite URI, None for other stores."""
    uri = normalize_tracking_uri(uri)
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_tracking_uri(uri: str, timeout: float = 10.0) -> str:
    """Fail fast (TrackingStoreError) when the store cannot be reached; returns the normalised URI.

    sqlite: the directory must be creatable and the file writable (opened with the sqlite3 module, which
    creates it). http(s): ``<uri>/health`` must answer within ``timeout`` seconds (MLflow's own client would
    retry for minutes before giving up).
    """
    uri = normalize_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        import sqlite3

        try:
            db.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(str(db), timeout=timeout)
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()
        except (OSError, sqlite3.Error) as exc:
            raise TrackingStoreError(f"MLflow tracking store {uri} cannot be opened ({type(exc).__name__}: {exc}); "
                                     "set logger.tracking_uri=sqlite:///WRITABLE/PATH.db") from None
    elif uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                if resp.status != 200:
                    raise TrackingStoreError(f"MLflow server {uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingStoreError(f"MLflow server {uri} cannot be reached ({exc}); start it (make ui / "
                                     "mlflow server) or set logger.tracking_uri=sqlite:///outputs/mlflow.db") from None
    return uri


def _is_transient(exc: Exception) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in ("database is locked", "database table is locked", "busy",
                                   "already exists", "unique constraint", "integrityerror", "operationalerror"))


def retry(fn: Callable[[], T], what: str, attempts: int = 8, delay: float = 0.25) -> T:
    """Call ``fn``, retrying with exponential back-off on errors of a shared sqlite store (locked database,
    concurrent creation); other errors propagate at once."""
    for k in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MLflow wraps sqlalchemy errors in MlflowException
            if k == attempts - 1 or not _is_transient(exc):
                raise
            log.debug("%s: %s; retrying", what, exc)
            time.sleep(delay * 2**k)
    raise AssertionError("unreachable")


def get_or_create_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """Experiment id of ``name``, creating it if needed; safe when several processes race to create it."""
    from mlflow.exceptions import MlflowException

    def attempt() -> str:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingStoreError(f"MLflow experiment {name!r} is deleted in this store; restore it "
                                         "(mlflow experiments restore) or choose another study name")
            return exp.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS" or _is_transient(exc):
                # another process won the race: read its experiment on the next attempt
                raise RuntimeError(f"already exists: {exc}") from exc
            raise

    return retry(attempt, f"experiment {name!r}")


def make_client(uri: str):
    """An MlflowClient on a normalised URI. For sqlite the schema is created (or migrated) here."""
    from mlflow.tracking import MlflowClient

    return retry(lambda: MlflowClient(tracking_uri=uri), f"open {uri}")


# ------------------------------------------------------------------------------------------------ provenance
def git_commit(root: str | os.PathLike | None = None) -> tuple[str, bool]:
    """(HEAD commit hash or 'unknown', whether the work tree has uncommitted changes)."""
    from tglassmlp.paths import PROJECT_ROOT

    cwd = str(root or PROJECT_ROOT)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return head, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def provenance_tags(root: str | os.PathLike | None = None) -> dict[str, str]:
    """The code a run was made with: ``git_commit``, ``git_dirty`` and MLflow's ``mlflow.source.git.commit``."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    commit, dirty = git_commit(root)
    return {"git_commit": commit, "git_dirty": str(dirty).lower(), MLFLOW_GIT_COMMIT: commit}


def hydra_job_info() -> dict[str, str]:
    """sweep_id, job number, output directory, overrides and 'multirun' ('true'/'false') of the current Hydra
    job ({} outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # not inside a Hydra app (tests call train() directly)
        return {}
    multirun = hc.mode == RunMode.MULTIRUN
    return {
        "sweep_id": str(Path(hc.sweep.dir).resolve()) if multirun else str(Path(hc.runtime.output_dir).resolve()),
        "hydra_job_num": str(hc.job.num) if multirun else "0",
        "output_dir": str(Path(hc.runtime.output_dir).resolve()),
        "overrides": " ".join(hc.overrides.task),
        "multirun": str(multirun).lower(),
    }


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """{'a.b': v} from nested mappings; lists stay whole (one param each)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


# ------------------------------------------------------------------------------------------ experiments, sweeps
def experiment_name(study: str, purpose: str) -> str:
    """``<study>/<purpose>``: the experiment of a study's training runs, predictions or analyses."""
    if purpose not in PURPOSES:
        raise ValueError(f"experiment purpose must be one of {PURPOSES}, got {purpose!r}")
    return f"{study}/{purpose}"


def legacy_experiment_names(name: str) -> list[str]:
    """The experiments to look in for ``name``, newest layout first: ``<study>/train`` is also looked up as
    ``<study>`` (stores written before the experiments by purpose held every run of a study there)."""
    study, _, purpose = str(name).rpartition("/")
    return [name, study] if study and purpose in PURPOSES else [name]


def find_experiment(client, name: str):
    """The first existing, active experiment of :func:`legacy_experiment_names` (None when none exists)."""
    for candidate in legacy_experiment_names(name):
        exp = client.get_experiment_by_name(candidate)
        if exp is not None and exp.lifecycle_stage != "deleted":
            if candidate != name:
                log.info("MLflow: no experiment %r in this store; using %r (the layout before experiments by "
                         "purpose)", name, candidate)
            return exp
    return None


def write_sweep_parent(sweep_dir: str | os.PathLike, run_id: str, experiment_id: str, tracking_uri: str) -> Path:
    """Record a multirun's parent run in its sweep folder (atomically), for the jobs to find."""
    from tglassmlp.atomic import write_json_atomic

    path = Path(sweep_dir) / SWEEP_PARENT_FILE
    write_json_atomic(path, {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": tracking_uri})
    return path


def read_sweep_parent(sweep_dir: str | os.PathLike | None) -> dict[str, str] | None:
    """{'run_id', 'experiment_id', 'tracking_uri'} of a sweep's parent run; None when it has none (a sweep
    started without :class:`~tglassmlp.callbacks.PrepareTrackingStore`, or not a sweep)."""
    if not sweep_dir:
        return None
    path = Path(sweep_dir) / SWEEP_PARENT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("%s cannot be read (%s); the jobs' runs will have no parent", path, exc)
        return None


def set_default_view(client, experiment_id: str, columns=KEY_COLUMNS, expanded: tuple[str, ...] = (),
                     order_by: str = "attributes.start_time", key: str = VIEW_KEY,
                     name: str = "tglassmlp: compare networks") -> None:
    """Store a runs-table view (the selected ``columns``, newest runs first, the ``expanded`` parent runs) as
    the experiment tag ``mlflow.sharedViewState.<key>``: the saved-view record of the MLflow 3 UI (an envelope
    {name, createdAt, updatedAt, state: JSON of the view}), listed among the experiment's saved views and
    opened by ``#/experiments/<id>/runs?viewStateShareKey=<key>``."""
    view = {"selectedColumns": list(columns), "runsExpanded": {r: True for r in expanded},
            "orderByKey": order_by, "orderByAsc": False}
    now = int(time.time() * 1000)
    record = json.dumps({"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(view)})
    retry(lambda: client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{key}", record),
          "set the runs-table view")


def ui_link(experiment_id: str | None, tracking_uri: str | None = None, port: int = 5000,
            view: str | None = VIEW_KEY) -> str:
    """Link to an experiment's runs table: on the server itself for an http(s) store, else on ``make ui``
    (127.0.0.1:``port``). ``view``: the stored view to open (:func:`set_default_view`), None for MLflow's."""
    uri = str(tracking_uri or "")
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"
    link = f"{base}/#/experiments/{experiment_id}/runs"
    return f"{link}?viewStateShareKey={view}" if view else link


# ------------------------------------------------------------------------------------------------ runs
class MlflowTracking:
    """The MLflow side of one training job (configured by ``conf/logger/mlflow.yaml``).

    Args:
        tracking_uri: store URI (sqlite:///PATH.db, http://HOST:PORT, ...).
        experiment_name: the experiment (``<study>/train`` etc., :func:`experiment_name`).
        artifact_location: folder for the experiment's artefacts when the experiment is created here (sqlite
            stores; a server decides for itself). None: MLflow's default (./mlruns under the working dir).
        run_name: MLflow run name; None gives ``seed<seed>``.
        log_figures: save the figures as artefacts.
        parent_run_id: runs created here become children of this run (tag ``mlflow.parentRunId``), unless
            their tags name a parent themselves.

    Nothing touches the store before :meth:`prepare`, so the object can be built in config tests.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_location: str | None = None,
                 run_name: str | None = None, log_figures: bool = True, parent_run_id: str | None = None):
        self.tracking_uri = str(tracking_uri)
        self.experiment_name = str(experiment_name)
        self.artifact_location = artifact_location
        self.run_name = run_name
        self.log_figures = bool(log_figures)
        self.parent_run_id = parent_run_id
        self.client = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None

    def _artifact_uri(self) -> str | None:
        if self.tracking_uri.startswith(("http://", "https://")):
            return None  # a server keeps (and serves) the artefacts itself: clients upload them through it
        if self.artifact_location is None or "://" in str(self.artifact_location):
            return self.artifact_location
        return Path(self.artifact_location).resolve().as_uri()

    def prepare(self) -> str:
        """Check the store, create schema and experiment (idempotent). Returns the experiment id."""
        if self.experiment_id is None:
            self.tracking_uri = check_tracking_uri(self.tracking_uri)
            self.client = make_client(self.tracking_uri)
            self.experiment_id = get_or_create_experiment(self.client, self.experiment_name, self._artifact_uri())
        return self.experiment_id

    def start_run(self, tags: Mapping[str, Any], run_name: str | None = None) -> str:
        """Create the job's run with its tags; returns the run id."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        self.prepare()
        name = self.run_name or run_name
        tags = {str(k): str(v) for k, v in tags.items() if v is not None}
        if self.parent_run_id and PARENT_RUN_TAG not in tags:
            tags[PARENT_RUN_TAG] = str(self.parent_run_id)
        if name:
            tags[MLFLOW_RUN_NAME] = name
        run = retry(lambda: self.client.create_run(self.experiment_id, tags=tags, run_name=name), "create run")
        self.run_id = run.info.run_id
        return self.run_id

    def open_run(self, tags: Mapping[str, Any], run_name: str | None = None, *, reopen: str | None = None,
                 provenance: bool = True) -> str:
        """A run to log into: ``reopen`` (a run id recorded by a resumable job) marked RUNNING again when the
        store still has it, else a new run with ``tags`` (and :func:`provenance_tags` unless ``provenance`` is
        False; ``tags`` win). Sets and returns ``run_id``."""
        self.prepare()
        if reopen is not None:
            try:
                self.client.get_run(reopen)
                retry(lambda: self.client.update_run(reopen, status="RUNNING"), "reopen run")
                self.run_id = reopen
                return reopen
            except Exception:  # deleted from the store: make a new one
                log.warning("run %s is gone from the store %s; creating a new one", reopen, self.tracking_uri)
        return self.start_run({**(provenance_tags() if provenance else {}), **dict(tags)}, run_name)

    def end_run(self, run_id: str | None = None, status: str = "FINISHED") -> None:
        """Mark a run (default: the current one) FINISHED / FAILED / KILLED."""
        run_id = run_id or self.run_id
        if run_id is not None:
            retry(lambda: self.client.set_terminated(run_id, status), "end run")

    @contextmanager
    def run(self, tags: Mapping[str, Any], run_name: str | None = None, *, reopen: str | None = None,
            provenance: bool = True) -> Iterator[str]:
        """The run lifecycle of every job (train, predict, analyze, transfer): :meth:`open_run`, yield its id,
        then FINISHED, or FAILED when the block raises (KILLED on Ctrl-C); the exception propagates. A job
        killed by a signal leaves the run RUNNING (harmless; a resumable job reopens it)."""
        run_id = self.open_run(tags, run_name, reopen=reopen, provenance=provenance)
        try:
            yield run_id
        except BaseException as exc:
            self.end_run(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        self.end_run(run_id, "FINISHED")

    def log_params(self, params: Mapping[str, Any], *, run_id: str | None = None) -> None:
        from mlflow.entities import Param

        run_id = run_id or self.run_id
        items = [Param(str(k), str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow's limit per batch
            retry(lambda chunk=items[start:start + 100]: self.client.log_batch(run_id, params=chunk),
                  "log params")

    def set_tags(self, tags: Mapping[str, Any], *, run_id: str | None = None) -> None:
        from mlflow.entities import RunTag

        run_id = run_id or self.run_id
        batch = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        retry(lambda: self.client.log_batch(run_id, tags=batch), "set tags")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, *, run_id: str | None = None) -> None:
        from mlflow.entities import Metric

        run_id = run_id or self.run_id
        stamp = int(time.time() * 1000)
        batch = [Metric(str(k), float(v), stamp, int(step or 0)) for k, v in metrics.items()]
        for start in range(0, len(batch), 1000):
            retry(lambda chunk=batch[start:start + 1000]: self.client.log_batch(run_id, metrics=chunk),
                  "log metrics")

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None, *,
                     run_id: str | None = None) -> None:
        run_id = run_id or self.run_id
        retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path), f"log artefact {path}")

    def end(self, status: str = "FINISHED") -> None:
        """Mark the current run FINISHED / FAILED / KILLED (:meth:`end_run`)."""
        self.end_run(None, status)

    def ui_link(self, port: int = 5000, view: str | None = None) -> str:
        """Link to the experiment's runs table (:func:`ui_link`; MLflow 3 would open experiments in a GenAI
        overview); ``view``: a view stored by :func:`set_default_view` (training experiments)."""
        return ui_link(self.experiment_id, self.tracking_uri, port, view)

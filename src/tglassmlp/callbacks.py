"""The Hydra callbacks of the multiruns (``hydra.callbacks`` in the primary configs): for train.py
:class:`PrepareTrackingStore` before the jobs start (store, experiment, the sweep's parent run) and
:class:`SelectSelfConsistent` after they end (selection, parent run's table, registry); for
simulate.py :class:`ExpectSweepShards` before the jobs start."""

from __future__ import annotations

import atexit
import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from tglassmlp.ensemble.manifest import MANIFEST_NAME
from tglassmlp.ensemble.registry import SELECTED_ALIAS, record_sweep
from tglassmlp.ensemble.selection import SWEEP_KIND, format_summary, select_sweep
from tglassmlp.tracking import (MlflowTracking, TrackingStoreError, provenance_tags, read_sweep_parent,
                                set_default_view, ui_link, write_sweep_parent)

log = logging.getLogger(__name__)

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra-core < 1.1
    _HydraCallback = object


#: parent runs of this process's multiruns that are not ended yet: {sweep dir: (MlflowTracking, run id)}
_OPEN_PARENTS: dict[str, tuple[MlflowTracking, str]] = {}


def _fail_open_parents() -> None:
    """atexit: a multirun that ends without its end callbacks (a job raised: Hydra re-raises before
    ``on_multirun_end``; Ctrl-C) leaves its parent run FAILED, not RUNNING."""
    for sweep, (tracking, run_id) in list(_OPEN_PARENTS.items()):
        try:
            tracking.end_run(run_id, "FAILED")
        except Exception as exc:  # noqa: BLE001 - exiting anyway; say why the run stays RUNNING
            log.warning("could not mark the sweep run %s FAILED: %s", run_id, exc)
        _OPEN_PARENTS.pop(sweep, None)


atexit.register(_fail_open_parents)


def _end_parent(sweep_dir: Path, status: str) -> None:
    entry = _OPEN_PARENTS.pop(str(sweep_dir), None)
    if entry is not None:
        tracking, run_id = entry
        tracking.end_run(run_id, status)


class PrepareTrackingStore(_HydraCallback):
    """Hydra callback: before the jobs of a multirun start, in the launching process, create the store schema
    and the training experiment (parallel jobs then only add runs) and the sweep's parent run, recorded in
    ``<sweep dir>/mlflow_parent.json`` for the jobs (:func:`tglassmlp.tracking.write_sweep_parent`). Also stops
    the whole sweep before any job is launched when the store cannot be reached (SystemExit with the reason).
    At the end of the multirun the parent is ended FINISHED (unless :class:`SelectSelfConsistent` has ended
    it); a multirun that raises leaves it FAILED. Reads ``logger.tracking_uri``, ``logger.experiment_name``,
    ``logger.artifact_location``, ``study``.
    """

    def __init__(self, parent_run: bool = True):
        self.parent_run = bool(parent_run)

    def on_multirun_start(self, config, **kwargs) -> None:
        logger = config.get("logger")
        if logger is None or "tracking_uri" not in logger:
            return
        cfg = OmegaConf.to_container(logger, resolve=True)
        tracking = MlflowTracking(cfg["tracking_uri"], cfg.get("experiment_name") or config.study,
                                  cfg.get("artifact_location"))
        try:
            exp = tracking.prepare()
        except TrackingStoreError as exc:
            # Hydra turns a callback's Exception into a warning and launches the jobs anyway (on SLURM: an
            # array of jobs that each queue, start and fail). SystemExit is not an Exception: the sweep stops
            # here, before any job is launched, with the reason.
            raise SystemExit(f"{config.hydra.job.name}.py: {exc}") from None
        if not self.parent_run:
            log.info("MLflow: experiment %r (id %s) in %s", tracking.experiment_name, exp, tracking.tracking_uri)
            return
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = " ".join(config.hydra.overrides.task)
        run_id = tracking.start_run({**provenance_tags(), "kind": SWEEP_KIND, "sweep_id": str(sweep_dir),
                                     "study": config.get("study"), "overrides": overrides},
                                    run_name=f"sweep {sweep_dir.name}")
        write_sweep_parent(sweep_dir, run_id, exp, tracking.tracking_uri)
        _OPEN_PARENTS[str(sweep_dir)] = (tracking, run_id)
        try:
            set_default_view(tracking.client, exp, expanded=(run_id,))
        except Exception as exc:  # noqa: BLE001 - a convenience of the UI only
            log.warning("could not store the runs-table view: %s", exc)
        log.info("MLflow: sweep run %s in experiment %r (id %s), %s", run_id, tracking.experiment_name, exp,
                 tracking.tracking_uri)

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.parent_run and config.get("logger") is not None:
            _end_parent(Path(config.hydra.sweep.dir).resolve(), "FINISHED")


class SelectSelfConsistent(_HydraCallback):
    """Hydra callback: at the end of a multirun, run :func:`select_sweep` on its runs and write
    ``<sweep dir>/ensemble.json``; give the sweep's parent run the selection table and summary, and register
    the selected networks as a version of ``registered_model`` with ``alias`` (:func:`record_sweep`; null
    ``registered_model``: no registration). The parent run is ended FINISHED, or FAILED when the selection
    fails. ``levels`` null: the data config's levels; ``fallback_top_k``: see :func:`select_sweep`."""

    def __init__(self, threshold: float = 1e-4, levels: Sequence[float] | None = None, enabled: bool = True,
                 fallback_top_k: int | None = None, registered_model: str | None = None,
                 alias: str = SELECTED_ALIAS):
        self.threshold = float(threshold)
        self.levels = None if levels is None else [float(c) for c in levels]
        self.enabled = bool(enabled)
        self.fallback_top_k = None if fallback_top_k is None else int(fallback_top_k)
        self.registered_model = registered_model or None
        self.alias = str(alias)

    def on_multirun_end(self, config, **kwargs) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        logger = OmegaConf.to_container(config.logger, resolve=True)
        data = OmegaConf.to_container(config.data, resolve=True)
        experiment = logger.get("experiment_name") or config.study
        parent = read_sweep_parent(sweep_dir)
        registered = None
        try:
            result = select_sweep(logger["tracking_uri"], experiment,
                                  str(sweep_dir), data["root"], self.levels or data.get("levels") or [],
                                  self.threshold, sweep_dir / MANIFEST_NAME, cache_dir=data.get("cache_dir"),
                                  max_structures=data.get("max_structures"), fallback_top_k=self.fallback_top_k,
                                  reference_type=data.get("reference_type", 0),
                                  descriptors=data.get("descriptors") or config.get("descriptors"))
            if parent is not None:
                tracking = MlflowTracking(parent["tracking_uri"], experiment)
                tracking.prepare()
                rec = record_sweep(tracking, parent["run_id"], result, list(config.hydra.overrides.task),
                                   self.registered_model, self.alias)
                if rec["version"] is not None:
                    registered = (f"{rec['name']} version {rec['version']} (alias {self.alias}): "
                                  f"predict.py ensemble_source=registry ensemble_source.name={rec['name']}")
        except Exception:  # the trained runs are recorded already: a failed selection must not hide them
            log.exception("ensemble selection failed for sweep %s", sweep_dir)
            _end_parent(sweep_dir, "FAILED")
            return
        _end_parent(sweep_dir, "FINISHED")
        print(format_summary(result, sweep_dir / MANIFEST_NAME, registered=registered,
                             ui_link=ui_link(result["experiment_id"], logger["tracking_uri"])))


class ExpectSweepShards(_HydraCallback):
    """Hydra callback (conf/simulate.yaml): before the jobs of ``simulate.py -m`` start, record every shard
    of the sweep as expected in the dataset manifest, so that ``verify=true`` lists the shards whose jobs
    never ran (a cancelled SLURM array, a crashed launcher) as missing."""

    def on_multirun_start(self, config, **kwargs) -> None:
        if config.get("verify"):
            return
        try:
            from tglassmlp.data.manifest import expect_shards
            from tglassmlp.simulation.job import dataset_root, sweep_shards

            shards = sweep_shards(config, config.hydra.overrides.task)
            if shards:
                n = expect_shards(dataset_root(config), shards, dataset=str(config.simulation_dataset.name))
                log.info("manifest: %d expected shard(s) recorded in %s", n, dataset_root(config))
        except Exception as exc:  # noqa: BLE001 - bookkeeping only; each job records itself anyway
            log.warning("could not record the sweep's expected shards (%s: %s); jobs still record their own",
                        type(exc).__name__, exc)

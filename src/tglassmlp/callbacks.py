"""The Hydra callbacks of the multiruns (``hydra.callbacks`` in the primary configs): for train.py
:class:`PrepareTrackingStore` before the jobs start and :class:`SelectSelfConsistent` after they end; for
simulate.py :class:`ExpectSweepShards` before the jobs start."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from tglassmlp.ensemble.manifest import MANIFEST_NAME
from tglassmlp.ensemble.selection import format_summary, select_sweep
from tglassmlp.tracking import MlflowTracking, TrackingStoreError

log = logging.getLogger(__name__)

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra-core < 1.1
    _HydraCallback = object


class PrepareTrackingStore(_HydraCallback):
    """Hydra callback: create the store schema and the study's experiment once, in the launching process,
    before the jobs of a multirun start (parallel jobs then only add runs). Also stops the whole sweep before
    any job is launched when the store cannot be reached (SystemExit with the reason). Reads
    ``logger.tracking_uri``, ``logger.artifact_location``, ``study``.
    """

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
        log.info("MLflow: experiment %r (id %s) in %s", tracking.experiment_name, exp, tracking.tracking_uri)


class SelectSelfConsistent(_HydraCallback):
    """Hydra callback: at the end of a multirun, run :func:`select_sweep` on its runs and write
    ``<sweep dir>/ensemble.json``. ``levels`` null: the data config's levels; ``fallback_top_k``: see
    :func:`select_sweep`."""

    def __init__(self, threshold: float = 1e-4, levels: Sequence[float] | None = None, enabled: bool = True,
                 fallback_top_k: int | None = None):
        self.threshold = float(threshold)
        self.levels = None if levels is None else [float(c) for c in levels]
        self.enabled = bool(enabled)
        self.fallback_top_k = None if fallback_top_k is None else int(fallback_top_k)

    def on_multirun_end(self, config, **kwargs) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        logger = OmegaConf.to_container(config.logger, resolve=True)
        data = OmegaConf.to_container(config.data, resolve=True)
        try:
            result = select_sweep(logger["tracking_uri"], logger.get("experiment_name") or config.study,
                                  str(sweep_dir), data["root"], self.levels or data.get("levels") or [],
                                  self.threshold, sweep_dir / MANIFEST_NAME, cache_dir=data.get("cache_dir"),
                                  max_structures=data.get("max_structures"), fallback_top_k=self.fallback_top_k,
                                  reference_type=data.get("reference_type", 0),
                                  descriptors=data.get("descriptors") or config.get("descriptors"))
        except Exception:  # the trained runs are recorded already: a failed selection must not hide them
            log.exception("ensemble selection failed for sweep %s", sweep_dir)
            return
        print(format_summary(result, sweep_dir / MANIFEST_NAME))


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

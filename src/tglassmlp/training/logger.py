"""Lightning's view of an MLflow run (kept out of :mod:`tglassmlp.tracking`, so that reading a run does not
import Lightning)."""

from __future__ import annotations

from collections.abc import Mapping

from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from tglassmlp.tracking import MlflowTracking


class MlflowRunLogger(Logger):
    """Lightning logger writing the metrics Lightning logs into an existing MLflow run (metrics only)."""

    def __init__(self, tracking: MlflowTracking):
        super().__init__()
        self._tracking = tracking

    @property
    def name(self) -> str:
        return self._tracking.experiment_name

    @property
    def version(self) -> str:
        return self._tracking.run_id

    @property
    @rank_zero_experiment
    def experiment(self) -> MlflowTracking:
        return self._tracking

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """No-op: the curated params are logged once by the training function."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # 'epoch' is Lightning's own bookkeeping metric; the step axis already carries it
        self._tracking.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

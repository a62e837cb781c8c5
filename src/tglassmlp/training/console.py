"""What train.py prints: quiet by default (one line per job start and end, done in :mod:`tglassmlp.training.job`),
everything with ``verbose=true`` or ``hydra.verbose=true``.

Quiet means, for the dependencies, at the point where they would speak (nothing is silenced process-wide):

* Lightning's informational loggers (accelerator lines, the litlogger tip, 'Seed set to') at WARNING, and our
  own per-stage INFO lines (data summary, descriptor columns, fused kernel, schedule stages) too: the job's start
  line carries their numbers;
* no model summary (``enable_model_summary``), no validation or test bars; one training bar for a single run,
  none for the jobs of a multirun (parallel jobs would interleave their bars line by line: ~1,700 of the
  ~1,900 lines of a 4-seed demo sweep);
* the warnings of :data:`QUIET_WARNINGS` ignored inside :func:`quiet_warnings` (around fit and test only).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: loggers set to WARNING in quiet mode: Lightning's information lines and our per-stage details
QUIET_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                 "lightning_fabric.utilities.seed", "lightning.fabric.utilities.seed",
                 "pytorch_lightning.callbacks.model_summary", "tglassmlp.model.module",
                 "tglassmlp.observables.descriptors", "tglassmlp.training.datamodule")
#: (message regex, category) of warnings that say nothing about the run: a deprecation inside Lightning's own
#: code (pytorch_lightning/utilities/_pytree.py, torch >= 2.10), and the logging-interval hint for epochs of
#: fewer batches than log_every_n_steps (the demo's 3 batches: epoch metrics are logged regardless)
QUIET_WARNINGS = ((r"`isinstance\(treespec, LeafSpec\)` is deprecated", None),
                  (r"The number of training batches \(\d+\) is smaller than the logging interval", None),
                  (r".*does not have many workers which may be a bottleneck", None))


def verbose_requested(cfg) -> bool:
    """``cfg.verbose``, or Hydra's ``hydra.verbose`` (any value but false) in a Hydra job."""
    if cfg is not None and cfg.get("verbose"):
        return True
    try:
        from hydra.core.hydra_config import HydraConfig

        return bool(HydraConfig.get().verbose)
    except Exception:  # not inside a Hydra app
        return False


@contextmanager
def quiet_loggers(enabled: bool = True) -> Iterator[None]:
    """Inside the block, the loggers of :data:`QUIET_LOGGERS` at WARNING (when ``enabled``); their levels are
    restored after it (a test session or a reused joblib worker keeps its own)."""
    saved = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    if enabled:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextmanager
def quiet_warnings(enabled: bool = True) -> Iterator[None]:
    """Ignore the warnings of :data:`QUIET_WARNINGS` inside the block (when ``enabled``)."""
    with warnings.catch_warnings():
        if enabled:
            for message, category in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=category or Warning)
        yield


def training_bar_only():
    """A Lightning progress bar with the training bar only (no validation, test or sanity-check bars)."""
    from pytorch_lightning.callbacks import TQDMProgressBar
    from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

    class TrainingBarOnly(TQDMProgressBar):
        def init_sanity_tqdm(self):
            return Tqdm(disable=True)

        def init_validation_tqdm(self):
            return Tqdm(disable=True)

        def init_test_tqdm(self):
            return Tqdm(disable=True)

    return TrainingBarOnly()

"""rho_max beside every Pearson correlation (train.py's test metrics, analyze.py, the ridge baseline, the transfer
comparison): the label-noise ceiling (``docs/label-ceiling.md``) of the very structures and labels a Pearson is
computed on, from the per-run bond breaking the shards keep.

A label at level c of a structure is its propensity at the temperature's crossing time t* (<C_B>(t*) = c,
``labels_at_levels``); the per-run labels are each run's C_B^i(t) interpolated at the same t* in log t, so that
their mean is the label. :class:`ShardRuns` reads a shard's ``bond_breaking`` once and serves those (R, N_0)
arrays; :meth:`ShardRuns.ceiling` is rho_max (:class:`~tglassmlp.observables.LabelCeiling`, the mean over
structures of each structure's ceiling: the ceiling of a per-structure-averaged Pearson).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tglassmlp.data.shards import ShardError, open_shard, read_shard
from tglassmlp.observables.ceiling import LabelCeiling
from tglassmlp.observables.labels import interpolate_log_time

log = logging.getLogger(__name__)


class ShardRuns:
    """Per-run labels of shards at label times, each shard read once.

    Args:
        reference_type: the particle type whose labels are scored (0 = the paper's type 1).
        n_splits, seed: of :class:`~tglassmlp.observables.LabelCeiling`.
    """

    def __init__(self, reference_type: int = 0, n_splits: int = 50, seed: int = 0):
        self.reference_type = int(reference_type)
        self.n_splits, self.seed = int(n_splits), int(seed)
        self._cache: dict[Path, tuple[np.ndarray, np.ndarray] | None] = {}

    def _load(self, path) -> tuple[np.ndarray, np.ndarray] | None:
        path = Path(path).resolve()
        if path not in self._cache:
            item = None
            try:
                if path.is_file():
                    with open_shard(path) as reader:
                        present = {"times", "bond_breaking"} <= set(reader.fields)
                    if present:
                        shard = read_shard(path, fields=["types", "times", "bond_breaking"])
                        ref = np.asarray(shard["types"]) == self.reference_type
                        # (T_n, R, N_0): interpolate_log_time works on the leading time axis
                        item = (np.asarray(shard["times"], np.float64),
                                np.moveaxis(np.asarray(shard["bond_breaking"], np.float64)[:, :, ref], 0, 1))
            except ShardError as exc:  # a ceiling is an extra: an unreadable field leaves it out, not the run
                log.warning("%s: per-run bond breaking unreadable (%s); no rho_max from it", path, exc)
            self._cache[path] = item
        return self._cache[path]

    def at(self, path, t_star: float) -> np.ndarray | None:
        """(R, N_0) per-run C_B of the reference particles at t* [tau]; None when the shard keeps no per-run
        bond breaking or t* is not within its times."""
        item = self._load(path)
        if item is None or not math.isfinite(t_star):
            return None
        times, runs = item
        if not times[0] <= t_star <= times[-1]:
            return None
        return interpolate_log_time(times, runs, t_star)

    def n_runs(self, path) -> int:
        """N_R of a shard (0 without per-run bond breaking)."""
        item = self._load(path)
        return 0 if item is None else int(item[1].shape[1])

    def ceiling(self, items: Sequence[tuple[str | Path, float]]) -> float:
        """rho_max of the labels of ``items`` ((shard, t*) per structure): NaN when one of them has no per-run
        labels, fewer than 2 runs, or constant labels (no bond broken yet)."""
        return self.ceiling_of_runs([self.at(p, t) for p, t in items])

    def ceiling_of_runs(self, runs: Sequence[np.ndarray | None]) -> float:
        """rho_max of per-structure (R, N_0) run arrays (as :meth:`at` returns): NaN when one is missing, has
        fewer than 2 runs, or its labels are constant."""
        if not runs or any(r is None or r.shape[0] < 2 for r in runs):
            return math.nan
        with warnings.catch_warnings():  # constant labels: an undefined split-half correlation, NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(LabelCeiling(self.n_splits, self.seed).compute(list(runs)).mean_rho_max[0])

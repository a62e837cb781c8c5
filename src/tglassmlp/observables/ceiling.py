"""rho_max: the highest Pearson correlation any predictor can reach against propensities measured from N_R runs.

The measured propensity of particle i is the mean of N_R isoconfigurational runs, y_i = x_i + e_i, with x_i the
propensity of infinitely many runs (a function of the structure) and e_i run-to-run noise of zero mean. For any
predictor f computed from the structure, corr(f, y) <= corr(x, y) = sqrt(R), where the reliability

    R(N_R) = var(x) / var(y)

is the fraction of the measured variance over particles that the structure determines. So
``rho_max = sqrt(R(N_R))`` is the label-noise ceiling of the Pearson correlation (the roadmap's rho_max; the
GlassBench table gives 0.924-0.935 for 20 runs at T = 0.30).

R is estimated from the runs themselves (split-half reliability with the Spearman-Brown correction):

1. Split the N_R runs into two disjoint halves of m = floor(N_R / 2) runs (for odd N_R one run sits out) and
   take r_h = Pearson over particles of the two half means. Averaged over splits (all distinct splits when
   there are at most ``n_splits``, else ``n_splits`` random ones) before the correction.
2. Spearman-Brown: the mean of k runs whose single-run reliability is rho_1 has R(k) = k rho_1 / (1 + (k-1)
   rho_1). The half means have reliability r_h = R(m), so rho_1 = r_h / (m - (m - 1) r_h), and the measured
   labels have R(N_R) = N_R rho_1 / (1 + (N_R - 1) rho_1); for even N_R this is 2 r_h / (1 + r_h).
3. rho_max = sqrt(max(R, 0)).

The model assumes exchangeable runs (same noise law for each run, independent between runs), which
isoconfigurational runs with fresh velocities are. Our Pearson metric is computed per structure and averaged
(``tglassmlp.model.module.state_point_metrics``); its ceiling is the average over structures of each
structure's rho_max, which :class:`LabelCeiling` reports as ``mean_rho_max``. For labels at a <C_B> level,
interpolate every run's C_B^i(t) at the label time t* first (``labels.interpolate_log_time`` on the (R, T_n, N)
``bond_breaking`` field moved to (T_n, R, N)); the propensity is the mean of those runs.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def spearman_brown(reliability, from_runs: int, to_runs: int):
    """Reliability of the mean of ``to_runs`` runs from that of the mean of ``from_runs`` runs.

    R(k) = k rho_1 / (1 + (k - 1) rho_1) with rho_1 = R(m) / (m - (m - 1) R(m)) (m = from_runs, k = to_runs).
    Works elementwise on arrays; R(m) = 1 stays 1, R(m) = 0 stays 0.
    """
    if from_runs < 1 or to_runs < 1:
        raise ValueError(f"spearman_brown: run counts must be >= 1, got {from_runs} and {to_runs}")
    r = np.asarray(reliability, dtype=np.float64)
    single = r / (from_runs - (from_runs - 1) * r)
    return to_runs * single / (1.0 + (to_runs - 1) * single)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson over the last axis of two (K, N) arrays -> (K,) (NaN where a row is constant)."""
    da = a - a.mean(axis=-1, keepdims=True)
    db = b - b.mean(axis=-1, keepdims=True)
    denom = np.sqrt((da * da).sum(axis=-1) * (db * db).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (da * db).sum(axis=-1) / denom, np.nan)


def _splits(n_runs: int, n_splits: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Disjoint halves (A, B) of m = n_runs // 2 runs each: every distinct split when they are few, else random."""
    m = n_runs // 2
    n_distinct = math.comb(n_runs, m) * (math.comb(n_runs - m, m)) // 2
    if n_distinct <= n_splits:
        out, seen = [], set()
        for a in itertools.combinations(range(n_runs), m):
            rest = [k for k in range(n_runs) if k not in a]
            for b in itertools.combinations(rest, m):
                key = frozenset((a, b))
                if key not in seen:
                    seen.add(key)
                    out.append((np.array(a), np.array(b)))
        return out
    out = []
    for _ in range(n_splits):
        perm = rng.permutation(n_runs)
        out.append((perm[:m], perm[m:2 * m]))
    return out


class LabelCeiling:
    """rho_max of measured propensities from their isoconfigurational runs (module docstring).

    Args:
        n_splits: split-half partitions averaged (all distinct ones when there are at most this many).
        seed: seed of the random partitions.

    After :meth:`compute`: ``split_half`` (S, K) r_h, ``reliability`` (S, K) R(N_R), ``rho_max`` (S, K),
    ``mean_rho_max`` (K,) averaged over structures (the ceiling of a per-structure-averaged Pearson),
    ``n_runs`` (S,).
    """

    def __init__(self, n_splits: int = 50, seed: int = 0):
        if int(n_splits) < 1:
            raise ValueError(f"LabelCeiling: n_splits must be >= 1, got {n_splits}")
        self.n_splits = int(n_splits)
        self.seed = int(seed)

    def compute(self, runs) -> "LabelCeiling":
        """``runs``: one structure's per-run values (N_R, N) or (N_R, K, N) (K times or levels), or a sequence of
        such arrays, one per structure (N_R and N may differ between structures, K may not). Returns self.

        Raises:
            ValueError for fewer than 2 runs (no split exists: the label noise cannot be estimated from the
            data), fewer than 3 particles, non-finite values, or inconsistent K.
        """
        structures = [runs] if isinstance(runs, np.ndarray) else list(runs)
        if not structures:
            raise ValueError("LabelCeiling: no structures given")
        rng = np.random.default_rng(self.seed)
        half, rel, n_runs = [], [], []
        n_k = None
        for s, values in enumerate(structures):
            v = np.asarray(values, dtype=np.float64)
            if v.ndim == 2:
                v = v[:, None, :]
            if v.ndim != 3:
                raise ValueError(f"LabelCeiling: structure {s}: expected (N_R, N) or (N_R, K, N) runs, got shape "
                                 f"{v.shape}")
            if v.shape[0] < 2:
                raise ValueError(f"LabelCeiling: structure {s} has N_R = {v.shape[0]} run(s); the label ceiling "
                                 "needs at least 2 isoconfigurational runs (split-half correlation)")
            if v.shape[2] < 3:
                raise ValueError(f"LabelCeiling: structure {s} has {v.shape[2]} particles; need >= 3 for a Pearson")
            if n_k is not None and v.shape[1] != n_k:
                raise ValueError(f"LabelCeiling: structure {s} has {v.shape[1]} times/levels, structure 0 has {n_k}")
            n_k = v.shape[1]
            if not np.all(np.isfinite(v)):
                raise ValueError(f"LabelCeiling: structure {s} has NaN or inf values")
            r_h = np.mean([_pearson_rows(v[a].mean(axis=0), v[b].mean(axis=0))
                           for a, b in _splits(v.shape[0], self.n_splits, rng)], axis=0)
            half.append(r_h)
            rel.append(spearman_brown(np.clip(r_h, 0.0, 1.0), v.shape[0] // 2, v.shape[0]))
            n_runs.append(v.shape[0])
        self._half = np.array(half)
        self._rel = np.array(rel)
        self._n_runs = np.array(n_runs)
        return self

    @property
    def split_half(self) -> np.ndarray:
        """(S, K) split-half Pearson r_h between the means of two disjoint halves of floor(N_R / 2) runs."""
        return self._half

    @property
    def reliability(self) -> np.ndarray:
        """(S, K) R(N_R) = var(structure part) / var(measured labels), by Spearman-Brown from r_h (r_h < 0 -> 0)."""
        return self._rel

    @property
    def rho_max(self) -> np.ndarray:
        """(S, K) sqrt(R(N_R)): the Pearson ceiling against each structure's measured labels."""
        return np.sqrt(self._rel)

    @property
    def mean_rho_max(self) -> np.ndarray:
        """(K,) rho_max averaged over structures (NaN-aware): the ceiling of the per-structure-averaged Pearson."""
        return np.nanmean(self.rho_max, axis=0)

    @property
    def n_runs(self) -> np.ndarray:
        """(S,) N_R of each structure."""
        return self._n_runs


def label_ceiling(runs, n_splits: int = 50, seed: int = 0) -> np.ndarray:
    """(K,) mean rho_max over structures: ``LabelCeiling(n_splits, seed).compute(runs).mean_rho_max``."""
    return LabelCeiling(n_splits=n_splits, seed=seed).compute(runs).mean_rho_max

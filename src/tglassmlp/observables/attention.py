"""Length scale learnt by the attention layer: P_int(L) and xi_int (paper Sec. VI A, Fig. 9).

The attention weights w_k (Eq. 6; per particle, sum_k w_k = 1, see ``tglassmlp.model.network``) are

1. averaged over particles (and over structures): wbar_k;
2. averaged over the descriptors k coarse-grained over the same length L (the descriptor name's ``_L<L>``
   suffix, ``tglassmlp.observables.descriptors.descriptor_names``): Wbar(L) = mean_{k in L} wbar_k. Columns the
   scaler dropped are simply absent, so each L averages over the columns that the network sees;
3. normalised over the L grid: P_int(L) = Wbar(L) / sum_L' Wbar(L').

xi_int(T) = "integral dL P_int(L) L" of the paper, evaluated for the normalised discrete distribution on the
L grid as sum_L P_int(L) L [sigma]. Uniform weights give P_int = 1 / n_L and xi_int = the mean of the grid
(41/11 = 3.73 for the paper's 11 lengths).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_L_SUFFIX = re.compile(r"_L([0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)$")


def coarse_graining_lengths(names: Sequence[str]) -> np.ndarray:
    """(M_S,) coarse-graining length L [sigma] of each descriptor from its name ``{quantity}_{channel}_L{L:g}``."""
    out = []
    for k, name in enumerate(names):
        m = _L_SUFFIX.search(str(name))
        if m is None:
            raise ValueError(f"descriptor name {name!r} (column {k}) has no '_L<length>' suffix; expected names "
                             "from tglassmlp.observables.descriptor_names()")
        out.append(float(m.group(1)))
    return np.asarray(out)


class AttentionLengthScale:
    """P_int(L) and xi_int from attention weights (module docstring).

    Args:
        names: (M_S,) names of the descriptor columns the weights belong to (a fitted scaler's
            ``kept_names``), in the network's input order.
    """

    def __init__(self, names: Sequence[str]):
        self.names = [str(n) for n in names]
        if not self.names:
            raise ValueError("AttentionLengthScale: no descriptor names")
        self._l_of_column = coarse_graining_lengths(self.names)
        self._lengths = np.unique(self._l_of_column)

    def compute(self, weights) -> "AttentionLengthScale":
        """From attention weights (..., M_S): per particle (N, M_S), per structure (S, N, M_S) or already
        averaged (M_S,). Every leading axis is averaged over. Returns self."""
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim < 1 or w.shape[-1] != len(self.names):
            raise ValueError(f"attention weights must have last axis M_S = {len(self.names)} (the descriptor "
                             f"names), got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("attention weights must be finite and non-negative (softmax output)")
        wbar = w.reshape(-1, w.shape[-1]).mean(axis=0)
        per_l = np.array([wbar[self._l_of_column == L].mean() for L in self._lengths])
        total = per_l.sum()
        if not total > 0:
            raise ValueError("attention weights sum to zero")
        self._column_weights = wbar
        self._p = per_l / total
        self._xi = float(np.sum(self._p * self._lengths))
        return self

    @property
    def lengths(self) -> np.ndarray:
        """(n_L,) the coarse-graining lengths L present among the columns [sigma], ascending."""
        return self._lengths

    @property
    def p_int(self) -> np.ndarray:
        """(n_L,) P_int(L), non-negative, sums to 1."""
        return self._p

    @property
    def xi_int(self) -> float:
        """xi_int = sum_L P_int(L) L [sigma]."""
        return self._xi

    @property
    def column_weights(self) -> np.ndarray:
        """(M_S,) particle-averaged weights wbar_k (sum to 1 for softmax input)."""
        return self._column_weights

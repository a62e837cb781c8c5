"""Networks applied to one structure: one network's mean-constrained prediction in chunks of particles
(:func:`constrained_prediction`) and every network's of an ensemble with mean and spread
(:class:`EnsemblePrediction`).
"""

from __future__ import annotations

import copy
import hashlib
import time

import numpy as np
import torch

from tglassmlp.model.network import LevelBatchedForward
from tglassmlp.predict.constraint import MeanConstraint
from tglassmlp.predict.errors import PredictionInputError
from tglassmlp.predict.members import Ensemble


@torch.inference_mode()
def constrained_prediction(network: torch.nn.Module, features: torch.Tensor, temperature: float, levels,
                           constraint: MeanConstraint, chunk_size: int = 2048, out: np.ndarray | None = None,
                           fast_attention: bool = True) -> tuple[np.ndarray, MeanConstraint]:
    """One network's mean-constrained prediction on one structure, in chunks of particles.

    Args:
        network: a TGlassMLP (per-particle: chunks of particles give the same numbers as the whole).
        features: (N_0, M_S) float32 standardised descriptors of the reference particles.
        temperature: T [epsilon/k_B].
        levels: (L,) target levels c*.
        constraint: a MeanConstraint (copied; the argument is not modified).
        chunk_size: particles per forward call. Working memory ~ 5 x L x chunk_size x M_S x 4 bytes with the
            plain forward, (1 + nb) x N_0 x M_S x 4 bytes plus L x chunk_size x (1 + nb) with the fast one.
        out: optional (L, N_0) float32 array to fill.
        fast_attention: evaluate with :class:`~tglassmlp.model.network.LevelBatchedForward` (same numbers to
            float32 rounding);
            False: ``network.forward`` on each chunk.

    Returns:
        ((L, N_0) float32 propensity at each level's reported input (MeanConstraint.input_level), the computed
        MeanConstraint).
    """
    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    n0 = int(features.shape[0])
    chunk_size = max(1, int(chunk_size))
    if out is None:
        out = np.empty((levels.size, n0), dtype=np.float32)
    fast = LevelBatchedForward(network, features, chunk_size) if fast_attention and \
        LevelBatchedForward.supports(network) else None
    # each evaluation fills a scratch buffer; the constraint says which levels' evaluation is the best so far
    scratch = np.empty_like(out)

    def evaluate(inputs: np.ndarray, which: np.ndarray) -> np.ndarray:
        c = torch.as_tensor(inputs, dtype=torch.float32)
        total = np.zeros(len(which), dtype=np.float64)
        for i, start in enumerate(range(0, n0, chunk_size)):
            if fast is not None:
                y = fast.block(i, temperature, c)
            else:
                y = network(features[start:start + chunk_size], float(temperature), c)  # (A, n)
            values = y.numpy()
            if not np.all(np.isfinite(values)):
                raise PredictionInputError(f"the network predicts non-finite values at T = {temperature:g}, "
                                           f"c = {inputs.tolist()} (particles {start}..{start + values.shape[1]})")
            scratch[which, start:start + values.shape[1]] = values
            total += values.sum(axis=1, dtype=np.float64)
        return total / n0

    def accept(which: np.ndarray) -> None:
        out[which] = scratch[which]

    result = copy.copy(constraint).compute(evaluate, levels, accept)
    return out, result


def _scaler_key(scaler) -> str:
    """Content hash of a DescriptorScaler's statistics (equal keys standardise identically)."""
    h = hashlib.sha256("\x00".join(scaler.names).encode())
    for arr in (scaler.mean, scaler.std, scaler.kept):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


class EnsemblePrediction:
    """Per-particle propensity of the reference particles of one structure by every network of an ensemble,
    mean-constrained (App. B), with the mean and spread over the networks.

    Args:
        ensemble: the :class:`Ensemble`.
        constraint: :class:`MeanConstraint` settings (applied per network).
        reference_type: the particle type the networks predict (the paper's type 1 = our 0).
        chunk_size: particles per forward call (bounds the memory for any N).
        fast_attention: use :class:`~tglassmlp.model.network.LevelBatchedForward` (see
            :func:`constrained_prediction`).
    """

    def __init__(self, ensemble: Ensemble, constraint: MeanConstraint | None = None, reference_type: int = 0,
                 chunk_size: int = 2048, fast_attention: bool = True):
        self.ensemble = ensemble
        self.constraint = constraint or MeanConstraint()
        self.reference_type = int(reference_type)
        self.chunk_size = int(chunk_size)
        self.fast_attention = bool(fast_attention)

    def compute(self, descriptors, types, temperature: float, levels) -> EnsemblePrediction:
        """Args: descriptors (N, D) raw; types (N,); temperature T; levels (L,) target c*. Returns self."""
        types = np.asarray(types)
        self._reference = types == self.reference_type
        levels = np.asarray(levels, dtype=np.float64).reshape(-1)
        raw = np.asarray(descriptors)[self._reference]
        n0 = raw.shape[0]
        self._per_network = np.empty((len(self.ensemble), levels.size, n0), dtype=np.float32)
        self._constraints = []
        t0 = time.perf_counter()
        standardised: dict[str, torch.Tensor] = {}  # members trained on one dataset share their scaler
        for k, member in enumerate(self.ensemble.members):
            key = _scaler_key(member.scaler)
            if key not in standardised:
                standardised[key] = torch.from_numpy(member.scaler.transform(raw).astype(np.float32))
            features = standardised[key]
            _, result = constrained_prediction(member.network, features, temperature, levels, self.constraint,
                                               self.chunk_size, out=self._per_network[k],
                                               fast_attention=self.fast_attention)
            self._constraints.append(result)
        self._seconds = time.perf_counter() - t0
        self._levels = levels
        return self

    @property
    def reference(self) -> np.ndarray:
        """(N,) bool: the particles predicted."""
        return self._reference

    @property
    def per_network(self) -> np.ndarray:
        """(K, L, N_0) float32 predictions of every network."""
        return self._per_network

    @property
    def mean(self) -> np.ndarray:
        """(L, N_0) mean over networks."""
        return self._per_network.mean(axis=0, dtype=np.float64).astype(np.float32)

    @property
    def std(self) -> np.ndarray:
        """(L, N_0) population std over networks (0 for one network)."""
        return self._per_network.std(axis=0, dtype=np.float64).astype(np.float32)

    @property
    def constraints(self) -> list[MeanConstraint]:
        """The K computed constraints."""
        return self._constraints

    @property
    def seconds(self) -> float:
        """Wall time of compute [s]."""
        return self._seconds

    def part(self, start: int, stop: int) -> EnsemblePrediction:
        """The prediction for input particles ``start:stop`` (one structure of a set predicted together):
        its slice of the per-particle arrays, the set's networks and constraint results."""
        out = copy.copy(self)
        before = int(self._reference[:start].sum())
        out._reference = self._reference[start:stop]
        out._per_network = self._per_network[:, :, before:before + int(out._reference.sum())]
        return out

    def constraint_arrays(self) -> dict[str, np.ndarray]:
        """The constraint results stacked over networks: (K, L) and (K, L, J+1) arrays."""
        cs = self._constraints
        return {"input_level": np.stack([c.input_level for c in cs]),
                "mean_prediction": np.stack([c.mean_prediction for c in cs]),
                "iterations": np.stack([c.iterations for c in cs]).astype(np.int64),
                "converged": np.stack([c.converged for c in cs]).astype(np.int8),
                "history_input": np.stack([c.history_input for c in cs]),
                "history_mean": np.stack([c.history_mean for c in cs])}

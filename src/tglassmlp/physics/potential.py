"""Numpy reference implementation of energies and forces (periodic square box, minimum image).

Pairs come from scipy's periodic k-d tree (a neighbour list built in O(N log N), queried in O(N)), so the
functions scale to the paper's N = 82560. This is the reference against which OpenMM is tested.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from tglassmlp.physics.configuration import ConfigurationError, validate_configuration
from tglassmlp.physics.system import PairPotential, pair_terms, resolve_system


def periodic_pairs(positions, box: float, rmax: float):
    """All pairs (i < j) closer than ``rmax`` in a square periodic box (minimum image; needs box > 2 rmax).

    Returns:
        i, j: (P,) int64 particle indices; d: (P, 2) separations r_i - r_j [sigma]; r2: (P,) squared distances.
    """
    wrapped = np.mod(positions, box)
    wrapped[wrapped >= box] = 0.0  # mod can round up to exactly box
    pairs = cKDTree(wrapped, boxsize=box).query_pairs(r=rmax, output_type="ndarray")
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    d = positions[i] - positions[j]
    d -= box * np.round(d / box)
    return i, j, d, np.einsum("pk,pk->p", d, d)


def interacting_pairs(positions, types, box, system: PairPotential, *, where: str = "configuration",
                      check_overlap: bool = True):
    """Pairs (i, j) within their cutoff, their minimum-image separations d = r_i - r_j and r^2.

    Returns:
        i, j: (P,) int64 particle indices, i < j.
        d: (P, 2) float64 separation vectors [sigma].
        r2: (P,) float64 squared distances [sigma^2].

    Raises ConfigurationError for boxes smaller than two cutoffs (minimum image would miss pairs) and for
    overlapping particles (r < overlap_distance * sigma_ab), naming the pair (unless ``check_overlap`` is
    False: minimisers probe trial points that may overlap and must see their huge energy instead).
    """
    rmax = system.max_cutoff
    if box <= 2.0 * rmax:
        raise ConfigurationError(
            f"{where}: box side {box:g} is smaller than twice the interaction range {rmax:g}; "
            "minimum-image forces would be wrong"
        )
    i, j, d, r2 = periodic_pairs(positions, box, rmax)
    _, sig2, rc2, overlap2 = system.parameter_arrays()
    ti, tj = types[i], types[j]
    too_close = r2 < overlap2[ti, tj]
    if check_overlap and too_close.any():
        k = np.flatnonzero(too_close)[0]
        raise ConfigurationError(
            f"{where}: {too_close.sum()} overlapping pair(s); particles {i[k]} and {j[k]} are "
            f"{np.sqrt(r2[k]):.4g} apart (< {system.overlap_distance} sigma_ab = {np.sqrt(overlap2[ti[k], tj[k]]):.4g})"
        )
    inside = r2 < rc2[ti, tj]
    return i[inside], j[inside], d[inside], r2[inside]


def _pair_energies_forces(positions, types, box, system, where, check_overlap=True):
    positions, types, box = validate_configuration(positions, types, box, where=where)
    system = resolve_system(system)
    i, j, d, r2 = interacting_pairs(positions, types, box, system, where=where, check_overlap=check_overlap)
    eps, sig2, _, _ = system.parameter_arrays()
    ti, tj = types[i], types[j]
    v, f_over_r = pair_terms(r2, eps[ti, tj], sig2[ti, tj], system.c0, system.c2, system.c4)
    return positions, i, j, d, v, f_over_r


def particle_energies(positions, types, box, system=None) -> np.ndarray:
    """Per-particle potential energy E_i = 1/2 sum_j V(r_ij).

    Args:
        positions: (N, 2) positions [sigma], wrapped or unwrapped.
        types: (N,) integer types 0, 1, 2.
        box: square box side [sigma].
        system: potential (default: ``conf/system/ka2d_ternary.yaml``).

    Returns:
        (N,) float64 energies [epsilon]; their sum is the total potential energy.
    """
    positions, i, j, _, v, _ = _pair_energies_forces(positions, types, box, system, "particle_energies")
    n = positions.shape[0]
    return 0.5 * (np.bincount(i, weights=v, minlength=n) + np.bincount(j, weights=v, minlength=n))


def potential_energy(positions, types, box, system=None) -> float:
    """Total potential energy [epsilon]."""
    return float(particle_energies(positions, types, box, system).sum())


def energy_and_forces(positions, types, box, system=None, *, where: str = "forces", check_overlap: bool = True):
    """Total potential energy [epsilon] and (N, 2) forces [epsilon/sigma] in one pass."""
    positions, i, j, d, v, f_over_r = _pair_energies_forces(positions, types, box, system, where, check_overlap)
    n = positions.shape[0]
    fij = f_over_r[:, None] * d  # force on i from j
    forces_out = np.zeros((n, 2))
    for k in range(2):
        forces_out[:, k] = np.bincount(i, weights=fij[:, k], minlength=n) - np.bincount(
            j, weights=fij[:, k], minlength=n
        )
    return float(v.sum()), forces_out


def forces(positions, types, box, system=None) -> np.ndarray:
    """Forces F_i = -dU/dr_i, shape (N, 2) [epsilon/sigma]."""
    return energy_and_forces(positions, types, box, system, where="forces")[1]

"""Bond-breaking correlation C_B^i(t): the fraction of a particle's initial neighbours that are still bonded.

Definition (glassmlp-facts.md section 4): j is an initial neighbour of i if r_ij(0) < r_in sigma_ab on the
thermal configuration at t = 0; the bond survives at time t while r_ij(t) < r_out sigma_ab (minimum image
within each frame). C_B^i(t) = surviving / initial, per isoconfigurational run; the propensity is its mean
over runs. The radii come from ``conf/labels/default.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tglassmlp.defaults import group_config
from tglassmlp.physics.configuration import ConfigurationError, validate_configuration
from tglassmlp.physics.potential import periodic_pairs
from tglassmlp.physics.system import resolve_system


@dataclass(frozen=True)
class Bonds:
    """Initial bonds of a configuration: pairs (i, j), i < j, and their survival distances [sigma]."""

    i: np.ndarray
    j: np.ndarray
    survival_distance: np.ndarray
    n_initial: np.ndarray  # (N,) initial neighbour count per particle


def initial_bonds(initial_positions, types, box, *, system=None, initial_radius=None, survival_radius=None,
                  labels_config=None) -> Bonds:
    """Pairs closer than ``initial_radius * sigma_ab`` in ``initial_positions`` (N, 2) [sigma]."""
    positions, types, box = validate_configuration(initial_positions, types, box, where="bond_breaking")
    system = resolve_system(system)
    cfg = labels_config if labels_config is not None else group_config("labels")
    r_in = float(initial_radius if initial_radius is not None else cfg.initial_radius)
    r_out = float(survival_radius if survival_radius is not None else cfg.survival_radius)
    if not 0 < r_in <= r_out:
        raise ValueError(f"bond_breaking: need 0 < initial_radius <= survival_radius, got {r_in}, {r_out}")
    rmax = r_in * system.sigma.max()
    if box <= 2 * rmax:
        raise ConfigurationError(f"bond_breaking: box {box:g} smaller than twice the bond radius {rmax:g}")
    i, j, _, r2 = periodic_pairs(positions, box, rmax)
    sigma = system.sigma[types[i], types[j]]
    bonded = r2 < (r_in * sigma) ** 2
    i, j, sigma = i[bonded], j[bonded], sigma[bonded]
    n = len(positions)
    n_initial = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    return Bonds(i=i, j=j, survival_distance=r_out * sigma, n_initial=n_initial)


def bond_breaking(initial_positions, positions, types, box, *, system=None, initial_radius=None,
                  survival_radius=None, bonds: Bonds | None = None) -> np.ndarray:
    """Per-particle bond-breaking correlation C_B^i(t) for each run (and frame).

    Args:
        initial_positions: (N, 2) thermal configuration at t = 0 [sigma].
        positions: (..., N, 2) positions at time t, e.g. (R, N, 2) for R runs or (R, T, N, 2) for R runs
            at T times [sigma], wrapped or unwrapped.
        types: (N,) integer types 0, 1, 2.
        box: square box side [sigma].
        bonds: precomputed ``initial_bonds`` (saves the neighbour search when called per frame).

    Returns:
        (..., N) float64 C_B^i in [0, 1]; 1 means no initial bond broke.

    Raises:
        ConfigurationError if a particle has no initial neighbour (C_B undefined: in a dense liquid this
        means corrupted input), naming the particle.
    """
    if bonds is None:
        bonds = initial_bonds(initial_positions, types, box, system=system, initial_radius=initial_radius,
                              survival_radius=survival_radius)
    n = len(bonds.n_initial)
    lonely = np.flatnonzero(bonds.n_initial == 0)
    if lonely.size:
        raise ConfigurationError(
            f"bond_breaking: {lonely.size} particle(s) have no initial neighbour (first: particle {lonely[0]}); "
            "C_B is undefined for them"
        )
    try:
        positions = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bond_breaking: positions are not numeric ({exc})") from None
    if positions.ndim < 2 or positions.shape[-2:] != (n, 2):
        raise ConfigurationError(f"bond_breaking: positions must have shape (..., {n}, 2), got {positions.shape}")
    if not np.isfinite(positions).all():
        raise ConfigurationError("bond_breaking: positions contain NaN or inf")
    box = float(box)
    lead = positions.shape[:-2]
    flat = positions.reshape(-1, n, 2)
    out = np.empty((flat.shape[0], n))
    for k, frame in enumerate(flat):
        d = frame[bonds.i] - frame[bonds.j]
        d -= box * np.round(d / box)
        alive = (np.einsum("pk,pk->p", d, d) < bonds.survival_distance**2).astype(np.float64)
        out[k] = np.bincount(bonds.i, weights=alive, minlength=n) + np.bincount(bonds.j, weights=alive, minlength=n)
    return (out / bonds.n_initial).reshape(*lead, n)

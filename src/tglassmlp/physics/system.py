"""The 2D ternary Kob-Andersen system: parameters read from ``conf/system/*.yaml``.

Every number of the potential comes from the config file; this module only reads and checks it, and
provides the pair function used by every numpy/numba implementation in the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tglassmlp.defaults import group_config

N_TYPES = 3


@dataclass(frozen=True)
class PairPotential:
    """Smoothed Lennard-Jones pair potential of a multi-component mixture, in reduced units.

    ``V_ab(r) = 4 eps_ab [(s/r)^12 - (s/r)^6 + c0 + c2 (r/s)^2 + c4 (r/s)^4]`` for ``r < cutoff * s``,
    ``s = sigma_ab``; zero beyond.

    Attributes:
        epsilon: (3, 3) energy scales eps_ab [epsilon].
        sigma: (3, 3) length scales sigma_ab [sigma].
        cutoff: cutoff in units of sigma_ab.
        c0, c2, c4: smoothing constants (dimensionless).
        composition: (3,) particle counts of the reference N = 1290 system.
        box_reference: box side of the reference system [sigma].
        mass: particle mass [m], equal for all types.
        overlap_distance: pairs closer than this many sigma_ab are rejected as overlapping input.
    """

    epsilon: np.ndarray
    sigma: np.ndarray
    cutoff: float
    c0: float
    c2: float
    c4: float
    composition: tuple[int, int, int]
    box_reference: float
    mass: float
    overlap_distance: float
    name: str = "ka2d_ternary"

    def __post_init__(self):
        for label, table in (("epsilon", self.epsilon), ("sigma", self.sigma)):
            table = np.asarray(table, dtype=float)
            if table.shape != (N_TYPES, N_TYPES):
                raise ValueError(f"system '{self.name}': {label} must be a 3x3 table, got shape {table.shape}")
            if not np.allclose(table, table.T):
                raise ValueError(f"system '{self.name}': {label} table is not symmetric")
            if not np.all(np.isfinite(table)) or np.any(table <= 0):
                raise ValueError(f"system '{self.name}': {label} entries must be finite and positive")
            table.setflags(write=False)
            object.__setattr__(self, label, table)
        if not self.cutoff > 1.0:
            raise ValueError(f"system '{self.name}': cutoff must exceed 1 sigma, got {self.cutoff}")

    # ------------------------------------------------------------------ derived quantities
    @property
    def number_density(self) -> float:
        """Number density N / L^2 of the reference system [sigma^-2]."""
        return sum(self.composition) / self.box_reference**2

    @property
    def max_cutoff(self) -> float:
        """Largest interaction range over all pairs [sigma]."""
        return float(self.cutoff * self.sigma.max())

    def box_for(self, n_particles: int) -> float:
        """Square box side at the reference number density for ``n_particles`` [sigma]."""
        return float(np.sqrt(n_particles / self.number_density))

    def composition_for(self, n_particles: int) -> np.ndarray:
        """Counts per type for ``n_particles`` at the reference composition (must divide exactly)."""
        ref = np.asarray(self.composition)
        counts = ref * n_particles / ref.sum()
        if not np.allclose(counts, np.round(counts)):
            raise ValueError(
                f"N = {n_particles} cannot keep the composition {tuple(ref)} exactly; "
                f"use a multiple of {ref.sum() // np.gcd.reduce(ref)} particles"
            )
        return np.round(counts).astype(int)

    def pair_energy(self, r: np.ndarray, a: int, b: int) -> np.ndarray:
        """V_ab(r) for an array of distances [epsilon]; zero at and beyond the cutoff."""
        r2 = np.asarray(r, dtype=float) ** 2
        sig2 = self.sigma[a, b] ** 2
        v, _ = pair_terms(r2, self.epsilon[a, b], sig2, self.c0, self.c2, self.c4)
        return np.where(r2 < self.cutoff**2 * sig2, v, 0.0)

    def pair_force(self, r: np.ndarray, a: int, b: int) -> np.ndarray:
        """-dV_ab/dr for an array of distances [epsilon/sigma]; zero beyond the cutoff."""
        r = np.asarray(r, dtype=float)
        r2 = r**2
        sig2 = self.sigma[a, b] ** 2
        _, f_over_r = pair_terms(r2, self.epsilon[a, b], sig2, self.c0, self.c2, self.c4)
        return np.where(r2 < self.cutoff**2 * sig2, f_over_r * r, 0.0)

    def parameter_arrays(self):
        """(epsilon, sigma^2, (cutoff sigma)^2, (overlap sigma)^2) tables as float64 (3, 3) arrays."""
        sig2 = self.sigma**2
        return (
            np.ascontiguousarray(self.epsilon),
            np.ascontiguousarray(sig2),
            np.ascontiguousarray(self.cutoff**2 * sig2),
            np.ascontiguousarray(self.overlap_distance**2 * sig2),
        )


def pair_terms(r2, eps, sig2, c0, c2, c4):
    """Energy V and F/r = -(dV/dr)/r of the smoothed LJ pair at squared distance r2 (no cutoff test).

    Written with plain arithmetic so that it works elementwise on numpy arrays and compiles unchanged
    under numba (the swap Monte Carlo kernel uses it): one implementation of the pair physics.
    """
    x = sig2 / r2  # (s/r)^2
    y = r2 / sig2  # (r/s)^2
    x3 = x * x * x
    x6 = x3 * x3
    v = 4.0 * eps * (x6 - x3 + c0 + c2 * y + c4 * y * y)
    f_over_r = 4.0 * eps * (12.0 * x6 - 6.0 * x3 - 2.0 * c2 * y - 4.0 * c4 * y * y) / r2
    return v, f_over_r


def system_from_config(cfg: DictConfig | dict) -> PairPotential:
    """Build the potential from a config node with the keys of ``conf/system/ka2d_ternary.yaml``."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    required = ("epsilon", "sigma", "cutoff", "c0", "c2", "c4", "composition", "box_n1290", "mass")
    missing = [k for k in required if k not in cfg]
    if missing:
        raise KeyError(f"system config is missing keys {missing}")
    composition = tuple(int(c) for c in cfg.composition)
    if len(composition) != N_TYPES or min(composition) <= 0:
        raise ValueError(f"system config: composition must be 3 positive counts, got {composition}")
    return PairPotential(
        epsilon=np.asarray(OmegaConf.to_container(cfg.epsilon), dtype=float),
        sigma=np.asarray(OmegaConf.to_container(cfg.sigma), dtype=float),
        cutoff=float(cfg.cutoff),
        c0=float(cfg.c0),
        c2=float(cfg.c2),
        c4=float(cfg.c4),
        composition=composition,
        box_reference=float(cfg.box_n1290),
        mass=float(cfg.mass),
        overlap_distance=float(cfg.get("overlap_distance", 0.5)),
        name=str(cfg.get("name", "ka2d_ternary")),
    )


@lru_cache(maxsize=8)
def load_system(name: str = "ka2d_ternary") -> PairPotential:
    """The potential of ``conf/system/<name>.yaml`` (cached)."""
    return system_from_config(group_config("system", name))


def resolve_system(system: PairPotential | DictConfig | dict | str | None) -> PairPotential:
    """Accept a PairPotential, a config node, a system name or None (the default KA2D ternary system)."""
    if system is None:
        return load_system()
    if isinstance(system, PairPotential):
        return system
    if isinstance(system, str):
        return load_system(system)
    return system_from_config(system)

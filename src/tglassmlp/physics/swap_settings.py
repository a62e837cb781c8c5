"""Settings of the swap Monte Carlo samplers (``conf/swap/``), shared by the numba sampler
(:mod:`tglassmlp.physics.swap_mc`) and the batched OpenCL kernel (:mod:`tglassmlp.physics.swap_mc_opencl`).

Kept apart from both so that the protocol in ``swap_mc`` can drive the OpenCL backend without the two
modules importing each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from omegaconf import OmegaConf

from tglassmlp.defaults import group_config
from tglassmlp.physics.system import N_TYPES

# frames of the self-overlap used by the equilibration criterion (see self_overlap)
OVERLAP_FRAMES = ("cage", "absolute")
# samplers that can drive the protocol (EquilibrationChain): numba = SwapMonteCarlo per chain, opencl = the
# batched checkerboard kernel (tglassmlp.physics.swap_mc_opencl), all chains in one launch
SAMPLER_BACKENDS = ("numba", "opencl")


def positive_finite(value, name: str, where: str = "") -> float:
    """``float(value)``, or ValueError naming ``name`` (prefixed by ``where:``) unless it is positive and finite:
    the one check of the temperatures and displacement steps that the samplers take."""
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{where + ': ' if where else ''}{name} must be positive and finite, got {value}")
    return value


# ====================================================================================== settings
@dataclass(frozen=True)
class SwapSettings:
    """Settings of the sampler; field meanings are documented in ``conf/swap/default.yaml``."""

    swap_fraction: float
    swap_pairs: tuple
    max_displacement: float
    min_max_displacement: float
    max_max_displacement: float
    target_acceptance: float
    adapt_every: int
    melt_temperature: float
    melt_sweeps: int
    anneal_steps: int
    anneal_sweeps: int
    adapt_sweeps_at_target: int
    first_block_sweeps: int
    max_sweeps: int
    n_decorrelation: float
    stationarity_z: float
    overlap_a: float
    overlap_frame: str
    cage_radius: float
    record_every: int
    snapshot_every: int
    max_snapshots: int
    max_origins: int
    energy_drift_tolerance: float
    # harvesting (tglassmlp.physics.harvest): never change how an equilibration chain moves
    harvest_spacing: float
    harvest_max_overlap: float
    structures_per_chain: int
    cascade: tuple
    chains_per_job: int
    verlet_skin: float
    checkpoint_every_s: float
    # which sampler runs the chains of equilibrium_structures (never changes the protocol, only the moves)
    backend: str = "numba"

    def __post_init__(self):
        pairs = tuple(tuple(int(t) for t in p) for p in self.swap_pairs)
        object.__setattr__(self, "swap_pairs", _check_swap_pairs(pairs))
        if not 0.0 <= self.swap_fraction <= 1.0:
            raise ValueError(f"swap_fraction must lie in [0, 1], got {self.swap_fraction}")
        if not 0 < self.min_max_displacement <= self.max_displacement <= self.max_max_displacement:
            raise ValueError("need 0 < min_max_displacement <= max_displacement <= max_max_displacement")
        if not 0.0 < self.target_acceptance < 1.0:
            raise ValueError(f"target_acceptance must lie in (0, 1), got {self.target_acceptance}")
        for name in ("adapt_every", "record_every", "snapshot_every", "first_block_sweeps", "max_sweeps",
                     "max_origins", "anneal_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.max_snapshots < 8 or self.max_snapshots % 2:
            # even, so that thinning by 2 keeps the latest snapshot (see equilibrium_structure)
            raise ValueError(f"max_snapshots must be an even number >= 8, got {self.max_snapshots}")
        if self.snapshot_every % self.record_every:
            raise ValueError("snapshot_every must be a multiple of record_every")
        if not self.checkpoint_every_s >= 0:
            raise ValueError(f"checkpoint_every_s must be >= 0, got {self.checkpoint_every_s}")
        if not self.melt_temperature > 0:
            raise ValueError(f"melt_temperature must be positive, got {self.melt_temperature}")
        if self.overlap_frame not in OVERLAP_FRAMES:
            raise ValueError(f"overlap_frame must be one of {OVERLAP_FRAMES}, got {self.overlap_frame!r}")
        if not self.cage_radius > 0:
            raise ValueError(f"cage_radius must be positive, got {self.cage_radius}")
        positive_finite(self.verlet_skin, "verlet_skin")
        if not (isinstance(self.harvest_spacing, (int, float)) and math.isfinite(self.harvest_spacing)
                and self.harvest_spacing > 0):
            raise ValueError(f"harvest_spacing must be a positive number of tau_Q, got {self.harvest_spacing!r}")
        if not 0.0 < self.harvest_max_overlap <= 1.0:
            raise ValueError(f"harvest_max_overlap must lie in (0, 1], got {self.harvest_max_overlap!r}")
        if (isinstance(self.structures_per_chain, bool) or not isinstance(self.structures_per_chain, (int, np.integer))
                or self.structures_per_chain < 1):
            raise ValueError(f"structures_per_chain must be an integer >= 1, got {self.structures_per_chain!r}")
        if (isinstance(self.chains_per_job, bool) or not isinstance(self.chains_per_job, (int, np.integer))
                or self.chains_per_job < 1):
            raise ValueError(f"chains_per_job must be an integer >= 1, got {self.chains_per_job!r}")
        try:
            ladder = tuple(float(t) for t in (self.cascade or ()))
        except (TypeError, ValueError):
            raise ValueError(f"cascade must be a list of temperatures, got {self.cascade!r}") from None
        if any(not (math.isfinite(t) and t > 0) for t in ladder) or any(b >= a for a, b in zip(ladder, ladder[1:])):
            raise ValueError(f"cascade must list positive temperatures from high to low, got {list(ladder)}")
        object.__setattr__(self, "cascade", ladder)
        if self.backend not in SAMPLER_BACKENDS:
            raise ValueError(f"backend must be one of {SAMPLER_BACKENDS}, got {self.backend!r}")


def _check_swap_pairs(pairs) -> tuple:
    seen = set()
    for p in pairs:
        if len(p) != 2 or not all(0 <= t < N_TYPES for t in p) or p[0] == p[1]:
            raise ValueError(f"unknown swap pair {p}: need two different types among 0..{N_TYPES - 1}")
        key = tuple(sorted(p))
        if key in seen:
            raise ValueError(f"swap pair {p} listed twice")
        seen.add(key)
    return tuple(tuple(sorted(p)) for p in pairs)


def load_swap_settings(name: str = "default", **overrides) -> SwapSettings:
    """Settings from ``conf/swap/<name>.yaml``, with keyword overrides (unknown keys raise)."""
    path = f"conf/swap/{name}.yaml"
    cfg = OmegaConf.to_container(group_config("swap", name), resolve=True)
    names = {f.name for f in fields(SwapSettings)}
    unknown = (set(cfg) | set(overrides)) - names
    if unknown:
        raise KeyError(f"unknown swap setting(s) {sorted(unknown)}; known: {sorted(names)}")
    missing = names - set(cfg) - set(overrides)
    if missing:
        raise KeyError(f"{path} lacks setting(s) {sorted(missing)}")
    cfg.update(overrides)
    return SwapSettings(**cfg)

"""Physics of the 2D ternary Kob-Andersen mixture: potential, minimisation, OpenMM MD, swap Monte Carlo.

Public API (reduced units; types are ints 0, 1, 2; positions (N, 2); box = square side):
    particle_energies, forces, potential_energy, inherent_structure   (numpy reference)
    build_system, isoconfigurational_runs, isoconfigurational_runs_many (OpenMM)
    equilibrium_structure, equilibrium_structures                      (swap Monte Carlo; harvesting)
Submodules are imported on first use so that numpy-only users do not pay for OpenMM or numba.
"""

from importlib import import_module

from tglassmlp.physics.configuration import ConfigurationError, validate_configuration
from tglassmlp.physics.minimize import MinimizationError, inherent_structure
from tglassmlp.physics.potential import energy_and_forces, forces, particle_energies, potential_energy
from tglassmlp.physics.system import PairPotential, load_system

_LAZY = {
    "build_system": "tglassmlp.physics.openmm_system",
    "make_context": "tglassmlp.physics.openmm_system",
    "isoconfigurational_runs": "tglassmlp.physics.md",
    "isoconfigurational_runs_many": "tglassmlp.physics.md",
    "maxwell_boltzmann_velocities": "tglassmlp.physics.md",
    "equilibrium_structure": "tglassmlp.physics.swap_mc",
    "equilibrium_structures": "tglassmlp.physics.harvest",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tglassmlp.physics' has no attribute '{name}'")


__all__ = [
    "ConfigurationError", "MinimizationError", "PairPotential", "energy_and_forces", "forces",
    "inherent_structure", "load_system", "particle_energies", "potential_energy", "validate_configuration",
    *_LAZY,
]

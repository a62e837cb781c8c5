"""Observables: structural descriptors (inputs), bond breaking and labels (outputs), time-temperature superposition.

Add each new submodule's public names with one import line and extend ``__all__``.
"""

from tglassmlp.observables.attention import AttentionLengthScale, coarse_graining_lengths
from tglassmlp.observables.ceiling import LabelCeiling, label_ceiling, spearman_brown
from tglassmlp.observables.bond_breaking import Bonds, bond_breaking, initial_bonds
from tglassmlp.observables.chords import ChordLength, active_by_median, periodic_run_lengths
from tglassmlp.observables.descriptors import (
    CHANNELS,
    QUANTITIES,
    DescriptorScaler,
    DescriptorSettings,
    KeptColumns,
    cell_perimeters,
    descriptor_names,
    kept_columns,
    load_descriptor_settings,
    structural_descriptors,
    voronoi_perimeters,
)
from tglassmlp.observables.four_point import (
    FourPointStructureFactor,
    FourPointSusceptibility,
    OrnsteinZernikeFit,
    four_point_susceptibility,
    ornstein_zernike,
)
from tglassmlp.observables.labels import crossing_time, labels_at_levels, relaxation_time
from tglassmlp.observables.tessellation import radical_voronoi_perimeters
from tglassmlp.observables.tts import TimeTemperatureSuperposition

__all__ = [
    "Bonds", "bond_breaking", "initial_bonds", "crossing_time", "labels_at_levels", "relaxation_time",
    "TimeTemperatureSuperposition", "LabelCeiling", "label_ceiling", "spearman_brown",
    "CHANNELS", "QUANTITIES", "DescriptorScaler", "DescriptorSettings", "descriptor_names",
    "load_descriptor_settings", "structural_descriptors", "voronoi_perimeters", "KeptColumns", "cell_perimeters",
    "kept_columns", "radical_voronoi_perimeters",
    "AttentionLengthScale", "coarse_graining_lengths", "ChordLength", "active_by_median", "periodic_run_lengths",
    "FourPointStructureFactor", "FourPointSusceptibility", "OrnsteinZernikeFit", "four_point_susceptibility",
    "ornstein_zernike",
]

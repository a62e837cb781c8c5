"""Observables computed from configurations: structural descriptors (inputs) and, later, dynamic labels.

Add each new submodule's public names with one import line and extend ``__all__``.
"""

from tglassmlp.observables.descriptors import (
    CHANNELS,
    QUANTITIES,
    DescriptorScaler,
    DescriptorSettings,
    descriptor_names,
    load_descriptor_settings,
    structural_descriptors,
    voronoi_perimeters,
)

__all__ = [
    "CHANNELS", "QUANTITIES", "DescriptorScaler", "DescriptorSettings", "descriptor_names",
    "load_descriptor_settings", "structural_descriptors", "voronoi_perimeters",
]

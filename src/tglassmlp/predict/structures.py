"""The structures to predict on: found (:func:`find_structures`), read and completed with the inherent
structure and descriptors (:func:`load_structure`), and checked against the model's system
(:func:`check_structure`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tglassmlp.data.structures import GLASSBENCH_SUFFIXES, LAMMPS_SUFFIXES, SHARD_SUFFIXES
from tglassmlp.predict.errors import PredictionInputError
from tglassmlp.predict.members import Ensemble

log = logging.getLogger(__name__)


@dataclass
class InputStructure:
    """One structure to predict on, read and checked.

    Attributes:
        path: the input file. kind: 'shard' or 'glassbench'. label: output file stem.
        temperature: T [epsilon/k_B]. box: square box side [sigma].
        types: (N,) int64 0..2. positions: (N, 2) input configuration [sigma].
        inherent_positions: (N, 2) [sigma]. descriptors: (N, D) raw descriptors; descriptor_names: (D,).
        inherent_computed: whether the inherent structure was minimised here.
        timing: seconds spent reading, minimising, computing descriptors.
    """

    path: Path
    kind: str
    label: str
    temperature: float
    box: float
    types: np.ndarray
    positions: np.ndarray
    inherent_positions: np.ndarray
    descriptors: np.ndarray
    descriptor_names: list[str]
    inherent_computed: bool = False
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def n_particles(self) -> int:
        return int(self.types.shape[0])


def find_structures(spec: str | os.PathLike | Sequence) -> list[Path]:
    """Input files from a file, a folder (searched recursively) or a list of them, in a stable order.

    Raises PredictionInputError for a missing path, a file of unknown type, or a folder without structures.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise PredictionInputError("no structures given (structures=FILE, FOLDER or [FILE, ...])")
    known = SHARD_SUFFIXES + GLASSBENCH_SUFFIXES + LAMMPS_SUFFIXES
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in known and ".tmp-" not in p.name)
            ignored = sorted(p.name for p in path.rglob("*") if p.is_file() and p.suffix not in known
                             and not p.name.startswith("."))
            if ignored:
                log.info("%s: ignoring %d file(s) that are not structures (%s ...)", path, len(ignored), ignored[:3])
            if not found:
                raise PredictionInputError(f"structure folder {path} holds no shard (.h5), GlassBench (.npz) or "
                                           f"LAMMPS dump {LAMMPS_SUFFIXES} file")
            out += found
        elif path.is_file():
            if path.suffix not in known:
                raise PredictionInputError(f"{path}: unknown structure file type '{path.suffix}' (expected a shard "
                                           f"{SHARD_SUFFIXES}, a GlassBench file {GLASSBENCH_SUFFIXES} or a LAMMPS "
                                           f"dump {LAMMPS_SUFFIXES})")
            out.append(path)
        else:
            raise PredictionInputError(f"structure path {path} does not exist")
    return list(dict.fromkeys(out))


def _label(path: Path, kind: str) -> str:
    if kind == "shard":
        from tglassmlp.data.shards import parse_shard_path

        try:
            t, k = parse_shard_path(path)
            return f"T{t:.3f}_s{k:04d}"
        except ValueError:
            pass
    return path.stem


def load_structure(path: str | os.PathLike, *, temperature: float | None = None, cache_dir=None,
                   compute_inherent: bool = True, inherent_max_force: float = 1e-6,
                   descriptors=None) -> InputStructure:
    """Read one structure file (:func:`tglassmlp.data.structures.read_structure`) and complete it (inherent
    structure, descriptors).

    Args:
        path: a shard ``.h5``, a GlassBench ``.npz`` or a LAMMPS dump (first frame; needs ``temperature``).
        temperature: overrides the file's temperature [epsilon/k_B].
        cache_dir: descriptor cache (shared with training: keyed by the file and the descriptor settings).
        compute_inherent: minimise a structure stored without ``inherent_positions``; False makes it an error.
        inherent_max_force: convergence of that minimisation, max |F| [epsilon/sigma].
        descriptors: descriptor settings (DescriptorSettings or the ``descriptors`` config node; None: the
            defaults); the networks' scalers must know the resulting columns.
    """
    from tglassmlp.data import GlassBenchError, ShardError
    from tglassmlp.data.lammps import LammpsDumpError
    from tglassmlp.data.structures import read_structure, structure_descriptors
    from tglassmlp.observables.descriptors import load_descriptor_settings
    from tglassmlp.physics import ConfigurationError, MinimizationError, inherent_structure

    path = Path(path)
    if path.suffix not in SHARD_SUFFIXES + GLASSBENCH_SUFFIXES + LAMMPS_SUFFIXES:
        raise PredictionInputError(f"{path}: unknown structure file type '{path.suffix}'")
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        structure = read_structure(path, ("positions", "types", "inherent_positions", "particle_energies",
                                          "descriptors"))
    except (ShardError, GlassBenchError, LammpsDumpError, FileNotFoundError) as exc:
        raise PredictionInputError(str(exc)) from None
    if structure.temperature is None and temperature is None:
        raise PredictionInputError(f"{path}: a LAMMPS dump carries no temperature; give it (predict.py temperature=T)")
    timing["read_s"] = time.perf_counter() - t0
    types, positions, box = structure.types, structure.positions, structure.box
    computed = False
    if structure.inherent_positions is None:
        if not compute_inherent:
            raise PredictionInputError(f"{path}: no inherent structure stored (compute_inherent=true minimises it)")
        log.info("%s: no inherent structure stored; minimising (N = %d)", path, len(types))
        t0 = time.perf_counter()
        try:
            structure.inherent_positions = inherent_structure(positions, types, box, max_force=inherent_max_force)
        except (ConfigurationError, MinimizationError) as exc:
            raise PredictionInputError(f"{path}: inherent structure failed: {exc}") from None
        structure.particle_energies = None  # they would belong to another structure
        timing["inherent_s"] = time.perf_counter() - t0
        computed = True
    t0 = time.perf_counter()
    try:
        # one cache entry per file: a structure minimised here is recomputed identically, so the key holds
        descriptors, names = structure_descriptors(structure, cache_dir, load_descriptor_settings(
            "default" if descriptors is None else descriptors))
    except (ConfigurationError, ValueError) as exc:
        raise PredictionInputError(f"{path}: descriptors: {exc}") from None
    timing["descriptors_s"] = time.perf_counter() - t0
    if not np.all(np.isfinite(descriptors)):
        rows = np.flatnonzero(~np.isfinite(descriptors).all(axis=1))
        raise PredictionInputError(f"{path}: descriptors of {rows.size} particle(s) are not finite (first {rows[0]})")
    t = float(structure.temperature) if temperature is None else float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise PredictionInputError(f"{path}: temperature must be positive, got {t}")
    return InputStructure(path=path, kind=structure.kind, label=_label(path, structure.kind), temperature=t,
                          box=box, types=types, positions=positions,
                          inherent_positions=np.asarray(structure.inherent_positions, float),
                          descriptors=descriptors, descriptor_names=list(names), inherent_computed=computed,
                          timing=timing)


def check_structure(structure: InputStructure, ensemble: Ensemble, *, reference_type: int = 0, system=None,
                    density_rtol: float = 0.02, composition_atol: float = 0.03) -> None:
    """Refuse a structure the ensemble was not trained for (PredictionInputError naming file and quantity).

    Checks: every type 0, 1, 2 present and >= 2 reference particles; number density within ``density_rtol``
    and type fractions within ``composition_atol`` of the system config (``conf/system``: the descriptors
    are densities and energies of this system); descriptor column names equal to every network's scaler.
    """
    from tglassmlp.physics.system import N_TYPES, resolve_system

    system = resolve_system(system)
    where = str(structure.path)
    counts = np.bincount(structure.types, minlength=N_TYPES)
    if np.any(counts == 0):
        raise PredictionInputError(f"{where}: particle type(s) {np.flatnonzero(counts == 0).tolist()} absent "
                                   f"(counts {counts.tolist()}); the model's system is the ternary mixture 0, 1, 2")
    if counts[reference_type] < 2:
        raise PredictionInputError(f"{where}: fewer than 2 particles of the reference type {reference_type}")
    n = structure.n_particles
    density = n / structure.box**2
    if abs(density / system.number_density - 1.0) > density_rtol:
        raise PredictionInputError(
            f"{where}: number density N / box^2 = {n} / {structure.box:.4g}^2 = {density:.4f}, the model's system "
            f"{system.name} has {system.number_density:.4f} (tolerance {density_rtol:.0%}): N or box do not fit")
    ref = np.asarray(system.composition, dtype=float) / np.sum(system.composition)
    frac = counts / n
    if np.any(np.abs(frac - ref) > composition_atol):
        raise PredictionInputError(f"{where}: type fractions {np.round(frac, 3).tolist()} differ from the system's "
                                   f"{np.round(ref, 3).tolist()} by more than {composition_atol}")
    for m in ensemble.members:
        if list(m.scaler.names) != list(structure.descriptor_names):
            a, b = list(m.scaler.names), list(structure.descriptor_names)
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise PredictionInputError(
                f"{where}: descriptor columns differ from those network {m.name} was trained on ({len(b)} vs "
                f"{len(a)} columns; first difference at column {k}: "
                f"{b[k] if k < len(b) else '-'!r} vs {a[k] if k < len(a) else '-'!r})")

"""One structure in memory (:class:`Structure`) and the one loader for every file that holds one
(:func:`read_structure`: our shards ``.h5`` and GlassBench ``.npz`` files), with its structural descriptors
(:func:`structure_descriptors`: stored, cached on disk, or computed).

Used by simulate.py (the structure a dataset starts from), predict.py (any input structure), the training
data module, the analysis and the ensemble selection (through the data module's public reader).

Descriptor cache: ``<cache_dir>/<key>.npy`` where the key hashes the file (absolute path, size, mtime), the
descriptor settings (:class:`~tglassmlp.observables.descriptors.DescriptorSettings`, every field) and
:data:`~tglassmlp.observables.descriptors.DESCRIPTOR_CODE_VERSION`: a rewritten file, another setting or
changed descriptor code each get their own entry, never stale columns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tglassmlp.atomic import save_npy_atomic
from tglassmlp.data.glassbench import read_glassbench
from tglassmlp.data.lammps import read_lammps_dump
from tglassmlp.data.shards import open_shard, read_shard
from tglassmlp.observables.descriptors import (DESCRIPTOR_CODE_VERSION, DescriptorSettings, descriptor_names,
                                               load_descriptor_settings, structural_descriptors)

log = logging.getLogger(__name__)

#: Input suffixes: our shards and GlassBench files.
SHARD_SUFFIXES = (".h5", ".hdf5")
GLASSBENCH_SUFFIXES = (".npz",)
#: LAMMPS text dumps (first frame; :func:`tglassmlp.data.lammps.read_lammps_dump` for others)
LAMMPS_SUFFIXES = (".dump", ".lammpstrj")
#: Per-particle fields a structure may carry (trajectories and bond breaking are never loaded: they are large).
STRUCTURE_FIELDS = ("positions", "types", "inherent_positions", "particle_energies", "descriptors", "times",
                    "propensity")


@dataclass
class Structure:
    """A configuration read from disk, with what its file holds beside it.

    Attributes:
        path: the file. kind: 'shard', 'glassbench' or 'lammps'.
        positions: (N, 2) float64 configuration at t = 0 [sigma]. types: (N,) int64 0..2. box: side [sigma].
        temperature: T [epsilon/k_B] (shard attribute or GlassBench file name; None for a LAMMPS dump).
        index: structure index (shard name ``s<k>.h5`` / attribute, GlassBench file name), or None.
        source: where it came from (GlassBench ``source``, ``shard:<name>``).
        inherent_positions: (N, 2) [sigma] or None. particle_energies: (N,) of the inherent structure [epsilon]
            or None. descriptors: (N, D) stored descriptors or None, with descriptor_names (D,) and
            descriptor_settings_hash (the settings they were computed with; None when the shard records none).
        times: (T_n,) [tau] and propensity: (T_n, N) of the isoconfigurational MD, or None.
    """

    path: Path
    kind: str
    positions: np.ndarray
    types: np.ndarray
    box: float
    temperature: float | None
    index: int | None
    source: str
    inherent_positions: np.ndarray | None = None
    particle_energies: np.ndarray | None = None
    descriptors: np.ndarray | None = None
    descriptor_names: list[str] | None = None
    descriptor_settings_hash: str | None = None
    times: np.ndarray | None = None
    propensity: np.ndarray | None = None

    @property
    def n_particles(self) -> int:
        return int(self.types.shape[0])

    @property
    def has_md(self) -> bool:
        return self.times is not None and self.propensity is not None


def read_structure(path: str | os.PathLike, fields: Iterable[str] = STRUCTURE_FIELDS) -> Structure:
    """Read one structure file: a shard (the ``fields`` it has; positions and types always), a GlassBench
    file (positions, types, inherent structure) or the first frame of a LAMMPS dump (positions, types; no
    temperature: the caller supplies it).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a suffix that is neither a shard nor a GlassBench file.
        tglassmlp.data.ShardError, tglassmlp.data.GlassBenchError, tglassmlp.data.lammps.LammpsDumpError: a file
            that does not follow its format.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    if path.suffix in GLASSBENCH_SUFFIXES:
        gb = read_glassbench(path)
        return Structure(path=path, kind="glassbench", positions=gb.positions, types=gb.types, box=float(gb.box),
                         temperature=float(gb.temperature), index=int(gb.structure_index), source=gb.source,
                         inherent_positions=gb.inherent_positions)
    if path.suffix in LAMMPS_SUFFIXES:
        frame = read_lammps_dump(path)
        return Structure(path=path, kind="lammps", positions=frame.positions, types=frame.types, box=frame.box,
                         temperature=None, index=None, source=frame.source)
    if path.suffix in SHARD_SUFFIXES:
        wanted = {"positions", "types"} | set(fields)
        unknown = wanted - set(STRUCTURE_FIELDS)
        if unknown:
            raise ValueError(f"read_structure: unknown field(s) {sorted(unknown)}; known: {list(STRUCTURE_FIELDS)}")
        with open_shard(path) as reader:  # header only: which optional fields exist
            present = set(reader.fields)
        shard = read_shard(path, fields=[f for f in STRUCTURE_FIELDS if f in wanted and f in present])
        attrs = shard.field_attrs.get("descriptors", {}) if "descriptors" in shard else {}
        index = shard.attrs.get("structure_index")
        return Structure(path=path, kind="shard", positions=np.asarray(shard["positions"], dtype=np.float64),
                         types=np.asarray(shard["types"], dtype=np.int64), box=float(shard.box),
                         temperature=float(shard.temperature), index=None if index is None else int(index),
                         source=f"shard:{path.name}",
                         **{f: (np.asarray(shard[f], dtype=np.float64) if f in shard else None)
                            for f in ("inherent_positions", "particle_energies", "descriptors", "times",
                                      "propensity")},
                         descriptor_names=(list(attrs["descriptor_names"]) if "descriptor_names" in attrs else None),
                         descriptor_settings_hash=attrs.get("descriptor_settings_hash"))
    raise ValueError(f"unknown structure file type '{path.suffix}' for {path}: expected a GlassBench .npz, "
                     f"a tglassmlp .h5 shard or a LAMMPS dump {LAMMPS_SUFFIXES}")


# ------------------------------------------------------------------------------------------------ descriptors
def descriptor_settings_hash(settings: DescriptorSettings) -> str:
    """Hash of every descriptor setting and the descriptor code version: equal hashes, equal columns."""
    text = json.dumps({"settings": dataclasses.asdict(settings), "code_version": DESCRIPTOR_CODE_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_WARNED: set[str] = set()


def _warn_once(kind: str, message: str, *args) -> None:
    """log.warning once per process and ``kind`` (a dataset of 300 shards gives one line, not 300)."""
    if kind not in _WARNED:
        _WARNED.add(kind)
        log.warning(message, *args)


def descriptor_cache_key(path: str | os.PathLike, settings: DescriptorSettings) -> str:
    """Cache key of a file's descriptors: its absolute path, size and mtime (a rewritten file gets a new key)
    with :func:`descriptor_settings_hash` (another setting or descriptor code gets a new key)."""
    path = Path(path)
    st = path.stat()
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{descriptor_settings_hash(settings)}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def compute_descriptors(structure: Structure, settings: DescriptorSettings, system=None) -> np.ndarray:
    """(N, D) descriptors of the structure's inherent structure with ``settings`` (stored per-particle
    energies of the inherent structure are used when present)."""
    if structure.inherent_positions is None:
        raise ValueError(f"{structure.path}: no 'descriptors' and no 'inherent_positions' to compute them from")
    return structural_descriptors(structure.inherent_positions, structure.types, structure.box,
                                  settings=settings,
                                  energies=structure.particle_energies, system=system)


def structure_descriptors(structure: Structure, cache_dir: str | os.PathLike | None,
                          settings: DescriptorSettings | None = None) -> tuple[np.ndarray, list[str]]:
    """((N, D) descriptors, D column names) of a structure with ``settings`` (None: the library default,
    ``conf/descriptors/default.yaml``): the stored field when its columns are those of ``settings``, else the
    cache (``cache_dir``, None: none), else computed (then cached).

    Stored ``descriptors`` are used when their columns are those of ``settings`` and the shard's
    ``descriptor_settings_hash`` (written by simulate.py) equals :func:`descriptor_settings_hash` of ``settings``;
    another hash (another cutoff, perimeter method, descriptor code version, ...) means cache or recompute, with
    one warning per process. Shards written before the hash was recorded carry column names only: their stored
    descriptors are used, with one warning per process (docs/data-format.md).
    """
    settings = load_descriptor_settings() if settings is None else settings
    names = descriptor_names(settings.l_grid)
    if structure.descriptors is not None:
        stored_hash, wanted_hash = structure.descriptor_settings_hash, descriptor_settings_hash(settings)
        if structure.descriptor_names != names:
            log.info("%s: the stored descriptors have other columns than the settings ask for; using the cache or "
                     "recomputing", structure.path)
        elif stored_hash == wanted_hash:
            return np.asarray(structure.descriptors, dtype=np.float64), names
        elif stored_hash is None:
            _warn_once("unhashed", "%s: the stored descriptors record no descriptor_settings_hash (a shard from "
                       "before it was recorded): used as they are, assuming the present descriptor settings "
                       "(further such shards are not reported)", structure.path)
            return np.asarray(structure.descriptors, dtype=np.float64), names
        else:
            _warn_once(f"stale:{stored_hash}", "%s: the stored descriptors were computed with other descriptor "
                       "settings (hash %s, these settings %s): using the cache or recomputing (further shards "
                       "with hash %s are not reported)", structure.path, stored_hash, wanted_hash, stored_hash)
    cached = None
    if cache_dir is not None:
        cached = Path(cache_dir) / f"{descriptor_cache_key(structure.path, settings)}.npy"
        if cached.is_file():
            try:
                values = np.load(cached, allow_pickle=False)
                if values.shape == (structure.n_particles, len(names)):
                    return values, names
            except (OSError, ValueError):
                pass  # unreadable cache entry: recompute and replace it
            log.warning("descriptor cache entry %s is unusable; recomputing", cached)
    values = compute_descriptors(structure, settings)
    if cached is not None:
        # concurrent jobs computing the same entry both write complete files; the last rename wins
        save_npy_atomic(cached, values)
    return values, names

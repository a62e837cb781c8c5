"""On-disk shards: one HDF5 file per (temperature, structure), written atomically and validated on read.

A shard holds one structure of the 2D ternary Kob-Andersen system and whatever the pipeline stages have
computed for it so far (inherent structure, isoconfigurational trajectories, bond breaking, propensity,
descriptors). The layout is defined by two tables, :data:`FIELDS` (datasets) and :data:`ATTRIBUTES` (root
attributes); validation on write and on read, and the tables in ``docs/data-format.md``
(:func:`format_table_markdown`), are all derived from them, so code and documentation cannot drift apart.

Rules that keep a killed job harmless:

* :func:`write_shard` and :func:`update_shard` write to ``<name>.tmp-<pid>.<k>`` in the same directory,
  fsync it, then rename it onto the final name (``os.replace``, atomic on POSIX file systems; all through
  :mod:`tglassmlp.atomic`). A crash leaves either the previous file or no file under the final name, never
  half a file.
* Every dataset carries a Fletcher-32 checksum and the file uses the HDF5 1.10 object format, whose metadata
  (superblock, object headers, chunk indexes) is checksummed too; string attributes are stored as
  fixed-length bytes inside those checksummed headers. A damaged file is therefore reported as a
  :class:`ShardError` rather than read back as silently wrong numbers.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tglassmlp.atomic import TargetExistsError, atomic_path

#: Version of the layout described here; readers refuse files from a newer layout.
FORMAT_VERSION = 1

#: HDF5 object-format bounds. v110 gives checksummed metadata (superblock v3, object header v2) and is
#: readable by every HDF5 >= 1.10 (h5py >= 2.10).
_LIBVER = ("v110", "v110")

class ShardError(ValueError):
    """A shard file that is missing, unreadable or does not follow the layout (the message names the file
    and the field or attribute)."""


# ---------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class FieldSpec:
    """One dataset of a shard.

    Attributes:
        name: dataset name in the HDF5 file.
        shape: axis sizes, either a dimension symbol of :data:`DIMENSIONS` (``"N"``, ``"R"``, ``"T_n"``,
            ``"D"``) or a fixed integer.
        kind: numpy dtype kind accepted on write (``"f"`` floating, ``"i"`` integer).
        dtype: dtype stored on disk (inputs are cast to it).
        allowed: dtypes accepted on disk when reading (other writers may store types as int64). On write,
            a float input already in one of them is kept (``trajectories`` may stay float64); every other
            input of the right kind is cast to ``dtype``.
        units: reduced Lennard-Jones units of the values.
        description: meaning, one sentence.
        required: whether every shard must have it.
        chunk_axes: how many leading axes are chunked one index at a time (2 = one chunk per (run, frame)),
            so that reading a few runs or frames touches only those chunks.
        compress: gzip the dataset (large, compressible arrays).
        bounds: closed interval the values must lie in, if any.
        dataset_attrs: names of attributes the dataset must carry, with their meaning.
        optional_dataset_attrs: names of attributes the dataset may carry, with their meaning.
    """

    name: str
    shape: tuple[str | int, ...]
    kind: str
    dtype: str
    allowed: tuple[str, ...]
    units: str
    description: str
    required: bool = False
    chunk_axes: int = 0
    compress: bool = False
    bounds: tuple[float, float] | None = None
    dataset_attrs: tuple[tuple[str, str], ...] = ()
    optional_dataset_attrs: tuple[tuple[str, str], ...] = ()

    @property
    def shape_text(self) -> str:
        """The shape in the documentation's notation, e.g. ``(R, T_n, N, 2)``."""
        inner = ", ".join(str(s) for s in self.shape)
        return f"({inner},)" if len(self.shape) == 1 else f"({inner})"


#: Dimension symbols used in :attr:`FieldSpec.shape`. Each must take one value across a shard.
DIMENSIONS: dict[str, str] = {
    "N": "number of particles (equals the attribute `n_particles`)",
    "R": "number of isoconfigurational runs",
    "T_n": "number of observation times (the length of `times`)",
    "S": "number of recorded swap Monte Carlo sweeps of the equilibration run",
    "D": "number of descriptor columns (the length of `descriptor_names`; 176; the kept-column rule drops constant and duplicate ones)",
}

_FIELD_LIST = (
    FieldSpec("positions", ("N", 2), "f", "float64", ("float64",), "sigma",
              "equilibrium configuration at the shard's temperature (t = 0 of the isoconfigurational runs)",
              required=True),
    FieldSpec("types", ("N",), "i", "int8", ("int8", "int16", "int32", "int64"), "-",
              "particle type 0, 1, 2; 0 is the paper's large type 1", required=True, bounds=(0, 2)),
    FieldSpec("equilibration_energy", ("S",), "f", "float32", ("float32", "float64"), "epsilon",
              "potential energy per particle along the swap Monte Carlo run at T (the report's energy trace)",
              compress=True),
    FieldSpec("inherent_positions", ("N", 2), "f", "float64", ("float64",), "sigma",
              "inherent structure: local energy minimum reached from `positions`"),
    FieldSpec("particle_energies", ("N",), "f", "float64", ("float64",), "epsilon",
              "per-particle potential energy E_i = 1/2 sum_j V(r_ij) of the inherent structure"),
    FieldSpec("times", ("T_n",), "f", "float64", ("float64",), "tau",
              "observation times of the isoconfigurational runs, strictly increasing, >= 0"),
    FieldSpec("trajectories", ("R", "T_n", "N", 2), "f", "float32", ("float32", "float64"), "sigma",
              "unwrapped positions of the isoconfigurational runs at `times`", chunk_axes=2, compress=True),
    FieldSpec("bond_breaking", ("R", "T_n", "N"), "f", "float32", ("float32",), "-",
              "bond-breaking correlation C_B^i(t) of each run (fraction of initial neighbours kept)",
              chunk_axes=2, compress=True, bounds=(0.0, 1.0)),
    FieldSpec("propensity", ("T_n", "N"), "f", "float32", ("float32",), "-",
              "bond-breaking propensity: C_B^i(t) averaged over the runs", chunk_axes=1, compress=True,
              bounds=(0.0, 1.0)),
    FieldSpec("descriptors", ("N", "D"), "f", "float32", ("float32",), "mixed",
              "coarse-grained structural descriptors of the inherent structure (see `descriptor_names`)",
              compress=True,
              dataset_attrs=(("descriptor_names", "(D,) column names, one per descriptor column"),),
              optional_dataset_attrs=(("descriptor_settings_hash",
                                       "16 hex digits identifying the descriptor settings and code the columns were "
                                       "computed with (`tglassmlp.data.structures.descriptor_settings_hash`); "
                                       "readers with other settings recompute"),)),
)

#: Every known dataset, in canonical order.
FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in _FIELD_LIST}

#: Datasets every shard must have (the structure itself).
REQUIRED_FIELDS: tuple[str, ...] = tuple(name for name, spec in FIELDS.items() if spec.required)


@dataclass(frozen=True)
class AttrSpec:
    """One root attribute of a shard.

    Attributes:
        name: attribute name.
        type: ``"float"``, ``"int"``, ``"str"``, ``"yaml"`` (text; a mapping is resolved to YAML on write)
            or ``"json"`` (a mapping on the API side, JSON text on disk).
        units: units of a number, ``-`` otherwise.
        description: meaning.
        required: whether every shard must have it.
        auto: filled in by :func:`write_shard` / :func:`update_shard` when the caller leaves it out.
        frozen: may not change in :func:`update_shard` (identifies the shard).
    """

    name: str
    type: str
    units: str
    description: str
    required: bool = True
    auto: bool = False
    frozen: bool = False


_ATTR_LIST = (
    AttrSpec("temperature", "float", "epsilon/k_B", "temperature T of the state point", frozen=True),
    AttrSpec("n_particles", "int", "-", "number of particles N", auto=True, frozen=True),
    AttrSpec("box", "float", "sigma", "side of the square periodic box", frozen=True),
    AttrSpec("seed", "int", "-", "random seed of the stage that made the shard (-1: not applicable, e.g. imported data)"),
    AttrSpec("config_hash", "str", "-", "first 16 hex digits of sha256 of the resolved config as sorted JSON "
             "(`config_hash(cfg)`)", auto=True),
    AttrSpec("config", "yaml", "-", "resolved config, YAML text with sorted keys"),
    AttrSpec("package_versions", "json", "-", "versions of python, tglassmlp, numpy, h5py, openmm, ... (JSON object)",
             auto=True),
    AttrSpec("created", "str", "-", "UTC time of the first write, ISO 8601", auto=True, frozen=True),
    AttrSpec("updated", "str", "-", "UTC time of the latest `update_shard`, ISO 8601", required=False, auto=True),
    AttrSpec("format_version", "int", "-", f"layout version (this code writes {FORMAT_VERSION})", auto=True),
    AttrSpec("source", "str", "-", "where the structure comes from: 'swap_mc', 'md', 'glassbench:<file>', ..."),
    AttrSpec("structure_index", "int", "-", "index k of the structure at this temperature (file s<k>.h5)",
             required=False, frozen=True),
    # Stage-specific provenance (written by tglassmlp.simulation); add a row here for any new one.
    AttrSpec("inherent_max_force", "float", "epsilon/sigma",
             "largest force component max over i, alpha of abs(F_i,alpha) left on the inherent structure", required=False),
    AttrSpec("md_seed", "int", "-", "seed of the isoconfigurational MD runs (velocity draws)", required=False),
    AttrSpec("equilibrated", "int", "-", "1 if the swap Monte Carlo run met its equilibration criterion, 0 if not "
             "(such a structure is flagged and refused by training unless explicitly allowed)", required=False),
    AttrSpec("equilibration_report", "json", "-", "swap Monte Carlo report: acceptance rates, decorrelation "
             "times [sweeps], stationarity test, criterion and reasons (JSON object)", required=False),
)

#: Every known root attribute, in canonical order.
ATTRIBUTES: dict[str, AttrSpec] = {spec.name: spec for spec in _ATTR_LIST}

#: Root attributes every shard must have.
REQUIRED_ATTRIBUTES: tuple[str, ...] = tuple(name for name, spec in ATTRIBUTES.items() if spec.required)


def format_table_markdown() -> str:
    """Markdown tables of dimensions, datasets and root attributes, generated from the registry.

    ``docs/data-format.md`` embeds this text verbatim (a test checks it), so regenerate the document's block
    with ``python -c "import tglassmlp.data as d; print(d.format_table_markdown(), end='')"`` after changing :data:`FIELDS` or :data:`ATTRIBUTES`.
    """
    def cell(text: str) -> str:  # a '|' inside a cell would split the Markdown row
        return text.replace("|", "\\|")

    lines = ["| dimension | meaning |", "|---|---|"]
    lines += [f"| `{sym}` | {text} |" for sym, text in DIMENSIONS.items()]
    lines += ["", "| dataset | shape | dtype on disk | units | required | meaning |", "|---|---|---|---|---|---|"]
    for spec in FIELDS.values():
        dtype = " or ".join(spec.allowed) if spec.name == "trajectories" else spec.dtype
        extra = []
        if spec.bounds is not None:
            extra.append(f"values in [{spec.bounds[0]}, {spec.bounds[1]}]")
        if spec.chunk_axes:
            lead = ", ".join(str(s) for s in spec.shape[: spec.chunk_axes])
            extra.append(f"one chunk per ({lead})" if spec.chunk_axes > 1 else f"one chunk per {lead}")
        if spec.compress:
            extra.append("gzip")
        extra += [f"attribute `{name}`: {text}" for name, text in spec.dataset_attrs]
        extra += [f"optional attribute `{name}`: {text}" for name, text in spec.optional_dataset_attrs]
        meaning = cell(spec.description + ("" if not extra else " (" + "; ".join(extra) + ")"))
        lines.append(f"| `{spec.name}` | {spec.shape_text} | {dtype} | {spec.units} | "
                     f"{'yes' if spec.required else 'no'} | {meaning} |")
    lines += ["", "| attribute | type | units | required | filled in automatically | meaning |",
              "|---|---|---|---|---|---|"]
    for spec in ATTRIBUTES.values():
        lines.append(f"| `{spec.name}` | {spec.type} | {spec.units} | {'yes' if spec.required else 'no'} | "
                     f"{'yes' if spec.auto else 'no'} | {cell(spec.description)} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- naming
def shard_path(root: str | os.PathLike, temperature: float, index: int) -> Path:
    """Path of the shard of structure ``index`` at ``temperature``: ``<root>/T0.400/s0007.h5``.

    The temperature is written with three decimals so that 0.4 and 0.40 name the same file; a temperature
    that three decimals cannot represent (0.4004) is refused rather than merged with its neighbour.
    """
    t = float(temperature)
    if not np.isfinite(t) or round(t, 3) <= 0:  # T0.000 would be a valid-looking name for nonsense
        raise ValueError(f"shard_path: temperature must be finite and positive, got {temperature!r}")
    # The tolerance lets float32 temperatures through (0.4f = 0.40000000596) but not 0.4004.
    if abs(t - round(t, 3)) > 1e-6:
        raise ValueError(f"shard_path: temperature {temperature!r} has more than 3 decimals; shard names use T%.3f")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"shard_path: structure index must be a non-negative integer, got {index!r}")
    return Path(root) / f"T{t:.3f}" / f"s{int(index):04d}.h5"


_SHARD_NAME = re.compile(r"^T(?P<T>\d+\.\d{3})$")
_STRUCT_NAME = re.compile(r"^s(?P<k>\d+)\.h5$")


def parse_shard_path(path: str | os.PathLike) -> tuple[float, int]:
    """(temperature, structure index) from a path made by :func:`shard_path`; ValueError otherwise."""
    p = Path(path)
    m_t, m_k = _SHARD_NAME.match(p.parent.name), _STRUCT_NAME.match(p.name)
    if m_t is None or m_k is None:
        raise ValueError(f"{p}: not a shard path of the form <root>/T<x.xxx>/s<k>.h5")
    return float(m_t["T"]), int(m_k["k"])


# ---------------------------------------------------------------------------------------------- provenance
def _resolved_container(cfg: Any) -> Any:
    """Plain dict/list of a config given as DictConfig, mapping, list or YAML text, interpolations resolved."""
    from omegaconf import OmegaConf  # local import: omegaconf is only needed for provenance

    if isinstance(cfg, (str, bytes)):
        text = cfg.decode() if isinstance(cfg, bytes) else cfg
        cfg = OmegaConf.create(text) if text.strip() else OmegaConf.create({})
    elif not OmegaConf.is_config(cfg):
        cfg = OmegaConf.create(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def resolved_yaml(cfg: Any) -> str:
    """The resolved config as YAML text with sorted keys (what the ``config`` attribute stores)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(_resolved_container(cfg)), sort_keys=True)


def config_hash(cfg: Any) -> str:
    """Stable identifier of a config: the first 16 hex digits of sha256 of its resolved, key-sorted JSON.

    ``cfg`` may be an OmegaConf config, a plain mapping or YAML text; the same content gives the same hash
    whichever form it takes and in whatever order the keys were written.
    """
    text = json.dumps(_resolved_container(cfg), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# Distribution names on PyPI; versions are read from the installed metadata, so nothing heavy is imported.
_VERSIONED = ("tglassmlp", "numpy", "scipy", "h5py", "openmm", "omegaconf", "hydra-core", "torch",
              "pytorch-lightning", "freud-analysis", "numba", "mlflow")


@lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    out = {"python": sys.version.split()[0], "hdf5": h5py.version.hdf5_version}
    for dist in _VERSIONED:
        try:
            out[dist] = _metadata.version(dist)
        except _metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return tuple(out.items())


def package_versions() -> dict[str, str]:
    """Versions of Python, the HDF5 library and the packages the pipeline uses ("not installed" if absent)."""
    return dict(_package_versions())


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------- validation
def _first_index(mask: np.ndarray) -> tuple[int, ...] | int:
    idx = tuple(int(i) for i in np.argwhere(mask)[0])
    return idx[0] if len(idx) == 1 else idx


def _check_shapes(shapes: Mapping[str, tuple[int, ...]], where: str) -> dict[str, int]:
    """Resolve the dimension symbols from ``shapes`` (field -> shape), checking that they agree.

    Works on shapes only, so it runs on an open file before any data is read (a corrupted header that
    claims a huge shape is caught here rather than by a failed allocation).
    """
    dims: dict[str, int] = {}
    source: dict[str, str] = {}
    for name in FIELDS:
        if name not in shapes:
            continue
        spec, shape = FIELDS[name], tuple(int(s) for s in shapes[name])
        if len(shape) != len(spec.shape):
            raise ShardError(f"{where}: field '{name}' has shape {shape}, expected {spec.shape_text}")
        for axis, (sym, size) in enumerate(zip(spec.shape, shape)):
            if isinstance(sym, int):
                if size != sym:
                    raise ShardError(f"{where}: field '{name}' has shape {shape}, expected {spec.shape_text} "
                                     f"(axis {axis} must be {sym})")
                continue
            if size < 1:
                raise ShardError(f"{where}: field '{name}' has shape {shape}: axis {sym} is empty")
            if sym not in dims:
                dims[sym], source[sym] = size, name
            elif dims[sym] != size:
                raise ShardError(f"{where}: field '{name}' has shape {shape}, expected {spec.shape_text} with "
                                 f"{sym} = {dims[sym]} from field '{source[sym]}'")
    # A time axis only has a meaning through the times it counts.
    if "T_n" in dims and "times" not in shapes:
        raise ShardError(f"{where}: field '{source['T_n']}' is indexed by time but the shard has no 'times'")
    return dims


def _check_dtype(name: str, dtype: np.dtype, where: str) -> None:
    """On-disk dtype check (read side)."""
    spec = FIELDS[name]
    if np.dtype(dtype).name not in spec.allowed:
        raise ShardError(f"{where}: field '{name}' has dtype {np.dtype(dtype)}, expected {' or '.join(spec.allowed)}")


def _check_values(name: str, values: np.ndarray, where: str, *, offset: str = "") -> None:
    """Finiteness, bounds and per-field rules. ``offset`` explains indices of a partial read."""
    spec = FIELDS[name]
    if spec.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise ShardError(f"{where}: field '{name}' has {int(bad.sum())} non-finite value(s) "
                             f"(NaN or inf; first at index {_first_index(bad)}{offset})")
    if spec.bounds is not None:
        lo, hi = spec.bounds
        bad = (values < lo) | (values > hi)
        if bad.any():
            first = _first_index(bad)
            raise ShardError(f"{where}: field '{name}' has {int(bad.sum())} value(s) outside [{lo}, {hi}] "
                             f"(first at index {first}{offset}: {values[first]!r})")
    if name == "times" and values.size:
        if values[0] < 0:
            raise ShardError(f"{where}: field 'times' must be >= 0, first value is {values[0]!r}")
        step = np.diff(values)
        if (step <= 0).any():
            i = int(np.flatnonzero(step <= 0)[0])
            raise ShardError(f"{where}: field 'times' must be strictly increasing "
                             f"(times[{i}] = {values[i]!r}, times[{i + 1}] = {values[i + 1]!r})")


def _check_dataset_attrs(name: str, attrs: Mapping[str, Any], dims: Mapping[str, int], where: str) -> dict:
    """Per-dataset attributes (today the descriptors' column names, required, and settings hash, optional)."""
    spec = FIELDS[name]
    out = {}
    for attr, _ in spec.dataset_attrs:
        if attr not in attrs:
            raise ShardError(f"{where}: field '{name}' lacks its attribute '{attr}'")
        value = attrs[attr]
        if attr == "descriptor_names":
            names = [v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)
                     for v in np.asarray(value).reshape(-1)]
            if len(names) != dims.get("D", len(names)):
                raise ShardError(f"{where}: field '{name}' has {dims['D']} columns but {len(names)} "
                                 f"entries in '{attr}'")
            if len(set(names)) != len(names):
                raise ShardError(f"{where}: field '{name}': '{attr}' has duplicate entries")
            value = names
        out[attr] = value
    for attr, _ in spec.optional_dataset_attrs:
        if attr not in attrs:
            continue
        value = attrs[attr]
        value = value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else value
        if attr == "descriptor_settings_hash" and not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value)):
            raise ShardError(f"{where}: field '{name}': attribute '{attr}' must be 16 lowercase hex digits, "
                             f"got {value!r}")
        out[attr] = value
    unknown = set(attrs) - {a for a, _ in spec.dataset_attrs + spec.optional_dataset_attrs}
    if unknown:
        raise ShardError(f"{where}: field '{name}' has unknown attribute(s) {sorted(unknown)}")
    return out


def _coerce_attr(name: str, value: Any, where: str) -> Any:
    """API-side value of a root attribute (decoded from disk or given by a caller), type-checked."""
    spec = ATTRIBUTES[name]
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ShardError(f"{where}: attribute '{name}' is not UTF-8 text") from None
    try:
        if spec.type == "float":
            if isinstance(value, (str, bool, np.bool_)):
                raise TypeError
            out = float(value)
            if not np.isfinite(out):
                raise ShardError(f"{where}: attribute '{name}' must be finite, got {out}")
            return out
        if spec.type == "int":
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError
            return int(value)
        if spec.type == "json":
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, Mapping):
                raise TypeError
            json.dumps(value)  # must survive the trip to disk (TypeError otherwise)
            return dict(value)
        if spec.type in ("str", "yaml"):
            if not isinstance(value, str):
                raise TypeError
            if "\x00" in value:
                raise ShardError(f"{where}: attribute '{name}' contains a NUL character")
            return value
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ShardError):
            raise
        raise ShardError(f"{where}: attribute '{name}' must be of type {spec.type}, "
                         f"got {type(value).__name__} {value!r:.80}") from None
    raise AssertionError(f"unknown attribute type {spec.type}")  # registry bug, not a data error


def _check_attrs(attrs: Mapping[str, Any], dims: Mapping[str, int], where: str) -> dict[str, Any]:
    """Validate the root attributes (API-side values) against the registry and the fields' dimensions."""
    unknown = sorted(set(attrs) - set(ATTRIBUTES))
    if unknown:
        raise ShardError(f"{where}: unknown attribute(s) {unknown}; known: {list(ATTRIBUTES)}")
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in attrs]
    if missing:
        raise ShardError(f"{where}: missing required attribute(s) {missing}")
    out = {name: _coerce_attr(name, attrs[name], where) for name in ATTRIBUTES if name in attrs}
    for name in ("temperature", "box"):
        if out[name] <= 0:
            raise ShardError(f"{where}: attribute '{name}' must be positive, got {out[name]}")
    if "N" in dims and out["n_particles"] != dims["N"]:
        raise ShardError(f"{where}: attribute 'n_particles' = {out['n_particles']} but the fields have "
                         f"N = {dims['N']} particles")
    if out["format_version"] > FORMAT_VERSION or out["format_version"] < 1:
        raise ShardError(f"{where}: format_version {out['format_version']} is not supported by this "
                         f"tglassmlp (reads 1..{FORMAT_VERSION}); update tglassmlp")
    if not re.fullmatch(r"[0-9a-f]{16}", out["config_hash"]):
        raise ShardError(f"{where}: attribute 'config_hash' must be 16 lowercase hex digits, "
                         f"got {out['config_hash']!r}")
    return out


# ---------------------------------------------------------------------------------------------- writing
def _prepare_fields(fields: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """Arrays in their on-disk dtype, after the write-side checks (names, dtype kinds)."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ShardError(f"{where}: unknown field(s) {unknown}; known fields: {list(FIELDS)}")
    out = {}
    for name in FIELDS:
        if name not in fields:
            continue
        spec = FIELDS[name]
        try:
            arr = np.asarray(fields[name])
        except (TypeError, ValueError) as exc:
            raise ShardError(f"{where}: field '{name}' is not an array ({exc})") from None
        kind_ok = arr.dtype.kind in ("f", "i", "u") if spec.kind == "f" else arr.dtype.kind in ("i", "u")
        if not kind_ok:
            want = "floating-point" if spec.kind == "f" else "integer"
            raise ShardError(f"{where}: field '{name}' must be {want}, got dtype {arr.dtype} "
                             f"with shape {arr.shape}")
        if spec.kind == "i" and arr.size and (arr.min() < np.iinfo(spec.dtype).min
                                              or arr.max() > np.iinfo(spec.dtype).max):
            # Check before the cast: a wrapped int8 would hide an out-of-range type.
            _check_values(name, arr, where)
        # Only float fields with several allowed dtypes keep theirs (float64 trajectories); the rest are cast.
        keep = spec.kind == "f" and arr.dtype.name in spec.allowed
        target = arr.dtype if keep else np.dtype(spec.dtype)
        out[name] = np.ascontiguousarray(arr, dtype=target)
    return out


def _encode_attr(name: str, value: Any, where: str) -> Any:
    """On-disk form of an API-side attribute value."""
    spec = ATTRIBUTES[name]
    if spec.type == "json":
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, str):
        if "\x00" in value:
            raise ShardError(f"{where}: attribute '{name}' contains a NUL character")
        raw = value.encode("utf-8")
        # Fixed-length bytes live in the checksummed object header; variable-length strings would go to the
        # unchecksummed global heap.
        return np.array(raw, dtype=f"S{max(1, len(raw))}")
    if spec.type == "float":
        return np.float64(value)
    return np.int64(value)


def _write_dataset(h5: h5py.File, name: str, array: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """Create one dataset with the registry's chunking, compression and checksum."""
    spec = FIELDS[name]
    # A chunk is the trailing axes (one run and frame of positions); small arrays are one chunk.
    chunks = tuple([1] * spec.chunk_axes + list(array.shape[spec.chunk_axes:]))
    kwargs: dict[str, Any] = {"chunks": chunks, "fletcher32": True}
    if spec.compress:
        kwargs.update(compression="gzip", compression_opts=4, shuffle=True)
    ds = h5.create_dataset(name, data=array, **kwargs)
    for key, value in attrs.items():
        if key == "descriptor_names":
            raw = [str(v).encode("utf-8") for v in value]
            ds.attrs[key] = np.array(raw, dtype=f"S{max(1, max((len(r) for r in raw), default=1))}")
        else:  # descriptor_settings_hash: a str (HDF5 variable-length UTF-8)
            ds.attrs[key] = str(value)


def _write_atomic(path: Path, fields: Mapping[str, np.ndarray], field_attrs: Mapping[str, Mapping],
                  attrs: Mapping[str, Any], *, overwrite: bool) -> None:
    """Write everything to a temporary beside ``path``, fsync, then move it onto ``path``
    (:func:`tglassmlp.atomic.atomic_path`; without ``overwrite`` a hard link, so two racing writers cannot
    both win)."""
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            with h5py.File(tmp, "w", libver=_LIBVER) as h5:
                for name, value in attrs.items():
                    h5.attrs[name] = _encode_attr(name, value, str(path))
                for name, array in fields.items():
                    _write_dataset(h5, name, array, field_attrs.get(name, {}))
                h5.flush()
    except TargetExistsError:
        raise FileExistsError(f"{path}: shard exists; pass overwrite=True to replace it") from None


def _normalise_field_attrs(fields: Mapping[str, np.ndarray], field_attrs: Mapping[str, Mapping] | None,
                           dims: Mapping[str, int], where: str) -> dict[str, dict]:
    field_attrs = dict(field_attrs or {})
    stray = sorted(set(field_attrs) - set(fields))
    if stray:
        raise ShardError(f"{where}: field_attrs given for field(s) {stray} that are not written")
    return {name: _check_dataset_attrs(name, field_attrs.get(name, {}), dims, where)
            for name in fields if FIELDS[name].dataset_attrs or name in field_attrs}


def _complete_attrs(attrs: Mapping[str, Any], dims: Mapping[str, int], where: str) -> dict[str, Any]:
    """Fill in the automatic attributes and make ``config``/``config_hash`` consistent."""
    out = dict(attrs)
    if "N" in dims:
        out.setdefault("n_particles", dims["N"])
    out.setdefault("format_version", FORMAT_VERSION)
    out.setdefault("package_versions", package_versions())
    out.setdefault("created", _utc_now())
    if "config" in out:
        cfg = out["config"]
        try:
            text = resolved_yaml(cfg)  # normalised, so that equal configs are stored as equal text
            digest = config_hash(cfg)
        except Exception as exc:  # omegaconf raises its own error family for bad YAML / interpolations
            raise ShardError(f"{where}: attribute 'config' cannot be resolved ({type(exc).__name__}: {exc})") from None
        if "config_hash" in out and out["config_hash"] != digest:
            raise ShardError(f"{where}: attribute 'config_hash' = {out['config_hash']!r} does not match the "
                             f"config (its hash is {digest!r}); leave config_hash out to have it computed")
        out["config"], out["config_hash"] = text, digest
    return out


def write_shard(path: str | os.PathLike, fields: Mapping[str, Any], attrs: Mapping[str, Any], *,
                overwrite: bool = False, field_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Validate and write a new shard atomically.

    Args:
        path: final file name, usually from :func:`shard_path`; parent directories are created.
        fields: dataset name -> array, names and shapes as in :data:`FIELDS` (``positions`` (N, 2) [sigma]
            and ``types`` (N,) are required). Arrays are cast to the on-disk dtype.
        attrs: root attributes as in :data:`ATTRIBUTES`. ``n_particles``, ``format_version``, ``created``
            and ``package_versions`` are filled in when absent; ``config`` may be a mapping/OmegaConf config
            (stored as resolved YAML) and ``config_hash`` is computed from it (or checked if given).
        overwrite: replace an existing file; without it an existing file raises FileExistsError.
        field_attrs: per-dataset attributes, e.g. ``{"descriptors": {"descriptor_names": [...]}}``.

    Returns:
        The path written.

    Raises:
        ShardError: unknown field or attribute, inconsistent shapes, wrong dtype kind, non-finite values,
            types outside 0..2 (the message names the field and the shape or index).
        FileExistsError: the file exists and ``overwrite`` is false.
    """
    path = Path(path)
    where = str(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: shard exists; pass overwrite=True to replace it")
    arrays = _prepare_fields(fields, where)
    missing = [name for name in REQUIRED_FIELDS if name not in arrays]
    if missing:
        raise ShardError(f"{where}: missing required field(s) {missing}")
    dims = _check_shapes({k: v.shape for k, v in arrays.items()}, where)
    for name, array in arrays.items():
        _check_values(name, array, where)
    ds_attrs = _normalise_field_attrs(arrays, field_attrs, dims, where)
    attrs = _check_attrs(_complete_attrs(attrs, dims, where), dims, where)
    _write_atomic(path, arrays, ds_attrs, attrs, overwrite=overwrite)
    return path


def update_shard(path: str | os.PathLike, new_fields: Mapping[str, Any] | None = None,
                 new_attrs: Mapping[str, Any] | None = None, *, replace: bool = False,
                 field_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Add a stage's fields (and attributes) to an existing shard, atomically.

    The existing shard is read in full (which verifies every checksum), merged with the new fields,
    validated as a whole and written to a temporary file that then replaces the original. The original is
    never opened for writing, so a crash at any point leaves it intact. The cost is one read and one write
    of the shard per stage, small next to the simulation that produced the stage.

    Args:
        path: an existing shard.
        new_fields: datasets to add; shapes must agree with the existing ones (same N, R, T_n).
        new_attrs: attributes to add or change. ``temperature``, ``n_particles``, ``box``,
            ``structure_index`` and ``created`` identify the shard and cannot change. ``updated`` and
            ``package_versions`` are refreshed; a new ``config`` gets a new ``config_hash``.
        replace: allow ``new_fields`` to replace fields already present (otherwise ShardError).
        field_attrs: per-dataset attributes of the new fields.

    Only one process may update a given shard at a time (the last rename wins); shards are independent jobs.
    """
    path = Path(path)
    where = str(path)
    old = read_shard(path)
    new_arrays = _prepare_fields(dict(new_fields or {}), where)
    clash = sorted(set(new_arrays) & set(old.fields))
    if clash and not replace:
        raise ShardError(f"{where}: field(s) {clash} already present; pass replace=True to replace them")
    merged = {name: old.fields[name] for name in FIELDS if name in old.fields and name not in new_arrays}
    merged.update(new_arrays)
    merged = {name: merged[name] for name in FIELDS if name in merged}
    dims = _check_shapes({k: v.shape for k, v in merged.items()}, where)
    for name, array in new_arrays.items():
        _check_values(name, array, where)
    ds_attrs = {k: v for k, v in old.field_attrs.items() if k not in new_arrays}
    ds_attrs.update(_normalise_field_attrs(new_arrays, field_attrs, dims, where))

    new_attrs = dict(new_attrs or {})
    for name in new_attrs:
        spec = ATTRIBUTES.get(name)
        if spec is not None and spec.frozen and name in old.attrs and \
                _coerce_attr(name, new_attrs[name], where) != old.attrs[name]:
            raise ShardError(f"{where}: attribute '{name}' identifies the shard and cannot change "
                             f"({old.attrs[name]!r} -> {new_attrs[name]!r})")
    attrs = dict(old.attrs)
    if "config" in new_attrs and "config_hash" not in new_attrs:
        attrs.pop("config_hash", None)
    attrs.update(new_attrs)
    attrs["package_versions"] = new_attrs.get("package_versions", package_versions())
    attrs["updated"] = new_attrs.get("updated", _utc_now())
    attrs = _check_attrs(_complete_attrs(attrs, dims, where), dims, where)
    _write_atomic(path, merged, ds_attrs, attrs, overwrite=True)
    return path


# ---------------------------------------------------------------------------------------------- reading
@dataclass(eq=False)
class Shard:
    """A shard read into memory.

    Fields are available as ``shard["positions"]`` or ``shard.positions``; ``attrs`` holds the root
    attributes (``package_versions`` as a dict), ``field_attrs`` the per-dataset attributes
    (``shard.field_attrs["descriptors"]["descriptor_names"]`` is a list of str).
    """

    path: Path
    attrs: dict[str, Any]
    fields: dict[str, np.ndarray]
    field_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(f"{self.path}: no field '{name}' was read (present: {sorted(self.fields)})") from None

    def __contains__(self, name: object) -> bool:
        return name in self.fields

    def keys(self):
        return self.fields.keys()

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails; go through __dict__ so that copy/pickle do not recurse.
        fields = self.__dict__.get("fields")
        if fields is not None and name in fields:
            return fields[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or field '{name}'")

    @property
    def temperature(self) -> float:
        """Temperature [epsilon/k_B]."""
        return self.attrs["temperature"]

    @property
    def box(self) -> float:
        """Square box side [sigma]."""
        return self.attrs["box"]

    @property
    def n_particles(self) -> int:
        """Number of particles N."""
        return self.attrs["n_particles"]


def _index_array(selection: Any, size: int, what: str, where: str) -> np.ndarray | None:
    """Selection along one axis as sorted-or-not index array; None means everything."""
    if selection is None:
        return None
    try:
        if isinstance(selection, (int, np.integer)) and not isinstance(selection, bool):
            idx = np.array([np.arange(size)[selection]])
        else:
            idx = np.arange(size)[selection]
    except (IndexError, TypeError, ValueError) as exc:
        raise IndexError(f"{where}: bad {what} selection {selection!r} for {size} {what} ({exc})") from None
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise IndexError(f"{where}: {what} selection {selection!r} selects nothing")
    return idx


class ShardReader:
    """An open shard for lazy reads; make it with :func:`open_shard`.

    Opening reads and validates the attributes and every dataset's shape and dtype, but no data; then
    :meth:`read` loads one field, optionally only some runs and frames (one chunk per (run, frame), so
    reading 2 of 20 runs reads a tenth of the trajectories).

    Attributes:
        path: the file.
        attrs: validated root attributes.
        dims: sizes of the dimensions N, R, T_n, D present in the shard.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._where = str(self.path)
        self._h5 = None
        if not self.path.exists():
            raise ShardError(f"{self._where}: shard file not found")
        if not self.path.is_file():
            raise ShardError(f"{self._where}: not a file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except Exception as exc:  # h5py raises OSError for truncated / non-HDF5 files, others for worse
            raise ShardError(f"{self._where}: not a readable HDF5 file (truncated or corrupt?): {exc}") from None
        try:
            self._open()
        except ShardError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise ShardError(f"{self._where}: corrupt shard ({type(exc).__name__}: {exc})") from None

    def _open(self) -> None:
        h5, where = self._h5, self._where
        names = list(h5.keys())
        unknown = sorted(set(names) - set(FIELDS))
        if unknown:
            raise ShardError(f"{where}: unknown dataset(s) {unknown}")
        shapes = {}
        for name in names:
            obj = h5[name]
            if not isinstance(obj, h5py.Dataset):
                raise ShardError(f"{where}: field '{name}' is not a dataset")
            shapes[name] = obj.shape
            _check_dtype(name, obj.dtype, where)
        missing = [name for name in REQUIRED_FIELDS if name not in shapes]
        if missing:
            raise ShardError(f"{where}: missing required field(s) {missing}")
        self.dims = _check_shapes(shapes, where)
        self.attrs = _check_attrs(dict(h5.attrs.items()), self.dims, where)
        self.field_attrs = {}
        for name in names:
            ds_attrs = dict(h5[name].attrs.items())
            if ds_attrs or FIELDS[name].dataset_attrs:
                self.field_attrs[name] = _check_dataset_attrs(name, ds_attrs, self.dims, where)
        self._shapes = shapes

    # context manager -------------------------------------------------------------------------------
    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:  # closing a corrupt file can itself complain; nothing left to protect
                pass
            self._h5 = None

    # queries ---------------------------------------------------------------------------------------
    @property
    def fields(self) -> list[str]:
        """Names of the datasets present, in canonical order."""
        return [name for name in FIELDS if name in self._shapes]

    def __contains__(self, name: object) -> bool:
        return name in self._shapes

    def shape(self, name: str) -> tuple[int, ...]:
        """On-disk shape of a field."""
        self._require(name)
        return tuple(self._shapes[name])

    def _require(self, name: str) -> None:
        if name not in FIELDS:
            raise ValueError(f"unknown field '{name}'; known fields: {list(FIELDS)}")
        if name not in self._shapes:
            raise ShardError(f"{self._where}: has no field '{name}' (present: {self.fields})")

    def read(self, name: str, *, runs: Any = None, frames: Any = None) -> np.ndarray:
        """Load and validate one field.

        Args:
            name: a field of :data:`FIELDS`.
            runs: runs to keep along the R axis (int, slice or sequence of int; None = all). An int keeps
                the axis (length 1). Ignored by fields without an R axis.
            frames: times to keep along the T_n axis, same forms. Ignored by fields without a T_n axis.

        Returns:
            The array in its on-disk dtype, e.g. ``trajectories[runs][:, frames]`` of shape
            (len(runs), len(frames), N, 2) [sigma].
        """
        self._require(name)
        if self._h5 is None:
            raise ValueError(f"{self._where}: shard is closed")
        spec, where = FIELDS[name], self._where
        shape = self._shapes[name]
        picks = []
        for axis, sym in enumerate(spec.shape):
            sel = runs if sym == "R" else frames if sym == "T_n" else None
            picks.append(_index_array(sel, shape[axis], "runs" if sym == "R" else "frames", where))
        n_lead = max((axis + 1 for axis, p in enumerate(picks) if p is not None), default=0)
        try:
            ds = self._h5[name]
            if n_lead == 0:
                values = ds[()]
            else:
                # Selected axes are the leading ones (R, T_n); read one leading index tuple at a time so that
                # only the chunks asked for are decompressed.
                lead = [p if p is not None else np.arange(shape[axis]) for axis, p in enumerate(picks[:n_lead])]
                values = np.empty(tuple(len(p) for p in lead) + tuple(shape[n_lead:]), dtype=ds.dtype)
                for out_idx in np.ndindex(*values.shape[:n_lead]):
                    values[out_idx] = ds[tuple(int(lead[a][i]) for a, i in enumerate(out_idx))]
        except ShardError:
            raise
        except Exception as exc:  # checksum mismatch, decompression failure, broken chunk index ...
            raise ShardError(f"{where}: field '{name}' cannot be read (corrupt file?): "
                             f"{type(exc).__name__}: {exc}") from None
        offset = "" if n_lead == 0 else " of the selection"
        _check_values(name, values, where, offset=offset)
        return values


def open_shard(path: str | os.PathLike) -> ShardReader:
    """Open a shard for lazy reading (use as a context manager); see :class:`ShardReader`.

    Example::

        with open_shard(p) as s:
            first_runs = s.read("trajectories", runs=[0, 1], frames=slice(-3, None))
    """
    return ShardReader(path)


def read_shard(path: str | os.PathLike, fields: Sequence[str] | None = None, *, runs: Any = None,
               frames: Any = None) -> Shard:
    """Read and validate a shard.

    Args:
        path: shard file.
        fields: names to load (default: every field present). The structure fields are validated even when
            not requested. A requested field that the file lacks raises ShardError.
        runs: keep only these runs of the R axis (``trajectories``, ``bond_breaking``); int, slice or
            sequence of int.
        frames: keep only these times of the T_n axis (``times``, ``trajectories``, ``bond_breaking``,
            ``propensity``), so that the returned shard stays self-consistent.

    Returns:
        :class:`Shard` with the requested fields in their on-disk dtypes.

    Raises:
        ShardError: missing, truncated or corrupt file; missing required field or attribute; unknown field;
            wrong shape or dtype; NaN/inf (naming the field and the first bad index); types outside 0..2.
    """
    if isinstance(fields, str):
        fields = [fields]
    with open_shard(path) as reader:
        names = reader.fields if fields is None else list(fields)
        for name in names:
            reader._require(name)
        data = {name: reader.read(name, runs=runs, frames=frames) for name in FIELDS if name in names}
        field_attrs = {k: v for k, v in reader.field_attrs.items() if k in data}
        return Shard(path=Path(path), attrs=dict(reader.attrs), fields=data, field_attrs=field_attrs)


def is_complete(path: str | os.PathLike, required_fields: Sequence[str] = REQUIRED_FIELDS) -> bool:
    """Whether ``path`` is a readable shard that has all of ``required_fields`` (for resuming a job).

    Checks attributes, shapes and dtypes but reads no data, so it is cheap; a missing, half-written or
    damaged file gives False (rewrite it with ``overwrite=True``). Temporary ``*.tmp-<pid>.<k>`` files left by a
    killed job are never looked at.
    """
    for name in required_fields:
        if name not in FIELDS:
            raise ValueError(f"is_complete: unknown field '{name}'; known fields: {list(FIELDS)}")
    try:
        with open_shard(path) as reader:
            return all(name in reader for name in required_fields)
    except ShardError:
        return False

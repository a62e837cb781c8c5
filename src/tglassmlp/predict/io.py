"""Prediction files: one HDF5 file per structure, written atomically (:func:`write_prediction`) and read back
(:func:`read_prediction`); :func:`settings_hash` is what a rerun compares.

Output file (``<out_dir>/<label>.pred.h5``; ``label`` = ``T<T>_s<k>`` for a shard, the file stem otherwise).
N: particles of the input, K: networks, L: levels, J = max_iterations. Per-particle arrays keep the input's
particle order; entries of non-reference particles (types other than ``reference_type``) are NaN.

==================================== ============ ==========================================================
dataset                              shape        meaning
==================================== ============ ==========================================================
``types``                            (N,) int8    particle types 0, 1, 2 as in the input
``positions``                        (N, 2)       input configuration [sigma]
``inherent_positions``               (N, 2)       inherent structure the descriptors were computed on [sigma]
``reference_index``                  (N_0,) int64 indices of the reference (type-0) particles
``levels``                           (L,)         target levels c* = <C_B> [-]
``times``                            (L,)         times of the levels [tau] (NaN when levels were requested)
``propensity_mean``                  (L, N) f4    mean over the K networks of the predicted propensity
``propensity_std``                   (L, N) f4    spread over the networks (population std, ddof = 0)
``propensity_networks``              (K, L, N) f4 every network's prediction (when ``save_networks``)
``constraint/input_level``           (K, L)       network input c_j of the reported prediction
``constraint/mean_prediction``       (K, L)       Xbar at that input
``constraint/iterations``            (K, L) int   updates made (0: the first evaluation was within tolerance)
``constraint/converged``             (K, L) int8  1 where |Xbar - c*| <= tolerance
``constraint/history_input``         (K, L, J+1)  c_j per iteration (NaN after the stop)
``constraint/history_mean``          (K, L, J+1)  Xbar(c_j) per iteration (NaN after the stop)
==================================== ============ ==========================================================

Root attributes: ``format`` (= ``tglassmlp-prediction``), ``format_version``, ``created``, ``source`` (input
file), ``source_kind`` (``shard`` / ``glassbench``), ``temperature``, ``box``, ``n_particles``,
``reference_type``, ``inherent_computed`` (1 if this run minimised the structure), ``ensemble`` (JSON list of
{name, digest, source}), ``settings`` (JSON) and ``settings_hash`` (what a rerun compares), ``constraint``
(JSON), ``package_versions`` (JSON). :func:`read_prediction` reads a file back into a dict.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tglassmlp.atomic import atomic_path
from tglassmlp.predict.errors import PredictionInputError
from tglassmlp.predict.prediction import EnsemblePrediction
from tglassmlp.predict.structures import InputStructure

FORMAT = "tglassmlp-prediction"
FORMAT_VERSION = 1


def _full(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(..., N_0) -> (..., N) with NaN at the non-reference particles."""
    out = np.full(values.shape[:-1] + (reference.shape[0],), np.nan, dtype=np.float32)
    out[..., reference] = values
    return out


def write_prediction(path: str | os.PathLike, structure: InputStructure, prediction: EnsemblePrediction,
                     levels, times, settings: Mapping[str, Any], save_networks: bool = True) -> Path:
    """Write one structure's prediction (layout: module docstring) to ``path`` atomically (temp file, fsync,
    rename)."""
    import h5py

    from tglassmlp.data.shards import package_versions

    path = Path(path)
    ref = prediction.reference
    gz = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            attrs = {"format": FORMAT, "format_version": FORMAT_VERSION,
                     "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     "source": str(structure.path.resolve()), "source_kind": structure.kind,
                     "temperature": structure.temperature, "box": structure.box,
                     "n_particles": structure.n_particles, "reference_type": prediction.reference_type,
                     "inherent_computed": int(structure.inherent_computed),
                     "ensemble": json.dumps([m.describe() for m in prediction.ensemble.members]),
                     "ensemble_source": json.dumps(prediction.ensemble.source, default=str),
                     "constraint": json.dumps(prediction.constraint.settings()),
                     "settings": json.dumps(settings, sort_keys=True, default=str),
                     "settings_hash": settings_hash(settings),
                     "package_versions": json.dumps(package_versions())}
            for k, v in attrs.items():
                h5.attrs[k] = v
            h5.create_dataset("types", data=structure.types.astype(np.int8))
            h5.create_dataset("positions", data=structure.positions)
            h5.create_dataset("inherent_positions", data=structure.inherent_positions)
            h5.create_dataset("reference_index", data=np.flatnonzero(ref).astype(np.int64))
            h5.create_dataset("levels", data=np.asarray(levels, dtype=np.float64))
            h5.create_dataset("times", data=np.asarray(times, dtype=np.float64))
            h5.create_dataset("propensity_mean", data=_full(prediction.mean, ref), **gz)
            h5.create_dataset("propensity_std", data=_full(prediction.std, ref), **gz)
            if save_networks:
                h5.create_dataset("propensity_networks", data=_full(prediction.per_network, ref), **gz)
            grp = h5.create_group("constraint")
            for name, arr in prediction.constraint_arrays().items():
                grp.create_dataset(name, data=arr)
            h5.flush()
    return path


def read_prediction(path: str | os.PathLike) -> dict[str, Any]:
    """A prediction file as {'attrs': {...} (JSON attributes decoded), dataset name: array, 'constraint': {...}}."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise PredictionInputError(f"prediction file {path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
            if attrs.get("format") != FORMAT:
                raise PredictionInputError(f"{path}: not a tglassmlp prediction file (format {attrs.get('format')!r})")
            if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
                raise PredictionInputError(f"{path}: format version {attrs['format_version']} is newer than this "
                                           f"code's {FORMAT_VERSION}")
            out: dict[str, Any] = {name: h5[name][()] for name in h5 if isinstance(h5[name], h5py.Dataset)}
            out["constraint"] = {name: h5["constraint"][name][()] for name in h5["constraint"]}
    except OSError as exc:
        raise PredictionInputError(f"{path}: not a readable HDF5 file ({exc})") from None
    for key in ("ensemble", "ensemble_source", "constraint", "settings", "package_versions"):
        if key in attrs:
            attrs[key] = json.loads(attrs[key])
    out["attrs"] = attrs
    return out


def settings_hash(settings: Mapping[str, Any]) -> str:
    """First 16 hex digits of sha256 of the settings as sorted JSON (what a rerun compares)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _existing_hash(path: Path) -> str | None:
    """settings_hash of a finished prediction file, None if it is missing or unreadable."""
    try:
        return str(read_prediction(path)["attrs"].get("settings_hash"))
    except (PredictionInputError, OSError, KeyError, ValueError):
        return None

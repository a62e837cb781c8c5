"""GSD files (HOOMD-blue's format, read by OVITO, freud, MDAnalysis) of structures and per-particle fields.

One frame per structure: ``particles/position`` (N, 3) float32 in the centred box [-L/2, L/2) with z = 0,
``particles/typeid`` 0, 1, 2 and ``particles/types`` named by :data:`TYPE_NAMES`, ``configuration/box``
[L, L, 1, 0, 0, 0] with ``configuration/dimensions`` 2, and every per-particle field as a log quantity
``log/particles/<name>`` (N,), which OVITO loads as a particle property to colour by. Fields that exist only
for the reference particles (propensities) are NaN elsewhere, as in prediction files.

Shards convert with :func:`shard_frame`; prediction files, and the command line
``python -m tglassmlp.predict.gsd_export OUT.gsd INPUT...``, are in :mod:`tglassmlp.predict.gsd_export`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from tglassmlp.physics.configuration import validate_configuration

#: names of types 0, 1, 2 (the paper's species 1, 2, 3)
TYPE_NAMES = ("1", "2", "3")


class GsdError(ValueError):
    """A structure or field that cannot be written (the message names the input and the field)."""


def _gsd_hoomd():
    try:
        import gsd.hoomd
    except ImportError as exc:   # an optional dependency of the data layer
        raise ImportError("writing GSD files needs the 'gsd' package: pip install gsd") from exc
    return gsd.hoomd


def structure_frame(positions, types, box: float, properties: Mapping[str, np.ndarray] | None = None, *,
                    step: int = 0, where: str = "structure_frame"):
    """A ``gsd.hoomd.Frame`` of one 2D structure with per-particle ``properties`` (name -> (N,) array)."""
    hoomd = _gsd_hoomd()
    positions, types, box = validate_configuration(positions, types, box, where=where)
    n = types.shape[0]
    frame = hoomd.Frame()
    frame.configuration.step = int(step)
    frame.configuration.dimensions = 2
    frame.configuration.box = [box, box, 1.0, 0.0, 0.0, 0.0]
    frame.particles.N = n
    frame.particles.types = list(TYPE_NAMES)
    frame.particles.typeid = types.astype(np.uint32)
    centred = np.mod(positions, box) - box / 2
    centred[centred >= box / 2] -= box   # float32 rounding must not put a particle on the upper face
    frame.particles.position = np.column_stack([centred, np.zeros(n)]).astype(np.float32)
    for name, values in (properties or {}).items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise GsdError(f"{where}: property '{name}' has shape {values.shape}, expected ({n},)")
        if "/" in name or not name:
            raise GsdError(f"{where}: property name {name!r} must be non-empty and contain no '/'")
        frame.log[f"particles/{name}"] = values.astype(np.float32 if values.dtype.kind == "f" else values.dtype)
    return frame


def write_gsd(path: str | os.PathLike, frames: Iterable) -> Path:
    """Write ``frames`` (from :func:`structure_frame`) to ``path`` atomically (a complete file or none)."""
    from tglassmlp.atomic import atomic_path

    hoomd = _gsd_hoomd()
    frames = list(frames)
    if not frames:
        raise GsdError(f"write_gsd({path}): no frames to write")
    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:
        with hoomd.open(tmp, mode="w") as handle:
            for frame in frames:
                handle.append(frame)
    return path


def shard_frame(path: str | os.PathLike):
    """Frame of a shard: ``particle_energy`` (inherent structure) and ``propensity_t<time>`` per MD time, where
    stored. Positions are the equilibrium configuration."""
    from tglassmlp.data.shards import read_shard

    shard = read_shard(path)
    f = shard.fields
    props = {}
    if "particle_energies" in f:
        props["particle_energy"] = f["particle_energies"]
    if "propensity" in f and "times" in f:
        for time, values in zip(f["times"], f["propensity"]):
            props[f"propensity_t{time:g}"] = values
    return structure_frame(f["positions"], f["types"], float(shard.attrs["box"]), props, where=str(path))

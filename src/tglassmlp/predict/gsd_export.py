"""Prediction files and shards to one GSD file for OVITO: ``python -m tglassmlp.predict.gsd_export OUT.gsd INPUT...``.

Prediction files (``*.pred.h5``) give ``propensity_<c>`` and ``propensity_std_<c>`` per level (mean and spread
over the networks, NaN on non-reference particles) and ``reference``; shards (``*.h5``) give ``particle_energy``
and the MD ``propensity_t<time>``. One frame per input, in the given order (format: :mod:`tglassmlp.data.gsd`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from tglassmlp.data.gsd import GsdError, shard_frame, structure_frame, write_gsd
from tglassmlp.predict.io import read_prediction


def _level_name(level: float) -> str:
    return f"c{level:.3f}"


def prediction_frame(path: str | os.PathLike):
    """Frame of a prediction file: ``propensity_<c>`` and ``propensity_std_<c>`` per level c (and ``_t<time>``
    in the name when the level came from a time), plus ``reference`` (1 for predicted particles)."""
    d = read_prediction(path)
    attrs = d["attrs"]
    props = {}
    for k, (level, time) in enumerate(zip(d["levels"], d["times"])):
        tag = _level_name(level) + ("" if not np.isfinite(time) else f"_t{time:g}")
        props[f"propensity_{tag}"] = d["propensity_mean"][k]
        props[f"propensity_std_{tag}"] = d["propensity_std"][k]
    reference = np.zeros(len(d["types"]), dtype=np.int32)
    reference[d["reference_index"]] = 1
    props["reference"] = reference
    return structure_frame(d["positions"], d["types"], float(attrs["box"]), props, where=str(path))


def export_gsd(out: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> Path:
    """One GSD file with a frame per input (``*.pred.h5`` prediction files or shards), in the given order."""
    frames = []
    for item in inputs:
        item = Path(item)
        if not item.is_file():
            raise GsdError(f"export_gsd: input {item} not found")
        frames.append(prediction_frame(item) if item.name.endswith(".pred.h5") else shard_frame(item))
    return write_gsd(out, frames)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tglassmlp.predict.gsd_export", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="GSD file to write")
    parser.add_argument("inputs", nargs="+", help="prediction files (*.pred.h5) or shards (*.h5)")
    args = parser.parse_args(argv)
    path = export_gsd(args.out, args.inputs)
    print(f"wrote {path} ({len(args.inputs)} frame(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

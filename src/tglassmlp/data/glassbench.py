"""Import of GlassBench structures (Jung et al., "Roadmap on machine learning glassy dynamics").

GlassBench stores one structure and one time code per ``.npz`` file, named
``N<N>T<T>_<structure>_tc<code>.npz`` (e.g. ``N1290T0.23_202_tc05.npz``), with

=============================== ============ ==================================================
key                             shape        meaning
=============================== ============ ==================================================
``box``                         ()           square box side [sigma]
``types``                       (N,)         particle types 1, 2, 3
``initial_positions``           (N, 2)       equilibrium configuration at t = 0 [sigma]
``initial_positions_inherent``  (N, 2)       its inherent structure [sigma]
``positions``                   (R, N, 2)    unwrapped positions of R isoconfigurational runs at
                                             the time of the time code [sigma]
=============================== ============ ==================================================

:func:`read_glassbench` converts the types to this project's 0, 1, 2 and checks everything with
:func:`tglassmlp.physics.configuration.validate_configuration`.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tglassmlp.physics.configuration import ConfigurationError, validate_configuration

#: Times [tau] of the GlassBench time codes, from the data set's documentation (MD time step 0.01).
#: Keys: temperature as written in the file name, then the integer time code.
GLASSBENCH_TIMES: dict[str, dict[int, float]] = {
    "0.23": {5: 0.1, 10: 1.1, 15: 11.64, 20: 122.47, 25: 1288.41, 30: 13554.0, 35: 142587.0, 40: 1.5e6},
    "0.30": {1: 0.11, 2: 1.25, 3: 14.14, 4: 158.74, 5: 1781.79, 6: 20000.0},
}

_NAME = re.compile(r"^N(?P<n>\d+)T(?P<T>\d+(?:\.\d+)?)_(?P<index>\d+)_tc(?P<tc>\d+)\.npz$")
_KEYS = ("box", "types", "initial_positions", "initial_positions_inherent", "positions")


class GlassBenchError(ValueError):
    """A GlassBench file that cannot be imported (the message names the file and the key)."""


@dataclass(frozen=True)
class GlassBenchStructure:
    """One imported GlassBench structure, in this project's conventions.

    Attributes:
        path: the ``.npz`` file.
        n_particles: N, from the file name (checked against the arrays).
        temperature: T [epsilon/k_B], from the file name.
        structure_index: structure number in the file name (202 in ``N1290T0.23_202_tc05.npz``).
        time_code: integer time code (5 for ``tc05``).
        time: time of the time code [tau], or None when the code is not in :data:`GLASSBENCH_TIMES`.
        box: square box side [sigma].
        types: (N,) int64 particle types 0, 1, 2 (GlassBench's 1, 2, 3 minus one).
        positions: (N, 2) float64 equilibrium configuration at t = 0 [sigma] (unwrapped, as stored).
        inherent_positions: (N, 2) float64 inherent structure [sigma].
        run_positions: (R, N, 2) float64 unwrapped positions of the R runs at ``time`` [sigma].
    """

    path: Path
    n_particles: int
    temperature: float
    structure_index: int
    time_code: int
    time: float | None
    box: float
    types: np.ndarray
    positions: np.ndarray
    inherent_positions: np.ndarray
    run_positions: np.ndarray

    @property
    def source(self) -> str:
        """Provenance label for the shard attribute ``source``."""
        return f"glassbench:{self.path.name}"

    def shard_fields(self) -> dict[str, np.ndarray]:
        """Fields for :func:`tglassmlp.data.write_shard`; the runs become ``trajectories`` (R, 1, N, 2) at
        ``times`` = [time] when the time is known, and are left out otherwise."""
        fields = {"positions": self.positions, "types": self.types, "inherent_positions": self.inherent_positions}
        if self.time is not None:
            fields["times"] = np.array([self.time])
            fields["trajectories"] = self.run_positions[:, None]
        return fields

    def shard_attrs(self) -> dict[str, Any]:
        """Attributes for :func:`tglassmlp.data.write_shard`, except ``config`` (the caller's import config).

        ``seed`` is -1: the runs were not made by this project."""
        return {"temperature": self.temperature, "box": self.box, "source": self.source,
                "structure_index": self.structure_index, "seed": -1}


def parse_glassbench_name(name: str | os.PathLike) -> dict[str, Any]:
    """(n_particles, temperature, structure_index, time_code, time) from a GlassBench file name.

    ``time`` is None when the time code is not in :data:`GLASSBENCH_TIMES` (other temperatures or codes).
    """
    base = Path(name).name
    m = _NAME.match(base)
    if m is None:
        raise GlassBenchError(f"{name}: file name does not follow GlassBench's N<N>T<T>_<structure>_tc<code>.npz "
                              f"(e.g. N1290T0.23_202_tc05.npz)")
    t_text, code = m["T"], int(m["tc"])
    # Look the time up by the temperature's value so that T0.3 and T0.30 both find the T = 0.30 table.
    table = next((v for k, v in GLASSBENCH_TIMES.items() if float(k) == float(t_text)), {})
    return {"n_particles": int(m["n"]), "temperature": float(t_text), "structure_index": int(m["index"]),
            "time_code": code, "time": table.get(code)}


def read_glassbench(path: str | os.PathLike) -> GlassBenchStructure:
    """Read and check one GlassBench ``.npz`` file.

    Args:
        path: file named like ``N1290T0.23_202_tc05.npz``.

    Returns:
        :class:`GlassBenchStructure` with types 0..2, float64 positions [sigma] and the state point and
        time parsed from the name.

    Raises:
        GlassBenchError: missing or unreadable file, name not in GlassBench form, a missing key, wrong
            shapes, non-finite positions, types outside 1..3, N in the name unlike the arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise GlassBenchError(f"{path}: GlassBench file not found")
    meta = parse_glassbench_name(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in _KEYS if key not in npz.files]
            if missing:
                raise GlassBenchError(f"{path}: missing key(s) {missing} (has {sorted(npz.files)})")
            raw = {key: npz[key] for key in _KEYS}
    except GlassBenchError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise GlassBenchError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None

    n = meta["n_particles"]
    types = raw["types"]
    if types.shape != (n,):
        raise GlassBenchError(f"{path}: key 'types' has shape {types.shape}, expected ({n},) from the file name")
    if not np.issubdtype(types.dtype, np.integer):
        raise GlassBenchError(f"{path}: key 'types' must be integers 1..3, got dtype {types.dtype}")
    bad = (types < 1) | (types > 3)
    if bad.any():
        raise GlassBenchError(f"{path}: key 'types' has values {sorted(set(types[bad].tolist()))} outside 1..3 "
                              f"(first at particle {int(np.flatnonzero(bad)[0])})")
    for key in ("initial_positions", "initial_positions_inherent"):
        if raw[key].shape != (n, 2):
            raise GlassBenchError(f"{path}: key '{key}' has shape {raw[key].shape}, expected ({n}, 2)")
    runs = raw["positions"]
    if runs.ndim != 3 or runs.shape[1:] != (n, 2) or runs.shape[0] < 1:
        raise GlassBenchError(f"{path}: key 'positions' has shape {runs.shape}, expected (R, {n}, 2) with R >= 1")
    if raw["box"].size != 1:
        raise GlassBenchError(f"{path}: key 'box' must be one number (square box side), got shape {raw['box'].shape}")

    try:
        positions, types0, box = validate_configuration(raw["initial_positions"], types.astype(np.int64) - 1,
                                                        raw["box"], where=f"{path}: initial_positions")
        inherent, _, _ = validate_configuration(raw["initial_positions_inherent"], types0, box,
                                                where=f"{path}: initial_positions_inherent")
    except ConfigurationError as exc:
        raise GlassBenchError(str(exc)) from None
    runs = np.asarray(runs, dtype=np.float64)
    bad = ~np.isfinite(runs)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise GlassBenchError(f"{path}: key 'positions' has {int(bad.sum())} non-finite value(s) "
                              f"(first at index {first})")
    return GlassBenchStructure(path=path, types=types0, positions=positions, inherent_positions=inherent,
                               run_positions=runs, box=box, **meta)


def glassbench_name(n_particles: int, temperature: float, structure_index: int, time_code: int) -> str:
    """GlassBench's file name ``N<N>T<T>_<structure>_tc<code>.npz`` (T with two decimals, code with two digits)."""
    return f"N{int(n_particles)}T{temperature:.2f}_{int(structure_index)}_tc{int(time_code):02d}.npz"


def write_glassbench(path: str | os.PathLike, *, positions, inherent_positions, types, box: float,
                     run_positions) -> Path:
    """Write one structure and time code in GlassBench's npz layout (the inverse of :func:`read_glassbench`).

    Args:
        path: the file, named by :func:`glassbench_name` (checked, so that the reader can parse it back).
        positions, inherent_positions: (N, 2) [sigma]; types: (N,) 0, 1, 2 (written as GlassBench's 1, 2, 3);
        box: square side [sigma]; run_positions: (R, N, 2) unwrapped positions of the runs at the code's time.

    The file is written atomically. Times are not stored in GlassBench files: the reader takes them from the
    time code and :data:`GLASSBENCH_TIMES`, so trees made from other times need their own code -> time table.
    """
    from tglassmlp.atomic import save_npz_atomic

    path = Path(path)
    meta = parse_glassbench_name(path)
    where = f"write_glassbench({path.name})"
    positions, types, box = validate_configuration(positions, types, box, where=where)
    inherent, _, _ = validate_configuration(inherent_positions, types, box, where=where)
    runs = np.asarray(run_positions, dtype=np.float64)
    n = types.shape[0]
    if n != meta["n_particles"]:
        raise GlassBenchError(f"{where}: N = {n} but the file name says N = {meta['n_particles']}")
    if runs.ndim != 3 or runs.shape[1:] != (n, 2) or runs.shape[0] < 1 or not np.all(np.isfinite(runs)):
        raise GlassBenchError(f"{where}: run_positions must be finite with shape (R, {n}, 2), got {runs.shape}")
    return save_npz_atomic(path, {"box": np.float64(box), "types": (types + 1).astype(np.int64),
                                  "initial_positions": positions, "initial_positions_inherent": inherent,
                                  "positions": runs})

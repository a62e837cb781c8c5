"""Structures from LAMMPS text dump files (``dump ... atom`` / ``custom`` style), the format MD users already have.

A frame of a dump reads::

    ITEM: TIMESTEP
    1000
    ITEM: NUMBER OF ATOMS
    1290
    ITEM: BOX BOUNDS pp pp pp
    0.0 32.8962
    0.0 32.8962
    -0.5 0.5
    ITEM: ATOMS id type xu yu zu ...
    1 1 0.25 11.3 0.0
    ...

:func:`read_lammps_dump` returns one frame as a :class:`LammpsFrame` in this project's conventions: positions
(N, 2) wrapped into [0, box), ordered by atom id, types 0, 1, 2 from LAMMPS types 1, 2, 3 (the paper's
labels), and the square box side. Coordinates may be given in any of LAMMPS's forms; the first available of
``x y`` (wrapped, or unwrapped together with image flags ``ix iy``), ``xu yu`` (unwrapped), ``xs ys`` (scaled)
and ``xsu ysu`` (scaled unwrapped) is used, in any column order. A third dimension (a 2D run written as a 3D
dump, ``dimension 2`` with a thin z slab) is ignored; a tilted (triclinic) or non-square box is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tglassmlp.physics.configuration import ConfigurationError, validate_configuration

#: Coordinate column pairs in order of preference: (x, y, scaled, unwrapped).
_COORDINATES = (("x", "y", False, False), ("xu", "yu", False, True),
                ("xs", "ys", True, False), ("xsu", "ysu", True, True))
#: relative tolerance on Lx == Ly for a square box (LAMMPS writes bounds with ~16 significant digits, often fewer)
_SQUARE_RTOL = 1e-6


class LammpsDumpError(ValueError):
    """A dump file that cannot be read as a 2D ternary structure (the message names the file, frame and line)."""


@dataclass(frozen=True)
class LammpsFrame:
    """One frame of a LAMMPS dump, in this project's conventions.

    Attributes:
        path: the dump file.
        frame: index of the frame in the file (0 = first).
        timestep: the frame's ``ITEM: TIMESTEP`` value [MD steps].
        positions: (N, 2) float64 positions wrapped into [0, box) [sigma], row k = k-th smallest atom id.
        types: (N,) int64 types 0, 1, 2 (LAMMPS types 1, 2, 3 minus one).
        box: square box side [sigma].
        ids: (N,) int64 LAMMPS atom ids, ascending.
    """

    path: Path
    frame: int
    timestep: int
    positions: np.ndarray
    types: np.ndarray
    box: float
    ids: np.ndarray

    @property
    def n_particles(self) -> int:
        return int(self.types.shape[0])

    @property
    def source(self) -> str:
        """Provenance label (as the shard attribute ``source``)."""
        return f"lammps:{self.path.name}#frame{self.frame}"


class _Lines:
    """Line reader that counts lines for error messages."""

    def __init__(self, handle, path):
        self._handle, self.path, self.number = handle, path, 0

    def next(self, expect: str) -> str:
        line = self._handle.readline()
        if not line:
            raise LammpsDumpError(f"{self.path}: file ends at line {self.number} while reading {expect} "
                                  f"(truncated dump?)")
        self.number += 1
        return line.rstrip("\n")

    def item(self, name: str) -> str:
        """The text after ``ITEM: <name>``; error if the next line is another item."""
        line = self.next(f"'ITEM: {name}'")
        if not line.startswith(f"ITEM: {name}"):
            raise LammpsDumpError(f"{self.path}, line {self.number}: expected 'ITEM: {name}', got {line[:60]!r}")
        return line[len(f"ITEM: {name}"):].strip()

    def at_end(self) -> bool:
        pos = self._handle.tell()
        eof = not self._handle.readline()
        self._handle.seek(pos)
        return eof


def _number(text: str, kind, lines: _Lines, what: str):
    try:
        return kind(text)
    except ValueError:
        raise LammpsDumpError(f"{lines.path}, line {lines.number}: {what} must be a number, got {text!r}") from None


def _header(lines: _Lines, frame: int) -> tuple[int, int, np.ndarray, list[str]]:
    """(timestep, N, bounds (dims, 2), atom column names) of the frame that starts at the next line."""
    timestep = _number(lines.next("the timestep").strip(), int, lines, "TIMESTEP")
    lines.item("NUMBER OF ATOMS")
    n = _number(lines.next("the number of atoms").strip(), int, lines, "NUMBER OF ATOMS")
    if n < 1:
        raise LammpsDumpError(f"{lines.path}, frame {frame}: NUMBER OF ATOMS is {n}")
    flags = lines.item("BOX BOUNDS").split()
    if any(f in ("xy", "xz", "yz", "abc") for f in flags):
        raise LammpsDumpError(f"{lines.path}, frame {frame}: triclinic box ({' '.join(flags)}); this project needs "
                              f"a square periodic box")
    bounds = [_bounds(lines.next(f"the {axis} box bounds"), lines, axis) for axis in "xy"]
    line = lines.next("the z box bounds or 'ITEM: ATOMS'")
    if not line.startswith("ITEM: ATOMS"):   # a 3D dump: z bounds, ignored (2D run in a thin slab)
        _bounds(line, lines, "z")
        line = lines.next("'ITEM: ATOMS'")
        if not line.startswith("ITEM: ATOMS"):
            raise LammpsDumpError(f"{lines.path}, line {lines.number}: expected 'ITEM: ATOMS', got {line[:60]!r}")
    columns = line[len("ITEM: ATOMS"):].split()
    return timestep, n, np.asarray(bounds), columns


def _bounds(line: str, lines: _Lines, axis: str) -> list[float]:
    parts = line.split()
    if line.startswith("ITEM:") or len(parts) != 2:
        raise LammpsDumpError(f"{lines.path}, line {lines.number}: {axis} bounds must be two numbers (lo hi), "
                              f"got {line[:60]!r}")
    return [_number(p, float, lines, f"{axis} bound") for p in parts]


def _skip(lines: _Lines, n: int, frame: int):
    for _ in range(n):
        lines.next(f"the atoms of frame {frame}")


def read_lammps_dump(path: str | os.PathLike, frame: int = 0, *, n_particles: int | None = None) -> LammpsFrame:
    """Read one frame of a LAMMPS text dump of the 2D ternary mixture.

    Args:
        path: the dump file (``dump ID group atom`` or ``custom`` style, text, not gzipped).
        frame: which frame, 0-based; negative counts from the end (-1 = last frame).
        n_particles: expected N; a frame with another N is an error (None: any N).

    Returns:
        :class:`LammpsFrame` (positions (N, 2) wrapped into [0, box) [sigma] in atom-id order, types 0..2, box).

    Raises:
        LammpsDumpError (a ValueError) naming the file, frame and line: missing file, truncated frame, missing
        ``id``/``type``/coordinate columns, a non-numeric entry, duplicate ids, LAMMPS types outside 1..3,
        a tilted or non-square box, a frame index out of range, N unlike ``n_particles``, non-finite or
        overlapping positions (through :func:`tglassmlp.physics.configuration.validate_configuration`).
    """
    path = Path(path)
    if not path.is_file():
        raise LammpsDumpError(f"{path}: LAMMPS dump not found")
    if not isinstance(frame, (int, np.integer)) or isinstance(frame, bool):
        raise LammpsDumpError(f"{path}: frame must be an integer, got {frame!r}")
    with open(path, encoding="ascii", errors="replace") as handle:
        lines = _Lines(handle, path)
        if frame < 0:
            starts = _frame_offsets(handle, path)
            if -frame > len(starts):
                raise LammpsDumpError(f"{path}: frame {frame} requested, the file has {len(starts)} frame(s)")
            handle.seek(starts[frame][0])
            lines.number = starts[frame][1]
            index = len(starts) + frame
        else:
            index = 0
        while True:
            if index > 0 and frame >= 0 and lines.at_end():
                raise LammpsDumpError(f"{path}: frame {frame} requested, the file has {index} frame(s)")
            if lines.at_end():
                raise LammpsDumpError(f"{path}: empty file, no 'ITEM: TIMESTEP'")
            lines.item("TIMESTEP")
            timestep, n, bounds, columns = _header(lines, index)
            if frame >= 0 and index < frame:
                _skip(lines, n, index)
                index += 1
                continue
            block = [lines.next(f"atom {k + 1} of {n} of frame {index}") for k in range(n)]
            return _frame(path, index, timestep, n, bounds, columns, block, lines.number - n, n_particles)


def _frame_offsets(handle, path) -> list[tuple[int, int]]:
    """(byte offset, line number) of every ``ITEM: TIMESTEP`` line."""
    starts, number = [], 0
    handle.seek(0)
    while True:
        offset = handle.tell()
        line = handle.readline()
        if not line:
            break
        if line.startswith("ITEM: TIMESTEP"):
            starts.append((offset, number))
        number += 1
    if not starts:
        raise LammpsDumpError(f"{path}: no 'ITEM: TIMESTEP' found (not a LAMMPS text dump?)")
    return starts


def _frame(path, index, timestep, n, bounds, columns, block, first_line, n_particles) -> LammpsFrame:
    where = f"{path}, frame {index}"
    if n_particles is not None and n != n_particles:
        raise LammpsDumpError(f"{where}: {n} atoms, expected N = {n_particles}")
    for needed in ("id", "type"):
        if needed not in columns:
            raise LammpsDumpError(f"{where}: no '{needed}' column in 'ITEM: ATOMS {' '.join(columns)}'")
    choice = next((c for c in _COORDINATES if c[0] in columns and c[1] in columns), None)
    if choice is None:
        raise LammpsDumpError(f"{where}: no coordinate columns (one of x y, xu yu, xs ys, xsu ysu) in "
                              f"'ITEM: ATOMS {' '.join(columns)}'")
    cx, cy, scaled, _ = choice
    rows = [row.split() for row in block]
    for k, row in enumerate(rows):
        if len(row) != len(columns):
            raise LammpsDumpError(f"{path}, line {first_line + k + 1}: {len(row)} entries, expected {len(columns)} "
                                  f"({' '.join(columns)})")
    table = np.array(rows)
    col = {name: k for k, name in enumerate(columns)}
    try:
        ids = table[:, col["id"]].astype(np.int64)
        lammps_types = table[:, col["type"]].astype(np.int64)
        xy = table[:, [col[cx], col[cy]]].astype(np.float64)
    except ValueError as exc:
        raise LammpsDumpError(f"{where}: non-numeric entry in the id, type or coordinate columns ({exc})") from None
    lo, hi = bounds[0:2, 0], bounds[0:2, 1]
    lengths = hi - lo
    if np.any(lengths <= 0):
        raise LammpsDumpError(f"{where}: box bounds {bounds[:2].tolist()} have a non-positive length")
    if abs(lengths[0] - lengths[1]) > _SQUARE_RTOL * lengths.max():
        raise LammpsDumpError(f"{where}: box is {lengths[0]:g} x {lengths[1]:g}, this project needs a square box")
    box = float(lengths.mean())
    if scaled:
        xy = xy * lengths
    else:
        xy = xy - lo
    # image flags are not needed: wrapping below removes them from unwrapped and wrapped-with-images alike
    order = np.argsort(ids, kind="stable")
    ids, lammps_types, xy = ids[order], lammps_types[order], xy[order]
    duplicate = np.flatnonzero(np.diff(ids) == 0)
    if duplicate.size:
        raise LammpsDumpError(f"{where}: atom id {int(ids[duplicate[0]])} appears more than once")
    bad = (lammps_types < 1) | (lammps_types > 3)
    if bad.any():
        raise LammpsDumpError(f"{where}: LAMMPS types {sorted(set(lammps_types[bad].tolist()))} outside 1..3 "
                              f"(atom id {int(ids[np.flatnonzero(bad)[0]])}); this is the ternary mixture 1, 2, 3")
    if not np.all(np.isfinite(xy)):
        k = int(np.flatnonzero(~np.isfinite(xy).all(axis=1))[0])
        raise LammpsDumpError(f"{where}: non-finite coordinates of atom id {int(ids[k])}")
    xy = np.mod(xy, box)
    xy[xy >= box] = 0.0   # mod can round up to box itself
    try:
        positions, types, box = validate_configuration(xy, lammps_types - 1, box, where=where)
    except ConfigurationError as exc:
        raise LammpsDumpError(str(exc)) from None
    return LammpsFrame(path=Path(path), frame=index, timestep=int(timestep), positions=positions, types=types,
                       box=float(box), ids=ids)


def write_lammps_dump(path: str | os.PathLike, positions, types, box: float, *, timestep: int = 0,
                      append: bool = False) -> Path:
    """Write one frame as ``ITEM: ATOMS id type x y z`` (types 1..3, z = 0, box [0, box]^2 x [-0.5, 0.5]).

    For handing structures to LAMMPS or OVITO users; ``append`` adds a frame to an existing file (not atomic),
    otherwise the file is written atomically.
    """
    from tglassmlp.atomic import write_text_atomic

    positions, types, box = validate_configuration(positions, types, box, where=f"write_lammps_dump({path})")
    wrapped = np.mod(positions, box)
    n = types.shape[0]
    header = (f"ITEM: TIMESTEP\n{int(timestep)}\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS pp pp pp\n"
              f"0 {float(box)!r}\n0 {float(box)!r}\n-0.5 0.5\nITEM: ATOMS id type x y z\n")
    rows = "".join(f"{k + 1} {int(t) + 1} {float(x)!r} {float(y)!r} 0\n" for k, (t, (x, y)) in enumerate(zip(types, wrapped)))
    path = Path(path)
    if append:
        with open(path, "a", encoding="ascii") as handle:
            handle.write(header + rows)
        return path
    return write_text_atomic(path, header + rows)

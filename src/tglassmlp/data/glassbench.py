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

import hashlib
import json
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


# ============================================================================================ whole trees
#: Bumped when the conversion of a GlassBench tree into shards changes (a new cache entry, never stale shards).
GLASSBENCH_CONVERSION_VERSION = 1
#: Name of the index a converted tree writes last (its presence means the conversion finished).
CONVERTED_INDEX = "index.json"

_FOLDER = re.compile(r"^T(?P<T>\d+(?:\.\d+)?)/(?P<split>[A-Za-z0-9_]+)$")


class GlassBenchTreeError(FileNotFoundError):
    """A GlassBench tree that cannot be used: a missing folder, no files, missing time codes (names them)."""


def glassbench_folder(folder: str) -> tuple[float, str]:
    """(temperature, split) of a GlassBench folder name 'T0.30/train'."""
    m = _FOLDER.match(str(folder).strip("/"))
    if m is None:
        raise ValueError(f"GlassBench folder {folder!r} is not of the form T<T>/<split> (e.g. T0.30/train)")
    return float(m["T"]), m["split"]


def scan_glassbench_tree(root: str | os.PathLike, folders) -> dict[str, dict[int, dict[int, Path]]]:
    """{folder: {structure index: {time code: file}}} of the GlassBench files in ``root``/``folder``.

    Args:
        root: the KA2D folder of the archive (the one holding ``T0.30/`` and ``T0.23/``); a root with a
            ``KA2D/`` subfolder holding them is accepted too.
        folders: e.g. ``["T0.30/train", "T0.30/test", "T0.23/test"]``.

    Raises:
        GlassBenchTreeError: root or a folder missing, a folder without GlassBench files, a file whose
            temperature differs from its folder's, or structures of one folder with different time codes (the
            average curve <C_B>(t) of a temperature needs one time grid; the message names the missing files).
    """
    root = Path(root)
    if not root.is_dir():
        raise GlassBenchTreeError(f"glassbench.root={root}: no such folder (expected the KA2D folder of the "
                                  f"GlassBench archive, Zenodo 10118191, holding {', '.join(folders)})")
    first = str(folders[0]).strip("/").split("/")[0] if folders else ""
    if first and not (root / first).is_dir() and (root / "KA2D" / first).is_dir():
        root = root / "KA2D"
    out: dict[str, dict[int, dict[int, Path]]] = {}
    for folder in folders:
        temperature, _ = glassbench_folder(folder)
        where = root / folder
        if not where.is_dir():
            raise GlassBenchTreeError(f"glassbench.root={root}: missing folder {where} (expected the GlassBench KA2D "
                                      f"tree with {', '.join(folders)})")
        files: dict[int, dict[int, Path]] = {}
        for path in sorted(where.glob("*.npz")):
            meta = parse_glassbench_name(path)
            if abs(meta["temperature"] - temperature) > 1e-9:
                raise GlassBenchTreeError(f"{path}: temperature {meta['temperature']:g} in the name, but it lies in "
                                          f"folder {folder}")
            if meta["time"] is None:
                raise GlassBenchTreeError(f"{path}: time code tc{meta['time_code']:02d} has no known time at "
                                          f"T = {temperature:g} (GLASSBENCH_TIMES)")
            files.setdefault(meta["structure_index"], {})[meta["time_code"]] = path
        if not files:
            raise GlassBenchTreeError(f"{where}: no GlassBench files N<N>T<T>_<structure>_tc<code>.npz")
        codes = sorted(set().union(*(set(c) for c in files.values())))
        for index, by_code in files.items():
            missing = [c for c in codes if c not in by_code]
            if missing:
                raise GlassBenchTreeError(
                    f"{where}: structure {index} lacks time code(s) {['tc%02d' % c for c in missing]} that other "
                    f"structures of the folder have (one time grid per temperature)")
        out[str(folder).strip("/")] = dict(sorted(files.items()))
    return out


def glassbench_tree_key(tree: dict[str, dict[int, dict[int, Path]]], extra: str = "") -> str:
    """24 hex digits naming a tree's conversion: every file's folder, name, size and mtime, the conversion
    version and ``extra`` (the bond-breaking settings). A changed, added or removed file gives a new key."""
    h = hashlib.sha256(f"v{GLASSBENCH_CONVERSION_VERSION}|{extra}\n".encode())
    for folder, structures in sorted(tree.items()):
        for index, by_code in sorted(structures.items()):
            for code, path in sorted(by_code.items()):
                st = path.stat()
                h.update(f"{folder}/{path.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def convert_glassbench_tree(root: str | os.PathLike, folders, cache_dir: str | os.PathLike, *,
                            system=None) -> dict[str, Any]:
    """Turn a GlassBench tree into shards (one per structure, every time code of its folder as ``times``), once.

    Each structure of each folder becomes ``<cache_dir>/<key>/T<T:.3f>/s<k:04d>.h5`` with ``positions``,
    ``types``, ``inherent_positions``, ``particle_energies`` (of the inherent structure), ``times`` (the time
    codes' times, :data:`GLASSBENCH_TIMES`), per-run ``bond_breaking`` (R, T_n, N) computed from the files'
    run positions with :func:`tglassmlp.observables.bond_breaking` (initial bonds from the t = 0 positions),
    and ``propensity`` (their mean). k is the GlassBench structure index; when two folders of one temperature
    share an index (train and test), the later folder's indices are shifted past the earlier's (the index file
    records the original). ``<key>`` is :func:`glassbench_tree_key`; finished shards are kept, so a killed
    conversion resumes and a second call costs a directory listing.

    Returns:
        The index (also written as ``<cache_dir>/<key>/index.json``): {'source': root, 'key', 'root' (the shard
        root), 'folders': {folder: {'temperature', 'split', 'codes', 'times', 'structures': [{'index' (in the
        GlassBench names), 'shard_index', 'shard', 'n_runs'}]}}}.
    """
    from tglassmlp.atomic import write_json_atomic
    from tglassmlp.data.shards import ShardError, is_complete, shard_path, write_shard
    from tglassmlp.observables.bond_breaking import bond_breaking
    from tglassmlp.physics.potential import particle_energies

    folders = [str(f).strip("/") for f in folders]
    tree = scan_glassbench_tree(root, folders)
    settings = {"system": "default" if system is None else repr(system)}
    key = glassbench_tree_key(tree, json.dumps(settings, sort_keys=True))
    out_root = Path(cache_dir) / key
    index_path = out_root / CONVERTED_INDEX
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
            if index.get("key") == key and all(is_complete(Path(s["shard"]), ("propensity",))
                                               for f in index["folders"].values() for s in f["structures"]):
                return index
        except (OSError, ValueError, KeyError):
            pass  # an unusable index: convert (finished shards are kept) and rewrite it
    index = {"source": str(Path(root).resolve()), "key": key, "root": str(out_root.resolve()),
             "conversion_version": GLASSBENCH_CONVERSION_VERSION, "folders": {}}
    used: dict[float, set[int]] = {}
    for folder in folders:
        temperature, split = glassbench_folder(folder)
        structures = tree[folder]
        codes = sorted(next(iter(structures.values())))
        table = next(v for k, v in GLASSBENCH_TIMES.items() if float(k) == temperature)
        times = [table[c] for c in codes]
        order = np.argsort(times)
        codes, times = [codes[i] for i in order], [times[i] for i in order]
        taken = used.setdefault(round(temperature, 3), set())
        shift = 0 if not taken & set(structures) else max(taken) + 1
        entries = []
        for index_gb, by_code in structures.items():
            k = index_gb + shift
            taken.add(k)
            path = shard_path(out_root, temperature, k)
            first = read_glassbench(by_code[codes[0]])
            entries.append({"index": index_gb, "shard_index": k, "shard": str(path.resolve()),
                            "n_runs": int(first.run_positions.shape[0]),
                            "files": [by_code[c].name for c in codes]})
            if is_complete(path, ("propensity",)):
                continue
            runs = []
            for c in codes:
                gb = first if c == codes[0] else read_glassbench(by_code[c])
                if gb.run_positions.shape != first.run_positions.shape:
                    raise GlassBenchError(f"{gb.path}: {gb.run_positions.shape[0]} runs of {gb.n_particles} particles, "
                                          f"but {first.path.name} has {first.run_positions.shape[:2]}")
                if not (np.array_equal(gb.positions, first.positions) and np.array_equal(gb.types, first.types)):
                    raise GlassBenchError(f"{gb.path}: its initial configuration differs from {first.path.name}'s "
                                          "(one structure, one t = 0 configuration)")
                runs.append(gb.run_positions)
            c_b = bond_breaking(first.positions, np.stack(runs, axis=1), first.types, first.box, system=system)
            fields = {"positions": first.positions, "types": first.types,
                      "inherent_positions": first.inherent_positions,
                      "particle_energies": particle_energies(first.inherent_positions, first.types, first.box,
                                                             system=system),
                      "times": np.array(times), "bond_breaking": c_b, "propensity": c_b.mean(axis=0)}
            attrs = {"temperature": temperature, "box": first.box, "seed": -1, "structure_index": k,
                     "source": f"glassbench:{folder}/{first.path.name.rsplit('_tc', 1)[0]}",
                     "config": {"glassbench": {"folder": folder, "split": split, "structure_index": index_gb,
                                               "files": [by_code[c].name for c in codes],
                                               "conversion_version": GLASSBENCH_CONVERSION_VERSION, **settings}}}
            try:
                write_shard(path, fields, attrs)
            except FileExistsError:  # a parallel job converted it first
                if not is_complete(path, ("propensity",)):
                    raise ShardError(f"{path}: exists but is not a complete converted shard; delete it") from None
        index["folders"][folder] = {"temperature": temperature, "split": split, "codes": codes, "times": times,
                                    "structures": entries}
    write_json_atomic(index_path, index)
    return index

"""LAMMPS dump input and GSD output: round trips, every coordinate convention, and clear errors on bad files."""

from __future__ import annotations

import numpy as np
import pytest

from tglassmlp.data.lammps import LammpsDumpError, read_lammps_dump, write_lammps_dump
from tglassmlp.data.shards import read_shard

from conftest import random_configuration

BOX = 9.0


@pytest.fixture
def structure():
    pos, types = random_configuration(60, BOX, seed=11)
    return pos, types


def _dump(path, columns, rows, box_lines, n=None, timestep=0, append=False, flags="pp pp pp"):
    n = len(rows) if n is None else n
    text = (f"ITEM: TIMESTEP\n{timestep}\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS {flags}\n"
            + "".join(" ".join(repr(float(v)) for v in bounds) + "\n" for bounds in box_lines)
            + f"ITEM: ATOMS {' '.join(columns)}\n"
            + "".join(" ".join(str(v) for v in row) + "\n" for row in rows))
    with open(path, "a" if append else "w") as handle:
        handle.write(text)
    return path


def _rows(columns, ids, types, values):
    """Rows of a dump with ``columns``, taking each column from ``values`` (name -> (N,) array)."""
    table = {"id": ids, "type": types + 1, **values}
    return [[table[c][k] for c in columns] for k in range(len(ids))]


def test_round_trip_of_write_lammps_dump(tmp_path, structure):
    pos, types = structure
    path = write_lammps_dump(tmp_path / "a.dump", pos, types, BOX, timestep=7)
    frame = read_lammps_dump(path)
    assert frame.timestep == 7 and frame.box == BOX and frame.n_particles == 60
    np.testing.assert_array_equal(frame.types, types)
    np.testing.assert_array_equal(frame.positions, np.mod(pos, BOX))   # repr() floats: exact round trip
    np.testing.assert_array_equal(frame.ids, np.arange(1, 61))


@pytest.mark.parametrize("convention", ["wrapped", "wrapped_images", "unwrapped", "scaled", "scaled_unwrapped"])
def test_coordinate_conventions_shuffled_ids_and_columns(tmp_path, structure, convention):
    """Every LAMMPS coordinate convention, an offset box origin, atoms in random id order, columns in any order
    and extra columns: the same wrapped positions in atom-id order."""
    pos, types = structure
    rng = np.random.default_rng(0)
    lo = -3.25   # box [lo, lo + BOX)
    images = rng.integers(-3, 4, size=(60, 2))
    wrapped = np.mod(pos, BOX) + lo
    unwrapped = wrapped + images * BOX
    values = {"vx": rng.normal(size=60), "c_pe": rng.normal(size=60), "z": np.zeros(60)}
    if convention == "wrapped":
        columns, values = ["type", "x", "vx", "id", "y", "z"], {**values, "x": wrapped[:, 0], "y": wrapped[:, 1]}
    elif convention == "wrapped_images":
        columns = ["id", "type", "x", "y", "z", "ix", "iy"]
        values = {**values, "x": wrapped[:, 0], "y": wrapped[:, 1], "ix": images[:, 0], "iy": images[:, 1]}
    elif convention == "unwrapped":
        columns, values = ["c_pe", "yu", "xu", "type", "id"], {**values, "xu": unwrapped[:, 0], "yu": unwrapped[:, 1]}
    elif convention == "scaled":
        s = (wrapped - lo) / BOX
        columns, values = ["id", "type", "xs", "ys"], {**values, "xs": s[:, 0], "ys": s[:, 1]}
    else:
        s = (unwrapped - lo) / BOX
        columns, values = ["id", "type", "xsu", "ysu", "zsu"], {**values, "xsu": s[:, 0], "ysu": s[:, 1],
                                                                "zsu": np.full(60, 0.5)}
    ids = np.arange(101, 161)
    order = rng.permutation(60)
    rows = _rows(columns, ids[order], types[order], {k: np.asarray(v)[order] for k, v in values.items()})
    path = _dump(tmp_path / "a.dump", columns, rows, [(lo, lo + BOX), (lo, lo + BOX), (-0.5, 0.5)])
    frame = read_lammps_dump(path)
    np.testing.assert_array_equal(frame.ids, ids)
    np.testing.assert_array_equal(frame.types, types)
    # minimum-image difference to the expected wrapped positions (scaling and unwrapping round at 1e-15 * box)
    d = frame.positions - np.mod(pos, BOX)
    d -= BOX * np.round(d / BOX)
    assert np.abs(d).max() < 1e-12
    assert frame.positions.min() >= 0 and frame.positions.max() < BOX


def test_two_dimensional_dump_and_frame_selection(tmp_path, structure):
    """A dump with two box-bound lines (dimension 2), three frames; frame k and -1 pick the right one."""
    pos, types = structure
    path = tmp_path / "b.dump"
    for k in range(3):
        shifted = np.mod(pos + 0.1 * k, BOX)
        rows = _rows(["id", "type", "x", "y"], np.arange(1, 61), types, {"x": shifted[:, 0], "y": shifted[:, 1]})
        _dump(path, ["id", "type", "x", "y"], rows, [(0.0, BOX), (0.0, BOX)], timestep=1000 * k, append=True)
    for k, expected in [(0, 0), (1, 1), (2, 2), (-1, 2), (-3, 0)]:
        frame = read_lammps_dump(path, frame=k)
        assert frame.frame == expected and frame.timestep == 1000 * expected
        np.testing.assert_allclose(frame.positions, np.mod(pos + 0.1 * expected, BOX), atol=1e-12)
    with pytest.raises(LammpsDumpError, match="has 3 frame"):
        read_lammps_dump(path, frame=3)
    with pytest.raises(LammpsDumpError, match="has 3 frame"):
        read_lammps_dump(path, frame=-4)


def test_glassbench_structure_through_a_dump(tmp_path, glassbench):
    """The authors' T = 0.23 structure written as a 3D LAMMPS dump in shuffled order reads back as read_glassbench
    gives it (wrapped), so predict.py can take it from either file."""
    thermal, _, types, box = glassbench
    rng = np.random.default_rng(1)
    order = rng.permutation(len(types))
    rows = _rows(["id", "type", "xu", "yu", "zu"], np.arange(1, len(types) + 1)[order], types[order],
                 {"xu": thermal[order, 0], "yu": thermal[order, 1], "zu": np.zeros(len(types))})
    path = _dump(tmp_path / "gb.dump", ["id", "type", "xu", "yu", "zu"], rows, [(0.0, box), (0.0, box), (-1, 1)])
    frame = read_lammps_dump(path, n_particles=1290)
    assert frame.box == pytest.approx(box, rel=1e-15)
    np.testing.assert_array_equal(frame.types, types)
    assert np.bincount(frame.types).tolist() == [600, 330, 360]
    np.testing.assert_allclose(frame.positions, np.mod(thermal, box), atol=1e-12)


def _good_rows(types, pos):
    return _rows(["id", "type", "x", "y"], np.arange(1, len(types) + 1), types, {"x": pos[:, 0], "y": pos[:, 1]})


@pytest.mark.parametrize("case, match", [
    ("missing", "not found"),
    ("empty", "empty file"),
    ("truncated", "truncated"),
    ("no_type", "no 'type' column"),
    ("no_coordinates", "no coordinate columns"),
    ("wrong_n", "expected N = 61"),
    ("rectangular", "square box"),
    ("triclinic", "triclinic"),
    ("type4", r"outside 1..3"),
    ("duplicate_id", "appears more than once"),
    ("short_row", "entries, expected 4"),
    ("text", "non-numeric"),
])
def test_bad_dumps_are_refused_with_a_clear_error(tmp_path, structure, case, match):
    pos, types = structure
    path = tmp_path / "bad.dump"
    cols, bounds = ["id", "type", "x", "y"], [(0.0, BOX), (0.0, BOX), (-0.5, 0.5)]
    rows = _good_rows(types, np.mod(pos, BOX))
    kwargs = {}
    if case == "missing":
        path = tmp_path / "nothing.dump"
    elif case == "empty":
        path.write_text("")
    elif case == "truncated":
        _dump(path, cols, rows[:40], bounds, n=60)
    elif case == "no_type":
        _dump(path, ["id", "x", "y"], [[r[0], r[2], r[3]] for r in rows], bounds)
    elif case == "no_coordinates":
        _dump(path, ["id", "type", "vx", "vy"], rows, bounds)
    elif case == "wrong_n":
        _dump(path, cols, rows, bounds)
        kwargs = {"n_particles": 61}
    elif case == "rectangular":
        _dump(path, cols, rows, [(0.0, BOX), (0.0, BOX + 0.5), (-0.5, 0.5)])
    elif case == "triclinic":
        _dump(path, cols, rows, [(0.0, BOX, 0.0), (0.0, BOX, 0.0), (-0.5, 0.5, 0.0)], flags="xy xz yz pp pp pp")
    elif case == "type4":
        rows[5][1] = 4
        _dump(path, cols, rows, bounds)
    elif case == "duplicate_id":
        rows[7][0] = rows[3][0]
        _dump(path, cols, rows, bounds)
    elif case == "short_row":
        rows[9] = rows[9][:3]
        _dump(path, cols, rows, bounds)
    elif case == "text":
        rows[2][2] = "nan?"
        _dump(path, cols, rows, bounds)
    with pytest.raises(LammpsDumpError, match=match) as err:
        read_lammps_dump(path, **kwargs)
    assert str(path.name) in str(err.value)


def test_gsd_frame_read_back_by_the_gsd_package(tmp_path, structure):
    gsd_hoomd = pytest.importorskip("gsd.hoomd", reason="gsd not installed (pip install gsd)")
    from tglassmlp.data.gsd import structure_frame, write_gsd

    pos, types = structure
    prop = np.where(types == 0, np.linspace(0, 1, 60), np.nan)
    path = write_gsd(tmp_path / "s.gsd", [structure_frame(pos + 2 * BOX, types, BOX, {"propensity": prop}, step=3),
                                          structure_frame(pos, types, BOX)])
    with gsd_hoomd.open(path, mode="r") as traj:
        assert len(traj) == 2
        frame = traj[0]
        assert frame.configuration.dimensions == 2 and frame.configuration.step == 3
        np.testing.assert_allclose(frame.configuration.box[:2], [BOX, BOX])
        assert list(frame.particles.types) == ["1", "2", "3"]
        np.testing.assert_array_equal(frame.particles.typeid, types)
        xyz = frame.particles.position
        assert xyz.shape == (60, 3) and np.all(xyz[:, 2] == 0)
        assert np.all(np.abs(xyz[:, :2]) <= BOX / 2)
        d = (xyz[:, :2] + BOX / 2) - np.mod(pos, BOX)
        d -= BOX * np.round(d / BOX)
        assert np.abs(d).max() < 1e-5   # float32 positions
        np.testing.assert_allclose(frame.log["particles/propensity"], prop, equal_nan=True, rtol=1e-7)


def test_gsd_export_of_a_shard(tmp_path):
    gsd_hoomd = pytest.importorskip("gsd.hoomd", reason="gsd not installed (pip install gsd)")
    from tglassmlp.predict.gsd_export import main
    from tglassmlp.paths import PROJECT_ROOT

    shard_file = PROJECT_ROOT / "data" / "demo" / "T0.400" / "s0000.h5"
    shard = read_shard(shard_file)
    out = tmp_path / "demo.gsd"
    assert main([str(out), str(shard_file)]) == 0
    with gsd_hoomd.open(out, mode="r") as traj:
        frame = traj[0]
        np.testing.assert_allclose(frame.log["particles/particle_energy"], shard.fields["particle_energies"],
                                   rtol=1e-6)
        times = shard.fields["times"]
        np.testing.assert_allclose(frame.log[f"particles/propensity_t{times[-1]:g}"], shard.fields["propensity"][-1],
                                   rtol=1e-7)
        assert frame.particles.N == len(shard.fields["types"])


def test_gsd_refuses_bad_properties(structure, tmp_path):
    pytest.importorskip("gsd.hoomd", reason="gsd not installed (pip install gsd)")
    from tglassmlp.data.gsd import GsdError, structure_frame
    from tglassmlp.predict.gsd_export import export_gsd

    pos, types = structure
    with pytest.raises(GsdError, match="shape"):
        structure_frame(pos, types, BOX, {"p": np.zeros(59)})
    with pytest.raises(GsdError, match="not found"):
        export_gsd(tmp_path / "x.gsd", [tmp_path / "missing.h5"])
    assert not (tmp_path / "x.gsd").exists()


def test_glassbench_writer_round_trip_is_bit_exact(tmp_path, glassbench_npz):
    """read_glassbench(write_glassbench(read_glassbench(f))) equals the original file's arrays exactly."""
    from tglassmlp.data.glassbench import GlassBenchError, glassbench_name, read_glassbench, write_glassbench

    gb = read_glassbench(glassbench_npz)
    name = glassbench_name(gb.n_particles, gb.temperature, gb.structure_index, gb.time_code)
    assert name == glassbench_npz.name
    out = write_glassbench(tmp_path / "T0.23" / "test" / name, positions=gb.positions,
                           inherent_positions=gb.inherent_positions, types=gb.types, box=gb.box,
                           run_positions=gb.run_positions)
    back = read_glassbench(out)
    assert (back.time, back.temperature, back.structure_index) == (0.1, 0.23, 202)
    with np.load(glassbench_npz) as orig, np.load(out) as new:
        for key in ("initial_positions", "initial_positions_inherent", "positions"):
            np.testing.assert_array_equal(new[key], orig[key])
        np.testing.assert_array_equal(new["types"], orig["types"])
        assert float(new["box"]) == float(orig["box"])
    with pytest.raises(GlassBenchError, match="N = 1290 but the file name says N = 1291"):
        write_glassbench(tmp_path / "N1291T0.23_1_tc05.npz", positions=gb.positions,
                         inherent_positions=gb.inherent_positions, types=gb.types, box=gb.box,
                         run_positions=gb.run_positions)


def test_lammps_dump_is_a_structure_for_predict_and_simulate(tmp_path, structure):
    """read_structure (simulate.py structure=..., predict.py) takes a dump; predict needs the temperature."""
    from tglassmlp.data.structures import read_structure
    from tglassmlp.predict.errors import PredictionInputError
    from tglassmlp.predict.structures import find_structures, load_structure

    pos, types = structure
    path = write_lammps_dump(tmp_path / "frame.lammpstrj", pos, types, BOX)
    s = read_structure(path)
    assert s.kind == "lammps" and s.temperature is None and s.box == BOX
    np.testing.assert_array_equal(s.positions, np.mod(pos, BOX))
    assert find_structures(tmp_path) == [path]
    with pytest.raises(PredictionInputError, match="no temperature"):
        load_structure(path, cache_dir=tmp_path / "cache")

"""Shard format: round trips, atomic writes, validation errors, GlassBench import, doc/registry agreement."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from tglassmlp.data import (
    FIELDS,
    FORMAT_VERSION,
    GlassBenchError,
    ShardError,
    config_hash,
    format_table_markdown,
    is_complete,
    open_shard,
    parse_shard_path,
    read_glassbench,
    read_shard,
    shard_path,
    update_shard,
    write_shard,
)
from tglassmlp.data import shards as shards_module
from tglassmlp.paths import PROJECT_ROOT

CONFIG = {"system": {"name": "ka2d_ternary", "n": 12}, "temperature": 0.4, "runs": "${system.n}"}


def make_fields(n=12, runs=3, n_times=4, n_desc=5, seed=0, traj_dtype=np.float32):
    """A complete, valid set of fields for a small shard."""
    rng = np.random.default_rng(seed)
    return {
        "positions": rng.uniform(0, 4, (n, 2)),
        "types": rng.integers(0, 3, n),
        "equilibration_energy": rng.normal(-2.8, 0.01, 20).astype(np.float32),
        "inherent_positions": rng.uniform(0, 4, (n, 2)),
        "particle_energies": rng.normal(-3, 0.2, n),
        "times": np.cumsum(rng.uniform(0.1, 1, n_times)),
        "trajectories": rng.normal(0, 4, (runs, n_times, n, 2)).astype(traj_dtype),
        "bond_breaking": rng.uniform(0, 1, (runs, n_times, n)).astype(np.float32),
        "propensity": rng.uniform(0, 1, (n_times, n)).astype(np.float32),
        "descriptors": rng.normal(size=(n, n_desc)).astype(np.float32),
    }


def names(n_desc=5):
    return {"descriptors": {"descriptor_names": [f"col{i}" for i in range(n_desc)]}}


def make_attrs(**extra):
    return {"temperature": 0.4, "box": 4.0, "seed": 7, "config": CONFIG, "source": "test", **extra}


@pytest.fixture
def shard_file(tmp_path):
    fields = make_fields()
    path = write_shard(shard_path(tmp_path, 0.4, 7), fields, make_attrs(structure_index=7), field_attrs=names())
    return path, fields


# ------------------------------------------------------------------------------------------ round trip
def test_round_trip_all_fields(shard_file):
    path, fields = shard_file
    shard = read_shard(path)
    assert list(shard.keys()) == list(FIELDS)
    for name, value in fields.items():
        np.testing.assert_array_equal(shard[name], np.asarray(value).astype(FIELDS[name].dtype))
        assert shard[name].dtype == np.dtype(FIELDS[name].dtype)
    assert shard.positions is shard["positions"]
    assert shard.field_attrs["descriptors"]["descriptor_names"] == [f"col{i}" for i in range(5)]
    a = shard.attrs
    assert (a["temperature"], a["box"], a["seed"], a["n_particles"], a["structure_index"]) == (0.4, 4.0, 7, 12, 7)
    assert a["format_version"] == FORMAT_VERSION and a["source"] == "test"
    assert a["config_hash"] == config_hash(CONFIG) and re.fullmatch(r"[0-9a-f]{16}", a["config_hash"])
    assert OmegaConf.to_container(OmegaConf.create(a["config"])) == {
        "runs": 12, "system": {"name": "ka2d_ternary", "n": 12}, "temperature": 0.4}
    assert a["package_versions"]["numpy"] == np.__version__ and "python" in a["package_versions"]
    assert a["created"].endswith("+00:00")
    assert (shard.temperature, shard.box, shard.n_particles) == (0.4, 4.0, 12)


def test_float64_trajectories_are_kept(tmp_path):
    fields = make_fields(traj_dtype=np.float64)
    path = write_shard(tmp_path / "s.h5", fields, make_attrs(), field_attrs=names())
    traj = read_shard(path, ["trajectories", "times"]).trajectories
    assert traj.dtype == np.float64
    np.testing.assert_array_equal(traj, fields["trajectories"])


def test_trajectories_are_chunked_per_run_and_frame(shard_file):
    path, fields = shard_file
    with h5py.File(path, "r") as h5:
        assert h5["trajectories"].chunks == (1, 1, 12, 2)
        assert h5["trajectories"].compression == "gzip" and h5["trajectories"].fletcher32


def test_lazy_read_of_some_runs_and_frames(shard_file):
    path, fields = shard_file
    with open_shard(path) as s:
        assert s.dims == {"N": 12, "S": 20, "R": 3, "T_n": 4, "D": 5}
        assert s.shape("trajectories") == (3, 4, 12, 2)
        part = s.read("trajectories", runs=[2, 0], frames=slice(1, 3))
        np.testing.assert_array_equal(part, fields["trajectories"][[2, 0]][:, 1:3])
        np.testing.assert_array_equal(s.read("trajectories", runs=1), fields["trajectories"][1:2])
        with pytest.raises(IndexError, match="runs"):
            s.read("trajectories", runs=[5])
    # read_shard keeps the selected frames consistent across times, propensity and the runs.
    shard = read_shard(path, runs=[1], frames=[0, 3])
    np.testing.assert_array_equal(shard.times, fields["times"][[0, 3]])
    assert shard.propensity.shape == (2, 12) and shard.bond_breaking.shape == (1, 2, 12)
    assert shard.positions.shape == (12, 2)


def test_reading_a_subset_of_fields(shard_file):
    path, _ = shard_file
    shard = read_shard(path, ["descriptors"])
    assert list(shard.keys()) == ["descriptors"]
    with pytest.raises(KeyError, match="positions"):
        shard["positions"]
    with pytest.raises(ValueError, match="unknown field 'velocities'"):
        read_shard(path, ["velocities"])


def test_structure_only_shard_and_missing_requested_field(tmp_path):
    fields = make_fields()
    path = write_shard(tmp_path / "s.h5", {k: fields[k] for k in ("positions", "types")}, make_attrs())
    with pytest.raises(ShardError, match=r"s\.h5.*no field 'descriptors'"):
        read_shard(path, ["descriptors"])


# ------------------------------------------------------------------------------------------ naming, hashing
def test_shard_path_convention(tmp_path):
    assert shard_path(tmp_path, 0.4, 7) == tmp_path / "T0.400" / "s0007.h5"
    assert shard_path(tmp_path, 0.40, 7) == shard_path(tmp_path, 0.4, 7) == shard_path(tmp_path, np.float32(0.4), 7)
    assert parse_shard_path(shard_path(tmp_path, 0.23, 202)) == (0.23, 202)
    for bad in (0.4004, -0.4, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            shard_path(tmp_path, bad, 1)
    with pytest.raises(ValueError, match="index"):
        shard_path(tmp_path, 0.4, -1)


def test_config_hash_is_stable_across_forms_and_order():
    reordered = {"temperature": 0.4, "runs": "${system.n}", "system": {"n": 12, "name": "ka2d_ternary"}}
    text = "system:\n  name: ka2d_ternary\n  n: 12\ntemperature: 0.40\nruns: 12\n"
    h = config_hash(CONFIG)
    assert h == config_hash(reordered) == config_hash(OmegaConf.create(CONFIG)) == config_hash(text)
    assert len(h) == 16 and config_hash({**CONFIG, "temperature": 0.45}) != h


def test_given_config_hash_must_match_config(tmp_path):
    with pytest.raises(ShardError, match="config_hash"):
        write_shard(tmp_path / "s.h5", make_fields(), make_attrs(config_hash="0" * 16), field_attrs=names())


# ------------------------------------------------------------------------------------------ atomic writes
def _failing_after(monkeypatch, n_ok):
    """Make the n_ok+1-th dataset write fail, as a crash in the middle of a shard would."""
    original = shards_module._write_dataset
    calls = []

    def flaky(h5, name, array, attrs):
        if len(calls) >= n_ok:
            raise RuntimeError("simulated crash while writing")
        calls.append(h5.filename)
        original(h5, name, array, attrs)

    monkeypatch.setattr(shards_module, "_write_dataset", flaky)
    return calls


def test_crash_mid_write_leaves_old_file_untouched(shard_file, monkeypatch):
    path, _ = shard_file
    before = path.read_bytes()
    calls = _failing_after(monkeypatch, 4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_shard(path, make_fields(seed=1), make_attrs(), overwrite=True, field_attrs=names())
    assert all(".tmp-" in name for name in calls)  # the data went to the temporary file, never to `path`
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # temporary removed


def test_crash_mid_write_of_new_shard_leaves_no_file(tmp_path, monkeypatch):
    path = shard_path(tmp_path, 0.5, 1)
    _failing_after(monkeypatch, 2)
    with pytest.raises(RuntimeError):
        write_shard(path, make_fields(), make_attrs(), field_attrs=names())
    assert not path.exists() and list(path.parent.iterdir()) == []
    assert not is_complete(path)


def test_leftover_temporary_from_a_killed_job_is_ignored(tmp_path):
    path = shard_path(tmp_path, 0.5, 1)
    path.parent.mkdir(parents=True)
    (path.parent / f"{path.name}.tmp-999999").write_bytes(b"\x89HDF\r\n half a file")
    assert not is_complete(path)
    write_shard(path, make_fields(), make_attrs(), field_attrs=names())
    assert is_complete(path, ["positions", "descriptors"])
    assert (path.parent / f"{path.name}.tmp-999999").exists()  # another job's temporary is not touched


def test_overwrite_refused_unless_asked(shard_file):
    path, fields = shard_file
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_shard(path, make_fields(seed=1), make_attrs(), field_attrs=names())
    assert path.read_bytes() == before
    write_shard(path, make_fields(seed=1), make_attrs(), overwrite=True, field_attrs=names())
    np.testing.assert_array_equal(read_shard(path).positions, make_fields(seed=1)["positions"])


def test_update_shard_adds_a_stage(tmp_path):
    fields = make_fields()
    path = write_shard(tmp_path / "s.h5", {k: fields[k] for k in ("positions", "types", "equilibration_energy", "inherent_positions",
                                                             "particle_energies")}, make_attrs(structure_index=3))
    created = read_shard(path).attrs["created"]
    update_shard(path, {"descriptors": fields["descriptors"]}, field_attrs=names())
    update_shard(path, {k: fields[k] for k in ("times", "trajectories", "bond_breaking", "propensity")},
                 {"seed": 11})
    shard = read_shard(path)
    for name, value in fields.items():
        np.testing.assert_array_equal(shard[name], np.asarray(value).astype(shard[name].dtype))
    assert shard.attrs["seed"] == 11 and shard.attrs["created"] == created and "updated" in shard.attrs
    assert shard.field_attrs["descriptors"]["descriptor_names"][0] == "col0"
    with pytest.raises(ShardError, match="already present"):
        update_shard(path, {"propensity": fields["propensity"]})
    with pytest.raises(ShardError, match="'temperature'.*cannot change"):
        update_shard(path, {}, {"temperature": 0.5})
    with pytest.raises(ShardError, match=r"'propensity'.*\(4, 13\)"):
        update_shard(path, {"propensity": np.zeros((4, 13))}, replace=True)
    update_shard(path, {"propensity": np.zeros((4, 12))}, replace=True)
    assert not read_shard(path, ["propensity"]).propensity.any()


def test_crash_during_update_keeps_original(shard_file, monkeypatch):
    path, _ = shard_file
    before = path.read_bytes()
    _failing_after(monkeypatch, 3)
    with pytest.raises(RuntimeError):
        update_shard(path, {"propensity": np.zeros((4, 12))}, replace=True)
    assert path.read_bytes() == before and len(list(path.parent.iterdir())) == 1


# ------------------------------------------------------------------------------------------ corrupt files
def test_missing_file(tmp_path):
    with pytest.raises(ShardError, match=r"nothere\.h5.*not found"):
        read_shard(tmp_path / "nothere.h5")
    assert not is_complete(tmp_path / "nothere.h5")


@pytest.mark.parametrize("keep", [0.5, 0.9, 100, 0])
def test_truncated_file(shard_file, keep):
    path, _ = shard_file
    raw = path.read_bytes()
    n = int(len(raw) * keep) if isinstance(keep, float) else keep
    path.write_bytes(raw[:n])
    with pytest.raises(ShardError, match=re.escape(str(path))):
        read_shard(path)
    assert not is_complete(path)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "s.h5"
    path.write_text("positions: [1, 2]\n")
    with pytest.raises(ShardError, match="not a readable HDF5 file"):
        read_shard(path)


def _tamper(path, fn):
    """Change a valid shard behind the writer's back (h5py recomputes the checksums)."""
    with h5py.File(path, "r+") as h5:
        fn(h5)


def test_nan_in_positions_is_named_with_its_index(shard_file, tmp_path):
    path, fields = shard_file

    def put_nan(h5):
        h5["positions"][3, 1] = np.nan

    _tamper(path, put_nan)
    with pytest.raises(ShardError, match=r"'positions'.*first at index \(3, 1\)"):
        read_shard(path)
    bad = make_fields()
    bad["trajectories"][1, 2, 5, 0] = np.inf
    with pytest.raises(ShardError, match=r"'trajectories'.*\(1, 2, 5, 0\)"):
        write_shard(tmp_path / "x.h5", bad, make_attrs(), field_attrs=names())
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("field, shape, message", [
    ("inherent_positions", (13, 2), r"'inherent_positions' has shape \(13, 2\), expected \(N, 2\) with N = 12"),
    ("positions", (12, 3), r"'positions' has shape \(12, 3\)"),
    ("trajectories", (3, 4, 12), r"'trajectories' has shape \(3, 4, 12\), expected \(R, T_n, N, 2\)"),
    ("bond_breaking", (2, 4, 12), r"'bond_breaking' has shape \(2, 4, 12\).*R = 3 from field 'trajectories'"),
    ("times", (5,), r"'trajectories' has shape .*T_n = 5 from field 'times'"),
    ("descriptors", (12, 6), r"'descriptors' has 6 columns but 5 entries in 'descriptor_names'"),
])
def test_wrong_shapes_are_refused(tmp_path, field, shape, message):
    fields = make_fields()
    fields[field] = np.zeros(shape) if field != "times" else np.arange(1.0, shape[0] + 1)
    with pytest.raises(ShardError, match=message):
        write_shard(tmp_path / "s.h5", fields, make_attrs(), field_attrs=names())


def test_wrong_shape_on_disk_is_refused(shard_file):
    path, _ = shard_file

    def reshape(h5):
        del h5["particle_energies"]
        h5["particle_energies"] = np.zeros(11)

    _tamper(path, reshape)
    with pytest.raises(ShardError, match=r"'particle_energies' has shape \(11,\)"):
        read_shard(path)


def test_time_indexed_field_needs_times(tmp_path):
    fields = make_fields()
    del fields["times"]
    with pytest.raises(ShardError, match="no 'times'"):
        write_shard(tmp_path / "s.h5", fields, make_attrs(), field_attrs=names())


def test_unknown_field_and_attribute(tmp_path):
    fields = make_fields()
    with pytest.raises(ShardError, match=r"unknown field\(s\) \['velocities'\]"):
        write_shard(tmp_path / "s.h5", {**fields, "velocities": np.zeros((12, 2))}, make_attrs(), field_attrs=names())
    with pytest.raises(ShardError, match=r"unknown attribute\(s\) \['pressure'\]"):
        write_shard(tmp_path / "s.h5", fields, make_attrs(pressure=1.0), field_attrs=names())
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("value", [3, -1, 300])
def test_types_out_of_range(tmp_path, value):
    fields = make_fields()
    fields["types"][4] = value
    with pytest.raises(ShardError, match=rf"'types'.*outside \[0, 2\].*index 4"):
        write_shard(tmp_path / "s.h5", fields, make_attrs(), field_attrs=names())


def test_types_out_of_range_on_disk(shard_file):
    path, _ = shard_file
    _tamper(path, lambda h5: h5["types"].__setitem__(0, 3))
    with pytest.raises(ShardError, match="'types'"):
        read_shard(path)


def test_wrong_dtypes(tmp_path, shard_file):
    fields = make_fields()
    fields["types"] = fields["types"].astype(float)
    with pytest.raises(ShardError, match="'types' must be integer"):
        write_shard(tmp_path / "s.h5", fields, make_attrs(), field_attrs=names())
    path, _ = shard_file

    def to_int(h5):
        del h5["particle_energies"]
        h5["particle_energies"] = np.zeros(12, dtype=np.int32)

    _tamper(path, to_int)
    with pytest.raises(ShardError, match="'particle_energies' has dtype int32"):
        read_shard(path)


def test_missing_required_field_and_attribute(tmp_path, shard_file):
    fields = make_fields()
    with pytest.raises(ShardError, match=r"missing required field\(s\) \['types'\]"):
        write_shard(tmp_path / "s.h5", {"positions": fields["positions"]}, make_attrs())
    attrs = make_attrs()
    del attrs["temperature"]
    with pytest.raises(ShardError, match=r"missing required attribute\(s\) \['temperature'\]"):
        write_shard(tmp_path / "s.h5", fields, attrs, field_attrs=names())
    path, _ = shard_file
    _tamper(path, lambda h5: h5.attrs.__delitem__("box"))
    with pytest.raises(ShardError, match=rf"{re.escape(str(path))}: missing required attribute\(s\) \['box'\]"):
        read_shard(path)
    assert not is_complete(path)


def test_newer_format_version_is_refused(shard_file):
    path, _ = shard_file
    _tamper(path, lambda h5: h5.attrs.__setitem__("format_version", np.int64(FORMAT_VERSION + 1)))
    with pytest.raises(ShardError, match="format_version"):
        read_shard(path)


def test_bad_times_and_bounds(tmp_path):
    fields = make_fields()
    fields["times"] = np.array([0.0, 1.0, 1.0, 2.0])
    with pytest.raises(ShardError, match="strictly increasing"):
        write_shard(tmp_path / "s.h5", fields, make_attrs(), field_attrs=names())
    fields = make_fields()
    fields["propensity"][2, 3] = 1.5
    with pytest.raises(ShardError, match=r"'propensity'.*\(2, 3\)"):
        write_shard(tmp_path / "s.h5", fields, make_attrs(), field_attrs=names())


# ------------------------------------------------------------------------------------------ GlassBench
def test_read_glassbench_real_file(glassbench_npz, tmp_path):
    gb = read_glassbench(glassbench_npz)
    assert np.bincount(gb.types).tolist() == [600, 330, 360] and gb.types.min() == 0
    assert gb.box == pytest.approx(32.8962)
    assert gb.run_positions.shape == (20, 1290, 2) and gb.positions.shape == gb.inherent_positions.shape == (1290, 2)
    assert (gb.temperature, gb.n_particles, gb.structure_index, gb.time_code, gb.time) == (0.23, 1290, 202, 5, 0.1)
    raw = np.load(glassbench_npz)
    np.testing.assert_array_equal(gb.types, raw["types"] - 1)
    np.testing.assert_array_equal(gb.inherent_positions, raw["initial_positions_inherent"])
    # Imported into a shard and read back unchanged.
    path = write_shard(shard_path(tmp_path, gb.temperature, gb.structure_index), gb.shard_fields(),
                       {**gb.shard_attrs(), "config": {"import": "glassbench"}})
    shard = read_shard(path)
    assert path.parent.name == "T0.230" and shard.attrs["source"] == "glassbench:N1290T0.23_202_tc05.npz"
    np.testing.assert_array_equal(shard.trajectories[:, 0], raw["positions"])
    np.testing.assert_array_equal(shard.times, [0.1])


def _fake_npz(path, drop=None, **override):
    rng = np.random.default_rng(0)
    n = 6
    data = {"box": np.array(5.0), "types": np.array([1, 2, 3, 1, 2, 3]),
            "initial_positions": rng.uniform(0, 5, (n, 2)), "initial_positions_inherent": rng.uniform(0, 5, (n, 2)),
            "positions": rng.uniform(0, 5, (2, n, 2))}
    data.update(override)
    data.pop(drop, None)
    np.savez(path, **data)
    return path


def test_read_glassbench_errors(tmp_path):
    good = read_glassbench(_fake_npz(tmp_path / "N6T0.30_1_tc03.npz"))
    assert (good.temperature, good.time) == (0.3, 14.14)
    assert read_glassbench(_fake_npz(tmp_path / "N6T0.45_1_tc03.npz")).time is None
    with pytest.raises(GlassBenchError, match=r"N6T0\.30_2_tc03\.npz.*missing key\(s\) \['initial_positions_inherent'\]"):
        read_glassbench(_fake_npz(tmp_path / "N6T0.30_2_tc03.npz", drop="initial_positions_inherent"))
    with pytest.raises(GlassBenchError, match=r"'types' has values \[0\] outside 1\.\.3"):
        read_glassbench(_fake_npz(tmp_path / "N6T0.30_3_tc03.npz", types=np.array([0, 1, 2, 1, 2, 3])))
    with pytest.raises(GlassBenchError, match=r"'positions' has shape \(2, 5, 2\)"):
        read_glassbench(_fake_npz(tmp_path / "N6T0.30_4_tc03.npz", positions=np.zeros((2, 5, 2))))
    with pytest.raises(GlassBenchError, match=r"'types' has shape \(6,\), expected \(7,\)"):
        read_glassbench(_fake_npz(tmp_path / "N7T0.30_5_tc03.npz"))
    with pytest.raises(GlassBenchError, match="not finite"):
        read_glassbench(_fake_npz(tmp_path / "N6T0.30_6_tc03.npz", initial_positions=np.full((6, 2), np.nan)))
    with pytest.raises(GlassBenchError, match="does not follow"):
        read_glassbench(_fake_npz(tmp_path / "structure.npz"))
    with pytest.raises(GlassBenchError, match="not found"):
        read_glassbench(tmp_path / "N6T0.30_9_tc03.npz")
    broken = tmp_path / "N6T0.30_8_tc03.npz"
    broken.write_bytes(_fake_npz(tmp_path / "N6T0.30_7_tc03.npz").read_bytes()[:200])
    with pytest.raises(GlassBenchError, match="not a readable"):
        read_glassbench(broken)


# ------------------------------------------------------------------------------------------ documentation
def test_doc_contains_the_registry_table():
    doc = (Path(PROJECT_ROOT) / "docs" / "data-format.md").read_text()
    assert format_table_markdown() in doc, "regenerate the table block of docs/data-format.md from format_table_markdown()"


# ------------------------------------------------------------------------------------------ properties
finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def shard_contents(draw):
    n = draw(st.integers(2, 9))
    runs, n_times, n_desc = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    fields = make_fields(n, runs, n_times, n_desc, seed=seed,
                         traj_dtype=draw(st.sampled_from([np.float32, np.float64])))
    fields["positions"][0, 0] = draw(st.floats(-1e30, 1e30, **finite))  # extreme but finite values survive
    optional = [k for k in fields if k not in ("positions", "types", "times")]
    keep = draw(st.lists(st.sampled_from(optional), unique=True))
    if any("T_n" in FIELDS[k].shape for k in keep):
        keep.append("times")
    chosen = {k: v for k, v in fields.items() if k in ("positions", "types", *keep)}
    attrs = {"temperature": draw(st.floats(0.01, 10, **finite)), "box": draw(st.floats(0.5, 500, **finite)),
             "seed": draw(st.integers(-1, 2**62)), "source": draw(st.text(max_size=20).filter(lambda s: "\x00" not in s)),
             "config": {"k": draw(st.integers()), "s": draw(st.text(max_size=10))}}
    return chosen, attrs, names(n_desc) if "descriptors" in chosen else None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=shard_contents())
def test_property_round_trip(tmp_path_factory, content):
    fields, attrs, fattrs = content
    path = write_shard(tmp_path_factory.mktemp("rt") / "s.h5", fields, attrs, field_attrs=fattrs)
    shard = read_shard(path)
    assert set(shard.keys()) == set(fields)
    for name, value in fields.items():
        np.testing.assert_array_equal(shard[name], np.asarray(value).astype(shard[name].dtype))
    for key in ("temperature", "box", "seed", "source"):
        assert shard.attrs[key] == attrs[key]
    assert shard.attrs["config_hash"] == config_hash(attrs["config"])


@pytest.fixture(scope="module")
def reference_shard(tmp_path_factory):
    fields = make_fields(n=6, runs=2, n_times=2, n_desc=3)
    path = write_shard(tmp_path_factory.mktemp("ref") / "s.h5", fields, make_attrs(), field_attrs=names(3))
    return path.read_bytes(), read_shard(path)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_corruption_is_detected(tmp_path_factory, reference_shard, data):
    """Truncation or overwritten bytes: either ShardError or (damage in unused bytes) the same content."""
    raw, reference = reference_shard
    damaged = bytearray(raw)
    if data.draw(st.booleans(), label="truncate"):
        damaged = damaged[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="n_bytes")):
            damaged[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("bad") / "s.h5"
    path.write_bytes(bytes(damaged))
    try:
        shard = read_shard(path)
    except ShardError as exc:
        assert str(path) in str(exc)
        assert is_complete(path) in (False, True)  # never raises
        return
    for name in reference.keys():
        np.testing.assert_array_equal(shard[name], reference[name])
    assert shard.attrs == reference.attrs

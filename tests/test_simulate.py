"""simulate.py: one shard from a structure, resumable by stage, clear errors, and the CLI itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import compose_config
from tglassmlp.data import read_shard, write_shard
from tglassmlp.paths import PROJECT_ROOT
from tglassmlp.physics import inherent_structure
from tglassmlp.simulation.job import load_structure, simulate_shard

from conftest import random_configuration

N_SMALL, BOX_SMALL = 50, 7.5


def make_cfg(tmp_path, structure, **overrides):
    args = [f"structure={structure}", f"paths.output_dir={tmp_path / 'out'}", "simulation_dataset.name=test",
            "simulation_dataset.isoconfigurational.n_runs=2", "simulation_dataset.isoconfigurational.t_min=0.05",
            "simulation_dataset.default_t_max=0.5", "simulation_dataset.isoconfigurational.n_times=3", "md.platform=Reference"]
    args += [f"{k}={v}" for k, v in overrides.items()]
    return compose_config("simulate", args)


# sigma_ab of the facts sheet (section 1; its types 1, 2, 3 are 0, 1, 2 here), typed in, not read from conf/
FACTS_SIGMA = np.array([[1.0, 0.8, 0.9], [0.8, 0.88, 0.8], [0.9, 0.8, 0.94]])


def bond_breaking_by_hand(initial, trajectories, types, box, r_in=1.4, r_out=1.8):
    """(R, T_n, N) C_B^i(t) by the facts sheet's words, one pair at a time: j is an initial neighbour of i if
    r_ij(0) < r_in sigma_ab (minimum image, thermal positions); the bond survives while r_ij(t) < r_out sigma_ab
    in the frame; C_B^i = surviving / initial."""
    n = len(types)
    out = np.empty(trajectories.shape[:3])
    for i in range(n):
        neighbours = []
        for j in range(n):
            d = initial[j] - initial[i]
            d -= box * np.round(d / box)
            if j != i and np.hypot(*d) < r_in * FACTS_SIGMA[types[i], types[j]]:
                neighbours.append(j)
        assert neighbours, f"particle {i} has no initial neighbour"
        for r in range(trajectories.shape[0]):
            for t in range(trajectories.shape[1]):
                frame = trajectories[r, t].astype(np.float64)
                surviving = 0
                for j in neighbours:
                    d = frame[j] - frame[i]
                    d -= box * np.round(d / box)
                    surviving += np.hypot(*d) < r_out * FACTS_SIGMA[types[i], types[j]]
                out[r, t, i] = surviving / len(neighbours)
    return out


@pytest.fixture
def small_structure(tmp_path):
    pos, types = random_configuration(N_SMALL, BOX_SMALL, seed=11, min_distance=0.8)
    path = tmp_path / "start.h5"
    write_shard(path, {"positions": pos, "types": types},
                {"temperature": 0.5, "box": BOX_SMALL, "seed": 11, "config": "{}",
                 "source": "test:random_configuration"})
    return path


def test_shard_has_every_stage_and_reruns_skip(tmp_path, small_structure):
    cfg = make_cfg(tmp_path, small_structure)
    first = simulate_shard(cfg)
    assert first["ran"] == ["structure", "inherent_structure", "descriptors", "isoconfigurational"]
    shard = read_shard(first["shard"])
    assert shard["trajectories"].shape == (2, 3, N_SMALL, 2)
    assert shard["bond_breaking"].shape == (2, 3, N_SMALL)
    np.testing.assert_allclose(shard["propensity"], shard["bond_breaking"].mean(axis=0), rtol=1e-6)
    # the labels recomputed by hand from the stored trajectories (facts sheet section 4)
    expected = bond_breaking_by_hand(shard["positions"], shard["trajectories"], shard["types"], BOX_SMALL)
    np.testing.assert_allclose(shard["bond_breaking"], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(shard["propensity"], expected.mean(axis=0), rtol=0, atol=1e-6)
    assert 0.0 < expected.mean() < 1.0  # some bonds broke, some survived: the comparison can tell
    np.testing.assert_allclose(shard["times"], [0.05, 0.16, 0.5])
    np.testing.assert_allclose(shard["inherent_positions"],
                               inherent_structure(shard["positions"], shard["types"], BOX_SMALL), atol=1e-6)
    assert shard.attrs["temperature"] == 0.5 and shard.attrs["seed"] == 0
    before = open(first["shard"], "rb").read()
    second = simulate_shard(cfg)
    assert second["ran"] == [] and second["skipped"] == ["structure", "inherent_structure", "descriptors",
                                                         "isoconfigurational"]
    from tglassmlp.observables import structural_descriptors

    np.testing.assert_allclose(shard["descriptors"], structural_descriptors(
        shard["inherent_positions"], shard["types"], BOX_SMALL), rtol=1e-5, atol=1e-5)
    # the settings they were computed with are recorded (readers with other settings recompute)
    from tglassmlp.data.structures import descriptor_settings_hash
    from tglassmlp.observables.descriptors import load_descriptor_settings

    assert shard.field_attrs["descriptors"]["descriptor_settings_hash"] == descriptor_settings_hash(
        load_descriptor_settings(cfg.descriptors))
    assert open(first["shard"], "rb").read() == before  # untouched
    np.testing.assert_allclose(second["msd"], first["msd"])
    # the shippable copy keeps structures and labels, drops the trajectories
    from tglassmlp.data.export import export_dataset

    (exported,) = export_dataset(tmp_path / "out" / "datasets" / "test", tmp_path / "shipped")
    small = read_shard(exported)
    assert "trajectories" not in small.fields
    np.testing.assert_array_equal(small["propensity"], shard["propensity"])
    assert export_dataset(tmp_path / "out" / "datasets" / "test", tmp_path / "shipped") == []  # resumes


def test_killed_after_first_stage_resumes_with_md_only(tmp_path, small_structure, monkeypatch):
    cfg = make_cfg(tmp_path, small_structure)
    import tglassmlp.physics.md as md

    def explode(*args, **kwargs):
        raise KeyboardInterrupt  # the job is killed during MD

    monkeypatch.setattr(md, "isoconfigurational_runs_many", explode)
    with pytest.raises(KeyboardInterrupt):
        simulate_shard(cfg)
    monkeypatch.undo()
    shard_file = tmp_path / "out" / "datasets" / "test" / "T0.500" / "s0000.h5"
    assert set(read_shard(shard_file).fields) == {"positions", "types", "inherent_positions", "particle_energies",
                                                  "descriptors"}
    resumed = simulate_shard(cfg)
    assert resumed["ran"] == ["isoconfigurational"]
    assert resumed["skipped"] == ["structure", "inherent_structure", "descriptors"]


def test_bad_inputs(tmp_path, small_structure):
    with pytest.raises(FileNotFoundError, match="structure file not found"):
        simulate_shard(make_cfg(tmp_path, tmp_path / "missing.npz"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unknown structure file type"):
        load_structure(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="temperature"):
        simulate_shard(make_cfg(tmp_path, small_structure, temperature=-0.3))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(small_structure.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.h5"):
        simulate_shard(make_cfg(tmp_path, truncated))


def test_cli_runs_the_glassbench_demo_structure(tmp_path, glassbench_npz):
    result = subprocess.run(
        [sys.executable, "simulate.py", f"paths.output_dir={tmp_path}", "simulation_dataset.isoconfigurational.n_runs=2",
         "simulation_dataset.default_t_max=0.1", "simulation_dataset.isoconfigurational.n_times=2", "md.platform=CPU"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GlassBench's own 20 runs at t = 0.1" in result.stdout
    assert (tmp_path / "datasets" / "physics_demo" / "T0.230" / "s0202.h5").is_file()


def test_swap_mc_structure_without_md(tmp_path):
    """structure=null: swap Monte Carlo makes the structure; a temperature without MD stops after stage 2."""
    cfg = make_cfg(tmp_path, "null", temperature=1.0, structure_index=3, **{
        "simulation_dataset.n_particles": 86, "simulation_dataset.default_t_max": "null", "simulation_dataset.max_sweeps": 400,
        "swap.first_block_sweeps": 200, "swap.melt_sweeps": 20, "swap.anneal_sweeps": 20,
        "swap.adapt_sweeps_at_target": 40})
    summary = simulate_shard(cfg)
    assert summary["ran"] == ["structure", "inherent_structure", "descriptors"]
    shard = read_shard(summary["shard"])
    assert shard.attrs["source"] == "swap_mc" and shard.attrs["structure_index"] == 3
    assert shard.attrs["equilibrated"] in (0, 1)
    assert summary["equilibrated"] == bool(shard.attrs["equilibrated"])
    assert "acceptance_swap" in shard.attrs["equilibration_report"]
    assert np.bincount(shard["types"], minlength=3).tolist() == [40, 22, 24]
    assert "times" not in shard.fields


def test_killed_swap_mc_stage_resumes_its_chain(tmp_path, monkeypatch):
    """A job killed inside the swap Monte Carlo stage resumes the chain from its checkpoint: the shard equals an
    uninterrupted run's, and the checkpoint is gone once the structure is in the shard."""
    import tglassmlp.physics.swap_mc as swap_mc
    from tglassmlp.simulation.job import swap_checkpoint

    opts = {"simulation_dataset.n_particles": 86, "simulation_dataset.default_t_max": "null", "simulation_dataset.max_sweeps": 400,
            "simulation_dataset.store_descriptors": False, "swap.first_block_sweeps": 200, "swap.melt_sweeps": 20,
            "swap.anneal_sweeps": 20, "swap.adapt_sweeps_at_target": 40, "swap.checkpoint_every_s": 0}
    reference = read_shard(simulate_shard(make_cfg(tmp_path / "a", "null", temperature=1.0, **opts))["shard"])

    class Killed(Exception):
        pass

    real_save, calls = swap_mc._save_checkpoint, []

    def save_then_die(*args):
        real_save(*args)
        calls.append(1)
        if len(calls) == 3:
            raise Killed

    cfg = make_cfg(tmp_path / "b", "null", temperature=1.0, **opts)
    monkeypatch.setattr(swap_mc, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        simulate_shard(cfg)
    monkeypatch.setattr(swap_mc, "_save_checkpoint", real_save)
    (checkpoint,) = list((tmp_path / "b").rglob(".*.swap_checkpoint.npz"))
    assert not list((tmp_path / "b").rglob("s*.h5"))  # nothing half-written in the dataset
    resumed = read_shard(simulate_shard(cfg)["shard"])
    assert not checkpoint.exists() and swap_checkpoint(checkpoint.parent / "s0000.h5") == checkpoint
    np.testing.assert_array_equal(resumed["positions"], reference["positions"])
    np.testing.assert_array_equal(resumed["types"], reference["types"])
    np.testing.assert_array_equal(resumed["equilibration_energy"], reference["equilibration_energy"])

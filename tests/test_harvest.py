"""Harvesting many equilibrium structures from one swap-MC chain (tglassmlp.physics.harvest)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import tglassmlp.physics.swap_mc as swap_mc
from tglassmlp.physics import equilibrium_structures, potential_energy
from tglassmlp.physics.harvest import HarvestReport, structure_overlap
from tglassmlp.physics.swap_mc import equilibrium_structure, load_swap_settings
from tglassmlp.physics.system import load_system
from tglassmlp.simulation.chains import chain_of_shard

from conftest import Killed, killed_after_checkpoint, min_image_distances

SYSTEM = load_system()
# tiny and hot: tau_Q ~ 3e2 sweeps at N = 43, T = 2, so the criterion holds within 6400 sweeps (~2 s)
T, N = 2.0, 43
FAST = dict(n_particles=N, seed=5, max_sweeps=12800, melt_sweeps=20, anneal_steps=2, anneal_sweeps=20,
            adapt_sweeps_at_target=20, first_block_sweeps=200, snapshot_every=10)




@pytest.fixture(scope="module")
def harvest():
    return equilibrium_structures(T, 4, **FAST)


def test_harvested_structures_are_valid_equilibrium_structures(harvest):
    structures, report = harvest
    assert isinstance(report, HarvestReport) and len(structures) == 4 and len(report.structures) == 4
    assert report.criterion_met_at_start, report.equilibration["reasons"]
    box = SYSTEM.box_for(N)
    closest = SYSTEM.overlap_distance * SYSTEM.sigma  # (3, 3) per type pair
    for k, (pos, types, b) in enumerate(structures):
        assert b == pytest.approx(box) and pos.shape == (N, 2) and types.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(types, minlength=3), SYSTEM.composition_for(N))
        assert np.all((pos >= 0) & (pos < box))
        r = min_image_distances(pos, box) + np.eye(N) * 1e9
        assert np.all(r > closest[types[:, None], types[None, :]]), f"structure {k} has an overlap"
        # the recorded energy is the sampler's tracked one: equal to an independent recomputation
        rec = report.structures[k]
        assert rec["energy"] == pytest.approx(potential_energy(pos, types, box) / N, abs=1e-9)
    # successive structures differ (the chain moved) and are spaced as documented
    assert not np.array_equal(structures[0][0], structures[1][0])
    assert report.spacing_sweeps == math.ceil(report.harvest_spacing * report.tau_q_at_start)
    sweeps = [r["sweep"] for r in report.structures]
    assert np.all(np.diff(sweeps) == report.spacing_sweeps)
    assert [r["index"] for r in report.structures] == [0, 1, 2, 3]


def test_structure_zero_is_equilibrium_structure(harvest):
    """Harvesting continues the very chain of equilibrium_structure: structure 0 is its result."""
    structures, report = harvest
    pos, types, box, rep = equilibrium_structure(T, **FAST)
    np.testing.assert_array_equal(structures[0][0], pos)
    np.testing.assert_array_equal(structures[0][1], types)
    assert rep.criterion_met and report.structures[0]["sweep"] == rep.sweeps_production
    assert report.equilibration["tau_overlap"] == rep.tau_overlap


def test_successive_overlap_below_documented_bound_and_report(harvest):
    _, report = harvest
    bound = load_swap_settings().harvest_max_overlap
    assert report.structures[0]["overlap_previous"] is None
    for rec in report.structures[1:]:
        assert 0.0 <= rec["overlap_previous"] <= bound, rec
        assert rec["overlap_ok"]
        assert rec["criterion_holds"] == (not rec["reasons"])
        assert rec["tau_q"] is None or rec["tau_q"] > 0
    assert report.criterion_holds == [r["criterion_holds"] for r in report.structures]
    assert all(report.usable[1:]) == all(report.criterion_holds[1:])


def test_structure_overlap_equals_brute_force_reference():
    """Cage-relative overlap against an explicit loop over particles and their neighbours."""
    rng = np.random.default_rng(3)
    box = 6.0
    a = rng.uniform(0, box, (40, 2))
    b = a + rng.normal(0, 0.25, a.shape) + np.array([0.7, -0.4])  # random steps on top of a drift
    settings = load_swap_settings()
    ref = 0
    for i in range(40):
        d = a - a[i]
        d -= box * np.round(d / box)
        nbr = [j for j in range(40) if j != i and d[j] @ d[j] < settings.cage_radius ** 2]
        disp = b[i] - a[i] - (np.mean([b[j] - a[j] for j in nbr], axis=0) if nbr else 0.0)
        ref += disp @ disp < settings.overlap_a ** 2
    assert structure_overlap(a, b, box, settings) == pytest.approx(ref / 40)
    assert structure_overlap(a, a + 5.0, box, settings) == 1.0  # a rigid shift is no relaxation


@pytest.mark.parametrize("kill_after", [2, 7, 12, 15])
def test_killed_harvest_resumes_to_the_same_structures(tmp_path, monkeypatch, harvest, kill_after):
    """A kill after the k-th checkpoint (preparation, equilibration production, after a harvest, between
    harvests) leaves a file from which a rerun gives the uninterrupted run's structures and records."""
    structures, report = harvest
    path = tmp_path / "chain.npz"
    with killed_after_checkpoint(monkeypatch, swap_mc, kill_after), pytest.raises(Killed):
        equilibrium_structures(T, 4, checkpoint=path, checkpoint_every_s=0, **FAST)
    resumed, rep = equilibrium_structures(T, 4, checkpoint=path, checkpoint_every_s=0, **FAST)
    for (p0, t0, _), (p1, t1, _) in zip(structures, resumed):
        np.testing.assert_array_equal(p0, p1)
        np.testing.assert_array_equal(t0, t1)
    assert rep.structures == report.structures


def test_more_structures_extend_the_chain_and_a_finished_file_returns_at_once(tmp_path, harvest):
    structures, report = harvest
    path = tmp_path / "chain.npz"
    first, _ = equilibrium_structures(T, 2, checkpoint=path, **FAST)
    more, rep = equilibrium_structures(T, 4, checkpoint=path, **FAST)
    for (p0, _, _), (p1, _, _) in zip(structures, more):
        np.testing.assert_array_equal(p0, p1)
    np.testing.assert_array_equal(first[1][0], more[1][0])
    assert rep.structures == report.structures
    fewer, rep2 = equilibrium_structures(T, 3, checkpoint=path, **FAST)  # nothing to run: a prefix
    assert len(fewer) == 3 and rep2.structures == report.structures[:3]


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="n_structures"):
        equilibrium_structures(T, 0, **FAST)
    with pytest.raises(ValueError, match="n_chains"):
        equilibrium_structures(T, 2, n_chains=0, **FAST)
    with pytest.raises(ValueError, match="backend"):
        load_swap_settings(backend="cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        equilibrium_structures(T, 2, backend="cuda", **FAST)
    with pytest.raises(ValueError, match="harvest_spacing"):
        equilibrium_structures(T, 2, harvest_spacing=-1.0, **FAST)
    with pytest.raises(ValueError, match="temperature"):
        equilibrium_structures(-1.0, 2, **FAST)
    with pytest.raises(ValueError, match="cascade"):
        load_swap_settings(cascade=[0.2, 0.3])
    with pytest.raises(ValueError, match="structures_per_chain"):
        load_swap_settings(structures_per_chain=0)
    path = tmp_path / "chain.npz"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        equilibrium_structures(T, 1, checkpoint=path, **{**FAST, "max_sweeps": 200})
        with pytest.raises(ValueError, match="another run.*harvest"):
            equilibrium_structures(T, 1, checkpoint=path, harvest_spacing=1.0, **{**FAST, "max_sweeps": 200})
        with pytest.raises(ValueError, match="another run"):  # an equilibrium_structure file is not a harvest
            equilibrium_structure(T, checkpoint=path, **{**FAST, "max_sweeps": 200})


def test_chain_of_shard_keeps_shard_names():
    assert [chain_of_shard(i, 3) for i in range(7)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert [chain_of_shard(i, 1) for i in range(3)] == [(0, 0), (1, 0), (2, 0)]


# ------------------------------------------------------------------ simulate.py: shards from shared chains
def _simulate_cfg(tmp_path, **overrides):
    from hydra import compose, initialize_config_dir

    from tglassmlp.paths import config_dir

    swap = {k: v for k, v in FAST.items() if k not in ("n_particles", "seed", "max_sweeps")}
    args = ["structure=null", f"paths.output_dir={tmp_path / 'out'}", "simulation_dataset.name=test",
            f"simulation_dataset.n_particles={N}", "simulation_dataset.default_t_max=null", f"simulation_dataset.max_sweeps={FAST['max_sweeps']}",
            "simulation_dataset.store_descriptors=false"] + [f"swap.{k}={v}" for k, v in swap.items()]
    args += [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="simulate", overrides=args)


def _direct(temperature, n, seed, initial=None):
    kw = {**FAST, "seed": seed}
    if initial is not None:
        kw.pop("n_particles")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return equilibrium_structures(temperature, n, initial=initial, **kw)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_simulate_takes_shards_from_shared_chains_in_any_order(tmp_path):
    """structures_per_chain = 2: shard i is harvest i % 2 of chain i // 2 (seed of the chain's first shard),
    whatever order the jobs run in; the shard names are unchanged."""
    from tglassmlp.data import read_shard
    from tglassmlp.simulation.job import shard_seeds, simulate_shard

    shards = {}
    for i in (1, 0, 2):
        out = simulate_shard(_simulate_cfg(tmp_path, temperature=T, structure_index=i,
                                           **{"swap.structures_per_chain": 2}))
        assert out["shard"].endswith(f"T{T:.3f}/s{i:04d}.h5")
        shards[i] = read_shard(out["shard"])
    chain0, rep0 = _direct(T, 2, shard_seeds(0, T, 0)[0])
    chain1, _ = _direct(T, 1, shard_seeds(0, T, 2)[0])
    for i, ref in ((0, chain0[0]), (1, chain0[1]), (2, chain1[0])):
        np.testing.assert_array_equal(shards[i]["positions"], ref[0])
        np.testing.assert_array_equal(shards[i]["types"], ref[1])
    assert shards[1].attrs["equilibrated"] == int(rep0.structures[1]["criterion_holds"])
    assert sorted(p.name for p in (tmp_path / "out").rglob(".chain*.harvest.npz")) == [
        ".chain0000.harvest.npz", ".chain0001.harvest.npz"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_simulate_cooling_cascade_starts_from_the_rung_above(tmp_path):
    from tglassmlp.data import read_shard
    from tglassmlp.simulation.job import shard_seeds, simulate_shard

    lower = 1.5
    out = simulate_shard(_simulate_cfg(tmp_path, temperature=lower, structure_index=0,
                                       **{"swap.cascade": f"[{T},{lower}]"}))
    top, _ = _direct(T, 1, shard_seeds(0, T, 0)[0])
    ref, rep = _direct(lower, 1, shard_seeds(0, lower, 0)[0], initial=top[0])
    shard = read_shard(out["shard"])
    np.testing.assert_array_equal(shard["positions"], ref[0][0])
    assert rep.equilibration["anneal_temperatures"] == []  # started from the structure, not melted


def test_cascade_preset_composes_to_the_documented_ladder():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tglassmlp.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="simulate", overrides=["simulation_experiment=cascade", "temperature=0.15"])
    settings = load_swap_settings(**OmegaConf.to_container(cfg.swap, resolve=True))
    assert settings.cascade == (0.25, 0.23, 0.21, 0.18, 0.15) and settings.structures_per_chain > 1
    assert cfg.structure is None and cfg.simulation_dataset.n_particles == 1290


def test_sigkilled_harvest_process_resumes_to_the_same_structures(tmp_path, harvest):
    """A real SIGKILL of a harvesting process (at whatever point it has reached) leaves a checkpoint from which
    a rerun returns the uninterrupted run's structures."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    structures, report = harvest
    path = tmp_path / "chain.npz"
    script = (f"import warnings; warnings.simplefilter('ignore')\n"
              f"from tglassmlp.physics import equilibrium_structures\n"
              f"equilibrium_structures({T}, 40, checkpoint={str(path)!r}, checkpoint_every_s=0, "
              f"**{json.dumps(FAST)})\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(1.5)  # well inside the run (40 structures take far longer)
        assert proc.poll() is None, "the harvesting process ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and path.exists()
    resumed, rep = equilibrium_structures(T, 4, checkpoint=path, checkpoint_every_s=0, **FAST)
    for (p0, t0, _), (p1, t1, _) in zip(structures, resumed):
        np.testing.assert_array_equal(p0, p1)
        np.testing.assert_array_equal(t0, t1)
    assert rep.structures == report.structures

"""simulate.py with swap.chains_per_job = B > 1: B chains per batch (one EquilibrationChain, n_chains = B), one
job per harvest of a batch (tglassmlp.simulation.chains).

References: a direct, uninterrupted ``equilibrium_structures(..., n_chains=B)`` run with the batch's seed (the
shards must be its structures, whatever order and interruptions the jobs saw); the single-chain
EquilibrationChain for the per-chain starts of a cascade.
"""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest

import tglassmlp.physics.swap_mc as swap_mc
from tglassmlp.physics import equilibrium_structures, potential_energy
from tglassmlp.physics.system import load_system
from tglassmlp.simulation.chains import (
    batch_file,
    batch_of_shard,
    chain_of_shard,
    chains_per_job_of,
)

from conftest import Killed, killed_after_checkpoint, min_image_distances, requires_opencl

SYSTEM = load_system()
# tiny and hot, as in test_harvest.py (the criterion holds within a few thousand sweeps at N = 43, T = 2)
T, N = 2.0, 43
FAST = dict(max_sweeps=12800, melt_sweeps=20, anneal_steps=2, anneal_sweeps=20, adapt_sweeps_at_target=20,
            first_block_sweeps=200, snapshot_every=40)
B, K = 2, 2  # chains per job, structures per chain: batch g = shards 4g .. 4g + 3


def _cfg(out, **overrides):
    from hydra import compose, initialize_config_dir

    from tglassmlp.paths import config_dir

    args = {"structure": "null", "paths.output_dir": out, "simulation_dataset.name": "test",
            "simulation_dataset.n_particles": N, "simulation_dataset.default_t_max": "null",
            "simulation_dataset.max_sweeps": FAST["max_sweeps"], "simulation_dataset.store_descriptors": "false",
            "temperature": T, **{f"swap.{k}": v for k, v in FAST.items() if k != "max_sweeps"}, **overrides}
    args = [f"{k}={v}" for k, v in args.items()]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="simulate", overrides=args)


def _batch_cfg(out, index, **overrides):
    return _cfg(out, structure_index=index, **{"swap.chains_per_job": B, "swap.structures_per_chain": K,
                                               **overrides})


def _run(cfg):
    from tglassmlp.simulation.job import simulate_shard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = simulate_shard(cfg)
    return out if isinstance(out, list) else [out]


def _direct(temperature, n, seed, n_chains, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return equilibrium_structures(temperature, n, N if kw.get("initial") is None else None, seed,
                                      n_chains=n_chains, **{**FAST, **kw})


def _shards(folder):
    from tglassmlp.data import read_shard

    return {int(p.stem[1:]): read_shard(p) for p in sorted(folder.glob("s*.h5"))}


@pytest.fixture(scope="module")
def references():
    """The two batches of shards 0 .. 7, each one uninterrupted direct run with its first shard's seed."""
    from tglassmlp.simulation.job import shard_seeds

    return [_direct(T, B * K, shard_seeds(0, T, g * B * K)[0], B) for g in (0, 1)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, references):
    """Shards 0 .. 7 made by the four jobs of the sweep range(0, 8, 2), in a scrambled order."""
    out = tmp_path_factory.mktemp("batches")
    summaries = {}
    for index in (6, 0, 4, 2):  # batch 1's second harvest first: it runs batch 1 through both harvests
        for s in _run(_batch_cfg(out, index)):
            summaries[s["shard"]] = s
    return out, out / "datasets" / "test" / f"T{T:.3f}", summaries


def _assert_shards_are_the_references(shards, references, indices=range(8)):
    for i in indices:
        g, k = batch_of_shard(i, K, B)
        pos, types, _ = references[g][0][k]
        np.testing.assert_array_equal(shards[i]["positions"], pos)
        np.testing.assert_array_equal(shards[i]["types"], types)


def test_shard_chain_and_batch_numbering():
    """Harvest-major inside a batch (one job = one harvest of each chain = B consecutive shards); B = 1 is the
    single-chain numbering, and the file names say B."""
    assert [chain_of_shard(i, 3, 2) for i in range(8)] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (2, 0),
                                                           (3, 0)]
    assert [chain_of_shard(i, 3, 1) for i in range(7)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    assert [batch_of_shard(i, 1, 3) for i in (0, 2, 3, 7)] == [(0, 0), (0, 2), (1, 0), (2, 1)]
    assert batch_file("d", 3).name == ".chain0003.harvest.npz"  # B = 1: the single chain's file, as before
    assert batch_file("d", 1, 4).name == ".chains0004-0007.harvest.npz"
    assert [chains_per_job_of(n) for n in (".chain0003.harvest.npz", ".chains0004-0007.harvest.npz",
                                           ".s0001.swap_checkpoint.npz", ".chain0003.harvest.lock")] == [1, 4, None,
                                                                                                     None]


def test_batch_shards_are_the_direct_runs_structures_whatever_the_job_order(dataset, references):
    out, folder, summaries = dataset
    shards = _shards(folder)
    assert sorted(shards) == list(range(8))
    _assert_shards_are_the_references(shards, references)
    closest = SYSTEM.overlap_distance * SYSTEM.sigma
    box = SYSTEM.box_for(N)
    for i, shard in shards.items():
        pos, types = shard["positions"], shard["types"]
        np.testing.assert_array_equal(np.bincount(types, minlength=3), SYSTEM.composition_for(N))
        r = min_image_distances(pos, box) + np.eye(N) * 1e9
        assert np.all(r > closest[types[:, None], types[None, :]]), f"shard {i} has an overlap"
        # the shard's report is its chain's: its record, its chain's structures and equilibration
        rep = shard.attrs["equilibration_report"]
        chain, harvest = chain_of_shard(i, K, B)
        assert (rep["structure"]["chain"], rep["structure"]["harvest"]) == (chain % B, harvest)
        assert rep["n_chains"] == B and {r["chain"] for r in rep["structures"]} == {chain % B}
        assert rep["structure"]["energy"] == pytest.approx(potential_energy(pos, types, box) / N, abs=1e-9)
        assert shard.attrs["equilibrated"] == int(rep["structure"]["criterion_holds"])
    # the chains of a batch are different chains (their own seeds b), and so are the batches
    assert not np.array_equal(shards[0]["positions"], shards[1]["positions"])
    assert not np.array_equal(shards[0]["positions"], shards[4]["positions"])
    assert sorted(p.name for p in folder.glob(".chain*.harvest.npz")) == [".chains0000-0001.harvest.npz",
                                                                          ".chains0002-0003.harvest.npz"]


def test_a_job_whose_shards_are_stored_returns_at_once(dataset):
    out, folder, _ = dataset
    chain_files = sorted(folder.glob(".chain*.harvest.npz"))
    before = [os.stat(p).st_mtime_ns for p in chain_files]
    summaries = _run(_batch_cfg(out, 2))
    assert [s["shard"].rsplit("/", 1)[1] for s in summaries] == ["s0002.h5", "s0003.h5"]
    assert all(s["ran"] == [] and "structure" in s["skipped"] for s in summaries)
    assert [os.stat(p).st_mtime_ns for p in chain_files] == before


def test_another_chains_per_job_is_refused_naming_both(dataset, tmp_path):
    out, folder, _ = dataset
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    manifest = sorted((copy / "datasets" / "test").rglob("*"))
    for overrides in ({"swap.chains_per_job": 3}, {"swap.chains_per_job": 1},
                      {"swap.chains_per_job": 1, "swap.structures_per_chain": 1}):
        with pytest.raises(ValueError, match=r"swap.chains_per_job = \d, but .* swap.chains_per_job = 2 "
                                             r"\(\.chains0000-0001\.harvest\.npz\)") as info:
            _run(_batch_cfg(copy, 12, **overrides))
        assert f"swap.chains_per_job = {overrides['swap.chains_per_job']}," in str(info.value)
    assert sorted((copy / "datasets" / "test").rglob("*")) == manifest  # refused before anything was written
    # the batch's own key refuses a run of another B too (the file records n_chains)
    from tglassmlp.simulation.job import shard_seeds

    with pytest.raises(ValueError, match="another run.*sampler"):
        equilibrium_structures(T, 1, N, shard_seeds(0, T, 0)[0], n_chains=3,
                               checkpoint=batch_file(copy / "datasets" / "test" / f"T{T:.3f}", 0, B), **FAST)


def test_job_index_and_sizes_are_checked_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"structure_index = 3: with swap.chains_per_job = 2 .* multiple of 2 "
                                         r"\(sweep structure_index='range\(0,S,2\)'\)"):
        _run(_batch_cfg(tmp_path, 3))
    with pytest.raises(ValueError, match="swap.chains_per_job: must be an integer >= 1, got 0"):
        _run(_batch_cfg(tmp_path, 0, **{"swap.chains_per_job": 0}))
    with pytest.raises(ValueError, match=r"md.structures_per_context = 3 and swap.chains_per_job = 2: .* the "
                                         "smaller must divide"):
        _run(_batch_cfg(tmp_path, 0, **{"simulation_dataset.default_t_max": 0.1, "md.structures_per_context": 3}))
    assert not (tmp_path / "datasets").exists()


def test_a_sweep_expects_every_shard_of_its_batch_jobs(tmp_path):
    """The manifest's expected shards of ``simulate.py -m structure_index='range(0,8,2)'``: all eight, each once;
    with MD (K_md = 4 > B) a job is four shards."""
    from tglassmlp.simulation.job import sweep_shards

    got = sweep_shards(_batch_cfg(tmp_path, 0), ["structure_index=range(0,8,2)"])
    assert [(t, i) for t, i, _ in got] == [(T, i) for i in range(8)]
    md = _batch_cfg(tmp_path, 0, **{"simulation_dataset.default_t_max": 0.1, "md.structures_per_context": 4})
    assert [i for _, i, _ in sweep_shards(md, ["structure_index=0,4"])] == list(range(8))


@pytest.fixture(scope="module")
def kill_points(tmp_path_factory):
    """Checkpoint numbers of batch 0's job of harvest 1 (checkpoint_every_s = 0): halfway through the
    equilibration, right after harvest 0, halfway between the harvests (counted, not hard-coded, so that a
    change of the protocol's length moves them along)."""
    real, harvested = swap_mc._save_checkpoint, []

    def counting(path, sampler, key, run, *args, **kwargs):
        real(path, sampler, key, run, *args, **kwargs)
        harvested.append(len(run.get("harvest", {}).get("records", [])))

    swap_mc._save_checkpoint = counting
    try:
        _run(_batch_cfg(tmp_path_factory.mktemp("count"), 2, **{"swap.checkpoint_every_s": 0}))
    finally:
        swap_mc._save_checkpoint = real
    first, second = harvested.index(B), harvested.index(2 * B)
    assert 10 < first < second - 10, harvested
    return {"equilibration": first // 2, "harvest 0": first + 1, "between harvests": (first + second) // 2 + 1}


@pytest.mark.parametrize("where", ["equilibration", "harvest 0", "between harvests"])
def test_killed_batch_job_resumes_to_the_same_shards(tmp_path, monkeypatch, references, kill_points, where):
    """A kill after a checkpoint of batch 0 (``kill_points``) in the job of its second harvest; the jobs then
    rerun in the other order give the uninterrupted run's structures."""
    with killed_after_checkpoint(monkeypatch, swap_mc, kill_points[where]), pytest.raises(Killed):
        _run(_batch_cfg(tmp_path, 2, **{"swap.checkpoint_every_s": 0}))
    folder = tmp_path / "datasets" / "test" / f"T{T:.3f}"
    assert not list(folder.glob("s*.h5"))
    for index in (0, 2):
        _run(_batch_cfg(tmp_path, index, **{"swap.checkpoint_every_s": 0}))
    _assert_shards_are_the_references(_shards(folder), references, range(4))


def test_chains_of_a_batch_start_from_their_own_initial_structures():
    """EquilibrationChain(initial=[s_0, .., s_B-1]): chain b starts from s_b; chain 0 is then the single chain
    started from s_0 (numba chains are independent samplers); the key records every start."""
    from tglassmlp.physics.swap_mc import EquilibrationChain, load_swap_settings

    settings = load_swap_settings(**FAST)
    (s0, s1), _ = _direct(T, 2, 9, 2)
    batch = EquilibrationChain(1.5, N, 4, initial=[s0, s1], n_chains=2, settings=settings)
    np.testing.assert_array_equal(batch.sampler.positions(1), s1[0])
    np.testing.assert_array_equal(batch.sampler.types(1), s1[1])
    single = EquilibrationChain(1.5, N, 4, initial=s0, settings=settings)
    assert batch.stages == single.stages and len(batch.key["initial"]) == 2
    assert batch.key["initial"][0] == single.key["initial"]
    batch.prepare()
    single.prepare()
    np.testing.assert_array_equal(batch.sampler.positions(0), single.sampler.positions(0))
    assert batch.sampler.steps[0] == single.sampler.steps[0]
    assert not np.array_equal(batch.sampler.positions(1), single.sampler.positions(0))
    with pytest.raises(ValueError, match="initial lists 2 start"):
        EquilibrationChain(1.5, N, 4, initial=[s0, s1], n_chains=3, settings=settings)
    with pytest.raises(ValueError, match="one N and one box"):
        EquilibrationChain(1.5, N, 4, initial=[s0, (s1[0][:-1], s1[1][:-1], s1[2])], n_chains=2,
                           settings=settings)


def test_cascade_of_batches_starts_each_chain_from_its_chain_one_rung_up(tmp_path):
    from tglassmlp.simulation.job import shard_seeds

    lower = 1.5
    shards = _run(_cfg(tmp_path, temperature=lower, structure_index=0,
                       **{"swap.cascade": f"[{T},{lower}]", "swap.chains_per_job": 2}))
    top, _ = _direct(T, 2, shard_seeds(0, T, 0)[0], 2)
    ref, rep = _direct(lower, 2, shard_seeds(0, lower, 0)[0], 2, initial=top)
    for k, s in enumerate(shards):
        from tglassmlp.data import read_shard

        np.testing.assert_array_equal(read_shard(s["shard"])["positions"], ref[k][0])
    assert all(e["anneal_temperatures"] == [] for e in rep.chain_equilibrations)  # from the structures, not melted
    assert [p.name for p in sorted((tmp_path / "datasets" / "test").rglob(".chain*.harvest.npz"))] == [
        ".chains0000-0001.harvest.npz", ".chains0000-0001.harvest.npz"]


@requires_opencl
def test_opencl_batch_job_is_the_batched_kernels_run(tmp_path):
    """swap.backend=opencl: one job, B = 2 chains in one kernel; its shards are the direct batched run's."""
    from tglassmlp.simulation.job import shard_seeds

    easy = {"swap.backend": "opencl", "swap.chains_per_job": 2, "swap.overlap_a": 0.15, "swap.n_decorrelation": 5.0,
            "simulation_dataset.max_sweeps": 3200}
    shards = _run(_cfg(tmp_path, structure_index=0, **easy))
    ref, _ = _direct(T, 2, shard_seeds(0, T, 0)[0], 2, backend="opencl", overlap_a=0.15, n_decorrelation=5.0,
                     max_sweeps=3200)
    from tglassmlp.data import read_shard

    for k, s in enumerate(shards):
        shard = read_shard(s["shard"])
        np.testing.assert_array_equal(shard["positions"], ref[k][0])
        assert shard.attrs["equilibration_report"]["backend"] == "opencl"

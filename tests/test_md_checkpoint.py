"""Checkpoints inside the isoconfigurational MD: a SIGKILLed MD process resumes to the uninterrupted run's frames
(bit for bit on the CPU platform with one thread per Context, and on OpenCL within a stated tolerance), a kill
during the checkpoint write loses nothing, a checkpoint of another run is refused, and simulate.py's MD stage
resumes (verify names the shard 'resumable at t = ...')."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tglassmlp.physics import inherent_structure
from tglassmlp.physics.md import isoconfigurational_runs
from tglassmlp.physics.md_checkpoint import (
    CheckpointMismatchError,
    checkpoint_for_shard,
    checkpoint_progress,
    md_checkpoint_path,
)
from tglassmlp.physics.openmm_system import available_platforms, platform_problem

from test_openmm import N_TINY, lattice_configuration

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
T_RUN = 0.4
# A run long enough (many strides) that a kill after the first checkpoint lands mid-run.
RUN = {"CPU": dict(times=[0.1, 1.0, 10.0, 50.0], stride=200),
       "OpenCL": dict(times=[0.1, 1.0, 5.0, 20.0], stride=400)}  # PoCL: a Context rebuild costs ~0.3 s
# A resumed OpenCL run repeats the uninterrupted one's operations on the same state; measured bit-identical on
# PoCL. A GPU may sum forces in another order after a rebuild (atomics), which chaos amplifies: bounded here by
# the OpenCL-vs-Reference difference of an N = 43 run at t = 20 (measured ~1e-2 sigma; 1.6e-4 at t = 5). A
# faulty resume (velocities redrawn, steps lost or doubled, another run's frames) moves particles by
# ~v t >= 0.6 sigma.
OPENCL_RESUME_ATOL = 0.1


def _opencl_ok():
    return "OpenCL" in available_platforms() and platform_problem("OpenCL", "mixed") is None


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    pos, types, box = lattice_configuration(N_TINY, seed=21)
    pos = inherent_structure(pos, types, box, max_force=1e-4)
    path = tmp_path_factory.mktemp("structure") / "structure.npz"
    np.savez(path, positions=pos, types=types, box=box)
    return path, (pos, types, box)


def md_kwargs(platform):
    run = RUN[platform]
    return dict(times=run["times"], n_runs=2, seed=7, platform=platform, workers=1, threads=1,
                replicas_per_context=2, check_every=50, checkpoint_stride=run["stride"], progress=False)


# the MD process that gets killed: isoconfigurational_runs with a checkpoint, optionally SIGKILLing itself in
# the middle of its n-th checkpoint write (half a temporary file written, the rename not done)
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np
    sys.path.insert(0, {src!r})
    import tglassmlp.physics.md_checkpoint as mc
    from tglassmlp.atomic import atomic_path
    from tglassmlp.physics.md import isoconfigurational_runs
    args = json.loads({args!r})
    kill_on = args.pop("kill_on_write")
    if kill_on:
        real, count = mc.save_npz_atomic, [0]
        def save(path, arrays):
            count[0] += 1
            if count[0] < kill_on:
                return real(path, arrays)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **arrays)
                    fh.truncate(fh.tell() // 2)
                    fh.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
        mc.save_npz_atomic = save
    d = np.load(args.pop("structure"))
    isoconfigurational_runs(d["positions"], d["types"], float(d["box"]), args.pop("temperature"), **args)
""")


def start_child(structure_path, checkpoint, platform, kill_on_write=0):
    args = dict(md_kwargs(platform), structure=str(structure_path), temperature=T_RUN, checkpoint=str(checkpoint),
                checkpoint_every_s=0, kill_on_write=kill_on_write)
    code = CHILD.format(src=str(SRC), args=json.dumps(args))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_after_first_checkpoint(proc, checkpoint, timeout=120):
    deadline = time.time() + timeout
    try:
        while not checkpoint.exists():
            assert proc.poll() is None, f"the MD process ended before its first checkpoint: {proc.stdout.read()}"
            assert time.time() < deadline, "no checkpoint written in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("platform", ["CPU", "OpenCL"])
def test_sigkilled_md_resumes_to_the_uninterrupted_frames(structure, tmp_path, platform):
    if platform == "OpenCL" and not _opencl_ok():
        pytest.skip("no OpenCL device (apt-get install pocl-opencl-icd ocl-icd-libopencl1)")
    path, (pos, types, box) = structure
    reference = isoconfigurational_runs(pos, types, box, T_RUN, **md_kwargs(platform))  # no checkpoint at all
    checkpoint = tmp_path / "md.npz"
    kill_after_first_checkpoint(start_child(path, checkpoint, platform), checkpoint)
    progress = checkpoint_progress(checkpoint)
    t_max = RUN[platform]["times"][-1]
    assert progress["t_max"] == t_max and 0 < progress["t_min"] < t_max, progress  # killed mid-run
    resumed = isoconfigurational_runs(pos, types, box, T_RUN, checkpoint=checkpoint, checkpoint_every_s=0,
                                      **md_kwargs(platform))
    if platform == "CPU":
        np.testing.assert_array_equal(resumed, reference)
    else:
        diff = np.abs(resumed - reference).max()
        print(f"OpenCL: resumed vs uninterrupted max |dx| = {diff:.3g} sigma")
        assert diff <= OPENCL_RESUME_ATOL
    assert np.abs(reference[:, -1] - pos).max() > 0.5  # the run went somewhere
    # the finished checkpoint: a rerun returns the same frames at once
    np.testing.assert_array_equal(isoconfigurational_runs(pos, types, box, T_RUN, checkpoint=checkpoint,
                                                          **md_kwargs(platform)), resumed)


def test_kill_during_checkpoint_write_loses_nothing(structure, tmp_path):
    """SIGKILL in the middle of the 3rd checkpoint write: the 2nd checkpoint is intact on disk, a half-written
    temporary beside it; the rerun resumes from the 2nd and ends bit-identical to the uninterrupted run."""
    path, (pos, types, box) = structure
    reference = isoconfigurational_runs(pos, types, box, T_RUN, **md_kwargs("CPU"))
    checkpoint = tmp_path / "md.npz"
    proc = start_child(path, checkpoint, "CPU", kill_on_write=3)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, out
    stride_t = RUN["CPU"]["stride"] * 0.01
    assert checkpoint_progress(checkpoint)["t_min"] == pytest.approx(2 * stride_t)  # the 2nd save
    leftovers = [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    resumed = isoconfigurational_runs(pos, types, box, T_RUN, checkpoint=checkpoint, checkpoint_every_s=0,
                                      **md_kwargs("CPU"))
    np.testing.assert_array_equal(resumed, reference)


@pytest.mark.parametrize("change, named", [
    (dict(temperature=0.45), "temperature"),
    (dict(n_runs=3), "n_runs"),
    (dict(seed=8), "velocities_sha256"),
    (dict(times=[0.1, 1.0]), "steps_sha256"),
    (dict(dt=0.005), "dt"),
    (dict(platform="Reference"), "platform"),
    (dict(layout="table"), "layout"),
    (dict(replicas_per_context=1), "groups"),
    (dict(checkpoint_stride=100), "checkpoint_stride"),
    (dict(structure_shift=0.01), "structures_sha256"),
])
def test_checkpoint_of_another_run_is_refused(structure, tmp_path, change, named):
    _, (pos, types, box) = structure
    kw = dict(md_kwargs("CPU"), times=[0.1, 1.0, 2.0], checkpoint_stride=50)
    checkpoint = tmp_path / "md.npz"
    isoconfigurational_runs(pos, types, box, T_RUN, checkpoint=checkpoint, **kw)
    before = checkpoint.read_bytes()
    change = dict(change)
    temperature = change.pop("temperature", T_RUN)
    shifted = pos + change.pop("structure_shift", 0.0)
    with pytest.raises(CheckpointMismatchError, match=rf"written by another run; it differs in .*{named} \(checkpoint"):
        isoconfigurational_runs(shifted, types, box, temperature, checkpoint=checkpoint, **{**kw, **change})
    assert checkpoint.read_bytes() == before


def test_unreadable_checkpoint_says_so(structure, tmp_path):
    _, (pos, types, box) = structure
    checkpoint = tmp_path / "md.npz"
    checkpoint.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint .*md.npz is unreadable .* delete it"):
        isoconfigurational_runs(pos, types, box, T_RUN, checkpoint=checkpoint, **md_kwargs("CPU"))
    with pytest.raises(ValueError, match="checkpoint_every_s must be"):
        isoconfigurational_runs(pos, types, box, T_RUN, checkpoint=tmp_path / "b.npz", checkpoint_every_s=-1,
                                **md_kwargs("CPU"))


def test_checkpoint_names_of_shards(tmp_path):
    folder = tmp_path / "T0.400"
    folder.mkdir()
    assert md_checkpoint_path([folder / "s0004.h5"]).name == ".s0004.md_checkpoint.npz"
    block = md_checkpoint_path([folder / f"s{k:04d}.h5" for k in range(5, 10)])
    assert block.name == ".s0005x5.md_checkpoint.npz"
    block.write_bytes(b"")
    assert checkpoint_for_shard(folder / "s0007.h5") == block
    assert checkpoint_for_shard(folder / "s0004.h5") is None and checkpoint_for_shard(folder / "s0010.h5") is None


# ----------------------------------------------------------------------------------------- simulate.py
def simulate_args(out, structure_file, *extra):
    return [f"structure={structure_file}", f"paths.output_dir={out}", "simulation_dataset.name=ckpt", "temperature=0.5",
            "simulation_dataset.isoconfigurational.n_runs=2", "simulation_dataset.isoconfigurational.t_min=0.1",
            "simulation_dataset.default_t_max=50", "simulation_dataset.isoconfigurational.n_times=4", "simulation_dataset.store_trajectories=true",
            "simulation_dataset.store_descriptors=false", "md.platform=CPU", "num_threads=1", "md.checkpoint_every_s=0",
            "md.checkpoint_stride=200", *extra]


def compose_simulate(args):
    from hydra import compose, initialize_config_dir

    from tglassmlp.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="simulate", overrides=args)


@pytest.fixture(scope="module")
def structure_shard(tmp_path_factory, structure):
    from tglassmlp.data import write_shard

    _, (pos, types, box) = structure
    path = tmp_path_factory.mktemp("start") / "start.h5"
    write_shard(path, {"positions": pos, "types": types}, {"temperature": 0.5, "box": box, "seed": 21,
                                                            "config": "{}", "source": "test:lattice"})
    return path


def test_simulate_md_stage_sigkilled_then_resumed(tmp_path, structure_shard):
    """simulate.py's MD stage killed after its first checkpoint: verify names the shard 'resumable at t = ...',
    the rerun resumes the MD and the shard equals an uninterrupted run's, checksum for checksum (CPU platform,
    one thread per Context: bit-identical); the checkpoint is gone once the shard holds its MD."""
    from tglassmlp.data.manifest import physics_checksums, verify_dataset
    from tglassmlp.paths import PROJECT_ROOT
    from tglassmlp.simulation.job import simulate_shard

    simulate_shard(compose_simulate(simulate_args(tmp_path / "ref", structure_shard, "md.checkpoint_every_s=null")))
    reference = physics_checksums(tmp_path / "ref" / "datasets" / "ckpt")

    root = tmp_path / "run" / "datasets" / "ckpt"
    checkpoint = root / "T0.500" / ".s0000.md_checkpoint.npz"
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "simulate.py", *simulate_args(tmp_path / "run", structure_shard)],
                            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    kill_after_first_checkpoint(proc, checkpoint)
    report = verify_dataset(root)
    (key, why), = report.partial
    assert key == "T0.500/s0000.h5" and "MD resumable at t = " in why and "of 50" in why, report.format()
    assert "resumable at t = " in report.format()

    summary = simulate_shard(compose_simulate(simulate_args(tmp_path / "run", structure_shard)))
    assert summary["ran"] == ["isoconfigurational"]
    assert physics_checksums(root) == reference
    assert not checkpoint.exists() and verify_dataset(root).ok


SWAP_QUICK = ["structure=null", "simulation_dataset.n_particles=43", "simulation_dataset.max_sweeps=200", "swap.melt_sweeps=20",
              "swap.anneal_steps=1", "swap.anneal_sweeps=20", "swap.adapt_sweeps_at_target=20",
              "simulation_dataset.default_t_max=0.5", "md.platform=Reference"]


def test_simulate_k_structures_per_job_equal_one_per_job(tmp_path, structure_shard):
    """md.structures_per_context = 2: one job writes shards s0000 and s0001 (their MD in one Context), with the
    same values as two one-structure jobs (Reference platform: stacking is bit-identical), both recorded in the
    manifest; a rerun skips them; an index that is not a multiple of K is refused before any work."""
    from tglassmlp.data.manifest import physics_checksums, verify_dataset
    from tglassmlp.simulation.job import simulate_shard, sweep_shards

    for k in (0, 1):
        simulate_shard(compose_simulate(simulate_args(tmp_path / "one", structure_shard, *SWAP_QUICK,
                                                      f"structure_index={k}")))
    block = simulate_args(tmp_path / "block", structure_shard, *SWAP_QUICK, "md.structures_per_context=2")
    summaries = simulate_shard(compose_simulate([*block, "structure_index=0"]))
    assert [s["ran"][-1] for s in summaries] == ["isoconfigurational"] * 2
    root = tmp_path / "block" / "datasets" / "ckpt"
    assert physics_checksums(root) == physics_checksums(tmp_path / "one" / "datasets" / "ckpt")
    assert sorted(physics_checksums(root)) == ["T0.500/s0000.h5", "T0.500/s0001.h5"]
    assert verify_dataset(root).ok and not list(root.rglob("*.md_checkpoint.npz"))
    again = simulate_shard(compose_simulate([*block, "structure_index=0"]))
    assert [s["ran"] for s in again] == [[], []]
    with pytest.raises(ValueError, match="multiple of 2"):
        simulate_shard(compose_simulate([*block, "structure_index=1"]))
    with pytest.raises(ValueError, match="cannot take them from one file"):
        simulate_shard(compose_simulate([*simulate_args(tmp_path / "x", structure_shard), "md.structures_per_context=2"]))
    # the sweep records every shard of every job: 2 jobs x 2 structures
    shards = sweep_shards(compose_simulate(block), ["structure_index=range(0,4,2)"])
    assert [k for _, k, _ in shards] == [0, 1, 2, 3]

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

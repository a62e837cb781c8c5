"""simulate.py -m survives a SIGKILLed shard: the rerun completes the dataset with the same values.

The sweep: 2 temperatures x 2 structure indices from one 50-particle structure, 2 isoconfigurational runs of
3000 steps each on the OpenMM CPU platform, 2 joblib workers (one thread each). One shard process is killed
with SIGKILL during its MD stage, after another shard has finished; the verification then lists what is
not done, the rerun completes it, and every shard's physics checksum equals that of an uninterrupted sweep.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import random_configuration
from tglassmlp.data import open_shard, read_glassbench, write_shard
from tglassmlp.data.manifest import physics_checksums, shard_lock_path, verify_dataset
from tglassmlp.paths import PROJECT_ROOT
from tglassmlp.physics.md import isoconfigurational_runs

N_SMALL, BOX_SMALL = 50, 7.5
SHARDS = ["T0.500/s0000.h5", "T0.500/s0001.h5", "T0.600/s0000.h5", "T0.600/s0001.h5"]


def _joblib_installed():
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def start_structure(tmp_path_factory):
    pos, types = random_configuration(N_SMALL, BOX_SMALL, seed=11, min_distance=0.8)
    path = tmp_path_factory.mktemp("structure") / "start.h5"
    write_shard(path, {"positions": pos, "types": types},
                {"temperature": 0.5, "box": BOX_SMALL, "seed": 11, "config": "{}",
                 "source": "test:random_configuration"})
    return path


def sweep(structure, out) -> list[str]:
    return [sys.executable, "simulate.py", "-m", f"structure={structure}", f"paths.output_dir={out}",
            "simulation_dataset.name=resume", "simulation_dataset.isoconfigurational.n_runs=2", "simulation_dataset.isoconfigurational.t_min=0.05",
            "simulation_dataset.default_t_max=30", "simulation_dataset.isoconfigurational.n_times=3", "simulation_dataset.store_trajectories=false",
            "md.platform=CPU", "temperature=0.5,0.6", "structure_index=0,1", "launcher=joblib",
            "hydra.launcher.n_jobs=2"]


def run(cmd, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kwargs)


def fields_of(path: Path) -> list[str]:
    try:
        with open_shard(path) as reader:
            return reader.fields
    except Exception:  # noqa: BLE001 - not there yet, or being replaced
        return []


def holder_pid(path: Path) -> int | None:
    try:
        text = shard_lock_path(path).read_text()
    except OSError:
        return None
    parts = text.split()
    return int(parts[parts.index("pid") + 1]) if "pid" in parts else None


@pytest.mark.skipif(not _joblib_installed(), reason="hydra-joblib-launcher not installed")
def test_killed_shard_process_then_rerun_gives_the_uninterrupted_dataset(tmp_path, start_structure):
    # 1. the uninterrupted sweep
    ref = run(sweep(start_structure, tmp_path / "ref"))
    out, _ = ref.communicate(timeout=180)
    assert ref.returncode == 0, out[-4000:]
    reference = physics_checksums(tmp_path / "ref" / "datasets" / "resume")
    assert sorted(reference) == SHARDS

    # 2. the same sweep, one shard process SIGKILLed in its MD stage once another shard has finished
    root = tmp_path / "run" / "datasets" / "resume"
    victim = run(sweep(start_structure, tmp_path / "run"))
    killed = None
    try:
        deadline = time.time() + 150
        while killed is None and time.time() < deadline and victim.poll() is None:
            present = {key: fields_of(root / key) for key in SHARDS}
            finished = [k for k, f in present.items() if "propensity" in f]
            in_md = [k for k, f in present.items() if "particle_energies" in f and "propensity" not in f]
            if finished and in_md:
                pid = holder_pid(root / in_md[0])
                if pid is not None and pid != victim.pid:
                    os.kill(pid, signal.SIGKILL)
                    killed = in_md[0]
            time.sleep(0.05)
        assert killed is not None, "never saw a shard in its MD stage after another had finished"
        out, _ = victim.communicate(timeout=120)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(30)
        try:  # loky workers left behind by the failed sweep
            os.killpg(victim.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert victim.returncode != 0, "the sweep with a killed shard process should fail"

    # the verification says what is left to do, naming the killed shard (unless the kill landed in the
    # instant after its last atomic write: then it is finished, and rightly so)
    report = verify_dataset(root)
    done_before = {key for key, _ in report.finished}
    if killed not in done_before:
        assert not report.ok
        # a kill between the shard's last stage write and its checksum record leaves a complete file that the
        # manifest does not know: 'unrecorded' is then the right name for it; otherwise partial or missing
        complete = "propensity" in fields_of(root / killed)
        named = report.unrecorded if complete else report.partial + report.missing
        assert killed in [key for key, _ in named], report.format()
    assert [key for key, _ in report.corrupt + report.changed] == [], report.format()
    assert done_before, report.format()

    # 3. the rerun: finished shards skipped, the rest resumed or run; the dataset equals the reference
    again = run(sweep(start_structure, tmp_path / "run"))
    out, _ = again.communicate(timeout=180)
    assert again.returncode == 0, out[-4000:]
    for key in done_before:
        assert f"{root / key}\n  stages run: none" in out, out[-3000:]
    report = verify_dataset(root)
    assert report.ok and sorted(k for k, _ in report.finished) == SHARDS, report.format()
    assert physics_checksums(root) == reference
    manifest = json.loads((root / "manifest.json").read_text())
    assert {k: v["physics_sha256"] for k, v in manifest["shards"].items()} == reference
    assert not list(root.rglob("*.tmp-*")) and not list(root.rglob("*.lock"))

    # the CLI verification agrees, and exits 0
    cli = subprocess.run([sys.executable, "simulate.py", "verify=true", f"paths.output_dir={tmp_path / 'run'}",
                          "simulation_dataset.name=resume"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "4 finished" in cli.stdout and "-> OK" in cli.stdout, cli.stdout + cli.stderr


def test_cpu_platform_md_is_bit_reproducible_with_one_thread_per_context(glassbench_npz):
    """Same seed, one thread per Context: bit-identical trajectories (what makes the rerun identical).

    With two threads in one Context OpenMM's CPU platform sums forces in a thread-dependent order, and after a
    few hundred steps of this chaotic system the trajectories differ (measured: 3e-3 sigma at t = 5); the
    resume test and the launcher presets therefore use one-thread Contexts.
    """
    gb = read_glassbench(glassbench_npz)
    kwargs = dict(times=[0.5, 2.0], n_runs=2, seed=5, platform="CPU", progress=False)
    a = isoconfigurational_runs(gb.positions, gb.types, gb.box, 0.23, workers=2, threads=1, **kwargs)
    b = isoconfigurational_runs(gb.positions, gb.types, gb.box, 0.23, workers=2, threads=1, **kwargs)
    np.testing.assert_array_equal(a, b)
    c = isoconfigurational_runs(gb.positions, gb.types, gb.box, 0.23, workers=1, threads=1, **kwargs)
    d = isoconfigurational_runs(gb.positions, gb.types, gb.box, 0.23, workers=1, threads=1, **kwargs)
    np.testing.assert_array_equal(c, d)
    # a different grouping (2 one-replica Contexts vs one 2-replica Context) is the same physics: identical
    # initial velocities and forces; only the order of float32 force sums differs (measured 3e-6 sigma at t = 0.5)
    np.testing.assert_allclose(a[:, 0], c[:, 0], atol=1e-4)


def test_auto_platform_passes_over_a_plugin_without_its_device(monkeypatch, caplog):
    """A CUDA plugin that loads on a machine without a usable GPU: auto takes the next platform and says why."""
    import logging

    import tglassmlp.physics.openmm_system as oms

    real_problem = oms.platform_problem
    monkeypatch.setattr(oms, "available_platforms", lambda: ["Reference", "CPU", "CUDA"])
    monkeypatch.setattr(oms, "platform_problem",
                        lambda name, precision="mixed": "OpenMMException: No compatible CUDA device is available"
                        if name == "CUDA" else real_problem(name, precision))
    monkeypatch.setattr(oms, "_LOGGED_CHOICES", set())
    with caplog.at_level(logging.INFO, logger="tglassmlp.physics.openmm_system"):
        assert oms.resolve_platform("auto", "double").getName() == "CPU"
    assert ("OpenMM platform: CPU (md.platform=auto, precision mixed); passed over CUDA: OpenMMException: No "
            "compatible CUDA device is available; OpenCL: plugin not loaded") in caplog.text
    assert real_problem("CPU", "mixed") is None and real_problem("NoSuchPlatform") is not None
    with pytest.raises(ValueError, match="precision must be one of"):
        oms.resolve_platform("auto", "quadruple")


def test_sweep_shards_lists_every_job_of_a_multirun(start_structure, glassbench_npz, tmp_path):
    """What ExpectSweepShards records before the jobs start: the (T, index) product of the sweep."""
    from hydra import compose, initialize_config_dir

    from tglassmlp.paths import config_dir
    from tglassmlp.simulation.job import sweep_shards

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="simulate", overrides=[f"structure={start_structure}", "simulation_dataset.default_t_max=1",
                                                         f"paths.output_dir={tmp_path}"])
        gb_cfg = compose(config_name="simulate", overrides=[f"structure={glassbench_npz}"])
    shards = sweep_shards(cfg, ["temperature=0.5,0.6", "structure_index=range(0,3)", "simulation_dataset.name=x"])
    assert [(t, k) for t, k, _ in shards] == [(t, k) for t in (0.5, 0.6) for k in range(3)]
    assert shards[0][2] == ["positions", "types", "inherent_positions", "particle_energies", "descriptors",
                            "times", "bond_breaking", "propensity", "trajectories"]
    assert sweep_shards(cfg, ["temperature=0.5,0.6", "seed=0,1"]) == []  # seeds would collide on one shard
    # no temperature and no index given: the GlassBench file's own (T = 0.23, structure 202)
    assert [(t, k) for t, k, _ in sweep_shards(gb_cfg, ["md.platform=CPU"])] == [(0.23, 202)]

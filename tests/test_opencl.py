"""The GPU code path on OpenMM's OpenCL platform: forces and energies against the numpy reference, stacked layers
and structures that do not interact, trajectories against Reference, mixed-precision NVE drift, platform choice.

OpenMM's OpenCL platform compiles the same common kernels as CUDA (nonbonded tiles, Verlet integrator, mixed
precision), so on a machine without a GPU these tests run them through PoCL on the CPU: every commit tests the
code a GPU job runs. Without an OpenCL device the module is skipped with one line. Kept small (N <= 172,
<= 5000 steps): PoCL compiles the kernels once per Context kind (~2-8 s the first time, cached by PoCL in
~/.cache/pocl afterwards).
"""

from __future__ import annotations

import logging

import numpy as np
import openmm
import pytest

from tglassmlp.physics import energy_and_forces, inherent_structure
from tglassmlp.physics.md import isoconfigurational_runs, isoconfigurational_runs_many, maxwell_boltzmann_velocities
from tglassmlp.physics.openmm_system import (
    available_platforms,
    build_system,
    make_context,
    opencl_device,
    platform_problem,
    stacked_positions,
    unstack,
)

from test_openmm import N_TINY, lattice_configuration

INSTALL = "apt-get install pocl-opencl-icd ocl-icd-libopencl1"
if "OpenCL" not in available_platforms() or platform_problem("OpenCL", "mixed") is not None:
    reason = ("plugin not loaded" if "OpenCL" not in available_platforms()
              else platform_problem("OpenCL", "mixed"))
    pytest.skip(f"OpenCL tests skipped: no OpenCL device ({reason}); for a CPU one: {INSTALL}",
                allow_module_level=True)

# Mixed precision: single-precision forces from float32 coordinates, as the CPU platform (test_openmm's
# CPU_ENERGY_RTOL / CPU_FORCE_RTOL and their reasons; measured here on PoCL: ~3e-7 energy, ~2e-6 force).
MIXED_ENERGY_RTOL = 1e-5
MIXED_FORCE_RTOL = 1e-4
# Double precision: measured 1.2e-8 relative (energy and forces) on PoCL, not the ~1e-15 of the Reference
# platform: some part of OpenMM's OpenCL path for this CustomNonbondedForce is not carried in double (cause not
# pinned down; mixed gives 8e-8 / 5e-6). 1e-7 still tells a double-precision path from a mixed one (forces).
DOUBLE_RTOL = 1e-7
# OpenCL (mixed) against Reference (double), same velocity draws: single-precision forces perturb each step by
# ~1e-7 relative, the chaotic dynamics amplify it. Measured at N = 43: 2.5e-7 sigma at t = 0.1, 9e-7 at
# t = 1.0 (1.6e-4 at t = 5). 1e-5 leaves room and still fails for any real defect: a layer feeling another,
# a wrong force or velocity moves positions by >= |F| t^2 / 2 or v t, i.e. >= 1e-2 sigma at t = 0.1.
TRAJECTORY_ATOL = 1e-5
TRAJECTORY_TIMES = [0.1, 1.0]
# NVE, N = 86, T = 0.4, 5000 steps of dt = 0.01: velocity Verlet's O(dt^2) fluctuation (test_md: max ~2-3e-3
# per particle) and, in mixed precision, a random walk from the single-precision forces (CPU platform:
# ~3e-4 per 1e4 steps). Same bounds as the CPU platform in test_md; measured here on PoCL: see the test.
ENERGY_FLUCTUATION_BOUND = 1e-2
DRIFT_BOUND = 2e-3
T_TEST = 0.4


def opencl_energy_forces(positions, types, box, precision="mixed", layout="onehot"):
    """(energy [eps], (L, N, 2) in-plane forces, raw (L*N, 3) forces) of stacked layers on OpenCL."""
    pos = np.asarray(positions)
    layers = pos.shape[0] if pos.ndim == 3 else 1
    ctx = make_context(build_system(types, box, n_replicas=None if np.ndim(types) == 2 else layers, layout=layout),
                       "OpenCL", precision=precision)
    ctx.setPositions(stacked_positions(pos, layers))
    state = ctx.getState(getEnergy=True, getForces=True)
    f3 = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    return state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole), unstack(f3, layers), f3


@pytest.mark.parametrize("precision, layout", [("mixed", "onehot"), ("mixed", "table"), ("double", "onehot")])
def test_energy_and_forces_match_numpy(precision, layout):
    """Three replicas of one configuration with particles across the box edges (periodic images given):
    each layer's forces are the numpy reference's, the energy three times its energy."""
    pos, types, box = lattice_configuration(seed=1)
    pos = pos - pos[0] + 1e-6
    pos = pos + box * np.random.default_rng(5).integers(-2, 3, pos.shape)
    e_ref, f_ref = energy_and_forces(pos, types, box)
    e, f, f3 = opencl_energy_forces(np.stack([pos] * 3), types, box, precision, layout)
    e_tol, f_tol = (DOUBLE_RTOL, DOUBLE_RTOL) if precision == "double" else (MIXED_ENERGY_RTOL, MIXED_FORCE_RTOL)
    assert abs(e / 3 - e_ref) <= e_tol * abs(e_ref)
    assert np.abs(f - f_ref).max() <= f_tol * np.abs(f_ref).max()
    assert np.all(f3[:, 2] == 0.0)  # in-plane: dz = 0 inside a layer


def test_stacked_layers_and_structures_do_not_interact():
    """Layers of two different structures (positions and types), order 0, 1, 1, 0, plus a layer of a third
    configuration: each layer feels exactly its own structure's numpy forces; the energy is the sum."""
    confs = [lattice_configuration(N_TINY, seed=30 + k) for k in range(3)]
    box = confs[0][2]
    order = [0, 1, 1, 0, 2]
    types = np.stack([confs[k][1] for k in order])
    positions = np.stack([confs[k][0] for k in order])
    e, f, f3 = opencl_energy_forces(positions, types, box)
    refs = [energy_and_forces(confs[k][0], confs[k][1], box) for k in order]
    e_ref = sum(r[0] for r in refs)
    f_ref = np.stack([r[1] for r in refs])
    assert abs(e - e_ref) <= MIXED_ENERGY_RTOL * abs(e_ref)
    assert np.abs(f - f_ref).max() <= MIXED_FORCE_RTOL * np.abs(f_ref).max()
    assert np.all(f3[:, 2] == 0.0)


@pytest.fixture(scope="module")
def tiny_structures():
    out = []
    for k in range(2):
        pos, types, box = lattice_configuration(N_TINY, seed=20 + k)
        out.append((inherent_structure(pos, types, box, max_force=1e-4), types))
    return out, box


def test_trajectories_match_reference(tiny_structures):
    """Two structures x 2 runs stacked in ONE OpenCL Context (the GPU layout) against each structure alone on
    Reference: equal within TRAJECTORY_ATOL (reasons there) at t = 0.1 and 1."""
    structures, box = tiny_structures
    seeds = [3, 4]
    kw = dict(times=TRAJECTORY_TIMES, n_runs=2, progress=False)
    many = isoconfigurational_runs_many(structures, box, T_TEST, seeds=seeds, platform="OpenCL",
                                        structures_per_context=2, replicas_per_context=2, **kw)
    for (pos, types), seed, runs in zip(structures, seeds, many):
        ref = isoconfigurational_runs(pos, types, box, T_TEST, seed=seed, platform="Reference", **kw)
        assert np.abs(runs - ref).max() <= TRAJECTORY_ATOL
        assert np.abs(runs - pos).max() > 0.01  # they did move


def test_mixed_precision_nve_drift_bounded():
    """5000 steps of NVE at T = 0.4 in mixed precision: bounded fluctuation, no secular drift (bounds above)."""
    pos, types, box = lattice_configuration(seed=3)
    pos = inherent_structure(pos, types, box, max_force=1e-4)
    # a thermal start: NVE from a velocity draw at 2T (equipartition halves the kinetic temperature)
    pos = isoconfigurational_runs(pos, types, box, 2 * T_TEST, [20.0], 1, 0, platform="CPU", progress=False)[0, -1]
    n = len(pos)
    ctx = make_context(build_system(types, box), "OpenCL", precision="mixed", dt=0.01)
    ctx.setPositions(stacked_positions(pos))
    v = np.zeros((n, 3))
    v[:, :2] = maxwell_boltzmann_velocities(n, T_TEST, np.random.default_rng(3))
    ctx.setVelocities(v)
    energies = []
    for _ in range(51):
        st = ctx.getState(getEnergy=True)
        energies.append((st.getPotentialEnergy() + st.getKineticEnergy()).value_in_unit(
            openmm.unit.kilojoule_per_mole) / n)
        ctx.getIntegrator().step(100)
    e = np.array(energies)
    assert np.abs(e - e[0]).max() < ENERGY_FLUCTUATION_BOUND
    assert abs(e[25:].mean() - e[:25].mean()) < DRIFT_BOUND


def test_platform_choice(monkeypatch, caplog, tiny_structures):
    """md.platform=OpenCL runs on OpenCL; auto passes over an OpenCL device that is the CPU (PoCL) and takes
    the CPU platform, saying why; auto takes OpenCL when its device is a GPU and CUDA is absent."""
    import tglassmlp.physics.openmm_system as oms

    structures, box = tiny_structures
    pos, types = structures[0]
    with caplog.at_level(logging.INFO, logger="tglassmlp.physics.md"):
        isoconfigurational_runs(pos, types, box, T_TEST, [0.01], 1, 0, config={"platform": "OpenCL"},
                                progress=False)
    assert "on OpenMM OpenCL (precision mixed)" in caplog.text
    device = opencl_device("mixed")
    monkeypatch.setattr(oms, "_LOGGED_CHOICES", set())
    monkeypatch.setattr(oms, "available_platforms", lambda: ["Reference", "CPU", "OpenCL"])
    with caplog.at_level(logging.INFO, logger="tglassmlp.physics.openmm_system"):
        chosen = oms.resolve_platform("auto", "mixed").getName()
    if oms.opencl_runs_on_cpu(*device):
        assert chosen == "CPU"
        assert f"OpenCL: its device '{device[1]}' ({device[0]}) is the CPU" in caplog.text
    else:  # a GPU's OpenCL
        assert chosen == "OpenCL"
    assert oms.opencl_runs_on_cpu("Portable Computing Language", "pthread-haswell-AMD EPYC")
    assert not oms.opencl_runs_on_cpu("NVIDIA CUDA", "NVIDIA H200")
    monkeypatch.setattr(oms, "opencl_runs_on_cpu", lambda platform, name: False)  # as with a GPU's OpenCL
    assert oms.resolve_platform("auto", "mixed").getName() == "OpenCL"

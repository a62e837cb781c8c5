"""Isoconfigurational MD: velocity draw, velocity Verlet, 2D confinement, energy conservation, ballistic
limit, unwrapped output, reproducibility, several structures sharing Contexts, and input checks."""

from __future__ import annotations

import logging

import numpy as np
import openmm
import pytest

from tglassmlp.physics import ConfigurationError, energy_and_forces, inherent_structure
from tglassmlp.physics.md import (
    isoconfigurational_runs,
    isoconfigurational_runs_many,
    kinetic_temperature,
    maxwell_boltzmann_velocities,
)
from tglassmlp.physics.openmm_system import build_system, make_context, md_config, stacked_positions

from test_openmm import N_TINY, lattice_configuration

DT = 0.01
T_TEST = 0.4
# kinetic temperature and momentum of a drawn velocity set: exact up to double rounding
DRAW_RTOL = 1e-12
DRAW_MOMENTUM_ATOL = 1e-12
# Velocity Verlet's first step from (x0, v0) is x0 + v0 dt + F0 dt^2 / 2; on Reference (double) exact
# up to rounding of O(L) numbers; on CPU the forces are single precision: |F| ~ 1e2 * 1e-7 * dt^2 / 2.
FIRST_STEP_ATOL = {"Reference": 1e-12, "CPU": 1e-7}
# Short-time MSD per particle: <|v t + F t^2/2 - H v t^3/6|^2> = <v^2> t^2 [1 + |F|^2 t^2 / (4 <v^2>)
# - <v.H.v> t^2 / (3 <v^2>)] + odd terms in v that average to zero. Here |F|_rms ~ 20 eps/sigma per particle,
# so the corrections are ~1% at t = 0.01; the odd (v . F) t^3 term leaves a sampling spread of 0.4% (t = 0.01)
# and 0.9% (t = 0.02) with 20 runs x 86 particles. Measured over 10 seeds: +1.2 +- 0.4% and 0.0 +- 0.9%
# (and -8% at t = 0.05, where collisions begin).
BALLISTIC_RTOL = 0.04
# NVE energy, N = 86 at T = 0.4, 10^4 steps of dt = 0.01 (t = 100). Velocity Verlet conserves a shadow
# Hamiltonian H + O(dt^2), so the total energy E fluctuates with an O(dt^2) amplitude (measured: max
# |E - E0| / N ~ 2-3e-3, rms 7e-4 per particle at this tiny N) but has no secular drift in double precision;
# the mean of the second half minus the first half measured 4e-5 (Reference) and 2e-4 (CPU) per particle. Bounds:
ENERGY_FLUCTUATION_BOUND = 1e-2  # max |E(t) - E(0)| / N  [epsilon], both platforms
DRIFT_BOUND = {"Reference": 1e-3,  # double precision: no secular drift, only O(dt^2) noise
               "CPU": 2e-3}  # single-precision forces add a random walk (measured ~3e-4 per 1e4 steps)
# Halving dt must shrink the rms energy fluctuation by ~4 (O(dt^2)); measured 3.6-4.6 over 6 velocity draws.
DT2_RATIO_RANGE = (2.5, 7.0)
# Same runs stacked or not: at most a different summation order, so trajectories agree to rounding at short
# times (chaos amplifies rounding ~e^{lambda t}; t = 0.5 is far from that). Measured: bit-identical on Reference.
GROUPING_ATOL = 1e-9
# Several structures in one Context on the CPU platform (1 thread): its neighbour list spans all layers, so a
# particle's single-precision force terms are summed in another order than with its structure alone (~1e-7
# relative, test_openmm). Measured max position difference 2.5e-8 after 10 steps (t = 0.1), 3.7e-7 at t = 0.5,
# growing chaotically beyond. A real defect (a layer feeling another, a wrong velocity draw) moves positions by
# ~|F| t^2 / 2 or ~v t, i.e. >= 1e-2 at t = 0.1. On Reference the runs are bit-identical (asserted).
MANY_CPU_ATOL = 1e-6


@pytest.fixture(scope="module")
def thermal():
    """(positions, types, box) of N = 86 at T ~ 0.4: minimised lattice, then NVE after a draw at 2T
    (equipartition halves the kinetic temperature of a start from a minimum)."""
    pos, types, box = lattice_configuration(seed=3)
    pos = inherent_structure(pos, types, box, max_force=1e-4)
    out = isoconfigurational_runs(pos, types, box, 2 * T_TEST, [20.0], 1, 0, platform="CPU", progress=False)
    return out[0, -1], types, box


# ----------------------------------------------------------------------------------------- velocities
def test_maxwell_boltzmann_velocities():
    rng = np.random.default_rng(0)
    for n, mass in [(2, 1.0), (86, 1.0), (5000, 1.0), (300, np.linspace(0.5, 2.0, 300))]:
        v = maxwell_boltzmann_velocities(n, 0.37, rng, mass)
        assert v.shape == (n, 2) and v.dtype == np.float64
        assert kinetic_temperature(v, mass) == pytest.approx(0.37, rel=DRAW_RTOL)
        momentum = (np.broadcast_to(mass, (n,))[:, None] * v).sum(axis=0)
        assert np.abs(momentum).max() < DRAW_MOMENTUM_ATOL
    # Gaussian in each component with variance T / m (n = 5000: sampling error of the moments ~2-5%)
    v = maxwell_boltzmann_velocities(5000, 2.0, np.random.default_rng(1))
    assert v.std(axis=0) == pytest.approx(np.sqrt(2.0), rel=0.01)
    kurtosis = (v**4).mean(axis=0) / (v**2).mean(axis=0) ** 2
    assert kurtosis == pytest.approx(3.0, abs=0.25)
    # reproducible from the generator state
    assert np.array_equal(maxwell_boltzmann_velocities(10, 1.0, np.random.default_rng(4)),
                          maxwell_boltzmann_velocities(10, 1.0, np.random.default_rng(4)))


@pytest.mark.parametrize("n, temperature, mass", [(1, 1.0, 1.0), (10, 0.0, 1.0), (10, -1.0, 1.0),
                                                  (10, float("nan"), 1.0), (10, 1.0, 0.0)])
def test_maxwell_boltzmann_rejects(n, temperature, mass):
    with pytest.raises(ValueError):
        maxwell_boltzmann_velocities(n, temperature, np.random.default_rng(0), mass)


# ----------------------------------------------------------------------------------------- dynamics
@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_first_step_is_velocity_verlet(thermal, platform):
    """Run r starts from the r-th draw of default_rng(seed); its first step is exactly velocity Verlet."""
    pos, types, box = thermal
    out = isoconfigurational_runs(pos, types, box, T_TEST, [0.0, DT], 2, 11, platform=platform, progress=False)
    assert out.shape == (2, 2, len(pos), 2) and out.dtype == np.float64
    assert np.array_equal(out[:, 0], np.broadcast_to(pos, out[:, 0].shape))  # t = 0: the input itself
    rng = np.random.default_rng(11)
    v = [maxwell_boltzmann_velocities(len(pos), T_TEST, rng) for _ in range(2)]
    f0 = energy_and_forces(pos, types, box)[1]
    for r in range(2):
        expected = pos + v[r] * DT + 0.5 * f0 * DT**2
        assert np.abs(out[r, 1] - expected).max() < FIRST_STEP_ATOL[platform]


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_reported_kinetic_energy_is_at_full_steps(thermal, platform):
    """With leapfrog velocities v(-dt/2) = v0 - F0 dt / 2m (what md.py sets), OpenMM's kinetic energy is
    velocity Verlet's at t = 0, sum m v0^2 / 2: the energy watchdog compares the right energies."""
    pos, types, box = thermal
    v0 = maxwell_boltzmann_velocities(len(pos), T_TEST, np.random.default_rng(0))
    f0 = energy_and_forces(pos, types, box)[1]
    context = make_context(build_system(types, box), platform, threads=1)
    context.setPositions(stacked_positions(pos))
    v = np.zeros((len(pos), 3))
    v[:, :2] = v0 - 0.5 * DT * f0
    context.setVelocities(v)
    ke = context.getState(getEnergy=True).getKineticEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert ke == pytest.approx(0.5 * (v0**2).sum(), rel=1e-12 if platform == "Reference" else 1e-6)


def test_ballistic_msd(thermal):
    """For t << 1 (collision time ~0.1) particles fly free: MSD(t) = <v^2> t^2 = 2 T t^2 (N - 1) / N."""
    pos, types, box = thermal
    times = np.array([0.01, 0.02])
    out = isoconfigurational_runs(pos, types, box, T_TEST, times, 20, 2, platform="CPU", progress=False)
    msd = ((out - pos) ** 2).sum(-1).mean(axis=(0, 2))
    n = len(pos)
    np.testing.assert_allclose(msd, 2 * T_TEST * times**2 * (n - 1) / n, rtol=BALLISTIC_RTOL)


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_z_stays_exactly_in_plane(thermal, platform):
    """Stacked layers after MD: every z is bit-for-bit its layer's height, every z velocity exactly 0."""
    pos, types, box = thermal
    r = 3
    context = make_context(build_system(types, box, n_replicas=r), platform, threads=1)
    start = stacked_positions(pos, r)
    context.setPositions(start)
    v = np.zeros((r * len(pos), 3))
    v[:, :2] = np.concatenate([maxwell_boltzmann_velocities(len(pos), T_TEST, np.random.default_rng(k))
                               for k in range(r)])
    context.setVelocities(v)
    context.getIntegrator().step(300 if platform == "Reference" else 2000)
    state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=False)
    x = state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer)
    assert np.array_equal(x[:, 2], start[:, 2])
    assert np.all(state.getVelocities(asNumpy=True)._value[:, 2] == 0.0)
    assert np.abs(x[:, :2] - start[:, :2]).max() > 0.1  # it did move in the plane


def _energy_trace(positions, types, box, platform, dt, n_samples, t_total):
    """Total energy per particle every t_total / n_samples, from velocities drawn at T_TEST."""
    n = len(positions)
    context = make_context(build_system(types, box), platform, threads=1, dt=dt)
    context.setPositions(stacked_positions(positions))
    v = np.zeros((n, 3))
    v[:, :2] = maxwell_boltzmann_velocities(n, T_TEST, np.random.default_rng(3))
    context.setVelocities(v)
    every = int(round(t_total / n_samples / dt))
    energies = []
    for _ in range(n_samples + 1):
        state = context.getState(getEnergy=True)
        energies.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(
            openmm.unit.kilojoule_per_mole))
        context.getIntegrator().step(every)
    return np.array(energies) / n


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_nve_energy_conservation(thermal, platform):
    """10^4 steps of dt = 0.01 at T = 0.4, N = 86: bounded O(dt^2) fluctuation and no secular drift
    (bounds and their reasons at ENERGY_FLUCTUATION_BOUND / DRIFT_BOUND above)."""
    pos, types, box = thermal
    e = _energy_trace(pos, types, box, platform, DT, n_samples=100, t_total=10_000 * DT)
    assert np.abs(e - e[0]).max() < ENERGY_FLUCTUATION_BOUND
    half = len(e) // 2
    assert abs(e[half:].mean() - e[:half].mean()) < DRIFT_BOUND[platform]


def test_energy_fluctuation_scales_as_dt_squared(thermal):
    """The signature of a symplectic second-order integrator: halving dt divides the rms energy
    fluctuation by ~4 (CPU platform for speed; its single-precision noise is far below 1e-4)."""
    pos, types, box = thermal
    rms = [_energy_trace(pos, types, box, "CPU", dt, n_samples=100, t_total=50.0).std() for dt in (DT, DT / 2)]
    assert DT2_RATIO_RANGE[0] < rms[0] / rms[1] < DT2_RATIO_RANGE[1]


def test_unwrapped_positions_are_continuous(thermal):
    """Particles that cross the box edge keep continuous trajectories (positions are not wrapped)."""
    pos, types, box = thermal
    pos = np.mod(pos - pos[0] + 1e-3, box)  # particle 0 at the corner, everything wrapped into the box
    times = np.arange(0, 101) * 0.05
    out = isoconfigurational_runs(pos, types, box, 2 * T_TEST, times, 2, 5, platform="CPU", progress=False)
    step = np.linalg.norm(np.diff(out, axis=1), axis=-1)
    assert step.max() < 0.5  # no jump by a box length between frames 0.05 apart
    outside = (out[:, -1] < 0) | (out[:, -1] >= box)
    assert outside.any()  # some particle did cross an edge and was left unwrapped


def test_unwrapped_input_images(thermal):
    """Giving some particles as other periodic images shifts their trajectories by those images only."""
    pos, types, box = thermal
    shift = box * np.random.default_rng(0).integers(-1, 2, pos.shape)
    a = isoconfigurational_runs(pos, types, box, T_TEST, [0.5], 2, 9, platform="Reference", progress=False)
    b = isoconfigurational_runs(pos + shift, types, box, T_TEST, [0.5], 2, 9, platform="Reference", progress=False)
    np.testing.assert_allclose(b - shift, a, atol=GROUPING_ATOL, rtol=0)


# ----------------------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_same_seed_same_result(thermal, platform):
    pos, types, box = thermal
    kw = dict(times=[0.0, 0.1, 0.3], n_runs=3, platform=platform, progress=False, replicas_per_context=2)
    a = isoconfigurational_runs(pos, types, box, T_TEST, seed=42, **kw)
    b = isoconfigurational_runs(pos, types, box, T_TEST, seed=42, **kw)
    c = isoconfigurational_runs(pos, types, box, T_TEST, seed=43, **kw)
    assert np.array_equal(a, b)
    assert not np.allclose(a[:, 1:], c[:, 1:])
    assert not np.allclose(a[0, 1:], a[1, 1:])  # runs differ from one another


def test_concurrent_contexts_equal_sequential(thermal):
    """Two 1-thread CPU Contexts stepped concurrently (Python threads) give bit-identical results to the
    same Contexts stepped one after the other: the threads share nothing."""
    pos, types, box = thermal
    kw = dict(times=[0.1, 0.2], n_runs=4, seed=8, platform="CPU", threads=1, replicas_per_context=2,
              progress=False)
    parallel = isoconfigurational_runs(pos, types, box, T_TEST, workers=2, **kw)
    sequential = isoconfigurational_runs(pos, types, box, T_TEST, workers=1, **kw)
    assert np.array_equal(parallel, sequential)


def test_grouping_into_contexts_does_not_change_runs(thermal):
    """One run per Context or four stacked as z-layers: the same trajectories (layers are independent)."""
    pos, types, box = thermal
    kw = dict(times=[0.25, 0.5], n_runs=4, seed=1, platform="Reference", progress=False)
    single = isoconfigurational_runs(pos, types, box, T_TEST, replicas_per_context=1, workers=1, **kw)
    stacked = isoconfigurational_runs(pos, types, box, T_TEST, replicas_per_context=4, **kw)
    np.testing.assert_allclose(stacked, single, atol=GROUPING_ATOL, rtol=0)


def test_progress_bar_and_config_defaults(thermal, capsys):
    pos, types, box = thermal
    out = isoconfigurational_runs(pos, types, box, T_TEST, [md_config().dt * 3], 1, 0, platform="CPU",
                                  progress=True)
    assert out.shape == (1, 1, len(pos), 2)
    assert "isoconfigurational MD" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- several structures
@pytest.fixture(scope="module")
def tiny_structures():
    """Three inherent structures of N = 43 with different positions AND types, and their common box."""
    out = []
    for k in range(3):
        pos, types, box = lattice_configuration(N_TINY, seed=20 + k)
        out.append((inherent_structure(pos, types, box, max_force=1e-4), types))
    assert not np.array_equal(out[0][1], out[1][1])
    return out, box


def test_many_structures_equal_one_by_one_reference(tiny_structures, caplog):
    """3 structures, <= 2 per Context, <= 2 runs per structure per Context: 2 x 2 Contexts of uneven blocks
    (structures 0-1 and 2, runs 0-1 and 2). On Reference every structure's runs are bit-identical to
    isoconfigurational_runs with that structure's seed: same velocity draws, layers that do not interact."""
    structures, box = tiny_structures
    seeds = [7, 8, 9]
    kw = dict(times=[0.0, 0.1, 0.5], n_runs=3, platform="Reference", replicas_per_context=2, workers=1,
              progress=False)
    with caplog.at_level(logging.INFO, logger="tglassmlp.physics.md"):
        many = isoconfigurational_runs_many(structures, box, T_TEST, seeds=seeds, structures_per_context=2, **kw)
    assert ("3 structure(s) x 3 run(s) x 50 steps, N = 43, on OpenMM Reference (precision double): 4 Context(s) "
            "of <= 2 structure(s) x <= 2 replica(s) = <= 4 z-layer(s) (172 particles)") in caplog.text
    assert isinstance(many, list) and len(many) == 3
    for (pos, types), seed, runs in zip(structures, seeds, many):
        assert runs.shape == (3, 3, N_TINY, 2)
        alone = isoconfigurational_runs(pos, types, box, T_TEST, seed=seed, **kw)
        assert np.array_equal(runs, alone)
    assert not np.allclose(many[0][:, 1:], many[1][:, 1:])


def test_many_structures_equal_one_by_one_cpu(tiny_structures):
    """The same on the CPU platform (one thread, two concurrent Contexts of both structures): equal within
    MANY_CPU_ATOL (summation order, see there); the velocity draws are the same, so t = 0.1 is far from chaos."""
    structures, box = tiny_structures
    structures, seeds = structures[:2], [3, 4]
    kw = dict(times=[0.1], n_runs=2, platform="CPU", threads=1, progress=False)
    many = isoconfigurational_runs_many(structures, box, T_TEST, seeds=seeds, structures_per_context=2, workers=2,
                                        **kw)
    for (pos, types), seed, runs in zip(structures, seeds, many):
        alone = isoconfigurational_runs(pos, types, box, T_TEST, seed=seed, workers=1, **kw)
        np.testing.assert_allclose(runs, alone, atol=MANY_CPU_ATOL, rtol=0)


@pytest.mark.parametrize(
    "n_structures, per_context, replicas, workers, n_runs, expected",
    [
        # (Contexts, most structures in one, most replicas in one)
        (3, 1, 20, 1, 4, (3, 1, 4)),  # the CPU default: one structure per Context
        (3, 3, 20, 1, 4, (1, 3, 4)),  # all 12 runs in one Context (the GPU layout)
        (4, 2, 3, 1, 4, (4, 2, 2)),  # 4 runs split into 2 + 2 by replicas_per_context = 3
        (2, 2, 20, 2, 4, (2, 2, 2)),  # one block of structures, split by runs so that both workers have one
        (2, 2, 20, 4, 1, (1, 2, 1)),  # ... but never into empty Contexts
    ],
)
def test_context_layout(tiny_structures, caplog, n_structures, per_context, replicas, workers, n_runs, expected):
    """How structures x runs are packed into Contexts, as the log line says (one step on Reference)."""
    structures, box = tiny_structures
    structures = [structures[k % 3] for k in range(n_structures)]
    with caplog.at_level(logging.INFO, logger="tglassmlp.physics.md"):
        out = isoconfigurational_runs_many(structures, box, T_TEST, [DT], n_runs, list(range(n_structures)),
                                           platform="Reference", structures_per_context=per_context,
                                           replicas_per_context=replicas, workers=workers, progress=False)
    contexts, most_structures, most_replicas = expected
    assert (f"{contexts} Context(s) of <= {most_structures} structure(s) x <= {most_replicas} replica(s) = "
            f"<= {most_structures * most_replicas} z-layer(s)") in caplog.text
    assert len(out) == n_structures and all(o.shape == (n_runs, 1, N_TINY, 2) for o in out)
    assert all(np.all(np.abs(o - s[0]).max(axis=(1, 2, 3)) > 0) for o, s in zip(out, structures))  # all moved


def test_many_structures_config_default(tiny_structures):
    """structures_per_context comes from conf/md (default 1: no gain on CPUs) and can be overridden there."""
    assert md_config().structures_per_context == 1
    structures, box = tiny_structures
    with pytest.raises(ValueError, match="structures_per_context must be an integer >= 1, got 0"):
        isoconfigurational_runs_many(structures, box, T_TEST, [DT], 1, [0, 1, 2], platform="Reference",
                                     progress=False, config={"structures_per_context": 0})


def _replace_structure(k, positions=None, types=None):
    def change(args):
        pos, typ = args["structures"][k]
        args["structures"][k] = (pos if positions is None else positions(pos), typ if types is None else types(typ))
    return change


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(structures=[]), ValueError, "non-empty sequence"),
        (dict(seeds=[1]), ValueError, r"one seed per structure \(2\), got 1 seed"),
        (dict(seeds=5), ValueError, r"one seed per structure \(2\), got 5"),
        (dict(structures_per_context=0), ValueError, "structures_per_context"),
        (_replace_structure(1, positions=lambda p: p[:-1], types=lambda t: t[:-1]), ValueError,
         r"same N .*structures\[0\] has N = 43 and structures\[1\] has N = 42"),
        (_replace_structure(1, types=lambda t: t[:-1]), ConfigurationError, r"structures\[1\]: types must have shape"),
        (_replace_structure(1, positions=lambda p: np.vstack([p[:1], p[:1] + 0.1, p[2:]])), ConfigurationError,
         r"^isoconfigurational_runs_many: structures\[1\].*overlapping"),
        (_replace_structure(0, types=lambda t: np.where(t == 2, 3, t)), ConfigurationError,
         r"structures\[0\]: unknown particle types \[3\]"),
    ],
)
def test_many_structures_bad_input(tiny_structures, change, error, match):
    structures, box = tiny_structures
    args = dict(structures=list(structures[:2]), box=box, temperature=T_TEST, times=[DT], n_runs=1, seeds=[0, 1],
                platform="Reference", progress=False)
    if callable(change):
        change(args)
    else:
        args.update(change)
    with pytest.raises(error, match=match):
        isoconfigurational_runs_many(**args)


def test_many_structures_pair_and_box_errors(tiny_structures):
    structures, box = tiny_structures
    with pytest.raises(ValueError, match=r"structures\[1\]: expected a \(positions, types\) pair"):
        isoconfigurational_runs_many([structures[0], structures[1][0]], box, T_TEST, [DT], 1, [0, 1],
                                     platform="Reference", progress=False)
    with pytest.raises(ConfigurationError, match=r"structures\[0\].*box"):
        isoconfigurational_runs_many(structures[:2], 4.0, T_TEST, [DT], 1, [0, 1], platform="Reference",
                                     progress=False)


def test_many_structures_explosion_names_structure_and_run(tiny_structures):
    """An exploding Context of two structures: the error names the structures and runs of its layers."""
    structures, box = tiny_structures
    with pytest.raises(RuntimeError, match=r"^isoconfigurational_runs_many: MD exploded (at|between) t = .* in "
                                           r"structures 0-1 x runs 0-1 \(culprit run\(s\) \['structure [01] run [01]'"):
        isoconfigurational_runs_many(structures[:2], box, 1e5, [1.0], 2, [0, 1], platform="CPU", progress=False,
                                     check_every=10, structures_per_context=2, workers=1)


# ----------------------------------------------------------------------------------------- bad input
def _set(index, value, key="positions"):
    """A change of the inputs that overwrites one entry of the positions (or types)."""
    def change(args):
        args[key][index] = value(args) if callable(value) else value
    return change


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(times=[-0.01, 0.1]), ValueError, "times"),
        (dict(times=[0.2, 0.1]), ValueError, "times"),
        (dict(times=[0.015]), ValueError, "times"),
        (dict(times=[]), ValueError, "times"),
        (dict(times=[0.1, float("nan")]), ValueError, "times"),
        (dict(times=[[0.1]]), ValueError, "times"),
        (dict(n_runs=0), ValueError, "n_runs"),
        (dict(n_runs=1.5), ValueError, "n_runs"),
        (dict(temperature=0.0), ValueError, "temperature"),
        (dict(temperature=-0.4), ValueError, "temperature"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(dt=0.0), ValueError, "dt"),
        (dict(platform="Metal"), ValueError, "available"),
        (dict(replicas_per_context=0), ValueError, "replicas_per_context"),
        (dict(workers=0), ValueError, "workers"),
        (dict(box=4.0), ConfigurationError, "box"),
        (dict(positions=np.zeros((86, 3))), ConfigurationError, r"\(N, 2\)"),
        (_set(1, lambda a: a["positions"][0] + 0.1), ConfigurationError, "overlapping"),
        (_set((3, 1), np.nan), ConfigurationError, "not finite"),
        (_set(0, 3, key="types"), ConfigurationError, "unknown particle types"),
    ],
)
def test_bad_input(thermal, change, error, match):
    pos, types, box = thermal
    args = dict(positions=pos.copy(), types=types.copy(), box=box, temperature=T_TEST, times=[0.1], n_runs=1,
                seed=0, platform="Reference", progress=False)
    if callable(change):
        change(args)
    else:
        args.update(change)
    with pytest.raises(error, match=match):
        isoconfigurational_runs(**args)


@pytest.mark.parametrize("workers", [1, 2])
def test_exploding_run_is_reported(thermal, workers):
    """Absurd temperature: particles overlap within a few steps; the error names the time and the runs
    (with 2 workers both Contexts explode; whichever fails first is reported, the other stops)."""
    pos, types, box = thermal
    with pytest.raises(RuntimeError, match=r"exploded (at|between) t = .* in runs (0-1|2-3) \(culprit run\(s\) \["):
        isoconfigurational_runs(pos, types, box, 1e5, [1.0], 4, 0, platform="CPU", progress=False,
                                check_every=10, replicas_per_context=2, workers=workers)


def test_energy_drift_check_names_time_and_run(thermal):
    """The energy watchdog (any drift above max_energy_drift per particle) reports the first check."""
    pos, types, box = thermal
    with pytest.raises(RuntimeError, match=r"exploded at t = 0\.05 \(step 5\) in run 0 .*allowed drift 1e-12"):
        isoconfigurational_runs(pos, types, box, T_TEST, [0.2], 2, 0, platform="Reference", progress=False,
                                check_every=5, max_energy_drift=1e-12, replicas_per_context=1, workers=1)

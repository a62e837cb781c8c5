"""The OpenMM system against the numpy reference potential: energies, forces, per-pair cutoffs, periodic
boundaries, stacked replicas (of one structure or of several, with per-layer types), both pair-parameter
layouts, Reference and CPU platforms, platform choice."""

from __future__ import annotations

import numpy as np
import openmm
import pytest

from tglassmlp.physics import energy_and_forces, load_system
from tglassmlp.physics.openmm_system import (
    LAYOUTS,
    available_platforms,
    build_system,
    layer_box_height,
    make_context,
    md_config,
    resolve_platform,
    stacked_positions,
    temperature_kelvin,
    unstack,
)

# Reference platform: double precision throughout, sums of O(100) pair terms -> ~1e-15 relative.
REFERENCE_RTOL = 1e-10
# CPU platform: forces in single precision from float32 coordinates (relative rounding 6e-8 of
# coordinates up to L ~ 10 sigma), multiplied by the stiffness of close pairs. Energies then agree to
# ~5e-7 relative, force components to ~6e-6 of the largest |F| (measured): 1e-5 / 1e-4 leave room.
CPU_ENERGY_RTOL = 1e-5
CPU_FORCE_RTOL = 1e-4
PLATFORMS = ["Reference", "CPU"]
N_SMALL = 86  # 1290 / 15: keeps the composition 600:330:360 exactly; box 8.49 sigma
N_TINY = 43  # 1290 / 30: the smallest N with that composition; box 6.01 sigma > 2 x the largest cutoff 2.5


def lattice_configuration(n: int = N_SMALL, seed: int = 0, jitter: float = 0.05):
    """(positions, types, box): n particles on random sites of a square grid at the reference density,
    jittered, types in the reference composition, shuffled. No pair closer than ~0.75 sigma."""
    pot = load_system()
    box = pot.box_for(n)
    rng = np.random.default_rng(seed)
    m = int(np.ceil(np.sqrt(n)))
    grid = (np.stack(np.meshgrid(np.arange(m), np.arange(m), indexing="ij"), -1).reshape(-1, 2) + 0.5) * box / m
    pos = grid[rng.choice(m * m, n, replace=False)] + rng.uniform(-jitter, jitter, (n, 2))
    types = np.repeat(np.arange(3), pot.composition_for(n))
    rng.shuffle(types)
    return pos, types, box


def openmm_energy_forces(positions, types, box, platform, *, layout="onehot", n_replicas=1):
    """Potential energy [eps] and (R, N, 2) in-plane forces, plus the raw (R*N, 3) forces."""
    pos = np.asarray(positions)
    r = pos.shape[0] if pos.ndim == 3 else n_replicas
    context = make_context(build_system(types, box, n_replicas=r, layout=layout), platform, threads=1)
    context.setPositions(stacked_positions(pos, r))
    state = context.getState(getEnergy=True, getForces=True)
    f3 = state.getForces(asNumpy=True).value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer)
    return state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole), unstack(f3, r), f3


def assert_match(e_omm, f_omm, e_ref, f_ref, platform):
    e_tol, f_tol = (REFERENCE_RTOL, REFERENCE_RTOL) if platform == "Reference" else (CPU_ENERGY_RTOL, CPU_FORCE_RTOL)
    assert abs(e_omm - e_ref) <= e_tol * abs(e_ref)
    assert np.abs(f_omm - f_ref).max() <= f_tol * np.abs(f_ref).max()


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_replicas", [1, 3])
def test_energy_and_forces_match_numpy(platform, layout, n_replicas):
    """Every replica of the stacked system feels exactly the numpy forces of the 2D configuration,
    with particles pushed onto the box edges and some given as other periodic images (unwrapped)."""
    pos, types, box = lattice_configuration(seed=1)
    pos = pos - pos[0] + 1e-6  # particle 0 at the corner: its neighbours sit across both edges
    rng = np.random.default_rng(5)
    pos = pos + box * rng.integers(-2, 3, pos.shape)  # arbitrary periodic images
    e_ref, f_ref = energy_and_forces(pos, types, box)
    e, f, f3 = openmm_energy_forces(pos, types, box, platform, layout=layout, n_replicas=n_replicas)
    assert_match(e / n_replicas, f, e_ref, f_ref, platform)
    assert np.all(f3[:, 2] == 0.0)  # no force out of the plane: dz = 0 within a layer


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("n_replicas", [2, 3])
def test_stacked_layers_do_not_interact(platform, n_replicas):
    """Different configurations in the layers: each layer's forces are its own numpy forces, and the
    energy is the sum (the first and last layer are also 'spacing' apart across the periodic z edge)."""
    confs = [lattice_configuration(seed=10 + k) for k in range(n_replicas)]
    types, box = confs[0][1], confs[0][2]
    # same types in every layer (the System is built from one type list), different positions
    positions = np.stack([c[0] for c in confs])
    e, f, _ = openmm_energy_forces(positions, types, box, platform)
    refs = [energy_and_forces(p, types, box) for p in positions]
    assert_match(e, f, sum(r[0] for r in refs), np.stack([r[1] for r in refs]), platform)


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layers_of_different_structures(platform, layout):
    """Per-layer types (L, N): layers holding two different structures (positions and types differ), in the
    order 0, 1, 1, 0. Each layer feels exactly its own structure's numpy forces, the energy is the sum, and
    on Reference the forces are bit-identical to those of each structure in a System of its own."""
    confs = [lattice_configuration(N_TINY, seed=30 + k) for k in range(2)]
    box = confs[0][2]
    assert not np.array_equal(confs[0][1], confs[1][1])  # the layers really differ in their types
    order = [0, 1, 1, 0]
    types = np.stack([confs[k][1] for k in order])
    positions = np.stack([confs[k][0] for k in order])
    e, f, f3 = openmm_energy_forces(positions, types, box, platform, layout=layout)
    refs = [energy_and_forces(confs[k][0], confs[k][1], box) for k in order]
    assert_match(e, f, sum(r[0] for r in refs), np.stack([r[1] for r in refs]), platform)
    assert np.all(f3[:, 2] == 0.0)
    if platform == "Reference":
        alone = [openmm_energy_forces(p, t, box, platform, layout=layout)[1][0] for p, t, _ in confs]
        assert np.array_equal(f, np.stack([alone[k] for k in order]))


def test_shared_and_per_layer_types_build_the_same_system():
    """(N,) types with n_replicas = L and the same types written out per layer, (L, N): identical particles,
    parameters and box; n_replicas defaults to L for per-layer types."""
    types = lattice_configuration(N_TINY)[1]
    for layout in LAYOUTS:
        shared = build_system(types, 8.0, n_replicas=3, layout=layout)
        per_layer = build_system(np.tile(types, (3, 1)), 8.0, layout=layout)
        assert per_layer.getNumParticles() == shared.getNumParticles() == 3 * N_TINY
        assert per_layer.getDefaultPeriodicBoxVectors() == shared.getDefaultPeriodicBoxVectors()
        fa, fb = shared.getForce(0), per_layer.getForce(0)
        assert all(fa.getParticleParameters(i) == fb.getParticleParameters(i) for i in range(3 * N_TINY))
    # particle l * N + i of a per-layer System has type types[l][i]: the table layout stores it directly
    two = np.stack([types, types[::-1]])
    system = build_system(two, 8.0, layout="table")  # keep it: getForce returns a view owned by the System
    force = system.getForce(0)
    assert [force.getParticleParameters(i)[0] for i in range(2 * N_TINY)] == two.ravel().astype(float).tolist()


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_per_pair_cutoff_and_pairs_across_edges(platform, layout):
    """Isolated pairs across the x edge, the y edge and the corner, each at a distance where only the
    per-pair cutoff (2.5 sigma_ab, not the global 2.5) decides whether they interact."""
    pot = load_system()
    box = 12.0
    # (type a, type b, r): pair 1-2 has cutoff 2.0, so r = 2.1 must give zero although < 2.5
    pairs = [(1, 2, 2.1), (1, 2, 1.95), (0, 2, 1.3), (0, 0, 2.45)]
    anchors = [(0.2, 3.0), (3.0, 0.2), (0.3, 0.3), (6.0, 0.1)]
    directions = [(1, 0), (0, 1), (np.sqrt(0.5), np.sqrt(0.5)), (0, 1)]
    pos, types, expected = [], [], 0.0
    for (a, b, r), anchor, u in zip(pairs, anchors, directions):
        p = np.array(anchor)
        pos += [p, (p - r * np.array(u)) % box]  # the partner is across the edge
        types += [a, b]
        expected += float(pot.pair_energy(np.array([r]), a, b)[0])
    pos, types = np.array(pos), np.array(types)
    e_ref, f_ref = energy_and_forces(pos, types, box)
    assert e_ref == pytest.approx(expected, rel=1e-12)
    e, f, _ = openmm_energy_forces(pos, types, box, platform, layout=layout)
    assert_match(e, f, e_ref, f_ref, platform)
    assert np.all(f[0, 0:2] == 0.0)  # the 1-2 pair beyond its own cutoff: exactly no force


def test_box_and_particles():
    pot = load_system()
    spacing = md_config().replica_spacing
    assert spacing > pot.max_cutoff
    for r in (1, 2, 5):
        s = build_system(np.zeros(10, int), 8.0, n_replicas=r)
        a, b, c = s.getDefaultPeriodicBoxVectors()
        assert a.value_in_unit(openmm.unit.nanometer) == openmm.Vec3(8.0, 0, 0)
        assert b.value_in_unit(openmm.unit.nanometer) == openmm.Vec3(0, 8.0, 0)
        assert c.value_in_unit(openmm.unit.nanometer) == openmm.Vec3(0, 0, layer_box_height(r, spacing))
        # OpenMM needs each box side >= 2 cutoffs; a single layer's own image is >= 2 spacings away
        assert layer_box_height(r, spacing) >= 2 * spacing > 2 * pot.max_cutoff
        assert s.getNumParticles() == 10 * r
        assert s.getParticleMass(0).value_in_unit(openmm.unit.dalton) == pot.mass
        assert not any(isinstance(f, openmm.CMMotionRemover) for f in s.getForces())
    z = stacked_positions(np.zeros((4, 2)), 3)[:, 2]
    assert np.array_equal(z, np.repeat(np.arange(3) * spacing, 4))


def test_units():
    """k_B T = T kJ/mol: T = 1 is 120.27 K; 1 amu nm^2 / ps^2 = 1 kJ/mol, so tau = 1 ps."""
    assert temperature_kelvin(1.0) == pytest.approx(120.272, rel=1e-5)
    # OpenMM treats the dalton as a molar mass, so it states the identity directly ...
    assert (1 * openmm.unit.dalton * openmm.unit.nanometer**2 / openmm.unit.picosecond**2).value_in_unit(
        openmm.unit.kilojoule_per_mole) == pytest.approx(1.0, rel=1e-12)
    # ... and per particle in SI: 1 amu = 1.66053906660e-27 kg (CODATA 2018), times N_A
    one_amu = 1.66053906660e-27 * openmm.unit.kilogram
    energy = one_amu * openmm.unit.nanometer**2 / openmm.unit.picosecond**2 * openmm.unit.AVOGADRO_CONSTANT_NA
    assert energy.value_in_unit(openmm.unit.kilojoule_per_mole) == pytest.approx(1.0, rel=1e-8)


def test_platforms():
    names = available_platforms()
    assert "Reference" in names and "CPU" in names
    # the first usable one, where an OpenCL device that is the CPU (PoCL) does not count: the CPU platform beats it
    from tglassmlp.physics.openmm_system import opencl_device, opencl_runs_on_cpu, platform_problem

    def usable(p):
        if p not in names or platform_problem(p, md_config().precision) is not None:
            return False
        return p != "OpenCL" or not opencl_runs_on_cpu(*opencl_device(md_config().precision))

    fastest = next(p for p in ("CUDA", "OpenCL", "CPU", "Reference") if usable(p))
    assert resolve_platform("auto").getName() == fastest
    assert resolve_platform("cpu").getName() == "CPU"
    with pytest.raises(ValueError, match="not available.*Reference"):
        resolve_platform("Metal")
    system = build_system(np.zeros(4, int), 8.0)
    with pytest.raises(ValueError, match="available: .*CPU"):
        make_context(system, "NoSuchPlatform")
    context = make_context(system, "CPU", threads=1)
    assert context.getPlatform().getPropertyValue(context, "Threads") == "1"
    assert context.getIntegrator().getStepSize().value_in_unit(openmm.unit.picosecond) == md_config().dt
    with pytest.raises(ValueError, match="threads"):
        make_context(system, "CPU", threads=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layout="dense"), "layout"),
        (dict(n_replicas=0), "n_replicas"),
        (dict(spacing=2.0), "spacing"),
        (dict(box=4.9), "box"),
        (dict(types=[0, 1, 3]), "types"),
        (dict(types=[0.5, 1.0]), "types"),
        (dict(types=[[0, 1, 2], [0, 1]]), r"same N .*layer lengths \[3, 2\]"),
        (dict(types=[[0, 1, 2], [0, 1, 2]], n_replicas=3), r"\(2, 3\) give 2 layer\(s\) but n_replicas = 3"),
        (dict(types=np.zeros((2, 2, 3), int)), r"\(L, N\).*\(2, 2, 3\)"),
        (dict(types=np.zeros((2, 1), int)), r"N >= 2, got shape \(2, 1\)"),
        (dict(types=np.zeros((0, 3), int)), r"got shape \(0, 3\)"),
        (dict(types=[[0, 1, 2], [0, 1, 5]]), r"0\.\.2, got \[0, 1, 2, 5\]"),
    ],
)
def test_build_system_rejects(kwargs, match):
    args = dict(types=[0, 1, 2], box=8.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        build_system(args.pop("types"), args.pop("box"), **args)

"""The 2D mixture as an OpenMM System: one CustomNonbondedForce, replicas stacked as z-layers.

Units (the only place where reduced LJ units meet OpenMM's): sigma_00 = 1 nm, epsilon_00 = 1 kJ/mol,
m = 1 amu. Then the time unit sqrt(m sigma^2 / epsilon) is exactly 1 ps (1 amu nm^2 / ps^2 = 1 kJ/mol),
k_B T = T kJ/mol, i.e. T_kelvin = T / R with R the molar gas constant in kJ/mol/K, and forces come out in
kJ/mol/nm = epsilon/sigma. Numbers therefore pass between the API and OpenMM unchanged; the constants
below only document (and, should the mapping ever change, centralise) the conversion.

2D in a 3D code: every particle of one replica sits in the plane z = (replica index) * spacing. Within a
layer all dz are exactly 0.0, so the z-component of every pair force is exactly 0.0 (dz * (dV/dr)/r), and a
particle with zero z-velocity never leaves its plane: no constraint or custom integrator is needed, and
``tglassmlp.physics.md`` tests that z stays bit-for-bit constant. Layers are ``spacing`` > cutoff apart,
also across the periodic z boundary (Lz = max(n_replicas, 2) * spacing), so replicas never interact.
A layer is any 2D configuration of the same N and box: the replicas of one structure (same types in every
layer) or of several structures (per-layer types), which is how one GPU Context is filled with enough
particles (one N = 1290 layer is far too small for a GPU).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import openmm
from omegaconf import DictConfig, OmegaConf

from tglassmlp.defaults import group_config
from tglassmlp.physics.system import N_TYPES, PairPotential, resolve_system

# ----------------------------------------------------------------------------------------- unit mapping
LENGTH_NM = 1.0  # one sigma in nm
ENERGY_KJ_PER_MOL = 1.0  # one epsilon in kJ/mol
MASS_AMU = 1.0  # one m in amu (dalton)
TIME_PS = float(np.sqrt(MASS_AMU * LENGTH_NM**2 / ENERGY_KJ_PER_MOL))  # one tau in ps (= 1)
VELOCITY_NM_PER_PS = LENGTH_NM / TIME_PS
FORCE_KJ_PER_MOL_NM = ENERGY_KJ_PER_MOL / LENGTH_NM
MOLAR_GAS_CONSTANT_KJ = openmm.unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
    openmm.unit.kilojoule_per_mole / openmm.unit.kelvin
)


def temperature_kelvin(temperature: float) -> float:
    """OpenMM temperature [K] of a reduced temperature T (k_B T = T epsilon = T kJ/mol)."""
    return float(temperature) * ENERGY_KJ_PER_MOL / MOLAR_GAS_CONSTANT_KJ


log = logging.getLogger(__name__)

LAYOUTS = ("onehot", "table")
PRECISIONS = ("single", "mixed", "double")
# platforms whose precision is set by the "Precision" property; CPU is always mixed, Reference double
PRECISION_PLATFORMS = ("CUDA", "OpenCL")
# fastest first: "auto" takes the first one OpenMM can load
PLATFORM_PREFERENCE = ("CUDA", "OpenCL", "CPU", "Reference")


# ----------------------------------------------------------------------------------------- config
@lru_cache(maxsize=4)
def _load_md_config(name: str) -> DictConfig:
    return group_config("md", name)


def md_config(cfg: DictConfig | dict | str | None = None) -> DictConfig:
    """The MD settings: ``conf/md/default.yaml`` (or ``conf/md/<name>.yaml``), with keys of ``cfg`` on top.

    A dict or DictConfig may hold a subset of the keys (e.g. Hydra's ``md`` node with overrides).
    """
    if cfg is None or isinstance(cfg, str):
        return _load_md_config(cfg or "default")
    return OmegaConf.merge(_load_md_config("default"), cfg)


# ----------------------------------------------------------------------------------------- the force
def _num(x: float) -> str:
    """A float as Lepton source at full double precision (parenthesised so a sign never binds wrongly)."""
    return f"({float(x)!r})"


def _energy_expression(pot: PairPotential, eps_expr: str, sig2_expr: str) -> str:
    """Lepton expression of V_ab(r) with the pair's epsilon and sigma^2 given as sub-expressions.

    Written in y = (r/s)^2 so that one division gives (s/r)^6 and the polynomial tail is Horner form.
    The factor (1 - step(y - rc^2)) is zero for r >= cutoff * sigma_ab, as in the numpy reference.
    """
    return (
        f"4*eps*(inv6*(inv6 - 1) + {_num(pot.c0)} + y*({_num(pot.c2)} + {_num(pot.c4)}*y))"
        f"*(1 - step(y - {_num(pot.cutoff**2)}));"
        "inv6 = 1/(y*y*y);"
        "y = r*r/sig2;"
        f"eps = {eps_expr};"
        f"sig2 = {sig2_expr}"
    )


def _onehot_force(pot: PairPotential, types: np.ndarray) -> openmm.CustomNonbondedForce:
    """Pair parameters as sums of products of per-particle numbers.

    Particle 1 carries the rows eps[t1, :] and sigma^2[t1, :] of the tables, particle 2 its one-hot type
    vector w(t2), so eps_12 = sum_b eps[t1, b] w_b(t2): 3 products per parameter instead of a table lookup.
    The expression is not symmetric in form, but its value is (the tables are symmetric), which is all
    OpenMM needs: each pair is evaluated once.
    """
    eps_expr = " + ".join(f"e{b}1*w{b}2" for b in range(N_TYPES))
    sig2_expr = " + ".join(f"s{b}1*w{b}2" for b in range(N_TYPES))
    force = openmm.CustomNonbondedForce(_energy_expression(pot, eps_expr, sig2_expr))
    names = [f"e{b}" for b in range(N_TYPES)] + [f"s{b}" for b in range(N_TYPES)] + [f"w{b}" for b in range(N_TYPES)]
    for name in names:
        force.addPerParticleParameter(name)
    sig2 = pot.sigma**2
    rows = [
        [*map(float, pot.epsilon[t] * ENERGY_KJ_PER_MOL), *map(float, sig2[t] * LENGTH_NM**2),
         *map(float, np.eye(N_TYPES)[t])]
        for t in range(N_TYPES)
    ]
    for t in types:
        force.addParticle(rows[t])
    return force


def _table_force(pot: PairPotential, types: np.ndarray) -> openmm.CustomNonbondedForce:
    """Pair parameters looked up in 3x3 Discrete2DFunction tables indexed by a per-particle type number."""
    force = openmm.CustomNonbondedForce(_energy_expression(pot, "eps_table(type1, type2)", "sig2_table(type1, type2)"))
    force.addPerParticleParameter("type")
    # Discrete2DFunction values run over the first index fastest; the tables are symmetric anyway
    force.addTabulatedFunction(
        "eps_table", openmm.Discrete2DFunction(N_TYPES, N_TYPES, (pot.epsilon * ENERGY_KJ_PER_MOL).T.ravel().tolist())
    )
    force.addTabulatedFunction(
        "sig2_table", openmm.Discrete2DFunction(N_TYPES, N_TYPES, ((pot.sigma * LENGTH_NM) ** 2).T.ravel().tolist())
    )
    for t in types:
        force.addParticle([float(t)])
    return force


def _check_types(types) -> np.ndarray:
    """``types`` as an int64 array of shape (N,) or (L, N) with N >= 2, L >= 1, values 0..N_TYPES-1."""
    try:
        arr = np.asarray(types)
    except ValueError:  # a ragged list of per-layer lists (numpy >= 1.24 refuses to build it)
        arr = None
    if arr is None or arr.dtype == object:
        lengths = [np.size(t) for t in types] if isinstance(types, (list, tuple)) else "?"
        raise ValueError("build_system: per-layer types must all have the same N (one box, layers of equal "
                         f"size), got layer lengths {lengths}")
    if arr.ndim not in (1, 2) or arr.shape[-1] < 2 or arr.size == 0:
        raise ValueError("build_system: types must be (N,) integers (every layer alike) or (L, N) (layer l gets "
                         f"types[l]) with N >= 2, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise ValueError(f"build_system: types must be integers 0..{N_TYPES - 1}, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= N_TYPES:
        raise ValueError(f"build_system: types must be in 0..{N_TYPES - 1}, got {sorted(set(arr.ravel().tolist()))}")
    return arr


def layer_box_height(n_replicas: int, spacing: float) -> float:
    """Periodic box height Lz [sigma] for ``n_replicas`` layers ``spacing`` apart.

    At least two spacings: OpenMM needs every box side >= 2 cutoffs, and with a single layer its own
    periodic image must still be further away than the cutoff.
    """
    return max(int(n_replicas), 2) * float(spacing)


def build_system(types, box, system=None, *, n_replicas: int | None = None, layout: str | None = None,
                 spacing: float | None = None) -> openmm.System:
    """OpenMM System of non-interacting 2D configurations stacked as z-layers of one periodic box.

    Args:
        types: (N,) integer types 0, 1, 2 shared by every layer (replicas of one structure), or (L, N):
            layer l gets types[l] (e.g. the replicas of several structures, each structure's types repeated
            for its replicas). All layers have the same N and the same box.
        box: square box side L [sigma]; must exceed twice the largest cutoff.
        system: the PairPotential (default ``conf/system/ka2d_ternary.yaml``), a config node or a name.
        n_replicas: number of layers (particle l * N + i is particle i of layer l). None: 1 for (N,)
            types, L for (L, N) types; with (L, N) types a value other than L is an error.
        layout: "onehot" or "table" (see the module docstring and the benchmark); None = ``conf/md``.
        spacing: z distance between layers [sigma], > the largest cutoff; None = ``conf/md``.

    Returns:
        An ``openmm.System`` with n_replicas * N particles of mass m, box vectors (L,0,0), (0,L,0),
        (0,0,Lz) and one CutoffPeriodic CustomNonbondedForce (cutoff = largest cutoff_ab, the per-pair
        cutoff inside the expression; no switching, no long-range correction). No CMMotionRemover: the
        runs are NVE and their initial momentum is zero by construction. Place particles with
        :func:`stacked_positions` (same layer order).
    """
    pot = resolve_system(system)
    cfg = md_config()
    layout = cfg.layout if layout is None else layout
    spacing = float(cfg.replica_spacing if spacing is None else spacing)
    types = _check_types(types)
    if layout not in LAYOUTS:
        raise ValueError(f"build_system: layout must be one of {LAYOUTS}, got {layout!r}")
    if n_replicas is None:
        n_replicas = 1 if types.ndim == 1 else types.shape[0]
    if isinstance(n_replicas, bool) or int(n_replicas) != n_replicas or n_replicas < 1:
        raise ValueError(f"build_system: n_replicas must be a positive integer, got {n_replicas!r}")
    n_replicas = int(n_replicas)
    if types.ndim == 2 and types.shape[0] != n_replicas:
        raise ValueError(f"build_system: types of shape {types.shape} give {types.shape[0]} layer(s) but "
                         f"n_replicas = {n_replicas} (leave n_replicas out with per-layer types)")
    box = float(box)
    rc = pot.max_cutoff
    if not np.isfinite(box) or box <= 2.0 * rc:
        raise ValueError(f"build_system: box side {box} must exceed twice the largest cutoff {rc}")
    if not spacing > rc:
        raise ValueError(f"build_system: replica spacing {spacing} must exceed the largest cutoff {rc} "
                         "(else layers interact)")

    omm = openmm.System()
    omm.setDefaultPeriodicBoxVectors(
        openmm.Vec3(box * LENGTH_NM, 0, 0), openmm.Vec3(0, box * LENGTH_NM, 0),
        openmm.Vec3(0, 0, layer_box_height(n_replicas, spacing) * LENGTH_NM),
    )
    # layer-major particle order, as stacked_positions and unstack lay them out
    all_types = np.tile(types, n_replicas) if types.ndim == 1 else types.ravel()
    for _ in range(all_types.size):
        omm.addParticle(pot.mass * MASS_AMU)
    force = _onehot_force(pot, all_types) if layout == "onehot" else _table_force(pot, all_types)
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    force.setCutoffDistance(rc * LENGTH_NM)
    force.setUseSwitchingFunction(False)
    force.setUseLongRangeCorrection(False)
    omm.addForce(force)
    return omm


def stacked_positions(positions, n_replicas: int = 1, spacing: float | None = None) -> np.ndarray:
    """OpenMM positions [nm] of replicas stacked as z-layers.

    Args:
        positions: (N, 2) positions shared by all replicas, or (n_replicas, N, 2) one set per replica [sigma].
        n_replicas: number of layers (ignored for a 3D input, whose first axis counts them).
        spacing: layer distance [sigma]; None = ``conf/md``.

    Returns:
        (n_replicas * N, 3) float64 array, z = replica index * spacing.
    """
    spacing = float(md_config().replica_spacing if spacing is None else spacing)
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim == 2:
        pos = np.broadcast_to(pos, (int(n_replicas), *pos.shape))
    if pos.ndim != 3 or pos.shape[2] != 2:
        raise ValueError(f"stacked_positions: positions must be (N, 2) or (R, N, 2), got {np.shape(positions)}")
    r, n, _ = pos.shape
    out = np.empty((r, n, 3))
    out[:, :, :2] = pos * LENGTH_NM
    out[:, :, 2] = (np.arange(r) * spacing * LENGTH_NM)[:, None]
    return out.reshape(r * n, 3)


def unstack(array3d, n_replicas: int) -> np.ndarray:
    """(n_replicas * N, 3) OpenMM positions/forces/velocities -> (n_replicas, N, 2) in-plane components."""
    a = np.asarray(array3d, dtype=np.float64)
    return a.reshape(n_replicas, -1, 3)[:, :, :2]


# ----------------------------------------------------------------------------------------- platforms
def available_platforms() -> list[str]:
    """Names of the OpenMM platforms that loaded on this machine."""
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


@lru_cache(maxsize=16)
def platform_problem(name: str, precision: str = "mixed") -> str | None:
    """Why a Context cannot be made on platform ``name`` at ``precision`` here, or None when it can.

    A platform's plugin can load on a machine without the device (the CUDA plugin next to a missing or busy
    GPU, an OpenCL runtime without a device): only making a Context tells. The probe is a two-particle
    System, cached per process.
    """
    try:
        plat = openmm.Platform.getPlatformByName(name)
        system = openmm.System()
        for _ in range(2):
            system.addParticle(1.0)
        props = {"Precision": precision} if name in PRECISION_PLATFORMS else {}
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), plat, props)
        del context
    except Exception as exc:  # noqa: BLE001 - OpenMMException or a driver error: the text is the answer
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


@lru_cache(maxsize=4)
def opencl_device(precision: str = "mixed") -> tuple[str, str] | None:
    """(OpenCL platform name, device name) that OpenMM's OpenCL platform picks here, or None if it cannot run."""
    if platform_problem("OpenCL", precision) is not None:
        return None
    plat = openmm.Platform.getPlatformByName("OpenCL")
    system = openmm.System()
    for _ in range(2):
        system.addParticle(1.0)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), plat, {"Precision": precision})
    try:
        return plat.getPropertyValue(context, "OpenCLPlatformName"), plat.getPropertyValue(context, "DeviceName")
    finally:
        del context


def opencl_runs_on_cpu(platform_name: str, device_name: str) -> bool:
    """Whether an OpenCL device is the host CPU: PoCL's CPU devices ("pthread-...", "cpu-...") or a CPU runtime.

    There the OpenCL kernels run slower than OpenMM's own CPU platform (measured with PoCL on 2 cores:
    ~0.5 against ~1 M particle-steps/s per core; benchmarks/results/md_throughput.md), so ``auto`` passes it over.
    """
    dev = device_name.lower()
    return dev.startswith(("pthread", "cpu")) or " cpu " in f" {platform_name.lower()} "


_LOGGED_CHOICES: set[tuple] = set()


def resolve_platform(platform: str | None = "auto", precision: str | None = None) -> openmm.Platform:
    """The OpenMM platform for a name (case-insensitive) or "auto".

    "auto" takes the first of CUDA, OpenCL, CPU, Reference on which a Context can actually be made at
    ``precision`` (None = ``conf/md``; it matters for CUDA and OpenCL only), passing over an OpenCL device that
    is the CPU itself (PoCL: slower than the CPU platform, :func:`opencl_runs_on_cpu`), and logs once per
    process which one it picked and why the faster ones were passed over. A named platform that is not
    available raises.
    """
    names = available_platforms()
    precision = md_config().precision if precision is None else precision
    if precision not in PRECISIONS:
        raise ValueError(f"OpenMM precision must be one of {PRECISIONS}, got {precision!r} (md.precision)")
    if platform is None or str(platform).lower() == "auto":
        passed = []
        for name in PLATFORM_PREFERENCE:
            if name not in names:
                passed.append(f"{name}: plugin not loaded")
                continue
            problem = platform_problem(name, precision)
            if problem is not None:
                passed.append(f"{name}: {problem}")
                continue
            if name == "OpenCL":
                device = opencl_device(precision)
                if device is not None and opencl_runs_on_cpu(*device):
                    passed.append(f"OpenCL: its device '{device[1]}' ({device[0]}) is the CPU, where the CPU "
                                  "platform is faster (md.platform=OpenCL uses it anyway)")
                    continue
            key = ("auto", name, precision)
            if key not in _LOGGED_CHOICES:
                _LOGGED_CHOICES.add(key)
                used = precision if name in PRECISION_PLATFORMS else ("mixed" if name == "CPU" else "double")
                log.info("OpenMM platform: %s (md.platform=auto, precision %s)%s", name, used,
                         f"; passed over {'; '.join(passed)}" if passed else "")
            return openmm.Platform.getPlatformByName(name)
        raise ValueError(f"OpenMM: no usable platform ({'; '.join(passed)})")
    by_lower = {n.lower(): n for n in names}
    key = str(platform).lower()
    if key not in by_lower:
        failures = "; ".join(openmm.Platform.getPluginLoadFailures()) or "none"
        raise ValueError(
            f"OpenMM platform {platform!r} is not available; available: {', '.join(names)} (or 'auto'). "
            f"Plugin load failures: {failures}"
        )
    return openmm.Platform.getPlatformByName(by_lower[key])


def make_context(system: openmm.System, platform: str | None = "auto", threads: int | None = None,
                 precision: str | None = None, *, integrator: openmm.Integrator | None = None,
                 dt: float | None = None) -> openmm.Context:
    """A Context for ``system`` on the requested platform.

    Args:
        system: from :func:`build_system`.
        platform: "auto" (CUDA > OpenCL > CPU > Reference, the first present), or a platform name.
        threads: CPU platform thread count (None = OpenMM's default); ignored elsewhere.
        precision: CUDA/OpenCL precision "single", "mixed" or "double" (None = ``conf/md``); the CPU
            platform is always mixed (single-precision forces) and Reference always double, so it is ignored there.
        integrator: default a ``VerletIntegrator`` with step ``dt`` [tau] (None = ``conf/md``).

    Raises:
        ValueError for an unknown or unavailable platform (the message lists the available ones) or bad options.
    """
    cfg = md_config()
    precision = cfg.precision if precision is None else precision
    plat = resolve_platform(platform, precision)
    name = plat.getName()
    props = {}
    if threads is not None:
        if int(threads) != threads or threads < 1:
            raise ValueError(f"make_context: threads must be a positive integer, got {threads!r}")
        if name == "CPU":
            props["Threads"] = str(int(threads))
    if name in PRECISION_PLATFORMS:
        props["Precision"] = precision
    if integrator is None:
        dt = float(cfg.dt if dt is None else dt)
        if not (np.isfinite(dt) and dt > 0):
            raise ValueError(f"make_context: dt must be positive, got {dt}")
        integrator = openmm.VerletIntegrator(dt * TIME_PS)
    return openmm.Context(system, integrator, plat, props)

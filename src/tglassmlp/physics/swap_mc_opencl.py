"""Batched swap Monte Carlo in OpenCL: B independent chains of N particles in one kernel launch.

The same kernel source (``swap_mc.cl``, package data) runs on PoCL on the CPU and on NVIDIA/AMD GPUs; it
needs ``cl_khr_fp64`` (positions and energies are double: see the .cl header) and nothing vendor-specific.

Algorithm (one sweep = N attempted moves per chain, as in ``tglassmlp.physics.swap_mc``):

1. Grid: m x m square cells, m the largest EVEN number with cell side cs = box / m >= the largest cutoff
   (m >= 2, i.e. box >= 2 cutoffs). The grid is shifted by an offset (ox, oy) drawn uniformly in [0, cs)^2,
   afresh for every sweep and chain, independently of the state.
2. Four colour phases in fixed order: colour (px, py) in {0, 1}^2 activates the cells (cx, cy) with
   cx = px, cy = py (mod 2). Two active cells are separated by at least one inactive cell (m even, periodic),
   i.e. by >= cs >= cutoff: a particle of one active cell never interacts with one of another, and all active
   cells of all chains are updated in parallel, one work-item each.
3. Active cell with n_c particles (n_c fixed during the phase, see below): n_c attempted moves, each
   - a displacement with probability ``1 - swap_fraction``: a particle of the cell uniformly (1 / n_c), shifted
     by a vector uniform in [-d, d]^2; REJECTED if it would leave the cell (or overlap). Because no particle
     enters or leaves an active cell and inactive cells do not move, n_c and the neighbourhood stay fixed;
   - an identity swap with probability ``swap_fraction``: a pair (a, b) uniformly from ``swap_pairs``, then
     particle i uniformly among the n_a particles OF TYPE a IN THE CELL and j uniformly among its n_b particles
     of type b; their types are exchanged. If n_a or n_b is 0 the attempt is rejected (the state is kept).

Detailed balance. Fix the offset and the colour; the state outside the active cell is frozen during its moves
and the active cells do not interact, so the phase is a product of independent per-cell chains and it
suffices that each attempt in one cell obeys detailed balance with respect to exp(-E / T) (E = the full
energy, of which only the cell's particles' terms change). Displacement: the forward proposal density of
moving particle i from r to r' (both in the cell) is (1 / n_c) (2 d)^-2 [|r' - r|_inf <= d], equal to the
reverse one since n_c is the same in both states; moves leaving the cell are rejected in both directions
(the proposal x acceptance is 0 both ways). Swap: the probability of proposing the exchange of i (type a)
and j (type b) is 1 / (P n_a n_b); the reverse exchange (j now of type a, i of type b) is proposed with
1 / (P n_a' n_b') where n_a' = n_a, n_b' = n_b because a swap conserves the cell's counts per type. So both
proposals are symmetric given the cell contents, and Metropolis acceptance min(1, exp(-dE / T)) gives detailed
balance. The number of attempts n_c is itself unchanged by every move, so repeating the attempt n_c times
keeps it. The offset is drawn independently of the state, so each phase (a mixture over offsets of reversible
kernels) is reversible, and a sweep, the product of the four phases, leaves the Boltzmann distribution
invariant (global balance; the product in a fixed order is not itself reversible, as for any sequential
sweep). Ergodicity: the random offset moves the cell walls, so any particle can reach any place and any two
particles can share a cell. Overlaps (a pair closer than ``overlap_distance`` sigma_ab) are rejected as in
the numba sampler (their Boltzmann factor underflows to zero for T <= 2).

Random numbers: Philox4x32-10 (Salmon et al., SC 2011; passes BigCrush), written in the kernel; every
attempt draws up to 8 uint32 (the second block only for an uphill move) from the counter (chain, sweep, phase << 28 | cell, 2 attempt + {0, 1}) under the key
= the 64-bit seed; the offset of a sweep uses counter (chain, sweep, 0xFFFFFFFF, 0). A chain is thus a
function of (seed, chain index, sweep count): there is no generator state to store, a resumed run continues
exactly, and chain b is the same whatever the batch size B. Uniforms have 32 random bits (the acceptance
test of a move with exp(-dE / T) < 2^-32 is then decided by at most one part in 4e9). The sweep counter is
32 bits: at most 2^32 sweeps per chain (refused beyond).

Neighbour sums (performance only; the chain's law does not depend on them): particles are sorted by cell. The
neighbourhood of an active cell is frozen during its phase except for the cell's own particles, so it is gathered
once per cell into private arrays (the cell's particles, kept up to date as they move or swap, then the particles
of the 8 cells around it within the largest cutoff of the cell's square: ~65 at the paper's density), and each
move sums over that one contiguous array 8 candidates at a time in double8 arithmetic, branch-free (cutoff, the
mover itself and the padding by selects), with one division per candidate for both distances of a displacement
or both particles of a swap. The cutoff and the overlap distance are multiples of sigma_ab, so those tests
compare (r / sigma_ab)^2 with one number. Cells with more than ``CANDIDATE_CAPACITY`` candidates and tiny boxes
(m = 2, the whole box visited with explicit minimum images) take a scalar path over the 3 x 3 cells; both paths
give the same energy changes up to rounding (tests/test_swap_mc_opencl.py). The Metropolis test evaluates exp only
below a cheap upper bound of exp(-x) (same decisions). Measured on PoCL (benchmarks/results/swap_opencl.md): 3.1x
the sub-cell version of this kernel (kernel version 1) per CPU-second, ~1.4x the numba sampler at B = 128.

Energies: the per-cell energy changes of a sweep are summed per chain in a fixed cell order (reproducible),
into a float64 total per chain; ``check_energy`` compares it with ``tglassmlp.physics.potential_energy``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from tglassmlp.physics.configuration import ConfigurationError, validate_configuration
from tglassmlp.physics.swap_settings import SwapSettings, load_swap_settings, positive_finite
from tglassmlp.physics.system import N_TYPES, PairPotential, resolve_system

INSTALL_HINT = "apt-get install pocl-opencl-icd ocl-icd-libopencl1"
MAX_SWEEPS = 2**32 - 1
# Version of the chain that swap_mc.cl computes from a state: raised whenever the same (state, seed, sweep) would
# give other moves (the law of the chain may be the same). A state dict records it and one of another version is
# refused (a resumed run would not continue the chain that was checkpointed). 1: sub-cell sums (before 2026-12-03,
# no version in the state); 2: candidates gathered per cell, double8 sums.
KERNEL_VERSION = 2
# no fast-math or contraction options: the same IEEE double arithmetic on every device
BUILD_OPTIONS: list = []
# private candidate arrays of the move kernel (K_MAX in swap_mc.cl); a cell with more takes the scalar path
CANDIDATE_CAPACITY = 128


class OpenCLUnavailableError(RuntimeError):
    """pyopencl is not installed or no OpenCL device with double precision is found."""


def _import_cl():
    try:
        import pyopencl as cl
    except ImportError as err:  # pragma: no cover - pyopencl is a dependency
        raise OpenCLUnavailableError(f"pyopencl is not installed ({err}); pip install pyopencl") from err
    return cl


def opencl_devices() -> list:
    """All OpenCL devices with double precision (GPUs first); [] if pyopencl finds no platform."""
    cl = _import_cl()
    try:
        platforms = cl.get_platforms()
    except cl.Error:
        return []
    devices = [d for p in platforms for d in p.get_devices() if d.double_fp_config]
    return sorted(devices, key=lambda d: 0 if d.type & cl.device_type.GPU else 1)


def pick_device(device=None):
    """``device``: None (a GPU if any, else a CPU), "gpu", "cpu", or a ``pyopencl.Device``."""
    cl = _import_cl()
    if isinstance(device, cl.Device):
        if not device.double_fp_config:
            raise OpenCLUnavailableError(f"OpenCL device {device.name!r} lacks double precision (cl_khr_fp64)")
        return device
    devices = opencl_devices()
    if device in ("gpu", "cpu"):
        kind = cl.device_type.GPU if device == "gpu" else cl.device_type.CPU
        devices = [d for d in devices if d.type & kind]
    elif device is not None:
        raise ValueError(f"device must be None, 'gpu', 'cpu' or a pyopencl.Device, got {device!r}")
    if not devices:
        raise OpenCLUnavailableError(
            f"no OpenCL {device or ''} device with double precision found; on Debian/Ubuntu: {INSTALL_HINT}")
    return devices[0]


def kernel_source() -> str:
    return resources.files("tglassmlp.physics").joinpath("swap_mc.cl").read_text()


class BatchedSwapMonteCarlo:
    """B independent swap Monte Carlo chains run by one OpenCL kernel (checkerboard cells, see module doc).

    Args:
        temperature: k_B T [epsilon] (> 0), shared by all chains; may be changed between runs.
        system: the potential (default ``conf/system/ka2d_ternary.yaml``).
        settings: a ``SwapSettings`` (default ``load_swap_settings()``): swap_fraction, swap_pairs and
            max_displacement (the fixed step d [sigma]; ``.max_displacement`` may be changed between runs).
        seed: 64-bit key of the counter-based generator; chain b's moves depend on (seed, b, sweep) only.
        device: None (GPU if any, else CPU), "gpu", "cpu" or a ``pyopencl.Device``.
    """

    def __init__(self, temperature, system=None, *, settings: SwapSettings | None = None, seed: int = 0,
                 device=None):
        cl = _import_cl()
        self.settings = settings or load_swap_settings()
        self.system: PairPotential = resolve_system(system)
        self.temperature = temperature
        self._steps = None  # per chain, set by reset
        self.max_displacement = float(self.settings.max_displacement)
        seed = int(seed)
        if not 0 <= seed < 2**64:
            raise ValueError(f"seed must lie in [0, 2^64), got {seed}")
        self.seed = seed
        self.device = pick_device(device)
        self.ctx = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.ctx)
        self.program = cl.Program(self.ctx, kernel_source()).build(
            options=BUILD_OPTIONS + [f"-DK_MAX={int(CANDIDATE_CAPACITY)}"])
        self._kernels = {name: cl.Kernel(self.program, name) for name in ("bin_chains", "sweep_phase", "finish_chains")}
        self._cl = cl
        eps, sig2, rc2, ov2 = self.system.parameter_arrays()
        params = np.concatenate([eps.ravel(), sig2.ravel(), rc2.ravel(), ov2.ravel(),
                                 [self.system.c0, self.system.c2, self.system.c4], 1.0 / sig2.ravel(),
                                 [self.system.cutoff**2, self.system.overlap_distance**2], 4.0 * eps.ravel()]
                                ).astype(np.float64)
        pairs = np.asarray(self.settings.swap_pairs, dtype=np.int32).reshape(-1, 2)
        mf = cl.mem_flags
        self._params = cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=params)
        self._pairs = cl.Buffer(self.ctx, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=np.ascontiguousarray(pairs))
        self._n_pairs = len(pairs)
        self._geo = None
        # local work size of the move kernel: "auto" (on a CPU one chain's active cells per work-group, 9 % faster
        # than PoCL's choice with the private candidate arrays, benchmarks/results/swap_opencl_workgroup.md; the
        # driver's choice elsewhere), None (the driver's choice) or a tuple; performance only, the chains do not
        # depend on it (each work-item is one cell of one chain with its own random numbers)
        self.work_group = "auto"
        self._trace_buf, self._trace_capacity = None, 0

    # ------------------------------------------------------------------ configuration
    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        self._temperature = positive_finite(value, "temperature")

    @property
    def max_displacement(self) -> float:
        """The displacement step d [sigma] of every chain (ValueError if the chains' steps differ: read
        ``steps``). Setting it sets every chain's step."""
        if self._steps is None:
            return self._d
        if np.any(self._steps != self._steps[0]):
            raise ValueError("the chains have different displacement steps; read BatchedSwapMonteCarlo.steps")
        return float(self._steps[0])

    @max_displacement.setter
    def max_displacement(self, value):
        value = positive_finite(value, "max_displacement")
        self._d = value
        if self._steps is not None:
            self.steps = np.full(self._steps.size, value)

    @property
    def steps(self) -> np.ndarray:
        """(B,) displacement step d of each chain [sigma] (a copy)."""
        self._require_state()
        return self._steps.copy()

    @steps.setter
    def steps(self, values):
        g = self._require_state()
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size != g["B"] or not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"steps must be {g['B']} positive finite numbers, got {values}")
        self._steps = values.copy()
        self._cl.enqueue_copy(self.queue, self._buf["steps"], self._steps)

    def reset(self, positions, types, box):
        """Load B structures: positions (B, N, 2) or (N, 2), types (B, N) or (N,), one box side for all.

        Every chain is checked like ``SwapMonteCarlo.reset`` (shape, NaN, unknown types, overlaps); the box
        must be at least two cutoffs (one cell of side >= cutoff per colour). Clears counters and sweeps.
        """
        positions = np.asarray(positions, dtype=np.float64)
        types = np.asarray(types)
        if positions.ndim == 2:
            positions = positions[None]
            types = types[None] if types.ndim == 1 else types
        if positions.ndim != 3 or types.ndim != 2 or types.shape != positions.shape[:2]:
            raise ConfigurationError(
                f"BatchedSwapMonteCarlo.reset: need positions (B, N, 2) and types (B, N), got "
                f"{positions.shape} and {types.shape}")
        n_chains = positions.shape[0]
        checked = [validate_configuration(positions[b], types[b], box, where=f"BatchedSwapMonteCarlo.reset chain {b}")
                   for b in range(n_chains)]
        box = float(checked[0][2])
        positions = np.stack([c[0] for c in checked])
        types = np.stack([c[1] for c in checked]).astype(np.int32)
        counts = np.array([np.bincount(t, minlength=N_TYPES) for t in types])
        if np.any(counts != counts[0]):
            raise ConfigurationError("BatchedSwapMonteCarlo.reset: every chain must have the same composition")
        for a, b in self.settings.swap_pairs:
            if counts[0, a] == 0 or counts[0, b] == 0:
                raise ValueError(f"swap pair ({a}, {b}) needs particles of both types; counts {counts[0]}")
        rmax = self.system.max_cutoff
        if box <= 2.0 * rmax:
            raise ConfigurationError(
                f"BatchedSwapMonteCarlo.reset: box side {box:g} must exceed twice the interaction range {rmax:g}")
        m = 2 * int(box // (2.0 * rmax))
        while box / m < rmax:  # rounding of box // (2 rmax)
            m -= 2
        from tglassmlp.physics.potential import interacting_pairs

        for b in range(n_chains):
            interacting_pairs(positions[b], types[b], box, self.system, where=f"BatchedSwapMonteCarlo.reset chain {b}")
        wrapped = np.mod(positions, box)
        wrapped[wrapped >= box] = 0.0
        self._geo = dict(B=n_chains, N=positions.shape[1], m=m, box=box, cs=box / m)
        self._allocate()
        self._trace_buf, self._trace_capacity = None, 0
        self.steps = np.full(n_chains, self._d)
        self._write_state(wrapped, positions, types, counters=None, sweeps=0)
        self._energy = self._exact_energies()
        self._cl.enqueue_copy(self.queue, self._buf["energy"], self._energy)
        return self

    def _allocate(self):
        cl, g = self._cl, self._geo
        B, N, M = g["B"], g["N"], g["m"] ** 2
        mf = cl.mem_flags
        sizes = dict(pos=(B * N * 2, np.float64), unwrapped=(B * N * 2, np.float64), types=(B * N, np.int32),
                     offsets=(B * 2, np.float64), cell_start=(B * (M + 1), np.int32),
                     cell_fill=(B * M, np.int32),
                     sx=(B * N, np.float64), sy=(B * N, np.float64), st=(B * N, np.int32), sidx=(B * N, np.int32),
                     sdx=(B * N, np.float64), sdy=(B * N, np.float64), cell_de=(B * M, np.float64),
                     counters=(B * M * 4, np.uint64), energy=(B, np.float64), steps=(B, np.float64))
        self._buf = {k: cl.Buffer(self.ctx, mf.READ_WRITE, size=int(n) * np.dtype(t).itemsize)
                     for k, (n, t) in sizes.items()}

    def _write_state(self, wrapped, unwrapped, types, counters, sweeps):
        cl, g = self._cl, self._geo
        M = g["m"] ** 2
        for k, v in (("pos", wrapped), ("unwrapped", unwrapped), ("types", types)):
            cl.enqueue_copy(self.queue, self._buf[k], np.ascontiguousarray(v))
        c = np.zeros((g["B"], M, 4), np.uint64)
        if counters is not None:  # per chain totals go into cell 0
            c[:, 0, :] = counters
        cl.enqueue_copy(self.queue, self._buf["counters"], c)
        self.sweeps_done = int(sweeps)

    def _require_state(self):
        if self._geo is None:
            raise RuntimeError("BatchedSwapMonteCarlo: call reset(positions, types, box) first")
        return self._geo

    # ------------------------------------------------------------------ running
    def run(self, n_sweeps: int, record_every: int | None = None):
        """Run ``n_sweeps`` sweeps (N attempted moves per chain each) at ``self.temperature``.

        ``record_every``: if given, returns the (n_sweeps // record_every, B) total energies [epsilon] after
        sweeps record_every, 2 record_every, ... of this call (recorded on the device; one read at the end).
        """
        g = self._require_state()
        n_sweeps = int(n_sweeps)
        if n_sweeps < 0:
            raise ValueError(f"n_sweeps must be >= 0, got {n_sweeps}")
        rec = int(record_every) if record_every is not None else 0
        if record_every is not None and rec < 1:
            raise ValueError(f"record_every must be a positive integer, got {record_every}")
        n_rec = n_sweeps // rec if rec else 0
        if n_rec > self._trace_capacity:
            self._trace_capacity = max(n_rec, 2 * self._trace_capacity)
            self._trace_buf = self._cl.Buffer(self.ctx, self._cl.mem_flags.READ_WRITE,
                                              size=g["B"] * self._trace_capacity * 8)
        trace_buf = self._trace_buf if self._trace_buf is not None else self._buf["energy"]
        if self.sweeps_done + n_sweeps > MAX_SWEEPS:
            raise ValueError(f"the counter-based generator allows at most {MAX_SWEEPS} sweeps per chain")
        bf = self._buf
        i32, f64, u32 = np.int32, np.float64, np.uint32
        B, N, m, box, cs = g["B"], g["N"], g["m"], g["box"], g["cs"]
        seed_lo, seed_hi = u32(self.seed & 0xFFFFFFFF), u32(self.seed >> 32)
        beta = f64(1.0 / self.temperature)
        f = f64(self.settings.swap_fraction)
        n_active = (m // 2) ** 2
        reach = f64(self.system.max_cutoff * (1.0 + 1e-9))  # candidates: the cutoff, and a margin for rounding
        binning, phase_k, finish = (self._kernels[k] for k in ("bin_chains", "sweep_phase", "finish_chains"))
        wg = self.work_group
        if isinstance(wg, str):
            if wg != "auto":
                raise ValueError(f"work_group must be 'auto', None or a tuple, got {wg!r}")
            wg = (n_active, 1) if self.device.type & self._cl.device_type.CPU else None
        # arguments set once per call, only the sweep, phase and trace slot per launch: with few chains (B = 1, one
        # chain per job) setting ~20 arguments per launch from Python cost more than the moves
        binning.set_args(i32(N), i32(m), f64(box), f64(cs), seed_lo, seed_hi, u32(0), bf["pos"], bf["types"],
                         bf["offsets"], bf["cell_start"], bf["cell_fill"], bf["sx"], bf["sy"], bf["st"], bf["sidx"],
                         bf["sdx"], bf["sdy"])
        phase_k.set_args(i32(N), i32(m), f64(box), f64(cs), reach, seed_lo, seed_hi, u32(0), i32(0), beta,
                         bf["steps"], f, i32(self._n_pairs), self._pairs, self._params, bf["cell_start"], bf["sx"],
                         bf["sy"], bf["st"], bf["sdx"], bf["sdy"], bf["cell_de"], bf["counters"])
        finish.set_args(i32(N), i32(m), f64(box), bf["pos"], bf["unwrapped"], bf["types"], bf["sx"], bf["sy"],
                        bf["st"], bf["sidx"], bf["sdx"], bf["sdy"], bf["cell_de"], bf["energy"], trace_buf, i32(-1),
                        i32(self._trace_capacity))
        launch = self._cl.enqueue_nd_range_kernel
        for k in range(n_sweeps):
            sweep = u32(self.sweeps_done)
            binning.set_arg(6, sweep)
            launch(self.queue, binning, (B,), None)
            phase_k.set_arg(7, sweep)
            for phase in range(4):
                phase_k.set_arg(8, i32(phase))
                launch(self.queue, phase_k, (n_active, B), wg)
            if rec:
                finish.set_arg(15, i32((k + 1) // rec - 1 if (k + 1) % rec == 0 else -1))
            launch(self.queue, finish, (B,), None)
            self.sweeps_done += 1
        if n_rec:
            out = np.empty((g["B"], self._trace_capacity), np.float64)
            self._cl.enqueue_copy(self.queue, out, self._trace_buf)
            return np.ascontiguousarray(out[:, :n_rec].T)
        self.queue.finish()
        return None

    # ------------------------------------------------------------------ energies
    def _exact_energies(self) -> np.ndarray:
        from tglassmlp.physics.potential import potential_energy

        pos, types, box = self.positions, self.types, self._geo["box"]
        return np.array([potential_energy(pos[b], types[b], box, self.system) for b in range(len(pos))])

    def check_energy(self, tolerance: float | None = None) -> float:
        """Recompute every chain's energy (numpy reference), compare, adopt it. Returns the largest relative
        drift; raises RuntimeError above ``tolerance`` (default settings.energy_drift_tolerance)."""
        self._require_state()
        tol = self.settings.energy_drift_tolerance if tolerance is None else tolerance
        exact = self._exact_energies()
        drift = float(np.max(np.abs(exact - self.energies) / np.maximum(np.abs(exact), 1.0)))
        if drift > tol:
            raise RuntimeError(f"BatchedSwapMonteCarlo: tracked energy drifted by {drift:.3g} (relative) from the "
                               f"recomputed one: kernel bug")
        self._cl.enqueue_copy(self.queue, self._buf["energy"], exact)
        return drift

    # ------------------------------------------------------------------ results
    def _read(self, name, dtype, shape):
        out = np.empty(shape, dtype)
        self._cl.enqueue_copy(self.queue, out, self._buf[name])
        return out

    @property
    def n_chains(self) -> int:
        return self._require_state()["B"]

    @property
    def box(self) -> float:
        return float(self._require_state()["box"])

    @property
    def cells_per_side(self) -> int:
        """m: the checkerboard grid has m x m cells of side box / m >= the largest cutoff (m even)."""
        return int(self._require_state()["m"])

    @property
    def positions(self) -> np.ndarray:
        """(B, N, 2) positions wrapped into [0, box) [sigma]."""
        g = self._require_state()
        return self._read("pos", np.float64, (g["B"], g["N"], 2))

    @property
    def unwrapped_positions(self) -> np.ndarray:
        """(B, N, 2) positions without periodic wrapping since ``reset`` [sigma]."""
        g = self._require_state()
        return self._read("unwrapped", np.float64, (g["B"], g["N"], 2))

    @property
    def types(self) -> np.ndarray:
        """(B, N) int64 types."""
        g = self._require_state()
        return self._read("types", np.int32, (g["B"], g["N"])).astype(np.int64)

    @property
    def energies(self) -> np.ndarray:
        """(B,) tracked total potential energy of each chain [epsilon] (float64 sums of accepted changes)."""
        g = self._require_state()
        return self._read("energy", np.float64, (g["B"],))

    @property
    def counters(self) -> np.ndarray:
        """(B, 4) attempted / accepted displacements, attempted / accepted swaps per chain since ``reset``."""
        g = self._require_state()
        return self._read("counters", np.uint64, (g["B"], g["m"] ** 2, 4)).sum(axis=1).astype(np.int64)

    @property
    def acceptance_displacement(self) -> np.ndarray:
        """(B,) accepted / attempted displacements per chain (nan where none)."""
        c = self.counters.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c[:, 0] > 0, c[:, 1] / c[:, 0], np.nan)

    @property
    def acceptance_swap(self) -> np.ndarray:
        """(B,) accepted / attempted swaps per chain (nan where none)."""
        c = self.counters.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c[:, 2] > 0, c[:, 3] / c[:, 2], np.nan)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything the chains' futures depend on (numpy arrays). The generator is counter-based: the seed
        and the sweep count replace a generator state."""
        g = self._require_state()
        return dict(positions=self.positions, unwrapped=self.unwrapped_positions, types=self.types,
                    box=np.float64(g["box"]), energies=self.energies, counters=self.counters,
                    sweeps_done=np.int64(self.sweeps_done), seed=np.uint64(self.seed),
                    temperature=np.float64(self.temperature), steps=self.steps,
                    kernel_version=np.int64(KERNEL_VERSION))

    def load_state_dict(self, d) -> "BatchedSwapMonteCarlo":
        """Restore a ``state_dict``: the continued chains equal uninterrupted ones move for move. A state of
        another kernel version is refused (ValueError)."""
        version = int(d["kernel_version"]) if "kernel_version" in d else 1
        if version != KERNEL_VERSION:
            raise ValueError(
                f"BatchedSwapMonteCarlo.load_state_dict: this state (checkpoint) was written by version {version} of "
                f"the OpenCL kernel, this is version {KERNEL_VERSION}, whose moves differ: the chain would not "
                f"continue as it was. Delete the checkpoint to start afresh, or resume it with a commit of kernel "
                f"version {version}")
        positions = np.asarray(d["positions"], dtype=np.float64)
        types = np.asarray(d["types"])
        self.reset(positions, types, float(d["box"]))
        self.seed = int(d["seed"])
        self.temperature = float(d["temperature"])
        if "steps" in d:
            self.steps = np.asarray(d["steps"], dtype=np.float64)
        else:  # state dicts before per-chain steps
            self.max_displacement = float(d["max_displacement"])
        self._write_state(positions, np.asarray(d["unwrapped"], dtype=np.float64), types.astype(np.int32),
                          counters=np.asarray(d["counters"], dtype=np.uint64), sweeps=int(d["sweeps_done"]))
        energies = np.ascontiguousarray(d["energies"], dtype=np.float64)
        self._cl.enqueue_copy(self.queue, self._buf["energy"], energies)
        return self


class OpenCLChains:
    """The OpenCL backend of :class:`tglassmlp.physics.swap_mc.EquilibrationChain`: B chains in one
    ``BatchedSwapMonteCarlo`` (one kernel launch per phase for all of them). The interface is that of
    ``swap_mc.NumbaChains``; energies are recorded on the device every ``settings.record_every`` sweeps, the
    traces (E/N per chain) and the counters since the last ``reset_counters`` are kept here.

    Differences from the numba backend (the protocol is the same): moves are cell-local (see the module doc), so
    a chain's acceptance includes the displacements rejected for leaving their cell and d adapts to that; the
    kernel counts swaps per chain but not per swap pair (``acceptance(b)[2]`` is {}).
    """

    backend = "opencl"
    single_layout = False

    def __init__(self, temperature, system=None, *, settings: SwapSettings | None = None, seed: int = 0,
                 n_chains: int = 1, device=None):
        self.settings = settings or load_swap_settings()
        self.batch = BatchedSwapMonteCarlo(temperature, system, settings=self.settings, seed=seed, device=device)
        self.n_chains = int(n_chains)
        self._traces: list = []
        self._counts0 = np.zeros((self.n_chains, 4), np.int64)

    @property
    def n_particles(self) -> int:
        return int(self.batch._require_state()["N"])

    @property
    def box(self) -> float:
        return self.batch.box

    @property
    def temperature(self) -> float:
        return self.batch.temperature

    @temperature.setter
    def temperature(self, value):
        self.batch.temperature = value

    @property
    def sweeps_done(self) -> int:
        return self.batch.sweeps_done

    @property
    def steps(self) -> np.ndarray:
        return self.batch.steps

    def set_steps(self, steps):
        self.batch.steps = steps

    def reset(self, positions, types, box):
        if len(positions) != self.n_chains:
            raise ValueError(f"OpenCLChains.reset: {len(positions)} starts for {self.n_chains} chains")
        self.batch.reset(positions, types, box)
        self.reset_counters()

    def run(self, n_sweeps: int):
        rec = int(self.settings.record_every)
        energies = self.batch.run(n_sweeps, record_every=rec)
        if energies is not None:
            self._traces.append(energies / self.n_particles)

    def _counts(self) -> np.ndarray:
        return self.batch.counters - self._counts0

    def displacement_counts(self) -> np.ndarray:
        return self._counts()[:, :2]

    def reset_counters(self):
        self._counts0 = self.batch.counters
        self._traces = []

    def check_energy(self) -> float:
        return self.batch.check_energy()

    def _trace(self) -> np.ndarray:
        return np.concatenate(self._traces) if self._traces else np.empty((0, self.n_chains))

    def energy_trace(self, b: int) -> np.ndarray:
        return self._trace()[:, b].copy()

    def energy(self, b: int) -> float:
        return float(self.batch.energies[b])

    def positions(self, b: int) -> np.ndarray:
        return self.batch.positions[b]

    def types(self, b: int) -> np.ndarray:
        return self.batch.types[b]

    def unwrapped_positions(self) -> np.ndarray:
        return self.batch.unwrapped_positions

    def acceptance(self, b: int):
        c = self._counts()[b].astype(float)
        acc_d = c[1] / c[0] if c[0] else float("nan")
        acc_s = c[3] / c[2] if c[2] else float("nan")
        return float(acc_d), float(acc_s), {}

    def state_dict(self) -> dict:
        out = {f"ocl_{k}": v for k, v in self.batch.state_dict().items()}
        out.update(ocl_trace=self._trace(), ocl_counts0=self._counts0.copy())
        return out

    def load_state_dict(self, d):
        self.batch.load_state_dict({k[4:]: v for k, v in d.items() if k.startswith("ocl_")})
        if self.batch.n_chains != self.n_chains:
            raise ValueError(f"checkpoint holds {self.batch.n_chains} chains, this run has {self.n_chains}")
        trace = np.asarray(d["ocl_trace"], dtype=np.float64)
        self._traces = [trace] if trace.size else []
        self._counts0 = np.asarray(d["ocl_counts0"], dtype=np.int64).copy()
        return self

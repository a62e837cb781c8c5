"""Isoconfigurational molecular dynamics: many NVE runs from one structure with fresh Maxwell velocities.

Dynamics: Newtonian, velocity Verlet with step dt, no thermostat (facts 2: NVE runs after a velocity draw).
OpenMM's ``VerletIntegrator`` is the leapfrog form, whose velocities live at half steps. Setting
v(-dt/2) = v(0) - F(0) dt / (2m) before the first step makes its positions at t = k dt *identical* to
velocity Verlet's from (x(0), v(0)): leapfrog then gives v(dt/2) = v(0) + F(0) dt / (2m) and
x(dt) = x(0) + v(0) dt + F(0) dt^2 / (2m). It is 20-25% faster than a CustomIntegrator on the CPU
platform (measured at N = 1290), and OpenMM reports the kinetic energy at full steps (it shifts the
half-step velocities by F dt / (2m)), so energy checks see velocity Verlet's energy.

Parallel layout (measured at N = 1290 on 2 cores, benchmarks/results/md_throughput.md): on the CPU
platform, one OpenMM thread per Context and one Context per core stepped concurrently from Python threads
(OpenMM releases the GIL inside ``step``) gave 1.8-1.9 M particle-steps/s, ~10% more than one 2-thread
Context (1.7 M) and far less sensitive to other load on the machine (a 2-thread Context dropped to
0.95 M while another process ran). Stacking replicas as z-layers leaves the throughput per thread
unchanged on the CPU (0.90 M at 1 replica, 0.95 M at 20); on a GPU it should be the main lever
(one Context, many layers; untested here). A GPU needs more layers than one structure's 20 runs give, so
:func:`isoconfigurational_runs_many` also stacks several structures (same N, box and T; per-layer types)
in one Context (``md.structures_per_context``); :func:`isoconfigurational_runs` is its one-structure case.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openmm

from tglassmlp.physics.configuration import validate_configuration
from tglassmlp.physics.openmm_system import (
    ENERGY_KJ_PER_MOL,
    FORCE_KJ_PER_MOL_NM,
    LENGTH_NM,
    VELOCITY_NM_PER_PS,
    build_system,
    make_context,
    md_config,
    resolve_platform,
    stacked_positions,
    unstack,
)
from tglassmlp.physics.potential import interacting_pairs
from tglassmlp.physics.system import resolve_system

log = logging.getLogger(__name__)

# a time counts as a multiple of dt if it is within this fraction of a step of one (float rounding of
# e.g. 0.1 / 0.01 = 10.000000000000002)
STEP_MULTIPLE_RTOL = 1e-6


def maxwell_boltzmann_velocities(n: int, temperature: float, rng: np.random.Generator, mass=1.0) -> np.ndarray:
    """In-plane Maxwell-Boltzmann velocities with zero total momentum and exactly the kinetic temperature T.

    Gaussian draws (variance T / m per component) are shifted to zero total momentum, which removes
    2 of the 2N degrees of freedom, then rescaled so that sum_i m_i |v_i|^2 = (2N - 2) T exactly. The
    rescaling removes the O(1/sqrt(N)) run-to-run spread of the kinetic energy, so every run of an
    isoconfigurational ensemble starts at the same total energy and differs only in the direction of
    its velocities (the usual practice for propensities; the velocity distribution is Maxwellian up to O(1/N)).

    Args:
        n: number of particles, >= 2.
        temperature: T > 0 [epsilon / k_B].
        rng: a ``numpy.random.Generator`` (draws 2n standard normals from it).
        mass: scalar or (n,) particle masses [m].

    Returns:
        (n, 2) float64 velocities [sigma / tau].
    """
    if int(n) != n or n < 2:
        raise ValueError(f"maxwell_boltzmann_velocities: n must be an integer >= 2, got {n!r}")
    n = int(n)
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"maxwell_boltzmann_velocities: temperature must be finite and > 0, got {temperature}")
    m = np.broadcast_to(np.asarray(mass, dtype=np.float64), (n,))
    if not (np.all(np.isfinite(m)) and np.all(m > 0)):
        raise ValueError("maxwell_boltzmann_velocities: masses must be finite and > 0")
    v = rng.standard_normal((n, 2)) * np.sqrt(temperature / m)[:, None]
    v -= (m[:, None] * v).sum(axis=0) / m.sum()
    twice_ke = float(np.einsum("i,ij,ij->", m, v, v))
    v *= np.sqrt((2 * n - 2) * temperature / twice_ke)
    return v


def kinetic_temperature(velocities, mass=1.0) -> float:
    """sum_i m_i |v_i|^2 / (2N - 2): the temperature of zero-momentum 2D velocities (N, 2)."""
    v = np.asarray(velocities, dtype=np.float64)
    m = np.broadcast_to(np.asarray(mass, dtype=np.float64), (v.shape[0],))
    return float(np.einsum("i,ij,ij->", m, v, v) / (2 * v.shape[0] - 2))


def _time_steps(times, dt: float) -> np.ndarray:
    """Validate ``times`` and return them as integer step counts."""
    try:
        t = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"times must be numbers, got {times!r}") from None
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"times must be a non-empty 1D sequence, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times must be finite")
    if np.any(t < 0):
        raise ValueError(f"times must be >= 0, got min {t.min()}")
    if np.any(np.diff(t) < 0):
        k = int(np.flatnonzero(np.diff(t) < 0)[0])
        raise ValueError(f"times must be non-decreasing, got times[{k}] = {t[k]} > times[{k + 1}] = {t[k + 1]}")
    steps = np.rint(t / dt)
    off = np.abs(t / dt - steps) > STEP_MULTIPLE_RTOL * np.maximum(1.0, steps)
    if off.any():
        k = int(np.flatnonzero(off)[0])
        raise ValueError(f"times must be multiples of dt = {dt}, got times[{k}] = {t[k]!r}")
    return steps.astype(np.int64)


def _positive_int(value, name: str) -> int:
    """``value`` as an int >= 1, or a ValueError naming the argument."""
    try:
        ok = not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _split(n_runs: int, n_groups: int) -> list[range]:
    """Runs 0..n_runs-1 as n_groups contiguous, nearly equal ranges."""
    bounds = np.linspace(0, n_runs, n_groups + 1).round().astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _default_workers(platform_name: str) -> int:
    if platform_name != "CPU":
        return 1  # one GPU context at a time; the Reference platform is for checks
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Progress:
    """tqdm bar (or nothing) shared by the worker threads."""

    def __init__(self, total, enabled):
        self._bar = None
        self._lock = threading.Lock()
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=int(total), unit="step", unit_scale=True, desc="isoconfigurational MD")

    def update(self, n):
        if self._bar is not None and n:
            with self._lock:
                self._bar.update(int(n))

    def close(self):
        if self._bar is not None:
            self._bar.close()


def isoconfigurational_runs(positions, types, box, temperature, times, n_runs, seed, *, system=None,
                            dt: float | None = None, platform: str | None = None,
                            replicas_per_context: int | None = None, workers: int | None = None,
                            threads: int | None = None, precision: str | None = None,
                            layout: str | None = None, progress: bool = True,
                            max_energy_drift: float | None = None, check_every: int | None = None,
                            checkpoint=None, checkpoint_every_s: float | None = None,
                            checkpoint_stride: int | None = None, config=None) -> np.ndarray:
    """NVE runs from one structure with fresh Maxwell-Boltzmann velocities; unwrapped positions at ``times``.

    The one-structure case of :func:`isoconfigurational_runs_many` (same code, same numbers).

    Args:
        positions: (N, 2) initial positions [sigma] (wrapped or unwrapped).
        types: (N,) integer types 0, 1, 2.
        box: square box side [sigma].
        temperature: T of the velocity draw [epsilon / k_B], see :func:`maxwell_boltzmann_velocities`.
        times: non-decreasing times >= 0 [tau], multiples of dt; 0 gives the initial positions.
        n_runs: number of runs (>= 1); run r uses the r-th velocity draw of ``numpy.random.default_rng(seed)``.
        seed: anything ``numpy.random.default_rng`` accepts.
        system: the PairPotential (default ``conf/system/ka2d_ternary.yaml``).
        dt, platform, replicas_per_context, threads, precision, layout, max_energy_drift, check_every,
            checkpoint_every_s, checkpoint_stride:
            None takes ``conf/md/default.yaml`` (or ``config``, a dict/DictConfig of overrides).
        checkpoint: optional path of a ``.npz`` file (:mod:`tglassmlp.physics.md_checkpoint`). Every
            Context's exact state, the frames so far and the progress are written there atomically, at the
            first multiple of ``checkpoint_stride`` steps after ``checkpoint_every_s`` seconds since that
            Context's last save, and when a Context finishes. If the file exists, the run resumes from it:
            the result is bit-identical to an uninterrupted run (module docstring of md_checkpoint). A file
            written by another run (other structure, T, times, seeds, n_runs, platform, precision, layout,
            threads, grouping, dt, stride, ...) raises ``CheckpointMismatchError`` naming what differs. The
            file is left in place when the run ends (complete: a rerun returns at once); delete it once the
            frames are safe.
        workers: Contexts stepped concurrently (Python threads; OpenMM releases the GIL while stepping).
            None: one per CPU core on the CPU platform (each with threads = cores // workers), else 1.
        progress: show a tqdm bar over the integration steps.

    Returns:
        (n_runs, len(times), N, 2) float64 unwrapped positions [sigma].

    Reproducibility: the velocities depend on ``seed`` only; trajectories are bit-identical for the same
    inputs and the same platform, thread count, grouping of runs into Contexts and ``checkpoint_stride``
    (floating-point sums differ otherwise, and chaos amplifies any difference), with or without a checkpoint
    and resumption in between. The CPU platform with several threads per
    Context is not bit-reproducible.

    Raises:
        ValueError (naming the argument) for bad times, n_runs, temperature, dt or options;
        ConfigurationError (a ValueError) for an invalid or overlapping configuration;
        RuntimeError if a run explodes (non-finite energy or positions, or total energy per particle
        drifting by more than ``max_energy_drift``), naming the time and the run(s).
    """
    return _isoconfigurational_md(
        [(positions, types)], box, temperature, times, n_runs, [seed], where="isoconfigurational_runs",
        name_structures=False,
        system=system, dt=dt, platform=platform, replicas_per_context=replicas_per_context,
        structures_per_context=1, workers=workers, threads=threads, precision=precision, layout=layout,
        progress=progress, max_energy_drift=max_energy_drift, check_every=check_every, checkpoint=checkpoint,
        checkpoint_every_s=checkpoint_every_s, checkpoint_stride=checkpoint_stride, config=config,
    )[0]


def isoconfigurational_runs_many(structures, box, temperature, times, n_runs, seeds, *, system=None,
                                 dt: float | None = None, platform: str | None = None,
                                 replicas_per_context: int | None = None,
                                 structures_per_context: int | None = None, workers: int | None = None,
                                 threads: int | None = None, precision: str | None = None,
                                 layout: str | None = None, progress: bool = True,
                                 max_energy_drift: float | None = None, check_every: int | None = None,
                                 checkpoint=None, checkpoint_every_s: float | None = None,
                                 checkpoint_stride: int | None = None, config=None) -> list[np.ndarray]:
    """Isoconfigurational runs of several structures at once, their replicas sharing OpenMM Contexts.

    Every structure gets exactly what :func:`isoconfigurational_runs` would give it with its own seed:
    the same velocity draws, the same physics. Only the packing differs: a Context holds up to
    ``structures_per_context`` structures x ``replicas_per_context`` runs as z-layers (layers never
    interact, see ``tglassmlp.physics.openmm_system``). On a GPU one N = 1290 layer leaves most of the
    device idle and 20-100 layers per Context are the lever; on the CPU platform stacking does not change
    the throughput per thread, so ``structures_per_context`` = 1 (the default) costs nothing there.

    Args:
        structures: sequence of K >= 1 pairs (positions (N, 2) [sigma], types (N,) integers 0, 1, 2),
            all with the same N, in the one square box ``box`` [sigma], at the one temperature.
        box, temperature, times, n_runs: as in :func:`isoconfigurational_runs`, shared by all structures.
        seeds: K seeds; structure k's run r uses the r-th velocity draw of ``default_rng(seeds[k])``.
        structures_per_context: at most this many structures per Context (None = ``conf/md``); a Context
            then holds <= structures_per_context x replicas_per_context layers.
        system, dt, platform, replicas_per_context, workers, threads, precision, layout, progress,
            max_energy_drift, check_every, checkpoint, checkpoint_every_s, checkpoint_stride, config: as in
            :func:`isoconfigurational_runs` (one checkpoint file for all K structures). With several
            workers, structure blocks are split further by runs until every worker has a Context.

    Returns:
        list of K arrays, structure k's (n_runs, len(times), N, 2) float64 unwrapped positions [sigma].

    Reproducibility: as :func:`isoconfigurational_runs`. On the Reference platform the trajectories are
    bit-identical to running the structures one by one (measured; each particle's force is summed over the
    same pairs in the same order whatever the other layers hold); elsewhere they agree to rounding at short
    times, then diverge as chaos amplifies rounding.

    Raises:
        as :func:`isoconfigurational_runs`, the message naming ``structures[k]`` for a bad structure and
        the structure and run of an exploding run; ValueError when the structures' N differ or ``seeds``
        does not hold one seed per structure.
    """
    return _isoconfigurational_md(
        structures, box, temperature, times, n_runs, seeds, where="isoconfigurational_runs_many",
        name_structures=True,
        system=system, dt=dt, platform=platform, replicas_per_context=replicas_per_context,
        structures_per_context=structures_per_context, workers=workers, threads=threads, precision=precision,
        layout=layout, progress=progress, max_energy_drift=max_energy_drift, check_every=check_every,
        checkpoint=checkpoint, checkpoint_every_s=checkpoint_every_s, checkpoint_stride=checkpoint_stride,
        config=config,
    )


def _check_structures(structures, seeds, box, pot, where, name_structures):
    """(positions (K, N, 2), types (K, N), box, seeds list) of validated structures, or a clear error.

    Errors start with ``where``, followed by ``structures[k]`` when ``name_structures``.
    """
    if isinstance(structures, (str, bytes)) or not hasattr(structures, "__len__") or len(structures) == 0:
        raise ValueError(f"{where}: structures must be a non-empty sequence of (positions, types) pairs, "
                         f"got {type(structures).__name__}")
    k_total = len(structures)
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) != k_total:
        got = f"{len(seeds)} seed(s)" if hasattr(seeds, "__len__") else repr(seeds)
        raise ValueError(f"{where}: seeds must hold one seed per structure ({k_total}), got {got}")
    all_pos, all_types = [], []
    for k, item in enumerate(structures):
        name = f"{where}: structures[{k}]" if name_structures else where
        try:
            pos, types = item
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected a (positions, types) pair, got {type(item).__name__}") from None
        pos, types, box_k = validate_configuration(pos, types, box, where=name)
        interacting_pairs(pos, types, box_k, pot, where=name)  # box size, overlaps
        if all_pos and pos.shape[0] != all_pos[0].shape[0]:
            raise ValueError(f"{where}: all structures must have the same N (their replicas are layers of one "
                             f"box), but structures[0] has N = {all_pos[0].shape[0]} and structures[{k}] has "
                             f"N = {pos.shape[0]}")
        all_pos.append(pos)
        all_types.append(types)
        box = box_k
    return np.stack(all_pos), np.stack(all_types), box, list(seeds)


def _isoconfigurational_md(structures, box, temperature, times, n_runs, seeds, *, where, name_structures, system,
                           dt, platform, replicas_per_context, structures_per_context, workers, threads, precision,
                           layout, progress, max_energy_drift, check_every, checkpoint, checkpoint_every_s,
                           checkpoint_stride, config) -> list[np.ndarray]:
    """The one implementation behind both public functions (arguments as there).

    ``where`` prefixes error messages; ``name_structures`` names structures in them (the many-structure API)
    or only runs (the one-structure API).
    """
    cfg = md_config(config)
    pot = resolve_system(system)
    positions, types, box, seeds = _check_structures(structures, seeds, box, pot, where, name_structures)
    k_total, n = types.shape

    dt = float(cfg.dt if dt is None else dt)
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be finite and > 0, got {dt}")
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    n_runs = _positive_int(n_runs, "n_runs")
    steps = _time_steps(times, dt)
    rpc = _positive_int(cfg.replicas_per_context if replicas_per_context is None else replicas_per_context,
                        "replicas_per_context")
    spc = _positive_int(cfg.structures_per_context if structures_per_context is None else structures_per_context,
                        "structures_per_context")
    check_every = _positive_int(cfg.check_every if check_every is None else check_every, "check_every")
    stride = _positive_int(cfg.checkpoint_stride if checkpoint_stride is None else checkpoint_stride,
                           "checkpoint_stride")
    every_s = cfg.checkpoint_every_s if checkpoint_every_s is None else checkpoint_every_s
    max_drift = float(cfg.max_energy_drift if max_energy_drift is None else max_energy_drift)
    if not max_drift > 0:
        raise ValueError(f"max_energy_drift must be > 0, got {max_drift}")
    layout = cfg.layout if layout is None else layout
    precision = cfg.precision if precision is None else precision
    plat = resolve_platform(cfg.platform if platform is None else platform, precision)
    plat_name = plat.getName()
    workers = cfg.get("workers") if workers is None else workers
    workers = _default_workers(plat_name) if workers is None else _positive_int(workers, "workers")
    threads = cfg.threads if threads is None else threads
    if threads is None and plat_name == "CPU" and workers > 1:
        threads = max(1, _default_workers("CPU") // workers)
    spacing = float(cfg.replica_spacing)

    # structure k draws exactly as a one-structure call with seeds[k] does: the same n_runs draws in order
    velocities = np.empty((k_total, n_runs, n, 2))
    for k, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        for r in range(n_runs):
            velocities[k, r] = maxwell_boltzmann_velocities(n, temperature, rng, pot.mass)

    # Contexts: (block of <= spc structures) x (block of <= rpc runs), split further while there are fewer
    # Contexts than workers (each worker needs one). Layer order structure-major, run-minor.
    chunks = _split(k_total, math.ceil(k_total / spc))
    n_run_groups = max(math.ceil(n_runs / rpc), min(n_runs, math.ceil(workers / len(chunks))))
    groups = [(chunk, runs) for chunk in chunks for runs in _split(n_runs, n_run_groups)]
    max_layers = max(len(c) * len(r) for c, r in groups)
    log.info("isoconfigurational MD: %d structure(s) x %d run(s) x %d steps, N = %d, on OpenMM %s (precision %s): "
             "%d Context(s) of <= %d structure(s) x <= %d replica(s) = <= %d z-layer(s) (%d particles), "
             "%d at a time, %s thread(s) each, layout %s", k_total, n_runs, int(steps[-1]), n, plat_name,
             precision if plat_name in ("CUDA", "OpenCL") else
             {"CPU": "mixed", "Reference": "double"}.get(plat_name, precision), len(groups),
             max(len(c) for c, _ in groups), max(len(r) for _, r in groups), max_layers, max_layers * n,
             min(workers, len(groups)), threads if threads is not None else "default", layout)
    ckpt = None
    if checkpoint is not None:
        from tglassmlp.physics.md_checkpoint import MDCheckpoint, run_key

        used_precision = (precision if plat_name in ("CUDA", "OpenCL") else
                          {"CPU": "mixed", "Reference": "double"}.get(plat_name, precision))
        key = run_key(positions=positions, types=types, box=box, temperature=temperature, dt=dt, steps=steps,
                      velocities=velocities, n_runs=n_runs, pot=pot, platform=plat_name, precision=used_precision,
                      layout=layout, threads=threads if plat_name == "CPU" else None, groups=groups,
                      spacing=spacing, check_every=check_every, stride=stride)
        try:
            every_s = float(every_s)
        except (TypeError, ValueError):
            raise ValueError(f"checkpoint_every_s must be a number >= 0, got {every_s!r}") from None
        ckpt = MDCheckpoint(checkpoint, key, len(groups), (k_total, n_runs, steps.size, n, 2), every_s)
        if ckpt.loaded:
            log.info("isoconfigurational MD: resuming from %s (every Context at t >= %g of %g)", checkpoint,
                     ckpt.done_steps.min() * dt, steps[-1] * dt)
    out = ckpt.frames if ckpt is not None else np.empty((k_total, n_runs, steps.size, n, 2))
    bar = _Progress(len(groups) * int(steps[-1]), progress)
    systems: dict[tuple, openmm.System] = {}
    lock = threading.Lock()
    stop = threading.Event()  # set when a group fails, so that the others stop at their next check

    def system_for(chunk: range, n_rep: int):
        key = (chunk.start, chunk.stop, n_rep)
        with lock:
            if key not in systems:
                systems[key] = build_system(np.repeat(types[chunk.start:chunk.stop], n_rep, axis=0), box, pot,
                                            layout=layout, spacing=spacing)
            return systems[key]

    def run_group(g: int, chunk: range, runs: range):
        if stop.is_set():
            return
        resume = ckpt.group_state(g) if ckpt is not None and ckpt.loaded else None
        if resume is not None and resume[1] == steps.size:  # finished before: its frames are in the checkpoint
            bar.update(int(steps[-1]))
            return
        context = make_context(system_for(chunk, len(runs)), plat_name, threads=threads, precision=precision,
                               dt=dt)
        try:
            _integrate_group(context, chunk, runs, positions, velocities, steps, dt, pot.mass, out, bar,
                             check_every, max_drift, spacing, stop, where, name_structures=name_structures,
                             stride=stride, saver=None if ckpt is None else _Saver(ckpt, g, lock),
                             resume=resume if resume is not None and resume[3] is not None else None)
        except BaseException:
            stop.set()
            raise
        finally:
            del context

    try:
        if workers == 1 or len(groups) == 1:
            for g, group in enumerate(groups):
                run_group(g, *group)
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(groups))) as pool:
                for fut in [pool.submit(run_group, g, *group) for g, group in enumerate(groups)]:
                    fut.result()
    finally:
        bar.close()
    return list(np.array(out) if ckpt is not None else out)


class _Saver:
    """One group's access to the shared checkpoint: snapshot it and write the file when due (thread-safe)."""

    def __init__(self, ckpt, g: int, lock: threading.Lock):
        self.ckpt, self.g, self.lock = ckpt, g, lock
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.ckpt.every_s

    def save(self, context, done: int, frames_done: int, e0: float) -> None:
        blob = context.createCheckpoint() if context is not None else None
        with self.lock:
            self.ckpt.snapshot(self.g, done, frames_done, e0, blob)
            self.ckpt.write()
        self.last = time.monotonic()


def _span(word: str, r: range) -> str:
    """'run 3' or 'runs 0-4' (the same for structures)."""
    return f"{word} {r[0]}" if len(r) == 1 else f"{word}s {r[0]}-{r[-1]}"


def _integrate_group(context, chunk, runs, positions, velocities, steps, dt, mass, out, bar, check_every,
                     max_drift, spacing, stop, where, *, name_structures, stride, saver=None, resume=None):
    """Integrate structures ``chunk`` x runs ``runs``, stacked in ``context``, writing their frames into ``out``.

    positions (K, N, 2) and velocities (K, n_runs, N, 2) hold all structures; out is (K, n_runs, n_times, N, 2).
    Layer l of the Context is structure chunk[l // len(runs)], run runs[l % len(runs)].
    Every ``stride`` steps the Context is rebuilt from its own state (see tglassmlp.physics.md_checkpoint) and,
    when ``saver`` says a save is due, checkpointed. ``resume``: (done steps, frames done, e0, Context bytes)
    of a checkpoint to continue from, instead of starting at t = 0.
    """
    s, r = len(chunk), len(runs)
    layers = s * r
    n = positions.shape[1]
    integrator = context.getIntegrator()
    if resume is None:
        context.setPositions(stacked_positions(np.repeat(positions[chunk.start:chunk.stop], r, axis=0),
                                               spacing=spacing))
        f0 = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
            openmm.unit.kilojoule_per_mole / openmm.unit.nanometer) / FORCE_KJ_PER_MOL_NM
        v = np.zeros((layers * n, 3))
        v[:, :2] = velocities[chunk.start:chunk.stop, runs.start:runs.stop].reshape(layers * n, 2)
        # leapfrog half-step offset: makes OpenMM's positions those of velocity Verlet from (x0, v0)
        v -= 0.5 * dt * f0 / mass
        v[:, 2] = 0.0  # in-plane motion only (f0_z is exactly 0 anyway)
        context.setVelocities(v * VELOCITY_NM_PER_PS)

    label = (f"{_span('structure', chunk)} x {_span('run', runs)}" if name_structures else _span("run", runs))

    def layer_name(layer: int):
        k, run = chunk[layer // r], runs[layer % r]
        return f"structure {k} run {run}" if name_structures else run

    def energy():
        st = context.getState(getEnergy=True)
        return (st.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
                + st.getKineticEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)) / ENERGY_KJ_PER_MOL

    def culprits():
        """Layers holding non-finite numbers, else the layer with the largest kinetic energy."""
        try:
            st = context.getState(getPositions=True, getVelocities=True)
            x = unstack(st.getPositions(asNumpy=True)._value, layers)
            vv = unstack(st.getVelocities(asNumpy=True)._value, layers)
        except Exception:  # noqa: BLE001 - a courtesy for the message; the error raised below is the point
            return "unknown"
        bad = ~(np.isfinite(x).all(axis=(1, 2)) & np.isfinite(vv).all(axis=(1, 2)))
        if bad.any():
            return [layer_name(int(k)) for k in np.flatnonzero(bad)]
        return [layer_name(int(np.argmax(np.einsum("rni,rni->r", vv, vv))))]

    def exploded(when, why):
        return RuntimeError(
            f"{where}: MD exploded {when} in {label} (culprit run(s) {culprits()}): {why}. "
            "Check the configuration, T and dt."
        )

    if resume is None:
        start, k, e0 = 0, 0, energy()
    else:
        start, k, e0, blob = resume
        context.loadCheckpoint(blob)
        bar.update(start)
    n_total = layers * n
    done = start
    while True:
        while k < steps.size and steps[k] == done:
            x = unstack(context.getState(getPositions=True, enforcePeriodicBox=False).getPositions(asNumpy=True)
                        .value_in_unit(openmm.unit.nanometer), layers) / LENGTH_NM
            if not np.isfinite(x).all():
                raise exploded(f"at t = {done * dt:g} (step {done})", "non-finite positions")
            out[chunk.start:chunk.stop, runs.start:runs.stop, k] = x.reshape(s, r, n, 2)
            k += 1
        if k == steps.size:
            break
        if stop.is_set():  # another group failed: its error is the one raised
            return
        if done % stride == 0 and done != start:
            # the state a resumed run starts from: rebuilt Context internals (neighbour lists, ordering)
            context.reinitialize(preserveState=True)
            if saver is not None and saver.due():
                saver.save(context, done, k, e0)
        chunk_steps = int(min(check_every, steps[k] - done, stride - done % stride))
        try:
            integrator.step(chunk_steps)
        except openmm.OpenMMException as exc:
            # OpenMM stops somewhere inside the chunk without saying where
            raise exploded(f"between t = {done * dt:g} and {(done + chunk_steps) * dt:g}",
                           f"OpenMM says {exc}") from exc
        done += chunk_steps
        bar.update(chunk_steps)
        e = energy()
        if not np.isfinite(e) or abs(e - e0) / n_total > max_drift:
            raise exploded(f"at t = {done * dt:g} (step {done})",
                           f"total energy per particle went from {e0 / n_total:.6g} to {e / n_total:.6g}"
                           f" (allowed drift {max_drift:g})")
    if saver is not None:
        saver.save(None, done, k, e0)  # finished: frames only, no Context state needed

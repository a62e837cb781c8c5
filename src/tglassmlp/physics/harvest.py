"""Many equilibrium structures from one swap Monte Carlo chain (harvesting), and cooling cascades.

Why: a fresh chain pays the whole equilibration (>= 2 x n_decorrelation = 20 tau_Q of production, plus the
relaxation from its start) for ONE structure. Once a chain meets the criterion it is in equilibrium, and every
further ``harvest_spacing`` tau_Q of it yields another structure whose overlap with the previous one has decayed
(measured in benchmarks/results/swap_harvest_spacing.md: 3 tau_Q -> cage-frame overlap ~0.13). The cost per
structure then falls from ~20+ tau_Q to ``harvest_spacing`` tau_Q (benchmarks/results/swap_harvest_cost.md).

Protocol of :func:`equilibrium_structures`: the chain of :func:`tglassmlp.physics.swap_mc.equilibrium_structure`
(same seed, same moves); structure 0 is its final structure (the one ``equilibrium_structure`` returns); then the
same chain keeps running with d frozen and yields structure k after ``k x spacing_sweeps`` more production
sweeps, ``spacing_sweeps = ceil(harvest_spacing x tau_Q)`` with tau_Q measured by the criterion when it was met
(fixed from then on, so the schedule does not depend on when the run was interrupted). At every harvest the
criterion is evaluated again on the last half of the whole production so far; the report records it per
structure, with the sweep, E/N and the cage-frame overlap with the previous structure.

Checkpoints: the chain, the schedule, the records and the harvested structures live in one ``.npz`` (written
atomically after every harvest and every ``checkpoint_every_s``); a rerun resumes it and returns the same
structures as an uninterrupted run; a rerun asking for more structures extends the chain.

Cooling cascades and simulate.py's chains: :func:`shard_structure` (shard i -> chain i // structures_per_chain,
harvest i % structures_per_chain; a chain's file is shared by its shards under an exclusive lock).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from tglassmlp.physics.swap_mc import (
    EquilibrationChain,
    NotEquilibratedError,
    SwapSettings,
    load_swap_settings,
    run_samplers,
    self_overlap,
)

BACKENDS = ("numba", "opencl")


def _advance_function(backend: str):
    """The function that advances a list of chains' samplers by n sweeps, per backend."""
    if backend == "numba":
        return run_samplers
    if backend == "opencl":
        raise NotImplementedError(
            "equilibrium_structures(backend='opencl'): the batched OpenCL sampler (issue 14, item 3: "
            "BatchedSwapMonteCarlo) is not wired into harvesting yet; it plugs in as the function that advances "
            "the chains' samplers (tglassmlp.physics.harvest._advance_function). Use backend='numba'.")
    raise ValueError(f"equilibrium_structures: unknown backend {backend!r}; known: {BACKENDS}")


def structure_overlap(previous_unwrapped, current_unwrapped, box: float, settings: SwapSettings) -> float:
    """Overlap of two configurations of one chain: the fraction of particles whose displacement between them
    (cage-relative if ``settings.overlap_frame == 'cage'``, as in the criterion) is below ``overlap_a``.

    Args: unwrapped positions (N, 2) of the same particles at two times [sigma]; box side [sigma].
    """
    cage = settings.cage_radius if settings.overlap_frame == "cage" else None
    _, q = self_overlap(np.stack([previous_unwrapped, current_unwrapped]), 1.0, settings.overlap_a, 1, box=box,
                        cage_radius=cage)
    return float(q[1])


@dataclass
class HarvestReport:
    """How the structures of one chain were harvested.

    ``structures[k]``: dict with ``sweep`` (production sweeps of the chain at the harvest), ``sweep_total``
    (including the preparation), ``energy`` (E/N [epsilon]), ``overlap_previous`` (cage-frame overlap with
    structure k-1; None for k = 0), ``overlap_ok`` (overlap <= ``settings.harvest_max_overlap``),
    ``criterion_holds`` and ``reasons`` (the criterion on the last half of the production up to the harvest),
    ``tau_q`` (the criterion's tau_Q then, sweeps). ``equilibration``: the report of the chain when its
    criterion was first evaluated as final (structure 0), without traces.
    """

    temperature: float
    n_particles: int
    seed: int
    backend: str
    harvest_spacing: float
    spacing_sweeps: int
    tau_q_at_start: float | None
    criterion_met_at_start: bool
    structures: list
    equilibration: dict = field(repr=False)
    wall_time_s: float = 0.0

    @property
    def criterion_holds(self) -> list:
        """Per structure: did the chain's criterion hold when it was taken?"""
        return [bool(r["criterion_holds"]) for r in self.structures]

    @property
    def usable(self) -> list:
        """Per structure: criterion held and overlap with the previous one within the bound."""
        return [bool(r["criterion_holds"] and r["overlap_ok"]) for r in self.structures]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["criterion_holds"] = self.criterion_holds
        return out


def equilibrium_structures(temperature, n_structures: int, n_particles: int = 1290, seed: int = 0, *,
                           initial=None, backend: str = "numba", checkpoint=None, system=None,
                           settings: SwapSettings | None = None, max_sweeps: int | None = None,
                           harvest_spacing: float | None = None, strict: bool = False, progress: bool = False,
                           **overrides):
    """``n_structures`` equilibrium structures at ``temperature`` from one swap-MC chain (see the module doc).

    Args:
        temperature: k_B T [epsilon].
        n_structures: how many structures (>= 1).
        n_particles, seed, initial, system, settings, max_sweeps, overrides: as in ``equilibrium_structure``
            (``max_sweeps`` caps the equilibration production only).
        backend: "numba" (SwapMonteCarlo); "opencl" raises NotImplementedError (follow-up of issue 14).
        checkpoint: optional ``.npz`` path: the chain and its harvest, resumable after a kill at any point; a
            rerun with a larger ``n_structures`` extends it. One of other arguments (T, N, seed, start, move
            settings, harvest spacing, backend) raises ValueError.
        harvest_spacing: sweeps between structures in units of tau_Q (default ``settings.harvest_spacing``).
        strict: raise NotEquilibratedError if the criterion is not met at the end of the equilibration
            (otherwise harvest anyway: every structure is flagged by ``criterion_holds``).
        progress: print a line per block and per harvest.

    Returns:
        structures: list of (positions (N, 2) float64 in [0, box) [sigma], types (N,) int64, box [sigma]);
        report: HarvestReport.
    """
    if isinstance(n_structures, bool) or not isinstance(n_structures, (int, np.integer)) or n_structures < 1:
        raise ValueError(f"equilibrium_structures: n_structures must be an integer >= 1, got {n_structures!r}")
    if backend not in BACKENDS:
        raise ValueError(f"equilibrium_structures: unknown backend {backend!r}; known: {BACKENDS}")
    advance = _advance_function(backend)
    settings = settings or load_swap_settings()
    if harvest_spacing is not None:
        settings = replace(settings, harvest_spacing=harvest_spacing)  # validated by SwapSettings
    spacing = float(settings.harvest_spacing)
    chain = EquilibrationChain(temperature, n_particles, seed, system=system, initial=initial, settings=settings,
                               max_sweeps=max_sweeps, progress=progress, checkpoint=checkpoint, advance=advance,
                               key_extra={"harvest": {"spacing": spacing, "backend": backend}},
                               where="equilibrium_structures", **overrides)
    run, mc, n = chain.run, chain.mc, chain.n_particles
    settings = chain.settings

    def take(ev):
        """Record the chain's current configuration as the next structure (and checkpoint it)."""
        h = run["harvest"]
        unwrapped = mc.unwrapped_positions
        overlap = None
        if h["records"]:
            overlap = structure_overlap(chain.extra["last_unwrapped"], unwrapped, mc.box, settings)
        pos = mc.positions[None]
        typ = mc.types.astype(np.int8)[None]
        if h["records"]:
            pos = np.concatenate([chain.extra["positions"], pos])
            typ = np.concatenate([chain.extra["types"], typ])
        chain.extra.update(positions=pos, types=typ, last_unwrapped=unwrapped)
        h["records"].append(dict(
            index=len(h["records"]), sweep=int(run["total"]), sweep_total=int(run["sweeps_before"] + run["total"]),
            energy=mc.energy / n, overlap_previous=overlap,
            overlap_ok=overlap is None or overlap <= settings.harvest_max_overlap,
            criterion_holds=not ev["reasons"], reasons=list(ev["reasons"]), tau_q=ev["tau_q"]))
        chain.save(force=True)
        if progress:
            r = h["records"][-1]
            print(f"[harvest] T={chain.temperature:g} structure {r['index']} at sweep {r['sweep']}: E/N="
                  f"{r['energy']:.5f} overlap={overlap if overlap is None else round(overlap, 3)} "
                  f"criterion {'holds' if r['criterion_holds'] else 'NOT met'}", flush=True)

    if "harvest" not in run:
        ev = chain.equilibrate()
        eq = chain.report(ev)
        if not eq.criterion_met:
            msg = (f"equilibrium_structures(T={chain.temperature:g}, N={n}, seed={seed}): criterion NOT met after "
                   f"{eq.sweeps_production} sweeps: {'; '.join(eq.reasons)}")
            if strict:
                raise NotEquilibratedError(msg)
            warnings.warn(msg + " (harvesting anyway; every structure is flagged in report.structures)",
                          RuntimeWarning, stacklevel=2)
        # tau_Q censored (Q never fell below 1/e): the production length is a lower bound of it
        tau = ev["tau_q"] if ev["tau_q"] is not None else float(run["total"])
        run["harvest"] = dict(spacing_sweeps=max(1, int(math.ceil(spacing * tau))), tau_q=ev["tau_q"],
                              criterion_met=eq.criterion_met, records=[],
                              equilibration=eq.to_dict(traces=False))
        take(ev)
    h = run["harvest"]
    while len(h["records"]) < n_structures:
        chain.produce(h["spacing_sweeps"])
        take(chain.evaluate())
    chain.save(force=True)
    k = int(n_structures)
    structures = [(chain.extra["positions"][i].copy(), chain.extra["types"][i].astype(np.int64), mc.box)
                  for i in range(k)]
    report = HarvestReport(temperature=chain.temperature, n_particles=n, seed=int(seed), backend=backend,
                           harvest_spacing=spacing, spacing_sweeps=int(h["spacing_sweeps"]),
                           tau_q_at_start=h["tau_q"], criterion_met_at_start=bool(h["criterion_met"]),
                           structures=[dict(r) for r in h["records"][:k]], equilibration=h["equilibration"],
                           wall_time_s=chain.wall_time_s)
    return structures, report


# ====================================================================================== simulate.py's chains
def chain_of_shard(index: int, per_chain: int) -> tuple[int, int]:
    """(chain, harvest) of shard ``index`` when each chain yields ``per_chain`` structures."""
    return int(index) // int(per_chain), int(index) % int(per_chain)


def chain_file(directory, chain: int) -> Path:
    """The checkpoint of chain ``chain`` shared by the shards of one temperature folder (hidden)."""
    return Path(directory) / f".chain{int(chain):04d}.harvest.npz"


def shard_structure(temperature: float, index: int, *, directory_of, seed_of, n_particles: int, system=None,
                    settings: SwapSettings | None = None, max_sweeps: int | None = None, progress: bool = False):
    """The structure of shard ``index`` at ``temperature`` from its chain (simulate.py with harvesting).

    Shard i is harvest ``i % settings.structures_per_chain`` of chain ``i // structures_per_chain``, whose
    checkpoint ``chain_file(directory_of(T), chain)`` is shared by all its shards: an exclusive lock per chain
    file serialises them (a job whose harvest is already stored returns at once; a later one extends the chain),
    and the structures do not depend on the order the jobs run in. Chain c's seed is ``seed_of(T, c x
    structures_per_chain)`` (its first shard's seed). With ``settings.cascade`` listing T below its top rung,
    chain c starts from structure 0 of chain c one rung up (made first if missing, under that chain's lock).

    Args:
        directory_of: T -> the folder of the shards at T (chain files live there).
        seed_of: (T, shard index) -> the shard's swap-MC seed.

    Returns: positions, types, box, the chain's HarvestReport, the record of this structure (dict).
    """
    from tglassmlp.data.manifest import exclusive_lock

    settings = settings or load_swap_settings()
    per_chain = int(settings.structures_per_chain)
    chain, harvest = chain_of_shard(index, per_chain)
    temperature = float(temperature)
    initial = None
    ladder = list(settings.cascade)
    rung = next((k for k, t in enumerate(ladder) if math.isclose(t, temperature, rel_tol=0, abs_tol=1e-9)), None)
    if rung is not None and rung > 0:
        above = ladder[rung - 1]
        pos, types, box, _, _ = shard_structure(above, chain * per_chain, directory_of=directory_of, seed_of=seed_of,
                                                n_particles=n_particles, system=system, settings=settings,
                                                max_sweeps=max_sweeps, progress=progress)
        initial = (pos, types, box)
    path = chain_file(directory_of(temperature), chain)
    lock = path.with_suffix(".lock")
    t0 = time.perf_counter()
    with exclusive_lock(lock, blocking=True, what=f"swap-MC chain {path}"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the per-structure flags say it
            structures, report = equilibrium_structures(
                temperature, harvest + 1, n_particles, seed_of(temperature, chain * per_chain), initial=initial,
                checkpoint=path, system=system, settings=settings, max_sweeps=max_sweeps, progress=progress)
    pos, types, box = structures[harvest]
    if progress:
        print(f"[harvest] shard {index} = chain {chain} harvest {harvest} ({time.perf_counter() - t0:.1f} s)")
    return pos, types, box, report, report.structures[harvest]

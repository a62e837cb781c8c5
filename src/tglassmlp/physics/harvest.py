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

Cooling cascades and simulate.py's chains: :func:`tglassmlp.simulation.chains.shard_structure` (shard i ->
chain i // structures_per_chain, harvest i % structures_per_chain; a chain's file is shared by its shards under
an exclusive lock).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, replace

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

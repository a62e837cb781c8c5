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

Batches (``n_chains`` = B > 1; the default of ``backend="opencl"``, where all B chains run in one kernel launch):
the B chains go through the same protocol in lockstep (``swap_mc.EquilibrationChain``): each has its own start,
random numbers and adapted step, the equilibration production runs until every chain meets its criterion, the
spacing is set by the largest tau_Q among them, and structure k is harvest k // B of chain k % B (so the first B
structures come from B independent chains).

Checkpoints: the chain, the schedule, the records and the harvested structures live in one ``.npz`` (written
atomically after every harvest and every ``checkpoint_every_s``); a rerun resumes it and returns the same
structures as an uninterrupted run; a rerun asking for more structures extends the chain.

Cooling cascades and simulate.py's chains: :func:`tglassmlp.simulation.chains.shard_structure` (batches of
``chains_per_job`` chains, one ``equilibrium_structures`` run each; shard i is structure i % (B x
structures_per_chain) of batch i // (B x structures_per_chain); a batch's file is shared by its shards under an
exclusive lock; in a cascade chain b of a batch starts from structure b of the same batch one rung up).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from tglassmlp.physics.swap_mc import (
    SAMPLER_BACKENDS,
    EquilibrationChain,
    NotEquilibratedError,
    SwapSettings,
    load_swap_settings,
    self_overlap,
)

BACKENDS = SAMPLER_BACKENDS


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
    """How the structures of B chains (B = ``n_chains``; 1 for the default numba run) were harvested.

    ``structures[k]``: dict with ``index`` (k), ``chain`` (b = k % B) and ``harvest`` (h = k // B: structure k is
    chain b's h-th), ``sweep`` (production sweeps of the chains at the harvest), ``sweep_total`` (including the
    preparation), ``energy`` (E/N [epsilon]), ``overlap_previous`` (cage-frame overlap with the same chain's
    structure h-1; None for h = 0), ``overlap_ok`` (overlap <= ``settings.harvest_max_overlap``),
    ``criterion_holds`` and ``reasons`` (the chain's criterion on the last half of the production up to the
    harvest), ``tau_q`` (the chain's tau_Q then, sweeps). ``equilibration``: the report of chain 0 when the
    criterion was first evaluated as final (harvest 0), without traces; ``chain_equilibrations``: those of all
    chains. ``tau_q_at_start``: the largest tau_Q of the chains then (None if any was censored), which set
    ``spacing_sweeps`` (the chains run in lockstep); ``criterion_met_at_start``: every chain met it.
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
    n_chains: int = 1
    chain_equilibrations: list = field(default_factory=list, repr=False)

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


def _per_chain(array, single: bool):
    """Harvest arrays are stored (K, N, ...) for a single numba chain (the layout of older checkpoints) and
    (K, B, N, ...) otherwise; this returns the latter."""
    return array[:, None] if single else array


def equilibrium_structures(temperature, n_structures: int, n_particles: int = 1290, seed: int = 0, *,
                           initial=None, backend: str | None = None, n_chains: int | None = None, device=None,
                           checkpoint=None, system=None, settings: SwapSettings | None = None,
                           max_sweeps: int | None = None, harvest_spacing: float | None = None, strict: bool = False,
                           progress: bool = False, **overrides):
    """``n_structures`` equilibrium structures at ``temperature`` from B swap-MC chains (see the module doc).

    Args:
        temperature: k_B T [epsilon].
        n_structures: how many structures (>= 1).
        n_particles, seed, initial, system, settings, max_sweeps, overrides: as in ``equilibrium_structure``
            (``max_sweeps`` caps the equilibration production only); ``initial`` may also be a list of B
            (positions, types, box), one start per chain (one N and box).
        backend: "numba" (SwapMonteCarlo per chain) or "opencl" (all chains in one batched kernel,
            ``swap_mc_opencl``); default ``settings.backend`` (conf/swap: numba).
        n_chains: B, the chains run in lockstep through one protocol (``swap_mc.EquilibrationChain``); structure
            k is harvest k // B of chain k % B. Default: 1 for numba, ``n_structures`` for opencl (one structure
            per chain, all chains in one kernel).
        device: OpenCL device (None: a GPU if any, else the CPU), see ``swap_mc_opencl.pick_device``.
        checkpoint: optional ``.npz`` path: the chains and their harvest, resumable after a kill at any point; a
            rerun with a larger ``n_structures`` (and the same B) extends them. One of other arguments (T, N,
            seed, start, move settings, harvest spacing, backend, B) raises ValueError.
        harvest_spacing: sweeps between structures of a chain in units of tau_Q (default
            ``settings.harvest_spacing``); with B chains, of the largest tau_Q among them.
        strict: raise NotEquilibratedError if the criterion is not met at the end of the equilibration
            (otherwise harvest anyway: every structure is flagged by ``criterion_holds``).
        progress: print a line per block and per harvest.

    Returns:
        structures: list of (positions (N, 2) float64 in [0, box) [sigma], types (N,) int64, box [sigma]);
        report: HarvestReport.
    """
    if isinstance(n_structures, bool) or not isinstance(n_structures, (int, np.integer)) or n_structures < 1:
        raise ValueError(f"equilibrium_structures: n_structures must be an integer >= 1, got {n_structures!r}")
    settings = settings or load_swap_settings()
    backend = settings.backend if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"equilibrium_structures: unknown backend {backend!r}; known: {BACKENDS}")
    if n_chains is None:
        n_chains = 1 if backend == "numba" else int(n_structures)
    if harvest_spacing is not None:
        settings = replace(settings, harvest_spacing=harvest_spacing)  # validated by SwapSettings
    spacing = float(settings.harvest_spacing)
    chain = EquilibrationChain(temperature, n_particles, seed, system=system, initial=initial, settings=settings,
                               max_sweeps=max_sweeps, progress=progress, checkpoint=checkpoint, backend=backend,
                               n_chains=n_chains, device=device,
                               key_extra={"harvest": {"spacing": spacing, "backend": backend}},
                               where="equilibrium_structures", **overrides)
    run, sampler, n, n_b = chain.run, chain.sampler, chain.n_particles, chain.n_chains
    single = sampler.single_layout
    settings = chain.settings

    def take(evs):
        """Record every chain's current configuration as its next structure (and checkpoint them)."""
        h = run["harvest"]
        unwrapped = sampler.unwrapped_positions()
        pos = np.stack([sampler.positions(b) for b in range(n_b)])[None]
        typ = np.stack([sampler.types(b) for b in range(n_b)]).astype(np.int8)[None]
        first = not h["records"]
        if not first:
            pos = np.concatenate([_per_chain(chain.extra["positions"], single), pos])
            typ = np.concatenate([_per_chain(chain.extra["types"], single), typ])
            previous = _per_chain(chain.extra["last_unwrapped"][None], single)[0]
        harvest_index = pos.shape[0] - 1
        for b, ev in enumerate(evs):
            overlap = None if first else structure_overlap(previous[b], unwrapped[b], sampler.box, settings)
            h["records"].append(dict(
                index=len(h["records"]), chain=b, harvest=harvest_index, sweep=int(run["total"]),
                sweep_total=int(run["sweeps_before"] + run["total"]), energy=sampler.energy(b) / n,
                overlap_previous=overlap, overlap_ok=overlap is None or overlap <= settings.harvest_max_overlap,
                criterion_holds=not ev["reasons"], reasons=list(ev["reasons"]), tau_q=ev["tau_q"]))
        if single:
            pos, typ, unwrapped = pos[:, 0], typ[:, 0], unwrapped[0]
        chain.extra.update(positions=pos, types=typ, last_unwrapped=unwrapped)
        chain.save(force=True)
        if progress:
            for r in h["records"][-n_b:]:
                o = r["overlap_previous"]
                print(f"[harvest] T={chain.temperature:g} structure {r['index']} (chain {r['chain']}, harvest "
                      f"{r['harvest']}) at sweep {r['sweep']}: E/N={r['energy']:.5f} "
                      f"overlap={o if o is None else round(o, 3)} "
                      f"criterion {'holds' if r['criterion_holds'] else 'NOT met'}", flush=True)

    if "harvest" not in run:
        evs = chain.equilibrate()
        eqs = [chain.report(ev, b) for b, ev in enumerate(evs)]
        unmet = [b for b, eq in enumerate(eqs) if not eq.criterion_met]
        if unmet:
            msg = (f"equilibrium_structures(T={chain.temperature:g}, N={n}, seed={seed}): criterion NOT met by "
                   f"chain(s) {unmet} of {n_b} after {eqs[0].sweeps_production} sweeps: "
                   f"{'; '.join(eqs[unmet[0]].reasons)}")
            if strict:
                raise NotEquilibratedError(msg)
            warnings.warn(msg + " (harvesting anyway; every structure is flagged in report.structures)",
                          RuntimeWarning, stacklevel=2)
        # tau_Q censored (Q never fell below 1/e): the production length is a lower bound of it; chains in
        # lockstep share one spacing, set by the slowest of them
        taus = [ev["tau_q"] for ev in evs]
        tau = max(t if t is not None else float(run["total"]) for t in taus)
        run["harvest"] = dict(spacing_sweeps=max(1, int(math.ceil(spacing * tau))),
                              tau_q=None if None in taus else float(max(taus)), criterion_met=not unmet,
                              records=[], equilibration=eqs[0].to_dict(traces=False),
                              chain_equilibrations=[eq.to_dict(traces=False) for eq in eqs])
        take(evs)
    h = run["harvest"]
    for k, r in enumerate(h["records"]):  # records of single-chain checkpoints before batching
        r.setdefault("chain", 0)
        r.setdefault("harvest", k)
    h.setdefault("chain_equilibrations", [h["equilibration"]])
    while len(h["records"]) < n_structures:
        chain.produce(h["spacing_sweeps"])
        take(chain.evaluate())
    chain.save(force=True)
    k = int(n_structures)
    positions = _per_chain(chain.extra["positions"], single)
    types = _per_chain(chain.extra["types"], single)
    structures = [(positions[i // n_b, i % n_b].copy(), types[i // n_b, i % n_b].astype(np.int64), sampler.box)
                  for i in range(k)]
    report = HarvestReport(temperature=chain.temperature, n_particles=n, seed=int(seed), backend=backend,
                           harvest_spacing=spacing, spacing_sweeps=int(h["spacing_sweeps"]),
                           tau_q_at_start=h["tau_q"], criterion_met_at_start=bool(h["criterion_met"]),
                           structures=[dict(r) for r in h["records"][:k]], equilibration=h["equilibration"],
                           wall_time_s=chain.wall_time_s, n_chains=n_b,
                           chain_equilibrations=list(h["chain_equilibrations"]))
    return structures, report

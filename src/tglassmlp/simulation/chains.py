"""simulate.py's swap-MC chains: which chain and harvest a shard is, the chain files shared by shards, cascades.

The sampling itself is :func:`tglassmlp.physics.harvest.equilibrium_structures`; this module maps the sharded
dataset onto chains (shard names never change: shard i is harvest i % per_chain of chain i // per_chain).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

from tglassmlp.data.manifest import exclusive_lock
from tglassmlp.physics.harvest import equilibrium_structures
from tglassmlp.physics.swap_mc import SwapSettings, load_swap_settings


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
                checkpoint=path, system=system, settings=settings, max_sweeps=max_sweeps, progress=progress,
                n_chains=1)
    pos, types, box = structures[harvest]
    if progress:
        print(f"[harvest] shard {index} = chain {chain} harvest {harvest} ({time.perf_counter() - t0:.1f} s)")
    return pos, types, box, report, report.structures[harvest]

"""simulate.py's swap-MC chains: which chain and harvest a shard is, the chain files shared by shards, batches of
chains run together (``swap.chains_per_job``), cascades.

The sampling itself is :func:`tglassmlp.physics.harvest.equilibrium_structures`; this module maps the sharded
dataset onto chains. With K = ``structures_per_chain`` and B = ``chains_per_job``, the chains of one temperature
are grouped in batches of B consecutive chains, each batch one ``equilibrium_structures(..., n_chains=B)`` run
(B = 1: one chain, today's layout). Shard i is structure k = i % (B K) of batch g = i // (B K) in that run's
order, i.e. harvest k // B of the batch's chain b = k % B (chain g B + b of the folder); for B = 1 this is
harvest i % K of chain i // K. Harvest-major inside a batch, so that one harvest of every chain of a batch is B
consecutive shards: one simulate.py job (``structures_of_job``), swept as ``structure_index='range(0,S,B)'``.
Shard names never change.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import replace
from pathlib import Path

from tglassmlp.data.manifest import exclusive_lock
from tglassmlp.physics.harvest import equilibrium_structures
from tglassmlp.physics.swap_mc import SwapSettings, load_swap_settings

# file names of batches: B = 1 ".chain0007.harvest.npz" (one chain, today's name); B > 1
# ".chains0008-0011.harvest.npz" (chains 8 .. 11), so that B can be read from the name alone
_BATCH_NAME = re.compile(r"^\.chain(?:(\d+)|s(\d+)-(\d+))\.harvest\.npz$")


def batch_of_shard(index: int, per_chain: int, per_job: int = 1) -> tuple[int, int]:
    """(batch g, structure k of the batch's ``equilibrium_structures`` run) of shard ``index``."""
    size = int(per_chain) * int(per_job)
    return int(index) // size, int(index) % size


def chain_of_shard(index: int, per_chain: int, per_job: int = 1) -> tuple[int, int]:
    """(chain, harvest) of shard ``index``: chain g B + k % B of the folder, harvest k // B (see the module doc;
    B = ``per_job`` = 1: chain index // per_chain, harvest index % per_chain)."""
    g, k = batch_of_shard(index, per_chain, per_job)
    return g * int(per_job) + k % int(per_job), k // int(per_job)


def batch_file(directory, batch: int, per_job: int = 1) -> Path:
    """The checkpoint of batch ``batch`` of ``per_job`` chains, shared by its shards (hidden)."""
    if int(per_job) == 1:
        return chain_file(directory, batch)
    first = int(batch) * int(per_job)
    return Path(directory) / f".chains{first:04d}-{first + int(per_job) - 1:04d}.harvest.npz"


def chain_file(directory, chain: int) -> Path:
    """The checkpoint of chain ``chain`` run alone (``chains_per_job`` = 1) in a temperature folder (hidden)."""
    return Path(directory) / f".chain{int(chain):04d}.harvest.npz"


def chains_per_job_of(path) -> int | None:
    """B of a batch file, read from its name (None for a name that is no batch file's)."""
    m = _BATCH_NAME.match(Path(path).name)
    if m is None:
        return None
    return 1 if m.group(1) is not None else int(m.group(3)) - int(m.group(2)) + 1


def check_chains_per_job(directory, per_job: int) -> None:
    """Refuse to start a batch of ``per_job`` chains in a folder that holds batches of another size: B decides
    the chains (batch seeds, lockstep schedule), so shards of two B would silently be two datasets."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        other = chains_per_job_of(path)
        if other is not None and other != int(per_job):
            raise ValueError(
                f"swap.chains_per_job = {int(per_job)}, but {directory} holds chains made with "
                f"swap.chains_per_job = {other} ({path.name}); the batch size changes the chains, so one dataset "
                f"keeps one: rerun with swap.chains_per_job={other}, or delete that folder's .chain*.harvest.npz "
                "files and the shards made from them")


def batch_structures(temperature: float, batch: int, n_structures: int, *, directory_of, seed_of, n_particles: int,
                     system=None, settings: SwapSettings | None = None, max_sweeps: int | None = None,
                     progress: bool = False):
    """The first ``n_structures`` structures of batch ``batch`` at ``temperature`` (made or read from its file).

    The batch's file ``batch_file(directory_of(T), batch, B)`` is shared by its shards: an exclusive lock per
    batch file serialises them (a job whose structures are stored returns at once, a later one extends the
    chains), and the structures do not depend on the order the jobs run in. Seed: ``seed_of(T, g B K)`` (the
    batch's first shard's); chain b of the batch draws from ``swap_mc.chain_rngs(seed, B)[b]`` (numba) or the
    Philox streams keyed by (seed, b) (OpenCL): independent of the other chains and reproducible. With
    ``settings.cascade`` listing T below its top rung, chain b starts from structure b (harvest 0 of chain b) of
    the same batch one rung up (made first if missing, under that batch's lock).

    Args:
        directory_of: T -> the folder of the shards at T (batch files live there).
        seed_of: (T, shard index) -> the shard's swap-MC seed.

    Returns: (structures, HarvestReport) of ``equilibrium_structures`` for the whole batch.
    """
    settings = settings or load_swap_settings()
    per_chain, per_job = int(settings.structures_per_chain), int(settings.chains_per_job)
    temperature = float(temperature)
    kw = dict(directory_of=directory_of, seed_of=seed_of, n_particles=n_particles, system=system,
              settings=settings, max_sweeps=max_sweeps, progress=progress)
    initial = None
    ladder = list(settings.cascade)
    rung = next((k for k, t in enumerate(ladder) if math.isclose(t, temperature, rel_tol=0, abs_tol=1e-9)), None)
    if rung is not None and rung > 0:
        above, _ = batch_structures(ladder[rung - 1], batch, per_job, **kw)
        # B = 1: the one start itself (today's chain and checkpoint key)
        initial = above[0] if per_job == 1 else list(above[:per_job])
    path = batch_file(directory_of(temperature), batch, per_job)
    with exclusive_lock(path.with_suffix(".lock"), blocking=True, what=f"swap-MC chains {path}"):
        if not path.exists():
            check_chains_per_job(path.parent, per_job)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the per-structure flags say it
            return equilibrium_structures(
                temperature, int(n_structures), n_particles, seed_of(temperature, batch * per_job * per_chain),
                initial=initial, checkpoint=path, system=system, settings=settings, max_sweeps=max_sweeps,
                progress=progress, n_chains=per_job)


def shard_structure(temperature: float, index: int, *, directory_of, seed_of, n_particles: int, system=None,
                    settings: SwapSettings | None = None, max_sweeps: int | None = None, progress: bool = False):
    """The structure of shard ``index`` at ``temperature`` from its batch of chains (simulate.py with harvesting,
    cascades or ``chains_per_job`` > 1): structure ``batch_of_shard(index, K, B)[1]`` of
    :func:`batch_structures`; the arguments are its.

    Returns: positions, types, box, the HarvestReport of the shard's chain (for B > 1 the batch's report reduced
    to that chain: its structures' records and its equilibration), the record of this structure (dict).
    """
    settings = settings or load_swap_settings()
    per_chain, per_job = int(settings.structures_per_chain), int(settings.chains_per_job)
    batch, k = batch_of_shard(index, per_chain, per_job)
    t0 = time.perf_counter()
    structures, report = batch_structures(temperature, batch, k + 1, directory_of=directory_of, seed_of=seed_of,
                                          n_particles=n_particles, system=system, settings=settings,
                                          max_sweeps=max_sweeps, progress=progress)
    pos, types, box = structures[k]
    record = report.structures[k]
    if per_job > 1:
        b = k % per_job
        report = replace(report, structures=[r for r in report.structures if r["chain"] == b],
                         equilibration=report.chain_equilibrations[b],
                         chain_equilibrations=[report.chain_equilibrations[b]])
    if progress:
        chain, harvest = chain_of_shard(index, per_chain, per_job)
        print(f"[harvest] shard {index} = chain {chain} harvest {harvest} ({time.perf_counter() - t0:.1f} s)")
    return pos, types, box, report, record

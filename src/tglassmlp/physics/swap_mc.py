"""Swap Monte Carlo for the 2D ternary Kob-Andersen mixture: equilibrium structures down to T_g ~ 0.15.

Moves (Metropolis acceptance ``min(1, exp(-dE / T))``, float64 throughout):

* displacement (probability ``1 - swap_fraction``): a particle i chosen uniformly, shifted by a vector uniform
  in the square ``[-d, d]^2``. The proposal is symmetric, so detailed balance holds with Metropolis acceptance.
* identity swap (probability ``swap_fraction``): one unordered type pair (a, b) chosen uniformly from
  ``swap_pairs``, then i uniformly among the n_a particles of type a and j uniformly among the n_b of type b;
  the proposal exchanges their types. Its probability ``1 / (P n_a n_b)`` equals that of the reverse move
  (which picks the same pair, j among the type-a particles and i among the type-b ones) because a swap
  conserves the counts per type: the proposal is symmetric. (Choosing i uniformly among all N and then j
  among the complementary type is also symmetric once both orders of picking are summed; the pair-first
  scheme is simpler to reason about and is what is tested by exact enumeration in tests/test_swap_mc.py.)

Energy change of a swap: with E_i^{\\j}(t) = sum_{k != i, j} V_{t, t_k}(r_ik),
``dE = E_i^{\\j}(b) - E_i^{\\j}(a) + E_j^{\\i}(a) - E_j^{\\i}(b)``; the mutual pair (i, j) is left out because
V_ab(r_ij) = V_ba(r_ij): the pair's type set {a, b} does not change.

Moves that would bring a pair closer than ``overlap_distance * sigma_ab`` (V >~ 8e3 epsilon) are rejected
without evaluating the Boltzmann factor; for the temperatures used here (T <= 2) that factor underflows to
zero in float64 anyway, so the chain is unchanged.

Kernel: numba (``cache=True``), Verlet lists. Each particle lists the particles within the largest cutoff (2.5
sigma_00, whatever the types: swaps change them) + ``verlet_skin`` of where the lists were built (``ref``); the
lists are complete while every particle, and a proposed position, lies within skin / 2 of its ``ref``, and are
rebuilt (O(N), cell list of side >= the list radius; all pairs in tiny boxes) when a proposal would leave that
range. A move then sums over ~40 candidates instead of 25 cells (~50 particles). Memory layout (what sets the
speed at large N): the kernel keeps its own copy of the positions and int8 types in Z-curve order of ~1 sigma
cells (``order``: kernel index -> particle index, fixed at ``reset``), so a particle's neighbours sit near it in
memory; the random numbers still pick particles by their own index (mapped through the inverse order, int32), so
the moves are those of the cell-list kernel. During a run a displacement reads and writes positions in kernel
order only (the unwrapped positions are kept in kernel order and written back, with the wrapped ones, when the run
returns): no access at a random place of the particle-order arrays per move. The list rows are stored by particle
index (their entries are kernel indices): a move finds its row from the drawn index without waiting for the index
map. Prefetch (from ``PREFETCH_MIN_PARTICLES`` on, where a move otherwise waits on the memory for its particle's
row and coordinates): the random numbers reach the chain through a 16-deep look-ahead buffer, so the next move's
particle(s) are known while this move computes (a move draws 4 numbers, plus the acceptance draw if it gets that
far: the next move starts 4 or 5 numbers on; both candidates are decoded), and their list rows, positions, list
references, types and unwrapped positions are prefetched (llvm.prefetch). The generator, which ran 16 numbers
ahead, is set back to the consumed count when a run returns (PCG64: a jump; other bit generators: drawn again), so
the stream, the chain and a checkpoint's generator state are those of one ``rng.random()`` per number. The energy
loops may reassociate their sums (``fastmath`` reassoc / contract / arcp, not nnan / ninf), which lets LLVM
vectorise them over the list: dE then differs from a sequential sum at the level of rounding, and a sum's rounding
depends on the list layout, so a checkpoint stores the lists' reference positions and skin, and a resumed chain
rebuilds the very same lists. Pairs use the minimum image (branch-free), also right in boxes > 2 cutoffs too small
for cells; smaller boxes are refused. The pair energy is ``system.pair_terms`` compiled by numba: one
implementation of the pair physics in the package. Measured against the cell-list kernel
(``benchmarks/swap_kernel_ab.py``): the same chain (positions bit for bit after 1e5 sweeps at N = 1290 and 200 at
N = 82560), 2.2-2.9x the moves per second at N = 1290 and 82560; see docs/swap-mc.md.

Random numbers: a ``numpy.random.Generator`` passed into the compiled kernel (numba supports it; read through the
look-ahead buffer above), so a seed fixes the whole chain, and consecutive calls continue one stream.

Displacement step: adapted (towards ``target_acceptance``) only while melting, annealing and at the start
of the run at the target T; frozen during the production run on which the equilibration criterion is
measured. A step that depends on the chain's history makes the chain non-Markovian and breaks detailed
balance; adapting only during burn-in (which is discarded) is harmless.

Checkpoints: ``equilibrium_structure(..., checkpoint=path)`` saves the whole chain (``SwapMonteCarlo.state_dict``:
configuration, cell and by-type lists in their current order, generator state; plus snapshots, trace and
the stage of the protocol) atomically, so that a rerun resumes the very same chain after a kill.

Settings: ``conf/swap/default.yaml`` (read by ``load_swap_settings``); nothing is hard-coded here.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import cgutils
from numba.core.extending import intrinsic

from tglassmlp.atomic import save_npz_atomic
from tglassmlp.physics.configuration import ConfigurationError, validate_configuration
from tglassmlp.physics.swap_settings import (  # noqa: F401  (re-exported: the sampler's public settings)
    OVERLAP_FRAMES, SAMPLER_BACKENDS, SwapSettings, _check_swap_pairs, load_swap_settings, positive_finite)
from tglassmlp.physics.system import N_TYPES, PairPotential, pair_terms, resolve_system

# Q(t) = 1/e defines the decorrelation time tau_Q
DECAY_LEVEL = math.exp(-1.0)
# Sokal's automatic window for the integrated autocorrelation time: smallest W with W >= C * tau(W)
SOKAL_WINDOW_C = 5.0
# the Verlet skin is at least this times the displacement half-width d: 2 sqrt(2) d (a step's largest length,
# twice) with a margin, so that a proposal from a freshly built list's reference position lies within skin / 2
VERLET_SKIN_PER_STEP = 2.83
# side of the cells whose Z-curve order is the kernel's memory order [sigma] (~1 particle per cell)
SORT_CELL_SIDE = 1.0
# the kernel prefetches the next move's data from this N on (below, the data sit in the L2 cache and the prefetch
# instructions cost more than they save). Measured (Intel Xeon, 2 MB L2 per core; moves/s with / without
# prefetch, without swaps, with swaps): 0.87, 0.87 at N = 1290; 0.88, 0.90 at 5160; 1.06, 1.00 at 20640;
# 1.4, 1.4 at 82560
PREFETCH_MIN_PARTICLES = 20000

# error_model="numpy": float division by zero gives inf instead of a Python exception check per division
# (measured ~2x faster inner loop); r2 = 0 cannot reach the pair function (overlaps are caught first)
_JIT = dict(cache=True, error_model="numpy")
# the energy loops may reassociate their sums (so that LLVM vectorises them over the Verlet list: ~2x), contract
# to FMA and use reciprocals: dE changes at the level of rounding only. Not nnan / ninf: an overlapping proposal
# makes inf / nan pair energies that a select discards
_JITF = dict(cache=True, error_model="numpy", fastmath={"reassoc", "contract", "arcp", "nsz"})
_pair = numba.njit(**_JIT)(pair_terms)


class NotEquilibratedError(RuntimeError):
    """The equilibration criterion was not met (raised by ``equilibrium_structure(..., strict=True)``)."""


# ====================================================================================== compiled kernel
@numba.njit(**_JIT)
def _fill_verlet(xs, box, rlist2, m, cell_start, cell_members, rows, nbr, nn):
    """Writes the neighbours (kernel indices, cell visiting order) of kernel particle i into row ``rows[i]``
    of ``nbr`` and their number into ``nn[rows[i]]``; returns False (rows incomplete) if a row is too narrow.
    m >= 3: cell list of side >= the list radius (cell_start (m*m + 1,), cell_members (N,): particles by
    cell); m = 0: all pairs (tiny boxes)."""
    n = xs.shape[0]
    width = nbr.shape[1]
    inv_box = 1.0 / box
    ok = True
    for i in range(n):
        x = xs[i, 0]
        y = xs[i, 1]
        r = rows[i]
        k = 0
        if m == 0:
            for j in range(n):
                dx = xs[j, 0] - x
                dy = xs[j, 1] - y
                dx -= box * np.rint(dx * inv_box)
                dy -= box * np.rint(dy * inv_box)
                if j != i and dx * dx + dy * dy < rlist2:
                    if k < width:
                        nbr[r, k] = j
                    k += 1
        else:
            cx = min(int(x * m * inv_box), m - 1)
            cy = min(int(y * m * inv_box), m - 1)
            for ox in range(-1, 2):
                nx = cx + ox
                sx = 0.0
                if nx < 0:
                    nx += m
                    sx = -box
                elif nx >= m:
                    nx -= m
                    sx = box
                for oy in range(-1, 2):
                    ny = cy + oy
                    sy = 0.0
                    if ny < 0:
                        ny += m
                        sy = -box
                    elif ny >= m:
                        ny -= m
                        sy = box
                    c = nx * m + ny
                    for q in range(cell_start[c], cell_start[c + 1]):
                        j = cell_members[q]
                        dx = xs[j, 0] + sx - x
                        dy = xs[j, 1] + sy - y
                        if j != i and dx * dx + dy * dy < rlist2:
                            if k < width:
                                nbr[r, k] = j
                            k += 1
        nn[r] = k
        if k > width:
            ok = False
    return ok


@numba.njit(**_JIT)
def _build_verlet(xs, box, rlist, rows):
    """Verlet lists of radius ``rlist`` around the positions ``xs`` (N, 2) (kernel order).

    Returns nbr (N, K) int32 (row ``rows[k]``: the kernel indices of the neighbours of kernel particle k, -1
    after), nn (N,) int32 (their numbers, by row), ref (N, 2) (a copy of xs: where the lists were built).
    rows = order (kernel index -> particle index): a move finds its row from the particle index the random
    numbers drew, in parallel with (not after) the lookup of its kernel index. A pure function of (xs, box,
    rlist, rows): a checkpoint that stores ref and the skin rebuilds the very same lists.
    """
    n = xs.shape[0]
    m = int(box // rlist)
    if m < 3:  # the 3 x 3 stencil would visit cells twice: all pairs
        m = 0
    cell_start = np.zeros(m * m + 1, dtype=np.int64)
    cell_members = np.empty(n, dtype=np.int64)
    if m > 0:
        cell = np.empty(n, dtype=np.int64)
        inv = m / box
        for i in range(n):
            cx = min(int(xs[i, 0] * inv), m - 1)
            cy = min(int(xs[i, 1] * inv), m - 1)
            cell[i] = cx * m + cy
            cell_start[cell[i] + 1] += 1
        for c in range(m * m):
            cell_start[c + 1] += cell_start[c]
        fill = cell_start[:-1].copy()
        for i in range(n):
            cell_members[fill[cell[i]]] = i
            fill[cell[i]] += 1
    rlist2 = rlist * rlist
    nn = np.zeros(n, dtype=np.int32)
    # twice the mean number of particles within rlist, + 16: rows rarely overflow (then: once more, wider)
    width = min(int(2.0 * n / (box * box) * math.pi * rlist2) + 16, max(n - 1, 1))
    nbr = np.full((n, width), -1, dtype=np.int32)
    if not _fill_verlet(xs, box, rlist2, m, cell_start, cell_members, rows, nbr, nn):
        nbr = np.full((n, int(nn.max())), -1, dtype=np.int32)
        _fill_verlet(xs, box, rlist2, m, cell_start, cell_members, rows, nbr, nn)
    elif n > 0 and nn.max() < width:  # rows as narrow as the longest list: less memory to stream
        nbr = nbr[:, : max(int(nn.max()), 1)].copy()
    return nbr, nn, xs.copy()


@numba.njit(**_JITF)
def _energy_two_types(x, y, ta, tb, skip, cand, n_cand, xs, ts, box, eps, sig2, rc2, ov2, c0, c2, c4):
    """Energies of a particle placed at (x, y) if it had type ta and if it had type tb [epsilon], summed over
    the candidates ``cand[:n_cand]`` (ascending indices) except ``skip`` (-1: none).

    Returns (ea, eb, overlap_a, overlap_b): overlap_* flags a pair closer than the overlap distance.
    The minimum image is taken per pair (branch-free; also right for tiny boxes > 2 cutoffs).
    """
    inv_box = 1.0 / box
    ea = 0.0
    eb = 0.0
    ova = False
    ovb = False
    # both types always (no branch in the loop, so that it vectorises); ta == tb (total energy) pays twice
    for k in range(n_cand):
        j = cand[k]
        dx = xs[j, 0] - x
        dy = xs[j, 1] - y
        dx -= box * np.rint(dx * inv_box)
        dy -= box * np.rint(dy * inv_box)
        r2 = dx * dx + dy * dy
        tj = ts[j]
        # excluded particles and pairs beyond the cutoff add exactly 0.0 (a select, not a jump: the cutoff test
        # is true for ~70 % of the list in no predictable order, and a mispredicted jump costs more than the
        # pair arithmetic)
        keep = j != skip
        v, _ = _pair(r2, eps[ta, tj], sig2[ta, tj], c0, c2, c4)
        ea += v if (r2 < rc2[ta, tj]) & keep else 0.0
        ova |= (r2 < ov2[ta, tj]) & keep
        v, _ = _pair(r2, eps[tb, tj], sig2[tb, tj], c0, c2, c4)
        eb += v if (r2 < rc2[tb, tj]) & keep else 0.0
        ovb |= (r2 < ov2[tb, tj]) & keep
    return ea, eb, ova, ovb


@numba.njit(**_JITF)
def _displacement_delta(i, x, y, cand, n_cand, xs, ts, box, eps, sig2, rc2, ov2, c0, c2, c4):
    """Energy change of moving particle i (kernel index) to the wrapped position (x, y), summed over the
    candidates ``cand[:n_cand]`` (ascending; must hold every particle within the cutoff of both positions, i
    itself excluded); overlap flag of the new position. Old and new pair energies in one pass."""
    inv_box = 1.0 / box
    t = ts[i]
    xo = xs[i, 0]
    yo = xs[i, 1]
    de = 0.0
    ov = False
    for k in range(n_cand):
        j = cand[k]
        xj = xs[j, 0]
        yj = xs[j, 1]
        tj = ts[j]
        rc = rc2[t, tj]
        e_ = eps[t, tj]
        s_ = sig2[t, tj]
        dx = xj - xo
        dy = yj - yo
        dx -= box * np.rint(dx * inv_box)
        dy -= box * np.rint(dy * inv_box)
        r2o = dx * dx + dy * dy
        dx = xj - x
        dy = yj - y
        dx -= box * np.rint(dx * inv_box)
        dy -= box * np.rint(dy * inv_box)
        r2n = dx * dx + dy * dy
        # branch-free cutoffs (see _energy_two_types); an overlapping new position may give inf/nan here, but
        # then ov is set and the move is rejected before dE is used
        vo, _ = _pair(r2o, e_, s_, c0, c2, c4)
        vn, _ = _pair(r2n, e_, s_, c0, c2, c4)
        de += (vn if r2n < rc else 0.0) - (vo if r2o < rc else 0.0)
        ov |= r2n < ov2[t, tj]
    return de, ov


@numba.njit(**_JIT)
def _swap_delta(i, j, cand_i, n_i, cand_j, n_j, xs, ts, box, eps, sig2, rc2, ov2, c0, c2, c4):
    """Energy change of exchanging the types of particles i and j (kernel indices); overlap flag."""
    a = ts[i]
    b = ts[j]
    ia, ib, _, ovi = _energy_two_types(xs[i, 0], xs[i, 1], a, b, j, cand_i, n_i, xs, ts, box, eps, sig2, rc2,
                                       ov2, c0, c2, c4)
    jb, ja, _, ovj = _energy_two_types(xs[j, 0], xs[j, 1], b, a, i, cand_j, n_j, xs, ts, box, eps, sig2, rc2,
                                       ov2, c0, c2, c4)
    # the (i, j) pair itself: V_ab = V_ba, unchanged; its overlap threshold is symmetric too
    return (ib - ia) + (ja - jb), ovi or ovj


@numba.njit(**_JIT)
def _total_energy(nbr, nn, order, xs, ts, box, eps, sig2, rc2, ov2, c0, c2, c4):
    """Total potential energy [epsilon] (each pair counted from both ends, halved; kernel order)."""
    e = 0.0
    for i in range(xs.shape[0]):
        r = order[i]
        ei, _, _, _ = _energy_two_types(xs[i, 0], xs[i, 1], ts[i], ts[i], -1, nbr[r], nn[r], xs, ts, box, eps, sig2,
                                        rc2, ov2, c0, c2, c4)
        e += ei
    return 0.5 * e


@intrinsic
def _prefetch(typingctx, arr, flat_index):
    """Hint the cache to fetch element ``flat_index`` of the C-contiguous array ``arr`` (llvm.prefetch: read,
    high locality). No bounds check is needed: a prefetch never faults, and a wrong address costs a line only."""
    if not isinstance(arr, numba.types.Array) or not isinstance(flat_index, numba.types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = llvm_ir.IntType(8).as_pointer()
        i32 = llvm_ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, llvm_ir.FunctionType(llvm_ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(builder.gep(ary.data, [args[1]]), i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return numba.types.void(arr, flat_index), codegen


# the kernel's generator runs this many numbers ahead of the chain (a power of 2 above the furthest peek: a move's
# 4 or 5 numbers, then the next move's first 4)
LOOKAHEAD = 16


@numba.njit(inline="always", **_JIT)
def _draw(rng, look, drawn):
    """The chain's next uniform number. ``look`` holds the next LOOKAHEAD numbers of the stream (number c at
    look[c % LOOKAHEAD]; drawn[0] = numbers consumed so far); the consumed slot is refilled from ``rng``, which
    thus runs LOOKAHEAD numbers ahead of the chain (``_rewind`` takes it back when the run returns). The chain
    sees the very numbers that ``rng.random()`` calls would give it, in the same order. Inlined and branch-free:
    a variant with a branch here (direct draws when not prefetching) made the whole kernel ~30 % slower."""
    c = drawn[0]
    v = look[c & (LOOKAHEAD - 1)]
    look[c & (LOOKAHEAD - 1)] = rng.random()
    drawn[0] = c + 1
    return v


@numba.njit(**_JIT)
def _prefetch_particle(i, kernel_index, xs, ref, ts, uxs, nbr, nn):
    """Prefetch what a move of particle i (particle index) reads or writes first: its list row and length, its
    position, list reference position, type and unwrapped position (each left out measured slower at N = 82560;
    the positions of the row's particles too, one move further ahead, measured slower as well)."""
    width = nbr.shape[1]
    base = i * width
    for q in range(0, width, 16):  # 16 int32 per 64-byte line
        _prefetch(nbr, base + q)
    _prefetch(nbr, base + width - 1)
    _prefetch(nn, i)
    ki = kernel_index[i]
    _prefetch(xs, 2 * ki)
    _prefetch(ref, 2 * ki)
    _prefetch(ts, ki)
    _prefetch(uxs, 2 * ki)


@numba.njit(**_JIT)
def _prefetch_move(look, c, n, swap_fraction, pairs, by_type, n_of_type, kernel_index, xs, ref, ts, uxs, nbr, nn):
    """Prefetch for the move whose random numbers would start at stream position c (look holds c .. c + 3): it
    decodes them as the chain does (kind, then the particle, or the pair and the two particles)."""
    m = LOOKAHEAD - 1
    if look[c & m] < swap_fraction:
        k = int(look[(c + 1) & m] * pairs.shape[0])
        a = pairs[k, 0]
        b = pairs[k, 1]
        # named locals: the same lookups written into the calls' arguments measured no gain at all (N = 82560;
        # the compiled code of the move loop is sensitive to the form)
        i = by_type[a, int(look[(c + 2) & m] * n_of_type[a])]
        j = by_type[b, int(look[(c + 3) & m] * n_of_type[b])]
        _prefetch_particle(i, kernel_index, xs, ref, ts, uxs, nbr, nn)
        _prefetch_particle(j, kernel_index, xs, ref, ts, uxs, nbr, nn)
    else:
        _prefetch_particle(int(look[(c + 1) & m] * n), kernel_index, xs, ref, ts, uxs, nbr, nn)


@numba.njit(**_JIT)
def _run_sweeps(n_sweeps, record_every, pos, unwrapped, types, by_type, n_of_type, slot_in_type, box, order,
                kernel_index, xs, ts, nbr, nn, ref, rlist, skin, eps, sig2, rc2, ov2, c0, c2, c4, d, beta,
                swap_fraction, pairs, rng, energy, energy_trace, type_trace, counters, rebuilds, prefetch):
    """Run ``n_sweeps`` sweeps of N attempted moves, updating the state arrays in place.

    Particles are drawn by their external index (``pos``, ``types``, ``by_type``: the chain's random numbers
    pick the same particles whatever the kernel's memory order) and mapped to the kernel's index
    ``kernel_index[i]``; ``xs``, ``ts`` are the positions and types in kernel order (``order``: kernel index ->
    external index), where spatial neighbours sit close in memory. Both copies are updated with every accepted
    move. Verlet lists (nbr, nn, built at ``ref`` with radius ``rlist`` = largest cutoff + skin) stay complete
    while every particle, and the proposed position, lies within skin / 2 of its ``ref``; a proposal beyond that
    triggers a rebuild at the current positions first (requires skin > 2 sqrt(2) d, checked by the caller).
    energy: total energy at entry [epsilon]; tracked by adding the accepted dE. Every ``record_every`` sweeps
    the energy goes to ``energy_trace`` (and the types to ``type_trace`` if it has rows). counters (int64,
    4 + 2 P): attempted / accepted displacements, attempted / accepted swaps, then attempted / accepted swaps of
    each of the P pairs (accumulated); rebuilds[0] counts the list rebuilds. The random numbers come from
    ``rng`` through a look-ahead buffer (``_draw``), so that, with ``prefetch``, the data of the next move's
    particle(s) are fetched while this move computes; ``rng`` ends up LOOKAHEAD numbers ahead of the chain.
    Returns (energy, nbr, nn, ref, numbers consumed by the chain).
    """
    n = pos.shape[0]
    n_pairs = pairs.shape[0]
    rec = 0
    record_types = type_trace.shape[0] > 0
    half_skin2 = 0.25 * skin * skin
    inv_box = 1.0 / box
    # unwrapped positions in kernel order while the sweeps run: a displacement then touches memory near its
    # neighbours' only (pos, unwrapped in particle order are random accesses at large N); written back at the end
    # (pos = xs holds bit for bit: both received the same x on every accepted move)
    uxs = np.empty_like(xs)
    for k in range(n):
        uxs[k, 0] = unwrapped[order[k], 0]
        uxs[k, 1] = unwrapped[order[k], 1]
    look = np.empty(LOOKAHEAD)
    for k in range(LOOKAHEAD):
        look[k] = rng.random()
    drawn = np.zeros(1, dtype=np.int64)
    for sweep in range(n_sweeps):
        for _ in range(n):
            if prefetch:
                # every move draws 4 numbers, then 1 more iff it reaches the acceptance test (not after an overlap
                # or dE <= 0): the next move starts 4 or 5 numbers ahead. Prefetch for both, while this move runs
                c = drawn[0]
                _prefetch_move(look, c + 4, n, swap_fraction, pairs, by_type, n_of_type, kernel_index, xs, ref,
                                   ts, uxs, nbr, nn)
                _prefetch_move(look, c + 5, n, swap_fraction, pairs, by_type, n_of_type, kernel_index, xs, ref,
                                   ts, uxs, nbr, nn)
            if _draw(rng, look, drawn) < swap_fraction:
                k = int(_draw(rng, look, drawn) * n_pairs)
                a = pairs[k, 0]
                b = pairs[k, 1]
                i = by_type[a, int(_draw(rng, look, drawn) * n_of_type[a])]
                j = by_type[b, int(_draw(rng, look, drawn) * n_of_type[b])]
                counters[2] += 1
                counters[4 + 2 * k] += 1
                ki = kernel_index[i]
                kj = kernel_index[j]
                de, ov = _swap_delta(ki, kj, nbr[i], nn[i], nbr[j], nn[j], xs, ts, box, eps, sig2, rc2, ov2, c0,
                                     c2, c4)
                if ov:
                    continue
                if de <= 0.0 or _draw(rng, look, drawn) < math.exp(-beta * de):
                    types[i] = b
                    types[j] = a
                    ts[ki] = b
                    ts[kj] = a
                    si = slot_in_type[i]
                    sj = slot_in_type[j]
                    by_type[a, si] = j
                    by_type[b, sj] = i
                    slot_in_type[i] = sj
                    slot_in_type[j] = si
                    energy += de
                    counters[3] += 1
                    counters[5 + 2 * k] += 1
            else:
                i = int(_draw(rng, look, drawn) * n)
                dx = d * (2.0 * _draw(rng, look, drawn) - 1.0)
                dy = d * (2.0 * _draw(rng, look, drawn) - 1.0)
                ki = kernel_index[i]
                x = xs[ki, 0] + dx
                y = xs[ki, 1] + dy
                # wrap into [0, box); the second test guards x + box rounding up to box
                if x < 0.0:
                    x += box
                    if x >= box:
                        x = 0.0
                elif x >= box:
                    x -= box
                if y < 0.0:
                    y += box
                    if y >= box:
                        y = 0.0
                elif y >= box:
                    y -= box
                counters[0] += 1
                ex = x - ref[ki, 0]
                ey = y - ref[ki, 1]
                ex -= box * np.rint(ex * inv_box)
                ey -= box * np.rint(ey * inv_box)
                if ex * ex + ey * ey > half_skin2:
                    # the list of ki may miss partners of the proposed position: rebuild at the current state
                    nbr, nn, ref = _build_verlet(xs, box, rlist, order)
                    rebuilds[0] += 1
                de, ov = _displacement_delta(ki, x, y, nbr[i], nn[i], xs, ts, box, eps, sig2, rc2, ov2,
                                             c0, c2, c4)
                if ov:
                    continue
                if de <= 0.0 or _draw(rng, look, drawn) < math.exp(-beta * de):
                    xs[ki, 0] = x
                    xs[ki, 1] = y
                    uxs[ki, 0] += dx
                    uxs[ki, 1] += dy
                    energy += de
                    counters[1] += 1
        if (sweep + 1) % record_every == 0:
            energy_trace[rec] = energy
            if record_types:
                for p in range(n):
                    type_trace[rec, p] = types[p]
            rec += 1
    for k in range(n):
        pos[order[k], 0] = xs[k, 0]
        pos[order[k], 1] = xs[k, 1]
        unwrapped[order[k], 0] = uxs[k, 0]
        unwrapped[order[k], 1] = uxs[k, 1]
    return energy, nbr, nn, ref, drawn[0]


def _spatial_order(pos, box, cell_side):
    """Kernel memory order: particles sorted along a Z (Morton) curve through cells of side ~``cell_side``
    (ties by index), so that a particle's neighbours sit near it in memory. Returns (order, kernel_index):
    kernel index -> external index, and its inverse."""
    g = max(int(box // cell_side), 1)
    c = np.minimum((np.asarray(pos) * (g / box)).astype(np.int64), g - 1)
    key = np.zeros(len(c), dtype=np.int64)
    for bit in range(max(g - 1, 1).bit_length()):
        key |= ((c[:, 0] >> bit) & 1) << (2 * bit + 1)
        key |= ((c[:, 1] >> bit) & 1) << (2 * bit)
    order = np.argsort(key, kind="stable").astype(np.int64)
    kernel_index = np.empty_like(order)
    kernel_index[order] = np.arange(order.size)
    return order, kernel_index


def _rewind(rng, start, drawn):
    """Leave ``rng`` where ``drawn`` uniform doubles from ``start`` take it: the kernel's generator ran
    LOOKAHEAD numbers ahead of the chain. PCG64 (and PCG64DXSM) jump there: one 64-bit step per double; the jump
    clears their buffered 32-bit half-word, which doubles do not touch, so it is restored. Other bit generators
    draw the numbers again (~1 % of a run's time)."""
    bg = rng.bit_generator
    bg.state = start
    if isinstance(bg, (np.random.PCG64, np.random.PCG64DXSM)):
        bg.advance(drawn)
        state = bg.state
        state["has_uint32"], state["uinteger"] = start["has_uint32"], start["uinteger"]
        bg.state = state
    else:
        while drawn > 0:
            chunk = min(drawn, 1 << 20)
            rng.random(chunk)
            drawn -= chunk


# ====================================================================================== analysis helpers
def integrated_autocorrelation_time(x, spacing: float = 1.0) -> float:
    """Integrated autocorrelation time of a series, in units of ``spacing`` (Sokal's automatic window).

    tau = 1/2 + sum_{t=1}^{W} rho(t), W the smallest lag with W >= 5 tau(W); the variance of the mean of
    n samples is then var(x) * 2 tau / n. Returns spacing * tau (>= spacing / 2); nan for < 4 samples.
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    if n < 4:
        return float("nan")
    y = x - x.mean()
    var = float(y @ y) / n
    if var == 0.0:
        return 0.5 * spacing
    f = np.fft.rfft(y, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / (var * n)
    tau = 0.5
    for w in range(1, n):
        tau += acf[w]
        if w >= SOKAL_WINDOW_C * tau:
            break
    return float(max(tau, 0.5) * spacing)


def stationarity_z(window, spacing: float = 1.0, tau_q: float | None = None):
    """How many combined standard errors apart the mean energies of the two halves of ``window`` are.

    Returns (z, (mean of the first half, mean of the second)). The errors of the halves' means come from the
    fluctuations about a straight line fitted to the whole window, each the larger of (a) var * 2 tau / n (tau:
    the integrated autocorrelation time of those fluctuations, Sokal's window) and (b) batch means: the variance
    of the means of blocks of tau_q (pooled over both halves) over the number of blocks per half.

    Why not tau_E of the raw energy alone (as before): (1) swap-MC energies relax fast (tau_E ~ 1e2 sweeps) but
    also carry a weak component that relaxes with the structure (tau_q ~ 1e4-1e5), which Sokal's window, set by
    the fast part, cuts off and which then dominates the error of a mean over a few tau_q; blocks of tau_q see
    most of it. Measured on T = 0.3 chains (N = 1290): Sokal 98-142 sweeps, batch means 240-540 for blocks of
    5e3-2e4 sweeps, 370-970 for blocks of tau_q. (2) A drift inflates the raw tau_E and with it the error: a
    drift of a few standard errors then passed the test (tests/test_stationarity.py), while a detrended error
    leaves it standing out. Removing a fitted line from a stationary series lowers the error a little: the test
    stays on the strict side.

    Args: window (n,) energy per particle, one entry per ``spacing`` sweeps; tau_q [sweeps] (None, or too long
    for 2 blocks per half: (a) only).
    """
    window = np.asarray(window, dtype=float)
    halves = np.array_split(window, 2)
    means = tuple(float(h.mean()) for h in halves)
    t = np.arange(window.size, dtype=float)
    fluct = window - np.polyval(np.polyfit(t, window, 1), t) if window.size >= 2 else window - window.mean()
    tau = integrated_autocorrelation_time(fluct, spacing=spacing)
    parts = np.array_split(fluct, 2)
    se2 = [float(h.var()) * 2.0 * tau / spacing / max(h.size, 1) for h in parts]
    if tau_q is not None and tau_q > 0:
        block = max(int(math.ceil(tau_q / spacing)), 1)
        n_blocks = min(h.size for h in parts) // block
        if n_blocks >= 2:
            dev = np.concatenate([h[: n_blocks * block].reshape(n_blocks, block).mean(axis=1) - h.mean()
                                  for h in parts])
            var_block = float(dev @ dev) / (2 * n_blocks - 2)
            se2 = [max(e, var_block / n_blocks) for e in se2]
    z = abs(means[0] - means[1]) / math.sqrt(max(sum(se2), 1e-300))
    return float(z), means


def _cage_mean(positions, box: float, radius: float):
    """Sparse (N, N) operator M with (M d)_i = mean of d_j over the neighbours j of i (|r_ij| < radius).

    A particle without neighbours gets a zero row (its displacement then stays absolute).
    """
    from scipy.sparse import csr_matrix
    from scipy.spatial import cKDTree

    n = positions.shape[0]
    wrapped = np.mod(np.asarray(positions, dtype=np.float64), box)
    wrapped[wrapped >= box] = 0.0
    pairs = cKDTree(wrapped, boxsize=box).query_pairs(radius, output_type="ndarray")
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    count = np.bincount(rows, minlength=n).astype(np.float64)
    return csr_matrix((1.0 / count[rows], (rows, cols)), shape=(n, n))


def self_overlap(snapshots, spacing: float, a: float, max_origins: int = 32, *, box: float | None = None,
                 cage_radius: float | None = None):
    """Self-overlap Q(t) = <1/N sum_i Theta(a - |d_i(t0, t)|)>_t0 from unwrapped snapshots.

    d_i is the displacement r_i(t0 + t) - r_i(t0) itself (absolute frame), or, with ``cage_radius``, the
    cage-relative displacement: d_i minus the mean displacement of the particles within ``cage_radius`` of i
    at t0. Why the cage frame: in 2D, long-wavelength elastic fluctuations (Mermin-Wagner) move whole regions
    by more than a without any rearrangement, so the absolute Q decays although the structure has not relaxed
    (measured at T = 0.23 without swaps: absolute Q falls to 0.07 in 2.6e5 sweeps, the cage-relative Q stays at
    0.99, and the energy stays in its starting metabasin; see docs/swap-mc.md).

    Args:
        snapshots: (M, N, 2) unwrapped positions at equal spacing [sigma].
        spacing: sweeps between snapshots.
        a: overlap distance [sigma].
        max_origins: at most this many time origins (evenly spread) per lag.
        box: square box side [sigma]; needed with ``cage_radius`` (neighbours by minimum image).
        cage_radius: neighbour distance defining the cage [sigma]; None = absolute frame.

    Returns:
        lags (M,) in sweeps (starting at 0) and Q (M,) (Q[0] = 1).
    """
    snaps = np.asarray(snapshots)
    if snaps.ndim != 3 or snaps.shape[-1] != 2:
        raise ValueError(f"self_overlap: snapshots must have shape (M, N, 2), got {snaps.shape}")
    if cage_radius is not None and box is None:
        raise ValueError("self_overlap: the cage frame needs the box side (box=...)")
    m_snap = snaps.shape[0]
    q = np.ones(m_snap)
    a2 = a * a
    cages = {}
    for lag in range(1, m_snap):
        n_orig = m_snap - lag
        origins = np.unique(np.linspace(0, n_orig - 1, min(n_orig, max_origins)).astype(int))
        disp = snaps[origins + lag].astype(np.float64) - snaps[origins]
        if cage_radius is not None:
            for k, o in enumerate(origins):
                if o not in cages:
                    cages[o] = _cage_mean(snaps[o], box, cage_radius)
                disp[k] -= cages[o] @ disp[k]
        q[lag] = float(np.mean(np.einsum("onk,onk->on", disp, disp) < a2))
    return np.arange(m_snap) * float(spacing), q


def decorrelation_time(lags, q, level: float = DECAY_LEVEL):
    """First time at which q falls to ``level``, linearly interpolated; None if it never does (censored)."""
    lags = np.asarray(lags, dtype=float)
    q = np.asarray(q, dtype=float)
    below = np.flatnonzero(q <= level)
    if below.size == 0:
        return None
    k = below[0]
    if k == 0:
        return 0.0
    q0, q1 = q[k - 1], q[k]
    return float(lags[k - 1] + (lags[k] - lags[k - 1]) * (q0 - level) / (q0 - q1))


# ====================================================================================== the sampler
def adapted_step(step: float, attempted, accepted, settings: SwapSettings) -> float:
    """The displacement step d after a block of ``attempted`` displacements of which ``accepted`` were accepted:
    rescaled by (acceptance / target) bounded to [0.5, 2] (so one noisy block cannot swing it far), clipped to
    [min_max_displacement, max_max_displacement]; unchanged if nothing was attempted. Burn-in only."""
    if attempted <= 0:
        return float(step)
    rate = accepted / attempted
    factor = float(np.clip(rate / settings.target_acceptance, 0.5, 2.0))
    return float(np.clip(step * factor, settings.min_max_displacement, settings.max_max_displacement))


class SwapMonteCarlo:
    """Metropolis Monte Carlo with displacements and identity swaps at fixed N, box and composition.

    freud-style: configure once, ``reset(positions, types, box)``, then ``run(n_sweeps)``; results are
    properties (state copies, energy trace per particle, acceptance rates).

    Args:
        temperature: k_B T [epsilon] (> 0, finite). May be changed between runs (``.temperature = ...``).
        system: the potential (default ``conf/system/ka2d_ternary.yaml``).
        swap_fraction, swap_pairs, max_displacement: override the settings file for these moves.
        seed: seeds a ``numpy.random.Generator`` (or pass ``rng``); the chain is a function of the seed.
        settings: a ``SwapSettings`` (default: ``load_swap_settings()``).
    """

    def __init__(self, temperature, system=None, *, swap_fraction=None, swap_pairs=None,
                 max_displacement=None, seed=0, rng=None, settings: SwapSettings | None = None):
        settings = settings or load_swap_settings()
        overrides = {k: v for k, v in (("swap_fraction", swap_fraction), ("swap_pairs", swap_pairs),
                                       ("max_displacement", max_displacement)) if v is not None}
        if "max_displacement" in overrides:
            # an explicit step is allowed outside the adaptation bounds: widen them to include it
            d = positive_finite(overrides["max_displacement"], "max_displacement")
            overrides["min_max_displacement"] = min(settings.min_max_displacement, d)
            overrides["max_max_displacement"] = max(settings.max_max_displacement, d)
        self.settings = replace(settings, **overrides) if overrides else settings
        self.system: PairPotential = resolve_system(system)
        self.temperature = temperature
        self.max_displacement = float(self.settings.max_displacement)
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self._state = None
        # kernel order copies and Verlet lists (see _build_kernel_state): derived from _state, not checkpointed
        self._kernel = None
        self._rebuilds = np.zeros(1, dtype=np.int64)
        # prefetch the next move's data (None: from PREFETCH_MIN_PARTICLES on); the chain is the same either way
        self._prefetch = None
        self._trace: list[np.ndarray] = []
        self.sweeps_done = 0
        eps, sig2, rc2, ov2 = self.system.parameter_arrays()
        self._params = (eps, sig2, rc2, ov2, float(self.system.c0), float(self.system.c2),
                        float(self.system.c4))
        self._pairs = np.asarray(self.settings.swap_pairs, dtype=np.int64).reshape(-1, 2)
        self._counters = np.zeros(4 + 2 * len(self._pairs), dtype=np.int64)

    # ------------------------------------------------------------------ configuration
    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        self._temperature = positive_finite(value, "temperature")

    def reset(self, positions, types, box):
        """Load a configuration (positions wrapped into the box); clears traces and counters.

        Raises ConfigurationError for bad input (shape, NaN, unknown types, overlaps, box < 2 cutoffs).
        """
        positions, types, box = validate_configuration(positions, types, box, where="SwapMonteCarlo.reset")
        rmax = self.system.max_cutoff
        if box <= 2.0 * rmax:
            raise ConfigurationError(
                f"SwapMonteCarlo.reset: box side {box:g} must exceed twice the interaction range {rmax:g}")
        wrapped = np.mod(positions, box)
        wrapped[wrapped >= box] = 0.0
        n = wrapped.shape[0]
        n_of_type = np.bincount(types, minlength=N_TYPES).astype(np.int64)
        for a, b in self.settings.swap_pairs:
            if n_of_type[a] == 0 or n_of_type[b] == 0:
                raise ValueError(f"swap pair ({a}, {b}) needs particles of both types; counts {n_of_type}")
        by_type = np.full((N_TYPES, n), -1, dtype=np.int64)
        slot_in_type = np.empty(n, dtype=np.int64)
        for t in range(N_TYPES):
            idx = np.flatnonzero(types == t)
            by_type[t, : idx.size] = idx
            slot_in_type[idx] = np.arange(idx.size)
        # the kernel's memory order (fixed for the chain: it sets the summation order of every dE)
        order, _ = _spatial_order(wrapped, box, SORT_CELL_SIDE)
        self._state = dict(pos=wrapped, unwrapped=positions.copy(), types=types.copy(), box=box, by_type=by_type,
                           n_of_type=n_of_type, slot_in_type=slot_in_type, order=order)
        self._build_kernel_state()
        # refuses overlaps with the reference neighbour search (also checks the box)
        from tglassmlp.physics.potential import interacting_pairs

        interacting_pairs(wrapped, types, box, self.system, where="SwapMonteCarlo.reset")
        self._energy = self.total_energy()
        self._trace = []
        self._counters[:] = 0
        self.sweeps_done = 0
        return self

    def _require_state(self):
        if self._state is None:
            raise RuntimeError("SwapMonteCarlo: call reset(positions, types, box) first")
        return self._state

    def _skin(self) -> float:
        """Verlet skin [sigma]: the setting, widened to exceed 2 sqrt(2) d so that a proposed displacement from
        a freshly built list's reference position stays within skin / 2 (the list covers it)."""
        return max(float(self.settings.verlet_skin), VERLET_SKIN_PER_STEP * float(self.max_displacement))

    def _build_kernel_state(self, ref=None, skin=None):
        """Derived kernel arrays: positions and int8 types in the kernel's memory order, the inverse order,
        and Verlet lists built at the current positions (or at ``ref`` with ``skin``, from a checkpoint)."""
        s = self._state
        order = s["order"]
        # int32: the map is read once per move at a random place; half the footprint stays in cache longer
        kernel_index = np.empty(order.size, dtype=np.int32)
        kernel_index[order] = np.arange(order.size, dtype=np.int32)
        xs = np.ascontiguousarray(s["pos"][order])
        ts = s["types"][order].astype(np.int8)
        skin = self._skin() if skin is None else float(skin)
        rlist = self.system.max_cutoff + skin
        nbr, nn, ref = _build_verlet(xs if ref is None else np.ascontiguousarray(ref, dtype=float), s["box"], rlist,
                                     order)
        self._kernel = dict(kernel_index=kernel_index, xs=xs, ts=ts, nbr=nbr, nn=nn, ref=ref, skin=skin,
                            rlist=rlist)

    def _kernel_arrays(self):
        self._require_state()
        k = self._kernel
        return k["nbr"], k["nn"], self._state["order"], k["xs"], k["ts"], self._state["box"]

    # ------------------------------------------------------------------ running
    def run(self, n_sweeps: int, *, record_every: int | None = None, record_types: bool = False,
            swaps: bool = True):
        """Run ``n_sweeps`` sweeps (N attempted moves each) at ``self.temperature``.

        Args:
            n_sweeps: number of sweeps (>= 0).
            record_every: sweeps between energy records (default: settings.record_every).
            record_types: also return the (n_records, N) int8 type assignments (for tests of the swaps).
            swaps: False runs displacements only (swap_fraction 0), e.g. to measure plain MC dynamics.

        Returns the (n_records, N) type trace if ``record_types`` else None.
        """
        s = self._require_state()
        n_sweeps = int(n_sweeps)
        if n_sweeps < 0:
            raise ValueError(f"n_sweeps must be >= 0, got {n_sweeps}")
        rec = int(record_every or self.settings.record_every)
        n_rec = n_sweeps // rec
        trace = np.empty(n_rec)
        n = s["pos"].shape[0]
        type_trace = np.empty((n_rec if record_types else 0, n), dtype=np.int8)
        if self._skin() != self._kernel["skin"]:  # d grew past the skin's bound: lists for the new skin
            self._build_kernel_state()
        k = self._kernel
        prefetch = self._prefetch if self._prefetch is not None else n >= PREFETCH_MIN_PARTICLES
        start = self.rng.bit_generator.state
        energy, k["nbr"], k["nn"], k["ref"], drawn = _run_sweeps(
            n_sweeps, rec, s["pos"], s["unwrapped"], s["types"], s["by_type"], s["n_of_type"], s["slot_in_type"],
            s["box"], s["order"], k["kernel_index"], k["xs"], k["ts"], k["nbr"], k["nn"], k["ref"], k["rlist"],
            k["skin"], *self._params, float(self.max_displacement), 1.0 / self.temperature,
            float(self.settings.swap_fraction if swaps else 0.0), self._pairs, self.rng, float(self._energy),
            trace, type_trace, self._counters, self._rebuilds, prefetch)
        _rewind(self.rng, start, drawn)
        self._energy = energy
        self._trace.append(trace / n)
        self.sweeps_done += n_sweeps
        return type_trace if record_types else None

    def adapt(self, n_sweeps: int):
        """Run ``n_sweeps`` while rescaling d towards the target acceptance every ``adapt_every`` sweeps.

        Burn-in only: the adapted chain does not obey detailed balance (the step depends on its history).
        """
        st = self.settings
        done = 0
        while done < n_sweeps:
            block = min(st.adapt_every, n_sweeps - done)
            before = self._counters.copy()
            self.run(block)
            self.max_displacement = adapted_step(self.max_displacement, self._counters[0] - before[0],
                                                 self._counters[1] - before[1], st)
            done += block

    def check_energy(self, tolerance: float | None = None) -> float:
        """Recompute the total energy, compare with the tracked one, adopt it. Returns the relative drift."""
        tol = self.settings.energy_drift_tolerance if tolerance is None else tolerance
        exact = self.total_energy()
        drift = abs(exact - self._energy) / max(abs(exact), 1.0)
        if drift > tol:
            raise RuntimeError(f"SwapMonteCarlo: tracked energy drifted by {drift:.3g} (relative) from the "
                               f"recomputed one: kernel bug")
        self._energy = exact
        return drift

    # ------------------------------------------------------------------ energies (compiled kernel)
    def total_energy(self) -> float:
        """Total potential energy of the current state from the kernel [epsilon]."""
        return float(_total_energy(*self._kernel_arrays(), *self._params))

    def energy_change_displacement(self, i: int, new_position) -> float:
        """dE [epsilon] of moving particle i to ``new_position`` (any image); inf if it creates an overlap.

        The same compiled sum as the chain's moves; over i's Verlet list when it covers the new position, else
        over all particles (the sums are equal bit for bit: particles beyond the cutoff add exactly 0.0)."""
        s = self._require_state()
        k = self._kernel
        x, y = np.mod(np.asarray(new_position, dtype=float), s["box"])
        ki = int(k["kernel_index"][int(i)])
        e = np.array([x, y]) - k["ref"][ki]
        e -= s["box"] * np.rint(e / s["box"])
        if e @ e <= 0.25 * k["skin"] ** 2:
            cand, n_cand = k["nbr"][int(i)], int(k["nn"][int(i)])
        else:
            cand = np.delete(np.arange(len(k["xs"]), dtype=np.int32), ki)
            n_cand = len(cand)
        de, ov = _displacement_delta(ki, float(x), float(y), cand, n_cand, k["xs"], k["ts"], s["box"],
                                     *self._params)
        return math.inf if ov else float(de)

    def energy_change_swap(self, i: int, j: int) -> float:
        """dE [epsilon] of exchanging the types of particles i and j; inf if it creates an overlap."""
        s, k = self._require_state(), self._kernel
        i, j = int(i), int(j)
        ki, kj = int(k["kernel_index"][i]), int(k["kernel_index"][j])
        de, ov = _swap_delta(ki, kj, k["nbr"][i], k["nn"][i], k["nbr"][j], k["nn"][j], k["xs"], k["ts"], s["box"],
                             *self._params)
        return math.inf if ov else float(de)

    @property
    def list_rebuilds(self) -> int:
        """Verlet list rebuilds during the runs since the sampler was made (a performance diagnostic)."""
        return int(self._rebuilds[0])

    # ------------------------------------------------------------------ results
    @property
    def positions(self) -> np.ndarray:
        """(N, 2) current positions wrapped into [0, box) [sigma] (a copy)."""
        return self._require_state()["pos"].copy()

    @property
    def unwrapped_positions(self) -> np.ndarray:
        """(N, 2) positions without periodic wrapping since ``reset`` [sigma] (a copy)."""
        return self._require_state()["unwrapped"].copy()

    @property
    def types(self) -> np.ndarray:
        """(N,) current int64 types (a copy)."""
        return self._require_state()["types"].copy()

    @property
    def box(self) -> float:
        return float(self._require_state()["box"])

    @property
    def energy(self) -> float:
        """Tracked total potential energy [epsilon]."""
        return float(self._energy)

    @property
    def energy_trace(self) -> np.ndarray:
        """Energy per particle [epsilon] recorded since ``reset`` (every ``record_every`` sweeps)."""
        return np.concatenate(self._trace) if self._trace else np.empty(0)

    @property
    def acceptance_displacement(self) -> float:
        """Accepted / attempted displacements since ``reset`` (nan if none)."""
        return float(self._counters[1] / self._counters[0]) if self._counters[0] else float("nan")

    @property
    def acceptance_swap(self) -> float:
        """Accepted / attempted swaps since ``reset`` (nan if none)."""
        return float(self._counters[3] / self._counters[2]) if self._counters[2] else float("nan")

    @property
    def counters(self) -> np.ndarray:
        """(4 + 2 P,) attempted / accepted displacements, attempted / accepted swaps, then attempted / accepted
        swaps of each swap pair (in the order of ``settings.swap_pairs``), since ``reset``."""
        return self._counters.copy()

    @property
    def acceptance_swap_by_pair(self) -> dict:
        """{"a-b": accepted / attempted swaps of that pair since ``reset``} (nan if none attempted)."""
        c = self._counters
        return {f"{a}-{b}": float(c[5 + 2 * k] / c[4 + 2 * k]) if c[4 + 2 * k] else float("nan")
                for k, (a, b) in enumerate(self._pairs.tolist())}

    def reset_counters(self):
        """Zero the acceptance counters and the energy trace (the state is kept)."""
        self._counters[:] = 0
        self._trace = []

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything the chain's future depends on, as numpy arrays (for ``np.savez``).

        Includes the by-type index lists as they are (their order decides which particle a random number picks),
        the kernel's memory order and the Verlet lists' reference positions and skin (they decide the rounding of
        dE), so a resumed chain is identical to an uninterrupted one. The random generator's state is stored as
        JSON text.
        """
        s = self._require_state()
        out = {f"state_{k}": np.asarray(v) for k, v in s.items()}
        # where the Verlet lists were built and their skin: the vectorised sums' rounding depends on a list's
        # layout, so a resumed chain rebuilds the very same lists
        out.update(state_verlet_ref=self._kernel["ref"].copy(), state_verlet_skin=np.float64(self._kernel["skin"]))
        out.update(energy=np.float64(self._energy), counters=self._counters.copy(), trace=self.energy_trace,
                   temperature=np.float64(self.temperature), max_displacement=np.float64(self.max_displacement),
                   sweeps_done=np.int64(self.sweeps_done),
                   rng_state=np.array(json.dumps(self.rng.bit_generator.state)))
        return out

    def load_state_dict(self, d) -> "SwapMonteCarlo":
        """Restore a ``state_dict`` (the generator passed at construction is set to the stored state)."""
        state = {}
        for k in d:
            if k.startswith("state_"):
                v = np.asarray(d[k])
                state[k[6:]] = v.item() if v.ndim == 0 else v.copy()
        state["box"] = float(state["box"])
        # checkpoints of the cell-list kernel (before issue 14) also stored its cell lists (and before session 4
        # its stencil tables nbr, shift); the Verlet kernel derives everything from the positions
        for legacy in ("m", "inv_cs", "reach", "count", "members", "cell_of", "slot_of", "nbr", "shift"):
            state.pop(legacy, None)
        if "order" not in state:
            state["order"], _ = _spatial_order(state["pos"], state["box"], SORT_CELL_SIDE)
        ref = state.pop("verlet_ref", None)
        skin = state.pop("verlet_skin", None)
        self._state = state
        self.max_displacement = float(d["max_displacement"])
        self._build_kernel_state(ref, skin)
        self._energy = float(d["energy"])
        self._counters[:] = np.asarray(d["counters"])
        self._trace = [np.asarray(d["trace"], dtype=float).copy()]
        self.temperature = float(d["temperature"])
        self.max_displacement = float(d["max_displacement"])
        self.sweeps_done = int(d["sweeps_done"])
        rng_state = json.loads(str(np.asarray(d["rng_state"])))
        if self.rng.bit_generator.state["bit_generator"] != rng_state["bit_generator"]:
            raise ValueError(f"checkpoint random generator {rng_state['bit_generator']} differs from this "
                             f"sampler's {self.rng.bit_generator.state['bit_generator']}")
        self.rng.bit_generator.state = rng_state
        return self


# ====================================================================================== equilibration
@dataclass
class EquilibrationReport:
    """How a structure was equilibrated and whether it passed the criterion (see conf/swap/default.yaml).

    Times are in sweeps (N attempted moves). ``energy_trace`` is per particle [epsilon] over the
    frozen-step run at the target T (one entry per ``record_every`` sweeps).
    """

    temperature: float
    n_particles: int
    seed: int
    criterion_met: bool
    reasons: list
    sweeps_total: int
    sweeps_production: int
    window_sweeps: int
    max_displacement: float
    acceptance_displacement: float
    acceptance_swap: float
    acceptance_swap_by_pair: dict
    tau_overlap: float | None
    tau_energy: float
    energy_mean: float
    energy_halves: tuple
    stationarity_z: float
    energy_final: float
    energy_drift: float
    anneal_temperatures: list
    wall_time_s: float
    settings: dict
    energy_trace: np.ndarray = field(repr=False)
    overlap_lags: np.ndarray = field(repr=False)
    overlap: np.ndarray = field(repr=False)

    def to_dict(self, traces: bool = False) -> dict:
        """Plain-python dict (JSON-able); the long traces only if ``traces``."""
        out = asdict(self)
        for key in ("energy_trace", "overlap_lags", "overlap"):
            out[key] = np.asarray(out[key]).tolist() if traces else None
        return out


def _random_start(n, box, composition, rng):
    """Particles on n randomly chosen sites of a square grid (spacing box / ceil(sqrt(n))), types shuffled."""
    g = int(math.ceil(math.sqrt(n)))
    sites = rng.choice(g * g, size=n, replace=False)
    spacing = box / g
    pos = np.column_stack(((sites // g) + 0.5, (sites % g) + 0.5)) * spacing
    types = np.repeat(np.arange(N_TYPES), composition)
    rng.shuffle(types)
    return pos, types


def _evaluate(box: float, trace, snaps, snap_spacing, total, settings):
    """Criterion on the last half of the frozen-step run of one chain: returns a dict of measured numbers.

    Args: box side [sigma]; the chain's energy trace per particle (one entry per ``record_every`` sweeps); its
    unwrapped snapshots (list of (N, 2)) every ``snap_spacing`` sweeps from the start of the production;
    ``total`` production sweeps so far.
    """
    rec = settings.record_every
    window = trace[trace.size // 2:]
    tau_e = integrated_autocorrelation_time(window, spacing=rec)
    first = int(math.ceil((total // 2) / snap_spacing))
    win_snaps = snaps[first:]
    if len(win_snaps) >= 2:
        cage = settings.cage_radius if settings.overlap_frame == "cage" else None
        lags, q = self_overlap(np.stack(win_snaps), snap_spacing, settings.overlap_a, settings.max_origins,
                               box=box, cage_radius=cage)
        tau_q = decorrelation_time(lags, q)
    else:
        lags, q, tau_q = np.zeros(1), np.ones(1), None
    window_sweeps = total - total // 2
    z, means = stationarity_z(window, rec, tau_q)
    reasons = []
    if tau_q is None:
        reasons.append(f"self-overlap Q did not fall below 1/e within the window of {window_sweeps} sweeps")
    tau_max = max(tau_q if tau_q is not None else 0.0, tau_e)
    if tau_q is not None and not window_sweeps >= settings.n_decorrelation * tau_max:
        reasons.append(f"window {window_sweeps} sweeps < {settings.n_decorrelation:g} x decorrelation time "
                       f"{tau_max:.4g}")
    if not z < settings.stationarity_z:
        reasons.append(f"energy not stationary: halves differ by {z:.3g} standard errors "
                       f"(limit {settings.stationarity_z:g})")
    return dict(tau_q=tau_q, tau_e=tau_e, means=tuple(means), z=z, lags=lags, q=q, reasons=reasons,
                window_sweeps=window_sweeps, energy_mean=float(window.mean()))


# settings that only judge a chain (when production stops, what the report says), never change its moves: a
# checkpoint is resumed and re-judged when only these differ
CRITERION_SETTINGS = ("n_decorrelation", "stationarity_z", "overlap_a", "overlap_frame", "cage_radius", "max_origins")


# kernel settings (performance only, the chain does not depend on them; cells_per_cutoff: the cell-list kernel's,
# still in the keys of its checkpoints) are left out of the checkpoint key too
KERNEL_SETTINGS = ("verlet_skin", "cells_per_cutoff")


def _chain_settings(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k not in CRITERION_SETTINGS + KERNEL_SETTINGS}


def _start_digest(initial) -> list:
    """A digest of a start (positions, types, box), so that a checkpoint of another start is refused."""
    pos, types, box = initial
    h = np.frombuffer(np.ascontiguousarray(pos, dtype=np.float64).tobytes(), dtype=np.uint8)
    return [float(box), int(np.asarray(types).sum()), int(h.astype(np.uint64).sum())]


def _checkpoint_key(temperature, n_particles, seed, settings, initial, backend: str = "numba",
                    n_chains: int = 1) -> dict:
    """What a checkpoint must match to be resumed (max_sweeps is left out: a rerun may extend a chain; the
    criterion settings too: a rerun re-judges the stored chain; the harvest settings too: they never change an
    equilibration chain, and a harvesting run adds its own entry to the key). The sampler (backend, number of
    chains) enters only when it is not the single numba chain, so that keys of older checkpoints still match."""
    s = _chain_settings(asdict(settings))
    s.pop("max_sweeps")
    s.pop("checkpoint_every_s")  # how often state is saved does not change the chain
    s.pop("backend", None)  # in the key as "sampler" below
    for name in HARVEST_SETTINGS:
        s.pop(name, None)
    key = dict(temperature=float(temperature), n_particles=int(n_particles), seed=int(seed), settings=s,
               initial=None)
    if initial is not None:
        key["initial"] = _start_digest(initial)
    if backend != "numba" or int(n_chains) != 1:
        key["sampler"] = dict(backend=str(backend), n_chains=int(n_chains))
    return json.loads(json.dumps(key))  # tuples -> lists, as they come back from the file


# settings that say how many structures a chain yields, from where it starts and how simulate.py batches chains
# (tglassmlp.physics.harvest, tglassmlp.simulation.chains), never how an equilibration chain moves (the batch
# size enters the key as the sampler's n_chains)
HARVEST_SETTINGS = ("harvest_spacing", "harvest_max_overlap", "structures_per_chain", "cascade", "chains_per_job")
# arrays a caller keeps with the chain in its checkpoint (e.g. harvested structures) are stored under this prefix
EXTRA_PREFIX = "extra_"


def _save_checkpoint(path: Path, sampler, key: dict, run: dict, snaps: list, extra=None):
    """Write the chains' state atomically (temp file in the same directory, fsync, rename). Snapshots are stored
    (K, N, 2) for a single numba chain (the layout of older checkpoints), else (K, B, N, 2)."""
    meta = dict(key=key, run=run, format=1)
    stacked = (np.stack(snaps) if snaps else
               np.zeros((0, sampler.n_chains, sampler.n_particles, 2), dtype=np.float32))
    if sampler.single_layout:
        stacked = stacked[:, 0]
    arrays = {EXTRA_PREFIX + k: np.asarray(v) for k, v in (extra or {}).items()}
    save_npz_atomic(path, dict(meta=np.array(json.dumps(meta)), snapshots=stacked, **sampler.state_dict(),
                               **arrays))


def _load_checkpoint(path: Path, key: dict, sampler, where: str = "equilibrium_structure"):
    """Restore ``sampler`` from ``path``; returns (run, snapshots as a list of (B, N, 2), extra arrays). Raises
    ValueError if it belongs to another run."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            data = {k: z[k] for k in z.files if k not in ("meta", "snapshots") and not k.startswith(EXTRA_PREFIX)}
            extra = {k[len(EXTRA_PREFIX):]: z[k] for k in z.files if k.startswith(EXTRA_PREFIX)}
            stacked = z["snapshots"]
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{where}: checkpoint {path} is unreadable ({exc}); delete it to start "
                         "afresh") from exc
    stored = meta.get("key", {})
    if isinstance(stored.get("settings"), dict):  # older checkpoints also stored the criterion settings
        stored = dict(stored, settings=_chain_settings(stored["settings"]))
    if stored != key:
        differ = sorted(k for k in set(key) | set(stored) if key.get(k) != stored.get(k))
        if "settings" in differ:
            a, b = stored.get("settings", {}), key["settings"]
            differ += [f"settings.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise ValueError(f"{where}: checkpoint {path} belongs to another run (differs in "
                         f"{', '.join(differ)}); use another path or delete it")
    sampler.load_state_dict(data)
    if stacked.ndim == 3:  # single-chain layout
        stacked = stacked[:, None]
    return meta["run"], list(stacked), extra


class NumbaChains:
    """The numba backend of :class:`EquilibrationChain`: B ``SwapMonteCarlo`` samplers, advanced one after the
    other (B = 1: one chain, the chain of ``equilibrium_structure``).

    The interface a backend offers the protocol (the OpenCL one: ``swap_mc_opencl.OpenCLChains``): ``reset``
    with B starts, ``run(n_sweeps)`` of every chain recording E/N every ``record_every`` sweeps, per-chain steps
    (``steps``, ``set_steps``) and displacement counts for the adaptation, ``reset_counters`` (also clears the
    traces), per-chain state (``positions(b)``, ``types(b)``, ``energy(b)`` [epsilon], ``energy_trace(b)``
    [epsilon per particle], ``acceptance(b)``), ``unwrapped_positions()`` (B, N, 2), ``check_energy()``,
    ``state_dict`` / ``load_state_dict``.
    """

    backend = "numba"

    def __init__(self, samplers):
        self.samplers = list(samplers)

    @property
    def n_chains(self) -> int:
        return len(self.samplers)

    @property
    def single_layout(self) -> bool:
        """One numba chain: its checkpoint keeps the layout of the single-chain sampler (older files load)."""
        return len(self.samplers) == 1

    @property
    def n_particles(self) -> int:
        return int(self.samplers[0]._require_state()["types"].size)

    @property
    def box(self) -> float:
        return self.samplers[0].box

    @property
    def temperature(self) -> float:
        return self.samplers[0].temperature

    @temperature.setter
    def temperature(self, value):
        for mc in self.samplers:
            mc.temperature = value

    @property
    def sweeps_done(self) -> int:
        return self.samplers[0].sweeps_done

    @property
    def steps(self) -> np.ndarray:
        return np.array([mc.max_displacement for mc in self.samplers])

    def set_steps(self, steps):
        for mc, d in zip(self.samplers, steps):
            mc.max_displacement = float(d)

    def reset(self, positions, types, box):
        for mc, p, t in zip(self.samplers, positions, types):
            mc.reset(p, t, box)

    def run(self, n_sweeps: int):
        for mc in self.samplers:
            mc.run(n_sweeps)

    def displacement_counts(self) -> np.ndarray:
        """(B, 2) attempted, accepted displacements since ``reset_counters``."""
        return np.array([mc._counters[:2] for mc in self.samplers])

    def reset_counters(self):
        for mc in self.samplers:
            mc.reset_counters()

    def check_energy(self) -> float:
        return max(mc.check_energy() for mc in self.samplers)

    def energy_trace(self, b: int) -> np.ndarray:
        return self.samplers[b].energy_trace

    def energy(self, b: int) -> float:
        return self.samplers[b].energy

    def positions(self, b: int) -> np.ndarray:
        return self.samplers[b].positions

    def types(self, b: int) -> np.ndarray:
        return self.samplers[b].types

    def unwrapped_positions(self) -> np.ndarray:
        return np.stack([mc.unwrapped_positions for mc in self.samplers])

    def acceptance(self, b: int):
        """(displacements, swaps, {pair: swaps of that pair}) accepted / attempted since ``reset_counters``."""
        mc = self.samplers[b]
        return mc.acceptance_displacement, mc.acceptance_swap, mc.acceptance_swap_by_pair

    def state_dict(self) -> dict:
        if self.single_layout:
            return self.samplers[0].state_dict()
        return {f"chain{b}_{k}": v for b, mc in enumerate(self.samplers) for k, v in mc.state_dict().items()}

    def load_state_dict(self, d):
        if self.single_layout:
            self.samplers[0].load_state_dict(d)
            return self
        for b, mc in enumerate(self.samplers):
            prefix = f"chain{b}_"
            mc.load_state_dict({k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)})
        return self


def chain_rngs(seed: int, n_chains: int) -> list:
    """One generator per chain: chain 0 gets ``default_rng(seed)`` (the single chain of equilibrium_structure),
    chain b > 0 ``default_rng([seed, b])``; chain b's random start does not depend on how many chains run."""
    return [np.random.default_rng(seed if b == 0 else [int(seed), b]) for b in range(int(n_chains))]


class EquilibrationChain:
    """Swap-MC chains taken through the protocol of :func:`equilibrium_structure`, resumable from a checkpoint.

    One implementation of the protocol for every sampler backend and any number of chains B: a backend
    (``NumbaChains``; ``swap_mc_opencl.OpenCLChains``: B chains in one kernel launch) only runs n sweeps of all
    chains, reports their state and sets their steps. The B chains run in lockstep: the same preparation stages,
    each chain's d adapted from its own acceptance, then production in doubling blocks until EVERY chain meets
    the criterion (each judged on its own trace and snapshots) or ``max_sweeps``; a chain that met it earlier
    just runs on (its window, the last half of the production, then lies further in equilibrium). With B = 1 and
    the numba backend this is exactly the chain of ``equilibrium_structure``.

    ``equilibrate()`` runs the preparation and the production; ``produce(n)`` continues the production by n
    sweeps (d frozen, snapshots on the same grid, the criterion's window still the last half of the whole
    production), e.g. to harvest more structures (:mod:`tglassmlp.physics.harvest`). The checkpoint holds the
    sampler, the protocol's stage (``run``), the snapshots and the arrays in ``extra`` (a caller's own data,
    e.g. harvested structures); ``key_extra`` is added to what a checkpoint must match.

    Args as in :func:`equilibrium_structure`, plus ``backend`` ("numba" or "opencl"; default
    ``settings.backend``), ``n_chains`` (B >= 1; chain b starts from its own random start, see ``chain_rngs``,
    or all from ``initial``, or chain b from ``initial[b]`` when ``initial`` is a list of B (positions, types,
    box) of one N and box) and ``device`` (OpenCL device, see ``swap_mc_opencl.pick_device``).
    """

    def __init__(self, temperature, n_particles: int = 1290, seed: int = 0, *, system=None, initial=None,
                 settings: SwapSettings | None = None, max_sweeps: int | None = None, progress: bool = False,
                 checkpoint=None, key_extra: dict | None = None, backend: str | None = None, n_chains: int = 1,
                 device=None, where: str = "equilibrium_structure", **overrides):
        self.t0 = time.perf_counter()
        temperature = positive_finite(temperature, "temperature", where)
        settings = settings or load_swap_settings()
        if overrides:
            settings = replace(settings, **overrides)
        if max_sweeps is not None:
            settings = replace(settings, max_sweeps=int(max_sweeps))
        backend = settings.backend if backend is None else backend
        if backend not in SAMPLER_BACKENDS:
            raise ValueError(f"{where}: unknown backend {backend!r}; known: {SAMPLER_BACKENDS}")
        if isinstance(n_chains, bool) or not isinstance(n_chains, (int, np.integer)) or n_chains < 1:
            raise ValueError(f"{where}: n_chains must be an integer >= 1, got {n_chains!r}")
        n_chains = int(n_chains)
        system = resolve_system(system)
        rngs = chain_rngs(seed, n_chains)
        self.temperature, self.seed, self.settings, self.progress = temperature, int(seed), settings, progress
        self.where, self.backend, self.n_chains = where, backend, n_chains
        if backend == "numba":
            self.sampler = NumbaChains([SwapMonteCarlo(temperature, system, rng=r, settings=settings) for r in rngs])
        else:
            from tglassmlp.physics.swap_mc_opencl import OpenCLChains

            self.sampler = OpenCLChains(temperature, system, settings=settings, seed=seed, n_chains=n_chains,
                                        device=device)
        # the single numba sampler (what callers of the one-chain protocol used to read)
        self.mc = self.sampler.samplers[0] if backend == "numba" and n_chains == 1 else None
        if initial is None:
            if (isinstance(n_particles, bool) or not isinstance(n_particles, (int, np.integer))
                    or n_particles < 2):
                raise ValueError(f"{where}: n_particles must be an integer >= 2, got {n_particles!r}")
            n_particles = int(n_particles)
            composition = system.composition_for(n_particles)  # raises for incompatible N
            box = system.box_for(n_particles)
        else:
            # one start for every chain, or a list of B starts (chain b from the b-th: cascades of batches)
            per_chain = isinstance(initial, (list, tuple)) and all(isinstance(s, (list, tuple)) for s in initial)
            starts = ([validate_configuration(*s, where=f"{where}(initial[{b}]=...)") for b, s in enumerate(initial)]
                      if per_chain else [validate_configuration(*initial, where=f"{where}(initial=...)")])
            if per_chain and len(starts) != n_chains:
                raise ValueError(f"{where}: initial lists {len(starts)} start(s) for n_chains = {n_chains}")
            if any(s[0].shape != starts[0][0].shape or s[2] != starts[0][2] for s in starts):
                raise ValueError(f"{where}: the chains' starts must have one N and one box, got N = "
                                 f"{[s[0].shape[0] for s in starts]}, box = {[s[2] for s in starts]}")
            initial = starts[0]  # a list of one start is the single start (same chain, same key)
            n_particles = initial[0].shape[0]
        self.n_particles = n_particles
        t_hi = settings.melt_temperature if initial is None else temperature
        self.ladder = []
        if t_hi > temperature:
            k = np.arange(1, settings.anneal_steps)
            self.ladder = list(t_hi * (temperature / t_hi) ** (k / settings.anneal_steps))
        # preparation: (temperature, sweeps) stages, all with d adapting
        stages = ([(settings.melt_temperature, settings.melt_sweeps)] if initial is None else [])
        self.stages = stages + [(t, settings.anneal_sweeps) for t in self.ladder] + [
            (temperature, settings.adapt_sweeps_at_target)]

        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.key = _checkpoint_key(temperature, n_particles, seed, settings, initial, backend, n_chains)
        if initial is not None and len(starts) > 1:
            self.key["initial"] = [_start_digest(s) for s in starts]
        if key_extra:
            self.key.update(json.loads(json.dumps(key_extra)))
        self.extra: dict = {}
        if self.checkpoint is not None and self.checkpoint.is_file():
            self.run, self.snaps, self.extra = _load_checkpoint(self.checkpoint, self.key, self.sampler, where)
            self.resumed = True
            if progress:
                print(f"[swap_mc] resumed {self.checkpoint}: stage {self.run['stage']}/{len(self.stages)}, "
                      f"production sweeps {self.run['total']} + {self.run['done']}", flush=True)
        else:
            self.resumed = False
            if initial is None:
                chain_starts = [(*_random_start(n_particles, box, composition, r), box) for r in rngs]
            else:  # one start per chain, or the one start for every chain
                chain_starts = starts if len(starts) > 1 else starts * n_chains
            self.sampler.reset(np.stack([c[0] for c in chain_starts]), np.stack([c[1] for c in chain_starts]),
                               chain_starts[0][2])
            self.run = dict(stage=0, stage_done=0, sweeps_before=0, total=0, done=0,
                            block=settings.first_block_sweeps, snap_spacing=settings.snapshot_every, drift=0.0,
                            finished=False, wall_s=0.0)
            self.snaps = []
        self.last_save = time.perf_counter()
        self.wall_before = float(self.run["wall_s"])

    @property
    def wall_time_s(self) -> float:
        """Wall time of the whole chain so far, over all resumed runs [s]."""
        return self.wall_before + time.perf_counter() - self.t0

    def save(self, force: bool = False):
        """Checkpoint the chain (if a path was given) when forced or ``checkpoint_every_s`` has passed."""
        now = time.perf_counter()
        if self.checkpoint is None or not (force or now - self.last_save >= self.settings.checkpoint_every_s):
            return
        self.run["wall_s"] = self.wall_time_s
        _save_checkpoint(self.checkpoint, self.sampler, self.key, self.run, self.snaps, self.extra)
        self.last_save = time.perf_counter()

    def prepare(self):
        """Melt, anneal and adapt each chain's d (resumable between adaptation blocks: the blocks of one
        ``SwapMonteCarlo.adapt`` per stage)."""
        run, sampler, settings = self.run, self.sampler, self.settings
        while run["stage"] < len(self.stages):
            t_stage, n_stage = self.stages[run["stage"]]
            sampler.temperature = t_stage
            while run["stage_done"] < n_stage:
                b = min(settings.adapt_every, n_stage - run["stage_done"])
                before = sampler.displacement_counts()
                sampler.run(b)
                attempted, accepted = (sampler.displacement_counts() - before).T
                sampler.set_steps([adapted_step(d, n_att, n_acc, settings)
                                   for d, n_att, n_acc in zip(sampler.steps, attempted, accepted)])
                run["stage_done"] += b
                self.save()
            run["stage"] += 1
            run["stage_done"] = 0
            if run["stage"] == len(self.stages):
                sampler.temperature = self.temperature
                sampler.check_energy()
                run["sweeps_before"] = sampler.sweeps_done
                # ---- production starts: frozen d, doubling blocks, snapshots of unwrapped positions
                sampler.reset_counters()
                self.snaps = [sampler.unwrapped_positions().astype(np.float32)]
                self.save(force=True)
        sampler.temperature = self.temperature

    def produce(self, n_sweeps: int):
        """Production sweeps of every chain until ``run['done']`` reaches ``n_sweeps`` (resumable at any
        snapshot); then they are added to ``run['total']`` and the tracked energies are checked against a
        recomputation."""
        run, settings = self.run, self.settings
        while run["done"] < n_sweeps:
            spacing = run["snap_spacing"]
            chunk = min(spacing - (run["total"] + run["done"]) % spacing, n_sweeps - run["done"])
            self.sampler.run(chunk)
            run["done"] += chunk
            if (run["total"] + run["done"]) % spacing == 0:
                self.snaps.append(self.sampler.unwrapped_positions().astype(np.float32))
                if len(self.snaps) > settings.max_snapshots:
                    # thin: keep every other snapshot (times 0, 2s, 4s, ...) and double the spacing; from
                    # now on snapshots are taken at multiples of the new spacing, and the last kept one is
                    # at an even multiple of the old spacing, i.e. on the new grid
                    self.snaps = self.snaps[::2]
                    run["snap_spacing"] = 2 * spacing
            self.save()
        run["total"] += n_sweeps
        run["done"] = 0
        run["drift"] = max(run["drift"], self.sampler.check_energy())

    def evaluate_chain(self, b: int) -> dict:
        """The criterion of chain b on the last half of the production so far (see ``_evaluate``)."""
        return _evaluate(self.sampler.box, self.sampler.energy_trace(b), [s[b] for s in self.snaps],
                         self.run["snap_spacing"], self.run["total"], self.settings)

    def evaluate(self) -> list:
        """The criterion of every chain (list of B dicts)."""
        return [self.evaluate_chain(b) for b in range(self.n_chains)]

    def equilibrate(self) -> list:
        """Preparation, then production in doubling blocks until every chain's criterion holds or ``max_sweeps``.

        Returns the criterion's numbers (``_evaluate``) of every chain at the end; ``run['finished']`` is then
        True.
        """
        run, settings = self.run, self.settings
        self.prepare()
        evs = None
        if run["finished"]:
            # a finished chain is judged again with the current criterion settings (they may have changed)
            evs = self.evaluate()
            if run["total"] < settings.max_sweeps and any(ev["reasons"] for ev in evs):
                # a rerun with a larger cap extends an unmet run by another block
                run.update(finished=False, done=0, block=min(run["total"], settings.max_sweeps - run["total"]))
                evs = None
        while not run["finished"]:
            self.produce(run["block"])
            evs = self.evaluate()
            run["reasons"] = [ev["reasons"] for ev in evs]
            if self.progress:
                for b, ev in enumerate(evs):
                    acc_d, acc_s, _ = self.sampler.acceptance(b)
                    print(f"[swap_mc] T={self.temperature:g} N={self.n_particles} chain {b} sweeps={run['total']} "
                          f"E/N={ev['energy_mean']:.5f} tau_Q={ev['tau_q']} tau_E={ev['tau_e']:.3g} "
                          f"z={ev['z']:.2f} acc={acc_d:.3f}/{acc_s:.3f} t={time.perf_counter() - self.t0:.1f}s",
                          flush=True)
            if not any(ev["reasons"] for ev in evs) or run["total"] >= settings.max_sweeps:
                run["finished"] = True
            else:
                run["block"] = min(run["total"], settings.max_sweeps - run["total"])
        self.save(force=True)
        return evs

    def report(self, ev: dict, b: int = 0) -> "EquilibrationReport":
        """Chain b's EquilibrationReport from its criterion's numbers ``ev``."""
        sampler, run = self.sampler, self.run
        acc_d, acc_s, acc_pairs = sampler.acceptance(b)
        return EquilibrationReport(
            temperature=self.temperature, n_particles=self.n_particles, seed=self.seed,
            criterion_met=not ev["reasons"], reasons=ev["reasons"], sweeps_total=run["sweeps_before"] + run["total"],
            sweeps_production=run["total"], window_sweeps=ev["window_sweeps"],
            max_displacement=float(sampler.steps[b]), acceptance_displacement=acc_d, acceptance_swap=acc_s,
            acceptance_swap_by_pair=acc_pairs, tau_overlap=ev["tau_q"], tau_energy=ev["tau_e"],
            energy_mean=ev["energy_mean"], energy_halves=ev["means"], stationarity_z=ev["z"],
            energy_final=sampler.energy(b) / self.n_particles, energy_drift=run["drift"],
            anneal_temperatures=[float(t) for t in self.ladder], wall_time_s=self.wall_time_s,
            settings=asdict(self.settings), energy_trace=sampler.energy_trace(b), overlap_lags=ev["lags"],
            overlap=ev["q"])


def equilibrium_structure(temperature, n_particles: int = 1290, seed: int = 0, *, system=None,
                          initial=None, settings: SwapSettings | None = None, max_sweeps: int | None = None,
                          strict: bool = False, progress: bool = False, checkpoint=None, backend: str | None = None,
                          **overrides):
    """An equilibrium configuration of the 2D ternary mixture at ``temperature`` by swap Monte Carlo.

    Protocol (numbers from ``conf/swap/default.yaml``): random start (grid sites, shuffled types) or
    ``initial``; melt at ``melt_temperature``; geometric anneal to T; adapt d at T; then a frozen-d run at
    T growing in doubling blocks until the criterion holds (see the config file) or ``max_sweeps``.
    Many structures from one chain: :func:`tglassmlp.physics.harvest.equilibrium_structures`.

    Args:
        temperature: target k_B T [epsilon].
        n_particles: N; the box and the counts per type follow the reference density and composition
            (``system.box_for``, ``system.composition_for``: N must keep the composition exactly).
        seed: fixes the whole run.
        system: the potential (default KA2D ternary).
        initial: optional (positions, types, box) to start from instead of the random start (its own N,
            box and composition; ``n_particles`` is ignored). Melting and annealing are skipped: the run
            goes straight to the target T (d adapting first), e.g. to continue from a hotter structure.
        settings: a SwapSettings; ``overrides`` replace single settings (e.g. ``swap_fraction=0``).
        max_sweeps: cap on the frozen-d run at T (default settings.max_sweeps).
        strict: raise NotEquilibratedError if the criterion is not met (else: warn and flag in the report).
        progress: print a line per block.
        checkpoint: optional path of a ``.npz`` file. The whole chain state (configuration, cell lists,
            random generator, snapshots, energy trace, counters, stage) is written there atomically every
            ``settings.checkpoint_every_s`` seconds, at the end of the preparation and when the run ends;
            a rerun with the same arguments resumes from it and gives the same result as an uninterrupted
            run (same seed, same chain). A finished checkpoint returns at once, unless the criterion was not
            met and ``max_sweeps`` now allows more sweeps: then the production run is extended. A
            checkpoint of other arguments (T, N, seed, settings other than max_sweeps, start) raises
            ValueError. The caller deletes the file once the structure is stored.
        backend: the sampler, "numba" (``SwapMonteCarlo``) or "opencl" (the batched kernel with one chain);
            default ``settings.backend``. The protocol is the same (``EquilibrationChain``).

    Returns:
        positions (N, 2) float64 wrapped into [0, box) [sigma], types (N,) int64 (0, 1, 2), box [sigma],
        report: EquilibrationReport (``criterion_met`` says whether the structure may be used).
    """
    chain = EquilibrationChain(temperature, n_particles, seed, system=system, initial=initial, settings=settings,
                               max_sweeps=max_sweeps, progress=progress, checkpoint=checkpoint, backend=backend,
                               **overrides)
    report = chain.report(chain.equilibrate()[0])
    if not report.criterion_met:
        msg = (f"equilibrium_structure(T={chain.temperature:g}, N={chain.n_particles}, seed={seed}): criterion NOT "
               f"met after {report.sweeps_production} sweeps: {'; '.join(report.reasons)}")
        if strict:
            raise NotEquilibratedError(msg)
        warnings.warn(msg + " (flagged: report.criterion_met is False)", RuntimeWarning, stacklevel=2)
    sampler = chain.sampler
    return sampler.positions(0), sampler.types(0), sampler.box, report

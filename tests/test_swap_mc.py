"""Swap Monte Carlo: kernel energies vs the numpy reference, detailed balance, reproducibility, input errors.

Detailed balance is tested two ways on tiny systems:
* swaps only, positions fixed: the histogram over all type assignments (exact enumeration) matches the
  Boltzmann weights (chi-square);
* full sampler: energy histograms at T1 reweighted to T2 agree with a direct run at T2.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from tglassmlp.physics import ConfigurationError, load_system, potential_energy
from tglassmlp.physics.swap_mc import (
    LOOKAHEAD,
    NotEquilibratedError,
    SwapMonteCarlo,
    _random_start,
    _rewind,
    decorrelation_time,
    equilibrium_structure,
    integrated_autocorrelation_time,
    load_swap_settings,
    self_overlap,
)

from conftest import Killed, chisquare_merged, killed_after_checkpoint, spread_positions

SYSTEM = load_system()
# kernel dE vs the difference of two numpy total energies (~1e3 epsilon each): relative to max(|dE|, 1)
DELTA_RTOL = 1e-10
# chi-square / z-test thresholds: fixed seeds make the tests deterministic; these only bound how unlucky
# a seed may be
P_MIN = 1e-3
Z_MAX = 4.0
# a small test box: > 2 cutoffs (minimum image exact), < 3 cell stencils (the kernel's single-cell path)
TINY_BOX = 5.5


def brute_energy(pos, types, box):
    """Total energy by an explicit minimum-image double loop with the system's numpy pair energy."""
    e = 0.0
    n = len(pos)
    for i in range(n):
        for j in range(i + 1, n):
            d = pos[i] - pos[j]
            d -= box * np.round(d / box)
            e += float(SYSTEM.pair_energy(np.hypot(*d), types[i], types[j]))
    return e


@pytest.fixture(scope="module")
def warm_1290():
    """A N = 1290 sampler after a short melt at T = 1 (particles crossed cells many times)."""
    box = SYSTEM.box_for(1290)
    rng = np.random.default_rng(11)
    pos, types = _random_start(1290, box, SYSTEM.composition_for(1290), rng)
    mc = SwapMonteCarlo(1.0, seed=5).reset(pos, types, box)
    mc.adapt(60)
    return mc


# ------------------------------------------------------------------ kernel energies
def test_kernel_energy_and_cells_match_reference(warm_1290):
    mc = warm_1290
    e_ref = potential_energy(mc.positions, mc.types, mc.box)
    assert mc.total_energy() == pytest.approx(e_ref, rel=1e-12)
    assert mc.energy == pytest.approx(e_ref, rel=1e-9)  # tracked incrementally over 60 sweeps of accepted moves
    # the kernel's copies equal the positions and types, and its Verlet lists are complete
    assert_kernel_state_valid(mc)
    assert np.all((mc.positions >= 0) & (mc.positions < mc.box))


def assert_kernel_state_valid(mc):
    """The kernel-order copies equal pos / types exactly, every particle lies within skin / 2 of where its
    Verlet list was built, and every list holds exactly the particles within the list radius of the reference
    positions (checked by brute force, minimum image)."""
    s, k = mc._state, mc._kernel
    order, box = s["order"], s["box"]
    np.testing.assert_array_equal(np.sort(order), np.arange(len(order)))
    np.testing.assert_array_equal(k["kernel_index"][order], np.arange(len(order)))
    np.testing.assert_array_equal(k["xs"], s["pos"][order])  # exact copies, not approximations
    np.testing.assert_array_equal(k["ts"], s["types"][order])
    drift = k["xs"] - k["ref"]
    drift -= box * np.round(drift / box)
    assert np.all(np.einsum("ij,ij->i", drift, drift) <= 0.25 * k["skin"] ** 2)
    d = k["ref"][:, None, :] - k["ref"][None, :, :]
    d -= box * np.round(d / box)
    close = np.einsum("ijk,ijk->ij", d, d) < k["rlist"] ** 2
    np.fill_diagonal(close, False)
    for i in range(len(order)):  # rows by particle index, entries kernel indices
        listed = k["nbr"][order[i], : k["nn"][order[i]]]
        np.testing.assert_array_equal(np.sort(listed), np.flatnonzero(close[i]))


def test_verlet_lists_follow_accepted_moves():
    """400 particles in the N = 1290 box (a dilute gas at T = 1, large steps, half swaps): most particles travel further
    than the skin, the lists are rebuilt many times (small skin), thousands of swaps are accepted; the lists stay
    complete and the kernel energies (tracked, total, dE of displacements and swaps, also just inside and
    beyond skin / 2 of a list's reference position) match the numpy reference. A restored state_dict rebuilds
    the same lists and continues the same chain move for move; so does a checkpoint of the cell-list kernel."""
    n, box = 400, SYSTEM.box_for(1290)
    pos, types = _random_start(n, box, (134, 133, 133), np.random.default_rng(5))
    settings = load_swap_settings(verlet_skin=0.3)
    mc = SwapMonteCarlo(1.0, seed=6, swap_fraction=0.5, max_displacement=0.1, settings=settings)
    mc.reset(pos, types, box)
    assert mc._kernel["nbr"].shape[1] < n - 1  # cell-built lists, not all pairs
    unwrapped0 = mc.unwrapped_positions
    mc.run(100)
    c = mc.counters
    assert c[1] > 5000 and c[3] > 5000, c  # many accepted displacements and swaps
    assert mc.list_rebuilds > 20
    assert np.median(np.linalg.norm(mc.unwrapped_positions - unwrapped0, axis=1)) > 0.3  # > the skin
    assert_kernel_state_valid(mc)
    e_ref = potential_energy(mc.positions, mc.types, box)
    assert mc.total_energy() == pytest.approx(e_ref, rel=1e-12)
    assert mc.energy == pytest.approx(e_ref, rel=1e-9)
    rng = np.random.default_rng(7)
    p, t = mc.positions, mc.types
    k = mc._kernel
    checked = 0
    for trial in range(24):
        i, j = rng.choice(n, 2, replace=False)
        ki = k["kernel_index"][i]
        # alternately: near the skin (0.49 or 0.51 skin from the list's reference position, inside / outside
        # the list's guarantee), and large steps across the box edge
        if trial % 2:
            phi = rng.uniform(0, 2 * np.pi)
            new = k["ref"][ki] + (0.49 if trial % 4 == 1 else 0.51) * k["skin"] * np.array([np.cos(phi), np.sin(phi)])
        else:
            new = p[i] + rng.uniform(-1.5, 1.5, 2)
        de = mc.energy_change_displacement(i, new)
        moved = p.copy()
        moved[i] = new
        if not math.isinf(de):
            ref = potential_energy(moved, t, box) - e_ref
            assert abs(de - ref) <= DELTA_RTOL * max(abs(ref), 1.0), (i, de, ref)
            checked += 1
        swapped = t.copy()
        swapped[[i, j]] = t[[j, i]]
        de = mc.energy_change_swap(i, j)
        if t[i] != t[j] and not math.isinf(de):
            ref = potential_energy(p, swapped, box) - e_ref
            assert abs(de - ref) <= DELTA_RTOL * max(abs(ref), 1.0), (i, j, de, ref)
            checked += 1
    assert checked >= 24
    # restore into a fresh sampler: same lists, then the same chain
    other = SwapMonteCarlo(1.0, seed=99, swap_fraction=0.5, max_displacement=0.1, settings=settings)
    other.load_state_dict(mc.state_dict())
    assert_kernel_state_valid(other)
    np.testing.assert_array_equal(other._kernel["nbr"], mc._kernel["nbr"])
    mc.run(5)
    other.run(5)
    np.testing.assert_array_equal(other.positions, mc.positions)
    np.testing.assert_array_equal(other.types, mc.types)
    np.testing.assert_array_equal(other.energy_trace, mc.energy_trace)
    assert_kernel_state_valid(other)
    # a checkpoint of the cell-list kernel (cell lists, no kernel order, no Verlet reference) still loads; the
    # lists are built anew, so the chain is the same up to rounding of dE
    legacy_format = {key: v for key, v in mc.state_dict().items()
                     if key not in ("state_order", "state_verlet_ref", "state_verlet_skin")}
    legacy_format.update(state_m=np.int64(5), state_inv_cs=np.float64(0.1), state_reach=np.int64(2),
                         state_count=np.zeros(25, dtype=np.int64), state_members=np.zeros((25, 4), dtype=np.int64),
                         state_cell_of=np.zeros(n, dtype=np.int64), state_slot_of=np.zeros(n, dtype=np.int64))
    legacy = SwapMonteCarlo(1.0, seed=99, swap_fraction=0.5, max_displacement=0.1,
                            settings=settings).load_state_dict(legacy_format)
    assert_kernel_state_valid(legacy)
    mc.run(3)
    legacy.run(3)
    np.testing.assert_allclose(legacy.positions, mc.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(legacy.energy_trace, mc.energy_trace, rtol=1e-12)


def test_chain_does_not_depend_on_the_skin():
    """The Verlet skin is a performance setting: chains with skins 0.3 (many rebuilds) and 2.0 (all pairs within
    the list radius kept for long) take the same moves; positions equal to rounding after 300 sweeps (N = 301), and the
    tracked energy equals the direct sum."""
    n = 301
    box = SYSTEM.box_for(n)
    pos, types = _random_start(n, box, SYSTEM.composition_for(n), np.random.default_rng(3))
    chains = []
    for skin in (0.3, 2.0):
        mc = SwapMonteCarlo(0.8, seed=4, max_displacement=0.1, settings=load_swap_settings(verlet_skin=skin))
        mc.reset(pos, types, box).run(300)
        chains.append(mc)
    a, b = chains
    assert a.list_rebuilds > 10 * max(b.list_rebuilds, 1)
    np.testing.assert_array_equal(a.types, b.types)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.counters, b.counters)
    for mc in chains:
        assert mc.energy == pytest.approx(potential_energy(mc.positions, mc.types, box), rel=1e-10)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937])
def test_prefetch_and_split_runs_keep_the_chain(bit_generator):
    """The kernel draws its random numbers LOOKAHEAD ahead of the chain (to prefetch the next move's data) and
    takes the generator back when a run returns. With or without prefetching, in one run or split into several,
    the chain (positions bit for bit, types, counters) and the generator's final state are the same; a
    generator left LOOKAHEAD numbers ahead, or rewound by a wrong count, would shift every later move. PCG64 is
    rewound by a jump, MT19937 by drawing again."""
    n, box = 400, SYSTEM.box_for(1290)
    pos, types = _random_start(n, box, (134, 133, 133), np.random.default_rng(5))

    def chain(prefetch, runs):
        mc = SwapMonteCarlo(1.0, rng=np.random.Generator(bit_generator(11)), swap_fraction=0.5, max_displacement=0.1)
        mc._prefetch = prefetch
        mc.reset(pos, types, box)
        for sweeps in runs:
            mc.run(sweeps)
        return mc

    ref = chain(False, [30])
    assert ref.counters[1] > 1000 and ref.counters[3] > 1000, ref.counters
    for prefetch, runs in ((True, [30]), (True, [1, 7, 22]), (False, [13, 0, 17])):
        mc = chain(prefetch, runs)
        np.testing.assert_array_equal(mc.positions, ref.positions)
        np.testing.assert_array_equal(mc.types, ref.types)
        np.testing.assert_array_equal(mc.counters, ref.counters)
        assert generator_state(mc.rng) == generator_state(ref.rng)


def generator_state(rng) -> str:
    """A generator's full state as comparable text (MT19937's holds an array)."""
    return json.dumps(rng.bit_generator.state, default=lambda a: a.tolist(), sort_keys=True)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox])
def test_rewind_leaves_the_generator_after_the_consumed_numbers(bit_generator):
    """_rewind(rng, start, k) leaves rng as k doubles drawn from ``start`` would, whatever was drawn after
    ``start``; PCG64's half-used 32-bit word (which doubles do not touch) survives the jump."""
    rng = np.random.Generator(bit_generator(8))
    rng.integers(0, 10, dtype=np.int32)  # PCG64: leaves the other half of a 64-bit word buffered
    start = rng.bit_generator.state
    expected = np.random.Generator(bit_generator())
    expected.bit_generator.state = start
    expected.random(1000)
    rng.random(1000 + LOOKAHEAD)
    _rewind(rng, start, 1000)
    assert generator_state(rng) == generator_state(expected)
    assert rng.integers(0, 2**31, size=5, dtype=np.int32).tolist() == \
        expected.integers(0, 2**31, size=5, dtype=np.int32).tolist()


@pytest.mark.filterwarnings("ignore:equilibrium_structure")
def test_checkpoint_of_the_cell_list_kernel_loads(tmp_path):
    """A checkpoint written before the Verlet kernel (its key names cells_per_cutoff, its state holds cell lists
    and no kernel order) is accepted by equilibrium_structure and returns the stored structure."""
    path = tmp_path / "chain.npz"
    pos, types, _, rep = equilibrium_structure(0.5, max_sweeps=200, checkpoint=path, **CKPT)
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data["meta"]))
    meta["key"]["settings"].pop("verlet_skin", None)
    meta["key"]["settings"]["cells_per_cutoff"] = 2
    data["meta"] = np.array(json.dumps(meta))
    for key in ("state_order", "state_verlet_ref", "state_verlet_skin"):
        data.pop(key)
    n = len(types)
    data.update(state_m=np.int64(1), state_inv_cs=np.float64(0.1), state_reach=np.int64(0),
                state_count=np.array([n]), state_members=np.arange(n)[None, :], state_cell_of=np.zeros(n, np.int64),
                state_slot_of=np.arange(n))
    np.savez(path, **data)
    pos2, types2, _, rep2 = equilibrium_structure(0.5, max_sweeps=200, checkpoint=path, **CKPT)
    np.testing.assert_array_equal(pos2, pos)
    np.testing.assert_array_equal(types2, types)
    assert rep2.sweeps_total == rep.sweeps_total
    # extended to 400 sweeps: the chain an uninterrupted run takes (up to the rounding of dE: lists built anew)
    pos3, types3, _, rep3 = equilibrium_structure(0.5, max_sweeps=400, checkpoint=path, **CKPT)
    pos4, types4, _, rep4 = equilibrium_structure(0.5, max_sweeps=400, checkpoint=tmp_path / "fresh.npz", **CKPT)
    assert rep3.sweeps_total == rep4.sweeps_total > rep.sweeps_total
    np.testing.assert_array_equal(types3, types4)
    np.testing.assert_allclose(pos3, pos4, rtol=0, atol=1e-10)


def sampler_under_test(warm_1290, n, box, spread_seed):
    """The warm N = 1290 sampler (box None), or a fresh one on n spread particles in a tiny box."""
    if box is None:
        return warm_1290
    return SwapMonteCarlo(1.0, seed=0).reset(spread_positions(n, box, spread_seed), np.arange(n) % 3, box)


@pytest.mark.parametrize("n, box", [(1290, None), (12, TINY_BOX)])
def test_displacement_delta_matches_reference(warm_1290, n, box):
    mc = sampler_under_test(warm_1290, n, box, spread_seed=1)
    pos, types, box = mc.positions, mc.types, mc.box
    e0 = potential_energy(pos, types, box)
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(30):
        i = int(rng.integers(len(pos)))
        # steps up to 0.6 sigma: many cross a cell boundary or the box edge
        new = pos[i] + rng.uniform(-0.6, 0.6, 2)
        de = mc.energy_change_displacement(i, new)
        if math.isinf(de):
            continue
        moved = pos.copy()
        moved[i] = new
        ref = potential_energy(moved, types, box) - e0
        assert abs(de - ref) <= DELTA_RTOL * max(abs(ref), 1.0), (i, de, ref)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("n, box", [(1290, None), (12, TINY_BOX)])
def test_swap_delta_matches_reference(warm_1290, n, box):
    mc = sampler_under_test(warm_1290, n, box, spread_seed=4)
    pos, types, box = mc.positions, mc.types, mc.box
    e0 = potential_energy(pos, types, box)
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(30):
        i, j = rng.choice(len(pos), 2, replace=False)
        if types[i] == types[j]:
            continue
        de = mc.energy_change_swap(i, j)
        if math.isinf(de):
            continue
        swapped = types.copy()
        swapped[[i, j]] = types[[j, i]]
        ref = potential_energy(pos, swapped, box) - e0
        assert abs(de - ref) <= DELTA_RTOL * max(abs(ref), 1.0), (i, j, de, ref)
        checked += 1
    assert checked >= 10


def test_swap_of_neighbours_keeps_mutual_pair(warm_1290):
    """The mutual pair of two interacting particles is unchanged by their swap: check such pairs explicitly."""
    mc = warm_1290
    pos, types, box = mc.positions, mc.types, mc.box
    e0 = potential_energy(pos, types, box)
    d = pos[:, None, :] - pos[None, :, :]
    d -= box * np.round(d / box)
    r = np.hypot(d[..., 0], d[..., 1])
    close = np.argwhere((r < 1.2) & (types[:, None] != types[None, :]))
    for i, j in close[:10]:
        swapped = types.copy()
        swapped[[i, j]] = types[[j, i]]
        ref = potential_energy(pos, swapped, box) - e0
        de = mc.energy_change_swap(i, j)
        if not math.isinf(de):
            assert abs(de - ref) <= DELTA_RTOL * max(abs(ref), 1.0)


# ------------------------------------------------------------------ detailed balance
def test_swap_chain_matches_exact_boltzmann_weights():
    """Positions fixed, swaps only: histogram over the 90 type assignments of 2+2+2 particles vs exp(-E/T)."""
    # a dilute system has small energy differences between assignments: a low T makes the weights unequal
    n, temperature = 6, 0.1
    pos = spread_positions(n, TINY_BOX, seed=7, min_distance=0.95)
    start = np.array([0, 0, 1, 1, 2, 2])
    states = sorted(set(itertools.permutations(start)))
    energies = np.array([brute_energy(pos, np.array(s), TINY_BOX) for s in states])
    assert np.ptp(energies) > 2.0 * temperature  # the weights are far from uniform: a real test
    weights = np.exp(-(energies - energies.min()) / temperature)
    weights /= weights.sum()
    index = {s: k for k, s in enumerate(states)}

    mc = SwapMonteCarlo(temperature, swap_fraction=1.0, seed=21).reset(pos, start, TINY_BOX)
    mc.run(200)  # burn-in
    # a record every 5 sweeps = 30 swap attempts: nearly independent samples for the chi-square test
    trace = mc.run(60000, record_every=5, record_types=True)
    assert np.all(np.abs(mc.unwrapped_positions - pos) == 0)  # no displacement was made
    counts = np.bincount([index[tuple(t)] for t in trace.tolist()], minlength=len(states))
    expected = weights * counts.sum()
    chi2, p, dof = chisquare_merged(counts, expected)
    assert p > P_MIN, f"chi2 = {chi2:.1f} for {dof} dof, p = {p:.2g}"
    assert 0.05 < mc.acceptance_swap < 0.95


def _blocked_mean_error(values, n_blocks=20):
    blocks = np.array_split(values, n_blocks)
    means = np.array([b.mean() for b in blocks])
    return values.mean(), means.std(ddof=1) / math.sqrt(n_blocks)


def test_full_sampler_energy_histogram_reweights():
    """Histogram of E at T1 reweighted to T2 equals a direct run at T2 (displacements + swaps)."""
    n, t1, t2 = 12, 1.0, 0.8
    pos = spread_positions(n, TINY_BOX, seed=9)
    types = np.arange(n) % 3
    traces = {}
    for temperature, seed in ((t1, 31), (t2, 32)):
        mc = SwapMonteCarlo(temperature, seed=seed, max_displacement=0.3).reset(pos, types, TINY_BOX)
        mc.run(2000)
        mc.reset_counters()
        mc.run(150000)
        traces[temperature] = mc.energy_trace * n  # total energies
        assert mc.acceptance_swap > 0.05 and mc.acceptance_displacement > 0.2
    e1, e2 = traces[t1], traces[t2]
    w = np.exp(-(1.0 / t2 - 1.0 / t1) * (e1 - e1.min()))
    # reweighted and direct mean energy, with errors from 20 blocks each
    blocks = np.array_split(np.arange(e1.size), 20)
    rw = np.array([np.sum(w[b] * e1[b]) / np.sum(w[b]) for b in blocks])
    mean_rw, err_rw = rw.mean(), rw.std(ddof=1) / math.sqrt(len(rw))
    mean_direct, err_direct = _blocked_mean_error(e2)
    assert abs(mean_rw - mean_direct) < Z_MAX * math.hypot(err_rw, err_direct)
    # the runs at T1 and T2 really differ (otherwise the check above would be empty)
    assert abs(e1.mean() - mean_direct) > 10 * math.hypot(err_rw, err_direct)
    # histograms: bin by bin, probability with block errors
    edges = np.quantile(e2, np.linspace(0.05, 0.95, 9))
    h_rw = np.array([np.histogram(e1[b], edges, weights=w[b])[0] / w[b].sum() for b in blocks])
    blocks2 = np.array_split(np.arange(e2.size), 20)
    h_d = np.array([np.histogram(e2[b], edges)[0] / len(b) for b in blocks2])
    z = (h_rw.mean(0) - h_d.mean(0)) / np.hypot(h_rw.std(0, ddof=1), h_d.std(0, ddof=1)) * math.sqrt(20)
    assert np.max(np.abs(z)) < Z_MAX, z


# ------------------------------------------------------------------ equilibrium_structure
QUICK = dict(melt_sweeps=20, anneal_steps=2, anneal_sweeps=20, adapt_sweeps_at_target=20, first_block_sweeps=200,
             snapshot_every=10)


@pytest.mark.filterwarnings("ignore:.*criterion NOT met:RuntimeWarning")  # runs far too short to pass it
def test_equilibrium_structure_reproducible_and_consistent():
    n = 129  # a multiple of 43 keeps the composition 600/330/360 per 1290 exactly
    out1 = equilibrium_structure(1.0, n_particles=n, seed=3, max_sweeps=400, **QUICK)
    out2 = equilibrium_structure(1.0, n_particles=n, seed=3, max_sweeps=400, **QUICK)
    out3 = equilibrium_structure(1.0, n_particles=n, seed=4, max_sweeps=400, **QUICK)
    pos, types, box, report = out1
    np.testing.assert_array_equal(pos, out2[0])
    np.testing.assert_array_equal(types, out2[1])
    np.testing.assert_array_equal(report.energy_trace, out2[3].energy_trace)
    assert not np.array_equal(pos, out3[0])
    # box, composition, wrapping
    assert box == pytest.approx(SYSTEM.box_for(n))
    np.testing.assert_array_equal(np.bincount(types, minlength=3), SYSTEM.composition_for(n))
    assert np.all((pos >= 0) & (pos < box))
    # the reported final energy is that of the returned structure (numpy reference)
    assert report.energy_final * n == pytest.approx(potential_energy(pos, types, box), rel=1e-10)
    assert report.sweeps_production >= 200 and report.acceptance_swap > 0
    assert isinstance(report.criterion_met, bool)
    d = report.to_dict()
    assert d["criterion_met"] == report.criterion_met and d["energy_trace"] is None


def test_swaps_conserve_composition():
    n = 86
    box = SYSTEM.box_for(n)
    pos, types = _random_start(n, box, SYSTEM.composition_for(n), np.random.default_rng(0))
    mc = SwapMonteCarlo(0.8, seed=1, swap_fraction=0.5).reset(pos, types, box)
    trace = mc.run(300, record_every=10, record_types=True)
    counts = np.array([np.bincount(t, minlength=3) for t in trace])
    assert np.all(counts == SYSTEM.composition_for(n))
    assert mc.counters[3] > 0  # swaps were accepted
    # the by-type index lists stay consistent with the types
    s = mc._state
    for t in range(3):
        members = s["by_type"][t, : s["n_of_type"][t]]
        assert np.all(mc.types[members] == t)
        np.testing.assert_array_equal(s["slot_in_type"][members], np.arange(len(members)))


def test_only_allowed_pairs_are_swapped():
    """With swap pairs (1, 2) only, type-0 particles keep their identity."""
    n = 86
    box = SYSTEM.box_for(n)
    pos, types = _random_start(n, box, SYSTEM.composition_for(n), np.random.default_rng(1))
    mc = SwapMonteCarlo(1.0, seed=2, swap_fraction=1.0, swap_pairs=[(1, 2)]).reset(pos, types, box)
    mc.run(100)
    np.testing.assert_array_equal(mc.types == 0, types == 0)
    assert mc.counters[3] > 0


def test_unmet_criterion_is_flagged():
    kwargs = dict(n_particles=43, seed=0, max_sweeps=20, **{**QUICK, "first_block_sweeps": 20})
    with pytest.warns(RuntimeWarning, match="criterion NOT met"):
        *_, report = equilibrium_structure(0.3, **kwargs)
    assert report.criterion_met is False and report.reasons
    with pytest.raises(NotEquilibratedError):
        equilibrium_structure(0.3, strict=True, **kwargs)


# ------------------------------------------------------------------ analysis helpers
def test_autocorrelation_time_of_ar1():
    phi = 0.9
    rng = np.random.default_rng(0)
    x = np.empty(200000)
    x[0] = 0.0
    noise = rng.normal(size=x.size)
    for k in range(1, x.size):
        x[k] = phi * x[k - 1] + noise[k]
    exact = 0.5 * (1 + phi) / (1 - phi)  # 9.5 samples
    assert integrated_autocorrelation_time(x, spacing=2.0) == pytest.approx(2 * exact, rel=0.1)


def test_self_overlap_and_decorrelation_time():
    snaps = np.zeros((5, 100, 2))
    snaps[2:, :50, 0] = 1.0  # half the particles jump at snapshot 2
    snaps[3:, :, 0] = 1.0
    lags, q = self_overlap(snaps, spacing=10.0, a=0.3)
    assert lags.tolist() == [0, 10, 20, 30, 40] and q[0] == 1.0 and q[-1] == 0.0
    assert decorrelation_time([0, 10, 20], [1.0, 0.5, 0.2]) == pytest.approx(10 + 10 * (0.5 - math.exp(-1)) / 0.3)
    assert decorrelation_time([0, 10], [1.0, 0.9]) is None



def test_cage_overlap_ignores_collective_motion_but_sees_rearrangements():
    """2D physics of the criterion: a uniform drift plus a long-wavelength displacement wave (what elastic
    fluctuations do in 2D) decorrelates the absolute overlap completely but leaves every cage intact; a local
    rearrangement of 10 % of the particles lowers both overlaps by about 10 %."""
    rng = np.random.default_rng(3)
    box, side = 24.0, 24
    grid = (np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2) + 0.5)
    x0 = grid * (box / side) + rng.normal(0, 0.05, grid.shape)
    k = 2 * np.pi / box
    wave = np.column_stack([0.5 + 0.15 * np.sin(k * x0[:, 1]), 0.4 + 0.15 * np.cos(k * x0[:, 0])])
    assert np.min(np.hypot(*wave.T)) > 0.3  # every particle moves further than a = 0.3
    local = np.zeros_like(x0)
    moved = rng.choice(len(x0), size=len(x0) // 10, replace=False)
    angle = rng.uniform(0, 2 * np.pi, moved.size)
    local[moved] = 0.6 * np.column_stack([np.cos(angle), np.sin(angle)])
    for extra, q_abs, q_cage in ((wave, 0.0, 1.0), (local, 0.9, 0.9)):
        snaps = np.stack([x0, x0 + extra])
        _, qa = self_overlap(snaps, spacing=1.0, a=0.3)
        _, qc = self_overlap(snaps, spacing=1.0, a=0.3, box=box, cage_radius=1.4)
        assert qa[1] == pytest.approx(q_abs, abs=0.02)
        assert qc[1] == pytest.approx(q_cage, abs=0.02)
    with pytest.raises(ValueError, match="box"):
        self_overlap(np.stack([x0, x0]), spacing=1.0, a=0.3, cage_radius=1.4)
    with pytest.raises(ValueError, match="overlap_frame"):
        load_swap_settings(overlap_frame="lab")


# ------------------------------------------------------------------ bad input
def test_bad_input_errors():
    with pytest.raises(ValueError, match="temperature"):
        SwapMonteCarlo(0.0)
    with pytest.raises(ValueError, match="temperature"):
        SwapMonteCarlo(float("nan"))
    with pytest.raises(ValueError, match="temperature"):
        equilibrium_structure(-0.1, n_particles=43)
    with pytest.raises(ValueError, match="swap pair"):
        SwapMonteCarlo(1.0, swap_pairs=[(0, 3)])
    with pytest.raises(ValueError, match="swap pair"):
        SwapMonteCarlo(1.0, swap_pairs=[(1, 1)])
    with pytest.raises(ValueError, match="composition"):
        equilibrium_structure(1.0, n_particles=100)
    with pytest.raises(KeyError, match="unknown swap setting"):
        load_swap_settings(swap_probability=0.2)
    mc = SwapMonteCarlo(1.0)
    with pytest.raises(RuntimeError, match="reset"):
        mc.run(1)
    pos = spread_positions(8, TINY_BOX, 0)
    bad = pos.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ConfigurationError, match="not finite"):
        mc.reset(bad, np.arange(8) % 3, TINY_BOX)
    close = pos.copy()
    close[1] = close[0] + [0.1, 0.0]
    with pytest.raises(ConfigurationError, match="overlapping"):
        mc.reset(close, np.arange(8) % 3, TINY_BOX)
    with pytest.raises(ConfigurationError, match="twice the interaction range"):
        mc.reset(pos[:4] * 0.5, np.arange(4) % 3, 4.0)
    with pytest.raises(ValueError, match="needs particles of both types"):
        mc.reset(pos, np.zeros(8, dtype=int), TINY_BOX)


# ------------------------------------------------------------------ checkpoints
CKPT = dict(n_particles=43, seed=7, **{**QUICK, "snapshot_every": 10, "max_snapshots": 8}, checkpoint_every_s=0)


@pytest.mark.filterwarnings("ignore:.*criterion NOT met:RuntimeWarning")
@pytest.mark.parametrize("kill_after", [2, 9])  # during the preparation / during the production run
def test_checkpoint_resume_equals_uninterrupted_run(tmp_path, monkeypatch, kill_after):
    import tglassmlp.physics.swap_mc as swap_mc

    ref_pos, ref_types, _, ref = equilibrium_structure(0.5, max_sweeps=400, **CKPT)
    path = tmp_path / "chain.npz"
    with killed_after_checkpoint(monkeypatch, swap_mc, kill_after), pytest.raises(Killed):
        equilibrium_structure(0.5, max_sweeps=400, checkpoint=path, **CKPT)
    assert path.is_file() and not list(tmp_path.glob("*.tmp*"))  # the rename left no partial file
    pos, types, _, rep = equilibrium_structure(0.5, max_sweeps=400, checkpoint=path, **CKPT)
    # the resumed chain is the uninterrupted chain, move for move
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_array_equal(types, ref_types)
    np.testing.assert_array_equal(rep.energy_trace, ref.energy_trace)
    np.testing.assert_array_equal(rep.overlap, ref.overlap)
    assert rep.sweeps_total == ref.sweeps_total and rep.acceptance_swap == ref.acceptance_swap
    # a finished checkpoint returns the same structure without running
    again = equilibrium_structure(0.5, max_sweeps=400, checkpoint=path, **CKPT)
    np.testing.assert_array_equal(again[0], ref_pos)


@pytest.mark.filterwarnings("ignore:.*criterion NOT met:RuntimeWarning")
def test_checkpoint_extends_unmet_run_and_refuses_other_runs(tmp_path):
    path = tmp_path / "chain.npz"
    *_, short = equilibrium_structure(0.5, max_sweeps=200, checkpoint=path, **CKPT)
    assert not short.criterion_met and short.sweeps_production == 200
    # a larger cap continues the stored chain: same as running with that cap from the start
    pos, _, _, ext = equilibrium_structure(0.5, max_sweeps=400, checkpoint=path, **CKPT)
    ref_pos, _, _, ref = equilibrium_structure(0.5, max_sweeps=400, **CKPT)
    assert ext.sweeps_production == 400
    np.testing.assert_array_equal(pos, ref_pos)
    np.testing.assert_array_equal(ext.energy_trace, ref.energy_trace)
    with pytest.raises(ValueError, match="another run.*temperature"):
        equilibrium_structure(0.6, max_sweeps=400, checkpoint=path, **CKPT)
    with pytest.raises(ValueError, match="settings.swap_fraction"):
        equilibrium_structure(0.5, max_sweeps=400, checkpoint=path, **{**CKPT, "swap_fraction": 0.3})
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable"):
        equilibrium_structure(0.5, max_sweeps=400, checkpoint=path, **CKPT)



@pytest.mark.filterwarnings("ignore:.*criterion NOT met:RuntimeWarning")
def test_finished_checkpoint_is_rejudged_by_a_new_criterion(tmp_path):
    """Criterion settings never change the moves: a stored chain is resumed, not refused, and judged anew."""
    path = tmp_path / "chain.npz"
    pos, _, _, cage = equilibrium_structure(0.5, max_sweeps=400, checkpoint=path, **CKPT)
    pos2, _, _, absolute = equilibrium_structure(0.5, max_sweeps=400, checkpoint=path,
                                                 **{**CKPT, "overlap_frame": "absolute"})
    np.testing.assert_array_equal(pos2, pos)  # the same chain, not rerun
    np.testing.assert_array_equal(absolute.energy_trace, cage.energy_trace)
    _, _, _, fresh = equilibrium_structure(0.5, max_sweeps=400, **{**CKPT, "overlap_frame": "absolute"})
    np.testing.assert_array_equal(absolute.overlap, fresh.overlap)  # judged as a fresh absolute-frame run
    assert absolute.reasons == fresh.reasons
    assert not np.array_equal(absolute.overlap, cage.overlap)

def test_swap_counters_per_pair_add_up():
    n = 86
    box = SYSTEM.box_for(n)
    pos, types = _random_start(n, box, SYSTEM.composition_for(n), np.random.default_rng(3))
    mc = SwapMonteCarlo(1.0, seed=4, swap_fraction=0.5, swap_pairs=[(0, 2), (1, 2)]).reset(pos, types, box)
    mc.run(100)
    c = mc.counters
    assert c.size == 8 and c[2] == c[4] + c[6] and c[3] == c[5] + c[7]
    # pairs are picked uniformly: attempts split ~50/50 (binomial, 4 sigma)
    assert abs(c[4] - c[2] / 2) < 4 * math.sqrt(c[2] / 4)
    acc = mc.acceptance_swap_by_pair
    assert set(acc) == {"0-2", "1-2"} and acc["0-2"] == c[5] / c[4]


def test_equilibration_criterion_is_met_on_a_hot_small_system():
    """At T = 2 and N = 86 (tau_Q ~ 1e2-1e3 sweeps) the criterion holds within a few thousand sweeps, and the
    reported mean energy is the equilibrium one: it agrees, within the combined statistical error, with the
    mean of an independent chain (another seed, d fixed at the adapted value) measured here by block averages."""
    T, N = 2.0, 86
    pos, types, box, report = equilibrium_structure(
        T, n_particles=N, seed=11, max_sweeps=12800, melt_sweeps=20, anneal_steps=2, anneal_sweeps=20,
        adapt_sweeps_at_target=40, first_block_sweeps=400, snapshot_every=10, progress=False)
    assert report.criterion_met, report.reasons
    assert not report.reasons
    assert report.tau_overlap is not None and report.window_sweeps >= report.settings["n_decorrelation"] * max(
        report.tau_overlap, report.tau_energy)
    # the returned structure is the chain's last state: its energy recomputed from scratch
    assert potential_energy(pos, types, box) / N == pytest.approx(report.energy_final, abs=1e-9)
    # the reported window mean, with the trace it came from
    window = report.energy_trace[-report.window_sweeps // int(report.settings["record_every"]):]
    se_report = window.std(ddof=1) * math.sqrt(max(1.0, 2.0 * report.tau_energy) / window.size)

    mc = SwapMonteCarlo(T, seed=12345, max_displacement=report.max_displacement)
    mc.reset(pos, types, box)
    mc.run(500)  # re-decorrelate from the start configuration
    mc.run(32000)
    e = mc.energy_trace[-32000:]
    blocks = e.reshape(32, -1).mean(axis=1)  # 1000-sweep blocks >> tau_E (~10 sweeps) at T = 2
    mean_indep, se_indep = blocks.mean(), blocks.std(ddof=1) / math.sqrt(blocks.size)
    z = abs(report.energy_mean - mean_indep) / math.hypot(se_report, se_indep)
    assert z < Z_MAX, (report.energy_mean, mean_indep, se_report, se_indep)
    # not trivially close: a hot liquid's energy, well above the T = 0.4 value (~ -2.6) and below 0
    assert -2.4 < mean_indep < 0.0

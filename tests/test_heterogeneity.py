"""Dynamic heterogeneity observables against known answers: chi_4 (Eq. 9), S_4 (Eq. 10), xi_4 (Eq. 11),
A (Eq. C1), chord lengths (Sec. V B), P_int(L) and xi_int (Sec. VI A)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tglassmlp.observables.attention import AttentionLengthScale, coarse_graining_lengths
from tglassmlp.observables.chords import ChordLength, active_by_median, periodic_run_lengths
from tglassmlp.observables.descriptors import descriptor_names
from tglassmlp.observables.four_point import (
    FourPointStructureFactor,
    FourPointSusceptibility,
    OrnsteinZernikeFit,
    four_point_susceptibility,
    ornstein_zernike,
)


# ------------------------------------------------------------------------------------------------ chi_4
def test_chi4_by_hand():
    # sample means 0 and 1: population variance 1/4, N = 2 -> 0.5
    assert four_point_susceptibility(np.array([[0.0, 0.0], [1.0, 1.0]])) == pytest.approx([0.5])
    # per-sample (K, N) input: two times, one of them constant across samples -> chi_4 = 0 there
    vals = [np.array([[0.2, 0.4], [0.5, 0.5]]), np.array([[0.6, 0.8], [0.5, 0.5]])]
    assert four_point_susceptibility(vals) == pytest.approx([2 * 0.2**2, 0.0])


def test_chi4_of_independent_particles_is_the_single_particle_variance():
    rng = np.random.default_rng(1)
    p = 0.3  # Bernoulli propensities: var = p (1 - p) = 0.21
    values = (rng.random((20000, 50)) < p).astype(float)
    chi = FourPointSusceptibility(n_bootstrap=0).compute(values)
    # N var(mean over N) = var(c_i) for independent particles; relative error of a variance from S samples ~ sqrt(2/S)
    assert chi.chi4[0] == pytest.approx(p * (1 - p), rel=5 * math.sqrt(2 / 20000))
    # fully correlated particles (all equal within a sample): chi_4 = N var
    corr = np.repeat(values[:, :1], 50, axis=1)
    assert four_point_susceptibility(corr)[0] == pytest.approx(50 * corr[:, 0].var())


def test_chi4_bootstrap_error_has_the_sampling_size():
    rng = np.random.default_rng(2)
    values = rng.normal(0.5, 0.1, size=(400, 100))
    res = FourPointSusceptibility(n_bootstrap=200, seed=0).compute(values)
    # chi_4 = var(c) = 0.01 with relative sampling error sqrt(2/S) = 0.0707
    assert res.chi4[0] == pytest.approx(0.01, rel=0.3)
    assert res.chi4_err[0] / res.chi4[0] == pytest.approx(math.sqrt(2 / 400), rel=0.35)


def test_chi4_bad_input_names_the_sample():
    with pytest.raises(ValueError, match=r"values\[1\]"):
        four_point_susceptibility([np.ones(5), np.array([1.0, np.nan, 1, 1, 1])])


# ------------------------------------------------------------------------------------------------ S_4
def test_s4_matches_a_brute_force_sum():
    rng = np.random.default_rng(3)
    box = 7.3
    pos = [rng.uniform(0, box, (40, 2)) for _ in range(3)]
    vals = [rng.random((2, 40)) for _ in range(3)]
    sf = FourPointStructureFactor(q_max=3.0).compute(pos, vals, box)
    mean = np.mean([v.mean(axis=1) for v in vals], axis=0)
    dq = 2 * math.pi / box
    n = int(3.0 / dq)
    vecs = [(a, b) for a in range(-n, n + 1) for b in range(-n, n + 1) if 0 < math.hypot(a, b) * dq <= 3.0]
    shell = {v: int(math.floor(math.hypot(*v) + 0.5)) for v in vecs}
    for j, k in enumerate(sorted(set(shell.values()))):
        members = [v for v in vecs if shell[v] == k]  # the full plane: the code sums only half of it
        ref = np.zeros(2)
        for p, v in zip(pos, vals):
            for a, b in members:
                w = ((v - mean[:, None]) * np.exp(1j * dq * (a * p[:, 0] + b * p[:, 1]))).sum(axis=1)
                ref += np.abs(w) ** 2 / 40
        ref /= len(members) * 3
        np.testing.assert_allclose(sf.s4[:, j], ref, rtol=1e-10)
        assert sf.n_vectors[j] * 2 == len(members)


def test_s4_of_an_uncorrelated_field_is_flat():
    rng = np.random.default_rng(4)
    box, n, s = 40.0, 1500, 16
    pos = rng.uniform(0, box, (s, n, 2))
    vals = rng.random((s, n))  # uniform: var = 1/12
    sf = FourPointStructureFactor(q_max=2.0).compute(pos, vals, box)
    s4, err = sf.s4[0], sf.s4_err[0]
    # every shell agrees with var(c) = 1/12 within its statistical error (no 5-sigma outlier)
    assert np.all(np.abs(s4 - 1 / 12) < 5 * err)
    # and the weighted mean over shells within 2% ...
    assert np.average(s4, weights=1 / err**2) == pytest.approx(1 / 12, rel=0.02)
    # ... with no trend in q: the fitted slope is compatible with zero (3 standard errors)
    (slope, _), cov = np.polyfit(sf.q, s4, 1, w=1 / err, cov="unscaled")
    assert abs(slope) < 3 * math.sqrt(cov[0, 0])


def _oz_field(n_side: int, xi: float, chi: float, rng) -> np.ndarray:
    """Gaussian field on an n x n unit lattice whose spectrum is chi / (1 + (q xi)^2): white noise filtered in
    Fourier space (|FFT(white)|^2 has mean N, so sum_i phi_i e^{iqR_i} has mean square N S(q))."""
    q = 2 * math.pi * np.fft.fftfreq(n_side)
    q2 = q[:, None] ** 2 + q[None, :] ** 2
    spectrum = chi / (1 + q2 * xi**2)
    white = rng.standard_normal((n_side, n_side))
    return np.fft.ifft2(np.fft.fft2(white) * np.sqrt(spectrum)).real


def test_xi4_of_an_ornstein_zernike_gaussian_field():
    rng = np.random.default_rng(5)
    n_side, xi, chi = 128, 4.0, 3.0
    grid = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij"), -1).reshape(-1, 2).astype(float)
    fields = [0.5 + 0.05 * _oz_field(n_side, xi, chi, rng).ravel() for _ in range(4)]
    sf = FourPointStructureFactor(q_max=0.6).compute([grid] * 4, fields, float(n_side), mean=0.5)
    fit = OrnsteinZernikeFit(q_max=0.5).compute(sf.q, sf.s4[0])
    assert fit.xi4 == pytest.approx(xi, rel=0.10)
    assert fit.chi4_tilde == pytest.approx(chi * 0.05**2, rel=0.15)


def test_prefactor_a_of_the_higher_order_form():
    q = np.linspace(0.03, 0.8, 60)
    s4 = ornstein_zernike(q, 2.0, 5.0, 0.0)
    # below q_max = 0.15 the curve is pure Eq. (11); the C1 window sees the A term only where we add it
    s4 = np.where(q > 0.2, ornstein_zernike(q, 2.0, 5.0, 0.35), s4)
    fit = OrnsteinZernikeFit(q_max=0.15, a_range=(0.2, 0.6), qxi_max=None).compute(q, s4)
    assert fit.xi4 == pytest.approx(5.0, rel=1e-6)
    assert fit.chi4_tilde == pytest.approx(2.0, rel=1e-6)
    assert fit.prefactor_a == pytest.approx(0.35, rel=1e-5)
    # too few shells in the window: NaN rather than a fit through two points
    few = OrnsteinZernikeFit(q_max=0.05).compute(q, s4)
    assert math.isnan(few.xi4) and math.isnan(few.prefactor_a)


def _fft_shells(fields: np.ndarray, n_side: int, q_max: float):
    """(q, S_4) shell averages of (S, n_side^2) fields on the unit grid from FFTs, with FourPointStructureFactor's
    shells (half plane, (k - 1/2) dq <= |q| < (k + 1/2) dq, 0 < |q| <= q_max) and mean 0."""
    power = np.abs(np.fft.fft2(fields.reshape(-1, n_side, n_side))) ** 2 / n_side**2
    n = np.rint(np.fft.fftfreq(n_side, 1.0 / n_side)).astype(int)
    nx, ny = np.meshgrid(n, n, indexing="ij")
    dq = 2 * math.pi / n_side
    qn = np.hypot(nx, ny) * dq
    keep = ((nx > 0) | ((nx == 0) & (ny > 0))) & (qn <= q_max * (1 + 1e-12))
    shell = np.floor(qn / dq + 0.5).astype(int)
    mean_power = power.mean(axis=0)
    shells = [k for k in np.unique(shell[keep]) if k >= 1]
    return (np.array([qn[keep & (shell == k)].mean() for k in shells]),
            np.array([mean_power[keep & (shell == k)].mean() for k in shells]))


def _shell_q(box: float, q_max: float) -> np.ndarray:
    """Mean |q| of FourPointStructureFactor's shells in a box (from a zero field: only the q's are used)."""
    grid = np.zeros((4, 2))
    return FourPointStructureFactor(q_max=q_max).compute([grid], [np.arange(4.0)], box, mean=0.0).q


def test_self_consistent_window_on_exact_curves():
    """Noise-free S_4 on the shells of the paper's box (263.17 sigma, 2 pi / L = 0.024)."""
    q = _shell_q(263.17, 0.6)
    xi = 6.5
    # Eq. (11) exactly: any window gives xi; the chosen one is the largest with q xi <= 1.5
    fit = OrnsteinZernikeFit(q_max=0.6).compute(q, ornstein_zernike(q, 2.0, xi))
    assert fit.xi4 == pytest.approx(xi, rel=1e-6) and fit.chi4_tilde == pytest.approx(2.0, rel=1e-6)
    assert fit.window_q_max == q[q * xi <= 1.5].max() and fit.window_converged and not fit.window_limited
    # Eq. (C1) with A = 0.5: the fixed q <= 0.6 window reads xi_4 ~ 1.7 xi (q xi reaches 3.9); the
    # self-consistent window is a fixed point (its shells obey q xi_4 <= 1.5, the next one would not) and its
    # bias is less than half the fixed window's
    s4 = ornstein_zernike(q, 2.0, xi, 0.5)
    fixed = OrnsteinZernikeFit(q_max=0.6, qxi_max=None).compute(q, s4)
    sc = OrnsteinZernikeFit(q_max=0.6).compute(q, s4)
    assert fixed.xi4 / xi > 1.5
    assert abs(sc.xi4 / xi - 1) < 0.5 * abs(fixed.xi4 / xi - 1)
    assert sc.window_q_max * sc.xi4 <= 1.5 < q[q > sc.window_q_max].min() * sc.xi4
    assert sc.n_points[0] == int(np.sum(q <= sc.window_q_max))
    # q_max stays an upper bound of the window
    capped = OrnsteinZernikeFit(q_max=0.1).compute(q, ornstein_zernike(q, 2.0, 1.0))
    assert capped.window_q_max <= 0.1 and capped.xi4 == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="qxi_max"):
        OrnsteinZernikeFit(qxi_max=0.0)


@pytest.mark.parametrize("box, xi, n_fields", [(263, 6.5, 40), (33, 3.0, 200)])
def test_xi4_of_ornstein_zernike_fields_in_the_paper_box_and_a_small_box(box, xi, n_fields):
    """Gaussian fields with the Eq. (11) spectrum on the unit grid of a box of 263 sigma (the paper's N = 82560;
    xi = 6.5, the paper's largest xi_4) and of 33 sigma (N = 1290; xi = 3), through FourPointStructureFactor and
    the default (self-consistent) window: xi_4 within 10 %. benchmarks/results/oz_window.md: spread over
    datasets 5 % (263, 20 fields) and 8 % (33, 100 fields); the fields here are twice as many."""
    rng = np.random.default_rng(17)
    grid = np.stack(np.meshgrid(np.arange(box), np.arange(box), indexing="ij"), -1).reshape(-1, 2).astype(float)
    fields = np.stack([_oz_field(box, xi, 1.0, rng).ravel() for _ in range(n_fields)])
    q_top = 0.3 if box > 100 else 0.6
    # on the unit grid W(q) is the FFT: S_4 of all fields from FFTs, after checking on two fields that it is
    # exactly FourPointStructureFactor's (the fields share the grid: the K axis of one sample carries them)
    q, s4 = _fft_shells(fields, box, q_top)
    sf = FourPointStructureFactor(q_max=q_top).compute([grid], [fields[:2]], float(box), mean=0.0)
    np.testing.assert_allclose(sf.q, q, rtol=1e-12)
    np.testing.assert_allclose(sf.s4.mean(axis=0), _fft_shells(fields[:2], box, q_top)[1], rtol=1e-9)
    fit = OrnsteinZernikeFit(q_max=q_top).compute(q, s4)
    assert fit.xi4 == pytest.approx(xi, rel=0.10)
    assert fit.chi4_tilde == pytest.approx(1.0, rel=0.25)
    if box > 100:
        assert not fit.window_limited and fit.window_q_max * fit.xi4 <= 1.5 and fit.n_points[0] >= 5
    else:  # three shells reach q xi ~ 1.7: the box is too small for the rule, which is reported
        assert fit.n_points[0] == 3


# ------------------------------------------------------------------------------------------------ chords
def test_periodic_run_lengths_by_hand():
    mask = np.array([[1, 1, 0, 1, 0, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=bool)
    lengths, rows = periodic_run_lengths(mask)
    # row 0: the runs at both ends join across the boundary (length 3) plus one of length 1
    assert sorted(lengths[rows == 0].tolist()) == [1, 3]
    assert lengths[rows == 1].tolist() == [6]
    assert (rows == 2).sum() == 0


def _stripes(box: float, spacing: float, stripes):
    """Particles on a square lattice; propensity 0 inside the x-intervals ``stripes`` (mod box), 1 elsewhere."""
    x = (np.arange(int(round(box / spacing))) + 0.5) * spacing
    pos = np.stack(np.meshgrid(x, x, indexing="ij"), -1).reshape(-1, 2)
    inside = np.zeros(len(pos), bool)
    for lo, hi in stripes:
        inside |= ((pos[:, 0] - lo) % box) < (hi - lo)
    return pos, np.where(inside, 0.0, 1.0)


def test_chords_of_a_stripe_pattern():
    box = 32.0
    pos, c = _stripes(box, 0.5, [(0.0, 4.0), (16.0, 20.0)])  # two stripes of width 4, a quarter of the area
    assert active_by_median(c).sum() == len(c) * 3 / 4  # the median is 1: exactly the stripe particles are active
    ch = ChordLength(cell_size=1.0).compute(pos, c, box)
    # along x every row crosses both stripes: chords of the stripe width
    np.testing.assert_allclose(ch.chords_x, 4.0)
    assert len(ch.chords_x) == 2 * 32
    # along y the 8 lattice columns inside the stripes are mobile throughout: chords of the box length
    np.testing.assert_allclose(ch.chords_y, box)
    assert len(ch.chords_y) == 8
    assert ch.mean_chord == pytest.approx((64 * 4 + 8 * 32) / 72)


def test_chords_join_across_the_box_edge_and_fill_empty_cells():
    box = 30.0
    pos, c = _stripes(box, 1.0, [(27.0, 33.0)])  # one stripe of width 6 that crosses x = 0
    keep = np.ones(len(pos), bool)
    keep[::7] = False  # remove some particles: cells of 1.0 become empty and are filled from their neighbours
    ch = ChordLength(cell_size=1.0).compute(pos[keep], c[keep], box)
    np.testing.assert_allclose(ch.chords_x, 6.0)
    assert len(ch.chords_x) == 30


def test_chords_reject_bad_input():
    with pytest.raises(ValueError, match="positions must be"):
        ChordLength().compute(np.zeros((5, 3)), np.zeros(5), 10.0)
    with pytest.raises(ValueError, match="threshold"):
        ChordLength(threshold="mean")


# ------------------------------------------------------------------------------------------------ P_int
def test_p_int_of_uniform_attention_is_uniform():
    names = descriptor_names()
    # drop the L = 0 columns that the scaler drops (zero variance): L = 0 keeps fewer columns than other L
    kept = [n for n in names if not (n.endswith("_L0") and (n.startswith("energy_var") or n == "density_all_L0"))]
    assert len(kept) == len(names) - 5
    grid = np.unique(coarse_graining_lengths(names))
    w = np.full((50, len(kept)), 1.0 / len(kept))
    res = AttentionLengthScale(kept).compute(w)
    np.testing.assert_allclose(res.lengths, grid)
    np.testing.assert_allclose(res.p_int, 1.0 / len(grid), rtol=1e-12)
    assert res.xi_int == pytest.approx(grid.mean())
    assert res.xi_int == pytest.approx(41 / 11)  # (0+1+1.5+2+2.5+3+4+5+6+7+9)/11


def test_p_int_of_weights_on_two_lengths():
    names = descriptor_names()
    ls = coarse_graining_lengths(names)
    w = np.where(ls == 9.0, 3.0, 0.0) + np.where(ls == 1.0, 1.0, 0.0)
    res = AttentionLengthScale(names).compute(w / w.sum())
    p = dict(zip(res.lengths, res.p_int))
    assert p[9.0] == pytest.approx(0.75) and p[1.0] == pytest.approx(0.25)
    assert res.xi_int == pytest.approx(0.75 * 9 + 0.25 * 1)


def test_p_int_rejects_mismatched_weights():
    with pytest.raises(ValueError, match="M_S = 176"):
        AttentionLengthScale(descriptor_names()).compute(np.ones(10))
    with pytest.raises(ValueError, match="suffix"):
        coarse_graining_lengths(["energy_all"])

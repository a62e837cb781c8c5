"""rho_max, the label-noise ceiling of the Pearson correlation, on synthetic labels with known noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tglassmlp.observables import LabelCeiling, label_ceiling, spearman_brown

N_PARTICLES = 20000
# statistical error of a Pearson over 2e4 particles is ~(1 - r^2) / sqrt(N) < 0.007: 3 sigma
TOL = 0.02


def ceiling_tolerance(rho_max, n_runs, n):
    """3 sigma of the estimate, propagated from the split-half Pearson's error (1 - r_h^2) / sqrt(n) through
    R = Spearman-Brown(r_h) and sqrt (the sqrt amplifies errors where the ceiling is low)."""
    r_h = spearman_brown(rho_max**2, n_runs, n_runs // 2)
    d_r = (1 - r_h**2) / math.sqrt(n)
    d_big_r = (spearman_brown(r_h + d_r, n_runs // 2, n_runs) - spearman_brown(r_h - d_r, n_runs // 2, n_runs)) / 2
    return 3 * d_big_r / (2 * rho_max)


def synthetic_runs(n_runs, signal_std, noise_std, n=N_PARTICLES, seed=0):
    """True propensities x_i (a 'structure') and n_runs noisy runs x_i + e_ri; returns (x, runs)."""
    rng = np.random.default_rng(seed)
    x = 0.6 + signal_std * rng.standard_normal(n)
    return x, x[None, :] + noise_std * rng.standard_normal((n_runs, n))


def analytic_ceiling(n_runs, signal_std, noise_std):
    """sqrt(var x / var y) with var y = var x + noise^2 / N_R."""
    return math.sqrt(signal_std**2 / (signal_std**2 + noise_std**2 / n_runs))


@pytest.mark.parametrize("n_runs, noise_std, n", [(2, 0.1, N_PARTICLES), (4, 0.2, N_PARTICLES),
                                                  (5, 0.2, N_PARTICLES), (20, 0.4, N_PARTICLES), (4, 1.0, 200000)])
def test_ceiling_matches_analytic_value_and_the_true_correlation(n_runs, noise_std, n):
    x, runs = synthetic_runs(n_runs, 0.1, noise_std, n=n, seed=n_runs)
    want = analytic_ceiling(n_runs, 0.1, noise_std)
    tol = ceiling_tolerance(want, n_runs, n)
    assert tol < 0.04  # the test can tell a wrong formula (sqrt(r_h) without Spearman-Brown: 0.06 to 0.17 lower here) apart
    ceiling = LabelCeiling().compute(runs)
    assert ceiling.rho_max.shape == (1, 1) and ceiling.n_runs.tolist() == [n_runs]
    assert ceiling.rho_max[0, 0] == pytest.approx(want, abs=tol)
    # the ceiling is reached by the best possible predictor, the noise-free propensity itself
    assert np.corrcoef(x, runs.mean(axis=0))[0, 1] == pytest.approx(ceiling.rho_max[0, 0], abs=tol)


def test_ceiling_with_bounded_heteroscedastic_noise():
    """C_B-like labels: each run is a fraction of 6 bonds kept, binomial around the particle's propensity
    (the noise variance depends on the particle). var y = var x + E[x (1 - x)] / (6 N_R)."""
    rng = np.random.default_rng(7)
    x = rng.beta(4, 3, N_PARTICLES)
    n_runs = 8
    runs = rng.binomial(6, x, (n_runs, N_PARTICLES)) / 6.0
    want = math.sqrt(x.var() / (x.var() + np.mean(x * (1 - x)) / (6 * n_runs)))
    assert label_ceiling(runs)[0] == pytest.approx(want, abs=TOL)


def test_spearman_brown_formula():
    # two halves of 2 runs with r_h = 0.5 -> single-run 1/3 -> 4 runs: 4/3 / (1 + 1) = 2/3 = 2 r_h / (1 + r_h)
    assert spearman_brown(0.5, 2, 4) == pytest.approx(2 / 3)
    assert spearman_brown(0.5, 1, 1) == pytest.approx(0.5)
    np.testing.assert_allclose(spearman_brown(np.array([0.0, 1.0]), 3, 20), [0.0, 1.0])
    # going up and back down is the identity
    assert spearman_brown(spearman_brown(0.3, 2, 9), 9, 2) == pytest.approx(0.3)
    with pytest.raises(ValueError, match=">= 1"):
        spearman_brown(0.5, 0, 4)


def test_several_structures_and_levels():
    _, a = synthetic_runs(4, 0.1, 0.1, n=5000, seed=1)
    _, b = synthetic_runs(6, 0.1, 0.4, n=4000, seed=2)
    stacked_a = np.stack([a, a[:, ::-1]], axis=1)  # (N_R, K = 2, N): the same labels twice
    stacked_b = np.stack([b, b], axis=1)
    ceiling = LabelCeiling().compute([stacked_a, stacked_b])
    assert ceiling.rho_max.shape == (2, 2)
    np.testing.assert_allclose(ceiling.rho_max[:, 0], ceiling.rho_max[:, 1])
    want = [analytic_ceiling(4, 0.1, 0.1), analytic_ceiling(6, 0.1, 0.4)]
    np.testing.assert_allclose(ceiling.rho_max[:, 0], want, atol=0.03)
    np.testing.assert_allclose(ceiling.mean_rho_max, ceiling.rho_max.mean(axis=0))


def test_pure_noise_gives_zero_and_identical_runs_give_one():
    rng = np.random.default_rng(3)
    assert label_ceiling(rng.standard_normal((4, 3000)))[0] < 0.1
    same = np.tile(rng.standard_normal(300), (3, 1))
    assert label_ceiling(same)[0] == pytest.approx(1.0)


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="N_R = 1 run.*at least 2"):
        LabelCeiling().compute(rng.random((1, 100)))
    with pytest.raises(ValueError, match="structure 1 has N_R = 1"):
        LabelCeiling().compute([rng.random((3, 100)), rng.random((1, 100))])
    with pytest.raises(ValueError, match="NaN"):
        LabelCeiling().compute(np.where(np.arange(100) == 5, np.nan, rng.random((3, 100))))
    with pytest.raises(ValueError, match="times/levels"):
        LabelCeiling().compute([rng.random((3, 2, 50)), rng.random((3, 4, 50))])
    with pytest.raises(ValueError, match="n_splits"):
        LabelCeiling(n_splits=0)

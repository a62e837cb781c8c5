"""The equilibration criterion's stationarity test (swap_mc.stationarity_z) against synthetic energy traces of
known statistics: a fast mode (what Sokal's window sees) plus a weak slow mode relaxing with the structure (as
in swap MC), stationary or with a linear drift (ageing). Reference: the earlier test, the halves' means apart in
errors from the raw series' tau_E alone, written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from tglassmlp.physics.swap_mc import integrated_autocorrelation_time, stationarity_z

# as measured on T = 0.3 swap-MC chains (N = 1290): Sokal's tau_E ~ 1e2 sweeps, but batch means of the energy
# give an integrated time of 2-5e2 sweeps for blocks of 5e3-2e4 and 4-10e2 for blocks of tau_Q = 4e4. Here in
# samples: a fast mode of tau 10, a weak slow one at 0.25-1 tau_Q, tau_Q = 2000
TAU_FAST = 10
TAU_Q = 2000
WINDOW = 10 * TAU_Q  # the shortest window the criterion accepts (n_decorrelation = 10)
REPLICAS = 200


def ar1(rng, n, tau, var, reps):
    """reps stationary AR(1) series of n steps, autocorrelation exp(-t / tau), variance var."""
    phi = math.exp(-1.0 / tau)
    noise = rng.normal(size=(reps, n)) * math.sqrt(var * (1.0 - phi * phi))
    noise[:, 0] = rng.normal(size=reps) * math.sqrt(var)  # start in the stationary distribution
    return lfilter([1.0], [1.0, -phi], noise, axis=1)


def z_tau_e_only(w):
    """The earlier test: errors var * 2 tau_E / n of the raw halves, tau_E of the raw window."""
    tau = integrated_autocorrelation_time(w)
    halves = np.array_split(w, 2)
    se2 = sum(float(h.var()) * 2.0 * tau / h.size for h in halves)
    return abs(halves[0].mean() - halves[1].mean()) / math.sqrt(se2)


def z_values(x, tau_q=TAU_Q):
    return np.array([stationarity_z(s, 1.0, tau_q)[0] for s in x])


def rms(z):
    return float(np.sqrt(np.mean(np.square(z))))


def test_halves_means_and_z_by_hand():
    # a step between the halves over white noise of +-0.5 (the fitted line takes part of the step, so z uses
    # the fluctuations about it: computed here by hand)
    x = np.r_[np.zeros(40), np.ones(40)] + np.tile([0.5, -0.5], 40)
    z, means = stationarity_z(x, 1.0, None)
    assert means == pytest.approx((0.0, 1.0))
    t = np.arange(80.0)
    r = x - np.polyval(np.polyfit(t, x, 1), t)
    tau = integrated_autocorrelation_time(r)
    se2 = sum(h.var() * 2 * tau / 40 for h in np.array_split(r, 2))
    assert z == pytest.approx(1.0 / math.sqrt(se2), rel=1e-12)
    # spacing: the same series recorded every 5 sweeps, tau_q in sweeps
    assert stationarity_z(x, 5.0, None)[0] == pytest.approx(z, rel=1e-12)
    # blocks of tau_q = 20 sweeps (4 samples): 10 per half; their spread enters only if it exceeds (a)
    z_b = stationarity_z(x, 5.0, 20.0)[0]
    parts = np.array_split(r, 2)
    dev = np.concatenate([h.reshape(10, 4).mean(1) - h.mean() for h in parts])
    se2_b = sum(max(h.var() * 2 * tau / 40, dev @ dev / 18 / 10) for h in parts)
    assert z_b == pytest.approx(1.0 / math.sqrt(se2_b), rel=1e-12)


def test_fast_noise_alone_gives_unit_normal_z():
    x = ar1(np.random.default_rng(0), WINDOW, TAU_FAST, 1.0, REPLICAS)
    for tau_q in (None, TAU_Q):
        z = z_values(x, tau_q)
        assert rms(z) == pytest.approx(1.0, abs=0.15)
        assert np.mean(z > 3.0) < 0.02


@pytest.mark.parametrize("tau_slow, var_slow", [(0.25 * TAU_Q, 0.06), (TAU_Q, 0.02)])
def test_slow_mode_is_seen_by_blocks_of_tau_q(tau_slow, var_slow):
    # the slow mode holds 2-6 % of the variance but most of the integrated autocorrelation time
    rng = np.random.default_rng(1)
    x = ar1(rng, WINDOW, TAU_FAST, 1.0, REPLICAS) + ar1(rng, WINDOW, tau_slow, var_slow, REPLICAS)
    z_old, z_new = np.array([z_tau_e_only(s) for s in x]), z_values(x)
    # measured (seed 1): rms z 1.67 / 1.87 from tau_E alone, ~1.2 / ~1.45 here (an exact error gives 1); false
    # "not stationary" at z > 3: 8.5 / 12.5 % -> <= 5 %. Blocks of one tau_Q still miss part of a mode as slow
    # as tau_Q: the test stays on the strict side
    assert rms(z_old) > 1.5
    assert rms(z_new) < 0.85 * rms(z_old)
    assert np.mean(z_new > 3.0) < 0.06 < np.mean(z_old > 3.0)


@pytest.mark.parametrize("size", [2.0, 3.0, 10.0])
def test_a_drift_is_detected(size):
    # E falls linearly by `size` (in units of the fast noise's standard deviation) over the window. With errors
    # from the raw series a drift inflates tau_E and with it the error: measured here, a drift of 3 passed in
    # all 20 series (z < 3), one of 2 in most; about a fitted line the drift stands out
    rng = np.random.default_rng(2)
    x = (np.linspace(size / 2, -size / 2, WINDOW) + ar1(rng, WINDOW, TAU_FAST, 1.0, 20)
         + ar1(rng, WINDOW, 0.25 * TAU_Q, 0.06, 20))
    assert np.all(z_values(x) > 3.0)
    if size == 3.0:
        assert np.all(np.array([z_tau_e_only(s) for s in x]) < 3.0)  # the failure this test guards against

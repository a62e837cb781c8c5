"""Labels at <C_B> levels and time-temperature superposition on curves with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tglassmlp.observables.labels import crossing_time, labels_at_levels, relaxation_time
from tglassmlp.observables.tts import TimeTemperatureSuperposition, master_curve

BETA = 0.6


def test_crossing_time_is_exact_for_a_curve_linear_in_log_t():
    times = np.geomspace(1, 1e4, 9)
    curve = 1.0 - 0.2 * np.log10(times)  # 0.5 at t = 10^2.5
    assert relaxation_time(times, curve) == pytest.approx(10**2.5, rel=1e-12)
    assert crossing_time(times, curve, 1.5) == times[0]
    assert np.isnan(crossing_time(times, curve, 0.1))


def test_labels_interpolate_each_particle_at_the_crossing_time():
    times = np.geomspace(1, 1e4, 9)
    slopes = np.array([0.1, 0.2, 0.3])
    propensity = 1.0 - slopes[None, :] * np.log10(times)[:, None]  # (T_n, N)
    curve = propensity.mean(axis=1)  # 1 - 0.2 log10 t
    t_star, labels = labels_at_levels(times, propensity, curve, [0.8, 0.5, 0.01])
    np.testing.assert_allclose(t_star[:2], [10.0, 10**2.5])
    np.testing.assert_allclose(labels[0], 1 - slopes * 1.0)
    np.testing.assert_allclose(labels[1], 1 - slopes * 2.5)
    assert np.isnan(t_star[2]) and np.all(np.isnan(labels[2]))
    with pytest.raises(ValueError, match="shape"):
        labels_at_levels(times, propensity[:-1], curve, [0.5])


def synthetic_curves(temps, a, e, beta, t_max):
    curves = {}
    for T in temps:
        tau = np.exp(a + e / T)
        times = np.geomspace(0.1, t_max, 40)
        c = master_curve(times / tau, beta)
        c = np.minimum(c, 0.99)  # the vibrational plateau: excluded from the fits by fit_below
        curves[T] = (times, c)
    return curves


def test_tts_recovers_tau_beta_arrhenius_and_glass_temperature():
    a, e = -4.0, 2.0  # tau(0.4) = 2.7, tau(0.25) = 55, tau(0.21) = 250
    temps = [0.4, 0.3, 0.25, 0.23, 0.21]
    curves = synthetic_curves(temps, a, e, BETA, t_max=200.0)  # 0.21 (tau 250) never reaches 0.5
    assert np.isnan(relaxation_time(*curves[0.21]))
    tts = TimeTemperatureSuperposition(arrhenius_t_max=0.25).compute(curves)
    assert tts.beta == pytest.approx(BETA, rel=1e-3)
    for T in temps:
        assert tts.tau_alpha[T] == pytest.approx(np.exp(a + e / T), rel=1e-2)  # 0.21 by overlap
    fit_a, fit_e = tts.arrhenius
    assert fit_e == pytest.approx(e, rel=1e-2)
    # T where tau = 1e12: e / (ln 1e12 - a)
    assert tts.glass_transition_temperature() == pytest.approx(e / (np.log(1e12) - a), rel=1e-2)
    # level <-> time round trip below the simulated range
    t = tts.time_at(0.3, 0.15)
    assert tts.level_at(t, 0.15) == pytest.approx(0.3, rel=1e-9)
    assert tts.time_at(0.5, 0.15) == pytest.approx(np.exp(a + e / 0.15), rel=5e-2)


def test_tts_errors():
    with pytest.raises(ValueError, match="no curve reaches"):
        TimeTemperatureSuperposition().compute({0.3: (np.geomspace(1, 10, 5), np.full(5, 0.9))})
    tts = TimeTemperatureSuperposition(arrhenius_t_max=0.1).compute(synthetic_curves([0.4, 0.3], -4, 2, 0.6, 1e3))
    with pytest.raises(ValueError, match="Arrhenius"):
        tts.relaxation_time(0.15)
    with pytest.raises(ValueError, match="levels"):
        tts.time_at(1.2, 0.3)


def test_tts_round_trip_through_json():
    """to_dict -> JSON -> from_dict gives the same superposition: fitted values, the Arrhenius extrapolation below
    the fitted temperatures and the level <-> time conversion; constructor settings travel and can be overridden."""
    a, e = -4.0, 2.0
    fitted = TimeTemperatureSuperposition(arrhenius_t_max=0.3, tau_glass=1e10).compute(
        synthetic_curves([0.4, 0.3, 0.25], a, e, BETA, t_max=1e3))
    state = json.loads(json.dumps(fitted.to_dict()))
    assert set(state) == {"beta", "tau_alpha", "arrhenius", "settings"}
    assert state["tau_alpha"].keys() == {"0.4", "0.3", "0.25"}  # JSON keys: T with %g
    back = TimeTemperatureSuperposition.from_dict(state)
    assert back.beta == fitted.beta and back.tau_alpha == fitted.tau_alpha and back.arrhenius == fitted.arrhenius
    assert (back.arrhenius_t_max, back.fit_below, back.tau_glass) == (0.3, 0.95, 1e10)
    for T in (0.4, 0.2, 0.15):  # a fitted temperature and two Arrhenius extrapolations
        assert back.relaxation_time(T) == fitted.relaxation_time(T)
        assert back.time_at(0.3, T) == fitted.time_at(0.3, T)
    # the Arrhenius law of the synthetic data: tau = exp(a + E / T)
    assert back.relaxation_time(0.15) == pytest.approx(np.exp(a + e / 0.15), rel=5e-2)
    # keyword settings override the stored ones: T_g moves to E / (ln 1e12 - a)
    assert TimeTemperatureSuperposition.from_dict(state, tau_glass=1e12).glass_transition_temperature() == \
        pytest.approx(e / (np.log(1e12) - a), rel=1e-2)
    no_arrhenius = TimeTemperatureSuperposition.from_dict({"beta": 0.8, "tau_alpha": {"0.45": 750.0}})
    assert no_arrhenius.arrhenius is None and no_arrhenius.time_at(0.5, 0.45) == pytest.approx(750.0, rel=1e-12)
    with pytest.raises(ValueError, match="Arrhenius"):
        no_arrhenius.relaxation_time(0.3)


def test_tts_from_dict_errors():
    with pytest.raises(KeyError, match=r"missing \['tau_alpha'\]"):
        TimeTemperatureSuperposition.from_dict({"beta": 0.8})
    with pytest.raises(ValueError, match="beta must be positive"):
        TimeTemperatureSuperposition.from_dict({"beta": -1.0, "tau_alpha": {"0.4": 3.0}})
    with pytest.raises(ValueError, match="arrhenius must be"):
        TimeTemperatureSuperposition.from_dict({"beta": 0.8, "tau_alpha": {"0.4": 3.0}, "arrhenius": [1.0]})
    with pytest.raises(RuntimeError, match="nothing fitted"):
        TimeTemperatureSuperposition().to_dict()

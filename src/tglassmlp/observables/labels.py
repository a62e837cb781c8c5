"""Labels at fixed <C_B> levels: the time where the average bond-breaking curve crosses a level, and each
particle's propensity interpolated at that time (linear in log t, glassmlp-facts.md section 4)."""

from __future__ import annotations

import numpy as np


def _check_times(times, curve):
    times = np.asarray(times, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    if times.ndim != 1 or curve.shape != times.shape:
        raise ValueError(f"times and curve must be 1D of equal length, got {times.shape} and {curve.shape}")
    if np.any(times <= 0) or np.any(np.diff(times) <= 0):
        raise ValueError("times must be positive and strictly increasing (log-time interpolation)")
    if not np.all(np.isfinite(curve)):
        raise ValueError("the <C_B> curve contains NaN or inf")
    return times, curve


def crossing_time(times, curve, level: float) -> float:
    """First time [tau] at which ``curve`` (decaying from ~1) falls to ``level``, linear in log t.

    Args:
        times: (T_n,) strictly increasing positive times [tau].
        curve: (T_n,) average bond-breaking correlation <C_B>(t).
        level: target value in (0, 1].

    Returns:
        The crossing time, ``times[0]`` if the curve starts at or below the level, NaN if the curve never
        reaches it within the simulated window.
    """
    times, curve = _check_times(times, curve)
    below = np.flatnonzero(curve <= level)
    if below.size == 0:
        return float("nan")
    k = below[0]
    if k == 0:
        return float(times[0])
    lt0, lt1 = np.log(times[k - 1]), np.log(times[k])
    c0, c1 = curve[k - 1], curve[k]
    frac = (c0 - level) / (c0 - c1)
    return float(np.exp(lt0 + frac * (lt1 - lt0)))


def relaxation_time(times, curve, level: float = 0.5) -> float:
    """tau_alpha^BB: the time where <C_B> = 0.5 (NaN if not reached)."""
    return crossing_time(times, curve, level)


def interpolate_log_time(times, values, t: float) -> np.ndarray:
    """Values (T_n, ...) interpolated linearly in log t at time t (within [times[0], times[-1]])."""
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if not times[0] <= t <= times[-1]:
        raise ValueError(f"time {t:g} outside the simulated window [{times[0]:g}, {times[-1]:g}]")
    k = int(np.clip(np.searchsorted(times, t), 1, len(times) - 1))
    lt0, lt1 = np.log(times[k - 1]), np.log(times[k])
    frac = (np.log(t) - lt0) / (lt1 - lt0)
    return values[k - 1] + frac * (values[k] - values[k - 1])


def labels_at_levels(times, propensity, curve, levels):
    """Per-particle propensity at the times where the average curve crosses each level.

    Args:
        times: (T_n,) times [tau].
        propensity: (T_n, N) propensity of one structure (mean of C_B^i over runs).
        curve: (T_n,) <C_B>(t) of the temperature (reference type, averaged over structures).
        levels: (K,) target <C_B> values.

    Returns:
        (crossing times (K,) [tau], labels (K, N)); levels not reached give NaN time and NaN labels.
    """
    times, curve = _check_times(times, curve)
    propensity = np.asarray(propensity, dtype=np.float64)
    if propensity.ndim != 2 or propensity.shape[0] != len(times):
        raise ValueError(f"propensity must have shape ({len(times)}, N), got {propensity.shape}")
    levels = np.atleast_1d(np.asarray(levels, dtype=np.float64))
    t_star = np.array([crossing_time(times, curve, c) for c in levels])
    out = np.full((len(levels), propensity.shape[1]), np.nan)
    for k, t in enumerate(t_star):
        if np.isfinite(t):
            out[k] = interpolate_log_time(times, propensity, t)
    return t_star, out

"""Log-spaced observation times on the MD time-step grid."""

from __future__ import annotations

import numpy as np


def log_spaced_times(t_min: float, t_max: float, n: int, dt: float, *, include_zero: bool = False) -> np.ndarray:
    """``n`` times between ``t_min`` and ``t_max`` [tau], evenly spaced in log t and rounded to multiples of dt.

    Rounding can merge neighbouring times at the short end; duplicates are dropped, so fewer than ``n``
    times may come back. With ``include_zero`` the time 0 (the initial configuration) is prepended.

    Returns:
        (n',) float64 strictly increasing times, each an exact integer multiple of ``dt``.
    """
    if not (np.isfinite(t_min) and np.isfinite(t_max) and np.isfinite(dt)):
        raise ValueError(f"log_spaced_times: t_min, t_max, dt must be finite, got {t_min}, {t_max}, {dt}")
    if dt <= 0 or t_min < dt or t_max < t_min:
        raise ValueError(f"log_spaced_times: need 0 < dt <= t_min <= t_max, got dt={dt}, t_min={t_min}, t_max={t_max}")
    if int(n) < 1:
        raise ValueError(f"log_spaced_times: n must be >= 1, got {n}")
    steps = np.unique(np.maximum(1, np.round(np.geomspace(t_min, t_max, int(n)) / dt).astype(np.int64)))
    if include_zero:
        steps = np.concatenate([[0], steps])
    return steps * dt

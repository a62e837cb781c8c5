"""Time-temperature superposition of <C_B>(t) (paper App. A): tau_alpha(T), a master curve, and the
conversion between <C_B> levels and times at any temperature, including below the simulated range.

Master curve model: C(t) = exp(-ln2 (t / tau_alpha)^beta), a stretched exponential that equals 0.5 at
tau_alpha by construction, fitted to the alpha decay (C below ``fit_below``) of every temperature whose
curve reaches 0.5. Curves that stop above 0.5 get tau_alpha by the best overlap with the master curve
(the paper's "maximising the overlap"). Below the simulated range tau_alpha follows an Arrhenius fit
log tau = a + E / T over the temperatures T <= ``arrhenius_t_max``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import curve_fit, minimize_scalar

from tglassmlp.observables.labels import relaxation_time

LN2 = math.log(2.0)


def master_curve(t_over_tau, beta: float):
    """exp(-ln2 (t/tau)^beta): the model of <C_B> versus rescaled time."""
    return np.exp(-LN2 * np.power(np.asarray(t_over_tau, dtype=np.float64), beta))


class TimeTemperatureSuperposition:
    """Relaxation times, master curve and level <-> time conversion from <C_B>(t) curves.

    Args:
        arrhenius_t_max: temperatures at or below this enter the Arrhenius fit [epsilon/k_B].
        fit_below: only points with <C_B> below this enter the fits (excludes the vibrational plateau).
        tau_glass: the relaxation time that defines T_g [tau] (paper: 1e12).
    """

    def __init__(self, arrhenius_t_max: float = 0.25, fit_below: float = 0.95, tau_glass: float = 1e12):
        self.arrhenius_t_max = float(arrhenius_t_max)
        self.fit_below = float(fit_below)
        self.tau_glass = float(tau_glass)

    def compute(self, curves: dict) -> "TimeTemperatureSuperposition":
        """Fit from ``{T: (times (T_n,) [tau], <C_B> (T_n,))}``; returns self."""
        if not curves:
            raise ValueError("TimeTemperatureSuperposition: no curves given")
        data = {float(T): (np.asarray(t, float), np.asarray(c, float)) for T, (t, c) in curves.items()}
        measured = {T: relaxation_time(t, c) for T, (t, c) in data.items()}
        direct = {T: tau for T, tau in measured.items() if np.isfinite(tau)}
        if not direct:
            raise ValueError("TimeTemperatureSuperposition: no curve reaches <C_B> = 0.5; cannot fix the master curve")
        xs, ys = [], []
        for T, tau in direct.items():
            t, c = data[T]
            keep = (c < self.fit_below) & (c > 0)
            xs.append(t[keep] / tau)
            ys.append(c[keep])
        x, y = np.concatenate(xs), np.concatenate(ys)
        if len(x) < 2:
            raise ValueError("TimeTemperatureSuperposition: too few points in the alpha decay to fit the master curve")
        (beta,), _ = curve_fit(master_curve, x, y, p0=[0.7], bounds=(0.1, 3.0))
        self._beta = float(beta)
        tau_alpha = dict(direct)
        for T in sorted(set(data) - set(direct)):
            t, c = data[T]
            keep = c < self.fit_below
            if keep.sum() < 1:
                continue  # no alpha decay at all: leave it to the Arrhenius law

            def misfit(log_tau, t=t[keep], c=c[keep]):
                return float(np.sum((master_curve(t / np.exp(log_tau), self._beta) - c) ** 2))

            lo = np.log(t[-1])  # the curve stops above 0.5, so tau exceeds the last time
            res = minimize_scalar(misfit, bounds=(lo, lo + 30.0), method="bounded")
            tau_alpha[T] = float(np.exp(res.x))
        self._tau_alpha = dict(sorted(tau_alpha.items()))
        arr = {T: tau for T, tau in self._tau_alpha.items() if T <= self.arrhenius_t_max}
        if len(arr) >= 2:
            inv_t = 1.0 / np.array(list(arr))
            slope, intercept = np.polyfit(inv_t, np.log(list(arr.values())), 1)
            self._arrhenius = (float(intercept), float(slope))
        else:
            self._arrhenius = None
        return self

    # ------------------------------------------------------------------ persistence
    #: keys of :meth:`to_dict` that :meth:`from_dict` needs (``arrhenius`` and ``settings`` are optional)
    REQUIRED_KEYS = ("beta", "tau_alpha")

    def settings(self) -> dict:
        """The constructor arguments: {'arrhenius_t_max', 'fit_below', 'tau_glass'}."""
        return {"arrhenius_t_max": self.arrhenius_t_max, "fit_below": self.fit_below, "tau_glass": self.tau_glass}

    def to_dict(self) -> dict:
        """The fitted values as JSON-ready data, read back by :meth:`from_dict`.

        Returns:
            {'beta': float, 'tau_alpha': {'<T>': tau_alpha [tau]} (T formatted with %g), 'arrhenius': [a, E] or
            None, 'settings': :meth:`settings`}.
        """
        if not hasattr(self, "_beta"):
            raise RuntimeError("TimeTemperatureSuperposition.to_dict: nothing fitted yet (call compute or from_dict)")
        return {"beta": self._beta, "tau_alpha": {f"{t:g}": tau for t, tau in self._tau_alpha.items()},
                "arrhenius": None if self._arrhenius is None else list(self._arrhenius),
                "settings": self.settings()}

    @classmethod
    def from_dict(cls, state, **settings) -> "TimeTemperatureSuperposition":
        """A fitted superposition from :meth:`to_dict`'s keys (also those of ``labels_report.json``).

        Args:
            state: {'beta', 'tau_alpha' ({T: tau [tau]}, T as number or string), 'arrhenius' ([a, E] or
                None, optional), 'settings' (constructor arguments, optional)}.
            **settings: constructor arguments that override ``state['settings']``.

        Raises:
            KeyError: ``beta`` or ``tau_alpha`` missing (the message lists them).
            ValueError: beta not positive, a tau_alpha not positive, arrhenius not a pair.
        """
        missing = [k for k in cls.REQUIRED_KEYS if k not in state]
        if missing:
            raise KeyError(f"TimeTemperatureSuperposition.from_dict: missing {missing} (expected the keys beta, "
                           "tau_alpha, arrhenius, settings of to_dict)")
        tts = cls(**{**dict(state.get("settings") or {}), **settings})
        beta = float(state["beta"])
        tau_alpha = dict(sorted((float(t), float(v)) for t, v in dict(state["tau_alpha"]).items()))
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"TimeTemperatureSuperposition.from_dict: beta must be positive, got {beta}")
        if not all(math.isfinite(v) and v > 0 for v in tau_alpha.values()):
            raise ValueError(f"TimeTemperatureSuperposition.from_dict: tau_alpha must be positive, got {tau_alpha}")
        arr = state.get("arrhenius")
        if arr is not None and len(arr) != 2:
            raise ValueError(f"TimeTemperatureSuperposition.from_dict: arrhenius must be [a, E] or None, got {arr}")
        # the three results compute() sets
        tts._beta = beta
        tts._tau_alpha = tau_alpha
        tts._arrhenius = None if arr is None else (float(arr[0]), float(arr[1]))
        return tts

    # ------------------------------------------------------------------ results
    @property
    def beta(self) -> float:
        """Stretching exponent of the master curve."""
        return self._beta

    @property
    def tau_alpha(self) -> dict:
        """{T: tau_alpha^BB [tau]} measured directly or by overlap with the master curve."""
        return dict(self._tau_alpha)

    @property
    def arrhenius(self):
        """(a, E) of log tau = a + E / T, or None with fewer than 2 temperatures <= arrhenius_t_max."""
        return self._arrhenius

    def relaxation_time(self, temperature: float) -> float:
        """tau_alpha^BB at T [tau]: the fitted value where available, else the Arrhenius extrapolation."""
        T = float(temperature)
        for known, tau in self._tau_alpha.items():
            if math.isclose(known, T, rel_tol=1e-9, abs_tol=1e-12):
                return tau
        if self._arrhenius is None:
            raise ValueError(
                f"no relaxation time at T = {T:g}: not among the fitted temperatures {list(self._tau_alpha)} and "
                f"the Arrhenius law needs >= 2 temperatures <= {self.arrhenius_t_max:g}"
            )
        a, e = self._arrhenius
        return float(np.exp(a + e / T))

    def time_at(self, level, temperature: float):
        """Time [tau] at which <C_B> reaches ``level`` (scalar or array in (0, 1)) at temperature T."""
        level = np.asarray(level, dtype=np.float64)
        if np.any((level <= 0) | (level >= 1)):
            raise ValueError(f"<C_B> levels must lie in (0, 1), got {level}")
        return self.relaxation_time(temperature) * (np.log(1.0 / level) / LN2) ** (1.0 / self._beta)

    def level_at(self, time, temperature: float):
        """<C_B> at time t [tau] and temperature T from the master curve."""
        return master_curve(np.asarray(time, dtype=np.float64) / self.relaxation_time(temperature), self._beta)

    def glass_transition_temperature(self) -> float:
        """T where the Arrhenius tau_alpha reaches ``tau_glass`` (paper: T_g ~ 0.15 for 1e12)."""
        if self._arrhenius is None:
            raise ValueError("glass transition temperature needs the Arrhenius fit (>= 2 low temperatures)")
        a, e = self._arrhenius
        return float(e / (np.log(self.tau_glass) - a))

"""The mean constraint of the prediction (:class:`MeanConstraint`), independent of the network.

Mean constraint (paper App. B). The network's input c is iterated so that the mean prediction over the
type-0 particles of one structure, ``Xbar(c_in)``, equals the target level c*:

    c_0 = c*,   c_{j+1} = c_j - step (Xbar(c_j) - c*),   at most ``max_iterations`` (6) updates,

stopping when |Xbar - c*| <= ``tolerance``. Near a solution the error changes by the factor
1 - step * dXbar/dc per update; a self-consistent network has dXbar/dc ~ 1, so the error shrinks by ~0.25
per update (step = 0.75). The paper prints ``c_{j+1} = c_j + 0.75 (Xbar - c*)``: with dXbar/dc > 0 that
multiplies the error by 1 + 0.75 dXbar/dc > 1 and diverges (``sign='paper'`` reproduces it; the tests show
both). The constraint runs separately for every network and structure; the prediction reported is the
one at the last evaluated input (when not converged: the evaluation with the smallest |Xbar - c*|), the
inputs are kept in [0, 1] (``bounds``), and convergence is recorded per (network, level).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tglassmlp.predict.errors import PredictionInputError


class MeanConstraint:
    """The iterative mean constraint of App. B (module docstring), one network and one structure at a time.

    Args:
        max_iterations: most updates of the input level (paper: 6); 0 evaluates once at c*.
        step: the update factor (paper: 0.75).
        tolerance: |Xbar - c*| that counts as converged (the selection's self-consistency threshold, 1e-4).
        sign: 'converging' (c_{j+1} = c_j - step (Xbar - c*)) or 'paper' (the printed +, which diverges for a
            network whose mean rises with c; kept to show it).
        bounds: (lo, hi) the inputs are clipped to, or None. c is an average propensity, and the network's
            state features c, c^2, c^3 make its output grow like c^3 outside the trained range, so an
            unbounded iteration on a badly self-consistent network can run away (measured on the demo
            ensemble at T = 0.35: inputs of 1e12 after 6 updates). Default [0, 1].
        enabled: False evaluates at c* only (no iteration); convergence is still reported.
        scope: 'temperature' (predict_structures): Xbar is the mean over the reference particles of all the
            structures of one temperature, with one input per network, temperature and level, so every
            structure keeps its own mean and chi_4 (Eq. 9, the variance of that mean over structures) survives;
            'structure': each structure's own mean is pinned to c*, which sets chi_4 <= N_0 tolerance^2.

    When the iteration does not converge, the reported evaluation is the one with the smallest |Xbar - c*|
    (the earliest on ties); a level whose clipped input stops moving stops iterating.
    """

    SIGNS = {"converging": -1.0, "paper": +1.0}

    def __init__(self, max_iterations: int = 6, step: float = 0.75, tolerance: float = 1e-4,
                 sign: str = "converging", bounds: Sequence[float] | None = (0.0, 1.0), enabled: bool = True,
                 scope: str = "temperature"):
        if scope not in ("temperature", "structure"):
            raise PredictionInputError(f"constraint.scope must be 'temperature' or 'structure', got {scope!r}")
        if sign not in self.SIGNS:
            raise PredictionInputError(f"constraint.sign must be one of {sorted(self.SIGNS)}, got {sign!r}")
        if int(max_iterations) < 0 or not (float(step) > 0) or not (float(tolerance) >= 0):
            raise PredictionInputError(f"constraint: need max_iterations >= 0, step > 0, tolerance >= 0; got "
                                       f"{max_iterations}, {step}, {tolerance}")
        if bounds is not None:
            bounds = (float(bounds[0]), float(bounds[1]))
            if not bounds[0] < bounds[1]:
                raise PredictionInputError(f"constraint.bounds must be [lo, hi] with lo < hi, got {list(bounds)}")
        self.max_iterations = int(max_iterations)
        self.step = float(step)
        self.tolerance = float(tolerance)
        self.sign = sign
        self.bounds = bounds
        self.enabled = bool(enabled)
        self.scope = scope

    def settings(self) -> dict[str, Any]:
        return {"max_iterations": self.max_iterations, "step": self.step, "tolerance": self.tolerance,
                "sign": self.sign, "bounds": None if self.bounds is None else list(self.bounds),
                "enabled": self.enabled, "scope": self.scope}

    def compute(self, evaluate: Callable[[np.ndarray, np.ndarray], np.ndarray], targets,
                accept: Callable[[np.ndarray], None] | None = None) -> MeanConstraint:
        """Iterate every level's input.

        Args:
            evaluate: ``evaluate(inputs (A,), which (A,) int)`` returns the mean prediction (A,) at the network
                inputs ``inputs`` for the levels ``which`` (indices into ``targets``); only levels still
                iterating are passed.
            targets: (L,) target levels c*.
            accept: called as ``accept(levels (B,) int)`` right after an evaluation with the levels for which
                it is the best so far (the caller keeps those per-particle predictions).

        Returns:
            self; results in the properties.
        """
        targets = np.asarray(targets, dtype=np.float64).reshape(-1)
        n_levels = targets.size
        n_iter = self.max_iterations if self.enabled else 0
        sign = self.SIGNS[self.sign]
        hist_in = np.full((n_levels, n_iter + 1), np.nan)
        hist_mean = np.full((n_levels, n_iter + 1), np.nan)
        iterations = np.zeros(n_levels, dtype=np.int64)
        best = np.full(n_levels, np.inf)
        best_in = np.full(n_levels, np.nan)
        best_mean = np.full(n_levels, np.nan)
        c = targets.copy()
        active = np.arange(n_levels)
        for j in range(n_iter + 1):
            means = np.asarray(evaluate(c[active].copy(), active.copy()), dtype=np.float64).reshape(-1)
            hist_in[active, j] = c[active]
            hist_mean[active, j] = means
            iterations[active] = j
            err = means - targets[active]
            better = np.abs(err) < best[active]
            if better.any():
                chosen = active[better]
                best[chosen], best_in[chosen], best_mean[chosen] = np.abs(err[better]), c[chosen], means[better]
                if accept is not None:
                    accept(chosen.copy())
            going = (np.abs(err) > self.tolerance) & np.isfinite(err)
            if j == n_iter or not going.any():
                break
            active, err = active[going], err[going]
            new = c[active] + sign * self.step * err
            if self.bounds is not None:
                new = np.clip(new, *self.bounds)
            moving = new != c[active]  # clipped onto the bound it already sits on: nothing left to try
            c[active] = new
            active = active[moving]
            if not active.size:
                break
        if not np.all(np.isfinite(best_mean)):
            raise PredictionInputError(f"mean constraint: non-finite mean prediction at levels "
                                       f"{targets[~np.isfinite(best_mean)].tolist()}")
        self._targets = targets
        self._input, self._mean = best_in, best_mean
        self._iterations = iterations
        self._history_input, self._history_mean = hist_in, hist_mean
        return self

    @property
    def targets(self) -> np.ndarray:
        """(L,) target levels c*."""
        return self._targets

    @property
    def input_level(self) -> np.ndarray:
        """(L,) the network input of the reported prediction (the last c_j when converged, else the best)."""
        return self._input

    @property
    def mean_prediction(self) -> np.ndarray:
        """(L,) Xbar at ``input_level``."""
        return self._mean

    @property
    def residual(self) -> np.ndarray:
        """(L,) Xbar - c*."""
        return self._mean - self._targets

    @property
    def converged(self) -> np.ndarray:
        """(L,) bool: |Xbar - c*| <= tolerance."""
        return np.abs(self.residual) <= self.tolerance

    @property
    def iterations(self) -> np.ndarray:
        """(L,) updates made (the last evaluation is c_{iterations})."""
        return self._iterations

    @property
    def history_input(self) -> np.ndarray:
        """(L, max_iterations + 1) c_j; NaN after a level stopped."""
        return self._history_input

    @property
    def history_mean(self) -> np.ndarray:
        """(L, max_iterations + 1) Xbar(c_j); NaN after a level stopped."""
        return self._history_mean

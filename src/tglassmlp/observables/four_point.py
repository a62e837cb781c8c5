"""Four-point dynamic heterogeneity: chi_4 (paper Eq. 9), S_4(q) (Eq. 10), xi_4 (Eq. 11) and the higher-order
prefactor A (Eq. C1).

Notation. A *sample* s = 1..S is one structure (one equilibrium configuration) and its per-particle
propensities c_i^s (the isoconfigurational average C_B^i(t), or a network's prediction X_MLP^i) of the N
analysed particles (the paper: the N_1 particles of its type 1, our type 0), at K times or <C_B> levels.
Ensemble averages <...> run over samples. With Cbar^s = (1/N) sum_i c_i^s:

    chi_4              = N (<Cbar^2> - <Cbar>^2)                                          Eq. (9)
    W^s(q)             = sum_i (c_i^s - <Cbar>) exp(i q . R_i^s(0))
    S_4(q)             = <|W^s(q)|^2> / N                                                 Eq. (10)
    S_4(q)             ~ chi4_tilde / (1 + (q xi_4)^2)            small q                 Eq. (11)
    S_4(q)             = chi4_tilde / (1 + (xi q)^2 + A (xi q)^3)   0.2 < q < 0.6         Eq. (C1)

chi_4 is dimensionless (propensities are); q is in 1/sigma, xi_4 in sigma. The variance in Eq. (9) is the
population variance over samples (ddof = 0), as in ``tglassmlp.model.module.state_point_metrics``. For
independent particles chi_4 equals the single-particle variance var(c_i): that is the normalisation check.

S_4 is evaluated on the wave vectors allowed by the square periodic box of side L_box, q = 2 pi / L_box
(n_x, n_y), and averaged over shells of |q|. Because the propensities are real, S_4(q) = S_4(-q), so only the
half plane (n_x > 0, or n_x = 0 and n_y > 0) is summed. q = 0 (where S_4 equals chi_4 by construction) is left
out of the shells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import least_squares

#: Particles per block of the S_4 sum (bounds memory at ~ block * (2 n_max + 1) * 16 bytes per array).
_BLOCK = 8192


def _as_samples(values, label: str = "values") -> list[np.ndarray]:
    """A list of (K, N_s) float arrays from (S, N), (S, K, N) or a sequence of (N,) / (K, N) arrays."""
    if isinstance(values, np.ndarray):
        if values.ndim == 2:
            samples = [v[None, :] for v in values]
        elif values.ndim == 3:
            samples = list(values)
        else:
            raise ValueError(f"{label}: expected (S, N) or (S, K, N), got shape {values.shape}")
    else:
        samples = [np.atleast_2d(np.asarray(v)) for v in values]
    if not samples:
        raise ValueError(f"{label}: no samples given")
    out = []
    for s, v in enumerate(samples):
        v = np.asarray(v, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] < 1:
            raise ValueError(f"{label}[{s}]: expected (N,) or (K, N) per sample, got shape {v.shape}")
        if v.shape[0] != samples[0].shape[0]:
            raise ValueError(f"{label}[{s}]: {v.shape[0]} times/levels, sample 0 has {samples[0].shape[0]}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{label}[{s}]: contains NaN or inf")
        out.append(v)
    return out


def four_point_susceptibility(values) -> np.ndarray:
    """chi_4 of Eq. (9): N (<Cbar^2> - <Cbar>^2) over samples (population variance).

    Args:
        values: per-sample propensities, (S, N), (S, K, N) or a sequence of S arrays (N_s,) / (K, N_s).
            Samples may differ in N (then N is their mean, as for structures of slightly different size).

    Returns:
        (K,) chi_4, dimensionless (K = 1 for (S, N) input).
    """
    samples = _as_samples(values)
    means = np.array([v.mean(axis=1) for v in samples])  # (S, K)
    n = float(np.mean([v.shape[1] for v in samples]))
    return n * means.var(axis=0)


class FourPointSusceptibility:
    """chi_4(t) of Eq. (9) with a bootstrap error over samples (structures).

    Args:
        n_bootstrap: bootstrap resamplings of the samples for the error (0: no error, NaN).
        seed: seed of the bootstrap draws.
    """

    def __init__(self, n_bootstrap: int = 200, seed: int = 0):
        if int(n_bootstrap) < 0:
            raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)

    def compute(self, values) -> "FourPointSusceptibility":
        """``values`` as in :func:`four_point_susceptibility`; returns self."""
        samples = _as_samples(values)
        self._n_samples = len(samples)
        self._chi4 = four_point_susceptibility(samples)
        self._mean = np.mean([v.mean(axis=1) for v in samples], axis=0)
        if self.n_bootstrap and len(samples) > 1:
            rng = np.random.default_rng(self.seed)
            draws = [four_point_susceptibility([samples[j] for j in rng.integers(0, len(samples), len(samples))])
                     for _ in range(self.n_bootstrap)]
            self._err = np.std(draws, axis=0, ddof=1)
        else:
            self._err = np.full_like(self._chi4, np.nan)
        return self

    @property
    def chi4(self) -> np.ndarray:
        """(K,) chi_4, dimensionless."""
        return self._chi4

    @property
    def chi4_err(self) -> np.ndarray:
        """(K,) bootstrap standard deviation of chi_4 over resampled structures (NaN with one sample)."""
        return self._err

    @property
    def mean(self) -> np.ndarray:
        """(K,) <Cbar>, the sample-averaged mean propensity."""
        return self._mean

    @property
    def n_samples(self) -> int:
        return self._n_samples


class FourPointStructureFactor:
    """S_4(q) of Eq. (10) on the box's wave vectors, averaged over shells of |q|.

    Args:
        q_max: largest |q| kept [1/sigma].
        shell_width: width of the |q| shells [1/sigma]; None: 2 pi / L_box (one grid spacing). Shell k holds
            the vectors with (k - 1/2) w <= |q| < (k + 1/2) w, k >= 1.

    After :meth:`compute`: ``q`` (mean |q| per non-empty shell), ``s4`` (K, n_shells), ``s4_err`` (standard
    error over samples), ``n_vectors`` (wave vectors per shell, half plane), ``s4_samples`` (S, K, n_shells).
    """

    def __init__(self, q_max: float = 1.0, shell_width: float | None = None):
        if not (math.isfinite(q_max) and q_max > 0):
            raise ValueError(f"q_max must be positive, got {q_max}")
        if shell_width is not None and not shell_width > 0:
            raise ValueError(f"shell_width must be positive, got {shell_width}")
        self.q_max = float(q_max)
        self.shell_width = None if shell_width is None else float(shell_width)

    def compute(self, positions, values, box: float, mean=None) -> "FourPointStructureFactor":
        """S_4 from S samples.

        Args:
            positions: (S, N, 2) or a sequence of (N_s, 2) positions R_i(0) at t = 0 [sigma].
            values: per-sample propensities as in :func:`four_point_susceptibility` (same S and N_s).
            box: side of the square periodic box [sigma] (the same for all samples).
            mean: (K,) or scalar <Cbar> subtracted in W; None: the average over the given samples.

        Returns:
            self.
        """
        box = float(box)
        if not (math.isfinite(box) and box > 0):
            raise ValueError(f"box must be a positive length, got {box}")
        samples = _as_samples(values)
        pos = [np.asarray(p, dtype=np.float64) for p in positions]
        if len(pos) != len(samples):
            raise ValueError(f"{len(pos)} position arrays for {len(samples)} value samples")
        for s, (p, v) in enumerate(zip(pos, samples)):
            if p.ndim != 2 or p.shape != (v.shape[1], 2):
                raise ValueError(f"positions[{s}] has shape {p.shape}, expected ({v.shape[1]}, 2) to match values")
        n_k = samples[0].shape[0]
        if mean is None:
            mean = np.mean([v.mean(axis=1) for v in samples], axis=0)
        mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (n_k,))

        dq = 2.0 * math.pi / box
        n_max = int(math.floor(self.q_max / dq))
        if n_max < 1:
            raise ValueError(f"q_max = {self.q_max:g} is below the smallest wave vector 2 pi / L = {dq:.4g}")
        nx = np.arange(0, n_max + 1)
        ny = np.arange(-n_max, n_max + 1)
        qx, qy = np.meshgrid(nx * dq, ny * dq, indexing="ij")
        qnorm = np.hypot(qx, qy)
        half = (nx[:, None] > 0) | ((nx[:, None] == 0) & (ny[None, :] > 0))
        keep = half & (qnorm <= self.q_max * (1 + 1e-12))
        width = self.shell_width or dq
        shell = np.floor(qnorm / width + 0.5).astype(np.int64)
        shells = np.unique(shell[keep])
        shells = shells[shells >= 1]
        sel = [keep & (shell == k) for k in shells]

        per_sample = np.empty((len(samples), n_k, len(shells)))
        for s, (p, v) in enumerate(zip(pos, samples)):
            power = self._power(p, v - mean[:, None], box, nx, ny)  # (K, n_x, n_y)
            per_sample[s] = np.stack([power[:, m].mean(axis=1) for m in sel], axis=-1) / v.shape[1]
        self._q = np.array([qnorm[m].mean() for m in sel])
        self._n_vectors = np.array([int(m.sum()) for m in sel])
        self._samples = per_sample
        self._s4 = per_sample.mean(axis=0)
        if len(samples) > 1:
            self._err = per_sample.std(axis=0, ddof=1) / math.sqrt(len(samples))
        else:
            self._err = np.full_like(self._s4, np.nan)
        return self

    @staticmethod
    def _power(pos, dev, box, nx, ny) -> np.ndarray:
        """|W(q)|^2 on the (n_x, n_y) grid; exp(i q.R) = exp(i q_x x) exp(i q_y y) makes W one matrix product
        per block of particles: W[k, a, b] = sum_i dev[k, i] Ex[i, a] Ey[i, b]."""
        k = dev.shape[0]
        w = np.zeros((k, len(nx), len(ny)), dtype=np.complex128)
        two_pi_over_l = 2.0 * math.pi / box
        for start in range(0, pos.shape[0], _BLOCK):
            x = pos[start:start + _BLOCK, 0:1] * two_pi_over_l
            y = pos[start:start + _BLOCK, 1:2] * two_pi_over_l
            ex = np.exp(1j * x * nx[None, :])  # (B, n_x)
            ey = np.exp(1j * y * ny[None, :])  # (B, n_y)
            d = dev[:, start:start + _BLOCK]
            # (K, n_x, B) @ (B, n_y): one complex BLAS product per time (einsum's generic path is ~50x slower)
            w += np.matmul((d[:, :, None] * ex[None, :, :]).transpose(0, 2, 1), ey)
        return (w * w.conj()).real

    @property
    def q(self) -> np.ndarray:
        """(n_shells,) mean |q| of the wave vectors in each shell [1/sigma]."""
        return self._q

    @property
    def s4(self) -> np.ndarray:
        """(K, n_shells) S_4(q), dimensionless."""
        return self._s4

    @property
    def s4_err(self) -> np.ndarray:
        """(K, n_shells) standard error of S_4 over samples (NaN with one sample)."""
        return self._err

    @property
    def s4_samples(self) -> np.ndarray:
        """(S, K, n_shells) the shell-averaged S_4 of each sample."""
        return self._samples

    @property
    def n_vectors(self) -> np.ndarray:
        """(n_shells,) number of (half-plane) wave vectors per shell."""
        return self._n_vectors


def ornstein_zernike(q, chi4_tilde: float, xi: float, a: float = 0.0):
    """chi4_tilde / (1 + (q xi)^2 + a (q xi)^3): Eq. (11) for a = 0, Eq. (C1) otherwise."""
    x = np.asarray(q, dtype=np.float64) * xi
    return chi4_tilde / (1.0 + x * x + a * x**3)


#: Default window rule of :class:`OrnsteinZernikeFit`: Eq. (11) is fitted on q xi_4 <= this value, with xi_4
#: the fit's own result (self-consistent window). Measured on synthetic fields of known xi = 6.5 in the paper's
#: 263-sigma box, 20 fields per dataset (``benchmarks/results/oz_window.md``), xi_fit / xi for the windows
#: fixed q <= 0.6 / q xi <= 1 / 1.5 / 2 / 3: pure Eq. (11) 1.00 +- 0.03 / 1.04 +- 0.12 / 1.00 +- 0.05 /
#: 1.01 +- 0.04 / 1.00 +- 0.03; Eq. (C1) with A = 0.5: 1.71 / 1.15 +- 0.34 / 1.23 / 1.30 / 1.41; Eq. (11) plus
#: a flat 5 % background: 0.76 / 0.91 / 0.90 / 0.88 / 0.77. 1.5 has the smallest bias where the form deviates
#: at a statistical spread still below 5 %; 1 is too noisy. In the 33-sigma box the first three shells already
#: reach q xi ~ 1.7 at xi = 3: every rule then uses them (``window_limited``).
QXI_MAX = 1.5


class OrnsteinZernikeFit:
    """xi_4 and chi4_tilde from Eq. (11) at small q, then the prefactor A of Eq. (C1).

    Fits are least squares in log S_4 (equal relative weight per shell: the spread of a shell average is
    proportional to its value). Step 1: Eq. (11) on the shells of a window q_min <= q <= q_top gives chi4_tilde
    and xi_4. Step 2: with chi4_tilde and xi = xi_4 held fixed, A of Eq. (C1) on a_range[0] < q < a_range[1]
    (paper App. C: A is extracted "after fitting the length scale").

    The window (the paper does not give its own). Eq. (11) is the small-q form: it holds for q xi_4 of order one
    and less, and a fixed q window reaches q xi_4 ~ 4 at the paper's xi_4 ~ 6-7, where the higher-order terms of
    Eq. (C1) bias xi_4 upwards. With ``qxi_max`` set (default :data:`QXI_MAX`) the window is self-consistent:

    1. start with q_top = q_max and fit;
    2. set q_top = min(qxi_max / xi_4, q_max) and refit, until the set of shells stops changing (a fixed point:
       every shell used has q xi_4 <= qxi_max for the xi_4 it gives, the next shell would not);
    3. the window always holds the first ``min_points`` shells above q_min (a box with L_box not >> xi_4 has
       fewer shells with q xi_4 <= qxi_max; ``window_limited`` then says so);
    4. windows are prefixes of the sorted shells, so the iteration either stops or cycles; on a cycle the
       largest window of the cycle whose last shell obeys q xi_4 <= qxi_max is used (else the smallest).

    ``qxi_max=None`` gives the fixed window q_min <= q <= q_max.

    Args:
        q_max: largest q of the Eq. (11) fit [1/sigma]: the fixed window's edge, or the self-consistent window's
            start and upper bound.
        q_min: smallest q of the Eq. (11) fit [1/sigma].
        a_range: q window of the Eq. (C1) fit [1/sigma] (paper: 0.2 < q < 0.6).
        min_points: fewer shells than this in a window gives NaN for that fit.
        qxi_max: self-consistent window q xi_4 <= qxi_max (dimensionless), or None for the fixed window.
        max_iterations: of the self-consistent window.
    """

    def __init__(self, q_max: float = 0.5, q_min: float = 0.0, a_range: Sequence[float] = (0.2, 0.6),
                 min_points: int = 3, qxi_max: float | None = QXI_MAX, max_iterations: int = 30):
        if not 0 <= q_min < q_max:
            raise ValueError(f"need 0 <= q_min < q_max, got q_min = {q_min}, q_max = {q_max}")
        if len(a_range) != 2 or not 0 <= a_range[0] < a_range[1]:
            raise ValueError(f"a_range must be (low, high) with 0 <= low < high, got {a_range}")
        if qxi_max is not None and not (math.isfinite(qxi_max) and qxi_max > 0):
            raise ValueError(f"qxi_max must be positive (or None for a fixed window), got {qxi_max}")
        self.q_max, self.q_min = float(q_max), float(q_min)
        self.a_range = (float(a_range[0]), float(a_range[1]))
        self.min_points = max(2, int(min_points))
        self.qxi_max = None if qxi_max is None else float(qxi_max)
        self.max_iterations = max(1, int(max_iterations))

    @staticmethod
    def _fit_eq11(qw: np.ndarray, sw: np.ndarray) -> tuple[float, float]:
        """(chi4_tilde, xi_4) of Eq. (11) on the given shells, NaN when no length can be read off."""
        lw = np.log(sw)
        # start: 1/S_4 = 1/chi + (xi^2/chi) q^2 is linear in q^2
        slope, icpt = np.polyfit(qw**2, 1.0 / sw, 1)
        chi0 = 1.0 / icpt if icpt > 0 else sw.max()
        xi0 = math.sqrt(max(slope * chi0, 1e-6))

        def res(p):
            return np.log(ornstein_zernike(qw, np.exp(p[0]), np.exp(p[1]))) - lw

        # xi is bounded to [1e-3, 50 / q_lowest]: a noisy S_4 that does not decay over the window runs to
        # the upper bound, which is reported as NaN (no length can be read off), not as a huge xi
        hi = math.log(50.0 / qw.min())
        x0 = [math.log(chi0), float(np.clip(math.log(xi0), math.log(1e-3) + 1e-6, hi - 1e-6))]
        sol = least_squares(res, x0, bounds=([-np.inf, math.log(1e-3)], [np.inf, hi]))
        if sol.success and sol.x[1] < hi - 1e-3:
            return float(np.exp(sol.x[0])), float(np.exp(sol.x[1]))
        return math.nan, math.nan

    def compute(self, q, s4) -> "OrnsteinZernikeFit":
        """Fit one S_4(q) curve: q (n,) [1/sigma] and s4 (n,); returns self."""
        q = np.asarray(q, dtype=np.float64)
        s4 = np.asarray(s4, dtype=np.float64)
        if q.ndim != 1 or q.shape != s4.shape:
            raise ValueError(f"q and s4 must be 1D of equal length, got {q.shape} and {s4.shape}")
        ok = np.isfinite(s4) & (s4 > 0) & (q > 0)
        self._chi, self._xi, self._a = math.nan, math.nan, math.nan
        self._limited, self._converged, self._iterations = False, True, 0
        # candidate shells of the Eq. (11) fit, by increasing q: every window is a prefix of them
        cand = np.flatnonzero(ok & (q >= self.q_min) & (q <= self.q_max))
        cand = cand[np.argsort(q[cand], kind="stable")]
        qc, sc = q[cand], s4[cand]
        n_used = 0
        if cand.size >= self.min_points:
            if self.qxi_max is None:
                n_used = cand.size
                self._chi, self._xi = self._fit_eq11(qc, sc)
            else:
                n_used, self._chi, self._xi = self._self_consistent(qc, sc)
        self._n_oz = int(n_used)
        self._window_q = float(qc[n_used - 1]) if n_used else math.nan
        lo, hi = self.a_range
        awin = ok & (q > lo) & (q < hi)
        self._n_a = int(awin.sum())
        if math.isfinite(self._xi) and awin.sum() >= self.min_points:
            qa, la = q[awin], np.log(s4[awin])
            chi, xi = self._chi, self._xi

            def res_a(p):
                model = ornstein_zernike(qa, chi, xi, p[0])
                return np.log(np.clip(model, 1e-300, None)) - la

            # (1 + x^2) / x^3 decreases with x, so this bound keeps 1 + x^2 + A x^3 > 0 on the whole window
            x_top = qa.max() * xi
            lower = -(1.0 + x_top**2) / x_top**3 * (1.0 - 1e-6)
            sol = least_squares(res_a, [max(0.0, lower * 0.5)], bounds=([lower], [np.inf]))
            self._a = float(sol.x[0])
        return self

    def _self_consistent(self, qc: np.ndarray, sc: np.ndarray) -> tuple[int, float, float]:
        """(shells used, chi4_tilde, xi_4) of the self-consistent window (class docstring)."""
        def size_for(xi: float) -> int:
            top = min(self.qxi_max / xi, self.q_max)
            return max(self.min_points, int(np.searchsorted(qc, top * (1 + 1e-12), side="right")))

        fits: dict[int, tuple[float, float]] = {}
        order: list[int] = []
        size = qc.size
        for _ in range(self.max_iterations):
            self._iterations += 1
            fits[size] = self._fit_eq11(qc[:size], sc[:size])
            order.append(size)
            xi = fits[size][1]
            if not math.isfinite(xi):
                return size, math.nan, math.nan
            nxt = size_for(xi)
            if nxt == size:
                break
            if nxt in fits:  # a cycle: choose among its windows
                cycle = order[order.index(nxt):]
                good = [m for m in cycle if qc[m - 1] * fits[m][1] <= self.qxi_max]
                size = max(good) if good else min(cycle)
                break
            size = nxt
        else:
            self._converged = False
        self._limited = size == self.min_points and qc[size - 1] * fits[size][1] > self.qxi_max
        return size, fits[size][0], fits[size][1]

    @property
    def chi4_tilde(self) -> float:
        """chi4_tilde of Eq. (11), dimensionless (NaN if the fit window had too few shells)."""
        return self._chi

    @property
    def xi4(self) -> float:
        """xi_4 of Eq. (11) [sigma] (NaN if the fit window had too few shells)."""
        return self._xi

    @property
    def prefactor_a(self) -> float:
        """A of Eq. (C1), dimensionless (NaN without xi_4 or with too few shells in ``a_range``)."""
        return self._a

    @property
    def n_points(self) -> tuple[int, int]:
        """(shells in the Eq. (11) window, shells in the Eq. (C1) window)."""
        return self._n_oz, self._n_a

    @property
    def window_q_max(self) -> float:
        """Largest shell q used by the Eq. (11) fit [1/sigma] (NaN without a fit)."""
        return self._window_q

    @property
    def window_limited(self) -> bool:
        """True when the box leaves fewer than ``min_points`` shells with q xi_4 <= qxi_max (L_box not >> xi_4):
        the fit then uses the first ``min_points`` shells, beyond the rule."""
        return self._limited

    @property
    def window_converged(self) -> bool:
        """False when the self-consistent window was still changing after ``max_iterations``."""
        return self._converged

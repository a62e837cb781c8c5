"""Physics-inspired structural descriptors of tGlassMLP (paper Sec. II B, Eqs. (1)-(4); facts section 5).

For every particle i of an inherent structure and every coarse-graining length L and channel c (particles of
type 0, 1, 2, or all particles), with weights ``w_ij = exp(-r_ij / L)`` over all periodic images of j within
``r_ij < cutoff`` (i itself included, r = 0, w = 1; L = 0 keeps only i itself):

    density_c_L     rho_i   = sum_{j in c} w_ij
    energy_c_L      <E>_i   = sum_{j in c} w_ij E_j / rho_i
    perimeter_c_L   <p>_i   = sum_{j in c} w_ij p_j / rho_i
    energy_var_c_L  var E_i = sum_{j in c} w_ij (E_j - <E>_i)^2 / rho_i

A channel with rho_i = 0 (no particle of that type in range, e.g. every other-type channel at L = 0) gives 0
for the three averages. E_j is the per-particle energy E_j = 1/2 sum_k V(r_jk) of the inherent structure,
p_j the perimeter of its cell in the radical (power, Laguerre) tessellation with the GlassMLP radii
0.5 / 0.44 / 0.47 for types 0 / 1 / 2 (``perimeter.weighted: true``, :mod:`tglassmlp.observables.tessellation`),
or of its plain Voronoi cell (freud) with ``perimeter.weighted: false``. Settings:
``conf/descriptors/default.yaml`` (:class:`DescriptorSettings`).

Which columns reach the network is decided in one place, :func:`kept_columns` (used by
:class:`DescriptorScaler`): constant columns and exact duplicates of earlier columns are dropped.

Column order (``descriptor_names``): quantity-major, then channel, then L, i.e. the descriptor array reshaped
to (N, 4 quantities, 4 channels, n_L). Names are ``"{quantity}_{channel}_L{L:g}"``, e.g. ``energy_all_L2``.

Periodic images: the cutoff 20 exceeds half the N = 1290 box (32.9 / 2), so a particle j can sit in range
several times (its images), and i's own images count too. Neighbour searches with a periodic minimum-image
convention (freud's AABBQuery refuses, scipy's cKDTree(boxsize) keeps only the nearest image) would miss
~17% of the weight. The numba kernel below therefore walks a cell list over *unwrapped* cell offsets: each
offset maps to a (wrapped cell, image shift) pair, so every image of every particle within the cutoff is
visited exactly once, for any ratio cutoff / box. No pair list is stored: memory is O(N) (the output plus a
cell-sorted copy of the inputs), time O(N * cutoff^2 * density).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from tglassmlp.defaults import group_config
from tglassmlp.physics.configuration import ConfigurationError, validate_configuration
from tglassmlp.observables.tessellation import cell_input
from tglassmlp.physics.system import N_TYPES

log = logging.getLogger(__name__)

QUANTITIES = ("density", "energy", "perimeter", "energy_var")
CHANNELS = tuple(f"t{t}" for t in range(N_TYPES)) + ("all",)

# Target side of a cell-list cell [sigma]. At the KA2D density (1.19 / sigma^2) a 1.5-sigma cell holds ~2.7
# particles: small enough that the square of cells around the cutoff circle wastes few distance tests, large
# enough that the per-cell loop overhead stays small (measured in benchmarks/descriptors.py).
CELL_SIZE = 1.5

#: Version of the descriptor code: bump it with any change of the values computed for the same settings, so
#: that descriptor caches keyed on it (tglassmlp.data.structures) never serve columns of the old code.
DESCRIPTOR_CODE_VERSION = 1


# ------------------------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class DescriptorSettings:
    """Settings of ``conf/descriptors/<name>.yaml``.

    Attributes:
        l_grid: coarse-graining lengths L [sigma], non-negative, distinct (0 = self only).
        cutoff: neighbours with r_ij < cutoff enter the sums [sigma].
        weight: weight form; only "exponential" (w = exp(-r / L)).
        perimeter_method: "voronoi" (cells of a Voronoi-type tessellation).
        perimeter_weighted: True: radical (power) tessellation with ``perimeter_radii``; False: plain Voronoi.
        perimeter_radii: radius of each particle type 0, 1, 2 [sigma] (power weights r^2); used when weighted.
        zero_std_rtol: relative threshold under which the scaler drops a column (:func:`kept_columns`).
    """

    l_grid: tuple[float, ...]
    cutoff: float
    weight: str = "exponential"
    perimeter_method: str = "voronoi"
    perimeter_weighted: bool = True
    perimeter_radii: tuple[float, ...] = (0.5, 0.44, 0.47)
    zero_std_rtol: float = 1e-9

    def __post_init__(self):
        object.__setattr__(self, "l_grid", _check_l_grid(self.l_grid))
        object.__setattr__(self, "cutoff", _check_cutoff(self.cutoff))
        if self.weight != "exponential":
            raise ValueError(f"descriptors config: weight '{self.weight}' is not implemented (only 'exponential')")
        if self.perimeter_method != "voronoi":
            raise ValueError(f"descriptors config: perimeter method '{self.perimeter_method}' is not implemented "
                             "(only 'voronoi')")
        if not isinstance(self.perimeter_weighted, (bool, np.bool_)):
            raise ValueError(f"descriptors config: perimeter.weighted must be true or false, got "
                             f"{self.perimeter_weighted!r}")
        object.__setattr__(self, "perimeter_weighted", bool(self.perimeter_weighted))
        radii = np.asarray(self.perimeter_radii, dtype=np.float64).ravel()
        if radii.shape != (N_TYPES,) or not np.all(np.isfinite(radii)) or np.any(radii < 0):
            raise ValueError(f"descriptors config: perimeter.radii must be {N_TYPES} finite radii >= 0 (types "
                             f"0..{N_TYPES - 1}), got {list(np.atleast_1d(self.perimeter_radii))}")
        object.__setattr__(self, "perimeter_radii", tuple(float(r) for r in radii))
        if not (math.isfinite(self.zero_std_rtol) and self.zero_std_rtol >= 0):
            raise ValueError(f"descriptors config: scaler.zero_std_rtol must be >= 0, got {self.zero_std_rtol}")

    @property
    def n_descriptors(self) -> int:
        """Columns computed (before :func:`kept_columns` drops any): 4 quantities x 4 channels x n_L."""
        return len(QUANTITIES) * len(CHANNELS) * len(self.l_grid)


def load_descriptor_settings(name="default") -> DescriptorSettings:
    """A DescriptorSettings from ``conf/descriptors/<name>.yaml``, or from a config node with its keys (the
    ``descriptors`` node of a composed config); raises on unsupported options."""
    if isinstance(name, DescriptorSettings):
        return name
    if isinstance(name, str):
        cfg = group_config("descriptors", name)
    else:
        from omegaconf import OmegaConf

        cfg, name = OmegaConf.create(OmegaConf.to_container(name, resolve=True) if OmegaConf.is_config(name)
                                     else dict(name)), "descriptors"
    missing = [k for k in ("l_grid", "cutoff") if k not in cfg]
    if missing:
        raise KeyError(f"descriptors config '{name}' is missing keys {missing}")
    perimeter = cfg.get("perimeter", {}) or {}
    missing = [k for k in ("weighted", "radii") if k not in perimeter]
    if missing:
        raise KeyError(f"descriptors config '{name}': perimeter is missing keys {missing}")
    scaler = cfg.get("scaler", {}) or {}
    return DescriptorSettings(
        l_grid=tuple(float(x) for x in cfg.l_grid),
        cutoff=float(cfg.cutoff),
        weight=str(cfg.get("weight", "exponential")),
        perimeter_method=str(perimeter.get("method", "voronoi")),
        perimeter_weighted=perimeter.weighted,
        perimeter_radii=tuple(float(r) for r in perimeter.radii),
        zero_std_rtol=float(scaler.get("zero_std_rtol", 1e-9)),
    )


def _check_l_grid(l_grid) -> tuple[float, ...]:
    values = np.asarray(l_grid, dtype=float).ravel()
    if values.size == 0:
        raise ValueError("descriptors: l_grid is empty")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"descriptors: l_grid values must be finite and >= 0, got {values.tolist()}")
    labels = [f"{x:g}" for x in values]
    if len(set(labels)) != len(labels):
        raise ValueError(f"descriptors: l_grid has repeated values (names would clash): {labels}")
    return tuple(float(x) for x in values)


def _check_cutoff(cutoff) -> float:
    cutoff = float(cutoff)
    if not (math.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"descriptors: cutoff must be finite and positive, got {cutoff}")
    return cutoff


def _resolve(l_grid, cutoff):
    if l_grid is None or cutoff is None:
        settings = load_descriptor_settings()
        l_grid = settings.l_grid if l_grid is None else l_grid
        cutoff = settings.cutoff if cutoff is None else cutoff
    return _check_l_grid(l_grid), _check_cutoff(cutoff)


def descriptor_names(l_grid=None) -> list[str]:
    """Column names ``"{quantity}_{channel}_L{L:g}"`` in the order of ``structural_descriptors``' columns.

    Quantity-major (density, energy, perimeter, energy_var), then channel (t0, t1, t2, all), then L.
    ``l_grid`` defaults to the config's grid (176 names for the paper's 11 values).
    """
    l_grid = _check_l_grid(l_grid) if l_grid is not None else load_descriptor_settings().l_grid
    return [f"{q}_{c}_L{L:g}" for q in QUANTITIES for c in CHANNELS for L in l_grid]


# ------------------------------------------------------------------------------------------------ Voronoi
def voronoi_perimeters(positions, box) -> np.ndarray:
    """Perimeter of each particle's (unweighted) Voronoi cell in a periodic 2D box.

    Args:
        positions: (N, 2) positions [sigma], wrapped or not.
        box: side of the square box [sigma], or (Lx, Ly) for a rectangular one (lattice tests need it).

    Returns:
        (N,) float64 perimeters [sigma].

    freud's Voronoi (voro++) works in single precision: perimeters carry a relative error ~1e-7 (L ~ 30)
    to ~1e-5 (L ~ 260). In 2D freud's neighbour-list weights are the lengths of the shared cell edges, so a
    bincount over the query index sums each cell's edges (no loop over polygons).
    """
    import freud  # imported here: only this function needs it

    positions, sides = cell_input(positions, box, "voronoi_perimeters", min_particles=2)
    n = positions.shape[0]
    fbox = freud.box.Box(float(sides[0]), float(sides[1]), is2D=True)
    # freud's box is centred on the origin; wrap in float64 before the float32 conversion.
    centred = positions - sides * np.floor(positions / sides + 0.5)
    points = np.zeros((n, 3), dtype=np.float32)
    points[:, :2] = centred
    points = fbox.wrap(points)
    voro = freud.locality.Voronoi()
    voro.compute((fbox, points))
    nlist = voro.nlist
    perimeters = np.bincount(nlist.query_point_indices, weights=nlist.weights, minlength=n)
    if not np.all(perimeters > 0):
        raise ConfigurationError(f"voronoi_perimeters: {np.sum(perimeters <= 0)} particle(s) got no Voronoi cell "
                                 "(coincident points?)")
    return perimeters.astype(np.float64)


def cell_perimeters(positions, types, box, settings: DescriptorSettings | None = None) -> np.ndarray:
    """The per-particle perimeters p_j that the descriptors coarse-grain, as the settings ask.

    Args:
        positions: (N, 2) inherent positions [sigma]. types: (N,) types 0, 1, 2. box: square box side [sigma].
        settings: DescriptorSettings (default: ``conf/descriptors/default.yaml``).

    Returns:
        (N,) float64 perimeters [sigma]: radical tessellation with the settings' radii per type when
        ``perimeter_weighted`` (the default), else the plain Voronoi tessellation (freud).
    """
    settings = load_descriptor_settings() if settings is None else settings
    if not settings.perimeter_weighted:
        return voronoi_perimeters(positions, box)
    from tglassmlp.observables.tessellation import radical_voronoi_perimeters

    types = np.asarray(types)
    if types.ndim != 1 or not np.issubdtype(types.dtype, np.integer) or np.any((types < 0) | (types >= N_TYPES)):
        raise ConfigurationError(f"cell_perimeters: types must be a 1D integer array of values 0..{N_TYPES - 1}")
    radii = np.asarray(settings.perimeter_radii, dtype=np.float64)[types]
    return radical_voronoi_perimeters(positions, box, radii)


# ------------------------------------------------------------------------------------------------ kernel
@numba.njit(parallel=True, cache=True)
def _coarse_grain_kernel(pos, types, energies, perimeters, cell_x, cell_y, cell_start, n_cells, box,
                         offsets, inv_l, l_is_zero, exp_order, square_of, cutoff2, order, out):
    """Fill out[order[s], q, c, l] for every cell-sorted particle s (see the module docstring).

    pos, types, energies, perimeters, cell_x, cell_y are sorted by cell; cell_start (n_cells^2 + 1,) is the
    CSR index of each cell (cell id = cx * n_cells + cy); offsets (K, 2) are the unwrapped cell offsets that
    can hold a point within the cutoff. Energies are accumulated relative to E_i so that the variance
    S2/S0 - (S1/S0)^2 does not lose digits to a large common energy (E ~ -3 eps, var ~ 0.01 eps^2).
    """
    n = pos.shape[0]
    n_l = inv_l.shape[0]
    n_types = out.shape[2] - 1
    for s in numba.prange(n):
        xi = pos[s, 0]
        yi = pos[s, 1]
        ei = energies[s]
        # acc[t, l, m]: m = 0 sum w, 1 sum w dE, 2 sum w dE^2, 3 sum w p, with dE = E_j - E_i
        acc = np.zeros((n_types, n_l, 4))
        w_l = np.empty(n_l)
        for k in range(offsets.shape[0]):
            tx = cell_x[s] + offsets[k, 0]
            ty = cell_y[s] + offsets[k, 1]
            wx = tx % n_cells  # Python semantics in numba: 0 <= wx < n_cells for negative tx too
            wy = ty % n_cells
            shift_x = ((tx - wx) // n_cells) * box
            shift_y = ((ty - wy) // n_cells) * box
            cell = wx * n_cells + wy
            for j in range(cell_start[cell], cell_start[cell + 1]):
                dx = pos[j, 0] + shift_x - xi
                dy = pos[j, 1] + shift_y - yi
                r2 = dx * dx + dy * dy
                if r2 >= cutoff2:
                    continue
                r = math.sqrt(r2)
                t = types[j]
                de = energies[j] - ei
                p = perimeters[j]
                for q in range(exp_order.shape[0]):
                    l = exp_order[q]
                    if square_of[l] >= 0:
                        w = w_l[square_of[l]] * w_l[square_of[l]]
                    else:
                        w = math.exp(-r * inv_l[l])
                    w_l[l] = w
                    acc[t, l, 0] += w
                    acc[t, l, 1] += w * de
                    acc[t, l, 2] += w * de * de
                    acc[t, l, 3] += w * p
        # L = 0: the particle itself only (exactly, not through exp(-0/0)).
        for l in range(n_l):
            if l_is_zero[l]:
                ti = types[s]
                acc[ti, l, 0] = 1.0
                acc[ti, l, 3] = perimeters[s]
        i = order[s]
        for l in range(n_l):
            tot0 = 0.0
            tot1 = 0.0
            tot2 = 0.0
            tot3 = 0.0
            for c in range(n_types + 1):
                if c < n_types:
                    s0 = acc[c, l, 0]
                    s1 = acc[c, l, 1]
                    s2 = acc[c, l, 2]
                    s3 = acc[c, l, 3]
                    tot0 += s0
                    tot1 += s1
                    tot2 += s2
                    tot3 += s3
                else:
                    s0, s1, s2, s3 = tot0, tot1, tot2, tot3
                out[i, 0, c, l] = s0
                if s0 > 0.0:
                    mean_de = s1 / s0
                    out[i, 1, c, l] = ei + mean_de
                    out[i, 2, c, l] = s3 / s0
                    var = s2 / s0 - mean_de * mean_de
                    out[i, 3, c, l] = var if var > 0.0 else 0.0  # rounding can leave -1e-17
                else:
                    out[i, 1, c, l] = 0.0
                    out[i, 2, c, l] = 0.0
                    out[i, 3, c, l] = 0.0


def _cell_offsets(cutoff: float, cell_size: float) -> np.ndarray:
    """Unwrapped cell offsets (dx, dy) whose cell can hold a point within ``cutoff`` of a point in cell 0."""
    m = int(math.ceil(cutoff / cell_size))
    ox, oy = np.meshgrid(np.arange(-m, m + 1), np.arange(-m, m + 1), indexing="ij")
    # closest approach of two points in cells |dx| apart is (|dx| - 1) * cell_size
    gap_x = np.maximum(np.abs(ox) - 1, 0) * cell_size
    gap_y = np.maximum(np.abs(oy) - 1, 0) * cell_size
    keep = gap_x**2 + gap_y**2 < cutoff**2
    return np.ascontiguousarray(np.stack([ox[keep], oy[keep]], axis=1).astype(np.int64))


def _exp_plan(l_values: np.ndarray):
    """Order in which the kernel evaluates the weights of the L > 0 columns, and which it gets by squaring.

    exp(-r / L) = exp(-r / (2L))^2: when 2L is also on the grid the kernel squares that weight instead of
    calling exp (exp dominates the cost; the paper's grid needs 5 exp calls instead of 10, rounding error
    grows by one ulp per squaring). Returns (exp_order (K,) int64 indices of L > 0 by decreasing L,
    square_of (n_L,) int64: index of 2L, or -1 for a direct exp).
    """
    square_of = np.full(l_values.shape[0], -1, dtype=np.int64)
    for l, value in enumerate(l_values):
        if value > 0:
            double = np.flatnonzero(l_values == 2.0 * value)
            if double.size:
                square_of[l] = double[0]
    positive = np.flatnonzero(l_values > 0)
    exp_order = positive[np.argsort(-l_values[positive], kind="stable")].astype(np.int64)
    return exp_order, square_of


def _per_particle(values, n: int, label: str) -> np.ndarray:
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"structural_descriptors: {label} are not numeric ({exc})") from None
    if values.shape != (n,):
        raise ConfigurationError(f"structural_descriptors: {label} must have shape ({n},) to match positions, "
                                 f"got {values.shape}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ConfigurationError(f"structural_descriptors: {bad.sum()} {label} are not finite "
                                 f"(first: particle {np.flatnonzero(bad)[0]})")
    return values


def structural_descriptors(inherent_positions, types, box, *, l_grid=None, cutoff=None, energies=None,
                           perimeters=None, system=None, settings: DescriptorSettings | None = None) -> np.ndarray:
    """The coarse-grained descriptors of every particle (module docstring), shape (N, 4 * 4 * n_L).

    Args:
        inherent_positions: (N, 2) positions of the inherent structure [sigma], wrapped or not.
        types: (N,) integer types 0, 1, 2.
        box: side of the square periodic box [sigma].
        l_grid: coarse-graining lengths L [sigma] (default: ``settings.l_grid``, 11 values).
        cutoff: r_ij < cutoff enter the sums [sigma] (default: ``settings.cutoff``, 20); any ratio to the box.
        energies: (N,) per-particle energies E_j [epsilon]; default ``particle_energies`` of the structure.
        perimeters: (N,) per-particle perimeters p_j [sigma]; default :func:`cell_perimeters` (radical cells
            with the settings' radii unless ``settings.perimeter_weighted`` is false).
        system: potential used for the default energies (default: the KA2D ternary mixture).
        settings: DescriptorSettings (default: ``conf/descriptors/default.yaml``); ``l_grid`` and ``cutoff``
            given explicitly take precedence over its values.

    Returns:
        (N, 176) float64 for the default grid, columns in the order of ``descriptor_names(l_grid)``:
        density [1], energy [epsilon], perimeter [sigma], energy_var [epsilon^2].

    Raises:
        ConfigurationError for NaN/mis-shaped positions, unknown types, or energies/perimeters of wrong shape.
    """
    positions, types, box = validate_configuration(inherent_positions, types, box, where="structural_descriptors")
    if settings is not None:
        l_grid = settings.l_grid if l_grid is None else l_grid
        cutoff = settings.cutoff if cutoff is None else cutoff
    elif perimeters is None:
        settings = load_descriptor_settings()
    l_grid, cutoff = _resolve(l_grid, cutoff)
    n = positions.shape[0]
    if energies is None:
        from tglassmlp.physics.potential import particle_energies

        try:
            energies = particle_energies(positions, types, box, system)
        except ConfigurationError as exc:  # e.g. overlapping particles: say which entry point was called
            raise ConfigurationError(f"structural_descriptors: {exc}") from None
    energies = _per_particle(energies, n, "energies")
    if perimeters is None:
        try:
            perimeters = cell_perimeters(positions, types, box, settings)
        except ConfigurationError as exc:
            raise ConfigurationError(f"structural_descriptors: {exc}") from None
    perimeters = _per_particle(perimeters, n, "perimeters")

    # Cell list on wrapped positions; particles sorted by cell so that each cell's members are contiguous.
    wrapped = np.mod(positions, box)
    wrapped[wrapped >= box] = 0.0  # np.mod can round up to exactly box
    n_cells = max(1, int(box // CELL_SIZE))
    cell_size = box / n_cells
    cxy = np.minimum((wrapped / cell_size).astype(np.int64), n_cells - 1)
    cell_id = cxy[:, 0] * n_cells + cxy[:, 1]
    order = np.argsort(cell_id, kind="stable")
    cell_start = np.searchsorted(cell_id[order], np.arange(n_cells * n_cells + 1)).astype(np.int64)

    l_values = np.asarray(l_grid)
    l_is_zero = l_values == 0.0
    inv_l = np.where(l_is_zero, 0.0, 1.0 / np.where(l_is_zero, 1.0, l_values))
    exp_order, square_of = _exp_plan(l_values)
    out = np.empty((n, len(QUANTITIES), len(CHANNELS), len(l_grid)), dtype=np.float64)
    _coarse_grain_kernel(
        np.ascontiguousarray(wrapped[order]), np.ascontiguousarray(types[order]),
        np.ascontiguousarray(energies[order]), np.ascontiguousarray(perimeters[order]),
        np.ascontiguousarray(cxy[order, 0]), np.ascontiguousarray(cxy[order, 1]), cell_start,
        n_cells, box, _cell_offsets(cutoff, cell_size), inv_l, l_is_zero, exp_order, square_of, cutoff * cutoff,
        order.astype(np.int64), out,
    )
    return out.reshape(n, -1)


# ------------------------------------------------------------------------------------------------ scaler
#: Random projections used to find candidate duplicate columns (each candidate is then verified exactly).
_FINGERPRINTS = 2


@dataclass(frozen=True)
class KeptColumns:
    """Which descriptor columns reach the network, and why the others do not (:func:`kept_columns`).

    Attributes:
        kept: (F,) bool, the columns the scaler keeps, in input order.
        constant: (F,) bool, dropped as constant over the training particles.
        duplicate_of: (F,) int, index of the earlier kept column a dropped duplicate repeats, -1 otherwise.
    """

    kept: np.ndarray
    constant: np.ndarray
    duplicate_of: np.ndarray

    def summary(self, names=None) -> str:
        """One line: counts, the constant columns and each duplicate with the column it repeats."""
        names = [f"column_{k}" for k in range(self.kept.size)] if names is None else list(names)
        dups = [f"{names[k]} = {names[j]}" for k, j in enumerate(self.duplicate_of) if j >= 0]
        const = [names[k] for k in np.flatnonzero(self.constant)]
        return (f"{int(self.kept.sum())} of {self.kept.size} descriptor columns kept; {len(const)} constant "
                f"({', '.join(const) or 'none'}); {len(dups)} duplicate ({', '.join(dups) or 'none'})")


def kept_columns(data, zero_std_rtol: float, mean=None, std=None) -> KeptColumns:
    """The kept-column rule of the descriptors, in one place (the scaler applies it to its training data).

    Over the rows of ``data`` (the training particles, i.e. the type-0 particles of the training structures):

    1. constant: a column with std <= zero_std_rtol * max(1, |mean|) carries no information and is dropped.
       On type-0 particles these are the 12 L = 0 columns density_{t0,t1,t2,all}_L0 (1, 0, 0, 1),
       energy_{t1,t2}_L0 and perimeter_{t1,t2}_L0 (0: no other-type particle at L = 0) and energy_var_*_L0
       (0 by definition).
    2. duplicate: a remaining column whose standardised values (x - mean) / std equal those of an earlier kept
       column to within zero_std_rtol on every row is the same network input twice and is dropped; the earlier
       one (in ``descriptor_names`` order) is kept. On type-0 particles: energy_all_L0 = energy_t0_L0 and
       perimeter_all_L0 = perimeter_t0_L0 (at L = 0 both channels hold the particle itself).

    So the paper's grid gives 176 - 12 - 2 = 162 network inputs on type-0 particles (171 on all particles, where
    only density_all_L0 and the four energy_var_*_L0 are constant). The paper states M_S = 172 (4 M_S = 688
    attention parameters); no rule found reproduces 172 (glassmlp-facts.md section 5).

    Args:
        data: (M, F) float64 descriptor rows.
        zero_std_rtol: the tolerance of both rules (``scaler.zero_std_rtol`` in ``conf/descriptors``).
        mean, std: (F,) column statistics of ``data`` when already computed.

    Returns:
        KeptColumns.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"kept_columns: need (M >= 2, F) rows, got shape {data.shape}")
    mean = data.mean(axis=0) if mean is None else np.asarray(mean, dtype=np.float64)
    std = data.std(axis=0) if std is None else np.asarray(std, dtype=np.float64)
    constant = ~(std > zero_std_rtol * np.maximum(1.0, np.abs(mean)))
    duplicate_of = np.full(data.shape[1], -1, dtype=np.int64)
    varying = np.flatnonzero(~constant)
    if varying.size > 1:
        # fingerprints r . z_k of every standardised column (no standardised copy of the data is made); equal
        # columns have equal fingerprints up to rounding, distinct ones differ by O(sqrt(M))
        r = np.random.default_rng(0).standard_normal((_FINGERPRINTS, data.shape[0]))
        prints = (r @ data[:, varying] - r.sum(axis=1)[:, None] * mean[varying]) / std[varying]
        slack = 1e-6 * math.sqrt(data.shape[0])
        kept_so_far: list[int] = []
        for a, k in enumerate(varying):
            for b in kept_so_far:
                j = varying[b]
                if np.all(np.abs(prints[:, a] - prints[:, b]) <= slack):
                    zk = (data[:, k] - mean[k]) / std[k]
                    zj = (data[:, j] - mean[j]) / std[j]
                    if np.max(np.abs(zk - zj)) <= zero_std_rtol:
                        duplicate_of[k] = j
                        break
            if duplicate_of[k] < 0:
                kept_so_far.append(a)
    return KeptColumns(kept=~constant & (duplicate_of < 0), constant=constant, duplicate_of=duplicate_of)


class DescriptorScaler:
    """Standardise descriptor columns with statistics of the training structures only.

    ``fit`` computes each column's mean and standard deviation over all particles of the training
    structures and applies the kept-column rule :func:`kept_columns` (constant columns and exact duplicates
    are dropped; one INFO log line says which). ``transform`` returns (X[:, kept] - mean) / std.
    ``to_dict`` / ``from_dict`` (and ``save`` / ``load`` as .npz) carry the statistics with a trained model.

    Attributes (after fit):
        names: (F,) column names of the input.
        mean, std: (F,) statistics of every input column.
        kept: (F,) bool, columns that ``transform`` keeps.
        duplicate_of: (F,) int, for a dropped duplicate the earlier column it repeats, else -1 (all -1 for a
            scaler saved before the duplicate rule).
        settings_hash: hash of the descriptor settings and code the columns were computed with
            (``tglassmlp.data.structures.descriptor_settings_hash``), or None when not recorded (older scalers):
            a network must be fed descriptors made the same way, which predict.py checks with it.
    """

    def __init__(self, names=None, zero_std_rtol: float | None = None, settings_hash: str | None = None):
        self.names = None if names is None else [str(x) for x in names]
        self.settings_hash = None if not settings_hash else str(settings_hash)
        if zero_std_rtol is None:
            zero_std_rtol = load_descriptor_settings().zero_std_rtol
        if not (math.isfinite(zero_std_rtol) and zero_std_rtol >= 0):
            raise ValueError(f"DescriptorScaler: zero_std_rtol must be >= 0, got {zero_std_rtol}")
        self.zero_std_rtol = float(zero_std_rtol)
        self.mean = self.std = self.kept = self.duplicate_of = None

    # -------------------------------------------------------------- fitting
    def fit(self, training):
        """Fit on one (N, F) array or a sequence of (N_k, F) arrays (the training structures)."""
        blocks = [training] if isinstance(training, np.ndarray) and training.ndim == 2 else list(training)
        if not blocks:
            raise ValueError("DescriptorScaler.fit: no training structures given")
        blocks = [self._check(b, f"training structure {k}", n_features=None) for k, b in enumerate(blocks)]
        widths = {b.shape[1] for b in blocks}
        if len(widths) != 1:
            raise ValueError(f"DescriptorScaler.fit: training structures have different column counts {sorted(widths)}")
        width = widths.pop()
        if self.names is not None and len(self.names) != width:
            raise ValueError(f"DescriptorScaler.fit: {width} columns but {len(self.names)} names")
        data = np.concatenate(blocks, axis=0)
        if data.shape[0] < 2:
            raise ValueError("DescriptorScaler.fit: need at least 2 particles to estimate a spread")
        self.mean = data.mean(axis=0)
        self.std = data.std(axis=0)
        rule = kept_columns(data, self.zero_std_rtol, mean=self.mean, std=self.std)
        self.kept = rule.kept
        self.duplicate_of = rule.duplicate_of
        if self.names is None:
            self.names = [f"column_{k}" for k in range(width)]
        log.info("descriptor scaler (%d training particles): %s", data.shape[0], rule.summary(self.names))
        return self

    def transform(self, descriptors) -> np.ndarray:
        """(N, F) descriptors -> (N, n_kept) standardised float64 columns."""
        self._require_fit("transform")
        x = self._check(descriptors, "transform input", n_features=self.mean.shape[0])
        return (x[:, self.kept] - self.mean[self.kept]) / self.std[self.kept]

    def fit_transform(self, training) -> np.ndarray:
        self.fit(training)
        blocks = [training] if isinstance(training, np.ndarray) and training.ndim == 2 else list(training)
        return self.transform(np.concatenate([np.asarray(b, dtype=np.float64) for b in blocks], axis=0))

    @property
    def kept_names(self) -> list[str]:
        self._require_fit("kept_names")
        return [name for name, keep in zip(self.names, self.kept) if keep]

    @property
    def n_kept(self) -> int:
        self._require_fit("n_kept")
        return int(self.kept.sum())

    # -------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        """Plain arrays (numpy, no objects) that ``from_dict`` restores; suitable for np.savez or a checkpoint."""
        self._require_fit("to_dict")
        return {
            "names": np.asarray(self.names, dtype=str),
            "mean": self.mean.copy(),
            "std": self.std.copy(),
            "kept": self.kept.copy(),
            "duplicate_of": self.duplicate_of.copy(),
            "zero_std_rtol": np.float64(self.zero_std_rtol),
            "settings_hash": np.asarray(self.settings_hash or "", dtype=str),
        }

    @classmethod
    def from_dict(cls, state) -> "DescriptorScaler":
        missing = [k for k in ("names", "mean", "std", "kept") if k not in state]
        if missing:
            raise KeyError(f"DescriptorScaler.from_dict: missing keys {missing}")
        scaler = cls(names=[str(x) for x in np.asarray(state["names"])],
                     zero_std_rtol=float(state.get("zero_std_rtol", 0.0)),
                     settings_hash=str(np.asarray(state["settings_hash"])) if "settings_hash" in state else None)
        scaler.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        scaler.std = np.asarray(state["std"], dtype=np.float64).copy()
        scaler.kept = np.asarray(state["kept"], dtype=bool).copy()
        # scalers saved before the duplicate rule: ``kept`` alone already says what transform keeps
        scaler.duplicate_of = (np.asarray(state["duplicate_of"], dtype=np.int64).copy() if "duplicate_of" in state
                               else np.full(scaler.kept.shape[0], -1, dtype=np.int64))
        shapes = {len(scaler.names), scaler.mean.shape[0], scaler.std.shape[0], scaler.kept.shape[0],
                  scaler.duplicate_of.shape[0]}
        if len(shapes) != 1:
            raise ValueError("DescriptorScaler.from_dict: names, mean, std, kept and duplicate_of have different "
                             "lengths")
        return scaler

    def save(self, path) -> Path:
        path = Path(path)
        np.savez(path, **self.to_dict())
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path) -> "DescriptorScaler":
        with np.load(Path(path), allow_pickle=False) as data:
            return cls.from_dict({k: data[k] for k in data.files})

    # -------------------------------------------------------------- helpers
    def _require_fit(self, what: str):
        if self.mean is None:
            raise RuntimeError(f"DescriptorScaler.{what}: call fit (or load) first")

    @staticmethod
    def _check(x, label: str, n_features) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"DescriptorScaler: {label} must be 2D (particles, columns), got shape {x.shape}")
        if n_features is not None and x.shape[1] != n_features:
            raise ValueError(f"DescriptorScaler: {label} has {x.shape[1]} columns, the scaler was fit on {n_features}")
        if not np.all(np.isfinite(x)):
            rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise ValueError(f"DescriptorScaler: {label} has non-finite values in {rows.size} row(s) (first {rows[0]})")
        return x

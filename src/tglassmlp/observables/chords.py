"""Average chord length of mobile regions (paper Sec. V B, after Scalliet, Guiselin, Berthier PRX 12, 041028
(2022), Sec. VI D), with the paper's median threshold.

For one structure at one time:

1. Median threshold: with m the median of the propensities c_i of the analysed particles, a particle is
   active, a_i = 0, if c_i < m, and passive, a_i = 1, otherwise.
2. Lattice: the square box is cut into n x n square cells, n = round(L_box / cell_size); the site value a is
   the mean a_i of the particles in the cell. A site with a < 0.5 is mobile.
3. Chords: maximal runs of adjacent mobile sites along every row and every column of the periodic lattice
   (a run that crosses the box edge is one chord; a row or column that is mobile throughout is one chord of
   length L_box). The chord length is the number of sites times the cell side, in sigma.
4. <xi_chord> is the mean over all chords of rows and columns.

Empty cells (no particle inside; common when only one particle type is analysed) take the mean a_i of the
particles in their 3 x 3 block of cells; a cell whose block is empty too counts as not mobile. The paper does
not give its lattice spacing: ``cell_size`` is a parameter (the result scales with it at short lengths).
"""

from __future__ import annotations

import math

import numpy as np


def active_by_median(propensity) -> np.ndarray:
    """a_i of the median threshold: 0 (active) where c_i < median(c), else 1. (N,) float array."""
    c = np.asarray(propensity, dtype=np.float64)
    return (c >= np.median(c)).astype(np.float64)


def periodic_run_lengths(mask) -> tuple[np.ndarray, np.ndarray]:
    """Lengths (in sites) of the runs of True along the rows of a periodic 2D boolean array.

    Returns:
        (lengths (n_runs,) int, row index of each run (n_runs,) int). A row that is True throughout gives
        one run of the full row length.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2D, got shape {mask.shape}")
    lengths, rows = [], []
    n = mask.shape[1]
    for r, row in enumerate(mask):
        if row.all():
            lengths.append(n)
            rows.append(r)
            continue
        # rotate so that the row starts on a False site: no run crosses the array end any more
        start = int(np.argmin(row))
        rolled = np.concatenate([[False], np.roll(row, -start), [False]]).astype(np.int8)
        edges = np.diff(rolled)
        begins, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths.extend((ends - begins).tolist())
        rows.extend([r] * len(begins))
    return np.asarray(lengths, dtype=np.int64), np.asarray(rows, dtype=np.int64)


class ChordLength:
    """Average chord length <xi_chord> of mobile lattice regions (module docstring).

    Args:
        cell_size: target side of a lattice cell [sigma]; the actual side is L_box / round(L_box / cell_size).
        threshold: 'median' (the paper's a_i of Sec. V B) or 'value' (sites from the propensity itself,
            mobile where the mean propensity of the cell is below ``value``: the definition of PRX 12, 041028).
        value: the threshold for ``threshold='value'`` (PRX 12, 041028: 0.5).

    After :meth:`compute`: ``mean_chord`` [sigma], ``chords_x``/``chords_y`` (lengths of the chords along rows
    (x direction) and columns (y direction) [sigma]), ``mobile`` (n, n) lattice, ``lattice_spacing`` [sigma].
    """

    def __init__(self, cell_size: float = 2.0, threshold: str = "median", value: float = 0.5):
        if not (math.isfinite(cell_size) and cell_size > 0):
            raise ValueError(f"cell_size must be a positive length, got {cell_size}")
        if threshold not in ("median", "value"):
            raise ValueError(f"threshold must be 'median' or 'value', got {threshold!r}")
        self.cell_size = float(cell_size)
        self.threshold = threshold
        self.value = float(value)

    def compute(self, positions, propensity, box: float) -> "ChordLength":
        """Chords of one structure: positions (N, 2) [sigma], propensity (N,), square box side [sigma]."""
        pos = np.asarray(positions, dtype=np.float64)
        c = np.asarray(propensity, dtype=np.float64)
        box = float(box)
        if pos.ndim != 2 or pos.shape[1] != 2 or c.shape != (pos.shape[0],):
            raise ValueError(f"positions must be (N, 2) and propensity (N,), got {pos.shape} and {c.shape}")
        if not (math.isfinite(box) and box > 0):
            raise ValueError(f"box must be a positive length, got {box}")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(c))):
            raise ValueError("positions or propensity contain NaN or inf")
        n = max(1, int(round(box / self.cell_size)))
        spacing = box / n
        if self.threshold == "median":
            a, cut = active_by_median(c), 0.5
        else:
            a, cut = c, self.value
        cell = np.floor(np.mod(pos, box) / spacing).astype(np.int64) % n
        flat = cell[:, 0] * n + cell[:, 1]  # (x index, y index): rows of the lattice run along y
        total = np.bincount(flat, weights=a, minlength=n * n).reshape(n, n)
        count = np.bincount(flat, minlength=n * n).reshape(n, n).astype(np.float64)
        site = np.full((n, n), np.inf)
        filled = count > 0
        site[filled] = total[filled] / count[filled]
        if not filled.all():
            block_total = sum(np.roll(total, (dx, dy), axis=(0, 1)) for dx in (-1, 0, 1) for dy in (-1, 0, 1))
            block_count = sum(np.roll(count, (dx, dy), axis=(0, 1)) for dx in (-1, 0, 1) for dy in (-1, 0, 1))
            fill = ~filled & (block_count > 0)
            site[fill] = block_total[fill] / block_count[fill]
        mobile = site < cut
        # axis 0 of `mobile` is x: a chord "along x" runs over x at fixed y, i.e. along the columns of `mobile`
        lx, _ = periodic_run_lengths(mobile.T)
        ly, _ = periodic_run_lengths(mobile)
        self._chords_x = lx * spacing
        self._chords_y = ly * spacing
        self._mobile = mobile
        self._spacing = spacing
        return self

    @property
    def chords_x(self) -> np.ndarray:
        """Lengths of the chords along x [sigma]."""
        return self._chords_x

    @property
    def chords_y(self) -> np.ndarray:
        """Lengths of the chords along y [sigma]."""
        return self._chords_y

    @property
    def chords(self) -> np.ndarray:
        """All chord lengths, x then y [sigma]."""
        return np.concatenate([self._chords_x, self._chords_y])

    @property
    def mean_chord(self) -> float:
        """<xi_chord>: mean chord length over rows and columns [sigma] (NaN without any mobile site)."""
        chords = self.chords
        return float(chords.mean()) if chords.size else math.nan

    @property
    def mobile(self) -> np.ndarray:
        """(n, n) bool lattice of mobile sites, indexed [x cell, y cell]."""
        return self._mobile

    @property
    def lattice_spacing(self) -> float:
        """Side of a lattice cell [sigma]."""
        return self._spacing

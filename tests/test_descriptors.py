"""Structural descriptors: definitions (facts section 5), periodic images, invariances, radical and plain Voronoi
perimeters, the kept-column rule and the scaler."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from tglassmlp.observables import (
    CHANNELS,
    QUANTITIES,
    DescriptorScaler,
    DescriptorSettings,
    cell_perimeters,
    descriptor_names,
    kept_columns,
    load_descriptor_settings,
    structural_descriptors,
    voronoi_perimeters,
)
from tglassmlp.observables.tessellation import radical_voronoi_perimeters
from tglassmlp.physics import ConfigurationError, particle_energies

PAPER_L_GRID = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0)
# float64 sums of ~1e3 terms, compared with an independent float64 brute force
EXACT_RTOL = 1e-10
EXACT_ATOL = 1e-12
# freud's Voronoi runs in float32: perimeters move by ~1e-7 relative under a translation of all points
FREUD_RTOL = 1e-5
# the radical tessellation is float64 throughout (power centres solved relative to a triangle corner)
RADICAL_RTOL = 1e-10
GLASSMLP_RADII = (0.5, 0.44, 0.47)
# lattice sum vs continuum integral of exp(-r/L) at spacing a = 0.5 (measured <= 0.5% for 1 <= L <= 9)
CONTINUUM_RTOL = 0.01


def column(names, name):
    return names.index(name)


def continuum_density(number_density, L, cutoff):
    """rho * integral_0^rc exp(-r/L) 2 pi r dr for a uniform field."""
    x = cutoff / L
    return number_density * 2.0 * math.pi * L**2 * (1.0 - math.exp(-x) * (1.0 + x))


def brute_force(positions, types, box, l_grid, cutoff, energies, perimeters):
    """Direct sums over an explicitly replicated box (every image within the cutoff), two-pass variance."""
    shells = int(math.ceil(cutoff / box)) + 1
    shifts = np.array([(a, b) for a in range(-shells, shells + 1) for b in range(-shells, shells + 1)]) * box
    images = (positions[None, :, :] + shifts[:, None, :]).reshape(-1, 2)
    img_types = np.tile(types, len(shifts))
    img_e = np.tile(energies, len(shifts))
    img_p = np.tile(perimeters, len(shifts))
    n = len(positions)
    out = np.zeros((n, 4, 4, len(l_grid)))
    for i in range(n):
        r = np.linalg.norm(images - positions[i], axis=1)
        near = r < cutoff
        for li, L in enumerate(l_grid):
            w = (r == 0).astype(float) if L == 0 else np.exp(-r / L)
            for c in range(4):
                sel = near & ((img_types == c) if c < 3 else True)
                rho = w[sel].sum()
                out[i, 0, c, li] = rho
                if rho > 0:
                    mean_e = (w[sel] * img_e[sel]).sum() / rho
                    out[i, 1, c, li] = mean_e
                    out[i, 2, c, li] = (w[sel] * img_p[sel]).sum() / rho
                    out[i, 3, c, li] = (w[sel] * (img_e[sel] - mean_e) ** 2).sum() / rho
    return out.reshape(n, -1)


@pytest.fixture(scope="module")
def glassbench_descriptors(glassbench):
    _, inherent, types, box = glassbench
    return structural_descriptors(inherent, types, box)


# ------------------------------------------------------------------------------------------------ names, config
def test_names_count_pattern_and_order():
    names = descriptor_names()
    assert len(names) == 176 == len(set(names))
    pattern = re.compile(r"^(density|energy|perimeter|energy_var)_(t0|t1|t2|all)_L\d+(\.\d+)?$")
    assert all(pattern.match(n) for n in names)
    assert "energy_all_L2" in names and "density_t1_L1.5" in names and "energy_var_t2_L0" in names
    # quantity-major, then channel, then L: the (N, 4, 4, n_L) reshape of the columns
    k = names.index("perimeter_t1_L2.5")
    assert k == np.ravel_multi_index((QUANTITIES.index("perimeter"), CHANNELS.index("t1"), PAPER_L_GRID.index(2.5)),
                                     (4, 4, 11))
    assert descriptor_names([0, 3]) == [f"{q}_{c}_L{L}" for q in QUANTITIES for c in CHANNELS for L in (0, 3)]


def test_config_is_the_paper_setting():
    settings = load_descriptor_settings()
    assert settings.l_grid == PAPER_L_GRID
    assert settings.cutoff == 20.0 and settings.weight == "exponential" and settings.perimeter_method == "voronoi"
    assert settings.perimeter_weighted and settings.perimeter_radii == GLASSMLP_RADII
    assert settings.n_descriptors == 176
    with pytest.raises(ValueError, match="weight 'gaussian'"):
        DescriptorSettings(l_grid=(0.0, 1.0), cutoff=20.0, weight="gaussian")
    with pytest.raises(ValueError, match="repeated"):
        DescriptorSettings(l_grid=(1.0, 1.0), cutoff=20.0)
    with pytest.raises(ValueError, match="perimeter.radii must be 3"):
        DescriptorSettings(l_grid=(0.0, 1.0), cutoff=20.0, perimeter_radii=(0.5, 0.44))
    with pytest.raises(ValueError, match="perimeter.radii"):
        DescriptorSettings(l_grid=(0.0, 1.0), cutoff=20.0, perimeter_radii=(0.5, -0.44, 0.47))
    with pytest.raises(ValueError, match="perimeter.weighted"):
        DescriptorSettings(l_grid=(0.0, 1.0), cutoff=20.0, perimeter_weighted="yes")


# ------------------------------------------------------------------------------------------------ definitions
def test_l0_is_the_particle_itself(glassbench, glassbench_descriptors):
    _, inherent, types, box = glassbench
    x = glassbench_descriptors
    names = descriptor_names()
    energies = particle_energies(inherent, types, box)
    perimeters = radical_voronoi_perimeters(inherent, box, np.array(GLASSMLP_RADII)[types])
    assert x.shape == (1290, 176) and x.dtype == np.float64 and np.all(np.isfinite(x))
    for t in range(3):
        own = types == t
        assert np.array_equal(x[:, column(names, f"density_t{t}_L0")], own.astype(float))
        np.testing.assert_allclose(x[:, column(names, f"energy_t{t}_L0")], np.where(own, energies, 0.0), rtol=1e-12)
        np.testing.assert_allclose(x[:, column(names, f"perimeter_t{t}_L0")], np.where(own, perimeters, 0.0),
                                   rtol=1e-12)
    assert np.all(x[:, column(names, "density_all_L0")] == 1.0)
    np.testing.assert_allclose(x[:, column(names, "energy_all_L0")], energies, rtol=1e-12)
    np.testing.assert_allclose(x[:, column(names, "perimeter_all_L0")], perimeters, rtol=1e-12)
    for c in CHANNELS:
        assert np.all(x[:, column(names, f"energy_var_{c}_L0")] == 0.0)


def test_uniform_lattice_density_matches_continuum_integral():
    a, n_side, cutoff = 0.5, 24, 20.0  # box 12 < cutoff: ~170 periodic images of each point count
    box = a * n_side
    grid = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij"), -1).reshape(-1, 2)
    positions = (grid + 0.5) * a
    n = len(positions)
    l_grid = (1.0, 2.0, 3.0, 5.0, 9.0)
    x = structural_descriptors(positions, np.arange(n) % 3, box, l_grid=l_grid, cutoff=cutoff,
                               energies=np.full(n, -2.5), perimeters=np.full(n, 2.0))
    names = descriptor_names(l_grid)
    for L in l_grid:
        rho = x[:, column(names, f"density_all_L{L:g}")]
        np.testing.assert_allclose(rho, continuum_density(1.0 / a**2, L, cutoff), rtol=CONTINUUM_RTOL)
        # constant fields: averages are the constant, the variance vanishes
        np.testing.assert_allclose(x[:, column(names, f"energy_all_L{L:g}")], -2.5, rtol=1e-12)
        np.testing.assert_allclose(x[:, column(names, f"perimeter_t1_L{L:g}")], 2.0, rtol=1e-12)
        assert np.all(np.abs(x[:, column(names, f"energy_var_all_L{L:g}")]) < 1e-12)


def test_glassbench_mean_density_matches_number_density_integral(glassbench, glassbench_descriptors):
    _, _, _, box = glassbench
    names = descriptor_names()
    for L in (5.0, 7.0, 9.0):  # long L: the pair structure at r ~ 1 hardly matters
        mean = glassbench_descriptors[:, column(names, f"density_all_L{L:g}")].mean()
        assert mean == pytest.approx(continuum_density(1290 / box**2, L, 20.0), rel=0.01)


@pytest.mark.parametrize("cutoff", [3.0, 10.0, 16.0])  # < box/2, > box, > 2 boxes (box = 7)
def test_periodic_images_equal_brute_force_over_replicated_box(small_configuration, cutoff):
    positions, types, box = small_configuration
    rng = np.random.default_rng(11)
    energies = rng.normal(-3.0, 0.5, len(positions))
    perimeters = rng.uniform(3.0, 4.0, len(positions))
    l_grid = (0.0, 0.7, 1.0, 2.0, 4.0, 9.0)
    got = structural_descriptors(positions, types, box, l_grid=l_grid, cutoff=cutoff, energies=energies,
                                 perimeters=perimeters)
    want = brute_force(positions, types, box, l_grid, cutoff, energies, perimeters)
    np.testing.assert_allclose(got, want, rtol=EXACT_RTOL, atol=EXACT_ATOL)


def test_zero_density_channel_gives_zero_averages():
    # two type-0 particles far apart, short cutoff: channels t1, t2 are empty
    positions = np.array([[1.0, 1.0], [5.0, 5.0]])
    x = structural_descriptors(positions, [0, 0], 10.0, l_grid=(0.0, 1.0), cutoff=2.0, energies=[-1.0, -2.0],
                               perimeters=[3.0, 3.5])
    names = descriptor_names((0.0, 1.0))
    for q in QUANTITIES:
        for c in ("t1", "t2"):
            assert np.all(x[:, column(names, f"{q}_{c}_L1")] == 0.0)
    np.testing.assert_allclose(x[:, column(names, "energy_t0_L1")], [-1.0, -2.0])


# ------------------------------------------------------------------------------------------------ invariances
def test_translation_invariance(glassbench, glassbench_descriptors):
    _, inherent, types, box = glassbench
    moved = structural_descriptors(inherent + np.array([3.3, -7.1]), types, box)
    names = descriptor_names()
    perimeter_cols = np.array([n.startswith("perimeter") for n in names])
    np.testing.assert_allclose(moved[:, ~perimeter_cols], glassbench_descriptors[:, ~perimeter_cols],
                               rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(moved[:, perimeter_cols], glassbench_descriptors[:, perimeter_cols], rtol=1e-9)


def test_permutation_equivariance(small_configuration):
    positions, types, box = small_configuration
    perm = np.random.default_rng(5).permutation(len(positions))
    x = structural_descriptors(positions, types, box, cutoff=20.0)
    y = structural_descriptors(positions[perm], types[perm], box, cutoff=20.0)
    np.testing.assert_allclose(y, x[perm], rtol=1e-9, atol=1e-10)


# ------------------------------------------------------------------------------------------------ Voronoi
def test_voronoi_perimeter_of_hexagonal_lattice():
    a, nx, ny = 1.1, 10, 12  # ny even: the lattice tiles the rectangular periodic box exactly
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    positions = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2) + 0.1
    perimeters = voronoi_perimeters(positions, (nx * a, ny * a * math.sqrt(3) / 2))
    # the Voronoi cell is a regular hexagon of side a / sqrt(3)
    np.testing.assert_allclose(perimeters, 6 * a / math.sqrt(3), rtol=FREUD_RTOL)


def hexagonal_lattice(a=1.1, nx=10, ny=12):
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    positions = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2) + 0.1
    return positions, (nx * a, ny * a * math.sqrt(3) / 2)


@pytest.mark.parametrize("radius", [0.0, 0.5, 3.0])
def test_radical_perimeter_of_hexagonal_lattice(radius):
    # equal radii: every power cell is the Voronoi cell, a regular hexagon of side a / sqrt(3), whatever the
    # common radius (power distances shift by the same r^2); 3.0 > the spacing tests a large common weight
    a = 1.1
    positions, sides = hexagonal_lattice(a)
    perimeters = radical_voronoi_perimeters(positions, sides, np.full(len(positions), radius))
    np.testing.assert_allclose(perimeters, 6 * a / math.sqrt(3), rtol=RADICAL_RTOL)


def checkerboard(a, n_side, r_big, r_small):
    i, j = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    positions = np.stack([i, j], -1).reshape(-1, 2) * a + 0.3
    big = ((i + j) % 2 == 0).ravel()
    return positions, n_side * a, np.where(big, r_big, r_small), big


@pytest.mark.parametrize("r_big, r_small", [(0.5, 0.3), (0.5, 0.44), (0.47, 0.44)])
def test_radical_perimeters_of_two_size_checkerboard_by_hand(r_big, r_small):
    """Square lattice (spacing a) with alternating radii. The radical axis of a big particle at 0 and a small
    one at a lies at x_b = (a^2 + r_big^2 - r_small^2) / (2a) (equal power distances). x_b > a/2, so the
    big cell is the square |x|, |y| < x_b cut by the bisectors |x| + |y| = a of its four big diagonal
    neighbours: an octagon with 4 sides 2 (a - x_b) and 4 cut sides sqrt(2) (2 x_b - a). The small cell is
    the square of half-width a - x_b (its corners touch the cuts). Areas add up to 2 a^2 per pair."""
    a = 1.05
    positions, box, radii, big = checkerboard(a, 8, r_big, r_small)
    x_b = (a * a + r_big**2 - r_small**2) / (2 * a)
    assert a / 2 < x_b < a
    want_big = 8 * (a - x_b) + 4 * math.sqrt(2) * (2 * x_b - a)
    want_small = 8 * (a - x_b)
    perimeters = radical_voronoi_perimeters(positions, box, radii)
    np.testing.assert_allclose(perimeters[big], want_big, rtol=RADICAL_RTOL)
    np.testing.assert_allclose(perimeters[~big], want_small, rtol=RADICAL_RTOL)
    # swapping which sublattice is big swaps the cells; the plain tessellation gives squares of side a
    swapped = radical_voronoi_perimeters(positions, box, np.where(big, r_small, r_big))
    np.testing.assert_allclose(swapped[~big], want_big, rtol=RADICAL_RTOL)


def scipy_voronoi_perimeters(positions, box):
    """Plain Voronoi perimeters from scipy's Voronoi (qvoronoi, float64) of the box and its 8 neighbours."""
    from scipy.spatial import Voronoi

    n = len(positions)
    wrapped = np.mod(positions, box)
    shifts = np.array([(0, 0)] + [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)])
    vor = Voronoi((wrapped[None] + shifts[:, None] * box).reshape(-1, 2))
    perimeters = np.zeros(n)
    for (i, j), ridge in zip(vor.ridge_points, vor.ridge_vertices):
        length = np.linalg.norm(vor.vertices[ridge[0]] - vor.vertices[ridge[1]]) if -1 not in ridge else np.inf
        for k in (i, j):
            if k < n:
                perimeters[k] += length
    return perimeters


def test_equal_radii_reduce_to_plain_voronoi(glassbench):
    _, inherent, types, box = glassbench
    radical = radical_voronoi_perimeters(inherent, box, np.full(len(inherent), 0.47))
    # float64 reference (independent Qhull call: qvoronoi on replicated points, ridges summed here)
    np.testing.assert_allclose(radical, scipy_voronoi_perimeters(inherent, box), rtol=RADICAL_RTOL)
    # freud (voro++, float32): agreement to its single precision only
    np.testing.assert_allclose(radical, voronoi_perimeters(inherent, box), rtol=FREUD_RTOL)
    with pytest.raises(ConfigurationError, match="types must be"):
        cell_perimeters(inherent, np.where(types == 2, 3, types), box)
    # and through the settings: weighted = false is freud's tessellation
    plain = DescriptorSettings(l_grid=(0.0,), cutoff=20.0, perimeter_weighted=False)
    np.testing.assert_array_equal(cell_perimeters(inherent, types, box, plain), voronoi_perimeters(inherent, box))


def test_radical_perimeters_match_voro_plus_plus(glassbench):
    """pyvoro2 wraps Voro++, the program GlassMLP took its radical tessellation from (power mode, periodic)."""
    pv = pytest.importorskip("pyvoro2.planar")
    _, inherent, types, box = glassbench
    radii = np.array(GLASSMLP_RADII)[types]
    cells = pv.compute(np.mod(inherent, box), domain=pv.RectangularCell(bounds=((0, box), (0, box)),
                                                                        periodic=(True, True)),
                       mode="power", radii=radii, output="cells", return_adjacency=False)
    want = np.zeros(len(inherent))
    for cell in cells:
        v = np.asarray(cell["vertices"])
        want[cell["id"]] = sum(np.linalg.norm(v[e["vertices"][0]] - v[e["vertices"][1]]) for e in cell["edges"])
    got = cell_perimeters(inherent, types, box)  # the default settings: radical, GlassMLP radii
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # the weights matter: the plain cells differ by several percent
    assert np.max(np.abs(got / voronoi_perimeters(inherent, box) - 1)) > 0.02


def test_radical_perimeters_periodic_images_and_small_boxes(small_configuration):
    positions, types, box = small_configuration  # 40 particles in a 7 x 7 box: images of images are neighbours
    radii = np.array(GLASSMLP_RADII)[types]
    p = radical_voronoi_perimeters(positions, box, radii)
    shifted = radical_voronoi_perimeters(positions + np.array([3.1 * box, -2.7]), box, radii)
    perm = np.random.default_rng(2).permutation(len(positions))
    permuted = radical_voronoi_perimeters(positions[perm], box, radii[perm])
    np.testing.assert_allclose(shifted, p, rtol=RADICAL_RTOL)
    np.testing.assert_allclose(permuted, p[perm], rtol=RADICAL_RTOL)
    # one particle alone in its box: its cell is the box itself (neighbours are its own images)
    np.testing.assert_allclose(radical_voronoi_perimeters([[0.3, 0.9]], 2.5, [0.5]), 4 * 2.5, rtol=RADICAL_RTOL)


def test_radical_perimeters_bad_input():
    positions, sides = hexagonal_lattice()
    n = len(positions)
    with pytest.raises(ConfigurationError, match=r"radii must have shape \(120,\)"):
        radical_voronoi_perimeters(positions, sides, np.ones(n - 1))
    with pytest.raises(ConfigurationError, match="radii must be finite and >= 0"):
        radical_voronoi_perimeters(positions, sides, np.where(np.arange(n) == 4, -0.1, 0.5))
    with pytest.raises(ConfigurationError, match="non-finite positions"):
        radical_voronoi_perimeters(np.where(np.arange(n)[:, None] == 2, np.nan, positions), sides, np.ones(n))
    with pytest.raises(ConfigurationError, match="box must be"):
        radical_voronoi_perimeters(positions, -1.0, np.ones(n))
    # a small particle deep inside a big neighbour's power circle owns no cell
    with pytest.raises(ConfigurationError, match="no radical cell"):
        radical_voronoi_perimeters([[1.0, 1.0], [1.2, 1.0], [3.0, 3.0]], 5.0, [2.0, 0.1, 0.5])


def test_voronoi_perimeters_of_glassbench_are_plausible(glassbench):
    _, inherent, _, box = glassbench
    perimeters = voronoi_perimeters(inherent, box)
    # mean cell area is 1/rho = 0.908 sigma^2; a regular hexagon of that area has perimeter 3.55
    assert perimeters.shape == (1290,) and 3.2 < perimeters.mean() < 3.7


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "change, match",
    [
        (lambda p, t, e: (np.where(np.arange(len(p))[:, None] == 3, np.nan, p), t, e), "not finite"),
        (lambda p, t, e: (np.c_[p, p[:, :1]], t, e), r"shape \(N, 2\)"),
        (lambda p, t, e: (p, np.where(np.arange(len(t)) == 2, 3, t), e), "unknown particle types"),
        (lambda p, t, e: (p, t[:-1], e), "types must have shape"),
        (lambda p, t, e: (p, t, e[:-1]), r"energies must have shape \(40,\)"),
        (lambda p, t, e: (p, t, np.where(np.arange(len(e)) == 1, np.inf, e)), "energies are not finite"),
    ],
)
def test_bad_input_is_rejected(small_configuration, change, match):
    positions, types, box = small_configuration
    energies = np.full(len(positions), -3.0)
    p, t, e = change(positions, types, energies)
    with pytest.raises(ConfigurationError, match=match):
        structural_descriptors(p, t, box, energies=e, perimeters=np.ones(len(positions)), l_grid=(0.0, 1.0),
                               cutoff=3.0)


def test_bad_settings_are_rejected(small_configuration):
    positions, types, box = small_configuration
    with pytest.raises(ValueError, match="l_grid"):
        structural_descriptors(positions, types, box, l_grid=(-1.0, 1.0))
    with pytest.raises(ValueError, match="cutoff"):
        structural_descriptors(positions, types, box, cutoff=0.0)
    with pytest.raises(ConfigurationError, match=r"perimeters must have shape"):
        structural_descriptors(positions, types, box, energies=np.zeros(40), perimeters=np.ones((40, 1)))


# ------------------------------------------------------------------------------------------------ scaler
def test_scaler_fits_training_only_and_drops_constant_columns(glassbench_descriptors, tmp_path):
    x = glassbench_descriptors
    names = descriptor_names()
    train = [x[:500], x[500:900]]
    held_out = x[900:]
    scaler = DescriptorScaler(names=names).fit(train)
    train_all = np.concatenate(train)
    np.testing.assert_allclose(scaler.mean, train_all.mean(axis=0))
    assert not np.allclose(scaler.mean, x.mean(axis=0))  # the held-out rows did not enter
    dropped = sorted(set(names) - set(scaler.kept_names))
    assert dropped == sorted(["density_all_L0", *(f"energy_var_{c}_L0" for c in CHANNELS)])
    assert scaler.n_kept == 171

    z = scaler.transform(train_all)
    assert z.shape == (900, 171)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-9)
    np.testing.assert_allclose(scaler.fit_transform(train), z)

    restored = DescriptorScaler.load(scaler.save(tmp_path / "scaler.npz"))
    assert restored.kept_names == scaler.kept_names
    np.testing.assert_array_equal(restored.transform(held_out), scaler.transform(held_out))
    again = DescriptorScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again.transform(held_out), scaler.transform(held_out))

    with pytest.raises(ValueError, match="176"):
        scaler.transform(held_out[:, :100])
    with pytest.raises(RuntimeError, match="fit"):
        DescriptorScaler().transform(held_out)


def test_kept_column_rule_on_type0_particles(glassbench, glassbench_descriptors, caplog):
    """The network sees type-0 particles: 12 L = 0 columns are constant there and two are exact duplicates."""
    _, _, types, _ = glassbench
    x = glassbench_descriptors[types == 0]
    names = descriptor_names()
    with caplog.at_level("INFO", logger="tglassmlp.observables.descriptors"):
        scaler = DescriptorScaler(names=names).fit(x)
    constant = sorted(["density_t0_L0", "density_t1_L0", "density_t2_L0", "density_all_L0", "energy_t1_L0",
                       "energy_t2_L0", "perimeter_t1_L0", "perimeter_t2_L0",
                       *(f"energy_var_{c}_L0" for c in CHANNELS)])
    dropped = sorted(set(names) - set(scaler.kept_names))
    assert dropped == sorted(constant + ["energy_all_L0", "perimeter_all_L0"])
    assert scaler.n_kept == 176 - 12 - 2 == 162
    # the duplicates are bitwise equal to the kept column they repeat, which is the earlier one
    for dup, orig in (("energy_all_L0", "energy_t0_L0"), ("perimeter_all_L0", "perimeter_t0_L0")):
        assert names[scaler.duplicate_of[names.index(dup)]] == orig
        assert np.array_equal(x[:, names.index(dup)], x[:, names.index(orig)])
    # every kept standardised column differs from every other kept one (no duplicates left)
    z = scaler.transform(x)
    gaps = np.abs(z[:, :, None] - z[:, None, :]).max(axis=0)
    assert gaps[~np.eye(162, dtype=bool)].min() > 1e-6
    # the count is logged once, with the rule's reasons
    lines = [r.getMessage() for r in caplog.records if "descriptor columns kept" in r.getMessage()]
    assert len(lines) == 1 and "162 of 176" in lines[0] and "energy_all_L0 = energy_t0_L0" in lines[0]
    # the rule survives a save / load round trip; a scaler saved before the rule still loads
    state = scaler.to_dict()
    assert np.array_equal(DescriptorScaler.from_dict(state).duplicate_of, scaler.duplicate_of)
    old = {k: v for k, v in state.items() if k != "duplicate_of"}
    np.testing.assert_array_equal(DescriptorScaler.from_dict(old).transform(x), z)


def test_kept_columns_finds_affine_duplicates_and_ignores_near_ones():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(500, 3))
    data = np.column_stack([base, 3.0 * base[:, 1] - 7.0, base[:, 0] + 1e-6 * rng.normal(size=500),
                            np.full(500, 2.5), base[:, 2]])
    rule = kept_columns(data, 1e-9)
    # column 3 is column 1 standardised; column 6 repeats column 2 exactly; column 4 differs by 1e-6 (kept)
    assert rule.duplicate_of.tolist() == [-1, -1, -1, 1, -1, -1, 2]
    assert rule.constant.tolist() == [False] * 5 + [True, False]
    assert rule.kept.tolist() == [True, True, True, False, True, False, False]
    # a sign flip is not a duplicate under this rule (the standardised values differ)
    assert kept_columns(np.column_stack([base[:, 0], -base[:, 0]]), 1e-9).kept.all()
    with pytest.raises(ValueError, match="M >= 2"):
        kept_columns(data[:1], 1e-9)


def test_settings_object_drives_the_descriptors(small_configuration):
    positions, types, box = small_configuration
    energies = np.linspace(-3.5, -2.5, len(positions))
    plain = DescriptorSettings(l_grid=(0.0, 2.0), cutoff=5.0, perimeter_weighted=False)
    radical = DescriptorSettings(l_grid=(0.0, 2.0), cutoff=5.0, perimeter_radii=(0.6, 0.3, 0.45))
    names = descriptor_names(plain.l_grid)
    x_plain = structural_descriptors(positions, types, box, energies=energies, settings=plain)
    x_radical = structural_descriptors(positions, types, box, energies=energies, settings=radical)
    assert x_plain.shape == (40, plain.n_descriptors) == (40, 32)
    k = names.index("perimeter_all_L0")
    np.testing.assert_array_equal(x_plain[:, k], voronoi_perimeters(positions, box))
    np.testing.assert_allclose(x_radical[:, k], radical_voronoi_perimeters(positions, box,
                                                                           np.array([0.6, 0.3, 0.45])[types]),
                               rtol=1e-12)
    # only the perimeter columns depend on the tessellation
    other = np.array([not n.startswith("perimeter") for n in names])
    np.testing.assert_array_equal(x_plain[:, other], x_radical[:, other])
    # explicit l_grid / cutoff arguments take precedence over the settings' values
    x = structural_descriptors(positions, types, box, energies=energies, settings=radical, l_grid=(1.0,))
    assert x.shape == (40, 16)

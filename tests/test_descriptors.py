"""Structural descriptors: definitions (facts section 5), periodic images, invariances, Voronoi, scaler."""

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
    descriptor_names,
    load_descriptor_settings,
    structural_descriptors,
    voronoi_perimeters,
)
from tglassmlp.physics import ConfigurationError, particle_energies

PAPER_L_GRID = (0.0, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 9.0)
# float64 sums of ~1e3 terms, compared with an independent float64 brute force
EXACT_RTOL = 1e-10
EXACT_ATOL = 1e-12
# freud's Voronoi runs in float32: perimeters move by ~1e-7 relative under a translation of all points
FREUD_RTOL = 1e-5
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
    assert settings.n_descriptors == 176
    with pytest.raises(ValueError, match="weight 'gaussian'"):
        DescriptorSettings(l_grid=(0.0, 1.0), cutoff=20.0, weight="gaussian")
    with pytest.raises(ValueError, match="repeated"):
        DescriptorSettings(l_grid=(1.0, 1.0), cutoff=20.0)


# ------------------------------------------------------------------------------------------------ definitions
def test_l0_is_the_particle_itself(glassbench, glassbench_descriptors):
    _, inherent, types, box = glassbench
    x = glassbench_descriptors
    names = descriptor_names()
    energies = particle_energies(inherent, types, box)
    perimeters = voronoi_perimeters(inherent, box)
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
    np.testing.assert_allclose(moved[:, perimeter_cols], glassbench_descriptors[:, perimeter_cols], rtol=FREUD_RTOL)


def test_permutation_equivariance(small_configuration):
    positions, types, box = small_configuration
    perm = np.random.default_rng(5).permutation(len(positions))
    x = structural_descriptors(positions, types, box, cutoff=20.0)
    y = structural_descriptors(positions[perm], types[perm], box, cutoff=20.0)
    np.testing.assert_allclose(y, x[perm], rtol=FREUD_RTOL, atol=1e-10)


# ------------------------------------------------------------------------------------------------ Voronoi
def test_voronoi_perimeter_of_hexagonal_lattice():
    a, nx, ny = 1.1, 10, 12  # ny even: the lattice tiles the rectangular periodic box exactly
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    positions = np.stack([(i + 0.5 * (j % 2)) * a, j * a * math.sqrt(3) / 2], -1).reshape(-1, 2) + 0.1
    perimeters = voronoi_perimeters(positions, (nx * a, ny * a * math.sqrt(3) / 2))
    # the Voronoi cell is a regular hexagon of side a / sqrt(3)
    np.testing.assert_allclose(perimeters, 6 * a / math.sqrt(3), rtol=FREUD_RTOL)


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

"""Bond breaking on hand-made configurations with known answers, and on the GlassBench fixture."""

from __future__ import annotations

import numpy as np
import pytest

from tglassmlp.observables.bond_breaking import bond_breaking, initial_bonds
from tglassmlp.physics import ConfigurationError

BOX = 10.0


def square_lattice(spacing=1.0, n_side=10):
    """Type-0 square lattice: every particle has exactly 4 neighbours within 1.4 (next: sqrt(2) = 1.414)."""
    g = (np.arange(n_side) + 0.5) * spacing
    xy = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    return xy, np.zeros(len(xy), dtype=int), spacing * n_side


def test_lattice_has_four_bonds_and_none_break_without_motion():
    pos, types, box = square_lattice()
    bonds = initial_bonds(pos, types, box)
    assert np.all(bonds.n_initial == 4)  # also across the periodic boundary
    cb = bond_breaking(pos, pos[None], types, box)
    assert cb.shape == (1, len(pos)) and np.all(cb == 1.0)


def test_stretched_bond_breaks_only_past_1_8_sigma():
    pos, types, box = square_lattice()
    k = 55  # an interior particle; its +x neighbour is particle 65
    moved_short, moved_long = pos.copy(), pos.copy()
    moved_short[k, 0] -= 0.79  # distance to +x neighbour 1.79 < 1.8: survives
    moved_long[k, 0] -= 0.81   # 1.81 > 1.8: that bond breaks
    cb = bond_breaking(pos, np.stack([moved_short, moved_long]), types, box)
    # in run 1 particle k loses exactly 1 of 4 bonds and so does its former +x neighbour; the -x neighbour
    # is now 0.19 away, still bonded; the +-y neighbours are at sqrt(1 + 0.81^2) = 1.29 < 1.8
    assert cb[0, k] == 1.0
    assert cb[1, k] == pytest.approx(0.75)
    assert cb[1, k + 10] == pytest.approx(0.75)
    assert np.sum(cb[1] < 1) == 2


def test_bond_across_periodic_boundary_and_unwrapped_positions():
    pos, types, box = square_lattice()
    # particle 5 sits at x = 0.5 with its -x neighbour (index 95) at x = 9.5 through the boundary
    moved = pos.copy()
    moved[5, 0] += 0.5  # distance to particle 95 (through the boundary) becomes 1.5: survives
    cb = bond_breaking(pos, moved[None], types, box)
    assert cb[0, 5] == 1.0
    moved[5, 0] += 0.4  # 1.9: breaks
    cb = bond_breaking(pos, moved[None], types, box)
    assert cb[0, 5] == pytest.approx(0.75) and cb[0, 95] == pytest.approx(0.75)
    # an unwrapped trajectory (whole-box shifts per particle) gives the same answer
    shifted = moved + box * np.random.default_rng(0).integers(-2, 3, moved.shape)
    np.testing.assert_array_equal(bond_breaking(pos, shifted[None], types, box), cb)


def test_radii_scale_with_sigma_ab():
    # two type-1 particles (sigma_11 = 0.88): bonded below 1.4 * 0.88 = 1.232, surviving below 1.584
    pos = np.array([[1.0, 1.0], [2.2, 1.0], [7.0, 7.0], [8.2, 7.0]])
    types = np.array([1, 1, 1, 1])
    moved = pos.copy()
    moved[1, 0] = 2.0 + 0.58  # 1.58 < 1.584
    moved[3, 0] = 7.0 + 1.59  # 1.59 > 1.584
    cb = bond_breaking(pos, moved[None], types, BOX)
    np.testing.assert_array_equal(cb[0], [1.0, 1.0, 0.0, 0.0])


def test_particle_without_neighbours_is_an_error():
    pos = np.array([[1.0, 1.0], [2.0, 1.0], [6.0, 6.0]])
    with pytest.raises(ConfigurationError, match="no initial neighbour.*particle 2"):
        bond_breaking(pos, pos[None], np.zeros(3, dtype=int), BOX)


def test_shapes_and_leading_dimensions():
    pos, types, box = square_lattice()
    frames = np.broadcast_to(pos, (3, 4, *pos.shape))
    assert bond_breaking(pos, frames, types, box).shape == (3, 4, len(pos))
    with pytest.raises(ConfigurationError, match="shape"):
        bond_breaking(pos, frames[..., :50, :], types, box)
    bad = np.array(frames)
    bad[1, 2, 7, 0] = np.nan
    with pytest.raises(ConfigurationError, match="NaN"):
        bond_breaking(pos, bad, types, box)


def test_glassbench_short_time_propensity_is_one_and_neighbour_count(glassbench_npz):
    d = np.load(glassbench_npz)
    types = d["types"] - 1
    box = float(d["box"])
    bonds = initial_bonds(d["initial_positions"], types, box)
    assert bonds.n_initial.mean() == pytest.approx(5.9, abs=0.05)
    cb = bond_breaking(d["initial_positions"], d["positions"], types, box, bonds=bonds)
    propensity = cb.mean(axis=0)  # t = 0.1: no bond can break yet
    assert cb.shape == (20, 1290)
    assert abs(propensity[types == 0].mean() - 1.0) < 1e-3


def _pair(distance):
    return np.array([[2.0, 5.0], [2.0 + distance, 5.0]])


def test_mixed_type_bond_radii_are_the_pair_sigma_by_hand():
    """A 0-1 pair (sigma_01 = 0.8, facts sheet section 4): bonded below 1.4 x 0.8 = 1.12, surviving below
    1.8 x 0.8 = 1.44. A radius taken from either particle's own sigma (1.0 or 0.88) gives other answers."""
    types = np.array([0, 1])
    box = 10.0
    frames = np.stack([_pair(1.10), _pair(1.43), _pair(1.45)])
    c_b = bond_breaking(_pair(1.10), frames, types, box)
    np.testing.assert_array_equal(c_b, [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    for order in ([0, 1], [1, 0]):
        far = initial_bonds(_pair(1.15), np.array(order), box)
        assert far.i.size == 0 and list(far.n_initial) == [0, 0]
        near = initial_bonds(_pair(1.10), np.array(order), box)
        np.testing.assert_allclose(near.survival_distance, [1.8 * 0.8])

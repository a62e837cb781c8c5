"""GlassMLP loss: every term against a direct numpy evaluation, known limits, gradients, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy.integrate import quad
from scipy.special import j0

from tglassmlp.model import (
    GlassMLPLoss,
    PropensityMSELoss,
    minimum_image_distances,
    neighbour_weights,
    spatial_correlation,
    training_stages,
)
from tglassmlp.paths import config_dir

torch.set_num_threads(1)

#: float64 torch vs float64 numpy evaluations of the same formulas (different summation orders only)
FLOAT64_RTOL = 1e-10
FLOAT64_ATOL = 1e-12
#: |C_k| of an uncorrelated field on 600 particles: the statistical spread is ~1/sqrt(N) ~ 0.01 per shell
UNCORRELATED_MAX = 0.05
#: C_k of a smooth field on 600 random points vs its continuum value (sampling noise + self term ~ 0.01)
CONTINUUM_TOL = 0.03

#: C_k and loss gradient of a constant float32 output with rounding-size noise 1e-7: with the variance floor
#: 1e-10 they are ~1e-5 and ~60; without it C_k is O(0.1-0.5) noise and the gradient ~1e6
ROUNDING_FIELD_MAX = 1e-3
ROUNDING_GRAD_MAX = 1e3

BOX_SMALL = 9.0  # box [sigma] of the small random test configurations
N_SMALL = 30
PAPER_BOX = 32.8962  # the paper's box edge [sigma] (N = 1290; 600 type-0 particles)
PAPER_N0 = 600
RADII = (2.0, 5.0, 8.0)


# ------------------------------------------------------------------ independent numpy reference
def np_distances(pos: np.ndarray, box: float) -> np.ndarray:
    """Minimum-image distances by an explicit double loop (nearest of the 9 periodic images in 2D)."""
    n = len(pos)
    r = np.empty((n, n))
    shifts = [np.array([a, b]) * box for a in (-1, 0, 1) for b in (-1, 0, 1)]
    for i in range(n):
        for j in range(n):
            xi = np.mod(pos[i], box)
            xj = np.mod(pos[j], box)
            r[i, j] = min(np.linalg.norm(xi - xj + s) for s in shifts)
    return r


def np_correlations(y: np.ndarray, r: np.ndarray, radii=RADII, width: float = 1.0) -> np.ndarray:
    """C_k of facts section 6, written out with loops over i."""
    z = 1.0 - y
    dz = z - z.mean()
    out = []
    for rk in radii:
        w = np.exp(-((r - rk) ** 2) / (2 * width**2))
        num = 0.0
        for i in range(len(y)):
            num += dz[i] * np.sum(w[i] * dz) / np.sum(w[i])
        out.append(num / np.sum(dz**2))
    return np.array(out)


def np_loss_terms(y, yhat, r, label_std, radii=RADII, width=1.0):
    l1 = np.mean(np.abs(y - yhat)) / label_std
    l4 = abs(np.var(yhat) - np.var(y)) / np.var(y)
    c_true = np_correlations(y, r, radii, width)
    c_pred = np_correlations(yhat, r, radii, width)
    l2 = np.abs(c_true - c_pred) / (c_true[0] - c_true[-1])
    return l1, l2, l4


def correlated_labels(pos, box, rng, noise=0.05):
    """Propensity-like labels with a long-wavelength component, so that C_1 > C_3 as in real data."""
    q = 2 * np.pi / box
    smooth = 0.15 * np.cos(q * pos[:, 0]) + 0.1 * np.sin(q * pos[:, 1])
    return np.clip(0.6 + smooth + noise * rng.standard_normal(len(pos)), 0.0, 1.0)


@pytest.fixture
def small_case():
    """30 particles in a 9 x 9 box, some pushed outside the primary cell to exercise the wrapping."""
    rng = np.random.default_rng(7)
    pos = rng.uniform(0, BOX_SMALL, (N_SMALL, 2))
    pos[:5] += BOX_SMALL * rng.integers(-2, 3, (5, 2))  # other periodic images of the same points
    y = correlated_labels(pos, BOX_SMALL, rng)
    yhat = y + 0.08 * rng.standard_normal(N_SMALL)
    return pos, y, yhat


@pytest.fixture(scope="module")
def paper_box_weights():
    """Neighbour weights of 600 random points in the paper's box (density of the type-0 particles)."""
    pos = np.random.default_rng(0).uniform(0, PAPER_BOX, (PAPER_N0, 2))
    return pos, neighbour_weights(pos, PAPER_BOX, RADII, dtype=torch.float64)


# ------------------------------------------------------------------ geometry
def test_minimum_image_distances_match_double_loop(small_case):
    pos, _, _ = small_case
    np.testing.assert_allclose(minimum_image_distances(pos, BOX_SMALL).numpy(), np_distances(pos, BOX_SMALL),
                               rtol=FLOAT64_RTOL, atol=FLOAT64_ATOL)


def test_neighbour_weights_rows_and_translation_invariance(small_case):
    pos, _, _ = small_case
    w = neighbour_weights(pos, BOX_SMALL, dtype=torch.float64)
    assert w.shape == (3, N_SMALL, N_SMALL)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, N_SMALL, dtype=torch.float64))
    # the periodic system has no origin: a rigid shift (then wrapping) leaves every weight unchanged
    shifted = np.mod(pos + np.array([3.3, -7.1]), BOX_SMALL)
    torch.testing.assert_close(neighbour_weights(shifted, BOX_SMALL, dtype=torch.float64), w)
    # default dtype is float32 (memory: 3 x 600^2 x 4 bytes per structure)
    assert neighbour_weights(pos, BOX_SMALL).dtype == torch.float32


# ------------------------------------------------------------------ terms vs numpy
def test_spatial_correlation_matches_numpy(small_case):
    pos, y, _ = small_case
    w = neighbour_weights(pos, BOX_SMALL, dtype=torch.float64)
    got = spatial_correlation(torch.as_tensor(y), w).numpy()
    np.testing.assert_allclose(got, np_correlations(y, np_distances(pos, BOX_SMALL)), rtol=FLOAT64_RTOL,
                               atol=FLOAT64_ATOL)


def test_loss_terms_and_total_match_numpy(small_case):
    pos, y, yhat = small_case
    label_std = 0.21
    loss = GlassMLPLoss(label_std=label_std)
    w = loss.neighbour_weights(pos, BOX_SMALL, dtype=torch.float64)
    total, log = loss(torch.as_tensor(yhat), torch.as_tensor(y), w)
    l1, l2, l4 = np_loss_terms(y, yhat, np_distances(pos, BOX_SMALL), label_std)
    assert l2.min() > 0 and l4 > 0  # a generic case: no term vanishes by accident
    check = dict(rtol=FLOAT64_RTOL, atol=FLOAT64_ATOL)
    np.testing.assert_allclose(log["l1"].item(), l1, **check)
    np.testing.assert_allclose([log[f"l2_{k}"].item() for k in (1, 2, 3)], l2, **check)
    np.testing.assert_allclose(log["l4"].item(), l4, **check)
    np.testing.assert_allclose(total.item(), 1.0 * l1 + 0.5 * l2.sum() + 1.0 * l4, **check)
    np.testing.assert_allclose(log["loss"].item(), total.item(), rtol=0, atol=0)


def test_precomputed_target_correlation_gives_the_same_loss_and_gradient(small_case):
    """Training passes C_k of the labels computed once per sample; loss and gradient must not change."""
    pos, y, yhat = small_case
    loss = GlassMLPLoss(label_std=0.21)
    w = loss.neighbour_weights(pos, BOX_SMALL, dtype=torch.float64)
    target = torch.as_tensor(y)
    c_true = loss.target_correlation(target, w)
    np.testing.assert_allclose(c_true.numpy(), np_correlations(y, np_distances(pos, BOX_SMALL)),
                               rtol=FLOAT64_RTOL, atol=FLOAT64_ATOL)
    grads = []
    for given in (None, c_true):
        pred = torch.as_tensor(yhat).clone().requires_grad_(True)
        total, _ = loss(pred, target, w, target_correlation=given)
        total.backward()
        grads.append((total.item(), pred.grad.clone()))
    assert grads[0][0] == grads[1][0]
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=0, atol=0)


def test_configurable_weights_radii_and_width(small_case):
    pos, y, yhat = small_case
    radii, width = (1.5, 3.0, 4.0, 6.0), 0.7
    loss = GlassMLPLoss(weight_mae=2.0, weight_correlation=[0.1, 0.2, 0.3, 0.4], weight_variance=0.25,
                        radii=radii, width=width, label_std=1.0)
    w = loss.neighbour_weights(pos, BOX_SMALL, dtype=torch.float64)
    total, log = loss(torch.as_tensor(yhat), torch.as_tensor(y), w)
    l1, l2, l4 = np_loss_terms(y, yhat, np_distances(pos, BOX_SMALL), 1.0, radii, width)
    expected = 2.0 * l1 + np.dot([0.1, 0.2, 0.3, 0.4], l2) + 0.25 * l4
    np.testing.assert_allclose(total.item(), expected, rtol=FLOAT64_RTOL)
    assert set(log) == {"loss", "l1", "l4", "l2_1", "l2_2", "l2_3", "l2_4"}


def test_batch_is_mean_over_configurations(small_case):
    pos, y, yhat = small_case
    loss = GlassMLPLoss(label_std=0.2)
    rng = np.random.default_rng(3)
    pos2 = rng.uniform(0, BOX_SMALL, (N_SMALL, 2))
    y2 = correlated_labels(pos2, BOX_SMALL, rng)
    yhat2 = y2 + 0.1 * rng.standard_normal(N_SMALL)
    w1 = loss.neighbour_weights(pos, BOX_SMALL, dtype=torch.float64)
    w2 = loss.neighbour_weights(pos2, BOX_SMALL, dtype=torch.float64)
    t = lambda a: torch.as_tensor(np.asarray(a))  # noqa: E731
    single = [loss(t(p), t(q), w)[0] for p, q, w in ((yhat, y, w1), (yhat2, y2, w2))]
    batched, _ = loss(t([yhat, yhat2]), t([y, y2]), torch.stack([w1, w2]))
    torch.testing.assert_close(batched, (single[0] + single[1]) / 2)
    # a per-configuration label std (e.g. one per state point) broadcasts over the batch
    per_std, _ = loss(t([yhat, yhat2]), t([y, y2]), torch.stack([w1, w2]), label_std=t([0.2, 0.2]))
    torch.testing.assert_close(per_std, batched)


def test_mse_matches_numpy(small_case):
    _, y, yhat = small_case
    total, log = PropensityMSELoss()(torch.as_tensor(yhat), torch.as_tensor(y))
    np.testing.assert_allclose(total.item(), np.mean((y - yhat) ** 2), rtol=FLOAT64_RTOL)
    assert set(log) == {"loss", "mse"}


# ------------------------------------------------------------------ limits
def test_perfect_prediction_gives_zero(small_case):
    pos, y, _ = small_case
    loss = GlassMLPLoss(label_std=0.2)
    yt = torch.as_tensor(y)
    total, log = loss(yt.clone(), yt, loss.neighbour_weights(pos, BOX_SMALL, dtype=torch.float64))
    for name, value in log.items():
        assert value.item() == 0.0, name
    assert PropensityMSELoss()(yt.clone(), yt)[0].item() == 0.0


def test_constant_prediction_has_unit_variance_term(small_case):
    pos, y, _ = small_case
    loss = GlassMLPLoss(label_std=0.2)
    w = loss.neighbour_weights(pos, BOX_SMALL, dtype=torch.float64)
    pred = torch.full((N_SMALL,), 0.6, dtype=torch.float64)
    total, log = loss(pred, torch.as_tensor(y), w)
    assert log["l4"].item() == pytest.approx(1.0, abs=1e-12)
    # a constant field has no fluctuations: C_k(pred) is taken as 0, L2_k = |C_k(true)| / (C_1 - C_3)
    c_true = np_correlations(y, np_distances(pos, BOX_SMALL))
    for k in range(3):
        assert log[f"l2_{k + 1}"].item() == pytest.approx(abs(c_true[k]) / (c_true[0] - c_true[2]), rel=1e-10)
    assert torch.isfinite(total)


def test_constant_float32_prediction_is_not_read_as_a_field(small_case):
    """A float32 constant output keeps rounding noise in dz (variance ~1e-15): C_k(pred) must stay ~0 and
    the gradient finite, not blow up as 1/|dz|."""
    pos, y, _ = small_case
    loss = GlassMLPLoss(label_std=0.2)
    w = loss.neighbour_weights(pos, BOX_SMALL)
    pred = (torch.full((N_SMALL,), 0.6) + 1e-7 * torch.randn(N_SMALL)).requires_grad_(True)
    c_pred = spatial_correlation(pred, w)
    assert c_pred.abs().max().item() < ROUNDING_FIELD_MAX
    loss(pred, torch.as_tensor(y, dtype=torch.float32), w)[0].backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().max().item() < ROUNDING_GRAD_MAX


def test_correlation_is_invariant_under_affine_relabelling(small_case):
    """C_k only sees fluctuations and is normalised by their variance: y -> a y + b leaves it unchanged."""
    pos, y, _ = small_case
    w = neighbour_weights(pos, BOX_SMALL, dtype=torch.float64)
    c = spatial_correlation(torch.as_tensor(y), w)
    torch.testing.assert_close(spatial_correlation(torch.as_tensor(-3.0 * y + 0.7), w), c)


def test_uncorrelated_field_has_small_correlation(paper_box_weights):
    _, w = paper_box_weights
    rng = np.random.default_rng(1)
    for _ in range(3):
        c = spatial_correlation(torch.as_tensor(rng.uniform(0, 1, PAPER_N0)), w)
        assert c.abs().max().item() < UNCORRELATED_MAX


def test_smooth_field_correlation_matches_continuum(paper_box_weights):
    """For z = cos(q x) with the longest wavelength q = 2 pi / L, the shell average of z around a particle
    is J0(q r) averaged with weight r w_k(r): C_k -> int r w_k J0(q r) dr / int r w_k dr (~0.94 at r_k = 2)."""
    pos, w = paper_box_weights
    q = 2 * np.pi / PAPER_BOX
    c = spatial_correlation(torch.as_tensor(0.5 + 0.3 * np.cos(q * pos[:, 0])), w).numpy()
    r_max = PAPER_BOX / 2  # the Gaussian shells are negligible beyond (exp(-35) at r_k = 8)
    for k, rk in enumerate(RADII):
        num = quad(lambda r: r * np.exp(-((r - rk) ** 2) / 2) * j0(q * r), 0, r_max)[0]
        den = quad(lambda r: r * np.exp(-((r - rk) ** 2) / 2), 0, r_max)[0]
        assert c[k] == pytest.approx(num / den, abs=CONTINUUM_TOL)
    assert c[0] > 0.9  # smooth on the scale r_1 = 2: close to 1
    assert c[0] > c[1] > c[2]  # and decaying with the shell radius, so the L2 normalisation is positive


# ------------------------------------------------------------------ gradients
def test_loss_gradcheck():
    rng = np.random.default_rng(5)
    n, box = 8, 5.0
    pos = rng.uniform(0, box, (n, 2))
    y = torch.as_tensor(correlated_labels(pos, box, rng, noise=0.1))
    loss = GlassMLPLoss(label_std=0.3, radii=(1.0, 1.8, 2.5))
    w = loss.neighbour_weights(pos, box, dtype=torch.float64)
    # generic point: |y - yhat|, Var difference and C_k differences are all away from the kinks of |.|
    pred = (y + 0.2 * torch.as_tensor(rng.standard_normal(n))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: loss(p, y, w)[0], (pred,))


def test_gradient_reaches_every_prediction(small_case):
    pos, y, yhat = small_case
    loss = GlassMLPLoss(label_std=0.2)
    pred = torch.as_tensor(yhat).requires_grad_(True)
    loss(pred, torch.as_tensor(y), loss.neighbour_weights(pos, BOX_SMALL, dtype=torch.float64))[0].backward()
    assert torch.isfinite(pred.grad).all() and torch.all(pred.grad != 0)


# ------------------------------------------------------------------ errors and configs
def test_missing_label_std_and_bad_shapes_are_refused(small_case):
    pos, y, yhat = small_case
    w = neighbour_weights(pos, BOX_SMALL)
    with pytest.raises(ValueError, match="label_std"):
        GlassMLPLoss()(torch.as_tensor(yhat), torch.as_tensor(y), w)
    with pytest.raises(ValueError, match="neighbour_weights"):
        GlassMLPLoss(label_std=1.0)(torch.as_tensor(yhat[:-1]), torch.as_tensor(y[:-1]), w)
    with pytest.raises(ValueError, match="pred and target"):
        PropensityMSELoss()(torch.as_tensor(yhat), torch.as_tensor(y[:-1]))


def test_loss_config_instantiates_paper_loss():
    loss = instantiate(OmegaConf.load(config_dir() / "loss" / "glassmlp.yaml"))
    assert isinstance(loss, GlassMLPLoss)
    assert (loss.weight_mae, loss.weight_correlation, loss.weight_variance) == (1.0, (0.5, 0.5, 0.5), 1.0)
    assert loss.radii == RADII and loss.width == 1.0 and loss.label_std is None


def test_schedule_config_is_table_ii():
    stages = training_stages(OmegaConf.load(config_dir() / "schedule" / "paper.yaml"))
    assert [(s.epochs, s.lr, s.loss) for s in stages] == [
        (10, 1e-3, "mse"), (50, 5e-4, "mse"), (25, 2e-4, "mse"), (50, 4e-5, "glassmlp")]
    # App. B: 85 epochs of MSE, then 50 with the full loss
    assert sum(s.epochs for s in stages if s.loss == "mse") == 85

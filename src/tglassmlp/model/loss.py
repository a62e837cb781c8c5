"""Training losses of GlassMLP / tGlassMLP (glassmlp-facts.md section 6; PRL 130, 238202 (2023) SM).

One evaluation covers one configuration: the N reference-type (type-0, the paper's type 1) particles of one
structure at one state point, with true propensities y_i and predictions yhat_i. Terms:

    L1   = mean_i |y_i - yhat_i| / std(y_train)                    mean absolute error, scaled
    L4   = |Var(yhat) - Var(y)| / Var(y)                           variance mismatch (variances over i)
    L2_k = |C_k(y) - C_k(yhat)| / (C_1(y) - C_K(y)),  k = 1..K     spatial-correlation mismatch

with the spatial correlation of a propensity field (z = 1 - y, dz_i = z_i - mean(z))

    C_k = sum_i dz_i [sum_j w_k(r_ij) dz_j / sum_j w_k(r_ij)] / sum_i dz_i^2,
    w_k(r) = exp(-(r - r_k)^2 / (2 width^2)),  r_k = 2, 5, 8 [sigma], width = 1 [sigma],

r_ij the minimum-image distance in the periodic box, j = i included. C_k compares each particle's mobility
with the Gaussian-weighted average over a shell of radius r_k around it; C_k -> 1 for a field that is smooth
on the scale r_k and ~0 for an uncorrelated one. The total is

    L = 1.0 L1 + 0.5 (L2_1 + L2_2 + L2_3) + 1.0 L4.

Phase 1 of the schedule (paper App. B, Table II) uses the plain mean squared error instead
(:class:`PropensityMSELoss`). Both losses are called as ``loss(pred, target, neighbour_weights=...,
label_std=...)`` and return ``(total, terms)`` with ``terms`` a dict of detached scalars for logging.

The neighbour weights depend only on the particle positions, so they are precomputed once per structure with
:func:`neighbour_weights` (dense (K, N, N), row-normalised; 3 x 600^2 float32 = 4.3 MB per structure).
All ratios are invariant under the normalisation of the variances (1/N vs 1/(N-1)), so none is implied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: Shell radii r_k [sigma] and Gaussian width [sigma] of the correlation terms (facts section 6)
DEFAULT_RADII = (2.0, 5.0, 8.0)
DEFAULT_WIDTH = 1.0
#: Floor on the per-particle variances in the ratios. A constant field has Var = 0 (C_k is then ~0 instead of
#: 0/0; in float32 a constant output still has rounding fluctuations of variance ~1e-15, which must not be
#: read as a structured field). Physical propensity variances are ~1e-3 to 1e-1, far above the floor.
DEFAULT_EPS = 1e-10


def minimum_image_distances(positions, box) -> torch.Tensor:
    """All pair distances r_ij [sigma] in a periodic box, minimum-image convention, self included (r_ii = 0).

    Args:
        positions: (N, d) coordinates [sigma] (numpy or torch), any image.
        box: box edge [sigma], a scalar (square/cubic box) or (d,) edges.

    Returns:
        (N, N) float64 tensor of distances.
    """
    pos = torch.as_tensor(positions, dtype=torch.float64)
    edges = torch.as_tensor(box, dtype=torch.float64, device=pos.device)
    if pos.ndim != 2:
        raise ValueError(f"positions must be (N, d), got {tuple(pos.shape)}")
    d = pos[:, None, :] - pos[None, :, :]
    d = d - edges * torch.round(d / edges)
    return torch.sqrt((d * d).sum(-1))


def neighbour_weights(positions, box, radii: Sequence[float] = DEFAULT_RADII, width: float = DEFAULT_WIDTH,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Row-normalised Gaussian shell weights W_k[i, j] = w_k(r_ij) / sum_j w_k(r_ij) of one structure.

    Args:
        positions: (N, d) positions [sigma] of the particles entering the loss (the type-0 particles).
        box: periodic box edge [sigma] (scalar or (d,)).
        radii: shell radii r_k [sigma].
        width: Gaussian width [sigma]; w_k(r) = exp(-(r - r_k)^2 / (2 width^2)).
        dtype: dtype of the result.

    Returns:
        (K, N, N) tensor; each row sums to 1. Must be recomputed if the particle order changes.
    """
    r = minimum_image_distances(positions, box)
    rk = torch.as_tensor(np.asarray(radii, dtype=np.float64))[:, None, None]
    # exponent relative to the row maximum would only matter for r_k >> box; here w >= exp(-r_k^2 / 2 width^2)
    # is far from underflow for the paper's radii (exp(-32) at r_k = 8), so the direct form is kept.
    w = torch.exp(-((r[None] - rk) ** 2) / (2.0 * width**2))
    w = w / w.sum(dim=-1, keepdim=True)
    return w.to(dtype)


def spatial_correlation(y: torch.Tensor, weights: torch.Tensor, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """C_k of a propensity field.

    Args:
        y: (..., N) propensities.
        weights: (..., K, N, N) row-normalised neighbour weights (:func:`neighbour_weights`), broadcast
            against the leading axes of ``y``.
        eps: lower bound on the variance mean_i dz_i^2 (a constant field gets C_k ~ 0 rather than 0/0).

    Returns:
        (..., K) correlations.
    """
    z = 1.0 - y
    dz = z - z.mean(dim=-1, keepdim=True)
    neighbour_mean = torch.einsum("...kij,...j->...ki", weights, dz)  # sum_j W_k[i,j] dz_j
    # numerator and denominator both divided by N, so that eps floors a per-particle variance
    numerator = (neighbour_mean * dz[..., None, :]).mean(-1)
    return numerator / (dz * dz).mean(-1, keepdim=True).clamp_min(eps)


def _check_pair(pred: torch.Tensor, target: torch.Tensor):
    if pred.shape != target.shape or pred.ndim not in (1, 2):
        raise ValueError(f"pred and target must both be (N,) or (B, N), got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}")


class GlassMLPLoss(nn.Module):
    """The full GlassMLP loss L = a L1 + sum_k b_k L2_k + c L4 (phase 2; module docstring for the terms).

    Args:
        weight_mae: a, weight of L1 (paper: 1.0).
        weight_correlation: b_k, one value for all shells or one per shell (paper: 0.5).
        weight_variance: c, weight of L4 (paper: 1.0).
        radii: shell radii r_k [sigma] (paper: 2, 5, 8). The L2 normalisation uses C at the first and the
            last radius.
        width: Gaussian width of the shells [sigma] (paper: 1).
        label_std: std of the training labels for L1; may instead be given per call.
        eps: floor on the variances in the ratios and on C_1 - C_K (see ``DEFAULT_EPS``).
    """

    def __init__(self, weight_mae: float = 1.0, weight_correlation: float | Sequence[float] = 0.5,
                 weight_variance: float = 1.0, radii: Sequence[float] = DEFAULT_RADII,
                 width: float = DEFAULT_WIDTH, label_std: float | None = None, eps: float = DEFAULT_EPS):
        super().__init__()
        self.radii = tuple(float(r) for r in radii)
        if len(self.radii) < 2:
            raise ValueError("need at least two shell radii (L2 is normalised by C_first - C_last)")
        wc = np.broadcast_to(np.asarray(weight_correlation, dtype=np.float64), (len(self.radii),))
        self.weight_mae = float(weight_mae)
        self.weight_correlation = tuple(float(v) for v in wc)
        self.weight_variance = float(weight_variance)
        self.width = float(width)
        self.label_std = None if label_std is None else float(label_std)
        self.eps = float(eps)

    def neighbour_weights(self, positions, box, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """(K, N, N) precomputed weights for this loss's radii and width (see :func:`neighbour_weights`)."""
        return neighbour_weights(positions, box, self.radii, self.width, dtype)

    def target_correlation(self, target: torch.Tensor, neighbour_weights: torch.Tensor) -> torch.Tensor:
        """C_k of the labels, (..., K): constant for a sample, so training computes it once per sample and
        passes it to :meth:`terms` (it is a third of the loss's cost)."""
        return spatial_correlation(target, neighbour_weights.to(dtype=target.dtype, device=target.device),
                                   self.eps)

    def terms(self, pred: torch.Tensor, target: torch.Tensor, neighbour_weights: torch.Tensor,
              label_std=None, target_correlation: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Un-weighted terms per configuration.

        Args:
            pred: (N,) or (B, N) predicted propensities.
            target: same shape, true propensities.
            neighbour_weights: (K, N, N) or (B, K, N, N) from :meth:`neighbour_weights` (no gradient needed).
            label_std: std of the training labels (scalar or (B,)); defaults to the constructor's.
            target_correlation: (..., K) C_k of ``target`` from :meth:`target_correlation` (None: computed here).

        Returns:
            {'l1': (...), 'l2': (..., K), 'l4': (...), 'c_true': (..., K), 'c_pred': (..., K)}, with (...)
            empty or (B,).
        """
        _check_pair(pred, target)
        std = self.label_std if label_std is None else label_std
        if std is None:
            raise ValueError("label_std (std of the training labels) must be given to the loss or the call")
        std = torch.as_tensor(std, dtype=pred.dtype, device=pred.device)
        if neighbour_weights.shape[-3] != len(self.radii) or neighbour_weights.shape[-1] != pred.shape[-1]:
            raise ValueError(f"neighbour_weights {tuple(neighbour_weights.shape)} do not match "
                             f"K = {len(self.radii)} shells and N = {pred.shape[-1]} particles")
        w = neighbour_weights.to(dtype=pred.dtype, device=pred.device)

        l1 = (pred - target).abs().mean(-1) / std
        var_true = target.var(-1, unbiased=False)
        l4 = (pred.var(-1, unbiased=False) - var_true).abs() / var_true.clamp_min(self.eps)
        c_true = (spatial_correlation(target, w, self.eps) if target_correlation is None
                  else target_correlation.to(dtype=pred.dtype, device=pred.device))
        c_pred = spatial_correlation(pred, w, self.eps)
        # The normalisation is a property of the labels only: it carries no gradient. Real labels have
        # C_1 > C_K (correlations decay with distance); the floor only keeps a degenerate input finite.
        norm = (c_true[..., 0] - c_true[..., -1]).clamp_min(self.eps)
        l2 = (c_true - c_pred).abs() / norm[..., None]
        return {"l1": l1, "l2": l2, "l4": l4, "c_true": c_true, "c_pred": c_pred}

    def forward(self, pred: torch.Tensor, target: torch.Tensor, neighbour_weights: torch.Tensor,
                label_std=None, target_correlation: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss averaged over the configurations of the batch, and its terms (detached) for logging.

        Arguments as in :meth:`terms`. Returns (scalar total, {'loss', 'l1', 'l2_1', ..., 'l2_K', 'l4'}).
        """
        t = self.terms(pred, target, neighbour_weights, label_std, target_correlation)
        wc = torch.as_tensor(self.weight_correlation, dtype=pred.dtype, device=pred.device)
        per_config = self.weight_mae * t["l1"] + (t["l2"] * wc).sum(-1) + self.weight_variance * t["l4"]
        total = per_config.mean()
        log = {"loss": total.detach(), "l1": t["l1"].detach().mean(), "l4": t["l4"].detach().mean()}
        for k in range(len(self.radii)):
            log[f"l2_{k + 1}"] = t["l2"][..., k].detach().mean()
        return total, log


class PropensityMSELoss(nn.Module):
    """Mean squared error over particles (phase 1 of Table II), averaged over the configurations.

    Same call signature as :class:`GlassMLPLoss`; ``neighbour_weights`` and ``label_std`` are ignored.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor, neighbour_weights=None,
                label_std=None, target_correlation=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check_pair(pred, target)
        total = ((pred - target) ** 2).mean()
        return total, {"loss": total.detach(), "mse": total.detach()}


#: Loss names used by the schedule stages (conf/schedule/*.yaml)
LOSS_KINDS = {"mse": PropensityMSELoss, "glassmlp": GlassMLPLoss}


@dataclass(frozen=True)
class TrainingStage:
    """One stage of the Adam schedule: ``epochs`` epochs at learning rate ``lr`` with loss ``loss``."""

    epochs: int
    lr: float
    loss: str
    name: str = ""

    def __post_init__(self):
        if self.loss not in LOSS_KINDS:
            raise ValueError(f"unknown loss {self.loss!r} in stage {self.name!r}; known: {sorted(LOSS_KINDS)}")
        if self.epochs < 0 or not self.lr > 0:
            raise ValueError(f"stage {self.name!r}: need epochs >= 0 and lr > 0, got {self.epochs}, {self.lr}")


def training_stages(schedule: Mapping) -> list[TrainingStage]:
    """The stages of a schedule config (``conf/schedule/paper.yaml``: a mapping with a ``stages`` list)."""
    return [TrainingStage(epochs=int(s["epochs"]), lr=float(s["lr"]), loss=str(s["loss"]),
                          name=str(s.get("name", ""))) for s in schedule["stages"]]

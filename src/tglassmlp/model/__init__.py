"""The tGlassMLP network and its training losses (paper Sec. II C-E, App. B; glassmlp-facts.md section 6)."""

from tglassmlp.model.loss import (
    GlassMLPLoss,
    PropensityMSELoss,
    TrainingStage,
    minimum_image_distances,
    neighbour_weights,
    spatial_correlation,
    training_stages,
)
from tglassmlp.model.network import NetworkInternals, StateAttention, TGlassMLP, parameter_count, state_features

__all__ = [
    "TGlassMLPModule",
    "GlassMLPLoss",
    "NetworkInternals",
    "PropensityMSELoss",
    "StateAttention",
    "TGlassMLP",
    "TrainingStage",
    "minimum_image_distances",
    "neighbour_weights",
    "parameter_count",
    "spatial_correlation",
    "state_features",
    "training_stages",
]


def __getattr__(name: str):
    # The LightningModule imports pytorch_lightning (seconds); load it only when asked for.
    if name == "TGlassMLPModule":
        from tglassmlp.model.module import TGlassMLPModule

        return TGlassMLPModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

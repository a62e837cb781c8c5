"""transfer.py's job (``conf/transfer.yaml``) as a plain function."""

from __future__ import annotations

from omegaconf import DictConfig

from tglassmlp.transfer.procedure import TwoStepTransfer


def run_transfer(cfg: DictConfig) -> TwoStepTransfer:
    """Run (or resume) the two-step transfer that ``cfg.transfer`` configures, with ``cfg`` as the training
    config of its ensembles; returns the finished (or stopped) procedure."""
    from hydra.utils import instantiate

    return instantiate(cfg.transfer, _convert_="all").compute(cfg)

"""The two-step transfer of tGlassMLP below the MD range (paper Sec. II E, Table I), one module per concept:
:mod:`~tglassmlp.transfer.table` (Table I), :mod:`~tglassmlp.transfer.labels` (transferred and composite label
sources), :mod:`~tglassmlp.transfer.procedure` (the resumable procedure, its state and MLflow runs; the
method is described there), :mod:`~tglassmlp.transfer.evaluation` (held-out scores),
:mod:`~tglassmlp.transfer.comparison` (the baselines of docs/demo/transfer_comparison.md) and
:mod:`~tglassmlp.transfer.job` (transfer.py's config -> procedure). Hydra ``_target_`` strings use the names
exported here."""

from tglassmlp.transfer.evaluation import evaluate_members, per_structure_pearson
from tglassmlp.transfer.job import run_transfer
from tglassmlp.transfer.labels import CompositeLabels, TransferredLabels
from tglassmlp.transfer.procedure import (NoSelfConsistentTransferError, TransferError, TransferState,
                                          TwoStepTransfer, fingerprint)
from tglassmlp.transfer.table import TransferTable

__all__ = ["CompositeLabels", "NoSelfConsistentTransferError", "TransferError", "TransferState", "TransferTable",
           "TransferredLabels", "TwoStepTransfer", "evaluate_members", "fingerprint", "per_structure_pearson",
           "run_transfer"]

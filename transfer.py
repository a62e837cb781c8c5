"""The two-step tGlassMLP transfer below the MD range (paper Sec. II E, Table I) as one resumable command.

    python transfer.py                              # the demo (experiment=demo_transfer)
    python transfer.py experiment=paper_tmin021     # Table I, T_min = 0.21 (GPUs / clusters)
    python transfer.py debug=fast transfer.step1.seeds='[0,1]'
    python transfer.py transfer.stop_after=step1    # stop after the transferred labels; rerun to continue

The work is done by tglassmlp.transfer (run_transfer, TwoStepTransfer; tests call them directly); this file only adapts the
command line. An interrupted run resumes from <output_dir>/state.json when started again.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="transfer")
def main(cfg: DictConfig) -> None:
    from tglassmlp.training.datamodule import DatasetNotFoundError
    from tglassmlp.tracking import TrackingStoreError
    from tglassmlp.transfer import TransferError, run_transfer

    try:
        procedure = run_transfer(cfg)
    except (DatasetNotFoundError, TrackingStoreError, TransferError) as exc:
        # a clear one-line reason (what and where) for the errors a user can fix; a rerun resumes
        sys.exit(f"transfer.py: {exc}")
    print(f"transfer {procedure.transfer_id}: state {procedure.state_path}")
    if procedure.manifest is not None:
        print(f"  final ensemble: {procedure.manifest_path} ({procedure.manifest['note']})")
    if procedure.held_out_metrics:
        for name, m in procedure.held_out_metrics.items():
            print(f"  held-out {name}: Pearson of the ensemble mean {m['pearson_ensemble']:.3f}")
    if procedure.comparison_result is not None:
        print(f"  comparison: {procedure.output_dir / 'comparison' / 'comparison.md'}")


if __name__ == "__main__":
    main()

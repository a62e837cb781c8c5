"""Dynamic heterogeneity analysis and the paper's figures (chi_4, S_4, xi_4, A, chords, P_int, bottleneck).

    python analyze.py                                  # demo data + the newest train.py ensemble
    python analyze.py mlflow=false                     # without MLflow
    python analyze.py networks.sweep_dir=null name=md  # MD only
    python analyze.py predictions=files                # predict.py's files (mean-constrained) as the predictions

The work is done by tglassmlp.analysis.job.analyze (tests call it directly); this file only adapts the command line.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="analyze")
def main(cfg: DictConfig) -> None:
    from tglassmlp.analysis.job import analyze
    from tglassmlp.tracking import TrackingStoreError

    try:
        result = analyze(cfg)
    except (FileNotFoundError, TrackingStoreError) as exc:
        sys.exit(f"analyze.py: {exc}")
    print(f"analysis: {len(result['figures'])} figures and the report {result['report']}")
    if result["run_id"]:
        print(f"MLflow run {result['run_id']} (make ui)")


if __name__ == "__main__":
    main()

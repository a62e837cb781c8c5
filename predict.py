"""Predict per-particle propensities with a trained tGlassMLP ensemble on any structures (one MLflow run).

    python predict.py                                          # demo: selected networks on data/demo/T0.350
    python predict.py ensemble_source=manifest ensemble_source.manifest=SWEEP/ensemble.json structures=DIR
    python predict.py ensemble_source=directory ensemble_source.path=DIR structures=FILE.npz levels=[0.8,0.5]

The work is done by tglassmlp.predict.predict (tests call it directly); this file only adapts the command line.
Output layout: docs/predict-format.md.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from tglassmlp.predict import ModelDirectoryError, PredictionInputError, format_summary, predict

    try:
        result = predict(cfg)
    except (PredictionInputError, ModelDirectoryError) as exc:
        # one line naming the file / run / value to fix, rather than a traceback
        sys.exit(f"predict.py: {exc}")
    print(format_summary(result))


if __name__ == "__main__":
    main()

"""Train one tGlassMLP network (one seed, one MLflow run); a Hydra multirun trains an ensemble.

    python train.py                          # the demo data (data/demo/), the paper's schedule
    python train.py -m seed=0..15            # 16 seeds; also -m 'seed=range(16)'
    python train.py -m seed=0..3 launcher=joblib
    python train.py debug=fast data.root=PATH logger.tracking_uri=sqlite:///PATH/mlflow.db

The work is done by tglassmlp.training.train (tests call it directly); this file only adapts the command line.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from tglassmlp.training.job import rewrite_range_overrides

# Hydra has no `a..b` syntax: turn seed=0..15 into seed=range(0,16) before it parses the command line.
sys.argv = rewrite_range_overrides(sys.argv)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from tglassmlp.training.datamodule import DatasetNotFoundError
    from tglassmlp.tracking import TrackingStoreError
    from tglassmlp.training.job import train

    try:
        result = train(cfg)
    except (DatasetNotFoundError, TrackingStoreError) as exc:
        # a clear one-line reason rather than a traceback for the two set-up errors a user can fix
        sys.exit(f"train.py: {exc}")
    if not result["multirun"]:  # a sweep prints its summary and link once, at its end
        how = "" if result["tracking_uri"].startswith(("http://", "https://")) else "`make ui`, then "
        print(f"MLflow run {result['run_id']}: {how}{result['ui_link']}")
    # the objective of a sweeper: mean Pearson correlation over the test state points
    return result["metrics"].get("test/avg/pearson")


if __name__ == "__main__":
    main()

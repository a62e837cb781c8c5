"""Simulate one (temperature, structure) shard: inherent structure, energies, isoconfigurational MD.

    python simulate.py                                   # the physics demo on the GlassBench structure
    python simulate.py structure=PATH temperature=0.4 isoconfigurational.n_runs=20
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

log = logging.getLogger("simulate")


@hydra.main(version_base="1.3", config_path="conf", config_name="simulate")
def main(cfg: DictConfig) -> None:
    from tglassmlp.simulate import print_summary, simulate_shard

    try:
        summary = simulate_shard(cfg)
    except Exception:
        # in a multirun Hydra only reports a failed job at the very end: say it now, in the job's log
        log.exception("shard T = %s, structure %s FAILED; finished stages are kept, a rerun resumes",
                      cfg.temperature, cfg.structure_index)
        raise
    print_summary(summary, cfg)


if __name__ == "__main__":
    main()

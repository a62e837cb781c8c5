"""Simulate one (temperature, structure) shard: inherent structure, energies, isoconfigurational MD.

    python simulate.py                                   # the physics demo on the GlassBench structure
    python simulate.py structure=PATH temperature=0.4 isoconfigurational.n_runs=20
    python simulate.py -m simulation_dataset=demo structure=null temperature=0.6,0.5 structure_index='range(4)' launcher=joblib
    python simulate.py verify=true simulation_dataset=demo          # check the dataset, list missing/partial/corrupt shards

A rerun skips finished shards and resumes partial ones (docs/scale-out.md).
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger("simulate")


@hydra.main(version_base="1.3", config_path="conf", config_name="simulate")
def main(cfg: DictConfig) -> None:
    from tglassmlp.data.manifest import ManifestError, ShardBusyError
    from tglassmlp.simulation.job import print_summary, simulate_shard, verify

    if cfg.verify:
        try:
            report = verify(cfg)
        except (FileNotFoundError, ManifestError) as exc:
            sys.exit(f"simulate.py verify: {exc}")
        print(report.format())
        if not report.ok:
            sys.exit(1)
        return
    if cfg.progress is None:  # a progress bar for a single shard; parallel jobs' bars would interleave
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        cfg.progress = HydraConfig.get().mode != RunMode.MULTIRUN
    try:
        summary = simulate_shard(cfg)
    except ShardBusyError as exc:
        # not a failure of this shard: another live job is computing it
        sys.exit(f"simulate.py: {exc}")
    except Exception:
        # in a multirun Hydra only reports a failed job at the very end: say it now, in the job's log
        log.exception("shard T = %s, structure %s FAILED; finished stages are kept, a rerun resumes",
                      cfg.temperature, cfg.structure_index)
        raise
    # md.structures_per_context = K > 1: one job, K shards
    for one in summary if isinstance(summary, list) else [summary]:
        print_summary(one, cfg)


if __name__ == "__main__":
    main()

"""Simulate one (temperature, structure) shard: inherent structure, energies, isoconfigurational MD.

    python simulate.py                                   # the physics demo on the GlassBench structure
    python simulate.py structure=PATH temperature=0.4 isoconfigurational.n_runs=20
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="simulate")
def main(cfg: DictConfig) -> None:
    from tglassmlp.simulate import print_summary, simulate_shard

    print_summary(simulate_shard(cfg), cfg)


if __name__ == "__main__":
    main()

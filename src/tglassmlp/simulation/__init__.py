"""simulate.py's work (``conf/simulate.yaml``): one shard per (temperature, structure) through the stages
equilibrium structure (swap Monte Carlo), inherent structure, descriptors and isoconfigurational MD
(:mod:`~tglassmlp.simulation.job`, moved verbatim from ``tglassmlp.simulate``). Structures are read by
:mod:`tglassmlp.data.structures`; the sweep's Hydra callback is :class:`tglassmlp.callbacks.ExpectSweepShards`."""

from tglassmlp.simulation.job import (dataset_root, load_structure, md_times, print_summary, required_fields,
                                      shard_seeds, simulate_shard, swap_checkpoint, sweep_shards, verify)

__all__ = ["dataset_root", "load_structure", "md_times", "print_summary", "required_fields", "shard_seeds",
           "simulate_shard", "swap_checkpoint", "sweep_shards", "verify"]

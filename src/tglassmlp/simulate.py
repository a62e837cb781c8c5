"""simulate.py's work as plain functions: structure -> inherent structure, energies, isoconfigurational MD.

Each (temperature, structure) shard is written in stages, each stage atomically (see docs/data-format.md):
a rerun skips the stages a shard already holds, so a killed job loses at most the stage it was in.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tglassmlp.data import (
    config_hash,
    open_shard,
    package_versions,
    read_glassbench,
    read_shard,
    shard_path,
    update_shard,
    write_shard,
)
from tglassmlp.physics import inherent_structure, particle_energies
from tglassmlp.physics.system import system_from_config
from tglassmlp.timegrid import log_spaced_times

log = logging.getLogger(__name__)

STRUCTURE_FIELDS = ("positions", "types", "inherent_positions", "particle_energies")
MD_FIELDS = ("times", "trajectories")


@dataclass
class Structure:
    """A configuration read from disk: positions (N, 2) [sigma], types (N,) 0..2, box [sigma]."""

    positions: np.ndarray
    types: np.ndarray
    box: float
    temperature: float | None
    index: int | None
    source: str


def load_structure(path) -> Structure:
    """Read a GlassBench npz or one of our HDF5 shards (by suffix), with clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    if path.suffix == ".npz":
        gb = read_glassbench(path)
        return Structure(gb.positions, gb.types, gb.box, gb.temperature, gb.structure_index, gb.source)
    if path.suffix in (".h5", ".hdf5"):
        shard = read_shard(path, fields=["positions", "types"])
        return Structure(shard["positions"], shard["types"], float(shard.attrs["box"]),
                         float(shard.attrs["temperature"]), None, f"shard:{path.name}")
    raise ValueError(f"unknown structure file type '{path.suffix}' for {path}: expected a GlassBench .npz "
                     "or a tglassmlp .h5 shard")


def simulate_shard(cfg: DictConfig) -> dict:
    """Run the stages of one shard described by ``cfg`` (conf/simulate.yaml) and return a summary.

    Returns:
        dict with the shard path, temperature, the stages run and skipped, inherent-structure energy per
        particle [epsilon] and, when MD ran, the times [tau] and mean-squared displacement per time [sigma^2].
    """
    system = system_from_config(cfg.system)
    structure = load_structure(cfg.structure)
    temperature = cfg.temperature if cfg.temperature is not None else structure.temperature
    if temperature is None:
        raise ValueError(f"{cfg.structure}: the file does not say its temperature; set temperature=T")
    temperature = float(temperature)
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    index = cfg.structure_index if cfg.structure_index is not None else (structure.index or 0)
    path = shard_path(Path(cfg.paths.output_dir) / "datasets" / cfg.dataset, temperature, int(index))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    summary = {"shard": str(path), "temperature": temperature, "ran": [], "skipped": []}

    existing = set()
    if path.exists() and not cfg.overwrite:
        with open_shard(path) as reader:  # metadata only: the trajectories are not loaded
            existing = set(reader.fields)
    if set(STRUCTURE_FIELDS) <= existing:
        summary["skipped"].append("inherent_structure")
        shard = read_shard(path, fields=list(STRUCTURE_FIELDS))
        x_is, energies = shard["inherent_positions"], shard["particle_energies"]
    else:
        t0 = time.perf_counter()
        x_is, report = inherent_structure(structure.positions, structure.types, structure.box, system,
                                          max_force=cfg.inherent_structure.max_force, return_report=True)
        energies = particle_energies(x_is, structure.types, structure.box, system)
        attrs = {
            "temperature": temperature, "n_particles": len(structure.types), "box": structure.box,
            "seed": int(cfg.seed), "config_hash": config_hash(resolved),
            "config": OmegaConf.to_yaml(resolved), "package_versions": package_versions(),
            "source": structure.source, "inherent_max_force": report.max_force,
        }
        write_shard(path, {"positions": structure.positions, "types": structure.types,
                           "inherent_positions": x_is, "particle_energies": energies}, attrs,
                    overwrite=bool(cfg.overwrite) or path.exists())
        summary["ran"].append("inherent_structure")
        log.info("inherent structure: E/N = %.5f, max|F| = %.2e (%.1f s)", report.energy_final,
                 report.max_force, time.perf_counter() - t0)
    summary["inherent_energy"] = float(energies.mean())

    iso = cfg.isoconfigurational
    if iso.n_runs > 0:
        if set(MD_FIELDS) <= existing:
            summary["skipped"].append("isoconfigurational")
            shard = read_shard(path, fields=list(MD_FIELDS))
            times, runs = shard["times"], shard["trajectories"]
        else:
            from tglassmlp.physics.md import isoconfigurational_runs

            times = log_spaced_times(iso.t_min, iso.t_max, iso.n_times, cfg.md.dt)
            runs = isoconfigurational_runs(
                structure.positions, structure.types, structure.box, temperature, times, int(iso.n_runs),
                int(cfg.seed), system=system, dt=cfg.md.dt, platform=cfg.md.platform,
            )
            update_shard(path, {"times": times, "trajectories": runs}, {"md_seed": int(cfg.seed)})
            summary["ran"].append("isoconfigurational")
        disp = np.asarray(runs) - structure.positions
        summary["times"] = np.asarray(times).tolist()
        summary["msd"] = (disp**2).sum(-1).mean(axis=(0, 2)).tolist()
    return summary


def print_summary(summary: dict, cfg: DictConfig) -> None:
    """Human-readable report of a shard, with the ballistic limit and GlassBench's own runs as checks."""
    T = summary["temperature"]
    print(f"\nshard: {summary['shard']}")
    print(f"  stages run: {summary['ran'] or 'none'}; already present: {summary['skipped'] or 'none'}")
    print(f"  inherent-structure energy per particle: {summary['inherent_energy']:.5f} epsilon")
    if "msd" not in summary:
        return
    print(f"  mean-squared displacement at T = {T:g} (ballistic limit 2 T t^2 for m = 1 in 2D):")
    print(f"  {'t':>10} {'MSD':>12} {'2 T t^2':>12}")
    for t, msd in zip(summary["times"], summary["msd"]):
        print(f"  {t:10.3f} {msd:12.5g} {2 * T * t * t:12.5g}")
    structure = Path(cfg.structure)
    if structure.suffix == ".npz":
        gb = read_glassbench(structure)
        if gb.time is not None and gb.run_positions is not None:
            ref = ((gb.run_positions - gb.positions) ** 2).sum(-1).mean()
            print(f"  GlassBench's own {len(gb.run_positions)} runs at t = {gb.time:g}: MSD = {ref:.5g}")

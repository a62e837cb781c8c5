"""simulate.py's work as plain functions: one (temperature, structure) shard, stage by stage.

Stages (each written atomically into the shard, see docs/data-format.md; a rerun skips what is there):
1. ``structure``: the equilibrium configuration, read from a file (GlassBench npz or our shard) or made
   by swap Monte Carlo at T (with its equilibration report; a failed criterion is flagged in the shard);
2. ``inherent_structure``: local energy minimum and per-particle energies;
3. ``descriptors`` (where ``simulation_dataset.store_descriptors``): the 176 coarse-grained descriptors of the
   inherent structure (otherwise training computes them on load and caches them under outputs/);
4. ``isoconfigurational``: NVE runs with fresh velocities at the dataset's times (where the dataset asks for
   MD at this temperature), then bond breaking C_B^i(t) per run and the propensity (mean over runs).

Scale-out (docs/scale-out.md): ``simulate.py -m temperature=... structure_index=...`` runs one job per shard
(joblib locally, submitit on SLURM). A job claims its shard (a lock the kernel drops if the job dies), so two
jobs never write one shard; it records the shard's expectation in the dataset manifest when it starts and the
shard's checksums when it finishes (:mod:`tglassmlp.data.manifest`). A killed job leaves only finished stages
(atomic writes), so its rerun resumes at the first missing stage with the same seeds and produces the same
values; the MD stage itself resumes from its checkpoint (``md.checkpoint_every_s``, beside the shard).
``simulate.py verify=true`` checks the dataset and lists missing, partial and corrupt shards.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from contextlib import ExitStack
from tglassmlp.data.structures import Structure, read_structure
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
from tglassmlp.data.manifest import (
    claim_shard,
    expect_shards,
    forget_shard,
    record_shard,
    verify_dataset,
)
from tglassmlp.observables.bond_breaking import bond_breaking
from tglassmlp.physics import inherent_structure, particle_energies, validate_configuration
from tglassmlp.physics.md_checkpoint import md_checkpoint_path
from tglassmlp.physics.potential import interacting_pairs
from tglassmlp.physics.system import system_from_config
from tglassmlp.timegrid import log_spaced_times

log = logging.getLogger(__name__)

STRUCTURE_FIELDS = ("positions", "types")
INHERENT_FIELDS = ("inherent_positions", "particle_energies")
MD_FIELDS = ("times", "bond_breaking", "propensity")


def load_structure(path) -> Structure:
    """Read a GlassBench npz or one of our HDF5 shards (by suffix), with clear errors for anything else:
    :func:`tglassmlp.data.structures.read_structure` (positions and types)."""
    return read_structure(path, ("positions", "types"))


def shard_seeds(seed: int, temperature: float, index: int) -> tuple[int, int]:
    """Independent (swap MC, MD) seeds for one shard, derived from the run seed, T and the structure index."""
    ss = np.random.SeedSequence([int(seed), int(index), int(round(temperature * 1e6))])
    a, b = ss.generate_state(2, dtype=np.uint32)
    return int(a), int(b)


def md_times(cfg: DictConfig, temperature: float):
    """Observation times [tau] of the isoconfigurational runs at T, or None where the dataset has no MD."""
    ds = cfg.simulation_dataset
    t_max = ds.default_t_max
    for sp in ds.state_points:
        if np.isclose(float(sp.temperature), temperature, rtol=0, atol=1e-9):
            t_max = sp.t_max
            break
    if t_max is None or ds.isoconfigurational.n_runs < 1:
        return None
    iso = ds.isoconfigurational
    return log_spaced_times(iso.t_min, t_max, iso.n_times, cfg.md.dt)


def required_fields(cfg: DictConfig, temperature: float) -> list[str]:
    """Fields a finished shard at ``temperature`` has under ``cfg``: the structure and its inherent structure,
    the descriptors where the dataset stores them, the MD labels (and trajectories, if stored) where the
    dataset has MD at that temperature."""
    fields = [*STRUCTURE_FIELDS, *INHERENT_FIELDS]
    if cfg.simulation_dataset.get("store_descriptors", False):
        fields.append("descriptors")
    if md_times(cfg, temperature) is not None:
        fields += list(MD_FIELDS)
        if cfg.simulation_dataset.get("store_trajectories", False):
            fields.append("trajectories")
    return fields


def dataset_root(cfg: DictConfig) -> Path:
    """``<paths.output_dir>/datasets/<simulation_dataset.name>``: where the shards and the manifest of ``cfg`` live."""
    name = str(cfg.simulation_dataset.name)
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"simulation_dataset.name must be a plain folder name, got {name!r}")
    return Path(cfg.paths.output_dir) / "datasets" / name


def _check_dataset_config(cfg: DictConfig) -> None:
    """Refuse impossible dataset / MD settings before any work, naming the key."""
    ds, iso = cfg.simulation_dataset, cfg.simulation_dataset.isoconfigurational

    def number(key, value, *, integer=False, minimum=None, strict=True, allow_none=False):
        if value is None and allow_none:
            return
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (float(value).is_integer() if integer else np.isfinite(float(value)))
        if ok and minimum is not None:
            ok = value > minimum if strict else value >= minimum
        if not ok:
            bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum}"
            raise ValueError(f"config {key}: must be a{'n integer' if integer else ' finite number'}{bound}, "
                             f"got {value!r}")

    number("simulation_dataset.n_particles", ds.n_particles, integer=True, minimum=2, strict=False)
    number("simulation_dataset.isoconfigurational.n_runs", iso.n_runs, integer=True, minimum=0, strict=False)
    number("simulation_dataset.isoconfigurational.n_times", iso.n_times, integer=True, minimum=1, strict=False)
    number("simulation_dataset.isoconfigurational.t_min", iso.t_min, minimum=0)
    number("simulation_dataset.default_t_max", ds.default_t_max, minimum=0, allow_none=True)
    number("md.dt", cfg.md.dt, minimum=0)
    for k, sp in enumerate(ds.state_points):
        number(f"simulation_dataset.state_points[{k}].temperature", sp.temperature, minimum=0)
        number(f"simulation_dataset.state_points[{k}].t_max", sp.t_max, minimum=0, allow_none=True)
    number("seed", cfg.seed, integer=True, minimum=0, strict=False)


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def _check_md_config(cfg: DictConfig) -> None:
    """The MD settings that would otherwise fail only at stage 4, after hours of swap MC: check them first."""
    from tglassmlp.physics.openmm_system import LAYOUTS, resolve_platform

    md = cfg.md
    resolve_platform(md.platform, md.precision)  # ValueError naming the platform / md.precision
    if md.layout not in LAYOUTS:
        raise ValueError(f"config md.layout: must be one of {LAYOUTS}, got {md.layout!r}")
    for key in ("replicas_per_context", "structures_per_context", "check_every", "checkpoint_stride"):
        _positive_int(md[key], f"config md.{key}")
    for key in ("workers", "threads"):
        if md.get(key) is not None:
            _positive_int(md[key], f"config md.{key}")
    every = md.get("checkpoint_every_s")
    if every is not None and not (isinstance(every, (int, float)) and not isinstance(every, bool) and every >= 0):
        raise ValueError(f"config md.checkpoint_every_s: must be a number >= 0 or null, got {every!r}")
    if not (isinstance(md.max_energy_drift, (int, float)) and md.max_energy_drift > 0):
        raise ValueError(f"config md.max_energy_drift: must be > 0, got {md.max_energy_drift!r}")


def _resolve_temperature(cfg: DictConfig, structure: Structure | None) -> float:
    temperature = cfg.temperature
    if temperature is None and structure is not None:
        temperature = structure.temperature
    if temperature is None:
        where = cfg.structure if cfg.structure is not None else "swap Monte Carlo"
        raise ValueError(f"{where}: no temperature given and the input does not say one; set temperature=T")
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"config temperature: must be a number, got {temperature!r}") from None
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    if round(temperature, 3) <= 0:
        # shard names carry T with 3 decimals: T0.000 would be no temperature at all
        raise ValueError(f"temperature {temperature!r} rounds to 0.000 in the shard name T%.3f; the smallest "
                         "temperature a shard can have is 0.001")
    return temperature


def simulate_shard(cfg: DictConfig) -> dict:
    """Run the missing stages of the shard described by ``cfg`` (conf/simulate.yaml); return a summary.

    Returns:
        dict with the shard path, temperature, stages run and skipped, the inherent-structure energy per
        particle [epsilon], the equilibration flag, and where MD ran: times [tau], mean-squared displacement
        [sigma^2] and the type-0 mean propensity per time.
    """
    _check_dataset_config(cfg)
    system = system_from_config(cfg.system)
    structure = load_structure(cfg.structure) if cfg.structure is not None else None
    if structure is not None:
        # overlaps and a box below two cutoffs would only fail in stage 2, after stage 1 wrote the shard
        interacting_pairs(*validate_configuration(structure.positions, structure.types, structure.box,
                                                  where=str(cfg.structure)), system, where=str(cfg.structure))
    temperature = _resolve_temperature(cfg, structure)
    index = _resolve_index(cfg, structure)
    root = dataset_root(cfg)
    required = required_fields(cfg, temperature)
    threads = cfg.get("num_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"config num_threads: must be an integer >= 1 or null, got {threads!r}")
    if md_times(cfg, temperature) is not None:
        _check_md_config(cfg)
    indices = structures_of_job(cfg, structure, index, temperature)
    paths = [shard_path(root, temperature, k) for k in indices]
    if structure is None:
        from tglassmlp.simulation.chains import check_chains_per_job

        # a folder keeps one swap.chains_per_job (it decides the chains): refused before anything is written
        check_chains_per_job(paths[0].parent, cfg.swap.chains_per_job)
    # everything above only reads; nothing on disk changes before the settings are known to be valid
    if threads is not None:
        import numba

        numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
    # one writer per shard: a second job on the same shard (a resubmitted array task while the first still
    # runs) fails here with ShardBusyError instead of racing it; a killed holder's lock vanishes with it
    with ExitStack() as claims:
        for path in paths:
            claims.enter_context(claim_shard(path))
        expect_shards(root, [(temperature, k, required) for k in indices], dataset=str(cfg.simulation_dataset.name))
        if cfg.overwrite:
            md_checkpoint_path(paths).unlink(missing_ok=True)
            for path in paths:
                swap_checkpoint(path).unlink(missing_ok=True)
                if path.exists():
                    forget_shard(root, path)
                    path.unlink()
        jobs = []
        for k, path in zip(indices, paths):
            swap_seed, md_seed = shard_seeds(cfg.seed, temperature, k)
            jobs.append(_run_stages(cfg, system, structure, temperature, k, swap_seed, md_seed, path, threads))
        _md_stage(cfg, system, temperature, jobs, paths, threads)
        for summary, path in zip(jobs, paths):
            summary.pop("_md_input", None)
            summary["physics_sha256"] = record_shard(root, path, required)["physics_sha256"]
    return jobs[0] if len(jobs) == 1 else jobs


def structures_of_job(cfg: DictConfig, structure, index: int, temperature: float) -> list[int]:
    """Structure indices one job simulates: [index], or the block index .. index + J - 1 of swap-MC structures,
    J the larger of ``md.structures_per_context`` = K (MD at this T: the block's MD shares Contexts of <= K
    structures, one GPU) and ``swap.chains_per_job`` = B (the block holds one harvest of each of the B chains
    of a batch, run together: one OpenCL kernel launch for all, :mod:`tglassmlp.simulation.chains`).

    A sweep then runs ``structure_index='range(0, S, J)'``; each shard stays a file of its own (same names,
    manifest records and resume behaviour as with one structure per job).
    """
    k = int(cfg.md.get("structures_per_context", 1) or 1) if md_times(cfg, temperature) is not None else 1
    b = cfg.swap.get("chains_per_job", 1)
    _positive_int(b, "config swap.chains_per_job")
    if structure is not None:
        b = 1  # the structure comes from the file: no chains
    if k == 1 and b == 1:
        return [index]
    if k > 1 and structure is not None:
        raise ValueError(f"config md.structures_per_context = {k}: a job runs {k} structures, made by swap Monte "
                         f"Carlo; it cannot take them from one file (structure={cfg.structure}). Set "
                         "structure=null, or md.structures_per_context=1")
    size = max(k, b)
    sizes = " and ".join(f"{key} = {v}" for key, v in (("md.structures_per_context", k), ("swap.chains_per_job", b))
                         if v > 1)
    if size % min(k, b):
        raise ValueError(f"config {sizes}: a job runs the larger number of structures, so the smaller must divide "
                         "it")
    if index % size:
        raise ValueError(f"config structure_index = {index}: with {sizes} a job runs structures index .. index + "
                         f"{size - 1}, so index must be a multiple of {size} (sweep "
                         f"structure_index='range(0,S,{size})')")
    return list(range(index, index + size))


def swap_checkpoint(path: Path) -> Path:
    """Where the swap Monte Carlo chain of a shard's structure stage is checkpointed (hidden, next to it)."""
    return path.with_name(f".{path.stem}.swap_checkpoint.npz")


def _resolve_index(cfg: DictConfig, structure: Structure | None) -> int:
    index = cfg.structure_index
    if index is None:
        index = structure.index if structure is not None and structure.index is not None else 0
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"config structure_index: must be an integer >= 0 or null, got {index!r}")
    return int(index)


def _run_stages(cfg, system, structure, temperature, index, swap_seed, md_seed, path, threads) -> dict:
    """The four stages of :func:`simulate_shard` (called while the shard is claimed)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("hydra", None)
    summary = {"shard": str(path), "temperature": temperature, "ran": [], "skipped": []}
    existing = set()
    if path.exists():
        with open_shard(path) as reader:  # metadata only: nothing large is loaded
            existing = set(reader.fields)

    # ---- stage 1: the equilibrium structure
    if set(STRUCTURE_FIELDS) <= existing:
        summary["skipped"].append("structure")
        shard = read_shard(path, fields=list(STRUCTURE_FIELDS))
        positions, types, box = shard["positions"], shard["types"].astype(np.int64), float(shard.attrs["box"])
        equilibrated = shard.attrs.get("equilibrated", 1)
    else:
        attrs = {"temperature": temperature, "box": None, "seed": int(cfg.seed), "structure_index": index,
                 "config_hash": config_hash(resolved), "config": OmegaConf.to_yaml(resolved),
                 "package_versions": package_versions()}
        fields = {}
        if structure is not None:
            positions, types, box = structure.positions, structure.types, structure.box
            attrs["source"] = structure.source
            equilibrated = 1
        else:
            from tglassmlp.physics.swap_mc import equilibrium_structure, load_swap_settings

            settings = load_swap_settings(**OmegaConf.to_container(cfg.swap, resolve=True))
            t0 = time.perf_counter()
            if settings.structures_per_chain > 1 or settings.cascade or settings.chains_per_job > 1:
                # shard i = one harvest of one chain of a batch of chains_per_job chains (tglassmlp.simulation.
                # chains); the batch's checkpoint is shared by its shards (locked) and outlives them
                from tglassmlp.simulation.chains import shard_structure

                root = path.parent.parent
                positions, types, box, report, record = shard_structure(
                    temperature, index, directory_of=lambda t: shard_path(root, t, 0).parent,
                    seed_of=lambda t, i: shard_seeds(cfg.seed, t, i)[0],
                    n_particles=int(cfg.simulation_dataset.n_particles),
                    system=system, settings=settings, max_sweeps=cfg.simulation_dataset.max_sweeps)
                equilibrated = int(record["criterion_holds"])
                attrs.update(source="swap_mc_harvest", equilibrated=equilibrated, equilibration_report=json.loads(
                    json.dumps(dict(report.to_dict(), structure=record), default=float)))
                sweeps, reasons = record["sweep_total"], record["reasons"]
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # the flag below says it, in the shard
                    # a killed job resumes its chain from here (saved every swap.checkpoint_every_s)
                    positions, types, box, report = equilibrium_structure(
                        temperature, int(cfg.simulation_dataset.n_particles), swap_seed, system=system,
                        settings=settings,
                        max_sweeps=cfg.simulation_dataset.max_sweeps, progress=False, checkpoint=swap_checkpoint(path))
                equilibrated = int(report.criterion_met)
                attrs.update(source="swap_mc", equilibrated=equilibrated,
                             equilibration_report=json.loads(json.dumps(report.to_dict(), default=float)))
                fields["equilibration_energy"] = np.asarray(report.energy_trace, dtype=np.float32)
                sweeps, reasons = report.sweeps_total, report.reasons
            log.info("swap MC at T = %g: %d sweeps, criterion %s (%.0f s)%s", temperature, sweeps,
                     "met" if equilibrated else "NOT met", time.perf_counter() - t0,
                     "" if equilibrated else f": {reasons}")
        attrs["box"] = float(box)
        fields.update(positions=positions, types=types)
        write_shard(path, fields, attrs)
        swap_checkpoint(path).unlink(missing_ok=True)  # the structure is in the shard now
        existing = set(fields)
        summary["ran"].append("structure")
    summary["equilibrated"] = bool(equilibrated)
    if not equilibrated:
        log.warning("%s: the structure did NOT meet the equilibration criterion; it is flagged in the shard "
                    "(attribute equilibrated = 0) and refused downstream unless allowed", path)

    # ---- stage 2: inherent structure and per-particle energies
    if set(INHERENT_FIELDS) <= existing:
        summary["skipped"].append("inherent_structure")
        energies = read_shard(path, fields=["particle_energies"])["particle_energies"]
    else:
        t0 = time.perf_counter()
        x_is, report = inherent_structure(positions, types, box, system, max_force=cfg.inherent_structure.max_force,
                                          return_report=True)
        energies = particle_energies(x_is, types, box, system)
        update_shard(path, {"inherent_positions": x_is, "particle_energies": energies},
                     {"inherent_max_force": report.max_force})
        summary["ran"].append("inherent_structure")
        log.info("inherent structure: E/N = %.5f, max|F| = %.2e (%.1f s)", report.energy_final, report.max_force,
                 time.perf_counter() - t0)
    summary["inherent_energy"] = float(energies.mean())

    # ---- stage 3: structural descriptors (optional: cheap to recompute, large to store)
    if cfg.simulation_dataset.get("store_descriptors", False):
        if "descriptors" in existing:
            summary["skipped"].append("descriptors")
        else:
            from tglassmlp.data.structures import descriptor_settings_hash
            from tglassmlp.observables import descriptor_names, load_descriptor_settings, structural_descriptors

            settings = load_descriptor_settings(cfg.get("descriptors") or "default")
            x_is = read_shard(path, fields=["inherent_positions"])["inherent_positions"]
            desc = structural_descriptors(x_is, types, box, settings=settings, energies=energies, system=system)
            update_shard(path, {"descriptors": desc.astype(np.float32)},
                         field_attrs={"descriptors": {"descriptor_names": descriptor_names(settings.l_grid),
                                                      "descriptor_settings_hash": descriptor_settings_hash(settings)}})
            summary["ran"].append("descriptors")

    # ---- stage 4 (isoconfigurational MD, bond breaking, propensity): _md_stage, for this and the job's other shards
    summary["_md_input"] = (path, positions, types, box, md_seed, existing)
    return summary


def _md_stage(cfg, system, temperature, jobs: list[dict], paths: list[Path], threads) -> None:
    """Stage 4 of the job's shards (``jobs``: their summaries from :func:`_run_stages`), updating the summaries.

    The MD of all the job's structures runs at once (up to K share a Context: ``md.structures_per_context``),
    checkpointed beside the shards every ``md.checkpoint_every_s`` (:mod:`tglassmlp.physics.md_checkpoint`);
    a rerun resumes it. It runs for the whole block whenever one shard lacks its MD, so that the checkpoint
    stays the same run; only the shards lacking it are written, then the checkpoint is removed.
    """
    times = md_times(cfg, temperature)
    if times is None:
        return
    todo = {id(j) for j in jobs if not set(MD_FIELDS) <= j["_md_input"][5]}
    results = {}
    if todo:
        from tglassmlp.physics.md import isoconfigurational_runs_many

        every_s = cfg.md.get("checkpoint_every_s")
        checkpoint = md_checkpoint_path(paths) if every_s is not None else None
        box = jobs[0]["_md_input"][3]
        from tglassmlp.physics.openmm_system import resolve_platform

        # num_threads (parallel launchers set 1): that many one-thread Contexts, the CPU layout measured best;
        # on a GPU one Context holds the whole block
        on_cpu = resolve_platform(cfg.md.platform, cfg.md.precision).getName() == "CPU"
        layout = {"workers": int(threads), "threads": 1} if threads is not None and on_cpu else {}
        runs_all = isoconfigurational_runs_many(
            [(j["_md_input"][1], j["_md_input"][2]) for j in jobs], box, temperature, times,
            int(cfg.simulation_dataset.isoconfigurational.n_runs), [j["_md_input"][4] for j in jobs], system=system,
            structures_per_context=min(len(jobs), int(cfg.md.structures_per_context)), config=cfg.md,
            progress=cfg.get("progress") is not False, checkpoint=checkpoint, checkpoint_every_s=every_s, **layout)
        for j, runs in zip(jobs, runs_all):
            if id(j) in todo:
                path, positions, types, box, md_seed, _ = j["_md_input"]
                c_b = bond_breaking(positions, runs, types, box, system=system,
                                   initial_radius=cfg.labels.initial_radius,
                                   survival_radius=cfg.labels.survival_radius)  # (R, T_n, N)
                propensity = c_b.mean(axis=0)
                new = {"times": times, "bond_breaking": c_b.astype(np.float32),
                       "propensity": propensity.astype(np.float32)}
                if cfg.simulation_dataset.store_trajectories:
                    new["trajectories"] = runs
                update_shard(path, new, {"md_seed": md_seed})
                j["ran"].append("isoconfigurational")
                results[id(j)] = (times, propensity, runs)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)  # every shard holds its MD now
    for j in jobs:
        path, positions, types, box, md_seed, existing = j["_md_input"]
        if id(j) in results:
            times_j, propensity, runs = results[id(j)]
        else:
            j["skipped"].append("isoconfigurational")
            shard = read_shard(path, fields=list(MD_FIELDS) + (["trajectories"] if "trajectories" in existing else []))
            times_j, propensity = shard["times"], shard["propensity"]
            runs = shard.fields.get("trajectories")
        j["times"] = np.asarray(times_j).tolist()
        j["mean_propensity_type0"] = np.asarray(propensity)[:, types == 0].mean(axis=1).tolist()
        if runs is not None:
            j["msd"] = ((np.asarray(runs) - positions) ** 2).sum(-1).mean(axis=(0, 2)).tolist()


def verify(cfg: DictConfig, *, deep: bool = True):
    """Verify the dataset of ``cfg`` (``<output_dir>/datasets/<simulation_dataset.name>``) against its manifest.

    Returns the :class:`tglassmlp.data.manifest.VerifyReport` (``.ok``, ``.format()``).
    """
    root = dataset_root(cfg)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {cfg.simulation_dataset.name!r}: no folder {root} (nothing simulated yet, or "
                                "another paths.output_dir)")
    return verify_dataset(root, deep=deep)


def sweep_shards(cfg: DictConfig, task_overrides) -> list[tuple[float, int, list[str]]]:
    """(temperature, structure index, required fields) of every job of a ``simulate.py -m`` sweep.

    ``cfg`` is the multirun's config (sweep overrides not applied), ``task_overrides`` the command line's
    overrides (``temperature=0.6,0.5``, ``structure_index=range(0,4)``). Only ``temperature`` and
    ``structure_index`` may vary; a sweep over anything else that names the shard (dataset, structure, output
    folder) returns [] (nothing can be predicted; each job still records itself when it starts).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in task_overrides])
    values: dict[str, list] = {}
    for o in parsed:
        if not o.is_sweep_override():
            continue
        key = o.key_or_group
        if key in ("temperature", "structure_index"):
            values[key] = list(o.sweep_string_iterator())
        elif key.split(".")[0] in ("simulation_dataset", "structure", "paths", "md", "seed", "simulation_experiment"):
            log.warning("sweep over %s: the expected shards are not recorded in advance", key)
            return []

    def parse(key, text):
        if text in ("null", "None"):
            return None
        return float(text) if key == "temperature" else int(text)

    structure = load_structure(cfg.structure) if cfg.structure is not None else None
    temps = [parse("temperature", t) for t in values.get("temperature", [])] or [cfg.temperature]
    indices = [parse("structure_index", k) for k in values.get("structure_index", [])] or [cfg.structure_index]
    out = []
    for t in temps:
        for k in indices:
            job = OmegaConf.merge(cfg, {"temperature": t, "structure_index": k})
            temperature = _resolve_temperature(job, structure)
            for index in structures_of_job(job, structure, _resolve_index(job, structure), temperature):
                out.append((temperature, index, required_fields(job, temperature)))
    return out


def print_summary(summary: dict, cfg: DictConfig) -> None:
    """Human-readable report of a shard, with the ballistic limit and GlassBench's own runs as checks."""
    T = summary["temperature"]
    print(f"\nshard: {summary['shard']}")
    print(f"  stages run: {summary['ran'] or 'none'}; already present: {summary['skipped'] or 'none'}")
    if not summary["equilibrated"]:
        print("  WARNING: structure flagged as not equilibrated (see the shard's equilibration_report)")
    print(f"  inherent-structure energy per particle: {summary['inherent_energy']:.5f} epsilon")
    if "times" not in summary:
        return
    msd = summary.get("msd")
    print(f"  T = {T:g}: type-0 mean bond-breaking propensity <C_B>(t)"
          + (" and mean-squared displacement (ballistic limit 2 T t^2 shown for t <= 1):" if msd else ":"))
    print(f"  {'t':>10} {'<C_B>':>8}" + (f" {'MSD':>12} {'2 T t^2':>12}" if msd else ""))
    for k, t in enumerate(summary["times"]):
        row = f"  {t:10.3f} {summary['mean_propensity_type0'][k]:8.4f}"
        if msd:
            row += f" {msd[k]:12.5g}" + (f" {2 * T * t * t:12.5g}" if t <= 1.0 else "")
        print(row)
    if cfg.structure is not None and Path(cfg.structure).suffix == ".npz" and msd:
        gb = read_glassbench(cfg.structure)
        if gb.time is not None and gb.run_positions is not None:
            ref = ((gb.run_positions - gb.positions) ** 2).sum(-1).mean()
            print(f"  GlassBench's own {len(gb.run_positions)} runs at t = {gb.time:g}: MSD = {ref:.5g}")

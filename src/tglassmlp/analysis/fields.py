"""Propensity fields to analyse, from MD shards, from trained networks, or from any prediction arrays.

The analysis (``tglassmlp.analysis.job``) works on :class:`PropensityField` objects: the per-particle propensities
of S structures at one temperature on a common axis of K times (equivalently K <C_B> levels). Three sources:

* MD: :func:`md_fields` reads the shards (``propensity`` (T_n, N) at the MD ``times``);
  :meth:`PropensityField.at_levels` reads them off at fixed <C_B> levels (``labels_at_levels``).
* Predictions, any origin (the reader interface): build one :class:`StructurePropensity` per structure with
  :func:`structure_propensity` from plain arrays, then group them with :func:`prediction_field`::

      s = structure_propensity(positions, box, mean, spread=std, members=per_network, types=types)
      field = prediction_field(temperature=0.35, levels=[0.9, 0.8], structures=[s, ...], tts=tts)

  ``positions`` (N, 2) [sigma] are R_i(0), ``mean`` (N,) or (K, N) the ensemble-mean propensity,
  ``spread`` the same shape (std over networks), ``members`` (M, K, N) the per-network predictions (gives
  the paper's error bars: every observable is computed per network, then mean +- std over networks).
* predict.py's files (``<label>.pred.h5``, docs/predict-format.md): :func:`read_prediction_fields` reads a
  folder or list of them into one field per temperature, through the interface above, with every network's
  mean-constrained prediction as the members (the ``predictions`` hook of ``conf/analyze.yaml``:
  ``python analyze.py predictions=files``).
* Trained networks: :class:`NetworkProbe` runs saved networks on a shard's descriptors and returns their
  plain predictions (no mean constraint) together with the internals (attention weights, bottleneck).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ containers
@dataclass
class StructurePropensity:
    """Propensities of the analysed particles of one structure at K times/levels.

    Attributes:
        positions: (N, 2) positions R_i(0) at t = 0 [sigma].
        box: side of the square periodic box [sigma].
        values: (K, N) propensity (MD: isoconfigurational mean; prediction: mean over networks).
        spread: (K, N) std over networks, or None.
        members: (M, K, N) per-network predictions, or None.
        name: where it comes from (shard path, file name).
        truth: (K, N) MD propensity at the same times, when known (Pearson, bottleneck colours), or None;
            rows of levels the MD does not reach are NaN.
        trained: whether the networks were trained on this structure (its Pearson is not a test score).
        file: the prediction file it was read from ('' otherwise).
    """

    positions: np.ndarray
    box: float
    values: np.ndarray
    spread: np.ndarray | None = None
    members: np.ndarray | None = None
    name: str = ""
    truth: np.ndarray | None = None
    trained: bool = False
    file: str = ""

    @property
    def n_particles(self) -> int:
        return self.values.shape[1]


def _checked(array, shape, what: str, name: str) -> np.ndarray:
    a = np.asarray(array, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name or 'structure'}: {what} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name or 'structure'}: {what} contains NaN or inf")
    return a


def structure_propensity(positions, box, propensity, spread=None, members=None, *, types=None,
                         reference_type: int | None = None, truth=None, name: str = "",
                         trained: bool = False) -> StructurePropensity:
    """The reader interface: one structure's propensities from plain arrays, validated.

    Args:
        positions: (N, 2) positions at t = 0 [sigma].
        box: square box side [sigma].
        propensity: (N,) or (K, N) propensity (ensemble mean for predictions).
        spread: same shape as ``propensity``: std over networks (optional).
        members: (M, N) or (M, K, N) per-network propensities (optional; enables ensemble error bars).
        types: (N,) particle types; with ``reference_type`` only those particles are kept (the paper
            analyses its type 1 = our type 0).
        truth: (N,) or (K, N) MD propensity of the same particles and times (optional).
        name: label used in error messages and tables.
        trained: the networks were trained on this structure (kept out of the Pearson test score).
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"{name or 'structure'}: positions must be (N, 2), got {pos.shape}")
    n = pos.shape[0]
    box = float(box)
    if not (math.isfinite(box) and box > 0):
        raise ValueError(f"{name or 'structure'}: box must be a positive length, got {box}")
    values = np.asarray(propensity, dtype=np.float64)
    values = values[None, :] if values.ndim == 1 else values
    k = values.shape[0]
    values = _checked(values, (k, n), "propensity", name)
    if spread is not None:
        spread = np.asarray(spread, dtype=np.float64)
        spread = _checked(spread[None, :] if spread.ndim == 1 else spread, (k, n), "spread", name)
    if members is not None:
        members = np.asarray(members, dtype=np.float64)
        if members.ndim == 2:
            members = members[:, None, :]
        members = _checked(members, (members.shape[0], k, n), "members", name)
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64)
        truth = _checked(truth[None, :] if truth.ndim == 1 else truth, (k, n), "truth", name)
    if reference_type is not None:
        if types is None:
            raise ValueError(f"{name or 'structure'}: reference_type given without types")
        keep = np.asarray(types).reshape(-1) == int(reference_type)
        if keep.shape != (n,):
            raise ValueError(f"{name or 'structure'}: types has {keep.size} entries for {n} particles")
        if keep.sum() < 2:
            raise ValueError(f"{name or 'structure'}: fewer than 2 particles of type {reference_type}")
        pos, values = pos[keep], values[:, keep]
        spread = None if spread is None else spread[:, keep]
        members = None if members is None else members[:, :, keep]
        truth = None if truth is None else truth[:, keep]
    return StructurePropensity(positions=pos, box=box, values=values, spread=spread, members=members,
                               name=name, truth=truth, trained=bool(trained))


@dataclass
class PropensityField:
    """S structures at one temperature on a common axis of K times.

    Attributes:
        source: 'MD' or the model's name.
        temperature: T [epsilon/k_B].
        times: (K,) [tau] (NaN where unknown, e.g. no relaxation time at this T).
        levels: (K,) <C_B>(t) (MD: the temperature's measured reference-type average).
        structures: the structures (same K; N may differ).
        info: provenance of predictions (prediction files: ensemble, ensemble_source, constraint settings and
            convergence, files; see :func:`read_prediction_fields`), {} otherwise.
    """

    source: str
    temperature: float
    times: np.ndarray
    levels: np.ndarray
    structures: list[StructurePropensity] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1)
        self.levels = np.asarray(self.levels, dtype=np.float64).reshape(-1)
        if self.times.shape != self.levels.shape:
            raise ValueError(f"{self.source} T = {self.temperature:g}: {self.times.size} times, {self.levels.size} levels")
        if not self.structures:
            raise ValueError(f"{self.source} T = {self.temperature:g}: no structures")
        for s in self.structures:
            if s.values.shape[0] != self.times.size:
                raise ValueError(f"{s.name}: {s.values.shape[0]} values per particle, the field has {self.times.size} times")
        boxes = {round(s.box, 9) for s in self.structures}
        if len(boxes) != 1:
            raise ValueError(f"{self.source} T = {self.temperature:g}: structures have different boxes {sorted(boxes)}")

    @property
    def box(self) -> float:
        return self.structures[0].box

    @property
    def n_members(self) -> int:
        """Networks per structure (0 without per-network predictions)."""
        m = {0 if s.members is None else s.members.shape[0] for s in self.structures}
        return min(m)

    def values(self) -> list[np.ndarray]:
        """(K, N_s) per structure."""
        return [s.values for s in self.structures]

    def member_values(self, m: int) -> list[np.ndarray]:
        """(K, N_s) per structure for network m."""
        return [s.members[m] for s in self.structures]

    def at_levels(self, levels: Sequence[float]) -> "PropensityField":
        """MD propensities read off at fixed <C_B> levels (``labels_at_levels``; levels not reached are dropped)."""
        from tglassmlp.observables.labels import labels_at_levels

        kept, t_star, per = [], [], [[] for _ in self.structures]
        for c in levels:
            ts = None
            for j, s in enumerate(self.structures):
                t, lab = labels_at_levels(self.times, s.values, self.levels, [c])
                if not np.isfinite(t[0]):
                    break
                ts = t[0]
                per[j].append(lab[0])
            else:
                kept.append(float(c))
                t_star.append(ts)
                continue
            for j in range(len(per)):  # level not reached: undo any partial append
                if len(per[j]) > len(kept):
                    per[j].pop()
        if not kept:
            raise ValueError(f"{self.source} T = {self.temperature:g}: none of the levels {list(levels)} is reached")
        structs = [replace(s, values=np.array(v), spread=None, members=None, truth=np.array(v))
                   for s, v in zip(self.structures, per)]
        return PropensityField(self.source, self.temperature, np.array(t_star), np.array(kept), structs)


def prediction_field(temperature: float, levels: Sequence[float], structures: Sequence[StructurePropensity],
                     source: str = "tGlassMLP", times=None, tts=None, info: dict | None = None) -> PropensityField:
    """Group predicted structures at one temperature. ``times`` [tau] default to the time-temperature
    superposition ``tts.time_at(levels, T)`` when a TTS object is given (NaN if it cannot extrapolate)."""
    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    if times is None:
        times = np.full(levels.shape, np.nan)
        if tts is not None:
            try:
                times = np.asarray(tts.time_at(levels, temperature), dtype=np.float64)
            except ValueError as exc:
                log.warning("T = %g: no time for the levels (%s); the time axis is left empty", temperature, exc)
    return PropensityField(source, float(temperature), times, levels, list(structures), dict(info or {}))


# ------------------------------------------------------------------------------------------------ MD
def md_fields(root, reference_type: int = 0) -> dict[float, PropensityField]:
    """{T: MD field on the MD times} for every temperature under ``root`` with propensities.

    ``levels`` are the temperature's reference-type <C_B>(t) averaged over its structures (as in
    ``analysis.labels_report.temperature_curves``, which this reuses); not equilibrated shards are left out.
    """
    from tglassmlp.analysis.labels_report import temperature_curves
    from tglassmlp.data.shards import read_shard

    curves = temperature_curves(root, reference_type)
    skipped = curves.pop("skipped", [])
    for path in skipped:
        log.warning("%s: not equilibrated; left out of the analysis", path)
    out = {}
    for temperature, (times, curve, items) in curves.items():
        structs = []
        for path, propensity, types in items:
            shard = read_shard(path, fields=["positions"])
            s = structure_propensity(shard["positions"], shard.box, propensity, types=types,
                                     reference_type=reference_type, name=str(path))
            s.truth = s.values  # MD is its own ground truth
            structs.append(s)
        out[round(float(temperature), 3)] = PropensityField("MD", float(temperature), times, curve, structs)
    return out


# ------------------------------------------------------------------------------------------------ prediction files
#: name ending of predict.py's per-structure files (docs/predict-format.md); summary.json and tts.json sit beside them
PREDICTION_SUFFIX = ".pred.h5"


def find_prediction_files(spec) -> list[Path]:
    """The prediction files of a predict.py ``out_dir`` (its ``*.pred.h5``, not recursive), of a file, or of a list.

    A folder is one predict.py output folder: other HDF5 files in it are refused (a data folder given by
    mistake, or something else mixed in), and when its ``summary.json`` lists files that are not there (an
    incomplete copy) that is an error too; unfinished ``*.tmp-<pid>.<k>`` files of a running predict.py are skipped.

    Raises:
        FileNotFoundError: a path that does not exist, a folder without prediction files, files summary.json
            lists but the folder lacks.
        ValueError: a file that is not a ``*.pred.h5`` (named).
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise FileNotFoundError("predictions: no path given (predictions.path=FOLDER, FILE or [FILE, ...])")
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.is_file()]
            found = sorted(p for p in files if p.name.endswith(PREDICTION_SUFFIX))
            foreign = sorted(p.name for p in files if p.suffix in (".h5", ".hdf5") and p not in found)
            if foreign:
                raise ValueError(f"prediction folder {path}: {foreign[:3]}{' ...' if len(foreign) > 3 else ''} "
                                 f"{'is' if len(foreign) == 1 else 'are'} not predict.py output (*{PREDICTION_SUFFIX}); "
                                 "give predict.py's out_dir, which holds its files only")
            if not found:
                raise FileNotFoundError(f"prediction folder {path} holds no *{PREDICTION_SUFFIX} file (run predict.py "
                                        f"with out_dir={path} first)")
            summary = path / "summary.json"
            if summary.is_file():
                try:
                    listed = {Path(f).name for f in json.loads(summary.read_text()).get("files", [])}
                except (json.JSONDecodeError, AttributeError, TypeError) as exc:
                    raise ValueError(f"{summary}: not predict.py's summary ({exc})") from None
                missing = sorted(listed - {p.name for p in found})
                if missing:
                    raise FileNotFoundError(f"{summary} lists {missing[:3]}{' ...' if len(missing) > 3 else ''}, "
                                            f"missing from {path} (an incomplete copy? running predict.py again with "
                                            "the same settings redoes only the missing files)")
            out += found
        elif path.is_file():
            if not path.name.endswith(PREDICTION_SUFFIX):
                raise ValueError(f"{path}: not a predict.py output file (expected <label>{PREDICTION_SUFFIX})")
            out.append(path)
        else:
            raise FileNotFoundError(f"prediction path {path} does not exist")
    return list(dict.fromkeys(out))


@dataclass
class _PredictedStructure:
    file: Path
    levels: np.ndarray
    times: np.ndarray
    structure: StructurePropensity
    converged: np.ndarray  # (K, L) bool
    residual: np.ndarray   # (K, L) mean prediction - level


def _read_prediction_file(path: Path) -> tuple[_PredictedStructure, dict, dict]:
    """One file as (structure of its reference particles, what must agree between files, its attributes)."""
    from tglassmlp.predict import read_prediction

    d = read_prediction(path)  # PredictionInputError (a ValueError) naming the file for a foreign or newer file
    a = d["attrs"]
    ref_type = int(a["reference_type"])
    types = np.asarray(d["types"]).reshape(-1)
    ref = np.flatnonzero(types == ref_type)
    if not np.array_equal(ref, np.asarray(d["reference_index"]).reshape(-1)):
        raise ValueError(f"{path}: reference_index does not list the particles of type {ref_type}")
    levels = np.asarray(d["levels"], dtype=np.float64).reshape(-1)
    times = np.asarray(d["times"], dtype=np.float64).reshape(-1)
    if times.shape != levels.shape:
        raise ValueError(f"{path}: {times.size} times for {levels.size} levels")
    members = d.get("propensity_networks")
    n_networks = len(a["ensemble"])
    if members is not None and members.shape[0] != n_networks:
        raise ValueError(f"{path}: {members.shape[0]} per-network predictions for an ensemble of {n_networks}")
    try:
        # the files hold NaN for the particles that are not predicted: select before validating
        s = structure_propensity(np.asarray(d["positions"])[ref], a["box"], np.asarray(d["propensity_mean"])[:, ref],
                                 spread=np.asarray(d["propensity_std"])[:, ref],
                                 members=None if members is None else np.asarray(members)[:, :, ref],
                                 name=str(a["source"]))
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    s.file = str(path)
    c = d["constraint"]
    identity = {"ensemble (network digests)": [e["digest"] for e in a["ensemble"]], "constraint": a["constraint"],
                "reference_type": ref_type, "per-network predictions (save_networks)": members is not None}
    item = _PredictedStructure(path, levels, times, s, np.asarray(c["converged"]).astype(bool),
                               np.asarray(c["mean_prediction"], dtype=np.float64) - levels[None, :])
    return item, identity, a


def read_prediction_fields(path, tts=None, source: str = "tGlassMLP") -> list[PropensityField]:
    """predict.py's output files as one :class:`PropensityField` per temperature (the ``predictions`` hook).

    Args:
        path: a predict.py ``out_dir``, a ``.pred.h5`` file, or a list of them (:func:`find_prediction_files`).
        tts: TimeTemperatureSuperposition giving the time axis of files predicted at levels (their ``times``
            are NaN); files predicted at times (predict.py ``times=[...]``) keep those times [tau].
        source: the fields' name in tables and figures.

    Returns:
        Fields from high to low T. Per structure (sorted by input path): ``values`` (K, N_0) the ensemble-mean
        mean-constrained propensity of the N_0 reference particles at the K levels, ``spread`` the std over
        networks, ``members`` (M, K, N_0) every network's prediction (when predict.py ran with
        ``save_networks=true``: the ensemble error bars), ``positions`` the input configuration [sigma],
        ``name`` the input structure's path, ``file`` the prediction file. ``info``: ensemble, ensemble_source,
        constraint settings, ``converged_fraction`` and ``max_abs_residual`` of the mean constraint over
        (network, level, structure), files.

    Raises:
        FileNotFoundError / ValueError naming the file(s): see :func:`find_prediction_files`; a file that is
        not a prediction file; files of different ensembles (network digests and their order: member m must be
        the same network in every structure), constraint settings or reference types, or some with and some
        without per-network predictions; two files for one input structure; at one temperature, files with
        different levels or times.
    """
    files = find_prediction_files(path)
    first: tuple[Path, dict, dict] | None = None
    by_source: dict[str, Path] = {}
    by_temperature: dict[float, list[_PredictedStructure]] = {}
    for p in files:
        item, identity, attrs = _read_prediction_file(p)
        if first is None:
            first = (p, identity, attrs)
        for key, value in identity.items():
            if value != first[1][key]:
                raise ValueError(f"{p}: {key} {value} differs from {first[0]}'s {first[1][key]}: these files are not "
                                 "one ensemble's prediction (remove the foreign files, or predict.py all structures "
                                 "with one ensemble into a clean out_dir)")
        name = item.structure.name
        if name in by_source:
            raise ValueError(f"{p} and {by_source[name]} both predict the structure {name}: keep one")
        by_source[name] = p
        by_temperature.setdefault(round(float(attrs["temperature"]), 3), []).append(item)
    fields = []
    for temperature in sorted(by_temperature, reverse=True):
        items = sorted(by_temperature[temperature], key=lambda it: it.structure.name)
        ref = items[0]
        for it in items[1:]:
            if it.levels.shape != ref.levels.shape or not np.allclose(it.levels, ref.levels, rtol=0, atol=1e-12):
                raise ValueError(f"T = {temperature:g}: {it.file} is at levels {it.levels.tolist()}, {ref.file} at "
                                 f"{ref.levels.tolist()}; predict one temperature's structures at the same levels")
            if not np.array_equal(it.times, ref.times, equal_nan=True):
                raise ValueError(f"T = {temperature:g}: {it.file} is at times {it.times.tolist()}, {ref.file} at "
                                 f"{ref.times.tolist()}; predict one temperature's structures at the same times")
        converged = np.stack([it.converged for it in items])
        residual = np.stack([it.residual for it in items])
        info = {"files": [str(it.file) for it in items], "ensemble": first[2]["ensemble"],
                "ensemble_source": first[2].get("ensemble_source", {}), "constraint": first[2]["constraint"],
                "converged_fraction": float(converged.mean()),
                "max_abs_residual": float(np.abs(residual).max())}
        times = ref.times if np.all(np.isfinite(ref.times)) else None
        fields.append(prediction_field(temperature, ref.levels, [it.structure for it in items], source=source,
                                       times=times, tts=tts, info=info))
    return fields


def saved_networks_under(folder) -> list[SavedNetwork]:
    """Every model directory below ``folder`` (a train.py sweep, a DirectoryEnsemble folder) that carries its
    training state points; the others are skipped with a log line."""
    nets = []
    for model_dir in sorted({p.parent for p in Path(folder).rglob("network.yaml")}):
        try:
            nets.append(_saved_network(model_dir))
        except (FileNotFoundError, ValueError) as exc:
            log.info("%s: skipped (%s)", model_dir, exc)
    return nets


# ------------------------------------------------------------------------------------------------ networks
@dataclass
class SavedNetwork:
    """A trained network of a train.py run folder: its ``artifacts/model`` directory and its resolved config.

    Attributes:
        network: the TGlassMLP in eval mode. scaler: its DescriptorScaler.
        state_points: contents of ``state_points.json`` ({'train': [[T, c], ...], ...}).
        config: the run's ``artifacts/config/train.yaml`` as a dict ({} when absent).
        path: the model directory.
        run_id: the MLflow run that trained it (``artifacts/run.json``), '' when unknown.
        digest: sha256 prefix of the weights and scaler (``tglassmlp.model.artifact.load_model_dir``): the identity
            prediction files record for each network.
    """

    network: object
    scaler: object
    state_points: dict
    config: dict
    path: Path
    digest: str = ""
    run_id: str = ""

    @property
    def training_temperatures(self) -> list[float]:
        return sorted({round(float(t), 3) for t, _ in self.state_points.get("train", [])})


def _saved_network(model_dir: Path) -> SavedNetwork:
    """One run's network, read by :func:`tglassmlp.model.artifact.load_model_dir` (the one reader of the layout), with
    the run's config beside it."""
    from omegaconf import OmegaConf

    from tglassmlp.model.artifact import load_model_dir

    member = load_model_dir(model_dir)
    if member.state_points is None:
        raise FileNotFoundError(f"{model_dir}: no state_points.json (the training state points train.py writes; "
                                "the analysis separates trained from unseen temperatures with them)")
    config_path = model_dir.parent / "config" / "train.yaml"
    config = OmegaConf.to_container(OmegaConf.load(config_path)) if config_path.is_file() else {}
    run_path = model_dir.parent / "run.json"
    run_id = str(json.loads(run_path.read_text()).get("run_id") or "") if run_path.is_file() else ""
    return SavedNetwork(member.network, member.scaler, member.state_points, config, model_dir, member.digest, run_id)


def find_sweep_networks(sweep_dir, selection: str = "all") -> list[SavedNetwork]:
    """The networks of a train.py multirun folder (``<sweep>/<job>/artifacts/model``).

    ``selection``: 'all' or 'selected' (the runs that ``<sweep>/ensemble.json`` selects, matched by MLflow run
    id (``<job>/artifacts/run.json``; sweeps trained before that file existed are matched by seed); none
    selected is an error naming the manifest).
    """
    sweep_dir = Path(sweep_dir)
    dirs = sorted(sweep_dir.glob("*/artifacts/model"), key=lambda p: p.parts[-3])
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir}: no */artifacts/model folders (run `python train.py -m ...` first)")
    nets = [_saved_network(d) for d in dirs]
    if selection == "all":
        return nets
    if selection != "selected":
        raise ValueError(f"networks.selection must be 'all' or 'selected', got {selection!r}")
    from tglassmlp.ensemble.manifest import MANIFEST_NAME, load_manifest, ranked_entries, selected_run_ids

    manifest = sweep_dir / MANIFEST_NAME
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no ensemble manifest; use networks.selection=all")
    result = load_manifest(manifest)
    run_ids = set(selected_run_ids(result))
    if all(n.run_id for n in nets):
        chosen = [n for n in nets if n.run_id in run_ids]
    else:  # a sweep from before run.json: its jobs are known by seed only
        seeds = {str(e["seed"]) for e in ranked_entries(result) if e["run_id"] in run_ids}
        chosen = [n for n in nets if str(n.config.get("seed")) in seeds]
    if not chosen:
        raise ValueError(f"{manifest}: no network is selected ({result.get('note', '')}); use networks.selection=all")
    return chosen


def latest_sweep(root) -> Path | None:
    """The newest ``multirun_*`` folder under ``root`` that holds trained networks (None if there is none):
    :func:`tglassmlp.ensemble.sources.latest_sweep`, the one rule of 'latest'."""
    from tglassmlp.ensemble.sources import latest_sweep as newest

    return newest(root, needs="networks")


@dataclass
class ProbeResult:
    """Network outputs for one structure at K levels.

    Attributes:
        propensity: (M, K, N) per-network prediction of the analysed particles.
        bottleneck: (M, K, N, n_bottleneck) bottleneck activations.
        attention: (M, K, M_S) particle-averaged attention weights.
        names: (M_S,) descriptor columns of the attention weights (the scaler's kept names).
    """

    propensity: np.ndarray
    bottleneck: np.ndarray
    attention: np.ndarray
    names: list[str]


class NetworkProbe:
    """Run saved networks on structures and keep their internals (paper Sec. VI).

    Args:
        networks: the :class:`SavedNetwork` ensemble (same descriptor columns).
        reference_type: particles whose propensity is predicted (type 0 = the paper's type 1).
        cache_dir: descriptor cache (:func:`tglassmlp.data.structures.structure_descriptors`).
        descriptors: descriptor settings (DescriptorSettings or the ``descriptors`` config node; None: defaults).

    These are the plain network outputs (no iterative mean constraint of App. B: that belongs to predict.py).
    """

    def __init__(self, networks: Sequence[SavedNetwork], reference_type: int = 0, cache_dir=None, descriptors=None):
        if not networks:
            raise ValueError("NetworkProbe: no networks")
        names = {tuple(n.scaler.kept_names) for n in networks}
        if len(names) != 1:
            raise ValueError("NetworkProbe: the networks use different descriptor columns")
        self.networks = list(networks)
        self.names = list(next(iter(names)))
        self.reference_type = int(reference_type)
        self.cache_dir = cache_dir
        self.descriptors = descriptors

    def shard_inputs(self, path):
        """(raw descriptors (N_ref, D), positions (N_ref, 2), box, reference mask (N,)) of one shard."""
        from tglassmlp.data.structures import read_structure, structure_descriptors
        from tglassmlp.observables.descriptors import load_descriptor_settings

        structure = read_structure(path, ("positions", "types", "inherent_positions", "particle_energies",
                                          "descriptors"))
        settings = load_descriptor_settings("default" if self.descriptors is None else self.descriptors)
        desc, _ = structure_descriptors(structure, self.cache_dir, settings)
        ref = structure.types == self.reference_type
        return desc[ref], structure.positions[ref], structure.box, ref

    def run(self, descriptors, temperature: float, levels: Sequence[float]) -> ProbeResult:
        """Outputs of every network for raw descriptors (N, D) at temperature T and the K levels."""
        import torch

        levels = [float(c) for c in levels]
        props, necks, atts = [], [], []
        with torch.no_grad():
            for net in self.networks:
                x = torch.as_tensor(net.scaler.transform(descriptors), dtype=torch.float32)
                out = net.network(x, torch.full((len(levels),), float(temperature)), torch.tensor(levels),
                                  return_internals=True)
                props.append(out.propensity.numpy())
                necks.append(out.bottleneck.numpy())
                atts.append(out.mean_attention_weights.numpy())
        return ProbeResult(np.array(props, dtype=np.float64), np.array(necks, dtype=np.float64),
                           np.array(atts, dtype=np.float64), self.names)

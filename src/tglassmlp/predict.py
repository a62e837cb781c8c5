"""predict.py's work as plain functions: a trained tGlassMLP ensemble applied to any set of structures.

    python predict.py                                              # selected demo networks on data/demo/T0.350
    python predict.py ensemble_source=manifest ensemble_source.manifest=SWEEP/ensemble.json structures=DIR
    python predict.py ensemble_source=directory ensemble_source.path=DIR structures=FILE.npz levels=[0.8,0.5]
    python predict.py times=[100,1000] tts.data_root=data/demo     # times [tau] -> levels by the TTS

Pipeline (:func:`predict_structures`, one structure at a time, so memory does not grow with their number):

1. **Ensemble** (:class:`Ensemble`): networks with their descriptor standardisation, from an ensemble manifest
   (:class:`ManifestEnsemble`), an MLflow experiment and tag filter (:class:`MlflowEnsemble`) or a folder of
   model directories (:class:`DirectoryEnsemble`). A model directory is what ``train.py`` logs as the run
   artefact ``model/``: ``network.yaml`` (constructor arguments), ``state_dict.pt``, ``scaler.npz``
   (:class:`~tglassmlp.observables.DescriptorScaler`) and optionally ``state_points.json``.
2. **Structures** (:func:`find_structures`, :func:`load_structure`): our shards (``.h5``), GlassBench files
   (``N<N>T<T>_<k>_tc<code>.npz``) or folders of them, any N. A missing inherent structure is computed
   (:func:`~tglassmlp.physics.inherent_structure`), missing descriptors too
   (:func:`~tglassmlp.data.datamodule.shard_descriptors`, cached on disk). :func:`check_structure` refuses a
   structure that is not the model's system (a type missing, density or composition off, descriptor columns
   unlike the scaler's).
3. **State points**: the structure's temperature T (shard attribute or GlassBench file name; ``temperature``
   overrides) and the requested levels c = <C_B>, or times t [tau] turned into levels at T by the
   time-temperature superposition (:class:`~tglassmlp.observables.TimeTemperatureSuperposition`, read from a
   JSON file, :func:`tts_from_json`, or fitted on an MD dataset, :func:`tts_from_data`).
4. **Prediction** (:class:`EnsemblePrediction`): for each network, the type-0 particles' standardised
   descriptors are fed in chunks of ``chunk_size`` particles (the network is per particle: the attention
   softmax runs over a particle's own descriptors, the state point is shared), all levels of the structure
   at once (:class:`~tglassmlp.model.network.LevelBatchedForward`: the attention factorised into a particle
   part and a state part), under the mean constraint (:class:`MeanConstraint`).
5. **Output**: one HDF5 file per structure (layout below and in ``docs/predict-format.md``), written
   atomically; a rerun skips structures whose file holds the same prediction settings (resume) and refuses
   to overwrite a file made with other settings unless ``overwrite``. ``summary.json`` lists them all.

Mean constraint (paper App. B). The network's input c is iterated so that the mean prediction over the
type-0 particles of one structure, ``Xbar(c_in)``, equals the target level c*:

    c_0 = c*,   c_{j+1} = c_j - step (Xbar(c_j) - c*),   at most ``max_iterations`` (6) updates,

stopping when |Xbar - c*| <= ``tolerance``. Near a solution the error changes by the factor
1 - step * dXbar/dc per update; a self-consistent network has dXbar/dc ~ 1, so the error shrinks by ~0.25
per update (step = 0.75). The paper prints ``c_{j+1} = c_j + 0.75 (Xbar - c*)``: with dXbar/dc > 0 that
multiplies the error by 1 + 0.75 dXbar/dc > 1 and diverges (``sign='paper'`` reproduces it; the tests show
both). The constraint runs separately for every network and structure; the prediction reported is the
one at the last evaluated input (when not converged: the evaluation with the smallest |Xbar - c*|), the
inputs are kept in [0, 1] (``bounds``), and convergence is recorded per (network, level).

Output file (``<out_dir>/<label>.pred.h5``; ``label`` = ``T<T>_s<k>`` for a shard, the file stem otherwise).
N: particles of the input, K: networks, L: levels, J = max_iterations. Per-particle arrays keep the input's
particle order; entries of non-reference particles (types other than ``reference_type``) are NaN.

==================================== ============ ==========================================================
dataset                              shape        meaning
==================================== ============ ==========================================================
``types``                            (N,) int8    particle types 0, 1, 2 as in the input
``positions``                        (N, 2)       input configuration [sigma]
``inherent_positions``               (N, 2)       inherent structure the descriptors were computed on [sigma]
``reference_index``                  (N_0,) int64 indices of the reference (type-0) particles
``levels``                           (L,)         target levels c* = <C_B> [-]
``times``                            (L,)         times of the levels [tau] (NaN when levels were requested)
``propensity_mean``                  (L, N) f4    mean over the K networks of the predicted propensity
``propensity_std``                   (L, N) f4    spread over the networks (population std, ddof = 0)
``propensity_networks``              (K, L, N) f4 every network's prediction (when ``save_networks``)
``constraint/input_level``           (K, L)       network input c_j of the reported prediction
``constraint/mean_prediction``       (K, L)       Xbar at that input
``constraint/iterations``            (K, L) int   updates made (0: the first evaluation was within tolerance)
``constraint/converged``             (K, L) int8  1 where |Xbar - c*| <= tolerance
``constraint/history_input``         (K, L, J+1)  c_j per iteration (NaN after the stop)
``constraint/history_mean``          (K, L, J+1)  Xbar(c_j) per iteration (NaN after the stop)
==================================== ============ ==========================================================

Root attributes: ``format`` (= ``tglassmlp-prediction``), ``format_version``, ``created``, ``source`` (input
file), ``source_kind`` (``shard`` / ``glassbench``), ``temperature``, ``box``, ``n_particles``,
``reference_type``, ``inherent_computed`` (1 if this run minimised the structure), ``ensemble`` (JSON list of
{name, digest, source}), ``settings`` (JSON) and ``settings_hash`` (what a rerun compares), ``constraint``
(JSON), ``package_versions`` (JSON). :func:`read_prediction` reads a file back into a dict.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tglassmlp.atomic import atomic_path, atomic_write, write_json_atomic, write_text_atomic
from tglassmlp.model.network import LevelBatchedForward

log = logging.getLogger(__name__)

FORMAT = "tglassmlp-prediction"
FORMAT_VERSION = 1
#: Input suffixes: our shards and GlassBench files.
SHARD_SUFFIXES = (".h5", ".hdf5")
GLASSBENCH_SUFFIXES = (".npz",)
#: Files of a model directory (train.py's run artefact ``model/``); state_points.json is optional.
MODEL_FILES = ("network.yaml", "state_dict.pt", "scaler.npz")
#: Default MLflow filter for the networks that passed the self-consistency selection (tglassmlp.ensemble).
SELECTED_FILTER = "tags.`ensemble.selected` = 'true'"


class PredictionInputError(ValueError):
    """An ensemble, structure or request predict.py cannot use (the message names the file / run / value)."""


# ============================================================================================== ensemble
@dataclass
class EnsembleMember:
    """One trained network and what it needs to read a structure.

    Attributes:
        name: MLflow run id, or the model directory.
        network: :class:`~tglassmlp.model.network.TGlassMLP` in eval mode.
        scaler: the descriptor standardisation fitted with the network (raw names -> kept columns).
        state_points: contents of ``state_points.json`` ({'train': [[T, c], ...], ...}) or None.
        digest: first 16 hex digits of sha256(state_dict.pt + scaler.npz): identifies the weights.
        source: where it was loaded from (``mlflow:<uri>``, a directory).
    """

    name: str
    network: torch.nn.Module
    scaler: Any
    state_points: dict | None
    digest: str
    source: str

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "digest": self.digest, "source": self.source}

    def features(self, descriptors: np.ndarray) -> torch.Tensor:
        """(N_0, M_S) float32 network input: the raw (N_0, D) descriptors of the reference particles
        standardised with this network's own scaler."""
        return torch.as_tensor(self.scaler.transform(descriptors), dtype=torch.float32)

    @torch.no_grad()
    def predict(self, descriptors: np.ndarray, temperature: float, level: float) -> np.ndarray:
        """(N_0,) float64 propensity of the reference particles (raw (N_0, D) descriptors) at the state
        input (T [epsilon/k_B], c), as the network gives it: no mean constraint (that is
        :func:`constrained_prediction`). Used by the selection and the transfer's labels."""
        return self.network(self.features(descriptors), float(temperature), float(level)).numpy().astype(np.float64)


@dataclass
class Ensemble:
    """The networks of a prediction; ``source`` describes how they were chosen (recorded in the outputs)."""

    members: list[EnsembleMember]
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.members:
            raise PredictionInputError(f"ensemble {self.source}: no network")

    def __len__(self) -> int:
        return len(self.members)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def load_model_dir(path: str | os.PathLike, name: str | None = None, source: str | None = None) -> EnsembleMember:
    """One network from a model directory (``network.yaml``, ``state_dict.pt``, ``scaler.npz``, optionally
    ``state_points.json``): the one reader of the layout :func:`save_model_dir` writes (also behind
    ``tglassmlp.ensemble.load_run_network`` and ``tglassmlp.analysis.fields.find_sweep_networks``).

    Raises:
        PredictionInputError: a missing file (a missing ``scaler.npz`` above all: without the training
            standardisation the descriptors cannot be fed), a network of another class, or a network whose
            input width differs from the scaler's kept columns.
    """
    from omegaconf import OmegaConf

    from tglassmlp.model.network import TGlassMLP
    from tglassmlp.observables import DescriptorScaler

    path = Path(path)
    if not path.is_dir():
        raise PredictionInputError(f"model directory {path} does not exist")
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        what = ("; scaler.npz is the descriptor standardisation of the training data, without which the "
                "network cannot read descriptors") if "scaler.npz" in missing else ""
        raise PredictionInputError(f"model directory {path} lacks {missing} (a model directory holds "
                                   f"{list(MODEL_FILES)} as train.py logs them under the run's model/){what}")
    kwargs = OmegaConf.to_container(OmegaConf.load(path / "network.yaml"), resolve=True)
    target = kwargs.pop("_target_", "tglassmlp.model.network.TGlassMLP")
    if target != "tglassmlp.model.network.TGlassMLP":
        raise PredictionInputError(f"{path / 'network.yaml'}: network class {target} is not "
                                   "tglassmlp.model.network.TGlassMLP")
    kwargs.pop("seed", None)
    network = TGlassMLP(**kwargs)
    try:
        network.load_state_dict(torch.load(path / "state_dict.pt", weights_only=True, map_location="cpu"))
    except RuntimeError as exc:
        raise PredictionInputError(f"{path / 'state_dict.pt'} does not fit {path / 'network.yaml'}: {exc}") from None
    network.eval()
    try:
        scaler = DescriptorScaler.load(path / "scaler.npz")
    except (KeyError, ValueError, OSError) as exc:
        raise PredictionInputError(f"{path / 'scaler.npz'}: not a descriptor scaler ({exc})") from None
    if scaler.n_kept != network.n_descriptors:
        raise PredictionInputError(f"{path}: the network reads {network.n_descriptors} descriptors but the scaler "
                                   f"keeps {scaler.n_kept} columns; the files come from different runs")
    sp_path = path / "state_points.json"
    state_points = json.loads(sp_path.read_text()) if sp_path.is_file() else None
    return EnsembleMember(name=name or str(path.resolve()), network=network, scaler=scaler,
                          state_points=state_points, digest=_digest(path / "state_dict.pt", path / "scaler.npz"),
                          source=source or str(path.resolve()))


def save_model_dir(path: str | os.PathLike, network_kwargs: Mapping[str, Any], network: torch.nn.Module, scaler,
                   state_points: Mapping | None = None) -> Path:
    """Write a model directory that :func:`load_model_dir` reads: the one writer of the layout (train.py's
    ``model/`` artefact, tests, benchmarks).

    Args:
        path: the directory (created).
        network_kwargs: constructor arguments of ``network`` (``n_descriptors`` included; a ``_target_`` entry
            replaces the default ``tglassmlp.model.network.TGlassMLP``).
        network: the TGlassMLP whose ``state_dict`` is saved.
        scaler: its :class:`~tglassmlp.observables.DescriptorScaler`.
        state_points: JSON-ready training state points ({'train': [[T, c], ...], ...}) or None (no file).

    Every file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    from omegaconf import OmegaConf

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"_target_": "tglassmlp.model.network.TGlassMLP", **dict(network_kwargs)}

    write_text_atomic(path / "network.yaml", OmegaConf.to_yaml(OmegaConf.create(cfg)))
    atomic_write(path / "state_dict.pt", lambda fh: torch.save(network.state_dict(), fh))
    with atomic_path(path / "scaler.npz", keep_suffix=True) as tmp:  # keeps .npz: np.savez would append it
        scaler.save(tmp)
    if state_points is not None:
        write_json_atomic(path / "state_points.json", state_points, indent=1)
    return path


def _open_store(tracking_uri: str):
    """MLflow client on an existing store (a reader must not create an empty database by mistake)."""
    from tglassmlp.tracking import check_tracking_uri, make_client, normalize_tracking_uri, sqlite_path

    db = sqlite_path(normalize_tracking_uri(tracking_uri))
    if db is not None and not db.is_file():
        raise PredictionInputError(f"MLflow store {tracking_uri} does not exist ({db}); train an ensemble first "
                                   "(make demo) or point tracking_uri at the store the runs were logged to")
    uri = check_tracking_uri(tracking_uri)
    return make_client(uri), uri


def _members_from_runs(client, uri: str, run_ids: Sequence[str], where: str) -> list[EnsembleMember]:
    from mlflow.exceptions import MlflowException

    members = []
    for rid in run_ids:
        try:
            client.get_run(rid)
        except MlflowException as exc:
            raise PredictionInputError(f"{where}: run {rid} is not in the MLflow store {uri} ({exc.error_code})") from None
        with tempfile.TemporaryDirectory(prefix="tglassmlp-model-") as tmp:
            try:
                local = Path(client.download_artifacts(rid, "model", tmp))
            except (MlflowException, OSError) as exc:
                raise PredictionInputError(f"{where}: run {rid} has no model/ artefacts (not a finished train.py "
                                           f"run?): {exc}") from None
            members.append(load_model_dir(local, name=rid, source=f"mlflow:{uri}"))
    return members


class ManifestEnsemble:
    """The networks of an ensemble manifest (``<sweep dir>/ensemble.json``, :func:`tglassmlp.ensemble.select_sweep`).

    Args:
        manifest: the JSON file, or 'latest': the ``ensemble.json`` of the newest train.py multirun under
            ``sweeps_root`` that has one (as analyze.py's ``networks.sweep_dir=latest``).
        tracking_uri: the MLflow store of the sweep's runs (the manifest lists run ids only); None: the
            manifest's own ``tracking_uri`` entry, where it has one.
        top_k: when the manifest selects no run (none passed the self-consistency test), take the ``top_k``
            best-ranked runs instead; None (default) makes that case an error. Ignored when runs are selected.
        sweeps_root: where ``manifest='latest'`` looks (train.py's Hydra multirun folders).
    """

    def __init__(self, manifest: str | os.PathLike, tracking_uri: str | None = None, top_k: int | None = None,
                 sweeps_root: str | os.PathLike = "outputs/hydra/train"):
        self.manifest = Path(manifest)
        self.sweeps_root = Path(sweeps_root)
        self.tracking_uri = None if tracking_uri is None else str(tracking_uri)
        self.top_k = None if top_k is None else int(top_k)
        if self.top_k is not None and self.top_k < 1:
            raise PredictionInputError(f"ensemble_source.top_k must be >= 1, got {top_k}")

    def load(self) -> Ensemble:
        from tglassmlp.analysis.baseline import ManifestError, read_manifest

        if str(self.manifest) == "latest":
            found = [p / "ensemble.json" for p in self.sweeps_root.glob("multirun_*") if (p / "ensemble.json").is_file()]
            if not found:
                raise PredictionInputError(f"ensemble_source.manifest=latest: no train.py multirun with an ensemble.json "
                                           f"under {self.sweeps_root} (run make demo or train.py -m first)")
            self.manifest = max(found, key=lambda p: p.stat().st_mtime)
            log.info("ensemble_source.manifest=latest: %s", self.manifest)
        try:
            ranked, manifest = read_manifest(self.manifest, "all")
        except (ManifestError, FileNotFoundError) as exc:
            raise PredictionInputError(str(exc)) from None
        selected = list(manifest.get("selected") or [])
        how = "selected"
        if not selected:
            if self.top_k is None:
                raise PredictionInputError(
                    f"ensemble manifest {self.manifest} selects no run ({manifest.get('note', 'nothing selected')}); "
                    f"pass ensemble_source.top_k=K to use the K best-ranked of its {len(ranked)} runs anyway")
            ok = [e["run_id"] for e in manifest.get("ranking", [])
                  if isinstance(e, dict) and math.isfinite(float(e.get("score", math.nan)))]
            selected = ok[:self.top_k]
            how = f"top {self.top_k} of the ranking (nothing selected)"
            log.warning("%s selects no run; using the %s: %s", self.manifest, how, selected)
            if not selected:
                raise PredictionInputError(f"ensemble manifest {self.manifest}: no ranked run has a finite score")
        uri = self.tracking_uri or manifest.get("tracking_uri")
        if not uri:
            raise PredictionInputError(f"ensemble manifest {self.manifest} names no tracking store: set "
                                       "ensemble_source.tracking_uri to the store of the sweep's runs")
        client, uri = _open_store(uri)
        members = _members_from_runs(client, uri, selected, f"ensemble manifest {self.manifest}")
        return Ensemble(members, {"kind": "manifest", "manifest": str(self.manifest.resolve()), "how": how,
                                  "tracking_uri": uri, "sweep_id": manifest.get("sweep_id")})


class MlflowEnsemble:
    """The finished runs of an MLflow experiment that match a filter (default: ``ensemble.selected = true``).

    Args:
        tracking_uri: the MLflow store.
        experiment_name: the study's experiment.
        filter: MLflow search filter on the runs (``attributes.status = 'FINISHED'`` is always added).
        top_k: keep at most this many, best ``selection/self_consistency`` first (None: all matches).
    """

    def __init__(self, tracking_uri: str, experiment_name: str, filter: str = SELECTED_FILTER,
                 top_k: int | None = None):
        self.tracking_uri = str(tracking_uri)
        self.experiment_name = str(experiment_name)
        self.filter = str(filter or "").strip()
        self.top_k = None if top_k is None else int(top_k)

    def load(self) -> Ensemble:
        from mlflow.exceptions import MlflowException

        client, uri = _open_store(self.tracking_uri)
        exp = client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            names = sorted(e.name for e in client.search_experiments())
            raise PredictionInputError(f"MLflow store {uri} has no experiment {self.experiment_name!r} "
                                       f"(it has {names}); set ensemble_source.experiment_name")
        full = " and ".join(f for f in (self.filter, "attributes.status = 'FINISHED'") if f)
        try:
            runs = client.search_runs([exp.experiment_id], filter_string=full, max_results=10000)
        except MlflowException as exc:
            raise PredictionInputError(f"MLflow filter {self.filter!r} is not valid: {exc}") from None
        if not runs:
            n_all = len(client.search_runs([exp.experiment_id], max_results=10000))
            raise PredictionInputError(
                f"no finished run of experiment {self.experiment_name!r} in {uri} matches {self.filter!r} "
                f"({n_all} runs in the experiment); the self-consistency selection tags ensemble.selected = true, "
                "or choose runs with ensemble_source.filter / a manifest with ensemble_source=manifest")
        runs = sorted(runs, key=lambda r: (r.data.metrics.get("selection/self_consistency", math.inf),
                                           r.info.start_time))
        if self.top_k is not None:
            runs = runs[:self.top_k]
        members = _members_from_runs(client, uri, [r.info.run_id for r in runs],
                                     f"experiment {self.experiment_name!r}")
        return Ensemble(members, {"kind": "mlflow", "tracking_uri": uri, "experiment": self.experiment_name,
                                  "filter": self.filter, "top_k": self.top_k})


class DirectoryEnsemble:
    """Every model directory under ``path`` (a folder holding ``network.yaml``; ``path`` itself may be one).

    A ``train.py`` run directory works as it is (its ``artifacts/model``), and so does a Hydra sweep folder.
    """

    def __init__(self, path: str | os.PathLike):
        if path is None or not str(path).strip():
            raise PredictionInputError("ensemble_source.path is empty (a folder of model directories)")
        self.path = Path(path)

    def load(self) -> Ensemble:
        if not self.path.is_dir():
            raise PredictionInputError(f"ensemble directory {self.path} does not exist")
        if (self.path / "network.yaml").is_file():
            dirs = [self.path]
        else:
            dirs = sorted({p.parent for p in self.path.rglob("network.yaml")})
        if not dirs:
            raise PredictionInputError(f"ensemble directory {self.path}: no model directory (a folder with "
                                       f"{list(MODEL_FILES)}) below it")
        return Ensemble([load_model_dir(d) for d in dirs], {"kind": "directory", "path": str(self.path.resolve())})


# ============================================================================================== TTS
def tts_from_dict(state: Mapping[str, Any], settings: Mapping[str, Any] | None = None):
    """A fitted TimeTemperatureSuperposition from ``beta``, ``tau_alpha`` ({T: tau}) and ``arrhenius`` ([a, E] or
    null): ``TimeTemperatureSuperposition.from_dict`` (the keys of its ``to_dict``, which writes predict's
    ``tts.json``, and of ``labels_report.json``, tglassmlp.analysis.labels_report), its errors as
    PredictionInputError. ``settings`` (arrhenius_t_max, fit_below, tau_glass) override the file's.
    """
    from tglassmlp.observables import TimeTemperatureSuperposition

    missing = [k for k in TimeTemperatureSuperposition.REQUIRED_KEYS if k not in state]
    if missing:
        raise PredictionInputError(f"time-temperature superposition: missing {missing} (expected the keys beta, "
                                   "tau_alpha, arrhenius of labels_report.json or tts.json)")
    try:
        return TimeTemperatureSuperposition.from_dict(state, **dict(settings or {}))
    except (TypeError, ValueError) as exc:
        raise PredictionInputError(f"time-temperature superposition: {exc}") from None


def tts_from_json(path: str | os.PathLike, settings: Mapping[str, Any] | None = None):
    """Read a fitted time-temperature superposition (``tts.json`` written by predict, or ``labels_report.json``)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionInputError(f"time-temperature superposition file {path} does not exist")
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PredictionInputError(f"{path}: not valid JSON ({exc})") from None
    try:
        return tts_from_dict(state, settings)
    except PredictionInputError as exc:
        raise PredictionInputError(f"{path}: {exc}") from None


def tts_from_data(root: str | os.PathLike, settings: Mapping[str, Any] | None = None, reference_type: int = 0):
    """Fit the time-temperature superposition on the <C_B>(t) curves of an MD dataset (shards with propensities)."""
    from tglassmlp.analysis.labels_report import temperature_curves
    from tglassmlp.observables import TimeTemperatureSuperposition

    if not Path(root).is_dir():
        raise PredictionInputError(f"MD dataset {root} (tts.data_root) does not exist")
    curves = temperature_curves(root, reference_type)
    curves.pop("skipped", None)
    if not curves:
        raise PredictionInputError(f"{root}: no shard with 'times' and 'propensity'; the time-temperature "
                                   "superposition needs MD curves")
    try:
        return TimeTemperatureSuperposition(**dict(settings or {})).compute(
            {t: (times, c) for t, (times, c, _) in curves.items()})
    except ValueError as exc:
        raise PredictionInputError(f"{root}: {exc}") from None


def levels_at(temperature: float, levels=None, times=None, tts=None) -> tuple[np.ndarray, np.ndarray]:
    """(target levels (L,), their times (L,) [tau] or NaN) at temperature T, from levels or from times."""
    if (levels is None) == (times is None):
        raise PredictionInputError("give either levels (<C_B> values) or times [tau], not both and not neither")
    if levels is not None:
        c = np.asarray(levels, dtype=np.float64).reshape(-1)
        if c.size == 0 or not np.all(np.isfinite(c)) or np.any((c <= 0) | (c > 1)):
            raise PredictionInputError(f"levels must be finite numbers in (0, 1], got {c.tolist()}")
        return c, np.full(c.shape, np.nan)
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise PredictionInputError(f"times must be finite and positive [tau], got {t.tolist()}")
    if tts is None:
        raise PredictionInputError("times need a time-temperature superposition: set tts.json=FILE "
                                   "(tts.json or labels_report.json) or tts.data_root=MD_DATASET")
    try:
        c = np.asarray(tts.level_at(t, temperature), dtype=np.float64)
    except ValueError as exc:
        raise PredictionInputError(f"times at T = {temperature:g}: {exc} (with few low temperatures, raise "
                                   "labels.tts.arrhenius_t_max to fit the Arrhenius law on more of them)") from None
    if np.any((c <= 0) | (c >= 1)):
        raise PredictionInputError(f"times {t.tolist()} at T = {temperature:g} give <C_B> = {c.tolist()}, outside "
                                   "(0, 1): pick times within the alpha relaxation")
    return c, t


# ============================================================================================== structures
@dataclass
class InputStructure:
    """One structure to predict on, read and checked.

    Attributes:
        path: the input file. kind: 'shard' or 'glassbench'. label: output file stem.
        temperature: T [epsilon/k_B]. box: square box side [sigma].
        types: (N,) int64 0..2. positions: (N, 2) input configuration [sigma].
        inherent_positions: (N, 2) [sigma]. descriptors: (N, D) raw descriptors; descriptor_names: (D,).
        inherent_computed: whether the inherent structure was minimised here.
        timing: seconds spent reading, minimising, computing descriptors.
    """

    path: Path
    kind: str
    label: str
    temperature: float
    box: float
    types: np.ndarray
    positions: np.ndarray
    inherent_positions: np.ndarray
    descriptors: np.ndarray
    descriptor_names: list[str]
    inherent_computed: bool = False
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def n_particles(self) -> int:
        return int(self.types.shape[0])


def find_structures(spec: str | os.PathLike | Sequence) -> list[Path]:
    """Input files from a file, a folder (searched recursively) or a list of them, in a stable order.

    Raises PredictionInputError for a missing path, a file of unknown type, or a folder without structures.
    """
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise PredictionInputError("no structures given (structures=FILE, FOLDER or [FILE, ...])")
    known = SHARD_SUFFIXES + GLASSBENCH_SUFFIXES
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in known and ".tmp-" not in p.name)
            ignored = sorted(p.name for p in path.rglob("*") if p.is_file() and p.suffix not in known
                             and not p.name.startswith("."))
            if ignored:
                log.info("%s: ignoring %d file(s) that are not structures (%s ...)", path, len(ignored), ignored[:3])
            if not found:
                raise PredictionInputError(f"structure folder {path} holds no shard (.h5) or GlassBench (.npz) file")
            out += found
        elif path.is_file():
            if path.suffix not in known:
                raise PredictionInputError(f"{path}: unknown structure file type '{path.suffix}' (expected a shard "
                                           f"{SHARD_SUFFIXES} or a GlassBench file {GLASSBENCH_SUFFIXES})")
            out.append(path)
        else:
            raise PredictionInputError(f"structure path {path} does not exist")
    return list(dict.fromkeys(out))


def _label(path: Path, kind: str) -> str:
    if kind == "shard":
        from tglassmlp.data.shards import parse_shard_path

        try:
            t, k = parse_shard_path(path)
            return f"T{t:.3f}_s{k:04d}"
        except ValueError:
            pass
    return path.stem


def load_structure(path: str | os.PathLike, *, temperature: float | None = None, cache_dir=None,
                   compute_inherent: bool = True, inherent_max_force: float = 1e-6) -> InputStructure:
    """Read one structure file and complete it (inherent structure, descriptors).

    Args:
        path: a shard ``.h5`` or a GlassBench ``.npz``.
        temperature: overrides the file's temperature [epsilon/k_B].
        cache_dir: descriptor cache (shared with training: keyed by the file's path, size and mtime).
        compute_inherent: minimise a structure stored without ``inherent_positions``; False makes it an error.
        inherent_max_force: convergence of that minimisation, max |F| [epsilon/sigma].
    """
    from tglassmlp.data import GlassBenchError, ShardError, open_shard, read_glassbench, read_shard
    from tglassmlp.data.datamodule import shard_descriptors
    from tglassmlp.data.shards import Shard
    from tglassmlp.physics import ConfigurationError, MinimizationError, inherent_structure

    path = Path(path)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        if path.suffix in SHARD_SUFFIXES:
            kind = "shard"
            with open_shard(path) as reader:
                present = set(reader.fields)
            shard = read_shard(path, fields=[f for f in ("positions", "types", "inherent_positions",
                                                         "particle_energies", "descriptors") if f in present])
        elif path.suffix in GLASSBENCH_SUFFIXES:
            kind = "glassbench"
            gb = read_glassbench(path)
            shard = Shard(path=path, attrs={"temperature": gb.temperature, "box": gb.box},
                          fields={"positions": gb.positions, "types": gb.types,
                                  "inherent_positions": gb.inherent_positions})
        else:
            raise PredictionInputError(f"{path}: unknown structure file type '{path.suffix}'")
    except (ShardError, GlassBenchError) as exc:
        raise PredictionInputError(str(exc)) from None
    timing["read_s"] = time.perf_counter() - t0
    types = np.asarray(shard["types"], dtype=np.int64)
    positions = np.asarray(shard["positions"], dtype=np.float64)
    box = float(shard.box)
    computed = False
    if "inherent_positions" not in shard:
        if not compute_inherent:
            raise PredictionInputError(f"{path}: no inherent structure stored (compute_inherent=true minimises it)")
        log.info("%s: no inherent structure stored; minimising (N = %d)", path, len(types))
        t0 = time.perf_counter()
        try:
            shard.fields["inherent_positions"] = inherent_structure(positions, types, box,
                                                                    max_force=inherent_max_force)
        except (ConfigurationError, MinimizationError) as exc:
            raise PredictionInputError(f"{path}: inherent structure failed: {exc}") from None
        shard.fields.pop("particle_energies", None)  # they would belong to another structure
        timing["inherent_s"] = time.perf_counter() - t0
        computed = True
    t0 = time.perf_counter()
    try:
        # one cache entry per file: a structure minimised here is recomputed identically, so the key holds
        descriptors, names = shard_descriptors(shard, cache_dir)
    except (ConfigurationError, ValueError) as exc:
        raise PredictionInputError(f"{path}: descriptors: {exc}") from None
    timing["descriptors_s"] = time.perf_counter() - t0
    if not np.all(np.isfinite(descriptors)):
        rows = np.flatnonzero(~np.isfinite(descriptors).all(axis=1))
        raise PredictionInputError(f"{path}: descriptors of {rows.size} particle(s) are not finite (first {rows[0]})")
    t = float(shard.temperature) if temperature is None else float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise PredictionInputError(f"{path}: temperature must be positive, got {t}")
    return InputStructure(path=path, kind=kind, label=_label(path, kind), temperature=t, box=box, types=types,
                          positions=positions, inherent_positions=np.asarray(shard["inherent_positions"], float),
                          descriptors=descriptors, descriptor_names=list(names), inherent_computed=computed,
                          timing=timing)


def check_structure(structure: InputStructure, ensemble: Ensemble, *, reference_type: int = 0, system=None,
                    density_rtol: float = 0.02, composition_atol: float = 0.03) -> None:
    """Refuse a structure the ensemble was not trained for (PredictionInputError naming file and quantity).

    Checks: every type 0, 1, 2 present and >= 2 reference particles; number density within ``density_rtol``
    and type fractions within ``composition_atol`` of the system config (``conf/system``: the descriptors
    are densities and energies of this system); descriptor column names equal to every network's scaler.
    """
    from tglassmlp.physics.system import N_TYPES, resolve_system

    system = resolve_system(system)
    where = str(structure.path)
    counts = np.bincount(structure.types, minlength=N_TYPES)
    if np.any(counts == 0):
        raise PredictionInputError(f"{where}: particle type(s) {np.flatnonzero(counts == 0).tolist()} absent "
                                   f"(counts {counts.tolist()}); the model's system is the ternary mixture 0, 1, 2")
    if counts[reference_type] < 2:
        raise PredictionInputError(f"{where}: fewer than 2 particles of the reference type {reference_type}")
    n = structure.n_particles
    density = n / structure.box**2
    if abs(density / system.number_density - 1.0) > density_rtol:
        raise PredictionInputError(
            f"{where}: number density N / box^2 = {n} / {structure.box:.4g}^2 = {density:.4f}, the model's system "
            f"{system.name} has {system.number_density:.4f} (tolerance {density_rtol:.0%}): N or box do not fit")
    ref = np.asarray(system.composition, dtype=float) / np.sum(system.composition)
    frac = counts / n
    if np.any(np.abs(frac - ref) > composition_atol):
        raise PredictionInputError(f"{where}: type fractions {np.round(frac, 3).tolist()} differ from the system's "
                                   f"{np.round(ref, 3).tolist()} by more than {composition_atol}")
    for m in ensemble.members:
        if list(m.scaler.names) != list(structure.descriptor_names):
            a, b = list(m.scaler.names), list(structure.descriptor_names)
            k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise PredictionInputError(
                f"{where}: descriptor columns differ from those network {m.name} was trained on ({len(b)} vs "
                f"{len(a)} columns; first difference at column {k}: "
                f"{b[k] if k < len(b) else '-'!r} vs {a[k] if k < len(a) else '-'!r})")


# ============================================================================================== constraint
class MeanConstraint:
    """The iterative mean constraint of App. B (module docstring), one network and one structure at a time.

    Args:
        max_iterations: most updates of the input level (paper: 6); 0 evaluates once at c*.
        step: the update factor (paper: 0.75).
        tolerance: |Xbar - c*| that counts as converged (the selection's self-consistency threshold, 1e-4).
        sign: 'converging' (c_{j+1} = c_j - step (Xbar - c*)) or 'paper' (the printed +, which diverges for a
            network whose mean rises with c; kept to show it).
        bounds: (lo, hi) the inputs are clipped to, or None. c is an average propensity, and the network's
            state features c, c^2, c^3 make its output grow like c^3 outside the trained range, so an
            unbounded iteration on a badly self-consistent network can run away (measured on the demo
            ensemble at T = 0.35: inputs of 1e12 after 6 updates). Default [0, 1].
        enabled: False evaluates at c* only (no iteration); convergence is still reported.
        scope: 'temperature' (predict_structures): Xbar is the mean over the reference particles of all the
            structures of one temperature, with one input per network, temperature and level, so every
            structure keeps its own mean and chi_4 (Eq. 9, the variance of that mean over structures) survives;
            'structure': each structure's own mean is pinned to c*, which sets chi_4 <= N_0 tolerance^2.

    When the iteration does not converge, the reported evaluation is the one with the smallest |Xbar - c*|
    (the earliest on ties); a level whose clipped input stops moving stops iterating.
    """

    SIGNS = {"converging": -1.0, "paper": +1.0}

    def __init__(self, max_iterations: int = 6, step: float = 0.75, tolerance: float = 1e-4,
                 sign: str = "converging", bounds: Sequence[float] | None = (0.0, 1.0), enabled: bool = True,
                 scope: str = "temperature"):
        if scope not in ("temperature", "structure"):
            raise PredictionInputError(f"constraint.scope must be 'temperature' or 'structure', got {scope!r}")
        if sign not in self.SIGNS:
            raise PredictionInputError(f"constraint.sign must be one of {sorted(self.SIGNS)}, got {sign!r}")
        if int(max_iterations) < 0 or not (float(step) > 0) or not (float(tolerance) >= 0):
            raise PredictionInputError(f"constraint: need max_iterations >= 0, step > 0, tolerance >= 0; got "
                                       f"{max_iterations}, {step}, {tolerance}")
        if bounds is not None:
            bounds = (float(bounds[0]), float(bounds[1]))
            if not bounds[0] < bounds[1]:
                raise PredictionInputError(f"constraint.bounds must be [lo, hi] with lo < hi, got {list(bounds)}")
        self.max_iterations = int(max_iterations)
        self.step = float(step)
        self.tolerance = float(tolerance)
        self.sign = sign
        self.bounds = bounds
        self.enabled = bool(enabled)
        self.scope = scope

    def settings(self) -> dict[str, Any]:
        return {"max_iterations": self.max_iterations, "step": self.step, "tolerance": self.tolerance,
                "sign": self.sign, "bounds": None if self.bounds is None else list(self.bounds),
                "enabled": self.enabled, "scope": self.scope}

    def compute(self, evaluate: Callable[[np.ndarray, np.ndarray], np.ndarray], targets,
                accept: Callable[[np.ndarray], None] | None = None) -> MeanConstraint:
        """Iterate every level's input.

        Args:
            evaluate: ``evaluate(inputs (A,), which (A,) int)`` returns the mean prediction (A,) at the network
                inputs ``inputs`` for the levels ``which`` (indices into ``targets``); only levels still
                iterating are passed.
            targets: (L,) target levels c*.
            accept: called as ``accept(levels (B,) int)`` right after an evaluation with the levels for which
                it is the best so far (the caller keeps those per-particle predictions).

        Returns:
            self; results in the properties.
        """
        targets = np.asarray(targets, dtype=np.float64).reshape(-1)
        n_levels = targets.size
        n_iter = self.max_iterations if self.enabled else 0
        sign = self.SIGNS[self.sign]
        hist_in = np.full((n_levels, n_iter + 1), np.nan)
        hist_mean = np.full((n_levels, n_iter + 1), np.nan)
        iterations = np.zeros(n_levels, dtype=np.int64)
        best = np.full(n_levels, np.inf)
        best_in = np.full(n_levels, np.nan)
        best_mean = np.full(n_levels, np.nan)
        c = targets.copy()
        active = np.arange(n_levels)
        for j in range(n_iter + 1):
            means = np.asarray(evaluate(c[active].copy(), active.copy()), dtype=np.float64).reshape(-1)
            hist_in[active, j] = c[active]
            hist_mean[active, j] = means
            iterations[active] = j
            err = means - targets[active]
            better = np.abs(err) < best[active]
            if better.any():
                chosen = active[better]
                best[chosen], best_in[chosen], best_mean[chosen] = np.abs(err[better]), c[chosen], means[better]
                if accept is not None:
                    accept(chosen.copy())
            going = (np.abs(err) > self.tolerance) & np.isfinite(err)
            if j == n_iter or not going.any():
                break
            active, err = active[going], err[going]
            new = c[active] + sign * self.step * err
            if self.bounds is not None:
                new = np.clip(new, *self.bounds)
            moving = new != c[active]  # clipped onto the bound it already sits on: nothing left to try
            c[active] = new
            active = active[moving]
            if not active.size:
                break
        if not np.all(np.isfinite(best_mean)):
            raise PredictionInputError(f"mean constraint: non-finite mean prediction at levels "
                                       f"{targets[~np.isfinite(best_mean)].tolist()}")
        self._targets = targets
        self._input, self._mean = best_in, best_mean
        self._iterations = iterations
        self._history_input, self._history_mean = hist_in, hist_mean
        return self

    @property
    def targets(self) -> np.ndarray:
        """(L,) target levels c*."""
        return self._targets

    @property
    def input_level(self) -> np.ndarray:
        """(L,) the network input of the reported prediction (the last c_j when converged, else the best)."""
        return self._input

    @property
    def mean_prediction(self) -> np.ndarray:
        """(L,) Xbar at ``input_level``."""
        return self._mean

    @property
    def residual(self) -> np.ndarray:
        """(L,) Xbar - c*."""
        return self._mean - self._targets

    @property
    def converged(self) -> np.ndarray:
        """(L,) bool: |Xbar - c*| <= tolerance."""
        return np.abs(self.residual) <= self.tolerance

    @property
    def iterations(self) -> np.ndarray:
        """(L,) updates made (the last evaluation is c_{iterations})."""
        return self._iterations

    @property
    def history_input(self) -> np.ndarray:
        """(L, max_iterations + 1) c_j; NaN after a level stopped."""
        return self._history_input

    @property
    def history_mean(self) -> np.ndarray:
        """(L, max_iterations + 1) Xbar(c_j); NaN after a level stopped."""
        return self._history_mean


# ============================================================================================== prediction
@torch.inference_mode()
def constrained_prediction(network: torch.nn.Module, features: torch.Tensor, temperature: float, levels,
                           constraint: MeanConstraint, chunk_size: int = 2048, out: np.ndarray | None = None,
                           fast_attention: bool = True) -> tuple[np.ndarray, MeanConstraint]:
    """One network's mean-constrained prediction on one structure, in chunks of particles.

    Args:
        network: a TGlassMLP (per-particle: chunks of particles give the same numbers as the whole).
        features: (N_0, M_S) float32 standardised descriptors of the reference particles.
        temperature: T [epsilon/k_B].
        levels: (L,) target levels c*.
        constraint: a MeanConstraint (copied; the argument is not modified).
        chunk_size: particles per forward call. Working memory ~ 5 x L x chunk_size x M_S x 4 bytes with the
            plain forward, (1 + nb) x N_0 x M_S x 4 bytes plus L x chunk_size x (1 + nb) with the fast one.
        out: optional (L, N_0) float32 array to fill.
        fast_attention: evaluate with :class:`~tglassmlp.model.network.LevelBatchedForward` (same numbers to
            float32 rounding);
            False: ``network.forward`` on each chunk.

    Returns:
        ((L, N_0) float32 propensity at each level's reported input (MeanConstraint.input_level), the computed
        MeanConstraint).
    """
    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    n0 = int(features.shape[0])
    chunk_size = max(1, int(chunk_size))
    if out is None:
        out = np.empty((levels.size, n0), dtype=np.float32)
    fast = LevelBatchedForward(network, features, chunk_size) if fast_attention and \
        LevelBatchedForward.supports(network) else None
    # each evaluation fills a scratch buffer; the constraint says which levels' evaluation is the best so far
    scratch = np.empty_like(out)

    def evaluate(inputs: np.ndarray, which: np.ndarray) -> np.ndarray:
        c = torch.as_tensor(inputs, dtype=torch.float32)
        total = np.zeros(len(which), dtype=np.float64)
        for i, start in enumerate(range(0, n0, chunk_size)):
            if fast is not None:
                y = fast.block(i, temperature, c)
            else:
                y = network(features[start:start + chunk_size], float(temperature), c)  # (A, n)
            values = y.numpy()
            if not np.all(np.isfinite(values)):
                raise PredictionInputError(f"the network predicts non-finite values at T = {temperature:g}, "
                                           f"c = {inputs.tolist()} (particles {start}..{start + values.shape[1]})")
            scratch[which, start:start + values.shape[1]] = values
            total += values.sum(axis=1, dtype=np.float64)
        return total / n0

    def accept(which: np.ndarray) -> None:
        out[which] = scratch[which]

    result = copy.copy(constraint).compute(evaluate, levels, accept)
    return out, result


def _scaler_key(scaler) -> str:
    """Content hash of a DescriptorScaler's statistics (equal keys standardise identically)."""
    h = hashlib.sha256("\x00".join(scaler.names).encode())
    for arr in (scaler.mean, scaler.std, scaler.kept):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


class EnsemblePrediction:
    """Per-particle propensity of the reference particles of one structure by every network of an ensemble,
    mean-constrained (App. B), with the mean and spread over the networks.

    Args:
        ensemble: the :class:`Ensemble`.
        constraint: :class:`MeanConstraint` settings (applied per network).
        reference_type: the particle type the networks predict (the paper's type 1 = our 0).
        chunk_size: particles per forward call (bounds the memory for any N).
        fast_attention: use :class:`~tglassmlp.model.network.LevelBatchedForward` (see
            :func:`constrained_prediction`).
    """

    def __init__(self, ensemble: Ensemble, constraint: MeanConstraint | None = None, reference_type: int = 0,
                 chunk_size: int = 2048, fast_attention: bool = True):
        self.ensemble = ensemble
        self.constraint = constraint or MeanConstraint()
        self.reference_type = int(reference_type)
        self.chunk_size = int(chunk_size)
        self.fast_attention = bool(fast_attention)

    def compute(self, descriptors, types, temperature: float, levels) -> EnsemblePrediction:
        """Args: descriptors (N, D) raw; types (N,); temperature T; levels (L,) target c*. Returns self."""
        types = np.asarray(types)
        self._reference = types == self.reference_type
        levels = np.asarray(levels, dtype=np.float64).reshape(-1)
        raw = np.asarray(descriptors)[self._reference]
        n0 = raw.shape[0]
        self._per_network = np.empty((len(self.ensemble), levels.size, n0), dtype=np.float32)
        self._constraints = []
        t0 = time.perf_counter()
        standardised: dict[str, torch.Tensor] = {}  # members trained on one dataset share their scaler
        for k, member in enumerate(self.ensemble.members):
            key = _scaler_key(member.scaler)
            if key not in standardised:
                standardised[key] = torch.from_numpy(member.scaler.transform(raw).astype(np.float32))
            features = standardised[key]
            _, result = constrained_prediction(member.network, features, temperature, levels, self.constraint,
                                               self.chunk_size, out=self._per_network[k],
                                               fast_attention=self.fast_attention)
            self._constraints.append(result)
        self._seconds = time.perf_counter() - t0
        self._levels = levels
        return self

    @property
    def reference(self) -> np.ndarray:
        """(N,) bool: the particles predicted."""
        return self._reference

    @property
    def per_network(self) -> np.ndarray:
        """(K, L, N_0) float32 predictions of every network."""
        return self._per_network

    @property
    def mean(self) -> np.ndarray:
        """(L, N_0) mean over networks."""
        return self._per_network.mean(axis=0, dtype=np.float64).astype(np.float32)

    @property
    def std(self) -> np.ndarray:
        """(L, N_0) population std over networks (0 for one network)."""
        return self._per_network.std(axis=0, dtype=np.float64).astype(np.float32)

    @property
    def constraints(self) -> list[MeanConstraint]:
        """The K computed constraints."""
        return self._constraints

    @property
    def seconds(self) -> float:
        """Wall time of compute [s]."""
        return self._seconds

    def part(self, start: int, stop: int) -> EnsemblePrediction:
        """The prediction for input particles ``start:stop`` (one structure of a set predicted together):
        its slice of the per-particle arrays, the set's networks and constraint results."""
        out = copy.copy(self)
        before = int(self._reference[:start].sum())
        out._reference = self._reference[start:stop]
        out._per_network = self._per_network[:, :, before:before + int(out._reference.sum())]
        return out

    def constraint_arrays(self) -> dict[str, np.ndarray]:
        """The constraint results stacked over networks: (K, L) and (K, L, J+1) arrays."""
        cs = self._constraints
        return {"input_level": np.stack([c.input_level for c in cs]),
                "mean_prediction": np.stack([c.mean_prediction for c in cs]),
                "iterations": np.stack([c.iterations for c in cs]).astype(np.int64),
                "converged": np.stack([c.converged for c in cs]).astype(np.int8),
                "history_input": np.stack([c.history_input for c in cs]),
                "history_mean": np.stack([c.history_mean for c in cs])}


# ============================================================================================== files
def _full(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(..., N_0) -> (..., N) with NaN at the non-reference particles."""
    out = np.full(values.shape[:-1] + (reference.shape[0],), np.nan, dtype=np.float32)
    out[..., reference] = values
    return out


def write_prediction(path: str | os.PathLike, structure: InputStructure, prediction: EnsemblePrediction,
                     levels, times, settings: Mapping[str, Any], save_networks: bool = True) -> Path:
    """Write one structure's prediction (layout: module docstring) to ``path`` atomically (temp file, fsync,
    rename)."""
    import h5py

    from tglassmlp.data.shards import package_versions

    path = Path(path)
    ref = prediction.reference
    gz = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            attrs = {"format": FORMAT, "format_version": FORMAT_VERSION,
                     "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                     "source": str(structure.path.resolve()), "source_kind": structure.kind,
                     "temperature": structure.temperature, "box": structure.box,
                     "n_particles": structure.n_particles, "reference_type": prediction.reference_type,
                     "inherent_computed": int(structure.inherent_computed),
                     "ensemble": json.dumps([m.describe() for m in prediction.ensemble.members]),
                     "ensemble_source": json.dumps(prediction.ensemble.source, default=str),
                     "constraint": json.dumps(prediction.constraint.settings()),
                     "settings": json.dumps(settings, sort_keys=True, default=str),
                     "settings_hash": settings_hash(settings),
                     "package_versions": json.dumps(package_versions())}
            for k, v in attrs.items():
                h5.attrs[k] = v
            h5.create_dataset("types", data=structure.types.astype(np.int8))
            h5.create_dataset("positions", data=structure.positions)
            h5.create_dataset("inherent_positions", data=structure.inherent_positions)
            h5.create_dataset("reference_index", data=np.flatnonzero(ref).astype(np.int64))
            h5.create_dataset("levels", data=np.asarray(levels, dtype=np.float64))
            h5.create_dataset("times", data=np.asarray(times, dtype=np.float64))
            h5.create_dataset("propensity_mean", data=_full(prediction.mean, ref), **gz)
            h5.create_dataset("propensity_std", data=_full(prediction.std, ref), **gz)
            if save_networks:
                h5.create_dataset("propensity_networks", data=_full(prediction.per_network, ref), **gz)
            grp = h5.create_group("constraint")
            for name, arr in prediction.constraint_arrays().items():
                grp.create_dataset(name, data=arr)
            h5.flush()
    return path


def read_prediction(path: str | os.PathLike) -> dict[str, Any]:
    """A prediction file as {'attrs': {...} (JSON attributes decoded), dataset name: array, 'constraint': {...}}."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise PredictionInputError(f"prediction file {path} does not exist")
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
            if attrs.get("format") != FORMAT:
                raise PredictionInputError(f"{path}: not a tglassmlp prediction file (format {attrs.get('format')!r})")
            if int(attrs.get("format_version", 0)) > FORMAT_VERSION:
                raise PredictionInputError(f"{path}: format version {attrs['format_version']} is newer than this "
                                           f"code's {FORMAT_VERSION}")
            out: dict[str, Any] = {name: h5[name][()] for name in h5 if isinstance(h5[name], h5py.Dataset)}
            out["constraint"] = {name: h5["constraint"][name][()] for name in h5["constraint"]}
    except OSError as exc:
        raise PredictionInputError(f"{path}: not a readable HDF5 file ({exc})") from None
    for key in ("ensemble", "ensemble_source", "constraint", "settings", "package_versions"):
        if key in attrs:
            attrs[key] = json.loads(attrs[key])
    out["attrs"] = attrs
    return out


def settings_hash(settings: Mapping[str, Any]) -> str:
    """First 16 hex digits of sha256 of the settings as sorted JSON (what a rerun compares)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _existing_hash(path: Path) -> str | None:
    """settings_hash of a finished prediction file, None if it is missing or unreadable."""
    try:
        return str(read_prediction(path)["attrs"].get("settings_hash"))
    except (PredictionInputError, OSError, KeyError, ValueError):
        return None


# ============================================================================================== driver
def predict_structures(ensemble: Ensemble, structures, out_dir, *, levels=None, times=None, tts=None,
                       temperature: float | None = None, constraint: MeanConstraint | None = None,
                       reference_type: int = 0, chunk_size: int = 2048, cache_dir=None,
                       compute_inherent: bool = True, inherent_max_force: float = 1e-6,
                       density_rtol: float = 0.02, composition_atol: float = 0.03, save_networks: bool = True,
                       fast_attention: bool = True, overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Predict on every structure and write one file each to ``out_dir`` plus ``summary.json``.

    Args:
        ensemble: the networks.
        structures: file, folder or list of them (:func:`find_structures`).
        out_dir: output folder; a file already there with the same settings is kept (resume), one with other
            settings raises unless ``overwrite``.
        levels / times: the requested <C_B> levels, or times [tau] converted with ``tts`` (exactly one).
        temperature: overrides every structure's own temperature.
        other arguments: see :func:`load_structure`, :func:`check_structure`, :class:`EnsemblePrediction`.

    Returns:
        {'out_dir', 'files', 'structures': [per-structure summary], 'n_networks', 'seconds'}.
    """
    from tqdm.auto import tqdm

    constraint = constraint or MeanConstraint()
    paths = find_structures(structures)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels: dict[str, Path] = {}
    t_start = time.perf_counter()
    rows = []

    def load(path: Path) -> InputStructure:
        s = load_structure(path, temperature=temperature, cache_dir=cache_dir, compute_inherent=compute_inherent,
                           inherent_max_force=inherent_max_force)
        if s.label in labels:
            raise PredictionInputError(f"{path} and {labels[s.label]} would both write {s.label}.pred.h5; predict "
                                       "them into different out_dir")
        labels[s.label] = path
        check_structure(s, ensemble, reference_type=reference_type, density_rtol=density_rtol,
                        composition_atol=composition_atol)
        return s

    # the constraint over the structures of one temperature needs them all at once; per structure, one at a
    # time (memory does not grow with their number)
    pooled = constraint.enabled and constraint.scope == "temperature"
    if pooled:
        groups: dict[float, list[InputStructure]] = {}
        for path in tqdm(paths, desc="read", unit="structure", disable=not progress):
            s = load(path)
            groups.setdefault(round(s.temperature, 9), []).append(s)
        batches = list(groups.values())
    else:
        batches = [[p] for p in paths]
    for batch in tqdm(batches, desc="predict", unit="temperature" if pooled else "structure", disable=not progress):
        t0 = time.perf_counter()
        group = batch if pooled else [load(batch[0])]
        target, target_times = levels_at(group[0].temperature, levels, times, tts)
        members = sorted(str(s.path.resolve()) for s in group)

        def settings_of(s: InputStructure) -> dict[str, Any]:
            out = {"ensemble": [m.digest for m in ensemble.members], "temperature": s.temperature,
                   "levels": target.tolist(), "times": [None if not np.isfinite(x) else x for x in target_times],
                   "constraint": constraint.settings(), "reference_type": reference_type,
                   "save_networks": bool(save_networks), "source": str(s.path.resolve())}
            return {**out, "constraint_set": members} if pooled else out

        outs = [out_dir / f"{s.label}.pred.h5" for s in group]
        wanted = [settings_hash(settings_of(s)) for s in group]
        found = [_existing_hash(o) if o.exists() else None for o in outs]
        if not overwrite and found == wanted:
            log.info("%s: done already with the same settings; kept", ", ".join(str(o) for o in outs))
            rows += [_summary_row(o, read_prediction(o), resumed=True) for o in outs]
            continue
        clash = [str(o) for o, h, w in zip(outs, found, wanted) if h is not None and h != w]
        if clash and not overwrite:
            raise PredictionInputError(f"{clash[0]} exists from a prediction with other settings (ensemble, levels, "
                                       "temperature, constraint or the structures constrained together); set "
                                       "overwrite=true or another out_dir")
        pred = EnsemblePrediction(ensemble, constraint, reference_type, chunk_size, fast_attention).compute(
            np.concatenate([s.descriptors for s in group]), np.concatenate([s.types for s in group]),
            group[0].temperature, target)
        not_conv = int((~np.stack([c.converged for c in pred.constraints])).sum())
        first = 0
        for s, out in zip(group, outs):
            part = pred.part(first, first + s.n_particles)
            first += s.n_particles
            t_write = time.perf_counter()
            write_prediction(out, s, part, target, target_times, settings_of(s), save_networks)
            row = _summary_row(out, None, resumed=False, structure=s, prediction=part, levels=target,
                               times=target_times)
            row["timing"] = dict(s.timing, predict_s=pred.seconds / len(group), write_s=time.perf_counter() - t_write,
                                 total_s=(time.perf_counter() - t0) / len(group))
            rows.append(row)
        if not_conv:
            log.warning("%s: the mean constraint did not converge for %d of %d (network, level) pairs (max "
                        "|Xbar - c| = %.3g)", ", ".join(str(s.path) for s in group), not_conv,
                        len(ensemble) * target.size, max(r["max_abs_residual"] for r in rows[-len(group):]))
    result = {"out_dir": str(out_dir.resolve()), "files": [r["file"] for r in rows], "structures": rows,
              "n_networks": len(ensemble), "ensemble": [m.describe() for m in ensemble.members],
              "ensemble_source": ensemble.source, "constraint": constraint.settings(),
              "seconds": time.perf_counter() - t_start}
    write_json_atomic(out_dir / "summary.json", result, default=float)
    return result


def _summary_row(out: Path, stored: dict | None, resumed: bool, structure=None, prediction=None, levels=None,
                 times=None) -> dict[str, Any]:
    if stored is not None:
        c = stored["constraint"]
        converged, residual = c["converged"].astype(bool), c["mean_prediction"] - stored["levels"][None, :]
        iterations, levels, times = c["iterations"], stored["levels"], stored["times"]
        temperature, source, n = stored["attrs"]["temperature"], stored["attrs"]["source"], stored["types"].size
    else:
        arrays = prediction.constraint_arrays()
        converged, iterations = arrays["converged"].astype(bool), arrays["iterations"]
        residual = arrays["mean_prediction"] - np.asarray(levels)[None, :]
        temperature, source, n = structure.temperature, str(structure.path), structure.n_particles
    return {"file": str(out), "source": source, "temperature": float(temperature), "n_particles": int(n),
            "levels": np.asarray(levels).tolist(),
            "times": [None if not np.isfinite(x) else float(x) for x in np.asarray(times)],
            "converged_fraction": float(converged.mean()), "max_abs_residual": float(np.abs(residual).max()),
            "max_iterations_used": int(iterations.max()), "resumed": resumed}


def format_summary(result: Mapping[str, Any]) -> str:
    """What a researcher reads after predict.py: where the files are and whether the constraint converged."""
    lines = ["", f"Predictions of {result['n_networks']} network(s) for {len(result['structures'])} structure(s) "
                 f"in {result['out_dir']} ({result['seconds']:.1f} s)",
             f"  {'file':<28} {'T':>6} {'N':>7} {'levels':>6} {'converged':>9} {'max|Xbar-c|':>11}"]
    for r in result["structures"]:
        lines.append(f"  {Path(r['file']).name:<28} {r['temperature']:6.3f} {r['n_particles']:7d} "
                     f"{len(r['levels']):6d} {r['converged_fraction']:9.0%} {r['max_abs_residual']:11.2g}"
                     + ("  (kept)" if r["resumed"] else ""))
    if result.get("run_id"):
        lines.append(f"  MLflow run {result['run_id']}: `make ui`, then {result.get('ui_link', '')}")
    lines.append("  layout: docs/predict-format.md; read with tglassmlp.predict.read_prediction(path)")
    return "\n".join(lines)


def _missing(node, key: str) -> bool:
    from omegaconf import OmegaConf

    # ``key in node`` is False for a '???' value: look at the keys instead
    return key in node.keys() and OmegaConf.is_missing(node, key)


def predict(cfg) -> dict[str, Any]:
    """predict.py (``conf/predict.yaml``): load the ensemble, predict, write files, log an MLflow run.

    Order: check the request and the tracking store (fail fast), load the ensemble and the TTS, predict
    structure by structure, then log params, metrics and the files to MLflow when ``track`` and a tracking URI.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    for key in ("manifest", "path"):
        if _missing(cfg.ensemble_source, key):
            raise PredictionInputError(f"set ensemble_source.{key}=... (the ensemble to load)")
    levels = None if cfg.get("levels") is None else list(OmegaConf.to_container(cfg.levels, resolve=True))
    times = None if cfg.get("times") is None else list(OmegaConf.to_container(cfg.times, resolve=True))
    if times is not None and levels is not None:
        raise PredictionInputError("levels and times are both set: give one (levels=null times=[...])")
    tracking = None
    logger = cfg.get("logger")
    if cfg.get("track", True) and logger is not None and logger.get("tracking_uri"):
        from tglassmlp.tracking import TrackingStoreError

        tracking = instantiate(logger)
        try:
            tracking.prepare()  # fail fast: before any structure is read
        except TrackingStoreError as exc:
            raise PredictionInputError(str(exc)) from None
    constraint = instantiate(cfg.constraint)
    ensemble = instantiate(cfg.ensemble_source).load()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tts = None
    if times is not None:
        settings = OmegaConf.to_container(cfg.labels.tts, resolve=True) if "labels" in cfg else {}
        if cfg.tts.get("json"):
            tts = tts_from_json(cfg.tts.json, settings)
        elif cfg.tts.get("data_root"):
            tts = tts_from_data(cfg.tts.data_root, settings, int(cfg.reference_type))
        if tts is not None:  # the fitted values, reusable with tts.json=<this file>
            write_json_atomic(out_dir / "tts.json", tts.to_dict(), default=float)
    check = cfg.get("check") or {}
    result = predict_structures(
        ensemble, OmegaConf.to_container(cfg.structures, resolve=True) if OmegaConf.is_config(cfg.structures)
        else cfg.structures, out_dir, levels=levels, times=times, tts=tts, temperature=cfg.get("temperature"),
        constraint=constraint, reference_type=int(cfg.reference_type), chunk_size=int(cfg.chunk_size),
        cache_dir=cfg.get("cache_dir"), compute_inherent=bool(cfg.compute_inherent),
        inherent_max_force=float(cfg.inherent_max_force), density_rtol=float(check.get("density_rtol", 0.02)),
        composition_atol=float(check.get("composition_atol", 0.03)), save_networks=bool(cfg.save_networks),
        fast_attention=bool(cfg.get("fast_attention", True)),
        overwrite=bool(cfg.overwrite), progress=bool(cfg.get("progress", True)))
    if tracking is not None:
        _log_to_mlflow(tracking, cfg, ensemble, result, out_dir)
        result["run_id"], result["ui_link"] = tracking.run_id, tracking.ui_link()
    return result


def _log_to_mlflow(tracking, cfg, ensemble: Ensemble, result: Mapping[str, Any], out_dir: Path) -> None:
    """One MLflow run per predict.py call: params (request), metrics (constraint), files as artefacts."""
    from omegaconf import OmegaConf

    from tglassmlp.tracking import git_commit, hydra_job_info

    commit, dirty = git_commit()
    job = hydra_job_info()
    tracking.start_run({"job": "predict", "study": cfg.get("study"), "git_commit": commit,
                        "git_dirty": str(dirty).lower(), "mlflow.source.git.commit": commit,
                        "ensemble.kind": ensemble.source.get("kind"), "output_dir": str(out_dir.resolve()),
                        "overrides": job.get("overrides")}, run_name="predict")
    try:
        params = {"structures": json.dumps(OmegaConf.to_container(cfg.structures, resolve=True)
                                           if OmegaConf.is_config(cfg.structures) else str(cfg.structures)),
                  "levels": json.dumps(OmegaConf.to_container(cfg.levels) if cfg.get("levels") is not None else None),
                  "times": json.dumps(OmegaConf.to_container(cfg.times) if cfg.get("times") is not None else None),
                  "temperature": cfg.get("temperature"), "n_structures": len(result["structures"]),
                  "n_networks": len(ensemble), "ensemble.members": ",".join(ensemble.names),
                  "ensemble.source": json.dumps(ensemble.source, default=str), "chunk_size": cfg.chunk_size,
                  "reference_type": cfg.reference_type, "out_dir": str(out_dir.resolve())}
        params.update({f"constraint.{k}": v for k, v in result["constraint"].items()})
        tracking.log_params(params)
        rows = result["structures"]
        for i, r in enumerate(rows):
            tracking.log_metrics({"structure/max_abs_residual": r["max_abs_residual"],
                                  "structure/converged_fraction": r["converged_fraction"]}, step=i)
        tracking.log_metrics({"constraint/converged_fraction": float(np.mean([r["converged_fraction"] for r in rows])),
                              "constraint/max_abs_residual": float(max(r["max_abs_residual"] for r in rows)),
                              "time/total_s": float(result["seconds"])})
        tracking.log_artifact(out_dir / "summary.json")
        if (out_dir / "tts.json").is_file():
            tracking.log_artifact(out_dir / "tts.json")
        if cfg.get("log_predictions", True):
            for f in result["files"]:
                tracking.log_artifact(f, "predictions")
    except BaseException:
        tracking.end("FAILED")
        raise
    tracking.end("FINISHED")

"""Where an ensemble comes from: an ensemble manifest (:class:`ManifestEnsemble`), an MLflow experiment and
tag filter (:class:`MlflowEnsemble`), a registered model version (:class:`RegistryEnsemble`) or a folder of
model directories (:class:`DirectoryEnsemble`); each has
``load() -> Ensemble`` (the ``ensemble_source`` config group).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tglassmlp.ensemble.manifest import ManifestError, read_manifest, selected_run_ids, top_ranked_run_ids
from tglassmlp.ensemble.sources import latest_sweep, load_run_member, quiet_downloads
from tglassmlp.model.artifact import MODEL_FILES, EnsembleMember, ModelDirectoryError, load_model_dir
from tglassmlp.predict.errors import PredictionInputError
from tglassmlp.predict.members import Ensemble

log = logging.getLogger(__name__)

#: Default MLflow filter for the networks that passed the self-consistency selection (tglassmlp.ensemble).
SELECTED_FILTER = "tags.`ensemble.selected` = 'true'"


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
        with tempfile.TemporaryDirectory(prefix="tglassmlp-model-") as tmp, quiet_downloads():
            try:
                members.append(load_run_member(client, rid, tmp, source=f"mlflow:{uri}", require_state_points=False))
            except ModelDirectoryError as exc:
                raise PredictionInputError(f"{where}: run {rid}: {exc}") from None
            except (MlflowException, OSError) as exc:
                raise PredictionInputError(f"{where}: run {rid} has no model/ artefacts (not a finished train.py "
                                           f"run?): {exc}") from None
    return members


class ManifestEnsemble:
    """The networks of an ensemble manifest (``<sweep dir>/ensemble.json``, :mod:`tglassmlp.ensemble.manifest`).

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
        if str(self.manifest) == "latest":
            sweep = latest_sweep(self.sweeps_root, needs="manifest")
            if sweep is None:
                raise PredictionInputError(f"ensemble_source.manifest=latest: no train.py multirun with an ensemble.json "
                                           f"under {self.sweeps_root} (run make demo or train.py -m first)")
            self.manifest = sweep / "ensemble.json"
            log.info("ensemble_source.manifest=latest: %s", self.manifest)
        try:
            ranked, manifest = read_manifest(self.manifest, "all")
        except (ManifestError, FileNotFoundError) as exc:
            raise PredictionInputError(str(exc)) from None
        selected = selected_run_ids(manifest)
        how = "selected"
        if not selected:
            if self.top_k is None:
                raise PredictionInputError(
                    f"ensemble manifest {self.manifest} selects no run ({manifest.get('note', 'nothing selected')}); "
                    f"pass ensemble_source.top_k=K to use the K best-ranked of its {len(ranked)} runs anyway")
            selected = top_ranked_run_ids(manifest, self.top_k)
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
        experiment_name: the study's training experiment (``<study>/train``; in a store written before the
            experiments by purpose, ``<study>`` is used when ``<study>/train`` does not exist).
        filter: MLflow search filter on the runs (``attributes.status = 'FINISHED'`` is always added).
        top_k: keep at most this many, best ``selection/score`` (older runs: ``selection/self_consistency``)
            first (None: all matches).
    """

    def __init__(self, tracking_uri: str, experiment_name: str, filter: str = SELECTED_FILTER,
                 top_k: int | None = None):
        self.tracking_uri = str(tracking_uri)
        self.experiment_name = str(experiment_name)
        self.filter = str(filter or "").strip()
        self.top_k = None if top_k is None else int(top_k)

    def load(self) -> Ensemble:
        from mlflow.exceptions import MlflowException

        from tglassmlp.tracking import find_experiment

        client, uri = _open_store(self.tracking_uri)
        exp = find_experiment(client, self.experiment_name)
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
        runs = sorted(runs, key=lambda r: (r.data.metrics.get("selection/score",
                                                              r.data.metrics.get("selection/self_consistency", math.inf)),
                                           r.info.start_time))
        if self.top_k is not None:
            runs = runs[:self.top_k]
        members = _members_from_runs(client, uri, [r.info.run_id for r in runs],
                                     f"experiment {self.experiment_name!r}")
        return Ensemble(members, {"kind": "mlflow", "tracking_uri": uri, "experiment": exp.name,
                                  "filter": self.filter, "top_k": self.top_k})


class RegistryEnsemble:
    """A version of a registered model in the MLflow Model Registry: the ensemble that a train.py sweep
    registered (:mod:`tglassmlp.ensemble.registry`: its manifest and the selected networks' model
    directories), downloaded through the MLflow client (a remote tracking server works as a local store does).

    Args:
        tracking_uri: the store (or server) that holds the registry.
        name: the registered model (train.py: ``<study>.ensemble``).
        alias: the alias to read (train.py moves ``selected`` to the newest sweep's ensemble).
        version: a version number instead of the alias (None: the alias).
    """

    def __init__(self, tracking_uri: str, name: str, alias: str | None = "selected", version: int | str | None = None):
        if not str(name or "").strip():
            raise PredictionInputError("ensemble_source.name is empty (the registered model, e.g. <study>.ensemble)")
        if version is None and not alias:
            raise PredictionInputError("ensemble_source: give an alias or a version of the registered model")
        self.tracking_uri = str(tracking_uri)
        self.name = str(name)
        self.alias = None if alias is None else str(alias)
        self.version = None if version is None else str(version)

    def load(self) -> Ensemble:
        from mlflow.exceptions import MlflowException

        from tglassmlp.ensemble.registry import download_registered_ensemble

        client, uri = _open_store(self.tracking_uri)
        which = f"version {self.version}" if self.version is not None else f"alias {self.alias!r}"
        with tempfile.TemporaryDirectory(prefix="tglassmlp-registry-") as tmp:
            try:
                manifest, dirs, mv = download_registered_ensemble(client, self.name, self.alias, self.version, tmp)
            except MlflowException as exc:
                try:
                    known = sorted(m.name for m in client.search_registered_models())
                except MlflowException:
                    known = []
                raise PredictionInputError(f"registered model {self.name!r} ({which}) is not in {uri}: "
                                           f"{exc.message} (registered models: {known})") from None
            except ManifestError as exc:
                raise PredictionInputError(str(exc)) from None
            try:
                members = [load_model_dir(d, name=d.name, source=f"registry:{uri}:{self.name}/{mv.version}")
                           for d in dirs]
            except ModelDirectoryError as exc:
                raise PredictionInputError(f"registered model {self.name} version {mv.version}: {exc}") from None
        log.info("registered model %s version %s (%s): %d network(s) of sweep %s", self.name, mv.version, which,
                 len(members), manifest.get("sweep_id"))
        return Ensemble(members, {"kind": "registry", "tracking_uri": uri, "name": self.name, "alias": self.alias,
                                  "version": str(mv.version), "run_id": mv.run_id, "sweep_id": manifest.get("sweep_id")})


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
        try:
            members = [load_model_dir(d) for d in dirs]
        except ModelDirectoryError as exc:
            raise PredictionInputError(str(exc)) from None
        return Ensemble(members, {"kind": "directory", "path": str(self.path.resolve())})

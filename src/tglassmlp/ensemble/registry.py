"""A sweep's parent run and the MLflow Model Registry: what a train.py multirun leaves for people and for predict.py.

At the end of a multirun (:class:`tglassmlp.callbacks.SelectSelfConsistent`), :func:`record_sweep` gives the
sweep's parent run (created before the jobs by :class:`tglassmlp.callbacks.PrepareTrackingStore`):

* params ``sweep.overrides`` (the command line's overrides) and ``selection.threshold``;
* the selection table: per seed the metrics ``selection/seed<k>/score`` and ``selection/seed<k>/selected``
  (1/0) and the tag ``selection.seed<k>.basis``; the artefact ``selection.csv`` (one row per run: seed, run id,
  score, selected, basis, threshold, test Pearson, rho_max, Pearson / rho_max);
* the ensemble's summary metrics: ``selection/n_runs``, ``selection/n_selected``, ``selection/score`` (the
  best score of the sweep), and ``test/pearson_mean``, ``test/rho_max_mean``, ``test/pearson_over_ceiling``
  averaged over the selected networks (over all networks when none is selected; tag ``ensemble.summary_over``);
* the artefact folder ``ensemble/``: ``ensemble.json`` (the manifest) and ``members/<run id>/`` (the model
  directory of every selected network, copied from its run).

When at least one network is selected, ``ensemble/`` is registered as a new version of the registered model
(default ``<study>.ensemble``) with the alias ``selected`` (:func:`register_ensemble`): the registry's source is
``runs:/<parent run>/ensemble``, a plain artefact folder (no MLflow model flavour; MLflow 3 accepts any run
artefact path as a version's source). :func:`download_registered_ensemble` reads it back through the client,
so a remote tracking server works as a local store does.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tglassmlp.ensemble.manifest import MANIFEST_NAME, ManifestError, load_manifest, write_manifest
from tglassmlp.ensemble.selection import HEADLINE_METRICS

log = logging.getLogger(__name__)

#: the alias of the registered version that predict.py's registry source reads by default
SELECTED_ALIAS = "selected"
#: the registered version's artefact folder in the parent run
ENSEMBLE_ARTIFACT = "ensemble"
#: the member model directories inside it
MEMBERS_DIR = "members"


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def ensemble_summary(manifest: Mapping[str, Any]) -> dict[str, float]:
    """The sweep's summary metrics (module docstring) from a manifest whose ranking entries carry their runs'
    ``metrics``."""
    ranking = [e for e in manifest.get("ranking", []) if isinstance(e, dict)]
    selected = [e for e in ranking if e.get("selected")]
    members = selected or ranking
    out: dict[str, float] = {"selection/n_runs": float(len(ranking)), "selection/n_selected": float(len(selected))}
    scores = [float(e["score"]) for e in ranking if _finite(e.get("score"))]
    if scores:
        out["selection/score"] = min(scores)
    for key in HEADLINE_METRICS:
        values = [float(e["metrics"][key]) for e in members if _finite(e.get("metrics", {}).get(key))]
        if values:
            out[key] = sum(values) / len(values)
    return out


def selection_rows(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per ranked run (best first): seed, run_id, score, selected, basis, threshold and the run's
    headline test metrics."""
    rows = []
    for e in manifest.get("ranking", []):
        m = e.get("metrics", {})
        rows.append({"seed": e.get("seed"), "run_id": e.get("run_id"), "score": e.get("score"),
                     "selected": bool(e.get("selected")), "basis": e.get("basis"), "threshold": manifest.get("threshold"),
                     "test_pearson": m.get("test/pearson_mean", m.get("test/avg/pearson")),
                     "rho_max": m.get("test/rho_max_mean"), "pearson_over_ceiling": m.get("test/pearson_over_ceiling")})
    return rows


def _write_selection_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    fields = ["seed", "run_id", "score", "selected", "basis", "threshold", "test_pearson", "rho_max",
              "pearson_over_ceiling"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in fields})
    return path


def record_sweep(tracking, parent_run_id: str, manifest: Mapping[str, Any], overrides: Sequence[str] = (),
                 registered_model: str | None = None, alias: str = SELECTED_ALIAS) -> dict[str, Any]:
    """Give the sweep's parent run its overrides, selection table, summary metrics and ``ensemble/`` artefacts,
    and register the selected ensemble (module docstring).

    Args:
        tracking: a prepared :class:`tglassmlp.tracking.MlflowTracking` on the sweep's store.
        parent_run_id: the parent run (still open: the caller ends it).
        manifest: the sweep's selection manifest (:func:`tglassmlp.ensemble.select_sweep`).
        overrides: the multirun's command-line overrides.
        registered_model: the registered model's name; None: no registration.
        alias: the alias given to the new version.

    Returns:
        {'summary': the summary metrics, 'version': the registered version (str) or None, 'name'}.
    """
    from tglassmlp.ensemble.sources import download_run_model, quiet_downloads
    from tglassmlp.tracking import retry

    rows = selection_rows(manifest)
    params = {"sweep.overrides": " ".join(overrides), "selection.threshold": manifest.get("threshold")}
    tracking.log_params(params, run_id=parent_run_id)
    metrics, tags = ensemble_summary(manifest), {"ensemble.note": str(manifest.get("note", ""))[:5000]}
    tags["ensemble.summary_over"] = "selected" if manifest.get("selected") else "all (none selected)"
    for r in rows:
        if _finite(r["score"]):
            metrics[f"selection/seed{r['seed']}/score"] = float(r["score"])
        metrics[f"selection/seed{r['seed']}/selected"] = 1.0 if r["selected"] else 0.0
        tags[f"selection.seed{r['seed']}.basis"] = r["basis"]
    tracking.log_metrics(metrics, run_id=parent_run_id)
    tracking.set_tags(tags, run_id=parent_run_id)

    selected = [str(r) for r in manifest.get("selected") or []]
    with quiet_downloads(), tempfile.TemporaryDirectory(prefix="tglassmlp-sweep-") as tmp:
        tracking.log_artifact(_write_selection_csv(Path(tmp) / "selection.csv", rows), run_id=parent_run_id)
        folder = Path(tmp) / ENSEMBLE_ARTIFACT
        write_manifest(folder / MANIFEST_NAME, manifest)
        for rid in selected:
            download_run_model(tracking.client, rid, folder / MEMBERS_DIR / rid)
        retry(lambda: tracking.client.log_artifacts(parent_run_id, str(folder), ENSEMBLE_ARTIFACT),
              "log the ensemble folder")

    version = None
    if registered_model and selected:
        version = register_ensemble(tracking.client, registered_model, parent_run_id, manifest, alias)
        tracking.set_tags({"ensemble.registered": f"{registered_model} v{version} @{alias}"}, run_id=parent_run_id)
    elif registered_model:
        log.info("no network selected: the sweep's ensemble is not registered")
    return {"summary": metrics, "version": version, "name": registered_model}


def register_ensemble(client, name: str, run_id: str, manifest: Mapping[str, Any],
                      alias: str = SELECTED_ALIAS) -> str:
    """A new version of the registered model ``name`` (created when missing) whose source is the run's
    ``ensemble/`` folder, with ``alias`` moved to it. Returns the version number (a string)."""
    from mlflow.exceptions import MlflowException

    from tglassmlp.tracking import retry

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="Self-consistent tGlassMLP ensembles of train.py sweeps "
                                                              "(tglassmlp.ensemble.registry); read with predict.py "
                                                              "ensemble_source=registry")
        except MlflowException as exc:  # another sweep created it in between
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    tags = {"sweep_id": str(manifest.get("sweep_id")), "n_members": str(len(manifest.get("selected") or [])),
            "threshold": f"{float(manifest.get('threshold', math.nan)):g}",
            "fallback": str(manifest.get("fallback") or "none")}
    mv = retry(lambda: client.create_model_version(name, source=f"runs:/{run_id}/{ENSEMBLE_ARTIFACT}", run_id=run_id,
                                                   tags=tags, description=str(manifest.get("note", ""))[:5000]),
               "register the ensemble")
    retry(lambda: client.set_registered_model_alias(name, alias, mv.version), "set the alias")
    log.info("registered model %r version %s (alias %r): %d network(s)", name, mv.version, alias,
             len(manifest.get("selected") or []))
    return str(mv.version)


def download_registered_ensemble(client, name: str, alias: str | None = SELECTED_ALIAS, version: str | None = None,
                                 dest: str | os.PathLike | None = None) -> tuple[dict[str, Any], list[Path], Any]:
    """(manifest, member model directories in the manifest's ``selected`` order, the ModelVersion) of a
    registered ensemble, downloaded through ``client`` into ``dest``.

    Raises:
        mlflow.exceptions.MlflowException: no such model, alias or version.
        ManifestError: the version's folder is not an ensemble of this project (no ensemble.json, or a
            selected member missing).
    """
    if version is not None:
        mv = client.get_model_version(name, str(version))
    else:
        mv = client.get_model_version_by_alias(name, alias)
    source = str(mv.source)
    prefix = f"runs:/{mv.run_id}/"
    if not source.startswith(prefix):
        raise ManifestError(f"registered model {name} version {mv.version}: source {source!r} is not a run's artefact "
                            "folder (runs:/<run id>/ensemble, written by train.py's sweep callback)")
    from tglassmlp.ensemble.sources import quiet_downloads

    with quiet_downloads():
        local = Path(client.download_artifacts(mv.run_id, source[len(prefix):], str(dest or tempfile.mkdtemp())))
    try:
        manifest = load_manifest(local / MANIFEST_NAME)
    except FileNotFoundError:
        raise ManifestError(f"registered model {name} version {mv.version}: {source} has no {MANIFEST_NAME}") from None
    dirs = []
    for rid in manifest.get("selected") or []:
        d = local / MEMBERS_DIR / str(rid)
        if not d.is_dir():
            raise ManifestError(f"registered model {name} version {mv.version}: member {rid} is missing from {source}")
        dirs.append(d)
    if not dirs:
        raise ManifestError(f"registered model {name} version {mv.version}: its manifest selects no network")
    return manifest, dirs, mv

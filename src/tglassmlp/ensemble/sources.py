"""Where the networks of an ensemble are found: a finished MLflow run's ``model/`` artefacts
(:func:`load_run_member`), and the newest train.py multirun folder (:func:`latest_sweep`, the one rule behind
``ensemble_source.manifest=latest`` and analyze.py's ``networks.sweep_dir=latest``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tglassmlp.ensemble.manifest import MANIFEST_NAME
from tglassmlp.model.artifact import EnsembleMember, load_model_dir

#: train.py's multirun folders (Hydra: ``<output_dir>/hydra/train/multirun_<date>_<time>``)
SWEEP_GLOB = "multirun_*"
#: what a sweep must hold: its manifest, or trained networks (``<job>/artifacts/model``)
SWEEP_NEEDS = {"manifest": MANIFEST_NAME, "networks": "*/artifacts/model/state_dict.pt"}


def latest_sweep(root: str | os.PathLike, needs: str = "manifest") -> Path | None:
    """The newest train.py multirun folder under ``root`` (the last modified, i.e. the last to receive a job's
    output or its manifest) among those that hold what ``needs`` names ('manifest': an ``ensemble.json``;
    'networks': trained networks); None when there is none."""
    if needs not in SWEEP_NEEDS:
        raise ValueError(f"latest_sweep: needs must be one of {sorted(SWEEP_NEEDS)}, got {needs!r}")
    sweeps = [p for p in Path(root).glob(SWEEP_GLOB) if p.is_dir() and any(p.glob(SWEEP_NEEDS[needs]))]
    return max(sweeps, key=lambda p: (p.stat().st_mtime, p.name)) if sweeps else None


def download_run_model(client, run_id: str, dest: str | os.PathLike) -> Path:
    """A finished run's ``model/`` artefacts (the model directory) downloaded into the folder ``dest`` (made
    here); returns ``dest``. Goes through the client, so a remote tracking server works too."""
    import shutil

    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="tglassmlp-model-") as tmp:
        local = Path(client.download_artifacts(run_id, "model", tmp))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(local, dest, dirs_exist_ok=True)
    return dest


def load_run_member(client, run_id: str, dest: str | os.PathLike, *, source: str | None = None,
                    require_state_points: bool = True) -> EnsembleMember:
    """One network of a finished run (:class:`~tglassmlp.model.artifact.EnsembleMember`, named by the run id)
    from its ``model/`` artefacts, downloaded into ``dest`` and read by
    :func:`~tglassmlp.model.artifact.load_model_dir` (the one reader of the model directory layout).
    ``source`` is recorded with the member (default: the run). ``state_points.json`` is required unless
    ``require_state_points`` is False: the selection needs the run's training temperatures, a prediction does not.

    Raises:
        tglassmlp.model.artifact.ModelDirectoryError: a file of the model directory missing or inconsistent.
        FileNotFoundError: no ``state_points.json`` (when required).
        mlflow.exceptions.MlflowException, OSError: the download failed.
    """
    local = Path(client.download_artifacts(run_id, "model", str(dest)))
    member = load_model_dir(local, name=run_id, source=source or f"mlflow run {run_id}")
    if require_state_points and member.state_points is None:
        raise FileNotFoundError(f"run {run_id}: its model/ artefacts have no state_points.json (the training "
                                "state points, written by train.py)")
    return member


def load_run_network(client, run_id: str, dest: str | os.PathLike):
    """(network in eval mode, DescriptorScaler, state_points dict) of a run: :func:`load_run_member`."""
    member = load_run_member(client, run_id, dest)
    return member.network, member.scaler, member.state_points


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """No MLflow download bars inside the block: MLflow draws one per download, and dozens of 4-file model
    downloads would bury the log (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``, restored after)."""
    saved = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = saved


def load_run_members(client, run_ids: Sequence[str]) -> list[EnsembleMember]:
    """Networks of finished runs (:func:`load_run_member` each, in order), without MLflow's download bars."""
    out = []
    with quiet_downloads():
        for rid in run_ids:
            with tempfile.TemporaryDirectory(prefix="tglassmlp-model-") as tmp:
                out.append(load_run_member(client, rid, tmp))
    return out

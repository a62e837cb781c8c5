"""A trained network on disk: the model directory (train.py's run artefact ``model/``) and the network it
holds with its descriptor standardisation (:class:`EnsembleMember`). :func:`save_model_dir` is the one writer
and :func:`load_model_dir` the one reader of the layout:

    network.yaml        constructor arguments of the network (``_target_`` tglassmlp.model.network.TGlassMLP)
    state_dict.pt       its weights (torch.save)
    scaler.npz          the DescriptorScaler fitted with it (raw descriptor names -> kept, standardised columns)
    state_points.json   optional: the training state points ({'train': [[T, c], ...], ...})
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tglassmlp.atomic import atomic_path, atomic_write, write_json_atomic, write_text_atomic

class ModelDirectoryError(ValueError):
    """A model directory that cannot be read (a missing or inconsistent file; the message names it)."""


#: Files of a model directory (train.py's run artefact ``model/``); state_points.json is optional.
MODEL_FILES = ("network.yaml", "state_dict.pt", "scaler.npz")


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
        :func:`tglassmlp.predict.constrained_prediction`). Used by the selection and the transfer's labels."""
        return self.network(self.features(descriptors), float(temperature), float(level)).numpy().astype(np.float64)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def load_model_dir(path: str | os.PathLike, name: str | None = None, source: str | None = None) -> EnsembleMember:
    """One network from a model directory (``network.yaml``, ``state_dict.pt``, ``scaler.npz``, optionally
    ``state_points.json``): the one reader of the layout :func:`save_model_dir` writes (behind predict.py's
    ensemble sources, the selection's ``tglassmlp.ensemble.load_run_member`` and the analysis).

    Raises:
        ModelDirectoryError: a missing file (a missing ``scaler.npz`` above all: without the training
            standardisation the descriptors cannot be fed), a network of another class, or a network whose
            input width differs from the scaler's kept columns.
    """
    from omegaconf import OmegaConf

    from tglassmlp.model.network import TGlassMLP
    from tglassmlp.observables import DescriptorScaler

    path = Path(path)
    if not path.is_dir():
        raise ModelDirectoryError(f"model directory {path} does not exist")
    missing = [f for f in MODEL_FILES if not (path / f).is_file()]
    if missing:
        what = ("; scaler.npz is the descriptor standardisation of the training data, without which the "
                "network cannot read descriptors") if "scaler.npz" in missing else ""
        raise ModelDirectoryError(f"model directory {path} lacks {missing} (a model directory holds "
                                   f"{list(MODEL_FILES)} as train.py logs them under the run's model/){what}")
    kwargs = OmegaConf.to_container(OmegaConf.load(path / "network.yaml"), resolve=True)
    target = kwargs.pop("_target_", "tglassmlp.model.network.TGlassMLP")
    if target != "tglassmlp.model.network.TGlassMLP":
        raise ModelDirectoryError(f"{path / 'network.yaml'}: network class {target} is not "
                                   "tglassmlp.model.network.TGlassMLP")
    kwargs.pop("seed", None)
    network = TGlassMLP(**kwargs)
    try:
        network.load_state_dict(torch.load(path / "state_dict.pt", weights_only=True, map_location="cpu"))
    except RuntimeError as exc:
        raise ModelDirectoryError(f"{path / 'state_dict.pt'} does not fit {path / 'network.yaml'}: {exc}") from None
    network.eval()
    try:
        scaler = DescriptorScaler.load(path / "scaler.npz")
    except (KeyError, ValueError, OSError) as exc:
        raise ModelDirectoryError(f"{path / 'scaler.npz'}: not a descriptor scaler ({exc})") from None
    if scaler.n_kept != network.n_descriptors:
        raise ModelDirectoryError(f"{path}: the network reads {network.n_descriptors} descriptors but the scaler "
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

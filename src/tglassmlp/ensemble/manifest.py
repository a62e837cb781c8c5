"""The ensemble manifest ``ensemble.json``: the one schema, writer and reader.

Written at the end of a train.py multirun (``<sweep dir>/ensemble.json``, :func:`tglassmlp.ensemble.select_sweep`)
and by the two-step transfer for each of its ensembles; read by predict.py (``ensemble_source=manifest``), the
ridge-baseline comparison and analyze.py (``networks.selection=selected``). Keys:

    sweep_id        the sweep's folder (its runs' ``sweep_id`` tag)
    experiment_id   MLflow experiment of the runs;  tracking_uri: their store
    threshold       the self-consistency threshold;  levels: the <C_B> levels scored
    points          state point names scored, or None (each run's own points below its T_min)
    selected        run ids that pass (or the fallback's choice);  fallback: None or how the fallback chose
    note            one line for people
    ranking         best first: {run_id, seed, score, basis, selected, per_state_point {name: |mean - c|},
                    t_min, metrics {test/avg/...}}
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tglassmlp.atomic import write_json_atomic
from tglassmlp.statepoints import state_point_name

log = logging.getLogger(__name__)

#: the manifest's file name in a sweep folder
MANIFEST_NAME = "ensemble.json"


class ManifestError(ValueError):
    """An ensemble manifest or one of its runs cannot be used (the message names the file / run)."""


def make_manifest(sweep_id: str, experiment_id: str | None, tracking_uri: str | None, threshold: float,
                  levels: Sequence[float], choice: Mapping[str, Any], ranking: list[dict],
                  points: Sequence[tuple[float, float]] | None = None) -> dict[str, Any]:
    """The manifest of one selection (module docstring). ``choice``: {'selected', 'fallback', 'note'} of
    :func:`tglassmlp.ensemble.rank_and_select`; ``points`` None: each run's own below-T_min points."""
    return {"sweep_id": sweep_id, "experiment_id": experiment_id, "tracking_uri": tracking_uri,
            "threshold": threshold, "levels": [float(c) for c in levels],
            "points": None if points is None else [state_point_name(t, c) for t, c in points],
            **choice, "ranking": ranking}


def write_manifest(path: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write a manifest atomically (a reader never sees half a file)."""
    write_json_atomic(path, manifest)
    return Path(path)


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest as a dict, checked to be one (FileNotFoundError when absent, ManifestError when not JSON
    or not an object)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ensemble manifest {path} does not exist (a multirun of train.py writes "
                                "<sweep dir>/ensemble.json at its end; or pass the runs' metrics with --metrics)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"ensemble manifest {path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"ensemble manifest {path}: expected a JSON object with 'selected' and 'ranking'")
    return manifest


def ranked_entries(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ranking's entries that name a run, best first."""
    return [e for e in manifest.get("ranking", []) if isinstance(e, dict) and "run_id" in e]


def selected_run_ids(manifest: Mapping[str, Any]) -> list[str]:
    """The run ids the selection chose (empty when none passed and no fallback chose)."""
    return [str(r) for r in manifest.get("selected") or []]


def top_ranked_run_ids(manifest: Mapping[str, Any], k: int) -> list[str]:
    """The ``k`` best-ranked runs with a finite score (what to use when nothing is selected)."""
    ok = [e["run_id"] for e in ranked_entries(manifest) if math.isfinite(float(e.get("score", math.nan)))]
    return ok[:int(k)]


def read_manifest(path: str | Path, which: str = "selected") -> tuple[list[str], dict[str, Any]]:
    """(run ids, manifest) of an ensemble manifest.

    ``which``: 'selected' (the runs passing the self-consistency test; all ranked runs, with a warning, when
    none does) or 'all' (every ranked run).
    """
    manifest = load_manifest(path)
    ranked = [e["run_id"] for e in ranked_entries(manifest)]
    if which not in ("selected", "all"):
        raise ValueError(f"which must be 'selected' or 'all', got {which!r}")
    ids = selected_run_ids(manifest) if which == "selected" else ranked
    if which == "selected" and not ids:
        log.warning("%s: no run passes the self-consistency selection; using all %d ranked runs", path, len(ranked))
        ids = ranked
    if not ids:
        raise ManifestError(f"ensemble manifest {path} lists no runs")
    return ids, manifest

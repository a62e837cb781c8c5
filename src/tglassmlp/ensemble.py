"""Self-consistency selection of a seed ensemble (paper Sec. II E).

The average predicted propensity is an input of tGlassMLP (c = <C_B>), so a network that has learnt a
consistent model predicts, on structures it has never seen, a mean close to c. The paper keeps the networks
with |Xbar_MLP - <C_B>| < 1e-4 on the structures below the lowest training temperature T_min, at the levels
where labels are wanted. Here, for every finished run of a sweep:

    score = max over (T < T_min of the run, c in levels) of | mean_s mean_i X_MLP^i(s; T, c) - c |

(s: the structures at T, i: their type-0 particles), computed from the run's artefacts (network, scaler).
Runs with score < threshold are tagged ``ensemble.selected = true``; all runs get the metric
``selection/self_consistency`` and are ranked by it in ``<sweep dir>/ensemble.json``. Without structures
below T_min the ranking falls back to the runs' ``test/avg/self_consistency`` and the manifest says so.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def load_run_network(client, run_id: str, dest: Path):
    """(network in eval mode, DescriptorScaler, state_points dict) from a run's ``model/`` artefacts.

    Downloads ``model/`` into ``dest`` and reads it with :func:`tglassmlp.predict.load_model_dir` (the one
    reader of the model directory layout); ``state_points.json`` is required here (the selection needs the
    run's training temperatures).

    Raises:
        tglassmlp.predict.PredictionInputError: a file of the model directory missing or inconsistent.
        FileNotFoundError: no ``state_points.json``.
    """
    # imported here: tglassmlp.predict reads ensemble manifests, a module-level import would invite a cycle
    from tglassmlp.predict import load_model_dir

    local = Path(client.download_artifacts(run_id, "model", str(dest)))
    member = load_model_dir(local, name=run_id, source=f"mlflow run {run_id}")
    if member.state_points is None:
        raise FileNotFoundError(f"run {run_id}: its model/ artefacts have no state_points.json (the training "
                                "state points, written by train.py)")
    return member.network, member.scaler, member.state_points


def reference_features(root, temperature: float, reference_type: int = 0, cache_dir=None,
                       max_structures: int | None = None) -> list[np.ndarray]:
    """Raw descriptors (N_0, D) of the reference particles of every structure at ``temperature``."""
    from tglassmlp.data.datamodule import shard_descriptors, temperatures_in
    from tglassmlp.data.shards import open_shard, read_shard

    out = []
    for path in temperatures_in(root).get(round(float(temperature), 3), [])[:max_structures]:
        with open_shard(path) as reader:
            present = set(reader.fields)
        shard = read_shard(path, fields=[f for f in ("types", "inherent_positions", "particle_energies", "descriptors")
                                          if f in present])
        if "descriptors" not in shard and "inherent_positions" not in shard:
            log.warning("%s: no inherent structure yet; left out of the selection", path)
            continue
        desc, _ = shard_descriptors(shard, cache_dir)
        out.append(desc[np.asarray(shard["types"]) == reference_type])
    return out


@torch.no_grad()
def mean_prediction(network, features: Sequence[np.ndarray], temperature: float, level: float) -> float:
    """Mean over structures of the mean predicted propensity of their particles at (T, c)."""
    means = [float(network(torch.as_tensor(f, dtype=torch.float32), temperature, level).mean()) for f in features]
    return float(np.mean(means))


def select_sweep(tracking_uri: str, experiment_name: str, sweep_id: str, data_root, levels: Sequence[float],
                 threshold: float = 1e-4, manifest: str | Path | None = None, cache_dir=None,
                 max_structures: int | None = None) -> dict[str, Any]:
    """Score, tag and rank the finished runs of one sweep; write and return the manifest (module docstring)."""
    from tglassmlp.data.datamodule import state_point_name, temperatures_in
    from tglassmlp.tracking import MlflowTracking

    tracking = MlflowTracking(tracking_uri, experiment_name)
    exp = tracking.prepare()
    client = tracking.client
    runs = client.search_runs([exp], filter_string=f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'")
    temps_available = sorted(temperatures_in(data_root)) if Path(data_root).is_dir() else []
    entries, features_cache = [], {}
    for run in runs:
        rid = run.info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            network, scaler, sp = load_run_network(client, rid, Path(tmp))
        t_min = min(t for t, _ in sp["train"])
        below = [t for t in temps_available if t < t_min - 1e-9]
        per_point = {}
        for t in below:
            if t not in features_cache:
                features_cache[t] = reference_features(data_root, t, cache_dir=cache_dir, max_structures=max_structures)
            feats = [scaler.transform(f) for f in features_cache[t]]
            for c in levels:
                per_point[state_point_name(t, c)] = abs(mean_prediction(network, feats, t, c) - float(c))
        if per_point:
            score, basis = max(per_point.values()), "structures below T_min"
        else:
            score, basis = float(run.data.metrics.get("test/avg/self_consistency", math.nan)), "test/avg/self_consistency"
        selected = bool(per_point) and score < threshold
        entries.append({"run_id": rid, "seed": run.data.tags.get("seed"), "score": score, "basis": basis,
                        "selected": selected, "per_state_point": per_point, "t_min": t_min,
                        "metrics": {k: v for k, v in run.data.metrics.items() if k.startswith("test/avg/")}})
        tracking.run_id = rid
        if math.isfinite(score):
            tracking.log_metrics({"selection/self_consistency": score})
        tracking.set_tags({"ensemble.selected": str(selected).lower(), "ensemble.selection_basis": basis,
                           "ensemble.threshold": f"{threshold:g}"})
    entries.sort(key=lambda e: (not math.isfinite(e["score"]), e["score"]))
    chosen = [e["run_id"] for e in entries if e["selected"]]
    result = {"sweep_id": sweep_id, "experiment_id": exp, "tracking_uri": tracking.tracking_uri,
              "threshold": threshold, "levels": list(levels),
              "selected": chosen, "ranking": entries,
              "note": (f"{len(chosen)} of {len(entries)} runs pass |mean prediction - c| < {threshold:g}" if chosen
                       else f"no run passes |mean prediction - c| < {threshold:g}; ranking kept, nothing selected")}
    if manifest is not None:  # atomic: a reader never sees half a manifest
        manifest = Path(manifest)
        tmp = manifest.with_name(manifest.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(manifest)
    log.info("ensemble selection: %s (manifest %s)", result["note"], manifest)
    return result


try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class SelectSelfConsistent(_HydraCallback):
    """Hydra callback: at the end of a multirun, run :func:`select_sweep` on its runs and write
    ``<sweep dir>/ensemble.json``. ``levels`` null: the data config's levels."""

    def __init__(self, threshold: float = 1e-4, levels: Sequence[float] | None = None, enabled: bool = True):
        self.threshold = float(threshold)
        self.levels = None if levels is None else [float(c) for c in levels]
        self.enabled = bool(enabled)

    def on_multirun_end(self, config, **kwargs) -> None:
        if not self.enabled:
            return
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        logger = OmegaConf.to_container(config.logger, resolve=True)
        data = OmegaConf.to_container(config.data, resolve=True)
        try:
            result = select_sweep(logger["tracking_uri"], logger.get("experiment_name") or config.study,
                                  str(sweep_dir), data["root"], self.levels or data.get("levels") or [],
                                  self.threshold, sweep_dir / "ensemble.json", cache_dir=data.get("cache_dir"),
                                  max_structures=data.get("max_structures"))
        except Exception:  # the trained runs are recorded already: a failed selection must not hide them
            log.exception("ensemble selection failed for sweep %s", sweep_dir)
            return
        print(format_summary(result, sweep_dir / "ensemble.json"))


def format_summary(result: dict, manifest) -> str:
    """What a researcher wants to read after a sweep: the ranking, what was selected, where things are."""
    lines = ["", f"Ensemble of {len(result['ranking'])} run(s): {result['note']}", f"  manifest: {manifest}",
             f"  {'seed':>4} {'run id':<32} {'|mean - c|':>11} {'test Pearson':>12} {'selected':>8}"]
    for e in result["ranking"]:
        pearson = e["metrics"].get("test/avg/pearson", float("nan"))
        lines.append(f"  {str(e['seed']):>4} {e['run_id']:<32} {e['score']:11.3g} {pearson:12.3f} "
                     f"{'yes' if e['selected'] else 'no':>8}")
    lines.append(f"  scored on: {result['ranking'][0]['basis'] if result['ranking'] else '-'}")
    lines.append(f"  MLflow UI: `make ui`, then http://127.0.0.1:5000/#/experiments/{result['experiment_id']}/runs")
    return "\n".join(lines)

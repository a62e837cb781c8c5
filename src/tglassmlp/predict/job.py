"""predict.py's job (``conf/predict.yaml``) as a plain function: :func:`predict` reads the config, runs
:func:`~tglassmlp.predict.run.predict_structures` and logs one MLflow run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tglassmlp.atomic import write_json_atomic
from tglassmlp.predict.errors import PredictionInputError
from tglassmlp.predict.levels import tts_from_data, tts_from_json
from tglassmlp.predict.members import Ensemble
from tglassmlp.predict.run import predict_structures


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
        overwrite=bool(cfg.overwrite), progress=bool(cfg.get("progress", True)), descriptors=cfg.get("descriptors"))
    if tracking is not None:
        _log_to_mlflow(tracking, cfg, ensemble, result, out_dir)
        result["run_id"], result["ui_link"] = tracking.run_id, tracking.ui_link()
    return result


def _log_to_mlflow(tracking, cfg, ensemble: Ensemble, result: Mapping[str, Any], out_dir: Path) -> None:
    """One MLflow run per predict.py call: params (request), metrics (constraint), files as artefacts."""
    from omegaconf import OmegaConf

    from tglassmlp.tracking import hydra_job_info

    job = hydra_job_info()
    with tracking.run({"job": "predict", "study": cfg.get("study"), "ensemble.kind": ensemble.source.get("kind"),
                       "output_dir": str(out_dir.resolve()), "overrides": job.get("overrides")}, run_name="predict"):
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

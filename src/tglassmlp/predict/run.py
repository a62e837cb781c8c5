"""The prediction driver: every structure of a request predicted and written, with resume and a summary
(:func:`predict_structures`, :func:`format_summary`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tglassmlp.atomic import write_json_atomic
from tglassmlp.predict.constraint import MeanConstraint
from tglassmlp.predict.errors import PredictionInputError
from tglassmlp.predict.io import _existing_hash, read_prediction, settings_hash, write_prediction
from tglassmlp.predict.levels import levels_at
from tglassmlp.predict.members import Ensemble
from tglassmlp.predict.prediction import EnsemblePrediction
from tglassmlp.predict.structures import InputStructure, check_structure, find_structures, load_structure

log = logging.getLogger(__name__)


def check_descriptor_settings(ensemble: Ensemble, descriptors=None) -> None:
    """Refuse networks trained on descriptors made with other settings or code than ``descriptors`` (the columns
    would keep their names but change their meaning, e.g. plain vs radical Voronoi perimeters); warn for networks
    whose scaler records no settings (trained before the record existed)."""
    from tglassmlp.data.structures import descriptor_settings_hash
    from tglassmlp.observables.descriptors import load_descriptor_settings

    expected = descriptor_settings_hash(load_descriptor_settings("default" if descriptors is None else descriptors))
    unknown = [m.name for m in ensemble.members if getattr(m.scaler, "settings_hash", None) is None]
    wrong = [m.name for m in ensemble.members if getattr(m.scaler, "settings_hash", None) not in (None, expected)]
    if wrong:
        raise PredictionInputError(
            f"{len(wrong)} network(s) were trained on descriptors made with other settings or descriptor code than "
            f"this prediction's (hash {expected}): {wrong[:3]}; pass the training's descriptors settings "
            "(predict.py descriptors.<key>=...) or retrain")
    if unknown:
        log.warning("%d network(s) record no descriptor settings (trained before they were recorded): %s; make sure "
                    "they were trained with the descriptors settings used here (since this version the perimeters "
                    "are radical Voronoi by default, descriptors.perimeter.weighted=false gives the plain ones)",
                    len(unknown), unknown[:3])


def predict_structures(ensemble: Ensemble, structures, out_dir, *, levels=None, times=None, tts=None,
                       temperature: float | None = None, constraint: MeanConstraint | None = None,
                       reference_type: int = 0, chunk_size: int = 2048, cache_dir=None,
                       compute_inherent: bool = True, inherent_max_force: float = 1e-6,
                       density_rtol: float = 0.02, composition_atol: float = 0.03, save_networks: bool = True,
                       fast_attention: bool = True, overwrite: bool = False, progress: bool = False,
                       descriptors=None) -> dict[str, Any]:
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
    check_descriptor_settings(ensemble, descriptors)
    paths = find_structures(structures)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels: dict[str, Path] = {}
    t_start = time.perf_counter()
    rows = []
    unconverged = []  # (temperature, pairs not converged, pairs, max |Xbar - c|): reported once, after the loop

    def load(path: Path) -> InputStructure:
        s = load_structure(path, temperature=temperature, cache_dir=cache_dir, compute_inherent=compute_inherent,
                           inherent_max_force=inherent_max_force, descriptors=descriptors)
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
            unconverged.append((group[0].temperature, not_conv, len(ensemble) * target.size,
                                max(r["max_abs_residual"] for r in rows[-len(group):])))
    if unconverged:
        # one line after the progress bar (the summary table has the converged fraction per file)
        log.warning("the mean constraint did not converge within %d updates for some (network, level) pairs: %s",
                    constraint.max_iterations, "; ".join(f"T = {t:g}: {n} of {m} (max |Xbar - c| = {r:.2g})"
                                                         for t, n, m, r in unconverged))
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

"""State points of a prediction: the requested levels c = <C_B>, or times t [tau] turned into levels at the
structure's temperature by the time-temperature superposition (read from JSON or fitted on an MD dataset).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tglassmlp.predict.errors import PredictionInputError


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

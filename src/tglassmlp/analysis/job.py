"""Dynamic heterogeneity of MD data and of predictions: the numbers and figures of the paper's Secs. III-VI.

``analyze(cfg)`` (called by the top-level ``analyze.py``, configured by ``conf/analyze.yaml``):

1. MD: every temperature of ``data_root`` with propensities, on the MD times and at the <C_B> ``levels``:
   chi_4 (Eq. 9), S_4(q) (Eq. 10), xi_4 (Eq. 11), A (Eq. C1), the chord length (Sec. V B). Error bars: bootstrap
   over structures.
2. Networks (``networks.sweep_dir``; 'latest' = the newest train.py multirun): each network predicts the
   propensity of every structure at every temperature of ``data_root`` (swap-MC-only temperatures too) at
   the levels; the same observables per network, mean +- std over networks (the paper's error bars); Pearson
   rho_P against MD on the structures the networks were not trained on (Eq. 8); P_int(L), xi_int from the
   attention weights; the bottleneck activations (Sec. VI).
3. Prediction files (``predictions``: a Hydra ``_target_`` callable returning ``PropensityField`` objects, see
   ``tglassmlp.analysis.fields``; ``predictions=files`` reads predict.py's output folder with
   ``read_prediction_fields``): when given, they are the predictions of every figure and table (predict.py's
   mean-constrained propensities, App. B), in place of 2's plain network outputs; the networks of 2 then only
   give the internals (attention, bottleneck: Figs. 9-11). Their MD truth is matched by input path (Pearson,
   Fig. 3), and structures count as training structures by the train/test split of the networks whose
   digests the files record (found in ``networks.sweep_dir`` or under the files' ensemble source).
4. Figures (``tglassmlp.analysis.figures``) and tables under ``out_dir``; an MLflow run with the figures,
   tables and headline numbers (``mlflow=false`` switches MLflow off).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tglassmlp.data.ceilings import ShardRuns
from tglassmlp.analysis.fields import (
    NetworkProbe,
    PropensityField,
    SavedNetwork,
    find_sweep_networks,
    latest_sweep,
    md_fields,
    prediction_field,
    saved_networks_under,
    structure_propensity,
)
from tglassmlp.atomic import write_json_atomic, write_text_atomic
from tglassmlp.observables.attention import AttentionLengthScale
from tglassmlp.observables.chords import ChordLength
from tglassmlp.observables.four_point import (
    FourPointStructureFactor,
    FourPointSusceptibility,
    OrnsteinZernikeFit,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ files
def write_csv(path: Path, rows: list[dict]) -> Path:
    """Rows (dicts) as CSV, atomically; the columns are the union of the keys (missing cells empty)."""
    buf = io.StringIO()
    if rows:
        names = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=names, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return write_text_atomic(path, buf.getvalue())


# ------------------------------------------------------------------------------------------------ observables
class HeterogeneitySettings:
    """The analysis parameters of ``conf/analyze.yaml`` (chi4, s4, oz, chords sections)."""

    def __init__(self, chi4: Mapping, s4: Mapping, oz: Mapping, chords: Mapping):
        self.n_bootstrap = int(chi4.get("n_bootstrap", 200))
        self.n_bootstrap_fits = int(chi4.get("n_bootstrap_fits", 50))
        self.seed = int(chi4.get("seed", 0))
        self.s4 = dict(s4)
        self.oz = dict(oz)
        self.chord_cell = float(chords.get("cell_size", 2.0))
        self.chord_threshold = str(chords.get("threshold", "median"))


def _fit_curves(q, s4_rows, fitter, windows: bool = False):
    """(chi4_tilde, xi4, A) arrays over the K rows of S_4; with ``windows`` also the largest q of each Eq. (11)
    window actually used [1/sigma] and whether the box limited it (``OrnsteinZernikeFit.window_limited``)."""
    out = np.full((5, len(s4_rows)), np.nan)
    for k, row in enumerate(s4_rows):
        fit = fitter.compute(q, row)  # compute() returns the same object each time: read it out now
        out[:, k] = fit.chi4_tilde, fit.xi4, fit.prefactor_a, fit.window_q_max, float(fit.window_limited)
    return (out[0], out[1], out[2], out[3], out[4]) if windows else (out[0], out[1], out[2])


def _chord_sums(field_values, positions, box, chord) -> np.ndarray:
    """(S, K, 2): per structure and time, (sum of chord lengths [sigma], number of chords)."""
    out = np.zeros((len(field_values), field_values[0].shape[0], 2))
    for s, (vals, pos) in enumerate(zip(field_values, positions)):
        for k, row in enumerate(vals):
            ch = chord.compute(pos, row, box).chords
            out[s, k] = ch.sum(), ch.size
    return out


def observe(values: list[np.ndarray], positions: list[np.ndarray], box: float, settings: HeterogeneitySettings,
            bootstrap: bool) -> dict[str, np.ndarray]:
    """chi_4, S_4, xi_4, chi4_tilde, A and <xi_chord> of one set of structures (each (K, N_s)).

    With ``bootstrap``, ``*_err`` are standard deviations over structures resampled with replacement; else NaN.
    Returns arrays over K (S_4: (K, n_q) with ``q``).
    """
    chi = FourPointSusceptibility(settings.n_bootstrap if bootstrap else 0, settings.seed).compute(values)
    sf = FourPointStructureFactor(**settings.s4).compute(positions, values, box)
    fitter = OrnsteinZernikeFit(**settings.oz)
    chi_t, xi, a, window, limited = _fit_curves(sf.q, sf.s4, fitter, windows=True)
    chord = ChordLength(settings.chord_cell, settings.chord_threshold)
    sums = _chord_sums(values, positions, box, chord)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_chord = sums[:, :, 0].sum(0) / sums[:, :, 1].sum(0)
    nan = np.full(len(xi), np.nan)
    out = {"mean": chi.mean, "chi4": chi.chi4, "chi4_err": chi.chi4_err, "q": sf.q, "s4": sf.s4,
           "s4_err": sf.s4_err, "chi4_tilde": chi_t, "xi4": xi, "A": a, "chord": mean_chord,
           "oz_window_q": window, "oz_window_limited": limited,
           "xi4_err": nan, "A_err": nan, "chord_err": nan}
    n = len(values)
    if bootstrap and n > 1:
        rng = np.random.default_rng(settings.seed + 1)
        xis, as_, chords = [], [], []
        for _ in range(settings.n_bootstrap_fits):
            pick = rng.integers(0, n, n)
            _, x_b, a_b = _fit_curves(sf.q, sf.s4_samples[pick].mean(0), fitter)
            xis.append(x_b)
            as_.append(a_b)
            with np.errstate(invalid="ignore", divide="ignore"):
                chords.append(sums[pick, :, 0].sum(0) / sums[pick, :, 1].sum(0))
        with warnings.catch_warnings():  # all-NaN columns (no fit possible) stay NaN quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            out["xi4_err"] = np.nanstd(xis, axis=0, ddof=1)
            out["A_err"] = np.nanstd(as_, axis=0, ddof=1)
            out["chord_err"] = np.nanstd(chords, axis=0, ddof=1)
    return out


def observe_ensemble(field: PropensityField, settings: HeterogeneitySettings) -> dict[str, np.ndarray]:
    """Observables of a predicted field: per network, then mean and std over networks (the paper's error
    bars). Without per-network predictions: the ensemble mean's observables with a bootstrap over structures."""
    positions = [s.positions for s in field.structures]
    m = field.n_members
    if m < 2:
        return observe(field.values(), positions, field.box, settings, bootstrap=True)
    per = [observe(field.member_values(j), positions, field.box, settings, bootstrap=False) for j in range(m)]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key in ("mean", "chi4", "s4", "chi4_tilde", "xi4", "A", "chord", "oz_window_q", "oz_window_limited"):
            stack = np.array([p[key] for p in per])
            out[key] = np.nanmean(stack, axis=0)
            out[key + "_err"] = np.nanstd(stack, axis=0, ddof=1)
    out["q"] = per[0]["q"]
    out["n_networks"] = m
    return out


def md_shards(field: PropensityField, md_field: PropensityField | None) -> list[str | None]:
    """The MD shard of each structure of a predicted field (by input path, else by (T, structure index) of the
    shard name, as :func:`attach_md_truth` matches them); None where there is none."""
    from tglassmlp.data.shards import parse_shard_path

    def key(name):
        try:
            return parse_shard_path(Path(name))
        except ValueError:
            return None

    if md_field is None:
        return [None] * len(field.structures)
    by_path = {Path(m.name).resolve(): m.name for m in md_field.structures}
    by_index = {key(m.name): m.name for m in md_field.structures}
    by_index.pop(None, None)
    return [by_path.get(Path(s.name).resolve()) or by_index.get(key(s.name)) for s in field.structures]


def pearson_scores(field: PropensityField, md_field: PropensityField | None = None,
                   runs=None) -> dict[str, np.ndarray]:
    """rho_P (Eq. 8) per level against the MD truth: per network, the mean over the structures the networks
    were not trained on; then mean and std over networks. Also the same over the training structures.

    With the MD field and a :class:`~tglassmlp.data.ceilings.ShardRuns`, also ``rho_max_test`` and
    ``rho_max_train`` (K,): the label ceiling of the same structures' labels at each level (per-run C_B at the
    level's crossing time t* of the MD curve), and ``n_runs`` (the N_R of those shards, 0 when unknown)."""
    from tglassmlp.metrics import pearson
    from tglassmlp.observables.labels import crossing_time

    out = {}
    shards = dict(zip(map(id, field.structures), md_shards(field, md_field)))
    n_runs = set()
    for label, wanted in (("test", False), ("train", True)):
        structs = [s for s in field.structures if s.trained == wanted and s.truth is not None]
        k = field.levels.size
        out["rho_max_" + label] = np.full(k, np.nan)
        if not structs:
            out[label], out[label + "_err"], out[label + "_n"] = np.full(k, np.nan), np.full(k, np.nan), 0
            continue
        if runs is not None and md_field is not None:
            for i, c in enumerate(field.levels):
                scored = [s for s in structs if np.all(np.isfinite(s.truth[i]))]
                paths = [shards[id(s)] for s in scored]
                if scored and all(p is not None for p in paths):
                    t_star = crossing_time(md_field.times, md_field.levels, float(c))
                    out["rho_max_" + label][i] = runs.ceiling([(p, t_star) for p in paths])
                    n_runs |= {runs.n_runs(p) for p in paths}
        m = max(1, field.n_members)
        rho = np.full((m, k), np.nan)
        for j in range(m):
            for i in range(k):
                vals = [pearson(s.members[j, i] if s.members is not None else s.values[i], s.truth[i])
                        for s in structs if np.all(np.isfinite(s.truth[i]))]
                if vals:
                    rho[j, i] = np.mean(vals)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[label] = np.nanmean(rho, axis=0)
            out[label + "_err"] = np.nanstd(rho, axis=0, ddof=1) if m > 1 else np.full(k, np.nan)
        out[label + "_n"] = len(structs)
    out["n_runs"] = sorted(n_runs)
    return out


# ------------------------------------------------------------------------------------------------ networks
def training_structures(networks: list[SavedNetwork], data_root) -> set[Path]:
    """Resolved paths of the shards of ``data_root`` the networks were trained on: at their training temperatures
    (``state_points.json``), the train part of train.py's split (``data.train_fraction``, ``data.split_seed`` of
    the run config; PropensityDataModule.split) of the structures there. The first network's settings stand for
    all (one sweep)."""
    from tglassmlp.training.datamodule import PropensityDataModule, temperatures_in
    from tglassmlp.data.shards import parse_shard_path

    split = (networks[0].config or {}).get("data", {}) or {}
    splitter = PropensityDataModule(data_root, train_fraction=float(split.get("train_fraction", 0.8)),
                                    split_seed=int(split.get("split_seed", 0)))
    trained_t = set(networks[0].training_temperatures)
    out = set()
    for temperature, paths in temperatures_in(data_root).items():
        if temperature in trained_t and len(paths) > 1:
            indices = [parse_shard_path(p)[1] for p in paths]
            train_idx = set(splitter.split(temperature, indices)[0])
            out |= {Path(p).resolve() for p, i in zip(paths, indices) if i in train_idx}
    return out


def network_fields(probe: NetworkProbe, data_root, levels, tts,
                   md_at_levels: Mapping[float, PropensityField]) -> tuple[dict, dict]:
    """Predict every structure of ``data_root`` at ``levels`` with every network.

    Returns ({T: PropensityField with members}, {T: {'attention': (M, K, M_S) averaged over structures,
    'bottleneck': [(M, K, N, 2) per structure], 'truth': [(K, N) per structure or None]}}).
    """
    from tglassmlp.training.datamodule import temperatures_in

    trained = training_structures(probe.networks, data_root)
    fields, internals = {}, {}
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    for temperature, paths in tqdm(sorted(temperatures_in(data_root).items(), reverse=True),
                                   desc="network predictions", unit="T"):
        md = md_at_levels.get(temperature)
        structs, atts, necks, truths = [], [], [], []
        for path in paths:
            desc, pos, box, _ = probe.shard_inputs(path)
            res = probe.run(desc, temperature, levels)
            truth = None
            if md is not None:
                md_struct = next((s for s in md.structures if Path(s.name) == Path(path)), None)
                if md_struct is not None:
                    truth = np.full((len(levels), pos.shape[0]), np.nan)
                    for i, c in enumerate(levels):
                        hit = np.flatnonzero(np.isclose(md.levels, c))
                        if hit.size:
                            truth[i] = md_struct.values[hit[0]]
            s = structure_propensity(pos, box, res.propensity.mean(0), res.propensity.std(0, ddof=1)
                                     if res.propensity.shape[0] > 1 else None, res.propensity,
                                     name=str(path), trained=Path(path).resolve() in trained)
            s.truth = truth
            structs.append(s)
            atts.append(res.attention)
            necks.append(res.bottleneck)
            truths.append(truth)
        fields[temperature] = prediction_field(temperature, levels, structs, source="tGlassMLP", tts=tts)
        internals[temperature] = {"attention": np.mean(atts, axis=0), "bottleneck": necks, "truth": truths,
                                  "names": probe.names}
    return fields, internals


def attention_scales(internals: Mapping[float, dict], levels) -> dict[float, dict]:
    """{T: {'lengths', 'p_int' (K, n_L), 'p_int_err', 'xi_int' (K,), 'xi_int_err'}}, mean +- std over networks."""
    out = {}
    for temperature, item in internals.items():
        scale = AttentionLengthScale(item["names"])
        att = item["attention"]  # (M, K, M_S)
        p = np.array([[scale.compute(att[m, k]).p_int for k in range(att.shape[1])] for m in range(att.shape[0])])
        xi = np.array([[scale.compute(att[m, k]).xi_int for k in range(att.shape[1])] for m in range(att.shape[0])])
        ddof = 1 if att.shape[0] > 1 else 0
        out[temperature] = {"lengths": scale.lengths, "p_int": p.mean(0), "p_int_err": p.std(0, ddof=ddof),
                            "xi_int": xi.mean(0), "xi_int_err": xi.std(0, ddof=ddof), "levels": np.asarray(levels)}
    return out


# ------------------------------------------------------------------------------------------------ prediction files
def attach_md_truth(field: PropensityField, md_field: PropensityField | None) -> list[str]:
    """Give every structure of a predicted field that is an MD structure of the same temperature its MD
    propensity at the field's levels (``labels_at_levels`` on the MD times; NaN rows for levels the MD does not
    reach). Matched by input path, else by (T, structure index) of the shard name for data that moved; the
    positions must agree. Structures without MD get all-NaN truth. Returns the names of those.

    Raises ValueError when a matched MD structure has other positions (the prediction is of another structure).
    """
    from tglassmlp.data.shards import parse_shard_path
    from tglassmlp.observables.labels import labels_at_levels

    def key(name):
        try:
            return parse_shard_path(Path(name))
        except ValueError:
            return None

    by_path = {Path(s.name).resolve(): s for s in md_field.structures} if md_field is not None else {}
    by_index = {key(s.name): s for s in md_field.structures} if md_field is not None else {}
    by_index.pop(None, None)
    unmatched = []
    for s in field.structures:
        md = by_path.get(Path(s.name).resolve()) or by_index.get(key(s.name))
        if md is None:
            s.truth = np.full(s.values.shape, np.nan)
            unmatched.append(s.name)
            continue
        if md.positions.shape != s.positions.shape or not np.allclose(md.positions, s.positions, rtol=0, atol=1e-6):
            raise ValueError(f"{s.file or s.name}: the predicted structure's type-0 positions differ from those of the "
                             f"MD shard {md.name}; the prediction is of another structure")
        s.truth = labels_at_levels(md_field.times, md.values, md_field.levels, field.levels)[1]
    return unmatched


def prediction_networks(info: Mapping, candidates: list[SavedNetwork]) -> list[SavedNetwork] | None:
    """The saved networks behind prediction files (by the weight digests ``info['ensemble']`` records), from
    ``candidates`` or from the folder of the files' ensemble source (the manifest's sweep, the model folder);
    None when they cannot all be found."""
    wanted = [e["digest"] for e in info.get("ensemble", [])]
    pool = {n.digest: n for n in candidates if n.digest}
    if not wanted:
        return None
    if not all(d in pool for d in wanted):
        src = info.get("ensemble_source") or {}
        folder = (Path(src["manifest"]).parent if src.get("kind") == "manifest" and src.get("manifest") else
                  Path(src["path"]) if src.get("kind") == "directory" and src.get("path") else None)
        if folder is not None and folder.is_dir():
            pool.update({n.digest: n for n in saved_networks_under(folder)})
    return [pool[d] for d in wanted] if all(d in pool for d in wanted) else None


def read_predictions(spec, tts, md: Mapping[float, PropensityField], networks: list[SavedNetwork], data_root,
                     notes: list[str]) -> dict[float, PropensityField]:
    """Call the ``predictions`` reader and prepare its fields for the analysis: MD truth attached, training
    structures marked (unknown split: every structure counts as a training one, so no test score is claimed)."""
    from hydra.utils import call

    out: dict[float, PropensityField] = {}
    for f in call(spec, tts=tts):
        if not isinstance(f, PropensityField):
            raise TypeError(f"predictions reader returned {type(f).__name__}, expected PropensityField")
        t = round(f.temperature, 3)
        if t in out:
            raise ValueError(f"predictions reader returned two fields at T = {t:g}")
        out[t] = f
    if not out:
        raise ValueError("predictions reader returned no field")
    split_cache: dict[tuple, set[Path] | None] = {}
    for t, f in sorted(out.items(), reverse=True):
        unmatched = attach_md_truth(f, md.get(t))
        if unmatched and t in md:
            notes.append(f"- predictions T = {t:g}: {len(unmatched)} structure(s) without MD propensities "
                         f"({Path(unmatched[0]).name}, ...)")
        ident = tuple(e.get("digest", "") for e in f.info.get("ensemble", []))
        if ident not in split_cache:
            nets = prediction_networks(f.info, networks)
            split_cache[ident] = None if nets is None else training_structures(nets, data_root)
            if nets is None:
                notes.append(f"- predictions ({f.source}): the networks behind them were not found "
                             f"({'digests ' + str(list(ident)) if ident else 'the reader records no network digests'}"
                             "), so their training structures are unknown: rho_P is reported as a training score only")
        trained = split_cache[ident]
        for s in f.structures:
            s.trained = True if trained is None else Path(s.name).resolve() in trained
    with_info = [(t, f) for t, f in sorted(out.items(), reverse=True) if f.info.get("ensemble")]
    if with_info:
        info = with_info[0][1].info
        src = info.get("ensemble_source") or {}
        where = src.get("manifest") or src.get("path") or src.get("experiment") or ""
        notes.append(f"- predictions: predict.py files, {len(info['ensemble'])} networks ({src.get('kind', '?')} "
                     f"`{where}`{', ' + src['how'] if src.get('how') else ''}), mean constraint of App. B "
                     f"({info['constraint'].get('sign', '?')} sign, tolerance {info['constraint'].get('tolerance')}); "
                     "converged (network, level, structure) and max |Xbar - c*|: "
                     + ", ".join(f"T = {t:g} {f.info['converged_fraction']:.0%} {f.info['max_abs_residual']:.2g}"
                                 for t, f in with_info))
        constraint = info.get("constraint") or {}
        if constraint.get("enabled", True) and constraint.get("scope", "structure") == "structure":
            # Eq. (9) is N_0 times the variance over structures of the structure-mean propensity, which a
            # per-structure constraint pins to <C_B> (|Xbar - c*| <= tolerance): chi_4 <= N_0 tolerance^2
            n0 = max(s.n_particles for _, f in with_info for s in f.structures)
            tol = float(constraint.get("tolerance", 0.0))
            notes.append(f"- predictions: the mean constraint was applied per structure, which pins every structure's "
                         f"mean propensity to <C_B>: where it converged, chi_4 of the predictions (Eq. 9) is at most "
                         f"N_0 tolerance^2 = {n0 * tol**2:.1g} whatever the networks predict (a constraint over the "
                         "structures of one temperature keeps it)")
    return out


# ------------------------------------------------------------------------------------------------ tables
def _rows(source: str, field: PropensityField, obs: Mapping, pearson: Mapping | None = None) -> list[dict]:
    rows = []
    for k in range(field.levels.size):
        row = {"source": source, "T": field.temperature, "level": float(field.levels[k]),
               "time": float(field.times[k]), "mean_propensity": float(obs["mean"][k]),
               "chi4": float(obs["chi4"][k]), "chi4_err": float(obs["chi4_err"][k]),
               "xi4": float(obs["xi4"][k]), "xi4_err": float(obs["xi4_err"][k]),
               "chi4_tilde": float(obs["chi4_tilde"][k]), "A": float(obs["A"][k]), "A_err": float(obs["A_err"][k]),
               "chord": float(obs["chord"][k]), "chord_err": float(obs["chord_err"][k]),
               "n_structures": len(field.structures)}
        row.update({"oz_window_q": float(obs["oz_window_q"][k]), "oz_window_limited": float(obs["oz_window_limited"][k])})
        if pearson is not None:
            row.update({"pearson_test": float(pearson["test"][k]), "pearson_test_err": float(pearson["test_err"][k]),
                        "n_test": pearson["test_n"], "pearson_train": float(pearson["train"][k]),
                        "pearson_train_err": float(pearson["train_err"][k]), "n_train": pearson["train_n"]})
            for split in ("test", "train"):
                ceiling = float(pearson.get("rho_max_" + split, np.full(k + 1, np.nan))[k])
                row[f"rho_max_{split}"] = ceiling
                with np.errstate(invalid="ignore", divide="ignore"):
                    row[f"pearson_{split}_over_rho_max"] = float(np.float64(row[f"pearson_{split}"]) / ceiling)
            row["n_runs"] = "/".join(map(str, pearson.get("n_runs") or [])) or "-"
        rows.append(row)
    return rows


def _fmt(v, err=None, digits=3) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    s = f"{v:.{digits}g}"
    return s + (f" +- {err:.2g}" if err is not None and np.isfinite(err) else "")


def markdown_report(name: str, level_rows: list[dict], attention_rows: list[dict], figures: list[Path],
                    notes: list[str]) -> str:
    lines = [f"# Dynamic heterogeneity analysis: {name}", "",
             "Units: lengths in sigma, times in tau (reduced LJ units); chi_4, S_4, A, rho_P dimensionless. "
             "MD error bars: bootstrap over structures; network error bars: std over networks.", ""]
    lines += notes + [""] if notes else []
    runs = sorted({r["n_runs"] for r in level_rows if r.get("n_runs") not in (None, "-")})
    lines += ["## At the <C_B> levels", "",
              "rho_max: the label-noise ceiling of rho_P on the same test structures and labels (split-half over the "
              f"MD runs, N_R = {', '.join(runs) or '-'}; docs/label-ceiling.md); rho_P/rho_max: the fraction of it "
              "reached. q_OZ: the largest q of the Eq. (11) window actually used (* limited by the box).", "",
              "| source | T | <C_B> | t [tau] | chi_4 | xi_4 [sigma] | q_OZ [1/sigma] | A | <xi_chord> [sigma] | "
              "rho_P (test) | rho_max | rho_P/rho_max |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in level_rows:
        window = _fmt(r.get("oz_window_q")) + ("*" if r.get("oz_window_limited") == 1.0 else "")
        lines.append(f"| {r['source']} | {r['T']:g} | {r['level']:.2f} | {_fmt(r['time'])} | "
                     f"{_fmt(r['chi4'], r['chi4_err'])} | {_fmt(r['xi4'], r['xi4_err'])} | {window} | "
                     f"{_fmt(r['A'], r['A_err'])} | "
                     f"{_fmt(r['chord'], r['chord_err'])} | {_fmt(r.get('pearson_test'), r.get('pearson_test_err'))} | "
                     f"{_fmt(r.get('rho_max_test'))} | {_fmt(r.get('pearson_test_over_rho_max'), digits=2)} |")
    if attention_rows:
        lines += ["", "## Attention length scale (Sec. VI A)", "", "| T | <C_B> | xi_int [sigma] |", "|---|---|---|"]
        lines += [f"| {r['T']:g} | {r['level']:.2f} | {_fmt(r['xi_int'], r['xi_int_err'])} |" for r in attention_rows]
    lines += ["", "## Figures", ""] + [f"- `{p.name}`" for p in figures]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main
def _resolve_sweep(spec, output_dir) -> Path | None:
    if spec in (None, "", "none", "null"):
        return None
    if spec == "latest":
        return latest_sweep(Path(output_dir) / "hydra" / "train")
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"networks.sweep_dir = {spec}: no such folder")
    return path


def analyze(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """Run the analysis of the module docstring; returns {'out_dir', 'figures', 'tables', 'summary', 'run_id'}."""
    from tglassmlp.analysis import figures as figs
    from tglassmlp.observables.tts import TimeTemperatureSuperposition

    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    out_dir = Path(cfg.out_dir)
    fig_dir, table_dir = out_dir / "figures", out_dir / "tables"
    settings = HeterogeneitySettings(cfg.chi4, cfg.s4, cfg.oz, cfg.chords)
    levels = [float(c) for c in cfg.levels]
    ref_level = float(cfg.reference_level)
    notes: list[str] = []

    tracking = None
    if cfg.get("mlflow", True) and cfg.get("logger") is not None:  # fail fast on an unreachable store, before any work
        from hydra.utils import instantiate

        tracking = instantiate(cfg.logger)
        tracking.prepare()

    # 1. MD ------------------------------------------------------------------------------------------------
    md = md_fields(cfg.data_root, int(cfg.labels.reference_type))
    if not md:
        raise FileNotFoundError(f"{cfg.data_root}: no shard with MD propensities")
    tts = TimeTemperatureSuperposition(**OmegaConf.to_container(cfg.labels.tts, resolve=True)).compute(
        {T: (f.times, f.levels) for T, f in md.items()})
    md_time = {T: observe(f.values(), [s.positions for s in f.structures], f.box, settings, bootstrap=True)
               for T, f in md.items()}
    md_levels = {}
    for T, f in md.items():
        try:
            md_levels[T] = f.at_levels(levels)
        except ValueError as exc:
            notes.append(f"- MD T = {T:g}: {exc}")
    md_level_obs = {T: observe(f.values(), [s.positions for s in f.structures], f.box, settings, bootstrap=True)
                    for T, f in md_levels.items()}

    # 2. networks ------------------------------------------------------------------------------------------
    pred, pred_obs, pearson, attention, internals = {}, {}, {}, {}, {}
    has_files = cfg.get("predictions") is not None
    nets: list[SavedNetwork] = []
    sweep = _resolve_sweep(cfg.networks.sweep_dir, cfg.paths.output_dir)
    if sweep is not None:
        nets = find_sweep_networks(sweep, str(cfg.networks.selection))
        if cfg.networks.get("max_networks"):
            nets = nets[: int(cfg.networks.max_networks)]
        notes.append(f"- networks: {len(nets)} from `{sweep}` (selection: {cfg.networks.selection}); "
                     + ("their internals only (attention, bottleneck: Figs. 9-11); the predictions are the files"
                        if has_files else "plain network outputs, without the iterative mean constraint of App. B"))
        probe = NetworkProbe(nets, int(cfg.labels.reference_type), cfg.get("cache_dir"), cfg.get("descriptors"))
        pred, internals = network_fields(probe, cfg.data_root, levels, tts, md_levels)
        attention = attention_scales(internals, levels)
    elif cfg.networks.sweep_dir not in (None, "", "none", "null"):
        notes.append("- networks: none found (run `make demo` or `python train.py -m ...` first)")

    # 3. prediction files: they replace the plain network outputs everywhere -------------------------------
    if has_files:
        pred = read_predictions(cfg.predictions, tts, md, nets, cfg.data_root, notes)
        if nets and {n.digest for n in nets} != {e.get("digest") for f in pred.values() for e in f.info.get("ensemble", [])}:
            notes.append("- the networks of the internals (Figs. 9-11) are not the ensemble of the prediction files")
        missing = sorted({round(float(c), 3) for c in levels} - {round(float(c), 3) for f in pred.values() for c in f.levels})
        if missing:
            notes.append(f"- predictions: no file is at the levels {missing} of `levels` (predict.py levels=[...])")
    ceiling = dict(cfg.get("ceiling") or {})
    runs = ShardRuns(int(cfg.labels.reference_type), int(ceiling.get("n_splits", 50)), int(ceiling.get("seed", 0)))
    for T, f in pred.items():
        pred_obs[T] = observe_ensemble(f, settings)
        pearson[T] = pearson_scores(f, md.get(T), runs)

    # 4. tables ------------------------------------------------------------------------------------------------
    time_rows = [r for T, f in md.items() for r in _rows("MD", f, md_time[T])]
    level_rows = [r for T, f in md_levels.items() for r in _rows("MD", f, md_level_obs[T])]
    level_rows += [r for T, f in pred.items() for r in _rows(f.source, f, pred_obs[T], pearson[T])]
    attention_rows = [{"T": T, "level": float(c), "xi_int": float(a["xi_int"][k]),
                       "xi_int_err": float(a["xi_int_err"][k]),
                       **{f"P_L{L:g}": float(a["p_int"][k, j]) for j, L in enumerate(a["lengths"])}}
                      for T, a in attention.items() for k, c in enumerate(levels)]
    tables = [write_csv(table_dir / "md_time_series.csv", time_rows),
              write_csv(table_dir / "levels.csv", level_rows)]
    if attention_rows:
        tables.append(write_csv(table_dir / "attention.csv", attention_rows))
    s4_rows = []
    for src, fields, obs in (("MD", md_levels, md_level_obs), ("tGlassMLP", pred, pred_obs)):
        for T, f in fields.items():
            for k, c in enumerate(f.levels):
                s4_rows += [{"source": src, "T": T, "level": float(c), "q": float(q), "S4": float(obs[T]["s4"][k, j]),
                             "S4_err": float(obs[T]["s4_err"][k, j])} for j, q in enumerate(obs[T]["q"])]
    tables.append(write_csv(table_dir / "s4.csv", s4_rows))

    # 5. figures -----------------------------------------------------------------------------------------------
    fig_cfg = cfg.figures
    made = figs.make_all(fig_dir, md=md, md_time=md_time, md_levels=md_levels, md_level_obs=md_level_obs,
                         pred=pred, pred_obs=pred_obs, pearson=pearson, attention=attention, internals=internals,
                         tts=tts, levels=levels, ref_level=ref_level, dpi=int(fig_cfg.dpi),
                         chord_range=tuple(cfg.chords.level_range), oz=settings.oz)
    if fig_cfg.get("master_curve", True):
        made.append(figs.master_curve_figure(cfg.data_root, fig_dir / "fig13_master_curve.png", out_dir / "labels"))

    summary = {"name": str(cfg.name), "data_root": str(cfg.data_root), "tau_alpha": tts.tau_alpha, "beta": tts.beta,
               "networks_sweep": str(sweep) if sweep else None,
               "predictions": {f"{T:g}": f.info for T, f in pred.items() if f.info} if has_files else None,
               "notes": notes,
               "levels": level_rows, "attention": attention_rows}
    tables.append(write_json_atomic(out_dir / "summary.json", summary, default=float))
    report = write_text_atomic(out_dir / "analysis.md", markdown_report(str(cfg.name), level_rows, attention_rows,
                                                                         made, notes))
    result = {"out_dir": str(out_dir), "figures": [str(p) for p in made], "tables": [str(p) for p in tables],
              "report": str(report), "summary": summary, "run_id": None}

    # 6. MLflow ------------------------------------------------------------------------------------------------
    if tracking is not None:
        result["run_id"] = log_to_mlflow(tracking, cfg, made, tables + [report], level_rows, attention_rows)
    return result


def log_to_mlflow(tracking, cfg, figures, tables, level_rows, attention_rows) -> str:
    """One MLflow run 'analysis-<name>' with params, headline metrics, figures and tables as artefacts."""
    from tglassmlp.statepoints import state_point_name
    from tglassmlp.tracking import hydra_job_info

    info = hydra_job_info()
    with tracking.run({"kind": "analysis", "sweep_id": info.get("sweep_id")}, run_name=f"analysis-{cfg.name}"):
        spec = cfg.get("predictions")
        tracking.log_params({"data_root": cfg.data_root, "levels": list(cfg.levels),
                             "networks.sweep_dir": cfg.networks.sweep_dir, "oz.q_max": cfg.oz.q_max,
                             "oz.qxi_max": cfg.oz.get("qxi_max"), "oz.min_points": cfg.oz.get("min_points"),
                             "labels.n_runs": "/".join(sorted({str(r["n_runs"]) for r in level_rows
                                                               if r.get("n_runs") not in (None, "-")})) or "-",
                             "predictions": json.dumps(OmegaConf.to_container(spec, resolve=True)
                                                       if OmegaConf.is_config(spec) else spec, default=str),
                             "chords.cell_size": cfg.chords.cell_size, "s4.q_max": cfg.s4.q_max})
        metrics = {}
        for r in level_rows:
            key = f"{r['source']}/{state_point_name(r['T'], r['level'])}"
            for m in ("chi4", "xi4", "A", "chord", "pearson_test", "rho_max_test", "pearson_test_over_rho_max",
                      "oz_window_q"):
                v = r.get(m)
                if v is not None and np.isfinite(v):
                    metrics[f"{key}/{m}"] = v
        for r in attention_rows:
            metrics[f"attention/{state_point_name(r['T'], r['level'])}/xi_int"] = r["xi_int"]
        tracking.log_metrics(metrics)
        for p in figures:
            tracking.log_artifact(p, "figures")
        for p in tables:
            tracking.log_artifact(p, "tables")
    return tracking.run_id


def copy_figures(result: Mapping, dest) -> list[Path]:
    """Copy the figures of a result to ``dest`` (docs/demo/figures)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in result["figures"]:
        shutil.copy2(p, dest / Path(p).name)
        out.append(dest / Path(p).name)
    return out


"""Self-consistency selection of a seed ensemble (paper Sec. II E): the one implementation, used by a
train.py multirun (:func:`select_sweep`, :class:`SelectSelfConsistent`) and by every ensemble of the
two-step transfer (:meth:`tglassmlp.transfer.TwoStepTransfer.select`).

The average predicted propensity is an input of tGlassMLP (c = <C_B>), so a network that has learnt a
consistent model predicts, on structures it has never seen, a mean close to c. The paper keeps the networks
with |Xbar_MLP - <C_B>| < 1e-4 on the structures below the lowest training temperature T_min, at the levels
where labels are wanted. For every network (one finished MLflow run):

    score = max over selection points (T, c) of | mean_s mean_i X_MLP^i(s; T, c) - c |

(s: the structures at T, i: their reference (type-0) particles), computed from the run's artefacts
(network, scaler) by :func:`score_runs`. The selection points are given (the transfer: its 't'/'r' points of
Table I) or, by default, every temperature of the dataset below the run's own T_min at each level. Without
any structure to score on, the ranking falls back to the run's ``test/avg/self_consistency`` (and says so
in ``basis``). :func:`rank_and_select` ranks by score and selects score < threshold (optionally the
``fallback_top_k`` best when none passes); :func:`tag_selection` records the outcome on the runs
(metrics ``selection/score`` and ``selection/selected``, tags ``ensemble.selected``, ``ensemble.selection_basis``,
``ensemble.threshold``); :func:`selection_manifest` is the manifest (``<sweep dir>/ensemble.json``, schema
and reader: :mod:`tglassmlp.ensemble.manifest`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tglassmlp.ensemble.manifest import make_manifest, write_manifest
from tglassmlp.ensemble.sources import load_run_members
from tglassmlp.statepoints import state_point_name

log = logging.getLogger(__name__)

#: ``basis`` of a score computed on structures below T_min (the paper's test; the only one that selects in
#: :func:`select_sweep`)
STRUCTURES_BASIS = "structures below T_min"
#: tag ``kind`` of a sweep's parent run (:class:`tglassmlp.callbacks.PrepareTrackingStore`)
SWEEP_KIND = "sweep"
#: the headline test metrics of a training run (tglassmlp.training.job), kept in the manifest's entries
HEADLINE_METRICS = ("test/pearson_mean", "test/rho_max_mean", "test/pearson_over_ceiling")
#: ``basis`` of the fallback score: the run's own test-set self-consistency (at training temperatures)
TEST_METRIC_BASIS = "test/avg/self_consistency"


class NoSelfConsistentNetworkError(RuntimeError):
    """No network of an ensemble passes the self-consistency threshold and no fallback is configured."""


# ================================================================================================ structures
def _has_structure(path: Path) -> bool:
    """Whether a shard has descriptors or an inherent structure to compute them from (header only)."""
    from tglassmlp.data.shards import open_shard

    with open_shard(path) as reader:
        return bool({"descriptors", "inherent_positions"} & set(reader.fields))


def read_structures(root, temperatures: Iterable[float], cache_dir=None, max_structures: int | None = None,
                    reference_type: int = 0, usable_only: bool = False, descriptors=None) -> dict:
    """{T: [StructureRecord]} of the shards at the temperatures, read as the data module reads them for
    training (raw (N_0, D) descriptors of the reference particles, MD fields where present).

    Args:
        root: dataset directory (``<root>/T<T>/s<k>.h5``).
        temperatures: T [epsilon/k_B] to read.
        cache_dir: descriptor cache of the data module (None: compute without caching).
        max_structures: keep the first structures (by index) of each temperature.
        reference_type: the particle type whose propensity the networks predict.
        descriptors: descriptor settings (DescriptorSettings or the ``descriptors`` config node; None: the
            defaults), as the networks were trained with.
        usable_only: False (the transfer: its labels must cover the shard list the data module trains on):
            every shard, a missing temperature raises DatasetNotFoundError. True (:func:`select_sweep`):
            leave out, with a warning, structures flagged as not equilibrated and shards without an inherent
            structure yet; a temperature without usable shards gives an empty list.
    """
    from tglassmlp.training.datamodule import PropensityDataModule, temperatures_in

    temps = sorted({round(float(t), 3) for t in temperatures})
    if not temps:
        return {}
    dm = PropensityDataModule(root, state_points={t: [0.5] for t in temps}, max_structures=max_structures,
                              cache_dir=cache_dir, reference_type=reference_type, descriptors=descriptors)
    if usable_only:
        listed = temperatures_in(root)  # leaves out (and warns about) structures not equilibrated
        paths = {}
        for t in temps:
            paths[t] = []
            for p in listed.get(t, [])[:max_structures]:
                if _has_structure(p):
                    paths[t].append(p)
                else:
                    log.warning("%s: no inherent structure yet; left out of the selection", p)
    else:
        paths = dm.shard_paths()
    return {t: [dm.read_record(p, need_md=False) for p in ps] for t, ps in paths.items()}


class StructureCache:
    """Structures read once per temperature and kept (shared by the scoring of every network of an
    ensemble, and by the transfer's labelling). ``cache(temperatures)`` -> {T: [StructureRecord]}.

    Args: those of :func:`read_structures` but ``temperatures``.
    """

    def __init__(self, root, cache_dir=None, max_structures: int | None = None, reference_type: int = 0,
                 usable_only: bool = False, descriptors=None):
        self.root = root
        self.options = {"cache_dir": cache_dir, "max_structures": max_structures,
                        "reference_type": int(reference_type), "usable_only": bool(usable_only),
                        "descriptors": descriptors}
        self._records: dict[float, list] = {}

    def __call__(self, temperatures: Iterable[float]) -> dict:
        temps = [round(float(t), 3) for t in temperatures]
        missing = sorted(set(temps) - set(self._records))
        if missing:
            self._records.update(read_structures(self.root, missing, **self.options))
        return {t: self._records[t] for t in temps}


# ================================================================================================ scoring
@torch.no_grad()
def mean_prediction(network, features: Sequence, temperature: float, level: float) -> float:
    """Mean over structures of the mean predicted propensity of their particles at the input (T, c).

    ``features``: per structure, the (N_0, M_S) standardised descriptors (array or float32 tensor).
    """
    means = [float(network(torch.as_tensor(f, dtype=torch.float32), temperature, level).mean()) for f in features]
    return float(np.mean(means))


def self_consistency(member, records_by_temperature: Mapping[float, Sequence],
                     points: Sequence[tuple[float, float]]) -> dict[str, float]:
    """{state point name: |mean over structures and particles of the prediction at (T, c) - c|} of one network.

    Args:
        member: a :class:`tglassmlp.model.artifact.EnsembleMember`.
        records_by_temperature: {T: [StructureRecord]} (raw descriptors; the member standardises them).
        points: the (T, c) to score; a temperature without structures is left out with a warning.
    """
    out = {}
    for t, c in points:
        records = records_by_temperature[round(float(t), 3)]
        if not records:
            log.warning("%s: no structure at T = %g to score it on; %s left out", member.name, t,
                        state_point_name(t, c))
            continue
        features = [member.features(r.descriptors) for r in records]
        out[state_point_name(t, c)] = abs(mean_prediction(member.network, features, t, c) - float(c))
    return out


def points_below_t_min(state_points: Mapping, temperatures: Iterable[float],
                       levels: Sequence[float]) -> list[tuple[float, float]]:
    """(T, c) for every T of ``temperatures`` below the lowest training temperature of ``state_points``
    (``state_points.json``: {'train': [[T, c], ...]}) and every c of ``levels``: the paper's default."""
    t_min = min(t for t, _ in state_points["train"])
    return [(t, float(c)) for t in sorted(temperatures) if t < t_min - 1e-9 for c in levels]


def score_runs(client, run_ids: Sequence[str], records: Callable[[Iterable[float]], Mapping[float, Sequence]],
               points: Sequence[tuple[float, float]] | Callable[[Any], Sequence[tuple[float, float]]],
               seeds: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Self-consistency score of each run's network (module docstring), one network in memory at a time.

    Args:
        client: MLflow client of the runs' store.
        run_ids: the finished runs.
        records: temperatures -> {T: [StructureRecord]} (a :class:`StructureCache`).
        points: the (T, c) to score every network on, or member -> its points (:func:`points_below_t_min`).
        seeds: {run id: seed} for the entries; None: each run's ``seed`` tag.

    Returns:
        One entry per run, in order: {'run_id', 'seed', 'score', 'basis', 'per_state_point', 't_min',
        'metrics' (the run's test/avg/... metrics)}; ``score`` NaN when neither structures nor the test
        metric exist.
    """
    entries = []
    for rid in run_ids:
        (member,) = load_run_members(client, [rid])
        run = client.get_run(rid)
        pts = points(member) if callable(points) else points
        per_point = self_consistency(member, records({t for t, _ in pts}), pts) if pts else {}
        if per_point:
            score, basis = max(per_point.values()), STRUCTURES_BASIS
        else:
            score, basis = float(run.data.metrics.get(TEST_METRIC_BASIS, math.nan)), TEST_METRIC_BASIS
        entries.append({"run_id": rid, "seed": run.data.tags.get("seed") if seeds is None else seeds.get(rid),
                        "score": score, "basis": basis, "per_state_point": per_point,
                        "t_min": min(t for t, _ in member.state_points["train"]),
                        "metrics": {k: v for k, v in run.data.metrics.items()
                                    if k.startswith("test/avg/") or k in HEADLINE_METRICS}})
        del member  # the next network replaces it: an ensemble of large networks never sits in memory at once
    return entries


def rank_and_select(entries: list[dict], threshold: float, fallback_top_k: int | None = None,
                    name: str = "ensemble", *, structures_only: bool = False, allow_empty: bool = False,
                    setting: str = "fallback_top_k", remedy: str | None = None,
                    error: type[Exception] = NoSelfConsistentNetworkError) -> dict[str, Any]:
    """Rank ``entries`` ({'run_id', 'seed', 'score', ['basis'], ...}) by score in place (best first, NaN last),
    set their ``selected`` and select those with score < threshold.

    Args:
        threshold: the self-consistency threshold (paper: 1e-4).
        fallback_top_k: when none passes, take the K best-ranked finite scores (the manifest's ``fallback``
            and ``note`` say so); None (or 0): no fallback.
        name: the ensemble, for messages.
        structures_only: only scores on structures below T_min (basis :data:`STRUCTURES_BASIS`) can pass;
            a ranking on the test-set metric selects nothing (:func:`select_sweep`).
        allow_empty: when none passes and the fallback has nothing to take, select nothing (else raise
            ``error``).
        setting: the name of the ``fallback_top_k`` knob in the caller's config, for messages.
        remedy: what the error suggests (default: more seeds, or ``setting``=K).
        error: the exception class raised (a subclass of :class:`NoSelfConsistentNetworkError`).

    Returns:
        {'selected': run ids, 'fallback': None or a description, 'note': one line for people}.
    """
    if fallback_top_k is not None and int(fallback_top_k) < 0:
        raise ValueError(f"{name}: {setting} must be a positive number of networks (or null), got {fallback_top_k}")
    entries.sort(key=lambda e: (not math.isfinite(e["score"]), e["score"]))
    passed = [e for e in entries if math.isfinite(e["score"]) and e["score"] < threshold
              and (not structures_only or e.get("basis") == STRUCTURES_BASIS)]
    test = f"|mean prediction - c| < {threshold:g}"
    fallback = None
    if passed:
        chosen = passed
        note = f"{len(passed)} of {len(entries)} networks pass {test}"
    else:
        best = ", ".join(f"seed {e['seed']}: {e['score']:.3g}" for e in entries[:4])
        finite = [e for e in entries if math.isfinite(e["score"])]
        if fallback_top_k and finite:
            chosen = finite[:int(fallback_top_k)]
            fallback = f"best {len(chosen)} of {len(entries)} by score"
            note = f"NO network passes {test} (best: {best}); fallback ({setting}={fallback_top_k}): {fallback}"
            log.warning("%s: %s", name, note)
        elif allow_empty:
            chosen = []
            note = f"no network of {len(entries)} passes {test} (best: {best}); ranking kept, nothing selected"
        else:
            why = (f"no network of {len(entries)} passes the self-consistency test {test} (best: {best})"
                   if finite else f"none of the {len(entries)} networks has a finite self-consistency score")
            raise error(f"{name}: {why}. " + (remedy or f"Train more seeds, or accept the best-ranked networks "
                                                        f"with {setting}=K"))
    for e in entries:
        e["selected"] = e in chosen
    return {"selected": [e["run_id"] for e in chosen], "fallback": fallback, "note": note}


def tag_selection(tracking, entries: Sequence[dict], choice: Mapping[str, Any], threshold: float) -> None:
    """Record the selection on each run: metrics ``selection/score`` (the self-consistency score, when finite)
    and ``selection/selected`` (1 or 0; sortable in the runs table), tags ``ensemble.selected``, ``ensemble.selection_basis`` (with '; fallback top-k' when the fallback chose) and
    ``ensemble.threshold``. ``tracking``: a prepared :class:`tglassmlp.tracking.MlflowTracking`."""
    for e in entries:
        tracking.run_id = e["run_id"]
        metrics = {"selection/selected": 1.0 if e["selected"] else 0.0}
        if math.isfinite(e["score"]):
            metrics["selection/score"] = e["score"]
        tracking.log_metrics(metrics)
        basis = e["basis"] if not choice["fallback"] else f"{e['basis']}; fallback top-k"
        tracking.set_tags({"ensemble.selected": str(e["selected"]).lower(), "ensemble.selection_basis": basis,
                           "ensemble.threshold": f"{threshold:g}"})


def selection_manifest(tracking, sweep_id: str, entries: list[dict], choice: Mapping[str, Any], threshold: float,
                       levels: Sequence[float], points: Sequence[tuple[float, float]] | None = None) -> dict:
    """The manifest of one selection (:mod:`tglassmlp.ensemble.manifest`, the one schema); ``points`` None:
    each run's own below-T_min points."""
    return make_manifest(sweep_id, tracking.experiment_id, tracking.tracking_uri, threshold, levels, choice,
                         entries, points)


def select_sweep(tracking_uri: str, experiment_name: str, sweep_id: str, data_root, levels: Sequence[float],
                 threshold: float = 1e-4, manifest: str | Path | None = None, cache_dir=None,
                 max_structures: int | None = None, points: Sequence[tuple[float, float]] | None = None,
                 fallback_top_k: int | None = None, reference_type: int = 0, descriptors=None) -> dict[str, Any]:
    """Score, tag and rank the finished runs of one sweep (tag ``sweep_id``); write and return the manifest.

    Args:
        tracking_uri, experiment_name: the MLflow store and experiment of the runs.
        sweep_id: the sweep's ``sweep_id`` tag (its folder).
        data_root: dataset with the structures to score on.
        levels: the <C_B> levels scored below each run's T_min (used when ``points`` is None).
        threshold: self-consistency threshold (paper: 1e-4).
        manifest: where to write the manifest (atomically); None: not written.
        cache_dir, max_structures, reference_type, descriptors: how the structures are read
            (:func:`read_structures`).
        points: (T, c) to score every run on; None: every temperature of ``data_root`` below the run's T_min
            at every level (structures not equilibrated or without inherent structure left out).
        fallback_top_k: when no run passes, select the K best-ranked; None: select nothing, keep the ranking.
    """
    from tglassmlp.training.datamodule import temperatures_in
    from tglassmlp.tracking import MlflowTracking

    tracking = MlflowTracking(tracking_uri, experiment_name)
    exp = tracking.prepare()
    client = tracking.client
    runs = client.search_runs([exp], filter_string=f"tags.sweep_id = '{sweep_id}' and attributes.status = 'FINISHED'",
                              max_results=50000)
    runs = [r for r in runs if r.data.tags.get("kind") != SWEEP_KIND]  # the sweep's parent run is no network
    if points is None:
        available = sorted(temperatures_in(data_root)) if Path(data_root).is_dir() else []
        levels = [float(c) for c in levels]
        run_points = lambda member: points_below_t_min(member.state_points, available, levels)  # noqa: E731
    else:
        points = [(round(float(t), 3), float(c)) for t, c in points]
        levels = sorted({c for _, c in points}, reverse=True)
        run_points = points
    structures = StructureCache(data_root, cache_dir=cache_dir, max_structures=max_structures,
                                reference_type=reference_type, usable_only=True, descriptors=descriptors)
    entries = score_runs(client, [r.info.run_id for r in runs], structures, run_points)
    choice = rank_and_select(entries, threshold, fallback_top_k, f"sweep {sweep_id}", structures_only=True,
                             allow_empty=True, setting="fallback_top_k")
    tag_selection(tracking, entries, choice, threshold)
    result = selection_manifest(tracking, sweep_id, entries, choice, threshold, levels, points)
    if manifest is not None:
        write_manifest(manifest, result)
    log.debug("ensemble selection: %s (manifest %s)", result["note"], manifest)  # the caller prints the summary
    return result


def format_summary(result: dict, manifest, *, ui_link: str | None = None, registered: str | None = None,
                   paths: Sequence[tuple[str, Any]] = ()) -> str:
    """What a researcher wants to read after a sweep: per seed the held-out Pearson against its label ceiling
    rho_max, the self-consistency score and whether it was selected; then where things are."""
    lines = ["", f"Ensemble of {len(result['ranking'])} run(s): {result['note']}",
             f"  {'seed':>4}  {'test Pearson':>12}  {'rho_max':>7}  {'Pearson/rho_max':>15}  {'|mean - c|':>10}  "
             f"{'selected':>8}  run id"]
    for e in result["ranking"]:
        m = e.get("metrics", {})
        pearson = m.get("test/pearson_mean", m.get("test/avg/pearson", math.nan))
        ceiling = m.get("test/rho_max_mean", math.nan)
        ratio = m.get("test/pearson_over_ceiling", math.nan)
        lines.append(f"  {str(e['seed']):>4}  {pearson:12.3f}  {ceiling:7.3f}  {ratio:15.2f}  {e['score']:10.3g}  "
                     f"{'yes' if e['selected'] else 'no':>8}  {e['run_id']}")
    lines.append(f"  scored on: {result['ranking'][0]['basis'] if result['ranking'] else '-'}"
                 f" (threshold {result.get('threshold', math.nan):g})")
    lines.append(f"  manifest:  {manifest}")
    if registered:
        lines.append(f"  registry:  {registered}")
    for name, where in paths:
        lines.append(f"  {name + ':':<10} {where}")
    link = ui_link or f"http://127.0.0.1:5000/#/experiments/{result['experiment_id']}/runs"
    lines.append(f"  MLflow UI: `make ui`, then {link}" if "127.0.0.1:5000" in link else f"  MLflow UI: {link}")
    return "\n".join(lines)

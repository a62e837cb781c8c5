"""Ridge-regression baseline per state point, and its comparison with a tGlassMLP ensemble.

Baseline. At every state point (T, c) a linear model  y_i = S_i . b + b0  (S_i the standardised descriptors of
a type-0 particle, y_i its propensity) is fitted by ridge regression on the training structures of T and
evaluated on the test structures, with the descriptors, the standardisation and the train/test split of
:class:`~tglassmlp.training.datamodule.PropensityDataModule` (the samples are taken from a set-up data module, so
they are the ones a tGlassMLP run trains and is tested on). Objective, n = training particles:

    min_b  (1/n) sum_i (y_i - b0 - S_i . b)^2 + alpha |b|^2          (b0 unpenalised)

solved in closed form from per-structure sufficient statistics. alpha is chosen from a log grid by
cross-validation over training structures (folds of whole structures; a state point with a single training
structure falls back to folds of particles), scoring the held-out mean per-structure Pearson correlation (the
project's metric) or the MSE. Held-out metrics are those of tGlassMLP (:func:`tglassmlp.model.module.
state_point_metrics`): ``pearson`` = mean over test structures of the Pearson correlation over particles.

Comparison. For an ensemble of runs (the run ids of an ensemble manifest ``<sweep dir>/ensemble.json`` read
from MLflow, or a list of metric dicts such as the runs' ``metrics_test.json``), per state point: mean and
spread (sample std over runs) of ``test/<T.._c..>/pearson`` next to the ridge value; the averages over the state
points that both have; and whether tGlassMLP matches or beats the baseline on average.

    python -m tglassmlp.analysis.baseline --data data/demo --manifest outputs/hydra/train/SWEEP/ensemble.json \\
        --tracking-uri sqlite:///outputs/mlflow.db --out outputs/reports/baseline
    python -m tglassmlp.analysis.baseline --data data/demo --metrics run1/metrics_test.json run2/... --out DIR

The data settings (state points, train fraction, split seed) are taken from the first run's MLflow params when
a manifest is given, so that the split is the runs' split; the run's recorded sample counts are checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tglassmlp.ensemble.manifest import ManifestError, read_manifest  # noqa: F401  (the manifest's reader)
from tglassmlp.metrics import pearson
from tglassmlp.statepoints import parse_state_point, state_point_name

log = logging.getLogger(__name__)

#: ridge penalties alpha (per particle, on standardised descriptors) tried by the cross-validation
DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-8, 3, 23))
CV_METRICS = ("pearson", "mse")


# ------------------------------------------------------------------------------------------------ ridge
@dataclass
class _Stats:
    """Sufficient statistics of one group of particles: n, sum x, sum y, sum x x^T, sum x y."""

    n: int
    sx: np.ndarray
    sy: float
    sxx: np.ndarray
    sxy: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> _Stats:
        return cls(len(y), x.sum(0), float(y.sum()), x.T @ x, x.T @ y)

    def __add__(self, other: _Stats) -> _Stats:
        return _Stats(self.n + other.n, self.sx + other.sx, self.sy + other.sy, self.sxx + other.sxx,
                      self.sxy + other.sxy)

    def __sub__(self, other: _Stats) -> _Stats:
        return _Stats(self.n - other.n, self.sx - other.sx, self.sy - other.sy, self.sxx - other.sxx,
                      self.sxy - other.sxy)


def _solve(stats: _Stats, alphas: Sequence[float]) -> list[tuple[np.ndarray, float]]:
    """[(b, b0)] for each alpha: (C + n alpha I) b = c with C, c the centred second moments; b0 = mean_y - mean_x.b.
    One symmetric eigendecomposition serves all alphas."""
    n = stats.n
    mx, my = stats.sx / n, stats.sy / n
    cxx = stats.sxx - n * np.outer(mx, mx)
    cxy = stats.sxy - n * mx * my
    lam, vec = np.linalg.eigh((cxx + cxx.T) / 2)
    lam = np.clip(lam, 0.0, None)
    proj = vec.T @ cxy
    out = []
    for a in alphas:
        b = vec @ (proj / (lam + n * float(a)))
        out.append((b, float(my - mx @ b)))
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(x, y)


@dataclass
class RidgeModel:
    """A fitted ridge model y = x . coef + intercept, with the alpha chosen and the CV scores of the grid."""

    coef: np.ndarray
    intercept: float
    alpha: float
    alphas: list[float] = field(default_factory=list)
    cv_scores: list[float] = field(default_factory=list)
    cv_metric: str = "pearson"
    cv_groups: str = "structures"
    n_folds: int = 0

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) @ self.coef + self.intercept


def fit_ridge_cv(x_blocks: Sequence[np.ndarray], y_blocks: Sequence[np.ndarray],
                 alphas: Sequence[float] = DEFAULT_ALPHAS, n_folds: int = 5, cv_metric: str = "pearson",
                 seed: int = 0) -> RidgeModel:
    """Ridge regression on groups of particles (one block per training structure), alpha by group K-fold CV.

    Args:
        x_blocks: per structure (N_s, F) standardised descriptors.
        y_blocks: per structure (N_s,) labels.
        alphas: the grid of penalties (objective in the module docstring).
        n_folds: folds of whole structures (at most the number of structures). With one structure the
            particles are split into ``n_folds`` random chunks instead (``cv_groups = 'particles'``).
        cv_metric: 'pearson' (mean per held-out group Pearson, maximised) or 'mse' (minimised).
        seed: seed of the fold assignment.

    Returns:
        The model refitted on all blocks at the chosen alpha (the largest alpha among equal best scores).
    """
    if cv_metric not in CV_METRICS:
        raise ValueError(f"cv_metric must be one of {CV_METRICS}, got {cv_metric!r}")
    if len(x_blocks) != len(y_blocks) or not x_blocks:
        raise ValueError(f"need as many descriptor blocks as label blocks (>= 1), got {len(x_blocks)}, "
                         f"{len(y_blocks)}")
    xs = [np.asarray(x, dtype=np.float64) for x in x_blocks]
    ys = [np.asarray(y, dtype=np.float64).reshape(-1) for y in y_blocks]
    for x, y in zip(xs, ys):
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"descriptor block {x.shape} does not match label block {y.shape}")
    alphas = sorted(float(a) for a in alphas)
    rng = np.random.default_rng(seed)
    groups = "structures"
    if len(xs) == 1:
        groups = "particles"
        perm = rng.permutation(len(ys[0]))
        chunks = np.array_split(perm, max(2, min(n_folds, len(perm) // 2)))
        xs, ys = [xs[0][c] for c in chunks], [ys[0][c] for c in chunks]
    k = int(max(2, min(n_folds, len(xs))))
    fold_of = rng.permutation(np.arange(len(xs)) % k)
    stats = [_Stats.of(x, y) for x, y in zip(xs, ys)]
    total = stats[0]
    for s in stats[1:]:
        total = total + s
    scores = np.zeros((k, len(alphas)))
    for f in range(k):
        held = [g for g in range(len(xs)) if fold_of[g] == f]
        train = total
        for g in held:
            train = train - stats[g]
        for j, (b, b0) in enumerate(_solve(train, alphas)):
            if cv_metric == "pearson":
                vals = [_pearson(xs[g] @ b + b0, ys[g]) for g in held]
                vals = [v for v in vals if math.isfinite(v)]
                scores[f, j] = np.mean(vals) if vals else -np.inf
            else:
                sq = np.concatenate([(xs[g] @ b + b0 - ys[g]) ** 2 for g in held])
                scores[f, j] = -float(sq.mean())
    mean_scores = scores.mean(0)
    best = float(np.max(mean_scores))
    # among (numerically) equal best scores the largest alpha: the most regularised of the equivalent models
    tol = 1e-12 * max(1.0, abs(best)) if math.isfinite(best) else 0.0
    j = max(i for i, v in enumerate(mean_scores) if v >= best - tol)
    b, b0 = _solve(total, [alphas[j]])[0]
    reported = [float(v) if cv_metric == "pearson" else float(-v) for v in mean_scores]
    return RidgeModel(coef=b, intercept=b0, alpha=alphas[j], alphas=alphas, cv_scores=reported,
                      cv_metric=cv_metric, cv_groups=groups, n_folds=k)


def state_point_samples(dm) -> dict[tuple[float, float], dict[str, list]]:
    """{(T, c): {'train': [(features (N_0, F), labels (N_0,), structure)], 'test': [...]}} of a set-up data module
    (its standardised features, split and labels)."""
    if not getattr(dm, "_ready", False):
        raise RuntimeError("state_point_samples: call dm.setup() first (the split and the scaler come from it)")
    out: dict[tuple[float, float], dict[str, list]] = {}
    for split, samples in (("train", dm.train_samples), ("test", dm.test_samples)):
        for s in samples:
            entry = out.setdefault((s.temperature, s.level), {"train": [], "test": []})
            entry[split].append((dm.structures[s.structure].features, np.asarray(s.labels), s.structure))
    return dict(sorted(out.items()))


def state_point_ceilings(dm, n_splits: int = 50, seed: int = 0) -> dict[str, dict[str, Any]]:
    """{state point name: {'rho_max', 'n_runs'}}: the label-noise ceiling of the held-out Pearson, from the test
    structures' per-run bond breaking at their label times t* (:class:`~tglassmlp.data.ceilings.ShardRuns`);
    NaN where a shard keeps no per-run C_B or the labels are not MD labels (t* NaN)."""
    from tglassmlp.data.ceilings import ShardRuns

    runs = ShardRuns(dm.reference_type, n_splits, seed)
    items: dict[tuple[float, float], list[tuple[Path, float]]] = {}
    for s in dm.test_samples:
        items.setdefault((s.temperature, s.level), []).append((dm.structures[s.structure].path, s.t_star))
    return {state_point_name(t, c): {"rho_max": runs.ceiling(its),
                                     "n_runs": sorted({runs.n_runs(p) for p, _ in its})}
            for (t, c), its in sorted(items.items())}


def ridge_baseline(dm, alphas: Sequence[float] = DEFAULT_ALPHAS, n_folds: int = 5,
                   cv_metric: str = "pearson", seed: int = 0) -> dict[str, dict[str, Any]]:
    """Ridge fitted separately at every state point of a set-up :class:`PropensityDataModule`.

    Returns:
        {state point name ('T0.600_c0.50'): {'temperature', 'level', 'alpha', 'cv_score', 'cv_metric',
        'cv_groups', 'n_train_structures', 'n_test_structures', 'n_train_particles', the held-out metrics
        of :func:`~tglassmlp.model.module.state_point_metrics` ('pearson', 'mae', 'chi4_true', 'chi4_pred',
        'self_consistency'), and the ceiling of the held-out Pearson 'rho_max' with 'n_runs'
        (:func:`state_point_ceilings`)}}; a state point without test structures gets NaN metrics.
    """
    from tglassmlp.model.module import state_point_metrics

    ceilings = state_point_ceilings(dm)
    out = {}
    for (t, c), parts in state_point_samples(dm).items():
        name = state_point_name(t, c)
        if not parts["train"]:
            log.warning("%s: no training structure; no ridge baseline", name)
            continue
        model = fit_ridge_cv([x for x, _, _ in parts["train"]], [y for _, y, _ in parts["train"]], alphas,
                             n_folds, cv_metric, seed)
        row = {"temperature": t, "level": c, "alpha": model.alpha,
               "cv_score": model.cv_scores[model.alphas.index(model.alpha)], "cv_metric": cv_metric,
               "cv_groups": model.cv_groups, "n_train_structures": len(parts["train"]),
               "n_test_structures": len(parts["test"]),
               "n_train_particles": int(sum(len(y) for _, y, _ in parts["train"]))}
        if parts["test"]:
            preds = [model.predict(x) for x, _, _ in parts["test"]]
            row.update(state_point_metrics(preds, [y for _, y, _ in parts["test"]], c))
        else:
            row.update({m: math.nan for m in ("pearson", "mae", "chi4_true", "chi4_pred", "self_consistency")})
        row.update(ceilings.get(name, {"rho_max": math.nan, "n_runs": []}))
        out[name] = row
    return out


# ------------------------------------------------------------------------------------------------ ensemble
def per_state_point(metrics: Mapping[str, float], metric: str = "pearson", split: str = "test") -> dict[str, float]:
    """{state point name: value} of ``<split>/<name>/<metric>`` entries of one run's metrics."""
    out = {}
    prefix = f"{split}/"
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and key.startswith(prefix) and parts[2] == metric and parse_state_point(parts[1]):
            out[parts[1]] = float(value)
    return out


def run_metrics_from_mlflow(run_ids: Sequence[str], tracking_uri: str) -> list[dict[str, float]]:
    """The latest metric values of each run (MLflow ``run.data.metrics``); a missing run raises ManifestError."""
    from mlflow.exceptions import MlflowException

    from tglassmlp.tracking import check_tracking_uri, make_client

    client = make_client(check_tracking_uri(tracking_uri))
    out = []
    for rid in run_ids:
        try:
            run = client.get_run(rid)
        except MlflowException as exc:
            raise ManifestError(f"run {rid} of the ensemble is not in the tracking store {tracking_uri} "
                                f"({exc.error_code}); pass the store the sweep used with --tracking-uri") from None
        out.append(dict(run.data.metrics))
    return out


def comparison_table(run_metrics: Sequence[Mapping[str, float]], ridge: Mapping[str, Mapping[str, Any]],
                     metric: str = "pearson", split: str = "test", tolerance: float = 0.0,
                     run_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Per state point: tGlassMLP ensemble mean and spread of ``<split>/<sp>/<metric>`` next to the ridge value.

    Args:
        run_metrics: one metrics dict per run (MLflow names ``test/T0.600_c0.50/pearson``).
        ridge: :func:`ridge_baseline` output (or any {name: {metric: value}}).
        metric: the metric compared (higher is better: 'pearson').
        tolerance: tGlassMLP "matches" the baseline when its average is >= ridge average - tolerance.
        run_ids: labels of the runs (recorded in the table).

    Returns:
        {'metric', 'rows': [{'state_point', 'temperature', 'level', 'mlp_mean', 'mlp_std', 'n_runs',
        'ridge', 'difference'}], 'average': {'state_points', 'mlp_mean', 'mlp_std', 'ridge', 'difference'},
        'matches_or_beats', 'beats', 'wins' (state points where the ensemble mean > ridge), 'n_compared',
        'n_runs', 'run_ids', 'missing'}. Averages are over the state points both have; 'mlp_std' of the average
        is the spread over runs of each run's average over those state points (ddof 1; 0 for one run).
    """
    if not run_metrics:
        raise ValueError("no runs to compare: the ensemble is empty")
    per_run = [per_state_point(m, metric, split) for m in run_metrics]
    for k, values in enumerate(per_run):
        if not values:
            label = run_ids[k] if run_ids is not None else f"#{k}"
            raise ManifestError(f"run {label} has no '{split}/<T.._c..>/{metric}' metrics (did it finish and "
                                "run the test stage?)")
    names = sorted(set().union(*per_run) | set(ridge),
                   key=lambda n: parse_state_point(n) or (math.inf, math.inf))

    def std(v):
        return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0

    rows, common, missing = [], [], []
    for name in names:
        values = [r[name] for r in per_run if name in r and math.isfinite(r[name])]
        rv = ridge.get(name, {}).get(metric, math.nan)
        rv = float(rv) if rv is not None else math.nan
        t, c = parse_state_point(name) or (math.nan, math.nan)
        mean = float(np.mean(values)) if values else math.nan
        ceiling = ridge.get(name, {}).get("rho_max", math.nan)
        ceiling = float(ceiling) if ceiling is not None else math.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            row = {"state_point": name, "temperature": t, "level": c, "mlp_mean": mean,
                   "mlp_std": std(values) if values else math.nan, "n_runs": len(values), "ridge": rv,
                   "difference": mean - rv, "rho_max": ceiling,
                   "mlp_over_rho_max": float(np.float64(mean) / ceiling),
                   "ridge_over_rho_max": float(np.float64(rv) / ceiling)}
        rows.append(row)
        if values and math.isfinite(rv):
            common.append(name)
        else:
            missing.append({"state_point": name, "mlp": bool(values), "ridge": math.isfinite(rv)})
    if common:
        run_avgs = [float(np.mean([r[n] for n in common if n in r and math.isfinite(r[n])]))
                    for r in per_run if any(n in r and math.isfinite(r[n]) for n in common)]
        by_name = {row["state_point"]: row for row in rows}
        mlp_avg = float(np.mean([by_name[n]["mlp_mean"] for n in common]))
        ridge_avg = float(np.mean([by_name[n]["ridge"] for n in common]))
        ceilings = [by_name[n]["rho_max"] for n in common]
        ceiling_avg = float(np.mean(ceilings)) if all(math.isfinite(x) for x in ceilings) else math.nan
        average = {"state_points": len(common), "mlp_mean": mlp_avg, "mlp_std": std(run_avgs), "ridge": ridge_avg,
                   "difference": mlp_avg - ridge_avg, "rho_max": ceiling_avg,
                   "mlp_over_rho_max": mlp_avg / ceiling_avg if ceiling_avg > 0 else math.nan,
                   "ridge_over_rho_max": ridge_avg / ceiling_avg if ceiling_avg > 0 else math.nan}
        matches, beats = mlp_avg >= ridge_avg - tolerance, mlp_avg > ridge_avg
        wins = sum(by_name[n]["mlp_mean"] > by_name[n]["ridge"] for n in common)
    else:
        average = {"state_points": 0, "mlp_mean": math.nan, "mlp_std": math.nan, "ridge": math.nan,
                   "difference": math.nan, "rho_max": math.nan, "mlp_over_rho_max": math.nan,
                   "ridge_over_rho_max": math.nan}
        matches = beats = None
        wins = 0
    return {"metric": metric, "split": split, "tolerance": tolerance, "rows": rows, "average": average,
            "matches_or_beats": matches, "beats": beats, "wins": int(wins), "n_compared": len(common),
            "n_runs": len(run_metrics), "run_ids": list(run_ids) if run_ids is not None else None,
            "missing": missing}


def _fmt(v, digits=3):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def table_markdown(table: Mapping[str, Any], ridge: Mapping[str, Mapping[str, Any]] | None = None,
                   title: str = "tGlassMLP ensemble vs ridge baseline") -> str:
    m = table["metric"]
    md_runs = sorted({n for r in (ridge or {}).values() for n in r.get("n_runs") or []})
    lines = [f"# {title}", "",
             f"Held-out {m} ({table['split']} structures), tGlassMLP: mean +- std over {table['n_runs']} runs; "
             "ridge: fitted per state point on the same standardised descriptors and split, alpha by "
             "cross-validation over training structures. rho_max: the label-noise ceiling of the held-out Pearson "
             f"on the same structures and labels (split-half over the MD runs, N_R = {'/'.join(map(str, md_runs)) or 'n/a'}; "
             "docs/label-ceiling.md), and each Pearson as a fraction of it.", "",
             f"| state point | tGlassMLP {m} | ridge {m} | difference | rho_max | tGlassMLP/rho_max | ridge/rho_max "
             "| runs | ridge alpha |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in table["rows"]:
        alpha = (ridge or {}).get(row["state_point"], {}).get("alpha")
        lines.append(f"| {row['state_point']} | {_fmt(row['mlp_mean'])} +- {_fmt(row['mlp_std'])} | "
                     f"{_fmt(row['ridge'])} | {_fmt(row['difference'], 3)} | {_fmt(row.get('rho_max'))} | "
                     f"{_fmt(row.get('mlp_over_rho_max'), 2)} | {_fmt(row.get('ridge_over_rho_max'), 2)} | "
                     f"{row['n_runs']} | {'n/a' if alpha is None else f'{alpha:.1e}'} |")
    a = table["average"]
    lines.append(f"| **average ({a['state_points']} state points)** | {_fmt(a['mlp_mean'])} +- {_fmt(a['mlp_std'])} | "
                 f"{_fmt(a['ridge'])} | {_fmt(a['difference'])} | {_fmt(a.get('rho_max'))} | "
                 f"{_fmt(a.get('mlp_over_rho_max'), 2)} | {_fmt(a.get('ridge_over_rho_max'), 2)} | | |")
    verdict = {True: "matches or beats", False: "falls below", None: "cannot be compared with"}[table["matches_or_beats"]]
    lines += ["", f"On average tGlassMLP **{verdict}** the ridge baseline "
              f"(tolerance {table['tolerance']:g}; better at {table['wins']} of {table['n_compared']} state points)."]
    if table["missing"]:
        lines.append("Not compared (missing on one side): " + ", ".join(x["state_point"] for x in table["missing"]))
    return "\n".join(lines) + "\n"


def write_comparison(table: Mapping[str, Any], ridge: Mapping[str, Mapping[str, Any]], out_dir: str | Path,
                     extra: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """``<out_dir>/baseline_comparison.md`` and ``.json`` (table, ridge details, ``extra``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "baseline_comparison.md", out / "baseline_comparison.json"
    from tglassmlp.atomic import write_json_atomic, write_text_atomic

    write_text_atomic(md, table_markdown(table, ridge))
    write_json_atomic(js, {"comparison": table, "ridge": ridge, **(extra or {})}, default=_json_default)
    return md, js


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ------------------------------------------------------------------------------------------------ CLI
def data_settings_from_run(run_id: str, tracking_uri: str) -> dict[str, Any]:
    """The data module's split settings recorded in a run's params (tglassmlp.training.curated_params)."""
    from tglassmlp.tracking import check_tracking_uri, make_client

    params = make_client(check_tracking_uri(tracking_uri)).get_run(run_id).data.params
    out: dict[str, Any] = {}
    if "data.state_points" in params:
        out["state_points"] = {float(t): cs for t, cs in json.loads(params["data.state_points"]).items()}
    if "data.train_fraction" in params:
        out["train_fraction"] = float(params["data.train_fraction"])
    if "data.split_seed" in params:
        out["split_seed"] = int(params["data.split_seed"])
    counts = {k: int(params[f"data.{k}"]) for k in ("n_train_samples", "n_test_samples") if f"data.{k}" in params}
    return {"data": out, "counts": counts}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tglassmlp.analysis.baseline",
                                 description="Ridge baseline per state point vs a tGlassMLP ensemble.")
    ap.add_argument("--data", required=True, type=Path, help="dataset root (shards <root>/T<T>/s<k>.h5)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--manifest", type=Path, help="ensemble manifest <sweep dir>/ensemble.json")
    src.add_argument("--metrics", type=Path, nargs="+", help="metrics JSON files, one per run (metrics_test.json)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--tracking-uri", default="sqlite:///outputs/mlflow.db", help="MLflow store of the runs")
    ap.add_argument("--runs", choices=("selected", "all"), default="selected", help="which runs of the manifest")
    ap.add_argument("--metric", default="pearson")
    ap.add_argument("--cv-metric", choices=CV_METRICS, default="pearson")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=0.0)
    ap.add_argument("--levels", type=float, nargs="+", default=None, help="<C_B> levels (default: the data config's)")
    ap.add_argument("--train-fraction", type=float, default=None)
    ap.add_argument("--split-seed", type=int, default=None)
    ap.add_argument("--max-structures", type=int, default=None)
    ap.add_argument("--cache-dir", default=None, help="descriptor cache (default: none)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from tglassmlp.training.datamodule import DatasetNotFoundError, PropensityDataModule
    from tglassmlp.defaults import group_config

    try:
        run_ids, run_metrics, recorded = None, None, {"data": {}, "counts": {}}
        if args.manifest is not None:
            run_ids, _ = read_manifest(args.manifest, args.runs)
            run_metrics = run_metrics_from_mlflow(run_ids, args.tracking_uri)
            recorded = data_settings_from_run(run_ids[0], args.tracking_uri)
        elif args.metrics:
            run_ids = [str(p) for p in args.metrics]
            run_metrics = []
            for p in args.metrics:
                if not p.is_file():
                    raise FileNotFoundError(f"metrics file {p} does not exist")
                run_metrics.append(json.loads(p.read_text()))
        defaults = group_config("data", "demo")
        kwargs: dict[str, Any] = {
            "levels": args.levels or list(defaults.get("levels") or (0.9, 0.8, 0.65, 0.5)),
            "train_fraction": float(defaults.get("train_fraction", 0.8)),
            "split_seed": int(defaults.get("split_seed", 0)), "max_structures": args.max_structures,
            "cache_dir": args.cache_dir, "shuffle": False,
            # conf/labels/ owns the reference type (data/demo.yaml only points at it)
            "reference_type": int(group_config("labels").get("reference_type", 0))}
        kwargs.update(recorded["data"])
        for key, value in (("train_fraction", args.train_fraction), ("split_seed", args.split_seed)):
            if value is not None:
                kwargs[key] = value
        dm = PropensityDataModule(args.data, **kwargs)
        dm.setup()
        counts = recorded["counts"]
        seen = {"n_train_samples": len(dm.train_samples), "n_test_samples": len(dm.test_samples)}
        if counts and any(counts[k] != seen[k] for k in counts):
            log.warning("the data module has %s but the run recorded %s: the split may differ from the runs' "
                        "(different data root or max_structures?)", seen, counts)
        ridge = ridge_baseline(dm, n_folds=args.folds, cv_metric=args.cv_metric)
        extra = {"data_root": str(args.data.resolve()), "data_settings": {k: v for k, v in kwargs.items()
                                                                         if k != "cache_dir"},
                 "samples": seen, "manifest": str(args.manifest) if args.manifest else None}
        if run_metrics is None:
            table = {"metric": args.metric, "split": "test", "tolerance": args.tolerance, "n_runs": 0, "rows": [
                {"state_point": n, "temperature": r["temperature"], "level": r["level"], "mlp_mean": math.nan,
                 "mlp_std": math.nan, "n_runs": 0, "ridge": r.get(args.metric, math.nan), "difference": math.nan}
                for n, r in ridge.items()],
                "average": {"state_points": len(ridge), "mlp_mean": math.nan, "mlp_std": math.nan,
                            "ridge": float(np.nanmean([r.get(args.metric, math.nan) for r in ridge.values()])),
                            "difference": math.nan},
                "matches_or_beats": None, "beats": None, "wins": 0, "n_compared": 0, "run_ids": None, "missing": []}
        else:
            table = comparison_table(run_metrics, ridge, args.metric, tolerance=args.tolerance, run_ids=run_ids)
        md, js = write_comparison(table, ridge, args.out, extra)
    except (FileNotFoundError, DatasetNotFoundError, ManifestError) as exc:
        print(f"baseline: {exc}", file=sys.stderr)
        return 2
    print(md.read_text())
    print(f"written: {md}, {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

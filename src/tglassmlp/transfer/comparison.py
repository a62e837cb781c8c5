"""How well does the two-step transfer predict MD it never saw? (issue: transfer below the MD range)

At the held-out state points of a :class:`~tglassmlp.transfer.TwoStepTransfer` ('h' in its Table I: MD
labels kept out of training), the Pearson correlation between predicted and MD propensity of the type-0
particles, per structure, for:

* **transfer**: the final (step-2) ensemble, selected networks (and, for reference, all of them);
* **step-1 labels**: the equi-time networks' transferred labels themselves (where the point is also 't');
* **(a) trained with T_h**: tGlassMLP trained on the MD points plus the held-out temperature's MD (the upper
  bound: what MD at T_h would give). Each network is scored on its own test structures at T_h only; the
  folds (split seeds) are chosen so that every structure at T_h is a test structure once;
* **(b) GlassMLP-style**: one network per level trained at a single state point (the lowest MD
  temperature with that level, same c), applied unchanged at T_h, i.e. fed its training state point;
* **(c) direct**: tGlassMLP trained on all MD points (no transfer step), fed (T_h, c).

Per method: mean over networks of the per-network Pearson (mean over structures) +- the std over networks,
and the Pearson of the ensemble-mean prediction. Writes ``<output_dir>/comparison/{comparison.json,
comparison.md, comparison.png}``; every network is an MLflow run under the procedure (tag
``transfer.step = comparison``, ``comparison.method``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from tglassmlp.atomic import write_json_atomic, write_text_atomic
from tglassmlp.training.datamodule import PropensityDataModule
from tglassmlp.ensemble.sources import load_run_members
from tglassmlp.statepoints import format_temperature, state_point_name
from tglassmlp.transfer.labels import TransferredLabels
from tglassmlp.transfer.evaluation import evaluate_members, per_structure_pearson

log = logging.getLogger(__name__)


def covering_split_seeds(root, temperature: float, indices: Sequence[int], train_fraction: float,
                         n_folds: int, max_tries: int = 500) -> list[tuple[int, list[int]]]:
    """[(split_seed, test structure indices at T)]: up to ``n_folds`` split seeds whose test sets at
    ``temperature`` together cover as many structures as possible (greedy; the data module's split)."""
    dm = PropensityDataModule(root, train_fraction=train_fraction, cache_dir=None)
    chosen, covered, seen = [], set(), set()
    for s in range(max_tries):
        dm.split_seed = s
        test = tuple(dm.split(temperature, indices)[1])
        if test in seen or (set(test) <= covered and len(covered) < len(indices)):
            continue
        seen.add(test)
        chosen.append((s, list(test)))
        covered |= set(test)
        if len(chosen) == n_folds:
            break
    return chosen


def compare_transfer(procedure, cfg: DictConfig, seeds: Sequence[int] = (0, 1), folds: int = 4,
                     methods: Sequence[str] = ("a", "b", "c")) -> dict[str, Any]:
    """Train the baselines (resumable through the procedure's state) and score everything (module docstring).

    Args:
        procedure: a finished :class:`~tglassmlp.transfer.TwoStepTransfer` (its step 2 done).
        cfg: the composed training config the procedure ran with.
        seeds: seeds of each baseline ensemble.
        folds: number of split seeds for (a).
        methods: which baselines to train ('a', 'b', 'c').
    """

    unknown = sorted(set(methods) - {"a", "b", "c"})
    if unknown:
        raise ValueError(f"transfer.comparison.methods: unknown comparison method(s) {unknown}; choose from "
                         "'a' (trained with T_h), 'b' (GlassMLP-style), 'c' (direct)")
    if not seeds:
        raise ValueError("transfer.comparison.seeds: give at least one seed per baseline ensemble")
    if "a" in methods and int(folds) < 1:
        raise ValueError(f"transfer.comparison.folds must be >= 1 for method 'a', got {folds}")
    table = procedure.table
    targets = procedure.held_out_targets(cfg)
    if not targets:
        raise ValueError("transfer comparison: no held-out MD state point is reached (transfer.held_out)")
    out_dir = procedure.output_dir / "comparison"
    out_dir.mkdir(parents=True, exist_ok=True)
    st = procedure.state.data
    st["comparison_run_id"] = procedure.tracking.open_run(
        {"transfer.id": procedure.transfer_id, "transfer.step": "comparison", "transfer.role": "comparison",
         "mlflow.parentRunId": st["procedure_run_id"]}, "comparison", reopen=st.get("comparison_run_id"))
    procedure.state.save()
    parent = st["comparison_run_id"]
    client = procedure.tracking.client
    rows: dict[str, dict] = {}

    def members_of(runs: dict[int, str]):
        return load_run_members(client, list(runs.values()))

    # transfer: the final ensemble (selected) and all its networks
    manifest = procedure.manifest
    rows["transfer (step-2 ensemble, selected)"] = evaluate_members(
        load_run_members(client, manifest["selected"]), targets)
    rows["transfer (step-2, all networks)"] = evaluate_members(
        load_run_members(client, [e["run_id"] for e in manifest["ranking"]]), targets)
    labels = TransferredLabels(procedure.labels_path)
    step1 = {}
    for (t, c), (recs, md) in targets.items():
        found = [labels.get(t, c, r.index) for r in recs]
        if all(f is not None for f in found):
            r = per_structure_pearson(found, md)
            step1[state_point_name(t, c)] = {"pearson_ensemble": float(np.mean(r)), "n_structures": len(recs),
                                             "per_structure_ensemble": {str(x.index): float(v)
                                                                        for x, v in zip(recs, r)}}
    if step1:
        rows["step-1 labels (equi-time ensembles)"] = step1

    held_temps = sorted({t for t, _ in targets})
    if "a" in methods:
        t_h = held_temps[0]
        recs = targets[next(k for k in targets if k[0] == t_h)][0]
        fold_list = covering_split_seeds(cfg.data.root, t_h, [r.index for r in recs], cfg.data.train_fraction, folds)
        with_held = {t: list(cs) for t, cs in table.md.items()}
        for t, cs in table.held_out.items():
            with_held[t] = sorted(set(with_held.get(t, [])) | set(cs), reverse=True)
        members, test_of = [], {}
        for f, (split_seed, test) in enumerate(fold_list):
            name = f"compare_a_with_{format_temperature(t_h)}_fold{f}"
            ens_cfg = procedure.ensemble_config(cfg, with_held, split_seed=split_seed)
            runs = procedure.train_ensemble(name, ens_cfg, seeds, "comparison", parent,
                                            {"comparison.method": "a", "comparison.split_seed": split_seed,
                                             "comparison.test_structures": ",".join(map(str, test))})
            fold_members = members_of(runs)
            for m in fold_members:
                test_of[m.name] = test
            members += fold_members
        rows[f"(a) trained with {format_temperature(t_h)} MD ({len(fold_list)} folds)"] = evaluate_members(
            members, {k: v for k, v in targets.items() if k[0] == t_h},
            structures=lambda m, t: test_of[m.name])
    if "b" in methods:
        res = {}
        for (t, c) in targets:
            t_src = table.t_min(c)
            name = f"compare_b_single_{state_point_name(t_src, c)}"
            ens_cfg = procedure.ensemble_config(cfg, {t_src: [c]})
            runs = procedure.train_ensemble(name, ens_cfg, seeds, "comparison", parent,
                                            {"comparison.method": "b"})
            res.update(evaluate_members(members_of(runs), {(t, c): targets[(t, c)]},
                                        input_state=lambda _t, _c, t_src=t_src: (t_src, _c)))
        rows["(b) GlassMLP-style: one state point (T_min, c), unchanged"] = res
    if "c" in methods:
        runs = procedure.train_ensemble("compare_c_direct", procedure.ensemble_config(cfg, table.md), seeds,
                                        "comparison", parent, {"comparison.method": "c"})
        rows["(c) direct: tGlassMLP on all MD points, no transfer step"] = evaluate_members(members_of(runs), targets)

    ceilings = procedure.held_out_ceilings(cfg)
    result = {"transfer_id": procedure.transfer_id, "held_out": [state_point_name(*k) for k in targets],
              "rows": rows, "rho_max": {sp: (v if math.isfinite(v) else None) for sp, v in ceilings.items()}}
    write_json_atomic(out_dir / "comparison.json", result)
    text = format_markdown(result)
    write_text_atomic(out_dir / "comparison.md", text)
    figure = plot_comparison(result, out_dir / "comparison.png")
    metrics = {}
    for k, (method, per_point) in enumerate(rows.items()):
        for sp, d in per_point.items():
            metrics[f"comparison/{sp}/method{k}/pearson_ensemble"] = d["pearson_ensemble"]
    metrics.update({f"comparison/{sp}/rho_max": v for sp, v in result["rho_max"].items() if v is not None})
    procedure.log_metrics(parent, metrics)
    for p in (out_dir / "comparison.json", out_dir / "comparison.md", figure):
        procedure.tracking.log_artifact(p, "comparison", run_id=parent)
    procedure.tracking.end_run(parent)
    log.info("transfer comparison:\n%s", text)
    return result


def format_markdown(result: dict) -> str:
    """One table: rows = methods, columns = held-out state points (ensemble Pearson; per-network mean +- std)."""
    points = result["held_out"]
    lines = ["| method | " + " | ".join(points) + " | mean |", "|---|" + "---|" * (len(points) + 1)]
    for method, per_point in result["rows"].items():
        cells, ens = [], []
        for sp in points:
            d = per_point.get(sp)
            if d is None:
                cells.append("-")
                continue
            ens.append(d["pearson_ensemble"])
            cell = f"**{d['pearson_ensemble']:.3f}**"
            if "pearson_networks" in d:
                cell += f" ({d['pearson_networks']:.3f} +- {d['pearson_networks_std']:.3f}, {d['n_networks']} nets)"
            cells.append(cell + f" [{d['n_structures']} str.]")
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {np.mean(ens):.3f} |")
    ceilings = [result.get("rho_max", {}).get(sp) for sp in points]
    if any(v is not None for v in ceilings):
        known = [v for v in ceilings if v is not None]
        lines.append("| label ceiling rho_max | " + " | ".join("-" if v is None else f"{v:.3f}" for v in ceilings)
                     + f" | {np.mean(known):.3f} |")
    lines.append("")
    lines.append("Bold: Pearson of the ensemble-mean prediction with the MD propensity, averaged over structures; "
                 "in brackets the mean +- std over networks of each network's Pearson, and the number of "
                 "structures scored. rho_max: the best Pearson any predictor could reach given the noise of labels "
                 "from the structures' isoconfigurational runs (split-half + Spearman-Brown, docs/label-ceiling.md).")
    return "\n".join(lines) + "\n"


def plot_comparison(result: dict, path: Path) -> Path:
    """Grouped bars: ensemble Pearson per method at every held-out state point (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tglassmlp.atomic import save_figure_atomic as save_figure

    points, rows = result["held_out"], result["rows"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.7 * len(points), 4.2))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(points))
    for k, (method, per_point) in enumerate(rows.items()):
        vals = [per_point.get(sp, {}).get("pearson_ensemble", np.nan) for sp in points]
        errs = [per_point.get(sp, {}).get("pearson_networks_std", 0.0) for sp in points]
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, vals, width, yerr=errs, capsize=2, label=method)
    ax.set_xticks(x, [sp.replace("_", "\n") for sp in points])
    ax.set_xlabel("held-out state point (T [epsilon/k_B], <C_B>)")
    ax.set_ylabel("Pearson(predicted, MD propensity)")
    ax.axhline(0, color="k", lw=0.6)
    ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(1.0, 0.0))
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)

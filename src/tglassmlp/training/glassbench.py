"""GlassBench mode of train.py: train on the roadmap's KA2D benchmark and compare with its table.

    python train.py -m experiment=glassbench glassbench.root=PATH seed=0..3

``PATH`` is the KA2D folder of the GlassBench archive (Zenodo 10118191) with ``T0.30/train``, ``T0.30/test`` and
``T0.23/test``, one ``.npz`` per structure and time code (``docs/glassbench.md``).

* :class:`GlassBenchDataModule` converts the tree once into shards (:func:`tglassmlp.data.glassbench.
  convert_glassbench_tree`: per-run bond breaking from the files' run positions) and serves the training
  folder's structures at every time code as a state point (T, c_k), c_k = <C_B>(t_k) of the type-0 particles
  averaged over every GlassBench structure at T; the labels are the propensities at t_k themselves
  (:class:`TimeCodeLabels`, no interpolation). The split is GlassBench's (train folder / test folders).
* :func:`glassbench_table` evaluates trained networks on the test folders (the training temperature) and the
  transfer folders (other temperatures): our Pearson per (T, t) as the mean and spread over the networks, the
  Pearson of the ensemble-mean prediction, rho_max of the files' own runs (:class:`~tglassmlp.observables.
  LabelCeiling`) and the E_pot baseline, next to the roadmap's rows (``glassbench.roadmap`` in the config).
* :class:`GlassBenchTable` (a Hydra callback of the preset) does that at the end of the multirun and writes
  ``<sweep dir>/glassbench/table.md`` and ``table.json``, logged to an MLflow run ``glassbench`` of the study.

Pearson: per structure over its type-0 particles, averaged over structures (as train.py's test metrics and
rho_max's ``mean_rho_max``); the prediction is the network's output at the input (T, c_k), without the mean
constraint of predict.py (Pearson is unchanged by a shift, not by the constraint's change of input level).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tglassmlp.training.datamodule import DatasetNotFoundError, PropensityDataModule, StructureRecord
from tglassmlp.data.glassbench import GlassBenchTreeError, convert_glassbench_tree, glassbench_folder
from tglassmlp.data.shards import read_shard
from tglassmlp.data.structures import read_structure
from tglassmlp.metrics import pearson
from tglassmlp.model.loss import DEFAULT_RADII, DEFAULT_WIDTH
from tglassmlp.observables import LabelCeiling

log = logging.getLogger(__name__)

#: where the callback writes its table, under the sweep folder
TABLE_DIR = "glassbench"


class TimeCodeLabels:
    """Label source of the GlassBench mode: at level c_k of temperature T the labels are each structure's
    propensity at the k-th time code itself (t* = t_k for every structure).

    Args:
        levels: {T (rounded to 3 decimals): [(time code, time [tau], c_k), ...]} in time order.
    """

    def __init__(self, levels: Mapping[float, Sequence[tuple[int, float, float]]]):
        self.levels = {round(float(t), 3): list(v) for t, v in levels.items()}

    def labels(self, structures: Sequence[StructureRecord], temperature: float, levels: Sequence[float]):
        table = self.levels[round(float(temperature), 3)]
        out = {}
        for c in levels:
            k = int(np.argmin([abs(c_k - float(c)) for _, _, c_k in table]))  # the first code of that level
            if abs(table[k][2] - float(c)) > 1e-9:
                continue
            out[float(c)] = ([np.asarray(s.propensity[k], dtype=np.float64) for s in structures],
                             np.full(len(structures), float(table[k][1])))
        return out


class GlassBenchDataModule(PropensityDataModule):
    """:class:`~tglassmlp.training.datamodule.PropensityDataModule` over a GlassBench tree (module docstring).

    Args:
        root: the GlassBench KA2D folder (``glassbench.root``; None: a clear error when the data are needed).
        train: the training folder ('T0.30/train').
        test: folders evaluated as tests; those at the training temperature are also train.py's test set.
        transfer: folders at other temperatures, evaluated as transfer by :func:`glassbench_table`.
        converted_dir: cache of converted trees (``<converted_dir>/<key>/T<T>/s<k>.h5``, keyed on the files).
        max_structures: keep the first structures (by index) of every folder (quick runs).
        Other arguments: those of PropensityDataModule.

    After :meth:`prepare_glassbench` (called by :meth:`shard_paths` and :meth:`setup`): ``index`` (the
    conversion's index), ``time_levels`` {T: [(code, t, c_k)]}, ``requested`` {T_train: [c_k]}.
    """

    def __init__(self, root, train: str = "T0.30/train", test: Sequence[str] = ("T0.30/test",),
                 transfer: Sequence[str] = ("T0.23/test",), converted_dir="outputs/cache/glassbench",
                 max_structures: int | None = None, cache_dir="outputs/cache/descriptors", reference_type: int = 0,
                 radii: Sequence[float] = DEFAULT_RADII, width: float = DEFAULT_WIDTH, shuffle: bool = True,
                 num_workers: int = 0, samples_per_batch: int = 1, descriptors=None):
        # root None (the preset's default): refused when the data are first needed, naming the setting
        self.root_given = root is not None
        super().__init__(root if root is not None else ".", state_points={}, max_structures=max_structures, cache_dir=cache_dir,
                         reference_type=reference_type, radii=radii, width=width, shuffle=shuffle,
                         num_workers=num_workers, samples_per_batch=samples_per_batch, descriptors=descriptors)
        self.train_folder = str(train).strip("/")
        self.test_folders = [str(f).strip("/") for f in test]
        self.transfer_folders = [str(f).strip("/") for f in transfer]
        self.train_temperature = round(glassbench_folder(self.train_folder)[0], 3)
        self.converted_dir = Path(converted_dir)
        self.index: dict | None = None
        self.time_levels: dict[float, list[tuple[int, float, float]]] = {}

    @property
    def folders(self) -> list[str]:
        return list(dict.fromkeys([self.train_folder, *self.test_folders, *self.transfer_folders]))

    def prepare_glassbench(self) -> None:
        """Convert the tree (cached) and compute every temperature's levels c_k from its structures."""
        if self.index is not None:
            return
        if not self.root_given:
            raise DatasetNotFoundError("glassbench.root is not set: python train.py -m experiment=glassbench "
                                       "glassbench.root=PATH seed=0..3, PATH the KA2D folder of the GlassBench "
                                       f"archive (Zenodo 10118191) with {', '.join(self.folders)}")
        try:
            self.index = convert_glassbench_tree(self.root, self.folders, self.converted_dir)
        except GlassBenchTreeError as exc:  # train.py reports a DatasetNotFoundError in one line
            raise DatasetNotFoundError(str(exc)) from None
        by_t: dict[float, list[Path]] = {}
        codes_at: dict[float, tuple[str, list[int]]] = {}
        for folder in self.folders:
            t = self.folder_temperature(folder)
            codes = self.index["folders"][folder]["codes"]
            if t in codes_at and codes_at[t][1] != codes:
                raise ValueError(f"GlassBench T = {t:g}: {folder} has time codes {codes}, {codes_at[t][0]} has "
                                 f"{codes_at[t][1]}; one temperature needs one time grid")
            codes_at.setdefault(t, (folder, codes))
            by_t.setdefault(t, []).extend(self.folder_shards(folder))
        for t, paths in by_t.items():
            times, curve = None, []
            for p in paths:
                s = read_structure(p, ("times", "propensity"))
                times = s.times
                curve.append(s.propensity[:, s.types == self.reference_type].mean(axis=1))
            curve = np.mean(curve, axis=0)
            codes = codes_at[t][1]
            self.time_levels[t] = [(int(k), float(x), float(c)) for k, x, c in zip(codes, times, curve)]
        # a time code at which no bond has broken yet (<C_B> = 1: at T = 0.23, t = 0.1 in GlassBench) has constant
        # labels, which the loss's variance terms cannot normalise, and a level equal to an earlier code's cannot
        # be told apart from it: neither is trained on (both are still evaluated)
        levels = []
        for code, time, c in self.time_levels[self.train_temperature]:
            if c >= 1.0 - 1e-12 or c in levels:
                log.warning("GlassBench T = %g, tc%02d (t = %g): <C_B> = %.6f %s; not a training state point",
                            self.train_temperature, code, time, c,
                            "(no bond broken)" if c >= 1.0 - 1e-12 else "as an earlier time code")
                continue
            levels.append(c)
        self.requested = {self.train_temperature: levels}
        self.label_source = TimeCodeLabels(self.time_levels)

    def folder_temperature(self, folder: str) -> float:
        return round(glassbench_folder(folder)[0], 3)

    def folder_shards(self, folder: str) -> list[Path]:
        """The converted shards of one folder, by structure index (the first ``max_structures``)."""
        entries = sorted(self.index["folders"][folder]["structures"], key=lambda e: e["shard_index"])
        return [Path(e["shard"]) for e in entries][: self.max_structures]

    def shard_paths(self) -> dict[float, list[Path]]:
        """{T_train: the training folder's and the same temperature's test folders' converted shards}."""
        self.prepare_glassbench()
        t = self.train_temperature
        test = [f for f in self.test_folders if self.folder_temperature(f) == t]
        if not test:
            raise ValueError(f"GlassBench: no test folder at the training temperature {t:g} "
                             f"(train {self.train_folder}, test {self.test_folders})")
        return {t: sorted({p for f in [self.train_folder, *test] for p in self.folder_shards(f)})}

    def split(self, temperature: float, indices: Sequence[int]) -> tuple[list[int], list[int]]:
        """GlassBench's own split: the training folder's structures train, the test folders' test."""
        self.prepare_glassbench()
        train = {int(p.stem[1:]) for p in self.folder_shards(self.train_folder)}
        return sorted(i for i in indices if i in train), sorted(i for i in indices if i not in train)

    def dataset_hash(self) -> str:
        self.prepare_glassbench()
        return self.index["key"][:16]


# ============================================================================================ evaluation
def _folder_data(dm: GlassBenchDataModule, folder: str) -> list[dict[str, Any]]:
    """Per structure of a folder: raw reference descriptors, labels (T_n, N_0), per-run C_B (R, T_n, N_0),
    inherent-structure energies (N_0,)."""
    out = []
    for path in dm.folder_shards(folder):
        rec = dm.read_record(path)
        shard = read_shard(path, fields=["bond_breaking", "particle_energies"])
        out.append({"path": path, "descriptors": rec.descriptors, "labels": np.asarray(rec.propensity, np.float64),
                    "runs": np.asarray(shard["bond_breaking"], np.float64)[:, :, rec.reference],
                    "energies": np.asarray(shard["particle_energies"], np.float64)[rec.reference]})
    return out


def _mean_pearson(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """Pearson per structure, averaged over structures (NaN structures left out)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        values = [pearson(p, y) for p, y in zip(predictions, labels)]
    return float(np.nanmean(values)) if np.any(np.isfinite(values)) else float("nan")


def _matches(t_roadmap: float, t_ours: float) -> bool:
    return abs(float(t_roadmap) - float(t_ours)) <= 1e-3 * abs(float(t_ours))


def glassbench_table(members: Sequence, dm: GlassBenchDataModule, roadmap: Mapping | None = None,
                     n_splits: int = 50, seed: int = 0) -> dict[str, Any]:
    """Evaluate networks on the GlassBench test and transfer folders (module docstring).

    Args:
        members: :class:`~tglassmlp.model.artifact.EnsembleMember` s (each with its own scaler).
        dm: the data module of the training (its descriptor settings, reference type and conversion).
        roadmap: {'columns': [names], 'rows': [{'T', 't', <column>: value}]} (``glassbench.roadmap``).
        n_splits, seed: of the label ceiling's split halves.

    Returns:
        {'networks': [member names], 'n_networks', 'train_folder', 'columns' (roadmap), 'rows': [{'folder',
        'transfer', 'T', 't', 'time_code', 'level', 'n_structures', 'n_runs', 'pearson' (per network), 'pearson_mean',
        'pearson_std' (sample std over networks; NaN for one), 'ensemble_pearson', 'rho_max',
        'pearson_over_rho_max', 'e_pot_pearson', 'roadmap' {column: value}}]}: one row per evaluated (folder,
        time code), then the roadmap rows no folder covers (our values None).
    """
    dm.prepare_glassbench()
    roadmap = dict(roadmap or {})
    columns = list(roadmap.get("columns") or [])
    reference = [dict(r) for r in roadmap.get("rows") or []]
    rows, used = [], set()
    for folder in [*dm.test_folders, *dm.transfer_folders]:
        t = dm.folder_temperature(folder)
        data = _folder_data(dm, folder)
        for k, (code, time, level) in enumerate(dm.time_levels[t]):
            labels = [d["labels"][k] for d in data]
            per_net = []
            ensemble = [np.zeros_like(y) for y in labels]
            for m in members:
                preds = [m.predict(d["descriptors"], t, level) for d in data]
                per_net.append(_mean_pearson(preds, labels))
                for acc, p in zip(ensemble, preds):
                    acc += p / len(members)
            with warnings.catch_warnings():  # no bond broken yet: constant labels, rho_max undefined (NaN)
                warnings.simplefilter("ignore", RuntimeWarning)
                ceiling = LabelCeiling(n_splits=n_splits, seed=seed).compute([d["runs"][:, k] for d in data])
                rho_max = float(ceiling.mean_rho_max[0])
            mean = float(np.mean(per_net)) if per_net else float("nan")
            match = [i for i, r in enumerate(reference)
                     if abs(float(r["T"]) - t) < 1e-6 and _matches(r["t"], time)]
            used.update(match)
            rows.append({"folder": folder, "transfer": t != dm.train_temperature, "T": t, "t": time,
                         "time_code": code, "level": level, "n_structures": len(data),
                         "n_runs": sorted({int(d["runs"].shape[0]) for d in data}),
                         "pearson": per_net, "pearson_mean": mean,
                         "pearson_std": float(np.std(per_net, ddof=1)) if len(per_net) > 1 else float("nan"),
                         "ensemble_pearson": _mean_pearson(ensemble, labels) if members else float("nan"),
                         "rho_max": rho_max, "pearson_over_rho_max": mean / rho_max if rho_max > 0 else float("nan"),
                         "e_pot_pearson": _mean_pearson([d["energies"] for d in data], labels),
                         "roadmap": {c: reference[match[0]].get(c) for c in columns} if match else {}})
    for i, r in enumerate(reference):
        if i not in used:
            rows.append({"folder": None, "transfer": round(float(r["T"]), 3) != dm.train_temperature,
                         "T": float(r["T"]), "t": float(r["t"]), "time_code": None, "level": None,
                         "n_structures": 0, "n_runs": [], "pearson": [], "pearson_mean": None, "pearson_std": None,
                         "ensemble_pearson": None, "rho_max": None, "pearson_over_rho_max": None,
                         "e_pot_pearson": None, "roadmap": {c: r.get(c) for c in columns}})
    rows.sort(key=lambda r: (-r["T"], r["t"]))
    return {"networks": [m.name for m in members], "n_networks": len(members), "train_folder": dm.train_folder,
            "source": dm.index["source"], "columns": columns, "rows": rows}


def _fmt(value, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def glassbench_table_markdown(table: Mapping[str, Any]) -> str:
    """The table as markdown: ours (mean +- spread over networks, ensemble mean, rho_max, fraction of it, our
    E_pot baseline) beside the roadmap's columns, one row per (T, t)."""
    cols = table["columns"]
    runs = sorted({n for r in table["rows"] for n in r["n_runs"]})
    head = ["T", "t", "tc", "<C_B>", "set", "ours (mean +- std)", "ensemble", "rho_max", "ours/rho_max",
            "E_pot (ours)", *[f"{c} (roadmap)" for c in cols]]
    lines = [f"GlassBench KA2D, bond-breaking propensity of type-1 (our type-0) particles: Pearson per structure, "
             f"averaged over structures. Ours: {table['n_networks']} network(s) trained on {table['train_folder']} "
             f"(mean +- sample std over networks; 'ensemble': the Pearson of their mean prediction); rho_max from the "
             f"files' own {', '.join(map(str, runs)) or '-'} runs per structure (split-half, Spearman-Brown). "
             f"'transfer': a temperature not trained on. Source: {table['source']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["rows"]:
        if r["folder"] is None:
            where = "transfer (no data)" if r["transfer"] else "(no data)"
        else:
            where = f"{r['folder']}{' (transfer)' if r['transfer'] else ''}"
        ours = "-" if _fmt(r["pearson_mean"]) == "-" else (
            f"{_fmt(r['pearson_mean'])} +- {_fmt(r['pearson_std'])}" if len(r["pearson"]) > 1 else _fmt(r["pearson_mean"]))
        lines.append("| " + " | ".join([
            f"{r['T']:.2f}", f"{r['t']:g}", "-" if r["time_code"] is None else f"tc{r['time_code']:02d}",
            _fmt(r["level"], ".4f"), where, ours, _fmt(r["ensemble_pearson"]), _fmt(r["rho_max"]),
            _fmt(r["pearson_over_rho_max"], ".2f"), _fmt(r["e_pot_pearson"]),
            *[_fmt(r["roadmap"].get(c)) for c in cols]]) + " |")
    return "\n".join(lines) + "\n"


def table_metrics(table: Mapping[str, Any]) -> dict[str, float]:
    """MLflow metrics ``glassbench/T0.300_tc06/{pearson_mean, pearson_std, ensemble_pearson, rho_max,
    pearson_over_rho_max, e_pot_pearson}`` (finite values of evaluated rows only)."""
    out = {}
    for r in table["rows"]:
        if r["folder"] is None:
            continue
        name = f"glassbench/T{r['T']:.3f}_tc{r['time_code']:02d}"
        for key in ("pearson_mean", "pearson_std", "ensemble_pearson", "rho_max", "pearson_over_rho_max",
                    "e_pot_pearson"):
            if r[key] is not None and math.isfinite(r[key]):
                out[f"{name}/{key}"] = float(r[key])
    return out


def _json_safe(value):
    """NaN (an undefined Pearson: constant labels) as null, so that the file is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_table(table: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``table.md`` and ``table.json`` (undefined numbers as null) in ``out_dir`` (atomically)."""
    from tglassmlp.atomic import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    md = write_text_atomic(out_dir / "table.md", glassbench_table_markdown(table))
    js = write_json_atomic(out_dir / "table.json", _json_safe(table))
    return Path(md), Path(js)


# ============================================================================================ Hydra callback
try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra-core < 1.1
    _HydraCallback = object


class GlassBenchTable(_HydraCallback):
    """Hydra callback of ``experiment=glassbench``: at the end of the multirun, evaluate every finished run of
    the sweep with :func:`glassbench_table`, write ``<sweep dir>/glassbench/table.{md,json}``, print the table
    and log it (metrics :func:`table_metrics`, the two files) to an MLflow run ``glassbench`` of the study,
    tagged with the sweep. Reads ``glassbench.roadmap``, ``data``, ``logger`` and ``study`` from the config."""

    def __init__(self, enabled: bool = True, n_splits: int = 50):
        self.enabled = bool(enabled)
        self.n_splits = int(n_splits)

    def on_multirun_end(self, config, **kwargs) -> None:
        if not self.enabled:
            return
        try:
            self.run(config)
        except Exception:  # the trained runs are recorded already: a failed table must not hide them
            log.exception("GlassBench table failed for sweep %s", config.hydra.sweep.dir)

    def run(self, config) -> dict[str, Any]:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from tglassmlp.ensemble.sources import load_run_members
        from tglassmlp.tracking import MlflowTracking, read_sweep_parent

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        logger = OmegaConf.to_container(config.logger, resolve=True)
        # the table's run sits under the sweep's parent run (beside the seeds) when the sweep has one
        parent = read_sweep_parent(sweep_dir)
        tracking = MlflowTracking(logger["tracking_uri"], logger.get("experiment_name") or config.study,
                                  logger.get("artifact_location"),
                                  parent_run_id=parent["run_id"] if parent else None)
        exp = tracking.prepare()
        runs = tracking.client.search_runs(
            [exp], filter_string=f"tags.sweep_id = '{sweep_dir}' and attributes.status = 'FINISHED'")
        seed = lambda r: str(r.data.tags.get("seed", ""))  # noqa: E731
        runs = sorted(runs, key=lambda r: (not seed(r).lstrip("-").isdigit(),
                                           int(seed(r)) if seed(r).lstrip("-").isdigit() else 0, seed(r)))
        members = load_run_members(tracking.client, [r.info.run_id for r in runs])
        dm = instantiate(config.data)
        roadmap = OmegaConf.to_container(config.glassbench.roadmap, resolve=True)
        table = glassbench_table(members, dm, roadmap, n_splits=self.n_splits)
        table["seeds"] = [r.data.tags.get("seed") for r in runs]
        table["sweep_id"] = str(sweep_dir)
        md, js = write_table(table, sweep_dir / TABLE_DIR)
        with tracking.run({"sweep_id": str(sweep_dir), "study": config.study, "glassbench.table": "true"},
                          run_name="glassbench"):
            tracking.log_params({"glassbench.root": str(Path(config.glassbench.root).resolve()),
                                 "glassbench.networks": json.dumps(table["networks"]),
                                 "glassbench.key": dm.index["key"]})
            tracking.log_metrics(table_metrics(table))
            tracking.log_artifact(md, TABLE_DIR)
            tracking.log_artifact(js, TABLE_DIR)
        print(f"\nGlassBench ({len(members)} network(s)): {md}\n\n{md.read_text()}")
        return table

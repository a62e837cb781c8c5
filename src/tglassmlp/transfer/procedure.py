"""The two-step transfer of tGlassMLP below the MD range (paper Sec. II E, App. B, Table I).

    python transfer.py                              # the demo: MD at T >= 0.45, transfer to 0.4 and 0.35
    python transfer.py experiment=paper_tmin021     # Table I with T_min = 0.21 (GPUs / clusters)
    python transfer.py transfer.stop_after=step1    # stop after the step-1 labels (rerun to continue)

Table I assigns every state point (T, c = <C_B>) a role: 'x' MD labels, 't' labels transferred by step 1,
'r' predictions only; here also 'h' held out: MD labels that training never sees and the final ensemble is
scored on (the demo's T = 0.4, the paper's comparison of the T_min = 0.25 model with MD at 0.23 and 0.21).

Step 1 ("equi-time"): for every level c with 't' entries, a seed ensemble is trained on the 'x' state points
at that level only (all MD temperatures T >= T_min(c), the lowest of them). Each network is scored by

    score = max over selection points (T, c) of | mean_s mean_i X_MLP^i(s; T, c) - c |

(s: the structures at T, i: their type-0 particles), the selection points being the 't'/'r' temperatures
below T_min(c) at the level c; networks with score < threshold (paper: 1e-4) are kept (the scoring, ranking
and run tags are those of every ensemble selection: :mod:`tglassmlp.ensemble`). Their mean prediction
on every structure at the 't' temperatures of the level is the transferred label (and the spread over
networks its uncertainty), stored in ``<output_dir>/step1/labels.npz`` (:class:`TransferredLabels`).

Step 2: one seed ensemble on all 'x' and 't' state points (:class:`CompositeLabels`: MD labels at 'x',
transferred at 't'), selected the same way at the 't'/'r' points below the lowest MD temperature; its
manifest ``<output_dir>/ensemble.json`` is the result (same schema as ``tglassmlp.ensemble.select_sweep``).

Bookkeeping: every network is one ``train()`` call (one MLflow run) in the study's experiment. Runs carry the
tags ``transfer.id``, ``transfer.step`` (1, 2, comparison), ``transfer.ensemble`` and ``transfer.role``
(procedure / ensemble / member), and ``mlflow.parentRunId``: the procedure run is the parent of one run per
ensemble, which is the parent of its seeds, so the MLflow UI shows the procedure as a tree.
``<output_dir>/state.json`` (written atomically after every finished network, selection and label file)
records what is done; a rerun skips it, so an interrupted procedure continues where it stopped. A rerun
with a changed training config for a started ensemble is refused (its fingerprint differs).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tglassmlp.atomic import write_json_atomic, write_text_atomic
from tglassmlp.training.datamodule import MDLabels, PropensityDataModule, StructureRecord
from tglassmlp.ensemble.manifest import write_manifest
from tglassmlp.observables.descriptors import load_descriptor_settings
from tglassmlp.ensemble.sources import load_run_members
from tglassmlp.statepoints import format_level, state_point_name
from tglassmlp.transfer.labels import TransferredLabels, file_sha256
from tglassmlp.transfer.evaluation import evaluate_members, per_structure_pearson  # noqa: F401
from tglassmlp.transfer.table import TransferTable
from tglassmlp.ensemble import (
    NoSelfConsistentNetworkError,
    StructureCache,
    rank_and_select,
    score_runs,
    selection_manifest,
    tag_selection,
)

log = logging.getLogger(__name__)

STATE_VERSION = 1
#: config keys that change how a run looks, not what it learns: left out of an ensemble's fingerprint
_COSMETIC = {"trainer": ("enable_progress_bar", "enable_model_summary", "log_every_n_steps"),
             "data": ("cache_dir", "num_workers")}
#: renamed ``_target_``s, new -> the name fingerprints were first computed with (the data module moved from
#: tglassmlp.data to tglassmlp.training): a procedure started before a rename resumes
_FINGERPRINT_TARGETS = {"tglassmlp.training.datamodule.PropensityDataModule":
                        "tglassmlp.data.datamodule.PropensityDataModule"}


class TransferError(RuntimeError):
    """The transfer procedure cannot go on (the message says what and where)."""


class NoSelfConsistentTransferError(TransferError, NoSelfConsistentNetworkError):
    """No network of a transfer ensemble passes the self-consistency threshold and no fallback is configured
    (a TransferError, so transfer.py exits with the message; a NoSelfConsistentNetworkError of the selection)."""


# ================================================================================================ state
class TransferState:
    """``state.json`` of a procedure: what is finished (written atomically after every change)."""

    def __init__(self, path: str | os.PathLike, transfer_id: str):
        self.path = Path(path)
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise TransferError(f"{self.path} is not valid JSON ({exc}); it is written atomically, so it "
                                    "was edited by hand: fix or delete it") from None
            if self.data.get("transfer_id") != transfer_id:
                raise TransferError(f"{self.path} belongs to transfer {self.data.get('transfer_id')!r}, not "
                                    f"{transfer_id!r}; choose another transfer.output_dir")
        else:
            self.data = {"version": STATE_VERSION, "transfer_id": transfer_id, "procedure_run_id": None,
                         "ensembles": {}, "labels": {}, "finished": []}

    def save(self) -> None:
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        write_json_atomic(self.path, self.data)

    def ensemble(self, name: str) -> dict:
        return self.data["ensembles"].setdefault(name, {"runs": {}, "selection": None, "parent_run_id": None,
                                                        "fingerprint": None})

    def finished(self, stage: str) -> bool:
        return stage in self.data["finished"]

    def finish(self, stage: str) -> None:
        if stage not in self.data["finished"]:
            self.data["finished"].append(stage)
        self.save()


def fingerprint(cfg: DictConfig) -> str:
    """16 hex digits of what an ensemble learns: data, model, loss, schedule, module, trainer (cosmetic keys
    and the seed left out)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keep = {k: resolved.get(k) for k in ("data", "model", "loss", "schedule", "module", "trainer",
                                         "normalize_state_features")}
    # fingerprinted in the layout they were first computed in, so that renames do not orphan a started
    # procedure: the network at `model` and the LightningModule's settings at `module` (conf/model/ now holds
    # the module with the network nested under model.network), the data module under its old _target_
    if isinstance(keep["model"], dict) and "network" in keep["model"]:
        model = dict(keep["model"])
        keep["model"] = model.pop("network")
        keep["module"] = model
    if isinstance(keep["data"], dict) and keep["data"].get("_target_") in _FINGERPRINT_TARGETS:
        keep["data"] = {**keep["data"], "_target_": _FINGERPRINT_TARGETS[keep["data"]["_target_"]]}
    for group, keys in _COSMETIC.items():
        if isinstance(keep.get(group), dict):
            keep[group] = {k: v for k, v in keep[group].items() if k not in keys}
    # the descriptor settings count only where they differ from the defaults: an ensemble started before the
    # data config carried them keeps its fingerprint
    if isinstance(keep.get("data"), dict) and keep["data"].get("descriptors") is not None:
        descriptors = keep["data"].pop("descriptors")
        if load_descriptor_settings(descriptors) != load_descriptor_settings():
            keep["descriptors"] = descriptors
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ================================================================================================ procedure
class TwoStepTransfer:
    """The paper's two-step training procedure (module docstring), one object per procedure.

    Args:
        transfer_id: name of the procedure (tag ``transfer.id``; the output folder by default).
        output_dir: folder of state.json, manifests, labels (rerun with the same folder to resume).
        md, transferred, results, held_out: Table I as {T: [c, ...]} per role (:class:`TransferTable`).
        step1, step2: {'seeds': [...]} of each step's ensembles.
        selection: {'threshold': 1e-4, 'fallback_top_k': None}; see :func:`tglassmlp.ensemble.rank_and_select`.
        stop_after: None, 'step1' or 'step2': stop (cleanly) after that stage; a rerun continues.
        quiet: switch Lightning's progress bars and model summaries off in the networks' runs (one tqdm bar
            per ensemble instead).
        comparison: None, or the settings of :func:`tglassmlp.transfer.comparison.compare_transfer`
            (run after step 2; needs held-out points).

    ``compute(cfg)`` takes the composed training config (``conf/transfer.yaml``: train.yaml plus this
    group) and returns self. Results: :attr:`manifest` (final ensemble), :attr:`labels_path`,
    :attr:`held_out_metrics`, :attr:`state`.
    """

    def __init__(self, transfer_id: str, output_dir: str | os.PathLike, md: Mapping, transferred: Mapping,
                 results: Mapping | None = None, held_out: Mapping | None = None,
                 step1: Mapping | None = None, step2: Mapping | None = None, selection: Mapping | None = None,
                 stop_after: str | None = None, quiet: bool = True, comparison: Mapping | None = None):
        self.transfer_id = str(transfer_id)
        self.output_dir = Path(output_dir)
        self.table = TransferTable.from_config(md, transferred, results, held_out)
        self.step1_seeds = [int(s) for s in (step1 or {}).get("seeds", [0, 1, 2, 3])]
        self.step2_seeds = [int(s) for s in (step2 or {}).get("seeds", [0, 1, 2, 3])]
        if not self.step1_seeds or not self.step2_seeds:
            raise ValueError("transfer.step1.seeds and transfer.step2.seeds need at least one seed each")
        selection = dict(selection or {})
        self.threshold = float(selection.get("threshold", 1e-4))
        self.fallback_top_k = selection.get("fallback_top_k")
        if stop_after not in (None, "step1", "step2"):
            raise ValueError(f"transfer.stop_after must be null, 'step1' or 'step2', got {stop_after!r}")
        self.stop_after = stop_after
        self.quiet = bool(quiet)
        self.comparison = None if comparison is None else dict(comparison)
        self.state: TransferState | None = None
        #: the study's MlflowTracking (set by compute): every run of the procedure is opened and ended by it
        self.tracking = None
        self._structures: StructureCache | None = None
        self.manifest: dict | None = None
        self.held_out_metrics: dict | None = None
        self.comparison_result: dict | None = None

    # --------------------------------------------------------------------------------------- paths
    @property
    def state_path(self) -> Path:
        return self.output_dir / "state.json"

    @property
    def labels_path(self) -> Path:
        return self.output_dir / "step1" / "labels.npz"

    @property
    def manifest_path(self) -> Path:
        return self.output_dir / "ensemble.json"

    # --------------------------------------------------------------------------------------- MLflow
    def _prepare_tracking(self, cfg: DictConfig) -> None:
        from hydra.utils import instantiate

        self.tracking = instantiate(cfg.logger)
        self.tracking.prepare()

    def log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Finite ``metrics`` on one of the procedure's runs (NaN marks a missing value, MLflow refuses it)."""
        self.tracking.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, run_id=run_id)

    # --------------------------------------------------------------------------------------- driver
    def compute(self, cfg: DictConfig) -> TwoStepTransfer:
        """Run (or resume) the procedure with the composed training config ``cfg``; returns self."""
        # fail fast, before any run is created: every temperature of Table I must have shards (a listing)
        temps = {t for role in ("md", "transferred", "results", "held_out") for t, _ in self.table.points(role)}
        PropensityDataModule(cfg.data.root, state_points={t: [0.5] for t in temps}).shard_paths()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.state = TransferState(self.state_path, self.transfer_id)
        self._prepare_tracking(cfg)
        st = self.state.data
        with self.tracking.run({"transfer.id": self.transfer_id, "transfer.role": "procedure",
                                "study": cfg.get("study")}, f"transfer {self.transfer_id}",
                               reopen=st.get("procedure_run_id")) as proc:
            st["procedure_run_id"] = proc
            self.state.save()
            table_md = self.output_dir / "table.md"
            write_text_atomic(table_md, (
                "Table I of this procedure: x MD, t transferred (step 1), r results, h held-out MD\n\n"
                + self.table.to_markdown() + "\n"))
            self.tracking.log_artifact(table_md, run_id=proc)
            log.info("transfer %s (%s): Table I\n%s", self.transfer_id, self.output_dir, self.table.to_markdown())
            self._run_stages(cfg, proc)
        return self

    def _run_stages(self, cfg: DictConfig, proc: str) -> None:
        if not self.state.finished("step1"):
            for c in self.table.step1_levels:
                self._step1_ensemble(cfg, c, proc)
            self._write_step1_labels(cfg)
            self.state.finish("step1")
        else:
            log.info("step 1 finished earlier (%s): skipped", self.state_path)
        if self.stop_after == "step1":
            log.info("stopping after step 1 as configured (transfer.stop_after=step1); rerun to continue")
            return
        if not self.state.finished("step2"):
            self._step2(cfg, proc)
            self.state.finish("step2")
        else:
            log.info("step 2 finished earlier (%s): skipped", self.state_path)
        self.manifest = json.loads(self.manifest_path.read_text())
        if self.table.held_out:
            self.held_out_metrics = self._evaluate_final(cfg, proc)
        if self.stop_after != "step2" and self.comparison is not None:
            from tglassmlp.transfer.comparison import compare_transfer  # it needs the finished procedure

            self.comparison_result = compare_transfer(self, cfg, **self.comparison)
        self.tracking.log_artifact(self.state_path, run_id=proc)
        log.info("transfer %s finished: final ensemble %s (%d networks selected)", self.transfer_id,
                 self.manifest_path, len(self.manifest["selected"]))

    # --------------------------------------------------------------------------------------- ensembles
    def ensemble_config(self, cfg: DictConfig, state_points: Mapping, label_source: Mapping | None = None,
                        **data_overrides) -> DictConfig:
        """A copy of the training config learning ``state_points`` (optionally with a label source)."""
        out = copy.deepcopy(cfg)
        OmegaConf.set_struct(out, False)
        for key in ("transfer", "hydra"):
            out.pop(key, None)
        out.data.state_points = {float(t): [float(c) for c in cs] for t, cs in state_points.items()}
        out.data.temperatures = None
        out.data.label_source = label_source
        for k, v in data_overrides.items():
            out.data[k] = v
        if self.quiet:
            out.trainer.enable_progress_bar = False
            out.trainer.enable_model_summary = False
        return out

    def train_ensemble(self, name: str, cfg: DictConfig, seeds: Sequence[int], step: str, parent: str,
                       extra_tags: Mapping[str, Any] | None = None) -> dict[int, str]:
        """Train the seeds of one ensemble that are not finished yet; returns {seed: run id}.

        Every network is one :func:`tglassmlp.training.train` call; its run gets the transfer tags and the
        ensemble's run as parent. State is saved after each network, so an interruption loses at most one.
        """
        from tqdm.auto import tqdm

        from tglassmlp.training.job import train

        ens = self.state.ensemble(name)
        fp = fingerprint(cfg)
        if ens["fingerprint"] not in (None, fp):
            raise TransferError(
                f"ensemble {name!r} of transfer {self.transfer_id!r} was started with another training config "
                f"(fingerprint {ens['fingerprint']}, now {fp}); its networks would not belong together. Use a new "
                f"transfer.id (or delete {self.state_path} to start over)")
        ens["fingerprint"] = fp
        tags = {"transfer.id": self.transfer_id, "transfer.step": step, "transfer.ensemble": name}
        tags.update(extra_tags or {})
        ens["parent_run_id"] = self.tracking.open_run({**tags, "transfer.role": "ensemble",
                                                       "mlflow.parentRunId": parent}, name,
                                                      reopen=ens.get("parent_run_id"))
        self.state.save()
        todo = [s for s in seeds if str(s) not in ens["runs"]]
        sweep_dir = (self.output_dir / name).resolve()
        with tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc=name, unit="network") as bar:
            for seed in todo:
                seed_cfg = copy.deepcopy(cfg)
                seed_cfg.seed = int(seed)
                # sweep_id = the ensemble's folder: tglassmlp.ensemble.select_sweep works on it too
                result = train(seed_cfg, run_dir=sweep_dir / f"seed{seed}",
                               extra_tags={**tags, "transfer.role": "member", "sweep_id": str(sweep_dir),
                                           "mlflow.parentRunId": ens["parent_run_id"]})
                ens["runs"][str(seed)] = result["run_id"]
                self.state.save()
                bar.update(1)
        return {int(s): ens["runs"][str(s)] for s in seeds}

    def select(self, name: str, runs: Mapping[int, str], points: Sequence[tuple[float, float]], cfg: DictConfig,
               manifest: Path) -> dict:
        """Self-consistency selection of one ensemble on ``points`` (:mod:`tglassmlp.ensemble`: scoring,
        ranking, run tags, manifest schema); writes the manifest, records it in the state and on the
        ensemble's run. A finished selection is read back, not redone."""
        ens = self.state.ensemble(name)
        if ens.get("selection") and Path(ens["selection"]).is_file():
            return json.loads(Path(ens["selection"]).read_text())
        seeds = {rid: seed for seed, rid in runs.items()}
        entries = score_runs(self.tracking.client, [runs[s] for s in sorted(runs)], lambda temps: self.records(cfg, temps),
                             points, seeds=seeds)
        choice = rank_and_select(
            entries, self.threshold, self.fallback_top_k, name, setting="transfer.selection.fallback_top_k",
            remedy="Train more seeds (transfer.step1.seeds / transfer.step2.seeds), or accept the best-ranked "
                   "networks with transfer.selection.fallback_top_k=K; rerun to resume",
            error=NoSelfConsistentTransferError)
        tag_selection(self.tracking, entries, choice, self.threshold)
        result = {"transfer_id": self.transfer_id, "ensemble": name,
                  **selection_manifest(self.tracking, str((self.output_dir / name).resolve()), entries, choice,
                                       self.threshold, sorted({c for _, c in points}, reverse=True), points)}
        write_manifest(manifest, result)
        parent = ens["parent_run_id"]
        self.log_metrics(parent, {"selection/n_selected": len(choice["selected"]),
                                   "selection/best_score": entries[0]["score"] if entries else math.nan})
        self.tracking.log_artifact(manifest, run_id=parent)
        self.tracking.set_tags(run_id=parent, tags={"ensemble.note": choice["note"][:5000]})
        self.tracking.end_run(parent)
        ens["selection"] = str(manifest)
        self.state.save()
        # the outcome itself (choice["note"]) is in the manifest and the run's tags; a fallback was warned already
        log.info("%s: %d of %d network(s) selected; manifest %s", name, len(choice["selected"]), len(entries), manifest)
        return result

    def records(self, cfg: DictConfig, temperatures: Iterable[float]) -> dict[float, list[StructureRecord]]:
        """Structures at the temperatures, every shard as the data module trains on it (read once per
        procedure, shared by selection and labelling: a :class:`~tglassmlp.ensemble.StructureCache`)."""
        if self._structures is None:
            self._structures = StructureCache(cfg.data.root, cache_dir=cfg.data.get("cache_dir"),
                                              max_structures=cfg.data.get("max_structures"),
                                              reference_type=cfg.data.get("reference_type", 0))
        return self._structures(temperatures)

    # --------------------------------------------------------------------------------------- step 1
    def _step1_ensemble(self, cfg: DictConfig, level: float, proc: str) -> None:
        name = f"step1_{format_level(level)}"
        ens_cfg = self.ensemble_config(cfg, self.table.equitime_state_points(level))
        runs = self.train_ensemble(name, ens_cfg, self.step1_seeds, "1", proc, {"transfer.level": level})
        self.select(name, runs, self.table.selection_points(level), cfg, self.output_dir / name / "ensemble.json")

    def _write_step1_labels(self, cfg: DictConfig) -> None:
        """Mean (and spread) of the selected equi-time networks at every 't' point -> labels.npz."""
        labels, spread, meta = {}, {}, {"transfer_id": self.transfer_id, "state_points": {}}
        for c in self.table.step1_levels:
            name = f"step1_{format_level(c)}"
            manifest = json.loads(Path(self.state.ensemble(name)["selection"]).read_text())
            members = load_run_members(self.tracking.client, manifest["selected"])
            temps = self.table.transfer_temperatures(c)
            for t, recs in self.records(cfg, temps).items():
                preds = {r.index: np.stack([m.predict(r.descriptors, t, c) for m in members]) for r in recs}
                labels[(t, c)] = {k: p.mean(axis=0) for k, p in preds.items()}
                spread[(t, c)] = {k: p.std(axis=0) for k, p in preds.items()}
                meta["state_points"][state_point_name(t, c)] = {
                    "ensemble": name, "run_ids": manifest["selected"], "fallback": manifest["fallback"],
                    "structures": [r.index for r in recs]}
        TransferredLabels.write(self.labels_path, labels, spread, meta)
        sha = file_sha256(self.labels_path)
        self.state.data["labels"]["step1"] = {"path": str(self.labels_path), "sha256": sha}
        self.state.save()
        self.tracking.log_artifact(self.labels_path, "step1", run_id=self.state.data["procedure_run_id"])
        log.info("step 1: transferred labels at %d state points -> %s", len(labels), self.labels_path)

    # --------------------------------------------------------------------------------------- step 2
    def step2_config(self, cfg: DictConfig) -> DictConfig:
        label_source = {"_target_": "tglassmlp.transfer.CompositeLabels",
                        "transferred": {"_target_": "tglassmlp.transfer.TransferredLabels",
                                        "path": str(self.labels_path.resolve())},
                        "md_state_points": {float(t): [float(c) for c in cs] for t, cs in self.table.md.items()}}
        return self.ensemble_config(cfg, self.table.step2_state_points, label_source)

    def _step2(self, cfg: DictConfig, proc: str) -> None:
        recorded = self.state.data["labels"].get("step1", {})
        if not self.labels_path.is_file() or file_sha256(self.labels_path) != recorded.get("sha256"):
            raise TransferError(f"{self.labels_path} is missing or differs from the labels step 1 wrote "
                                f"(state {self.state_path}); delete 'step1' from its 'finished' list to redo them")
        ens_cfg = self.step2_config(cfg)
        runs = self.train_ensemble("step2", ens_cfg, self.step2_seeds, "2", proc,
                                   {"transfer.labels_sha256": recorded["sha256"][:16]})
        result = self.select("step2", runs, self.table.selection_points(None), cfg,
                             self.output_dir / "step2" / "ensemble.json")
        write_manifest(self.manifest_path, {**result, "final": True, "table": self.table.to_markdown(),
                                          "labels": str(self.labels_path)})
        self.tracking.log_artifact(self.manifest_path, run_id=proc)

    # --------------------------------------------------------------------------------------- held out
    def _held_out(self, cfg: DictConfig) -> dict[tuple[float, float], tuple[list, list[np.ndarray], np.ndarray]]:
        """{(T, c): (records, MD labels per record, label times t* per record)} at the held-out points."""
        out = {}
        for t, cs in self.table.held_out.items():
            recs = self.records(cfg, [t])[t]
            labelled = MDLabels().labels(recs, t, list(cs))
            for c in cs:
                if float(c) not in labelled:
                    log.warning("held-out %s: <C_B>(t) at T = %g does not reach %g; left out",
                                state_point_name(t, c), t, c)
                    continue
                out[(t, float(c))] = (recs, *labelled[float(c)])
        return out

    def held_out_targets(self, cfg: DictConfig) -> dict[tuple[float, float], tuple[list, list[np.ndarray]]]:
        """{(T, c): (records, MD labels per record)} at the held-out points (MD labels as in training)."""
        return {k: (recs, labels) for k, (recs, labels, _) in self._held_out(cfg).items()}

    def held_out_ceilings(self, cfg: DictConfig) -> dict[str, float]:
        """{state point name: rho_max} at the held-out points: the label-noise ceiling of their Pearson
        (``docs/label-ceiling.md``) from each structure's per-run bond breaking at its label time t*; NaN where
        the shards keep no per-run bond breaking."""
        from tglassmlp.data.ceilings import ShardRuns

        runs = ShardRuns(int(cfg.data.get("reference_type", 0)))
        return {state_point_name(t, c): runs.ceiling([(r.path, ts) for r, ts in zip(recs, t_star)])
                for (t, c), (recs, _, t_star) in self._held_out(cfg).items()}

    def _evaluate_final(self, cfg: DictConfig, proc: str) -> dict:
        targets = self.held_out_targets(cfg)
        members = load_run_members(self.tracking.client, self.manifest["selected"])
        result = evaluate_members(members, targets)
        labels = TransferredLabels(self.labels_path)
        for (t, c), (recs, md) in targets.items():
            step1 = [labels.get(t, c, r.index) for r in recs]
            if all(x is not None for x in step1):
                result[state_point_name(t, c)]["step1_labels_pearson"] = float(np.mean(
                    per_structure_pearson(step1, md)))
        for name, rho_max in self.held_out_ceilings(cfg).items():
            if name in result and math.isfinite(rho_max):
                result[name]["rho_max"] = rho_max
        path = self.output_dir / "held_out.json"
        write_json_atomic(path, result)
        self.log_metrics(proc, {f"held_out/{k}/{m}": v for k, d in result.items() for m, v in d.items()
                                 if isinstance(v, float)})
        self.tracking.log_artifact(path, run_id=proc)
        return result

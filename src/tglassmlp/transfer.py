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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from tglassmlp.atomic import save_npz_atomic, write_json_atomic, write_text_atomic
from tglassmlp.data.datamodule import (
    MDLabels,
    PropensityDataModule,
    StructureRecord,
)
from tglassmlp.statepoints import format_level, state_point_name
from tglassmlp.ensemble import (
    NoSelfConsistentNetworkError,
    StructureCache,
    load_run_members,
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


class TransferError(RuntimeError):
    """The transfer procedure cannot go on (the message says what and where)."""


class NoSelfConsistentTransferError(TransferError, NoSelfConsistentNetworkError):
    """No network of a transfer ensemble passes the self-consistency threshold and no fallback is configured
    (a TransferError, so transfer.py exits with the message; a NoSelfConsistentNetworkError of the selection)."""


# ================================================================================================ Table I
def _as_table(mapping: Mapping | None, what: str) -> dict[float, tuple[float, ...]]:
    """{T: (c, ...)} with rounded float keys and levels sorted high to low, from a config mapping."""
    out: dict[float, tuple[float, ...]] = {}
    for t, cs in dict(mapping or {}).items():
        try:
            temperature = round(float(t), 3)
            levels = [cs] if isinstance(cs, (int, float)) else [float(c) for c in cs]
        except (TypeError, ValueError):
            raise ValueError(f"transfer.{what}: expected {{T: [c, ...]}}, got {t!r}: {cs!r}") from None
        bad = [c for c in levels if not 0.0 < c < 1.0]
        if bad:
            raise ValueError(f"transfer.{what}[{t}]: levels <C_B> must lie in (0, 1), got {bad}")
        out[temperature] = tuple(sorted(set(out.get(temperature, ())) | set(levels), reverse=True))
    return dict(sorted(out.items(), reverse=True))


@dataclass(frozen=True)
class TransferTable:
    """The roles of the state points (paper Table I): {T: levels} for each role.

    Attributes:
        md: 'x', MD labels used for training.
        transferred: 't', labels made by step 1 on the structures at T (no MD used there).
        results: 'r', where predictions are wanted (scored by the selection, never trained on).
        held_out: 'h', MD labels kept out of training to measure the transfer.
    """

    md: dict[float, tuple[float, ...]]
    transferred: dict[float, tuple[float, ...]]
    results: dict[float, tuple[float, ...]] = field(default_factory=dict)
    held_out: dict[float, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, md, transferred, results=None, held_out=None) -> TransferTable:
        if not md:
            raise ValueError("transfer.md is empty: choose a preset (experiment=demo_transfer, paper_tmin021, "
                             "paper_tmin025) or give {T: [levels]} of the MD state points")
        table = cls(_as_table(md, "md"), _as_table(transferred, "transferred"), _as_table(results, "results"),
                    _as_table(held_out, "held_out"))
        table.validate()
        return table

    def points(self, role: str) -> list[tuple[float, float]]:
        """(T, c) pairs of one role ('md', 'transferred', 'results', 'held_out')."""
        return [(t, c) for t, cs in getattr(self, role).items() for c in cs]

    def validate(self) -> None:
        md, tr = set(self.points("md")), set(self.points("transferred"))
        both = sorted(md & tr)
        if both:
            raise ValueError(f"state points both 'x' (md) and 't' (transferred): {both}")
        leak = sorted(md & set(self.points("held_out")))
        if leak:
            raise ValueError(f"held-out state points {leak} are also MD training points ('x')")
        for t, c in sorted(tr):
            above = [tm for tm, cs in self.md.items() if c in cs and tm > t]
            if not above:
                raise ValueError(f"transferred point {state_point_name(t, c)}: no MD temperature above {t} has "
                                 f"the level {c}; step 1 has nothing to learn from")

    # --------------------------------------------------------------------------------------- step 1
    @property
    def step1_levels(self) -> list[float]:
        """Levels with transferred entries (one equi-time ensemble each), high to low."""
        return sorted({c for _, c in self.points("transferred")}, reverse=True)

    def equitime_state_points(self, level: float) -> dict[float, list[float]]:
        """{T: [c]}: the MD temperatures at this level (training data of its step-1 ensemble)."""
        return {t: [level] for t, cs in sorted(self.md.items()) if level in cs}

    def t_min(self, level: float | None = None) -> float:
        """Lowest MD temperature (at ``level``; None: over all levels)."""
        temps = [t for t, cs in self.md.items() if level is None or level in cs]
        return min(temps)

    def transfer_temperatures(self, level: float) -> list[float]:
        return sorted(t for t, cs in self.transferred.items() if level in cs)

    def selection_points(self, level: float | None = None) -> list[tuple[float, float]]:
        """(T, c) scored by the self-consistency test: 't' and 'r' points below T_min (of ``level``, at that
        level only; None: the step-2 selection, below the overall T_min, at every level)."""
        t_min = self.t_min(level)
        pts = set(self.points("transferred")) | set(self.points("results"))
        return sorted((t, c) for t, c in pts if t < t_min - 1e-9 and (level is None or c == level))

    # --------------------------------------------------------------------------------------- step 2
    @property
    def step2_state_points(self) -> dict[float, list[float]]:
        """{T: levels} of step 2: every 'x' and 't' point."""
        out: dict[float, set[float]] = {}
        for t, c in self.points("md") + self.points("transferred"):
            out.setdefault(t, set()).add(c)
        return {t: sorted(cs, reverse=True) for t, cs in sorted(out.items())}

    def to_markdown(self) -> str:
        """Table I in the paper's layout: rows <C_B> (high to low), columns T (low to high);
        x MD, t transferred, r results, h held-out MD."""
        roles = (("md", "x"), ("transferred", "t"), ("results", "r"), ("held_out", "h"))
        temps = sorted({t for role, _ in roles for t, _ in self.points(role)})
        levels = sorted({c for role, _ in roles for _, c in self.points(role)}, reverse=True)
        lines = ["| <C_B> \\ T | " + " | ".join(f"{t:g}" for t in temps) + " |",
                 "|---|" + "---|" * len(temps)]
        for c in levels:
            cells = []
            for t in temps:
                marks = "".join(m for role, m in roles if c in getattr(self, role).get(t, ()))
                cells.append(marks)
            lines.append(f"| {c:g} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


# ================================================================================================ labels
def _label_key(temperature: float, level: float, index: int) -> str:
    return f"{state_point_name(temperature, level)}__s{int(index):04d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TransferredLabels:
    """Labels made by step 1 (a :class:`~tglassmlp.data.datamodule.LabelSource`), read from one ``.npz``.

    File layout (:meth:`write`): for each state point and structure k, ``label__T<T>_c<c>__s<k>`` (N_0,)
    float32, the mean prediction of the selected networks for the structure's type-0 particles (in the
    shard's particle order), ``spread__...`` (N_0,) their std over networks, and ``meta`` (a JSON string:
    which networks made which state point).

    Args:
        path: the ``.npz`` file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._labels: dict[str, np.ndarray] | None = None
        self._meta: dict | None = None

    @staticmethod
    def write(path: str | os.PathLike, labels: Mapping[tuple[float, float], Mapping[int, np.ndarray]],
              spread: Mapping[tuple[float, float], Mapping[int, np.ndarray]] | None = None,
              meta: Mapping | None = None) -> Path:
        """Write ``{(T, c): {structure index: (N_0,) labels}}`` atomically (a reader never sees half a file)."""
        arrays: dict[str, np.ndarray] = {}
        for (t, c), per_structure in labels.items():
            for k, values in per_structure.items():
                values = np.asarray(values, dtype=np.float32)
                if values.ndim != 1 or not np.all(np.isfinite(values)):
                    raise ValueError(f"labels {state_point_name(t, c)} s{k}: need a finite (N_0,) array, "
                                     f"got shape {values.shape}")
                arrays["label__" + _label_key(t, c, k)] = values
                if spread is not None:
                    arrays["spread__" + _label_key(t, c, k)] = np.asarray(spread[(t, c)][k], dtype=np.float32)
        arrays["meta"] = np.array(json.dumps(dict(meta or {})))
        path = Path(path)
        save_npz_atomic(path, arrays)
        return path

    def _load(self) -> None:
        if self._labels is not None:
            return
        if not self.path.is_file():
            raise FileNotFoundError(f"transferred labels {self.path} do not exist (step 1 of the transfer makes "
                                    "them: python transfer.py ...)")
        with np.load(self.path, allow_pickle=False) as z:
            self._labels = {k[len("label__"):]: z[k] for k in z.files if k.startswith("label__")}
            self._spread = {k[len("spread__"):]: z[k] for k in z.files if k.startswith("spread__")}
            self._meta = json.loads(str(z["meta"])) if "meta" in z.files else {}

    @property
    def meta(self) -> dict:
        self._load()
        return dict(self._meta)

    @property
    def state_points(self) -> list[tuple[float, float]]:
        """(T, c) present in the file."""
        self._load()
        out = set()
        for key in self._labels:
            name = key.split("__")[0]  # T0.400_c0.90
            t, c = name.split("_c")
            out.add((round(float(t[1:]), 3), float(c)))
        return sorted(out)

    def get(self, temperature: float, level: float, index: int, spread: bool = False) -> np.ndarray | None:
        """(N_0,) labels (or spread) of structure ``index`` at (T, c); None when absent."""
        self._load()
        return (self._spread if spread else self._labels).get(_label_key(temperature, level, index))

    def labels(self, structures: Sequence[StructureRecord], temperature: float,
               levels: Sequence[float]) -> dict[float, tuple[list[np.ndarray], np.ndarray]]:
        """The LabelSource interface: levels with labels for every structure; t_star is NaN (no MD time)."""
        self._load()
        out = {}
        for c in levels:
            found = [self.get(temperature, c, s.index) for s in structures]
            if all(f is None for f in found):
                continue  # this source has nothing at (T, c): the data module warns and skips it
            for s, f in zip(structures, found):
                if f is None:
                    raise ValueError(f"{self.path}: no transferred labels for {s.path} at "
                                     f"{state_point_name(temperature, c)} (the file has other structures at this "
                                     "state point: was the dataset changed after step 1?)")
                if f.shape != (s.n_reference,):
                    raise ValueError(f"{self.path}: labels of {s.path} at {state_point_name(temperature, c)} have "
                                     f"shape {f.shape}, the structure has {s.n_reference} reference particles")
            out[float(c)] = ([f.astype(np.float64) for f in found], np.full(len(structures), np.nan))
        return out


class CompositeLabels:
    """MD labels where Table I has 'x', transferred labels elsewhere (a LabelSource for step 2).

    Args:
        transferred: the source of the non-MD labels (a :class:`TransferredLabels`).
        md_state_points: {T: [c]} that take MD labels. None: MD wherever every shard at T has MD and
            <C_B>(t) reaches c, transferred otherwise.
        md: the MD source (default :class:`~tglassmlp.data.datamodule.MDLabels`).

    With ``md_state_points`` given, MD propensities at other state points are never used, even where the
    shards have them: that keeps held-out MD (the demo's T = 0.4) out of training.
    """

    def __init__(self, transferred, md_state_points: Mapping | None = None, md=None):
        self.transferred = transferred
        self.md_state_points = None if md_state_points is None else _as_table(md_state_points, "md")
        self.md = md if md is not None else MDLabels()

    def labels(self, structures, temperature, levels):
        t = round(float(temperature), 3)
        if self.md_state_points is None:
            md_levels = list(levels) if all(s.propensity is not None for s in structures) else []
        else:
            md_levels = [c for c in levels if float(c) in self.md_state_points.get(t, ())]
        out = dict(self.md.labels(structures, temperature, md_levels)) if md_levels else {}
        rest = [c for c in levels if float(c) not in out]
        if rest:
            out.update(self.transferred.labels(structures, temperature, rest))
        return out


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
    for group, keys in _COSMETIC.items():
        if isinstance(keep.get(group), dict):
            keep[group] = {k: v for k, v in keep[group].items() if k not in keys}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ================================================================================================ evaluation
def per_structure_pearson(predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> np.ndarray:
    """(S,) Pearson correlation of the (N_0,) prediction and target of each of S structures
    (:func:`tglassmlp.model.module.pearson`, the project's one Pearson, per structure)."""
    from tglassmlp.metrics import pearson

    return np.array([pearson(p, t) for p, t in zip(predictions, targets)])


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
        comparison: None, or the settings of :func:`tglassmlp.analysis.transfer_comparison.compare_transfer`
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
        self._tracking = None
        self._client = None
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

        self._tracking = instantiate(cfg.logger)
        self._tracking.prepare()
        self._client = self._tracking.client

    def _set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self._tracking.run_id = run_id
        self._tracking.set_tags(tags)

    def _log_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        self._tracking.run_id = run_id
        self._tracking.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)})

    def _log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._tracking.run_id = run_id
        self._tracking.log_artifact(path, artifact_path)

    def _parent_run(self, existing: str | None, name: str, tags: Mapping[str, Any]) -> str:
        """An organising run (procedure / ensemble): reused when it exists, else created; marked RUNNING."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

        from tglassmlp.tracking import retry

        if existing is not None:
            try:
                self._client.get_run(existing)
                retry(lambda: self._client.update_run(existing, status="RUNNING"), "reopen run")
                return existing
            except Exception:  # deleted from the store: make a new one
                log.warning("run %s recorded in %s is gone from the store; creating a new one", existing,
                            self.state_path)
        tags = {str(k): str(v) for k, v in tags.items() if v is not None}
        tags[MLFLOW_RUN_NAME] = name
        run = retry(lambda: self._client.create_run(self._tracking.experiment_id, tags=tags, run_name=name),
                    "create run")
        return run.info.run_id

    def _end(self, run_id: str, status: str = "FINISHED") -> None:
        from tglassmlp.tracking import retry

        retry(lambda: self._client.set_terminated(run_id, status), "end run")

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
        st["procedure_run_id"] = self._parent_run(
            st.get("procedure_run_id"), f"transfer {self.transfer_id}",
            {"transfer.id": self.transfer_id, "transfer.role": "procedure", "study": cfg.get("study")})
        self.state.save()
        proc = st["procedure_run_id"]
        table_md = self.output_dir / "table.md"
        write_text_atomic(table_md, (
            "Table I of this procedure: x MD, t transferred (step 1), r results, h held-out MD\n\n"
            + self.table.to_markdown() + "\n"))
        self._log_artifact(proc, table_md)
        log.info("transfer %s (%s): Table I\n%s", self.transfer_id, self.output_dir, self.table.to_markdown())
        try:
            self._run_stages(cfg, proc)
        except BaseException as exc:
            self._end(proc, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
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
            self._end(proc, "FINISHED")
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
            from tglassmlp.analysis.transfer_comparison import compare_transfer

            self.comparison_result = compare_transfer(self, cfg, **self.comparison)
        self._log_artifact(proc, self.state_path)
        self._end(proc, "FINISHED")
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

        Every network is one :func:`tglassmlp.train.train` call; its run gets the transfer tags and the
        ensemble's run as parent. State is saved after each network, so an interruption loses at most one.
        """
        from tqdm.auto import tqdm

        from tglassmlp.train import train

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
        ens["parent_run_id"] = self._parent_run(ens.get("parent_run_id"), name,
                                                {**tags, "transfer.role": "ensemble", "mlflow.parentRunId": parent})
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
        entries = score_runs(self._client, [runs[s] for s in sorted(runs)], lambda temps: self.records(cfg, temps),
                             points, seeds=seeds)
        choice = rank_and_select(
            entries, self.threshold, self.fallback_top_k, name, setting="transfer.selection.fallback_top_k",
            remedy="Train more seeds (transfer.step1.seeds / transfer.step2.seeds), or accept the best-ranked "
                   "networks with transfer.selection.fallback_top_k=K; rerun to resume",
            error=NoSelfConsistentTransferError)
        tag_selection(self._tracking, entries, choice, self.threshold)
        result = {"transfer_id": self.transfer_id, "ensemble": name,
                  **selection_manifest(self._tracking, str((self.output_dir / name).resolve()), entries, choice,
                                       self.threshold, sorted({c for _, c in points}, reverse=True), points)}
        write_json_atomic(manifest, result)
        parent = ens["parent_run_id"]
        self._log_metrics(parent, {"selection/n_selected": len(choice["selected"]),
                                   "selection/best_score": entries[0]["score"] if entries else math.nan})
        self._log_artifact(parent, manifest)
        self._set_tags(parent, {"ensemble.note": choice["note"][:5000]})
        self._end(parent)
        ens["selection"] = str(manifest)
        self.state.save()
        log.info("%s: %s (manifest %s)", name, choice["note"], manifest)
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
            members = load_run_members(self._client, manifest["selected"])
            temps = self.table.transfer_temperatures(c)
            for t, recs in self.records(cfg, temps).items():
                preds = {r.index: np.stack([m.predict(r.descriptors, t, c) for m in members]) for r in recs}
                labels[(t, c)] = {k: p.mean(axis=0) for k, p in preds.items()}
                spread[(t, c)] = {k: p.std(axis=0) for k, p in preds.items()}
                meta["state_points"][state_point_name(t, c)] = {
                    "ensemble": name, "run_ids": manifest["selected"], "fallback": manifest["fallback"],
                    "structures": [r.index for r in recs]}
        TransferredLabels.write(self.labels_path, labels, spread, meta)
        sha = _sha256(self.labels_path)
        self.state.data["labels"]["step1"] = {"path": str(self.labels_path), "sha256": sha}
        self.state.save()
        self._log_artifact(self.state.data["procedure_run_id"], self.labels_path, "step1")
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
        if not self.labels_path.is_file() or _sha256(self.labels_path) != recorded.get("sha256"):
            raise TransferError(f"{self.labels_path} is missing or differs from the labels step 1 wrote "
                                f"(state {self.state_path}); delete 'step1' from its 'finished' list to redo them")
        ens_cfg = self.step2_config(cfg)
        runs = self.train_ensemble("step2", ens_cfg, self.step2_seeds, "2", proc,
                                   {"transfer.labels_sha256": recorded["sha256"][:16]})
        result = self.select("step2", runs, self.table.selection_points(None), cfg,
                             self.output_dir / "step2" / "ensemble.json")
        write_json_atomic(self.manifest_path, {**result, "final": True, "table": self.table.to_markdown(),
                                          "labels": str(self.labels_path)})
        self._log_artifact(proc, self.manifest_path)

    # --------------------------------------------------------------------------------------- held out
    def held_out_targets(self, cfg: DictConfig) -> dict[tuple[float, float], tuple[list, list[np.ndarray]]]:
        """{(T, c): (records, MD labels per record)} at the held-out points (MD labels as in training)."""
        out = {}
        for t, cs in self.table.held_out.items():
            recs = self.records(cfg, [t])[t]
            labelled = MDLabels().labels(recs, t, list(cs))
            for c in cs:
                if float(c) not in labelled:
                    log.warning("held-out %s: <C_B>(t) at T = %g does not reach %g; left out",
                                state_point_name(t, c), t, c)
                    continue
                out[(t, float(c))] = (recs, labelled[float(c)][0])
        return out

    def _evaluate_final(self, cfg: DictConfig, proc: str) -> dict:
        targets = self.held_out_targets(cfg)
        members = load_run_members(self._client, self.manifest["selected"])
        result = evaluate_members(members, targets)
        labels = TransferredLabels(self.labels_path)
        for (t, c), (recs, md) in targets.items():
            step1 = [labels.get(t, c, r.index) for r in recs]
            if all(x is not None for x in step1):
                result[state_point_name(t, c)]["step1_labels_pearson"] = float(np.mean(
                    per_structure_pearson(step1, md)))
        path = self.output_dir / "held_out.json"
        write_json_atomic(path, result)
        self._log_metrics(proc, {f"held_out/{k}/{m}": v for k, d in result.items() for m, v in d.items()
                                 if isinstance(v, float)})
        self._log_artifact(proc, path)
        return result


def evaluate_members(members: Sequence, targets: Mapping, input_state: Callable | None = None,
                     structures: Callable | None = None) -> dict[str, dict[str, Any]]:
    """Pearson of each network and of the ensemble mean against MD labels.

    Args:
        members: the networks (:class:`tglassmlp.predict.EnsembleMember`, e.g. from
            :func:`tglassmlp.ensemble.load_run_members`).
        targets: {(T, c): (records, MD labels (N_0,) per record)}.
        input_state: (T, c) -> the state point fed to the networks (default: (T, c) itself; GlassMLP-style
            transfer feeds the training state point).
        structures: (member, T) -> the structure indices to score it on (default: all).

    Returns:
        {state point name: {'pearson_networks' (mean over networks of their mean over structures),
        'pearson_networks_std', 'pearson_ensemble' (ensemble-mean prediction, mean over structures),
        'per_structure_ensemble' {index: r}, 'n_networks', 'n_structures'}}.
    """
    out = {}
    for (t, c), (recs, md) in targets.items():
        t_in, c_in = input_state(t, c) if input_state else (t, c)
        per_net, preds = [], {}
        for m in members:
            keep = set(structures(m, t)) if structures else {r.index for r in recs}
            rs = [(r, y) for r, y in zip(recs, md) if r.index in keep]
            p = [m.predict(r.descriptors, t_in, c_in) for r, _ in rs]
            per_net.append(float(np.mean(per_structure_pearson(p, [y for _, y in rs]))))
            for (r, y), pr in zip(rs, p):
                preds.setdefault(r.index, (y, []))[1].append(pr)
        ens = {k: float(per_structure_pearson([np.mean(ps, axis=0)], [y])[0]) for k, (y, ps) in sorted(preds.items())}
        out[state_point_name(t, c)] = {"pearson_networks": float(np.mean(per_net)),
                                       "pearson_networks_std": float(np.std(per_net)),
                                       "pearson_ensemble": float(np.mean(list(ens.values()))),
                                       "per_structure_ensemble": {str(k): v for k, v in ens.items()},
                                       "n_networks": len(members), "n_structures": len(ens)}
    return out

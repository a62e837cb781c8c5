"""LightningModule of tGlassMLP: the paper's staged Adam schedule and per-state-point evaluation.

Training (paper App. B, Table II): the epochs are split into stages (``conf/schedule/*.yaml``, read with
:func:`~tglassmlp.model.loss.training_stages`); at the start of every epoch the module looks up the stage of
that epoch and sets the Adam learning rate and the loss kind ('mse' = :class:`PropensityMSELoss`,
'glassmlp' = the configured :class:`GlassMLPLoss`). One Adam optimiser is kept across stages (its moment
estimates carry over; only the learning rate changes).

Evaluation, per state point (T, c) over the evaluated structures s = 1..S with N_0 reference particles each:

    pearson          mean over s of Pearson(prediction_s, target_s)        (particles of one structure)
    mae              mean over s and i of |prediction - target|
    chi4_true/pred   N_0 [<Cbar^2> - <Cbar>^2],  Cbar_s = mean_i of target / prediction   (paper Eq. (9),
                     tglassmlp.observables.four_point.four_point_susceptibility)
    self_consistency |mean over s of mean_i prediction - c|                   (paper Sec. II E)

logged as ``<split>/T0.600_c0.50/<metric>`` and averaged over state points as ``<split>/avg/<metric>``.
chi_4 over few structures is a noisy estimate; it is reported for comparison between prediction and MD on the
same structures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from tglassmlp.metrics import pearson  # noqa: F401  (also importable from here)
from tglassmlp.model.loss import GlassMLPLoss, PropensityMSELoss, TrainingStage, training_stages
from tglassmlp.statepoints import state_point_name

log = logging.getLogger(__name__)

METRICS = ("pearson", "mae", "chi4_true", "chi4_pred", "self_consistency")


def _chi4(values: Sequence[np.ndarray]) -> float:
    """chi_4 of Eq. (9) over the structures' (N_0,) arrays (tglassmlp.observables.four_point); NaN, not an
    error, when an array holds NaN or inf (a diverging network must not stop the evaluation)."""
    from tglassmlp.observables.four_point import four_point_susceptibility

    if not all(np.all(np.isfinite(v)) for v in values):
        return float("nan")
    return float(four_point_susceptibility(list(values))[0])


def state_point_metrics(predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                        level: float) -> dict[str, float]:
    """Metrics of one state point (module docstring) from S structures' (N_0,) predictions and targets."""
    if len(predictions) != len(targets) or not predictions:
        raise ValueError(f"need as many predictions as targets (>= 1), got {len(predictions)}, {len(targets)}")
    pred_means = np.array([np.mean(p) for p in predictions])
    return {
        "pearson": float(np.nanmean([pearson(p, t) for p, t in zip(predictions, targets)])),
        "mae": float(np.mean(np.abs(np.concatenate(predictions) - np.concatenate(targets)))),
        "chi4_true": _chi4(targets),
        "chi4_pred": _chi4(predictions),
        "self_consistency": abs(float(pred_means.mean()) - float(level)),
    }


@dataclass
class EvalRecord:
    """One evaluated sample: state point, structure (index into the data module's list), arrays (N_0,)."""

    temperature: float
    level: float
    structure: int
    prediction: np.ndarray
    target: np.ndarray


def summarise(records: Sequence[EvalRecord], prefix: str) -> dict[str, float]:
    """``{prefix}/<state point>/<metric>`` and ``{prefix}/avg/<metric>`` from evaluated samples."""
    groups: dict[tuple[float, float], list[EvalRecord]] = {}
    for r in records:
        groups.setdefault((r.temperature, r.level), []).append(r)
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {m: [] for m in METRICS}
    for (t, c), recs in sorted(groups.items()):
        values = state_point_metrics([r.prediction for r in recs], [r.target for r in recs], c)
        name = state_point_name(t, c)
        for m, v in values.items():
            out[f"{prefix}/{name}/{m}"] = v
            per_metric[m].append(v)
    for m, vs in per_metric.items():
        if vs:
            out[f"{prefix}/avg/{m}"] = float(np.nanmean(vs))
    return out


class TGlassMLPModule(pl.LightningModule):
    """Train a :class:`~tglassmlp.model.network.TGlassMLP` with the staged schedule; evaluate per state point.

    Args:
        network: the TGlassMLP (its ``n_descriptors`` must match the data's standardised columns).
        loss: the phase-2 loss (GlassMLPLoss); the 'mse' stages use :class:`PropensityMSELoss`.
        schedule: a schedule mapping (``conf/schedule/paper.yaml``) or a list of :class:`TrainingStage`.
        label_std: std of the training labels (L1 of the loss); the data module's ``label_std``.
        descriptor_scaler: ``DescriptorScaler.to_dict()`` of the training data, stored in checkpoints so that a
            checkpoint alone can standardise new structures.
        compile: run forward pass and loss of the training steps through ``torch.compile`` (fuses the attention
            layer's elementwise operations and softmax; benchmarks/training.py measures the gain). Costs
            ~10-20 s of compilation per loss kind and needs a C++ compiler; weights and checkpoints are
            unchanged (the compiled function wraps the same network). Not used when the fused kernel runs.
        fused: train with :class:`~tglassmlp.model.fused.FusedTrainingStep` (forward, loss, gradient and Adam of a
            sample in one numba kernel; ~3x fewer CPU seconds per sample than the torch step). 'auto' (default):
            when the network, loss, optimiser and device are ones it implements, else the torch step (logged);
            True: required (an error says what is unsupported); False: the torch step.
        fused_threads: threads of the fused kernel; None: torch's intra-op thread count. Default 1: a parallel
            region waits for all its threads, and on a machine whose cores also run other work a step then
            took ~85 ms instead of ~0.9 ms (measured with one core busy); use 2 only on otherwise idle cores.

    Batches are the dicts of :class:`~tglassmlp.training.datamodule.PropensityDataset` (batches of one sample).
    After ``trainer.test``: ``test_records`` holds every evaluated sample (for figures), ``test_metrics`` the
    summary.
    """

    def __init__(self, network: nn.Module, loss: GlassMLPLoss, schedule: Mapping | Sequence[TrainingStage],
                 label_std: float | None = None, descriptor_scaler: Mapping | None = None,
                 compile: bool = False, fused: bool | str = "auto", fused_threads: int | None = 1):
        super().__init__()
        if fused not in (True, False, "auto"):
            raise ValueError(f"fused must be true, false or 'auto', got {fused!r}")
        self.fused = fused
        if fused_threads is not None and (isinstance(fused_threads, bool) or int(fused_threads) < 1):
            raise ValueError(f"fused_threads must be a positive integer or null, got {fused_threads!r}")
        self.fused_threads = None if fused_threads is None else int(fused_threads)
        self._fused = None  # the FusedTrainingStep while fitting with the fused kernel
        #: what the last fit's training steps ran on: 'fused' (numba kernel) or 'torch' (None before a fit)
        self.step_backend: str | None = None
        # manual optimisation: several samples per Lightning step, each its own Adam step (training_step)
        self.automatic_optimization = False
        self.compile = bool(compile)
        self._compiled: dict[str, object] = {}  # loss kind -> compiled (batch tensors -> loss) function
        self.network = network
        self.losses = nn.ModuleDict({"mse": PropensityMSELoss(), "glassmlp": loss})
        self.stages = (list(schedule) if not isinstance(schedule, Mapping) else training_stages(schedule))
        if not self.stages or self.total_epochs < 1:
            raise ValueError("the schedule has no epochs")
        self.label_std = None if label_std is None else float(label_std)
        self.descriptor_scaler = None if descriptor_scaler is None else dict(descriptor_scaler)
        self._records: list[EvalRecord] = []
        self.test_records: list[EvalRecord] = []
        self.test_metrics: dict[str, float] = {}
        self._train_sums: dict[str, float] = {}
        self._train_count = 0
        # (structure, T, c) -> C_k of the labels; the structure index is the data module's, stable for one fit
        self._target_correlation: dict[tuple[int, float, float], torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------- schedule
    @property
    def total_epochs(self) -> int:
        return sum(s.epochs for s in self.stages)

    def stage_at(self, epoch: int) -> TrainingStage:
        """The stage that owns ``epoch`` (0-based); epochs past the schedule stay in the last stage."""
        end = 0
        for stage in self.stages:
            end += stage.epochs
            if epoch < end:
                return stage
        return self.stages[-1]

    @property
    def stage(self) -> TrainingStage:
        return self.stage_at(self.current_epoch)

    def configure_optimizers(self):
        # the fused kernel saves ~0.8 ms of the ~11 ms per sample on one CPU thread (benchmarks/training.py)
        return torch.optim.Adam(self.network.parameters(), lr=self.stages[0].lr, fused=True)

    def on_train_epoch_start(self) -> None:
        stage = self.stage
        for opt in self.trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = stage.lr
        self._train_sums, self._train_count = {}, 0
        if self.current_epoch == 0 or self.stage_at(self.current_epoch - 1) is not stage:
            log.info("epoch %d: stage %s (%s loss, lr %.1e)", self.current_epoch, stage.name or "?", stage.loss,
                     stage.lr)

    # ------------------------------------------------------------------------------------------- steps
    def forward(self, descriptors, temperature, level):
        """(B, N_0, F), (B,), (B,) -> (B, N_0) predicted propensity (see TGlassMLP.forward)."""
        return self.network(descriptors, temperature, level)

    def _loss(self, batch, pred, kind: str):
        # C_k of the labels is fixed per sample: computed once (a third of the full loss's cost per step)
        return self.losses[kind](pred, batch["target"], neighbour_weights=batch["neighbour_weights"],
                                 label_std=self.label_std, target_correlation=self._label_correlation(batch, kind))

    def _forward_and_loss(self, batch, kind: str):
        """(total, terms) of one training batch; through torch.compile when ``compile`` is set."""
        if not self.compile:
            pred = self(batch["descriptors"], batch["temperature"], batch["level"])
            return self._loss(batch, pred, kind)
        c_true = self._label_correlation(batch, kind)
        if kind not in self._compiled:
            loss, network, label_std = self.losses[kind], self.network, self.label_std

            def step(descriptors, temperature, level, target, weights, c_true):
                pred = network(descriptors, temperature, level)
                return loss(pred, target, neighbour_weights=weights, label_std=label_std, target_correlation=c_true)

            self._compiled[kind] = torch.compile(step, dynamic=False)
        return self._compiled[kind](batch["descriptors"], batch["temperature"], batch["level"], batch["target"],
                                    batch["neighbour_weights"], c_true)

    def _label_correlation(self, batch, kind: str) -> torch.Tensor | None:
        """C_k of the labels for the full loss, computed once per (structure, T, c) and cached."""
        loss = self.losses[kind]
        if not isinstance(loss, GlassMLPLoss):
            return None
        if batch["target"].shape[0] != 1:
            with torch.no_grad():
                return loss.target_correlation(batch["target"], batch["neighbour_weights"])
        key = (int(batch["structure"][0]), float(batch["temperature"][0]), float(batch["level"][0]))
        c_true = self._target_correlation.get(key)
        if c_true is None:
            with torch.no_grad():
                c_true = self._target_correlation[key] = loss.target_correlation(batch["target"],
                                                                                   batch["neighbour_weights"])
        return c_true

    def _start_fused(self) -> None:
        """Decide between the fused kernel and the torch step for this fit (``fused`` argument)."""
        self._fused = None
        self.step_backend = "torch"
        if self.fused is False:
            return
        from tglassmlp.model.fused import FusedTrainingStep, FusedUnsupportedError, set_kernel_threads

        optimizer = self.optimizers()
        try:
            fused = FusedTrainingStep(self.network, self.losses["glassmlp"], self.label_std)
            fused.check_optimizer(getattr(optimizer, "optimizer", optimizer))
        except FusedUnsupportedError as exc:
            if self.fused is True:
                raise FusedUnsupportedError(f"model.fused=true: {exc}") from None
            log.info("training with the torch step (the fused kernel does not apply: %s)", exc)
            return
        threads = set_kernel_threads(self.fused_threads or torch.get_num_threads())
        log.info("training with the fused numba kernel (tglassmlp.model.fused), %d thread(s)", threads)
        self._fused = fused
        self.step_backend = "fused"

    def _fused_steps(self, samples, stage) -> None:
        """The samples' optimiser steps in the fused kernel; parameters and Adam state go back to torch after."""
        optimizer = self.optimizers()
        raw = getattr(optimizer, "optimizer", optimizer)
        fused = self._fused
        fused.pull(raw)
        try:
            for sample in samples:
                terms = fused.step(sample, stage.loss, self._label_correlation(sample, stage.loss))
                self._add_to_epoch_means(stage, terms)
                # Lightning counts optimiser steps (trainer.global_step) in LightningOptimizer.step's hooks
                for hook in ("_on_before_step", "_on_after_step"):
                    getattr(optimizer, hook, lambda: None)()
        finally:
            fused.push(raw)

    def training_step(self, batch, batch_idx):
        """One optimiser step per sample (the paper's batch is one configuration); ``batch`` is one sample or a
        list of them (``samples_per_batch`` of the data module), processed in order: a list of K samples
        gives the same updates as K steps of one sample and pays Lightning's fixed cost per step once."""
        stage = self.stage
        samples = batch if isinstance(batch, list) else [batch]
        if self._fused is not None:
            return self._fused_steps(samples, stage)
        optimizer = self.optimizers()
        for sample in samples:
            total, terms = self._forward_and_loss(sample, stage.loss)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(total)
            optimizer.step()
            self._add_to_epoch_means(stage, {**terms, "loss": total.detach()})

    def _add_to_epoch_means(self, stage, terms) -> None:
        """Sum one sample's loss terms ({'loss': total, name: value}) into this epoch's means.

        Per-epoch means only, logged once in on_train_epoch_end: per-step rows would flood the tracking store,
        and Lightning's per-call bookkeeping costs about as much as a step."""
        sums = self._train_sums
        for name, value in terms.items():
            key = "train/loss" if name == "loss" else f"train/{stage.loss}/{name}"
            sums[key] = sums.get(key, 0.0) + float(value)
        self._train_count += 1

    def on_train_epoch_end(self) -> None:
        if self._train_count:
            means = {k: v / self._train_count for k, v in self._train_sums.items()}
            self.log("train/loss", means.pop("train/loss"), prog_bar=True, batch_size=1)
            self.log_dict(means, batch_size=1)
            self.log("train/lr", self.stage.lr, batch_size=1)

    def _evaluate(self, batch) -> torch.Tensor:
        pred = self(batch["descriptors"], batch["temperature"], batch["level"])
        for b in range(pred.shape[0]):
            # the batch carries float32 state points (0.8 -> 0.80000001): round back to the config's values
            self._records.append(EvalRecord(round(float(batch["temperature"][b]), 6),
                                            round(float(batch["level"][b]), 6),
                                            int(batch["structure"][b]), pred[b].detach().cpu().numpy(),
                                            batch["target"][b].detach().cpu().numpy()))
        return pred

    def validation_step(self, batch, batch_idx):
        pred = self._evaluate(batch)
        total, _ = self._loss(batch, pred, self.stage.loss)
        self.log("val/loss", total, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch)

    def on_fit_start(self) -> None:
        self._target_correlation = {}  # keyed by the data module's structure indices: valid for one fit only
        self._start_fused()

    def on_fit_end(self) -> None:
        self._fused = None

    def on_test_start(self) -> None:
        self._target_correlation = {}

    def on_validation_epoch_start(self) -> None:
        self._records = []

    def on_test_epoch_start(self) -> None:
        self._records = []

    def _round_off(self, prefix: str) -> dict[str, float]:
        metrics = summarise(self._records, prefix)
        finite = {k: v for k, v in metrics.items() if np.isfinite(v)}
        if finite:
            self.log_dict(finite, batch_size=1)
        return metrics

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._round_off("val")
        self._records = []

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._round_off("test")
        self.test_records, self._records = self._records, []

    # ------------------------------------------------------------------------------------------- persistence
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain lists (no numpy objects): a checkpoint stays loadable with torch.load(weights_only=True).
        if self.descriptor_scaler is not None:
            checkpoint["descriptor_scaler"] = {k: np.asarray(v).tolist() for k, v in self.descriptor_scaler.items()}
        checkpoint["label_std"] = self.label_std

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.descriptor_scaler = checkpoint.get("descriptor_scaler", self.descriptor_scaler)
        self.label_std = checkpoint.get("label_std", self.label_std)

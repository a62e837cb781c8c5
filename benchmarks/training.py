"""Training throughput of ONE tGlassMLP network on paper-sized synthetic data, projected to the full schedule.

A sample (= one optimiser step, batch size 1) is the 600 type-0 particles of one structure at one state point.
Paper-sized data: 150 training structures x 50 state points = 7500 samples per epoch; Table II = 85 epochs
with the MSE loss + 50 epochs with the full GlassMLP loss (dense (K=3, 600, 600) neighbour weights).
Target (issue): one network's full schedule in under 30 minutes on 2 CPU cores.

The network, losses, optimiser, module and Trainer are the training's own: the train config
(``conf/train.yaml`` composed with Hydra) is instantiated as :func:`tglassmlp.training.build` does, the module is
:class:`~tglassmlp.model.module.TGlassMLPModule` and the items come from
:class:`~tglassmlp.training.datamodule.PropensityDataset` through the same DataLoader (batch size 1, shuffled).
Only the shards are skipped: StructureRecord / Sample objects are built in memory from synthetic arrays
(descriptors (600, 172) from a few smooth latent fields + noise, standardised; positions uniform in the
paper's box L = 32.8962; labels in [0, 1] whose mean follows the level c).

Timed variants, for each loss phase ('mse', 'glassmlp') and 1 and 2 torch threads:

* ``lightning``  -- Trainer.fit of the module (the trainer config minus logger, callbacks and progress bar):
                    what train.py pays per step, DataLoader and Lightning bookkeeping included;
* ``loop+loader``-- plain loop (forward, loss, backward, Adam step) over the same DataLoader;
* ``loop``       -- the same loop over batches collated in advance: the network + loss + optimiser floor;
* ``lightning x16 fused`` -- what train.py does by default: 16 samples per Lightning step, each one step of the
                    fused numba kernel (model.fused=auto, :mod:`tglassmlp.model.fused`); the ``lightning`` rows
                    without 'fused' are the torch step (model.fused=false);
* ``fused loop`` -- the fused kernel alone over batches collated in advance (its floor).

plus ``validate`` (Trainer.validate, forward + loss + per-sample records) for the validation passes that
train.py runs every ``check_val_every_n_epoch`` epochs, a per-part breakdown of the loop (data, forward,
loss, backward, optimiser) and a torch.profiler table of the full-loss step.

Rates are wall-clock samples/s and, alongside, CPU seconds per sample of this process (``time.process_time``,
summed over threads): on a loaded machine the CPU time per sample at 1 thread is close to what an idle core
would take, the wall time is not. The load average is recorded before and after every measurement.

    .venv/bin/python benchmarks/training.py            # ~3-6 minutes on a loaded 2-core machine
    .venv/bin/python benchmarks/training.py --quick    # fewer structures and steps (~1 minute)

Writes benchmarks/results/training.{md,json} (``--out-dir`` to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine_info as _machine_info
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pytorch_lightning as pl  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from tglassmlp.training.datamodule import PropensityDataset, Sample, StructureRecord  # noqa: E402
from tglassmlp.model.loss import TrainingStage  # noqa: E402
from tglassmlp.paths import config_dir  # noqa: E402
from tglassmlp.tracking import git_commit as _git_commit  # noqa: E402
from tglassmlp.training.job import call_with_objects  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

# paper sizes (facts sec. 1, App. B)
BOX = 32.8962
N0 = 600
N_FEATURES = 172
N_TRAIN_STRUCTURES = 150
# Final training of Table I: 5 temperatures x ~10 levels (44 'x'/'t' entries); the issue says 50
TEMPERATURES = (0.21, 0.23, 0.25, 0.30, 0.40)
LEVELS = (0.99, 0.94, 0.90, 0.85, 0.80, 0.75, 0.65, 0.50, 0.25, 0.15)
# Table II
EPOCHS = {"mse": 85, "glassmlp": 50}
TARGET_S = 30 * 60
# samples per Lightning step in train.py (conf/data/demo.yaml samples_per_batch): each is still one Adam step
PER_STEP = 16
# validation structures when projecting the validation passes: 150 / (150 + 38) = the default split 0.8
N_TEST_STRUCTURES = 38
SEED = 1234


# ----------------------------------------------------------------------------------------- helpers
def machine_info() -> dict:
    return _machine_info(torch=torch.__version__, pytorch_lightning=pl.__version__, numpy=np.__version__,
                         mkldnn=bool(torch.backends.mkldnn.is_available()), git_commit=git_commit())


def git_commit():
    """Short HEAD hash (with '+dirty' when the work tree has uncommitted changes): tglassmlp.tracking's."""
    head, dirty = _git_commit(ROOT)
    return None if head == "unknown" else head[:7] + ("+dirty" if dirty else "")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def compose_train_config(overrides=()):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


# ----------------------------------------------------------------------------------------- synthetic data
def smooth_fields(positions: np.ndarray, n_fields: int, rng: np.random.Generator, n_modes: int = 6) -> np.ndarray:
    """(N, n_fields) periodic random fields: sums of a few plane waves with wavelengths ~4-16 sigma."""
    out = np.zeros((len(positions), n_fields))
    for f in range(n_fields):
        for _ in range(n_modes):
            k = rng.integers(-4, 5, size=2)
            if not k.any():
                k[0] = 1
            phase = rng.uniform(0, 2 * np.pi)
            out[:, f] += np.cos(2 * np.pi * positions @ k / BOX + phase)
    return out / np.sqrt(n_modes / 2)


def make_structures(n_structures: int, rng: np.random.Generator, n_latent: int = 8):
    """StructureRecords with standardised features (600, 172), positions (600, 2) in the paper's box, and
    the latent field that drives the labels."""
    mixing = rng.normal(size=(n_latent, N_FEATURES)) / np.sqrt(n_latent)
    records, latents = [], []
    for k in range(n_structures):
        pos = rng.uniform(0, BOX, size=(N0, 2))
        z = smooth_fields(pos, n_latent, rng)
        desc = z @ mixing + 0.5 * rng.normal(size=(N0, N_FEATURES))
        rec = StructureRecord(temperature=0.0, index=k, path=Path(f"synthetic/s{k:04d}"), box=BOX,
                              reference=np.ones(N0, bool), descriptors=desc, positions=pos)
        records.append(rec)
        latents.append(z[:, 0])
    # standardise over all training particles, as the data module's scaler does
    allx = np.concatenate([r.descriptors for r in records])
    mean, std = allx.mean(0), allx.std(0)
    for r in records:
        r.features = ((r.descriptors - mean) / std).astype(np.float32)
    return records, latents


def make_samples(latents, state_points) -> list[Sample]:
    """Labels in [0, 1]: sigmoid(logit(c) + g(T) z), mean close to c, sharper at low T."""
    samples = []
    for s, z in enumerate(latents):
        for t, c in state_points:
            logit = math.log(c / (1 - c)) + (0.5 + 0.1 / t) * z
            samples.append(Sample(s, t, c, 1.0 / (1.0 + np.exp(-logit))))
    return samples


# ----------------------------------------------------------------------------------------- model
def build_module(cfg, kind: str, label_std: float, training_state_points, compile: bool = False,
                 fused: bool = False):
    """Network, loss and module exactly as tglassmlp.training.build makes them; a one-stage schedule of ``kind``
    at the paper's learning rate of that phase. ``fused``: the numba kernel (train.py's default, model.fused=auto)
    instead of the torch step."""
    network = instantiate(cfg.model.network, n_descriptors=N_FEATURES)
    loss = instantiate(cfg.loss, label_std=label_std)
    if cfg.get("normalize_state_features", True):
        t, c = zip(*training_state_points)
        network.set_state_normalization(list(t), list(c))
    lr = {"mse": 1e-3, "glassmlp": 4e-5}[kind]
    schedule = {"stages": [{"name": kind, "epochs": 1, "lr": lr, "loss": kind}]}
    module_cfg = OmegaConf.merge(module_node(cfg.model), {"compile": bool(compile), "fused": bool(fused),
                                              "fused_threads": torch.get_num_threads()})
    return call_with_objects(module_cfg, network=network, loss=loss, schedule=schedule, label_std=label_std)


class BatchClock(pl.Callback):
    """Wall and CPU time stamps at the end of every training / validation batch."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def _stamp(self):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def on_train_batch_end(self, *args, **kwargs):
        self._stamp()

    def on_validation_batch_end(self, *args, **kwargs):
        self._stamp()


def rate(wall, cpu, warmup: int) -> dict:
    """samples/s and CPU ms per sample from stamps at batch ends (intervals after ``warmup`` batches)."""
    w, c = np.asarray(wall[warmup:]), np.asarray(cpu[warmup:])
    n = len(w) - 1
    if n < 1:
        raise RuntimeError("too few steps timed")
    dw, dc = w[-1] - w[0], c[-1] - c[0]
    per = np.diff(w)
    return {"steps": int(n), "samples_per_s": n / dw, "wall_ms_per_sample": 1e3 * dw / n,
            "cpu_ms_per_sample": 1e3 * dc / n, "median_wall_ms": 1e3 * float(np.median(per)),
            "p90_wall_ms": 1e3 * float(np.percentile(per, 90))}


def trainer_for(cfg, n_batches: int, clock, run_dir, validate=False):
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    tcfg.update(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                enable_checkpointing=False, default_root_dir=str(run_dir), num_sanity_val_steps=0)
    tcfg["limit_val_batches" if validate else "limit_train_batches"] = n_batches
    tcfg.pop("_target_")
    return pl.Trainer(callbacks=[clock], **tcfg)


# ----------------------------------------------------------------------------------------- measurements
def time_lightning(cfg, kind, loader, steps, warmup, run_dir, compile=False, per_step=1, fused=False):
    """Trainer.fit; ``per_step`` samples per Lightning step (lists from ``loader``), rates per sample."""
    module = build_module(cfg, kind, BENCH["label_std"], BENCH["state_points"], compile=compile, fused=fused)
    clock = BatchClock()
    n_batches = -(-(warmup + steps) // per_step)
    trainer = trainer_for(cfg, n_batches, clock, run_dir)
    trainer.fit(module, train_dataloaders=loader)
    r = rate(clock.wall, clock.cpu, max(1, warmup // per_step))
    if per_step != 1:
        r.update(samples_per_s=r["samples_per_s"] * per_step, wall_ms_per_sample=r["wall_ms_per_sample"] / per_step,
                 cpu_ms_per_sample=r["cpu_ms_per_sample"] / per_step, median_wall_ms=r["median_wall_ms"] / per_step,
                 p90_wall_ms=r["p90_wall_ms"] / per_step, samples_per_step=per_step)
    return r


def time_validate(cfg, kind, loader, steps, warmup, run_dir):
    module = build_module(cfg, kind, BENCH["label_std"], BENCH["state_points"])
    clock = BatchClock()
    trainer = trainer_for(cfg, warmup + steps, clock, run_dir, validate=True)
    trainer.validate(module, dataloaders=loader, verbose=False)
    return rate(clock.wall, clock.cpu, warmup)


def _step(module, opt, batch, kind):
    pred = module(batch["descriptors"], batch["temperature"], batch["level"])
    total, _ = module._loss(batch, pred, kind)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


def time_loop(cfg, kind, batches, steps, warmup, optimizer=None, samples_per_batch=1):
    """Plain loop over an iterable ``batches`` (a DataLoader, or a list of collated batches). ``optimizer``:
    keyword arguments of a replacement torch.optim.Adam (what-if rows); rates are per sample."""
    module = build_module(cfg, kind, BENCH["label_std"], BENCH["state_points"])
    module.train()
    opt = module.configure_optimizers()
    if optimizer is not None:
        opt = torch.optim.Adam(module.network.parameters(), lr=module.stages[0].lr, **optimizer)
    wall, cpu = [], []
    done = 0
    while done < warmup + steps + 1:
        for batch in batches:
            _step(module, opt, batch, kind)
            wall.append(time.perf_counter())
            cpu.append(time.process_time())
            done += 1
            if done >= warmup + steps + 1:
                break
    r = rate(wall, cpu, warmup)
    if samples_per_batch != 1:
        b = samples_per_batch
        r.update(samples_per_s=r["samples_per_s"] * b, wall_ms_per_sample=r["wall_ms_per_sample"] / b,
                 cpu_ms_per_sample=r["cpu_ms_per_sample"] / b, median_wall_ms=r["median_wall_ms"] / b,
                 p90_wall_ms=r["p90_wall_ms"] / b, samples_per_step=b)
    return r


def time_fused_loop(cfg, kind, batches, steps, warmup):
    """The fused kernel alone (tglassmlp.model.fused) over pre-collated batches: its floor per sample."""
    from tglassmlp.model.fused import FusedTrainingStep, set_kernel_threads

    module = build_module(cfg, kind, BENCH["label_std"], BENCH["state_points"])
    opt = module.configure_optimizers()
    set_kernel_threads(torch.get_num_threads())
    fused = FusedTrainingStep(module.network, module.losses["glassmlp"], module.label_std)
    fused.pull(opt)
    wall, cpu = [], []
    for i in range(warmup + steps + 1):
        b = batches[i % len(batches)]
        fused.step(b, kind, module._label_correlation(b, kind))
        wall.append(time.perf_counter())
        cpu.append(time.process_time())
    fused.push(opt)
    return rate(wall, cpu, warmup)


class EpochClock(pl.Callback):
    """Wall and CPU time at the end of every training epoch and the total of validation passes."""

    def __init__(self):
        self.epochs, self.validation_s = [], 0.0

    def on_train_epoch_end(self, trainer, module):
        self.epochs.append((time.perf_counter(), time.process_time(), self.validation_s))

    def on_validation_epoch_start(self, trainer, module):
        self._v = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module):
        self.validation_s += time.perf_counter() - self._v


def run_full_schedule(cfg, train_ds, test_ds, run_dir, fused_threads=1) -> dict:
    """Trainer.fit of ONE network over the whole Table II schedule (conf/schedule/paper.yaml: 85 MSE + 50
    full-loss epochs) on the paper-sized synthetic data, validation every check_val_every_n_epoch epochs on the
    test structures, as train.py runs it (module config from conf/model/tglassmlp.yaml; logger and checkpoints off)."""
    network = instantiate(cfg.model.network, n_descriptors=N_FEATURES)
    loss = instantiate(cfg.loss, label_std=BENCH["label_std"])
    t, c = zip(*BENCH["state_points"])
    network.set_state_normalization(list(t), list(c))
    module_cfg = OmegaConf.merge(module_node(cfg.model), {"fused_threads": fused_threads})
    module = call_with_objects(module_cfg, network=network, loss=loss,
                               schedule=OmegaConf.to_container(cfg.schedule, resolve=True), label_std=BENCH["label_std"])
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=PER_STEP, shuffle=True, collate_fn=list)
    val_loader = torch.utils.data.DataLoader(test_ds, batch_size=None, shuffle=False)
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    tcfg.pop("_target_")
    tcfg.update(max_epochs=module.total_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                enable_checkpointing=False, default_root_dir=str(run_dir))
    clock = EpochClock()
    trainer = pl.Trainer(callbacks=[clock], **tcfg)
    w0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    # training time per epoch: the interval between epoch ends minus the validation passes inside it
    per_epoch = np.diff([w0] + [e[0] for e in clock.epochs]) - np.diff([0.0] + [e[2] for e in clock.epochs])
    kinds = [module.stage_at(e).loss for e in range(len(per_epoch))]
    return {"epochs": len(per_epoch), "samples_per_epoch": len(train_ds), "validation_samples": len(test_ds),
            "wall_s": wall, "wall_min": wall / 60, "cpu_s": cpu, "validation_wall_s": clock.validation_s,
            "fused_threads": fused_threads, "step_backend": module.step_backend,
            "mean_epoch_s": {k: float(np.mean([p for p, q in zip(per_epoch, kinds) if q == k])) for k in set(kinds)},
            "ms_per_sample": {k: 1e3 * float(np.mean([p for p, q in zip(per_epoch, kinds) if q == k])) / len(train_ds)
                              for k in set(kinds)},
            "global_step": int(trainer.global_step), "meets_30_min": bool(wall < TARGET_S),
            "final_train_loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
            "final_val_pearson": float(trainer.callback_metrics.get("val/avg/pearson", float("nan")))}


def stack(items: list[dict]) -> dict:
    """Several batches of one concatenated into one batch of len(items) samples."""
    return {k: torch.cat([it[k] for it in items]) for k in items[0]}


def whatifs(cfg, ds, steps, warmup, batch_sizes=(4, 16)) -> list[dict]:
    """Candidate fixes measured in the plain loop at 1 thread (NOT what train.py does): Adam with
    foreach / fused kernels, and several samples stacked into one optimiser step (a different schedule:
    the paper's batch is one configuration)."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for kind in ("mse", "glassmlp"):
        single = [ds[i] for i in torch.randperm(len(ds), generator=gen)[:64].tolist()]
        for name, opt in (("adam foreach", {"foreach": True}), ("adam fused", {"fused": True})):
            before = load()
            try:
                r = time_loop(cfg, kind, single, steps, warmup, optimizer=opt)
            except (RuntimeError, TypeError) as exc:
                out.append({"phase": kind, "what": name, "error": str(exc)})
                continue
            r.update(phase=kind, what=name, load_before=before, load_after=load())
            out.append(r)
        for b in batch_sizes:
            batches = [stack([ds[i] for i in torch.randperm(len(ds), generator=gen)[:b].tolist()])
                       for _ in range(8)]
            before = load()
            r = time_loop(cfg, kind, batches, max(steps // b, 20), max(warmup // b, 3), samples_per_batch=b)
            r.update(phase=kind, what=f"{b} samples per step", load_before=before, load_after=load())
            out.append(r)
            del batches
        before = load()
        batches = [stack([ds[i] for i in torch.randperm(len(ds), generator=gen)[:16].tolist()]) for _ in range(8)]
        r = time_loop(cfg, kind, batches, max(steps // 16, 20), 3, optimizer={"fused": True}, samples_per_batch=16)
        r.update(phase=kind, what="16 samples per step + adam fused", load_before=before, load_after=load())
        out.append(r)
    for r in out:
        if "error" not in r:
            print(f"  what-if {r['phase']:8s} {r['what']:34s} {r['samples_per_s']:7.1f} samples/s  "
                  f"cpu {r['cpu_ms_per_sample']:6.2f} ms/sample", flush=True)
    return out


def time_parts(cfg, kind, loader, steps, warmup):
    """Mean wall ms per sample of data fetch, forward, loss, backward, optimiser step (synchronous CPU)."""
    module = build_module(cfg, kind, BENCH["label_std"], BENCH["state_points"])
    opt = module.configure_optimizers()
    parts = {k: 0.0 for k in ("data", "forward", "loss", "backward", "optimizer")}
    n = 0
    it = iter(loader)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        t1 = time.perf_counter()
        pred = module(batch["descriptors"], batch["temperature"], batch["level"])
        t2 = time.perf_counter()
        total, _ = module._loss(batch, pred, kind)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if i >= warmup:
            n += 1
            for k, a, b in (("data", t0, t1), ("forward", t1, t2), ("loss", t2, t3), ("backward", t3, t4),
                            ("optimizer", t4, t5)):
                parts[k] += b - a
    return {k: 1e3 * v / n for k, v in parts.items()}


def profile_step(cfg, kind, batches, steps=30, top=12):
    from torch.profiler import ProfilerActivity, profile

    module = build_module(cfg, kind, BENCH["label_std"], BENCH["state_points"])
    opt = module.configure_optimizers()
    for b in batches[:5]:
        _step(module, opt, b, kind)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            _step(module, opt, batches[i % len(batches)], kind)
    rows = []
    for ev in sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        rows.append({"op": ev.key, "calls_per_step": ev.count / steps,
                     "self_cpu_ms_per_step": ev.self_cpu_time_total / 1e3 / steps,
                     "cpu_total_ms_per_step": ev.cpu_time_total / 1e3 / steps})
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / steps
    n_ops = sum(e.count for e in prof.key_averages()) / steps
    return {"steps": steps, "self_cpu_ms_per_step_all_ops": total, "op_calls_per_step": n_ops, "top": rows}


def weights_micro(batches, reps=30):
    """ms per call of the loss's neighbour sum for one (K, N, N) matrix: dense einsum vs a sparse CSR matrix
    of the entries above 1e-6 of the row maximum (a candidate fix; not used by the package)."""
    from tglassmlp.model.loss import spatial_correlation

    w = batches[0]["neighbour_weights"][0]
    y = torch.rand(N0, requires_grad=True)
    t0 = time.perf_counter()
    for _ in range(reps):
        c = spatial_correlation(y, w)
        c.sum().backward()
    dense = 1e3 * (time.perf_counter() - t0) / reps
    keep = w > 1e-6 * w.amax(-1, keepdim=True)
    frac = float(keep.float().mean())
    return {"dense_ms_fwd_bwd": dense, "fraction_of_entries_above_1e-6_of_row_max": frac}


BENCH: dict = {}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer structures and steps (a smoke run)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 300; quick 60)")
    ap.add_argument("--structures", type=int, default=None,
                    help=f"distinct training structures held in memory (default {N_TRAIN_STRUCTURES}; quick 20)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--full-schedule", action="store_true",
                    help="also RUN one network's whole Table II schedule (85 + 50 epochs of 7500 samples, ~20 min) "
                         "and time it; written to training_full_schedule.{md,json}")
    ap.add_argument("--full-schedule-only", action="store_true", help="only the --full-schedule run")
    ap.add_argument("--fused-threads", type=int, default=1, help="threads of the fused kernel in the full run")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--render", type=Path, default=None, help=argparse.SUPPRESS)  # re-write the .md from a .json
    args = ap.parse_args(argv)
    if args.render is not None:
        (args.out_dir / "training.md").write_text(markdown(json.loads(args.render.read_text())))
        return
    steps = args.steps or (60 if args.quick else 300)
    warmup = 10 if args.quick else 30
    n_struct = args.structures or (20 if args.quick else N_TRAIN_STRUCTURES)
    command = "python benchmarks/training.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = _dt.datetime.now().isoformat(timespec="seconds")
    info = machine_info()
    info["load_average_at_start"] = load()
    print(f"machine: {info['cpu_model']}, {info['usable_cores']} usable cores, load {info['load_average_at_start']}")

    torch.set_num_threads(1)
    cfg = compose_train_config(["logger.log_figures=false"])
    OmegaConf.resolve(cfg)
    torch.use_deterministic_algorithms(bool(cfg.trainer.get("deterministic", False)))
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*deterministic.*")

    rng = np.random.default_rng(SEED)
    state_points = [(t, c) for t in TEMPERATURES for c in LEVELS]
    t0 = time.perf_counter()
    structures, latents = make_structures(n_struct, rng)
    samples = make_samples(latents, state_points)
    t_data = time.perf_counter() - t0
    BENCH.update(label_std=float(np.concatenate([s.labels for s in samples]).std()), state_points=state_points)
    radii, width = tuple(cfg.loss.radii), float(cfg.loss.width)
    cache: dict[int, torch.Tensor] = {}
    ds = PropensityDataset(samples, structures, cache, radii, width)
    t0 = time.perf_counter()
    for s in range(n_struct):
        ds.weights(s)
    t_weights = (time.perf_counter() - t0) / n_struct
    print(f"data: {n_struct} structures x {len(state_points)} state points = {len(samples)} samples "
          f"({t_data:.1f} s); neighbour weights {1e3 * t_weights:.0f} ms / structure (once, cached)")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=True, num_workers=int(cfg.data.num_workers))
    list_loader = torch.utils.data.DataLoader(ds, batch_size=PER_STEP, shuffle=True, collate_fn=list,
                                              num_workers=int(cfg.data.num_workers))
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(ds), generator=gen)[:64].tolist()
    collated = [ds[i] for i in pick]  # items are batches of one already

    if args.full_schedule or args.full_schedule_only:
        full_schedule(args, cfg, structures, samples, state_points, info, command, started, radii, width)
        if args.full_schedule_only:
            return

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for kind in ("mse", "glassmlp"):
                for variant in ("lightning", f"lightning x{PER_STEP}", f"lightning x{PER_STEP}+compile",
                                f"lightning x{PER_STEP} fused", "loop+loader", "loop", "fused loop", "validate"):
                    n = steps if variant != "validate" else max(steps // 2, 20)
                    before = load()
                    if variant == "lightning":
                        r = time_lightning(cfg, kind, loader, n, warmup, tmp)
                    elif variant.startswith("lightning"):
                        # what train.py does (data.samples_per_batch lists); compile: the first steps compile
                        # (~10-20 s), a longer warm-up leaves them out
                        r = time_lightning(cfg, kind, list_loader, n, warmup + 4 * PER_STEP * ("compile" in variant),
                                           tmp, compile="compile" in variant, per_step=PER_STEP,
                                           fused="fused" in variant)
                    elif variant == "loop+loader":
                        r = time_loop(cfg, kind, loader, n, warmup)
                    elif variant == "loop":
                        r = time_loop(cfg, kind, collated, n, warmup)
                    elif variant == "fused loop":
                        r = time_fused_loop(cfg, kind, collated, n, warmup)
                    else:
                        vloader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False)
                        r = time_validate(cfg, kind, vloader, n, warmup, tmp)
                    r.update(threads=threads, phase=kind, variant=variant, load_before=before, load_after=load())
                    rows.append(r)
                    print(f"  threads {threads}  {kind:8s}  {variant:11s}  {r['samples_per_s']:7.1f} samples/s  "
                          f"wall {r['wall_ms_per_sample']:6.2f} ms  cpu {r['cpu_ms_per_sample']:6.2f} ms/sample  "
                          f"load {r['load_after'][0]}", flush=True)

    torch.set_num_threads(1)
    parts = {kind: time_parts(cfg, kind, loader, steps // 2, warmup) for kind in ("mse", "glassmlp")}
    for kind, p in parts.items():
        print(f"  parts (1 thread, {kind}): " + ", ".join(f"{k} {v:.2f} ms" for k, v in p.items()))
    prof = None
    if not args.no_profile:
        prof = {kind: profile_step(cfg, kind, collated) for kind in ("mse", "glassmlp")}
    micro = weights_micro(collated)
    what = whatifs(cfg, ds, steps, warmup)

    result = {"machine": info, "date": started, "command": command, "load_average_at_end": load(),
              "setup": {"n_structures_in_memory": n_struct, "state_points": len(state_points),
                        "particles_per_sample": N0, "features": N_FEATURES, "box": BOX,
                        "samples_per_epoch_projected": N_TRAIN_STRUCTURES * len(state_points),
                        "epochs": EPOCHS, "steps_per_measurement": steps, "warmup_steps": warmup,
                        "neighbour_weights_ms_per_structure": 1e3 * t_weights,
                        "trainer": {k: cfg.trainer.get(k) for k in ("deterministic", "check_val_every_n_epoch")}},
              "rows": rows, "parts_ms_per_sample_1thread": parts, "profile_1thread": prof,
              "neighbour_sum_micro": micro, "what_if_1thread": what}
    result["projection"] = project(result)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "training.json").write_text(json.dumps(result, indent=1))
    (args.out_dir / "training.md").write_text(markdown(result))
    print((args.out_dir / "training.md").read_text())


def full_schedule(args, cfg, structures, samples, state_points, info, command, started, radii, width):
    """The measured full schedule: 150 training structures (all in memory) + N_TEST_STRUCTURES test structures."""
    rng = np.random.default_rng(SEED + 1)
    test_structures, test_latents = make_structures(N_TEST_STRUCTURES, rng)
    # one structure list, as the data module keeps it: the module caches label correlations by structure index
    n_train = len(structures)
    for k, r in enumerate(test_structures):
        r.index = n_train + k
    test_samples = [dataclasses.replace(x, structure=x.structure + n_train)
                    for x in make_samples(test_latents, state_points)]
    all_structures = list(structures) + test_structures
    cache: dict = {}
    train_ds = PropensityDataset(samples, all_structures, cache, radii, width)
    test_ds = PropensityDataset(test_samples, all_structures, cache, radii, width)
    print(f"full schedule: {len(train_ds)} training samples/epoch, {len(test_ds)} validation samples, "
          f"fused threads {args.fused_threads} ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        r = run_full_schedule(cfg, train_ds, test_ds, tmp, fused_threads=args.fused_threads)
    r.update(machine=info, command=command, date=started, load_average_at_end=load())
    print(json.dumps({k: v for k, v in r.items() if k != "machine"}, indent=1), flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "training_full_schedule.json").write_text(json.dumps(r, indent=1))
    m = r["machine"]
    lines = ["# One network's full Table II schedule, run (not projected)", "",
             f"- date: {r['date']}", f"- command: `{r['command']}`",
             f"- machine: {m['uname']}; {m['cpu_model']}; {m['usable_cores']} usable cores (shared); torch {m['torch']}; "
             f"git {m['git_commit']}",
             f"- load average at start {m['load_average_at_start']}, at end {r['load_average_at_end']}",
             f"- data: {len(structures)} synthetic training structures x {len(state_points)} state points = "
             f"{r['samples_per_epoch']} samples per epoch (600 particles x 172 descriptors), {r['validation_samples']} "
             "validation samples; conf/train.yaml as train.py composes it (model.fused=auto, "
             f"fused_threads={r['fused_threads']}, data.samples_per_batch = {PER_STEP}), logger and checkpoints off",
             f"- training steps ran on: {r['step_backend']}",
             "", "| epochs | optimiser steps | wall [min] | CPU [min] | validation [min] | MSE epoch [s] (ms/sample) | "
             "full-loss epoch [s] (ms/sample) | < 30 min? |", "|---|---|---|---|---|---|---|---|",
             f"| {r['epochs']} | {r['global_step']} | {r['wall_min']:.1f} | {r['cpu_s'] / 60:.1f} | "
             f"{r['validation_wall_s'] / 60:.1f} | {r['mean_epoch_s'].get('mse', float('nan')):.1f} "
             f"({r['ms_per_sample'].get('mse', float('nan')):.2f}) | "
             f"{r['mean_epoch_s'].get('glassmlp', float('nan')):.1f} ({r['ms_per_sample'].get('glassmlp', float('nan')):.2f}) "
             f"| {'yes' if r['meets_30_min'] else 'no'} |", "",
             f"Final training loss {r['final_train_loss']:.4f}; validation Pearson (synthetic labels) "
             f"{r['final_val_pearson']:.3f}.", ""]
    (args.out_dir / "training_full_schedule.md").write_text("\n".join(lines))


def project(result) -> dict:
    """Full-schedule wall time per (threads, variant): 7500 x (85 / rate_mse + 50 / rate_full), plus the
    validation passes (every check_val_every_n_epoch epochs over the test samples) for the Lightning rows."""
    setup = result["setup"]
    per_epoch = setup["samples_per_epoch_projected"]
    n_test = N_TEST_STRUCTURES * setup["state_points"]
    every = int(setup["trainer"]["check_val_every_n_epoch"] or 1)
    by = {(r["threads"], r["phase"], r["variant"]): r for r in result["rows"]}
    out = {}
    for threads in sorted({r["threads"] for r in result["rows"]}):
        for variant in ("lightning", f"lightning x{PER_STEP}", f"lightning x{PER_STEP}+compile",
                        f"lightning x{PER_STEP} fused", "loop+loader", "loop", "fused loop"):
            if (threads, "mse", variant) not in by:
                continue
            train_wall = sum(per_epoch * EPOCHS[k] / by[(threads, k, variant)]["samples_per_s"] for k in EPOCHS)
            train_cpu = sum(per_epoch * EPOCHS[k] * by[(threads, k, variant)]["cpu_ms_per_sample"] / 1e3
                            for k in EPOCHS)
            val_wall = val_cpu = 0.0
            if variant.startswith("lightning"):
                # validations after epochs every, 2 every, ...: 17 in the MSE epochs, 10 in the full-loss ones
                n_val = {"mse": EPOCHS["mse"] // every,
                         "glassmlp": (EPOCHS["mse"] + EPOCHS["glassmlp"]) // every - EPOCHS["mse"] // every}
                for k, nv in n_val.items():
                    v = by.get((threads, k, "validate"))
                    if v:
                        val_wall += nv * n_test / v["samples_per_s"]
                        val_cpu += nv * n_test * v["cpu_ms_per_sample"] / 1e3
            weights = (N_TRAIN_STRUCTURES + N_TEST_STRUCTURES) * setup["neighbour_weights_ms_per_structure"] / 1e3
            total = train_wall + val_wall + weights
            out[f"{threads}thr/{variant}"] = {
                "train_wall_s": train_wall, "validation_wall_s": val_wall, "neighbour_weights_s": weights,
                "total_wall_s": total, "total_wall_min": total / 60, "meets_30_min": bool(total < TARGET_S),
                "cpu_based_total_min": (train_cpu + val_cpu + weights) / 60}
    return out


def markdown(result) -> str:
    m, s = result["machine"], result["setup"]
    lines = [
        "# Training throughput of one tGlassMLP network (paper-sized synthetic data)",
        "",
        f"- date: {result['date']}",
        f"- command: `{result['command']}`",
        f"- machine: {m['uname']}; {m['cpu_model']}; {m['usable_cores']} usable cores (shared); torch {m['torch']}, "
        f"pytorch-lightning {m['pytorch_lightning']}, python {m['python']}; git {m['git_commit']}",
        f"- load average at start {m['load_average_at_start']}, at end {result['load_average_at_end']} "
        "(1, 5, 15 min; wall rates are under that load: other jobs shared the two cores)",
        f"- data: {s['n_structures_in_memory']} synthetic structures in memory x {s['state_points']} state points, "
        f"{s['particles_per_sample']} particles x {s['features']} standardised descriptors per sample, box "
        f"{s['box']}; dense (3, 600, 600) float32 neighbour weights cached per structure "
        f"({s['neighbour_weights_ms_per_structure']:.0f} ms each to compute); projection for "
        f"{s['samples_per_epoch_projected']} samples/epoch x ({EPOCHS['mse']} MSE + {EPOCHS['glassmlp']} full-loss) "
        "epochs",
        f"- {s['steps_per_measurement']} timed steps per row after {s['warmup_steps']} warm-up steps "
        "(validate rows: half as many); trainer as conf/trainer/default.yaml "
        f"(deterministic={s['trainer']['deterministic']}) minus logger, checkpoints and progress bar",
        "- wall = samples/s of wall clock; CPU = process CPU ms per sample (all threads); at 1 thread the CPU "
        "time approximates an idle core",
        "",
        "| threads | phase | variant | samples/s | wall ms/sample | median / p90 ms | CPU ms/sample | load before -> after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['threads']} | {r['phase']} | {r['variant']} | {r['samples_per_s']:.1f} | "
                     f"{r['wall_ms_per_sample']:.2f} | {r['median_wall_ms']:.2f} / {r['p90_wall_ms']:.2f} | "
                     f"{r['cpu_ms_per_sample']:.2f} | {r['load_before'][0]} -> {r['load_after'][0]} |")
    lines += ["", "## Projection of the full Table II schedule (one network)", "",
              "| threads / variant | training [min] | validation [min] | total wall [min] | < 30 min? | "
              "CPU-time based [min] |", "|---|---|---|---|---|---|"]
    for key, p in result["projection"].items():
        lines.append(f"| {key} | {p['train_wall_s'] / 60:.1f} | {p['validation_wall_s'] / 60:.1f} | "
                     f"{p['total_wall_min']:.1f} | {'yes' if p['meets_30_min'] else 'no'} | "
                     f"{p['cpu_based_total_min']:.1f} |")
    lines += ["", "## Where the time goes (1 thread, plain loop over the DataLoader, ms per sample)", "",
              "| phase | data | forward | loss | backward | optimizer |", "|---|---|---|---|---|---|"]
    for kind, p in result["parts_ms_per_sample_1thread"].items():
        lines.append(f"| {kind} | " + " | ".join(f"{p[k]:.2f}" for k in ("data", "forward", "loss", "backward",
                                                                          "optimizer")) + " |")
    if result.get("profile_1thread"):
        for kind, prof in result["profile_1thread"].items():
            lines += ["", f"torch.profiler, {kind} step (pre-collated batch, 1 thread): "
                      f"{prof['op_calls_per_step']:.0f} op calls, {prof['self_cpu_ms_per_step_all_ops']:.2f} ms "
                      "self CPU per step (profiler overhead included)", "",
                      "| op | calls/step | self CPU ms/step |", "|---|---|---|"]
            for row in prof["top"]:
                lines.append(f"| {row['op']} | {row['calls_per_step']:.0f} | {row['self_cpu_ms_per_step']:.3f} |")
    lines += ["", "## What-if: candidate fixes in the plain loop (1 thread; not what train.py does)", "",
              "| phase | change | samples/s | CPU ms/sample | projected CPU-time total [min] |", "|---|---|---|---|---|"]
    per_epoch = s["samples_per_epoch_projected"]
    for r in result.get("what_if_1thread") or []:
        if "error" in r:
            lines.append(f"| {r['phase']} | {r['what']} | error: {r['error'][:80]} | | |")
            continue
        lines.append(f"| {r['phase']} | {r['what']} | {r['samples_per_s']:.1f} | {r['cpu_ms_per_sample']:.2f} | "
                     f"{per_epoch * EPOCHS[r['phase']] * r['cpu_ms_per_sample'] / 6e4:.1f} ({r['phase']} epochs only) |")
    mi = result["neighbour_sum_micro"]
    lines += ["", f"Neighbour sum of the full loss alone (C_k of one field, forward + backward, 1 thread): "
              f"{mi['dense_ms_fwd_bwd']:.2f} ms; entries of W_k above 1e-6 of the row maximum: "
              f"{100 * mi['fraction_of_entries_above_1e-6_of_row_max']:.0f} %.", ""]
    lines += findings(result)
    return "\n".join(lines) + "\n"


def findings(result) -> list[str]:
    """Readable conclusions computed from the numbers (overheads per layer, the verdict, the 2-thread caveat)."""
    by = {(r["threads"], r["phase"], r["variant"]): r for r in result["rows"]}
    proj = result["projection"]
    out = ["## Findings", ""]
    threads = sorted({r["threads"] for r in result["rows"]})
    for key, what in ([(f"{t}thr/lightning x{PER_STEP} fused", f"as train.py runs it by default (model.fused=auto: "
                        f"the numba kernel), {t} thread(s)") for t in threads]
                      + [(f"1thr/lightning x{PER_STEP}", "with the torch step (model.fused=false)"),
                         (f"1thr/lightning x{PER_STEP}+compile", "with the compiled torch step (model.fused=false "
                          "model.compile=true)"),
                         ("1thr/lightning", "one sample per Lightning step with the torch step")]):
        if key in proj:
            out.append(f"- Projected full schedule of one network {what} ({key}): {proj[key]['total_wall_min']:.0f} "
                       f"min wall ({proj[key]['cpu_based_total_min']:.0f} min of CPU time); target {TARGET_S // 60} "
                       f"min: {'met' if proj[key]['meets_30_min'] else 'missed'}.")
    need = TARGET_S / sum(result["setup"]["samples_per_epoch_projected"] * e for e in EPOCHS.values()) * 1e3
    out.append(f"- The target needs <= {need:.2f} ms per sample on average at batch size 1 (one configuration "
               "per optimiser step, the paper's batch).")
    for kind in EPOCHS:
        if all((1, kind, v) in by for v in ("lightning", "loop+loader", "loop")):
            lt, ll, lp = (by[(1, kind, v)]["cpu_ms_per_sample"] for v in ("lightning", "loop+loader", "loop"))
            out.append(f"- {kind}, 1 thread, CPU ms per sample: Lightning {lt:.2f} = network/loss/backward/Adam "
                       f"{lp:.2f} + DataLoader/collate {ll - lp:.2f} + Lightning bookkeeping {lt - ll:.2f}.")
    load = result["machine"]["load_average_at_start"][0]
    if any(r["threads"] > 1 for r in result["rows"]) and load >= result["machine"]["usable_cores"]:
        out.append(f"- 2 threads: measured while the load average ({load}) exceeded the {result['machine']['usable_cores']} "
                   "cores; OpenMP threads then wait for a descheduled partner at every parallel region "
                   "of a step (CPU time per sample grows as much as wall time: spinning), so these rows describe "
                   "an oversubscribed machine, not what 2 idle cores would give.")
    return out


if __name__ == "__main__":
    main()

"""train.py's work as plain functions: one tGlassMLP network, one seed, one MLflow run.

    python train.py                              # the demo data, the paper's schedule
    python train.py -m seed=0..15                # an ensemble (a..b is rewritten to Hydra's range(a, b+1))
    python train.py -m seed=0..3 launcher=joblib # the seeds in parallel processes
    python train.py debug=fast                   # any run in under a minute

Order of work (:func:`train`): check the tracking store (fail fast), seed, read the data and fit the
standardisation, build network / loss / module / trainer from the config, open the MLflow run (a child of the
sweep's parent run in a multirun), fit, test, compute the label ceiling rho_max of the test structures, save
artefacts (state dict, scaler, resolved config, figures), close the run. An exception marks the run FAILED; a
killed process leaves it RUNNING, which later jobs ignore.

Metrics that compare networks (the runs table's view, :data:`tglassmlp.tracking.KEY_COLUMNS`):
``test/pearson_mean`` (= ``test/avg/pearson``: the per-structure Pearson averaged over structures and test
state points), ``test/rho_max_mean`` (the label-noise ceiling of the same structures and labels,
``docs/label-ceiling.md``), ``test/pearson_over_ceiling`` (Pearson / rho_max per state point, averaged), and
after the sweep ``selection/score`` and ``selection/selected``. Per state point: ``test/<T..._c...>/<metric>``
with ``rho_max`` and ``pearson_over_rho_max`` beside ``pearson``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

_RANGE = re.compile(r"^(?P<key>[+~]{0,2}[A-Za-z_][\w.]*)=(?P<a>-?\d+)\.\.(?P<b>-?\d+)$")


def rewrite_range_overrides(argv: Sequence[str]) -> list[str]:
    """Rewrite ``key=a..b`` (integers, inclusive) into Hydra's ``key=range(a,b+1)``; other args unchanged.

    Hydra's override grammar has no ``a..b``: it would pass the string '0..15' to the job. Must run on
    sys.argv before ``@hydra.main`` parses it.
    """
    out = []
    for arg in argv:
        m = _RANGE.match(arg)
        if m:
            a, b = int(m["a"]), int(m["b"])
            if b < a:
                raise SystemExit(f"{arg}: empty range (the upper bound {b} is below the lower bound {a})")
            arg = f"{m['key']}=range({a},{b + 1})"
        out.append(arg)
    return out


def resolve_seed(cfg: DictConfig) -> int:
    """The job's seed: ``cfg.seed`` when set (0 included), else a fresh one (logged and recorded)."""
    if cfg.get("seed") is not None:
        seed = cfg.seed
        if isinstance(seed, str):
            raise ValueError(f"seed={seed!r} is not an integer; for a sweep use -m seed=0..15 or -m 'seed=range(16)'")
        return int(seed)
    seed = random.SystemRandom().randrange(2**31)
    log.warning("no seed given: drew seed %d (recorded in the run's tags)", seed)
    return seed


def curated_params(cfg: DictConfig, dm, module, n_parameters: int, seed: int) -> dict[str, Any]:
    """The params recorded in MLflow: model sizes, schedule, data selection, seed (not the whole config)."""
    # the network's sizes, under the param names they had before the network moved to model.network
    model = OmegaConf.to_container(cfg.model.network, resolve=True)
    params: dict[str, Any] = {f"model.{k}": v for k, v in model.items() if k not in ("_target_", "seed")}
    params["model.n_descriptors"] = dm.n_features
    params["model.n_parameters"] = n_parameters
    for k, stage in enumerate(module.stages):
        params[f"schedule.{k}.{stage.name or k}"] = f"{stage.epochs} epochs, lr {stage.lr:g}, {stage.loss}"
    params["schedule.total_epochs"] = module.total_epochs
    loss = OmegaConf.to_container(cfg.loss, resolve=True)
    params.update({f"loss.{k}": v for k, v in loss.items() if k not in ("_target_", "label_std", "eps")})
    params["data.root"] = str(Path(cfg.data.root).resolve())
    by_t: dict[float, list[float]] = {}
    for t, c in dm.state_points:
        by_t.setdefault(t, []).append(c)
    params["data.state_points"] = json.dumps({f"{t:.3f}": cs for t, cs in by_t.items()})
    params["data.train_fraction"] = dm.train_fraction
    params["data.split_seed"] = dm.split_seed
    params["data.n_structures"] = len(dm.structures)
    params["data.n_train_samples"] = len(dm.train_samples)
    params["data.n_test_samples"] = len(dm.test_samples)
    params["data.label_std"] = f"{dm.label_std:.6g}"
    params["descriptors"] = json.dumps(dataclasses.asdict(dm.descriptors))
    params["seed"] = seed
    return params


# --------------------------------------------------------------------------------------------- training
def build(cfg: DictConfig, seed: int):
    """Data module (set up), network, loss and module from the config, after seeding every RNG.

    The network width M_S is taken from the data (the standardised descriptor columns that survive the
    kept-column rule, :func:`~tglassmlp.observables.descriptors.kept_columns`), overriding
    ``model.network.n_descriptors`` with a log line when they differ. ``cfg.model`` is the LightningModule's node
    (``conf/model/``): its ``network`` is built first, then the module with it.
    """
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    pl.seed_everything(seed, workers=True)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    net_cfg = cfg.model.network
    if net_cfg.get("n_descriptors") not in (None, dm.n_features):
        log.debug("model.network.n_descriptors = %s in the config; the data have %d standardised columns: using %d",
                 net_cfg.n_descriptors, dm.n_features, dm.n_features)
    # re-seed so that the initial weights depend on the seed only, not on what data loading drew
    pl.seed_everything(seed, workers=True)
    network = instantiate(net_cfg, n_descriptors=dm.n_features)
    loss = instantiate(cfg.loss, label_std=dm.label_std)
    if cfg.get("normalize_state_features", True):
        t, c = zip(*dm.training_state_points)
        network.set_state_normalization(list(t), list(c))
    module = call_with_objects(module_node(cfg.model), network=network, loss=loss,
                               schedule=OmegaConf.to_container(cfg.schedule, resolve=True),
                               label_std=dm.label_std, descriptor_scaler=dm.scaler.to_dict())
    return dm, network, loss, module


def module_node(model: DictConfig) -> DictConfig:
    """The LightningModule's own settings: ``model`` (``conf/model/``) without its nested ``network``, which
    :func:`build` instantiates itself (M_S comes from the data) and passes as an object."""
    settings = OmegaConf.to_container(model, resolve=True)
    settings.pop("network", None)
    return OmegaConf.create(settings)


def call_with_objects(node: DictConfig, **objects):
    """Build ``node._target_`` with the node's (resolved) arguments plus live ``objects``.

    Unlike ``hydra.utils.instantiate(node, **objects)``, the objects are passed as they are: instantiate
    merges keyword arguments into the config, which copies them, so a network handed to the module would no
    longer be the network the caller holds.
    """
    from hydra.utils import get_method, instantiate

    args = {k: v for k, v in node.items() if k != "_target_"}
    args = {k: (instantiate(v) if OmegaConf.is_config(v) and "_target_" in v else
                OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v)
            for k, v in args.items()}
    return get_method(node._target_)(**args, **objects)


def build_trainer(cfg: DictConfig, module, run_dir: Path, logger=None, quiet: bool = False,
                  parallel: bool = False):
    """The Lightning Trainer of ``cfg.trainer``; max_epochs defaults to the schedule's total. ``quiet``
    (:mod:`tglassmlp.training.console`): no model summary, the training bar only, and no bar at all for
    ``parallel`` jobs (a multirun)."""
    from hydra.utils import instantiate

    from tglassmlp.training.console import training_bar_only

    callbacks = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        extra = {}
        if "dirpath" in cb_cfg and cb_cfg.dirpath is None:
            extra["dirpath"] = str(run_dir / "checkpoints")
        callbacks.append(instantiate(cb_cfg, **extra))
    max_epochs = cfg.trainer.get("max_epochs") or module.total_epochs
    trainer_cfg = OmegaConf.create(OmegaConf.to_container(cfg.trainer, resolve=True))  # an unlocked copy
    trainer_cfg.max_epochs = int(max_epochs)
    trainer_cfg.default_root_dir = str(run_dir)
    if quiet:
        trainer_cfg.enable_model_summary = False
        if parallel:
            trainer_cfg.enable_progress_bar = False
        elif trainer_cfg.get("enable_progress_bar", True):
            callbacks.append(training_bar_only())
    return call_with_objects(trainer_cfg, callbacks=callbacks, logger=logger if logger is not None else False)


def train(cfg: DictConfig, run_dir: str | Path | None = None,
          extra_tags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one network as configured (``conf/train.yaml``) and record it in MLflow.

    Args:
        cfg: the composed training config.
        run_dir: folder for checkpoints and figures; default the Hydra job's output directory, else a
            temporary folder.
        extra_tags: MLflow tags set when the run is created (they override the defaults, e.g. ``sweep_id``),
            so that a run is never visible without them (the transfer procedure's grouping tags).

    Returns:
        {'run_id', 'experiment_id', 'seed', 'metrics' (the test metrics), 'state_dict' (the network's),
         'tracking_uri', 'ui_link'}.
    """
    from tglassmlp.training.console import quiet_loggers, verbose_requested

    quiet = not verbose_requested(cfg)
    with quiet_loggers(quiet):
        return _train(cfg, run_dir, extra_tags, quiet)


def _train(cfg: DictConfig, run_dir, extra_tags, quiet: bool) -> dict[str, Any]:
    """:func:`train` with the console settled (``quiet``: :mod:`tglassmlp.training.console`)."""
    import torch
    from hydra.utils import instantiate

    from tglassmlp.tracking import VIEW_KEY, hydra_job_info, read_sweep_parent, set_default_view
    from tglassmlp.training.console import quiet_warnings
    from tglassmlp.training.logger import MlflowRunLogger

    started = time.monotonic()
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    seed = resolve_seed(cfg)
    job = hydra_job_info()
    multirun = job.get("multirun") == "true"
    if run_dir is None:
        run_dir = job.get("output_dir") or tempfile.mkdtemp(prefix="tglassmlp-train-")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)

    # fail fast, before any descriptor is computed or epoch spent: the data must exist (cheap: a directory
    # listing) and the tracking store must answer
    instantiate(cfg.data).shard_paths()
    tracking = instantiate(cfg.logger)
    tracking.prepare()
    parent = read_sweep_parent(job.get("sweep_id")) if multirun else None
    if parent is not None and parent.get("experiment_id") == tracking.experiment_id:
        tracking.parent_run_id = parent["run_id"]
    elif not multirun:
        try:  # the runs-table view of the printed link (a sweep's parent stores its own, with the sweep expanded)
            set_default_view(tracking.client, tracking.experiment_id)
        except Exception as exc:  # noqa: BLE001 - a convenience of the UI only
            log.debug("could not store the runs-table view: %s", exc)

    dm, network, _, module = build(cfg, seed)
    n_params = sum(p.numel() for p in network.parameters() if p.requires_grad)
    tags = {"seed": seed, "sweep_id": job.get("sweep_id", f"direct:{run_dir.resolve()}"),
            "dataset_hash": dm.dataset_hash(), "study": cfg.get("study"), "hydra_job_num": job.get("hydra_job_num"),
            "output_dir": str(run_dir.resolve()), "overrides": job.get("overrides"), "kind": "train"}
    tags.update(extra_tags or {})
    label = f"seed {seed}" + (f" (job {job['hydra_job_num']})" if multirun else "")
    log.info("%s: training %d epochs on %d train / %d test samples (%d state points, %d structures, %d descriptor "
             "columns), %d parameters", label, module.total_epochs, len(dm.train_samples), len(dm.test_samples),
             len(dm.state_points), len(dm.structures), dm.n_features, n_params)
    with tracking.run(tags, run_name=f"seed{seed}"):
        tracking.log_params(curated_params(cfg, dm, module, n_params, seed))
        trainer = build_trainer(cfg, module, run_dir, MlflowRunLogger(tracking), quiet=quiet, parallel=multirun)
        with quiet_warnings(quiet):
            trainer.fit(module, datamodule=dm)
            trainer.test(module, datamodule=dm, verbose=False)
        headline = headline_metrics(module.test_metrics, label_ceilings(dm))
        tracking.log_metrics({k: v for k, v in headline.items() if math.isfinite(v)})
        module.test_metrics.update(headline)
        metrics = dict(module.test_metrics)
        save_artifacts(cfg, tracking, dm, network, module, run_dir)
    link = tracking.ui_link(view=VIEW_KEY)
    log.info("%s: done in %s: test Pearson %.3f, ceiling rho_max %.3f (%.2f of it); run %s", label,
             _duration(time.monotonic() - started), metrics.get("test/pearson_mean", math.nan),
             metrics.get("test/rho_max_mean", math.nan), metrics.get("test/pearson_over_ceiling", math.nan),
             tracking.run_id)
    return {"run_id": tracking.run_id, "experiment_id": tracking.experiment_id, "seed": seed, "metrics": metrics,
            "state_dict": {k: v.detach().clone() for k, v in network.state_dict().items()},
            "tracking_uri": tracking.tracking_uri, "ui_link": link, "multirun": multirun}


def _duration(seconds: float) -> str:
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}m{sec:02d}s" if minutes else f"{sec}s"


def label_ceilings(dm, samples=None, n_splits: int = 50, seed: int = 0) -> dict[str, float]:
    """{state point name: rho_max} of the test samples (default ``dm.test_samples``): the label-noise ceiling of
    the per-structure Pearson (``docs/label-ceiling.md``), from the same structures and labels the test Pearson
    uses. Each structure's runs are its shard's ``bond_breaking`` (R, T_n, N) interpolated in log t at the
    sample's label time t* (as the labels are; reference particles only), and
    :class:`~tglassmlp.observables.LabelCeiling` averages the per-structure rho_max.

    A state point is left out (no ceiling, logged at debug level) when a structure has no ``bond_breaking``
    or fewer than 2 runs, its labels have no MD label time (transferred labels), or the runs' mean differs from
    the labels by more than 1e-4 (labels that are not these runs' mean).
    """
    from tglassmlp.data.ceilings import ShardRuns
    from tglassmlp.statepoints import state_point_name

    samples = dm.test_samples if samples is None else samples
    shard_runs = ShardRuns(dm.reference_type, n_splits, seed)
    groups: dict[tuple[float, float], list] = {}
    for s in samples:
        groups.setdefault((s.temperature, s.level), []).append(s)
    out = {}
    for (t, c), group in sorted(groups.items()):
        per_structure, why = [], None
        for s in group:
            rec = dm.structures[s.structure]
            at_label = shard_runs.at(rec.path, s.t_star) if rec.times is not None else None
            if at_label is None:
                why = f"{rec.path}: no per-run bond_breaking or no MD label time"
                break
            if at_label.shape[0] < 2:
                why = f"{rec.path}: {at_label.shape[0]} run(s)"
                break
            if not np.allclose(at_label.mean(axis=0), s.labels, rtol=0.0, atol=1e-4):
                why = f"{rec.path}: the labels are not the mean of its runs"
                break
            per_structure.append(at_label)
        name = state_point_name(t, c)
        if why is not None:
            log.debug("no label ceiling for %s (%s)", name, why)
            continue
        out[name] = shard_runs.ceiling_of_runs(per_structure)
    return out


def headline_metrics(test_metrics: dict[str, float], ceilings: dict[str, float]) -> dict[str, float]:
    """The metrics that compare networks (module docstring) from the test metrics and the ceilings of
    :func:`label_ceilings`: ``test/pearson_mean``, per state point ``test/<sp>/rho_max`` and
    ``test/<sp>/pearson_over_rho_max``, and ``test/rho_max_mean``, ``test/pearson_over_ceiling`` (means over
    the state points that have a ceiling)."""
    out = {"test/pearson_mean": float(test_metrics.get("test/avg/pearson", math.nan))}
    ratios = []
    for name, rho in ceilings.items():
        out[f"test/{name}/rho_max"] = rho
        pearson = test_metrics.get(f"test/{name}/pearson", math.nan)
        if math.isfinite(pearson) and rho > 0:
            out[f"test/{name}/pearson_over_rho_max"] = pearson / rho
            ratios.append(pearson / rho)
    if ceilings:
        out["test/rho_max_mean"] = float(np.mean(list(ceilings.values())))
    if ratios:
        out["test/pearson_over_ceiling"] = float(np.mean(ratios))
    return out


def save_artifacts(cfg: DictConfig, tracking, dm, network, module, run_dir: Path) -> None:
    """model/ (state_dict.pt, network.yaml = constructor arguments, scaler.npz, state_points.json; written by
    :func:`tglassmlp.model.artifact.save_model_dir`, the one writer of the layout), config/train.yaml
    (resolved), metrics_test.json, figures/*.png; all logged to the run. ``run.json`` (the MLflow run id, not
    logged) lets a sweep folder's networks be matched with the runs an ensemble manifest names."""
    from tglassmlp.model.artifact import save_model_dir

    art = run_dir / "artifacts"
    (art / "config").mkdir(parents=True, exist_ok=True)
    net_cfg = OmegaConf.to_container(cfg.model.network, resolve=True)
    net_cfg["n_descriptors"] = dm.n_features
    save_model_dir(art / "model", net_cfg, network, dm.scaler,
                   {"train": [list(p) for p in dm.training_state_points], "all": [list(p) for p in dm.state_points],
                    "label_std": dm.label_std})
    from tglassmlp.atomic import write_json_atomic, write_text_atomic

    write_text_atomic(art / "config" / "train.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    write_json_atomic(art / "metrics_test.json", module.test_metrics, sort_keys=True)
    write_json_atomic(art / "run.json", {"run_id": tracking.run_id, "experiment_id": tracking.experiment_id,
                                         "tracking_uri": tracking.tracking_uri})
    for sub in ("model", "config"):
        for path in sorted((art / sub).iterdir()):
            tracking.log_artifact(path, sub)
    tracking.log_artifact(art / "metrics_test.json")
    if tracking.log_figures and module.test_records:
        from tglassmlp.training.figures import make_figures

        for path in make_figures(module.test_records, dm, art / "figures"):
            tracking.log_artifact(path, "figures")

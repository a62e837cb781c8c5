"""train.py: configs, a short training on synthetic data, seeds, and the MLflow store seen through a server."""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from test_datamodule import make_synthetic_dataset
from test_tracking import fresh_store
from conftest import compose_config, mlflow_server
from tglassmlp.model.module import state_point_metrics
from tglassmlp.model.network import TGlassMLP
from tglassmlp.paths import PROJECT_ROOT, config_dir
from tglassmlp.training.job import build, build_trainer, rewrite_range_overrides, train

PYTHON = sys.executable


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    # T = 0.4 without MD: the structures below T_min on which the ensemble selection scores the runs
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), no_md_temperatures=(0.4,))


def compose_train(overrides=()):
    return compose_config("train", overrides)


def local_overrides(root, tmp_path, request=None):
    """Data, store and outputs in the test's folders; with ``request`` the store is a ready-made copy."""
    uri = fresh_store(request, tmp_path) if request is not None else f"sqlite:///{tmp_path}/mlflow.db"
    return [f"data.root={root}", f"logger.tracking_uri={uri}", f"paths.output_dir={tmp_path}/out"]


# --------------------------------------------------------------------------------------------- configs
def _options(group):
    # every preset of conf/experiment/ is train.py's (simulate.py's are conf/simulation_experiment/, test_configs.py)
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _joblib_installed():
    try:
        import hydra_plugins.hydra_joblib_launcher  # noqa: F401
        return True
    except ImportError:
        return False


CONFIG_CASES = ([[]] + [[f"experiment={e}"] for e in _options("experiment")]
                + [[f"debug={d}"] for d in _options("debug")] + [[f"trainer={t}"] for t in _options("trainer")]
                + [[f"callbacks={c}"] for c in _options("callbacks")]
                + [[f"launcher={x}"] for x in _options("launcher") if x != "joblib" or _joblib_installed()])


@pytest.mark.parametrize("overrides", CONFIG_CASES, ids=lambda o: " ".join(o) or "default")
def test_train_configs_compose_and_instantiate(overrides, synthetic_root, tmp_path):
    cfg = compose_train(overrides + local_overrides(synthetic_root, tmp_path))
    OmegaConf.resolve(cfg)
    network = instantiate(cfg.model.network)
    assert network(torch.zeros(1, 5, cfg.model.network.n_descriptors), 0.5, 0.5).shape == (1, 5)
    instantiate(cfg.loss)
    dm = instantiate(cfg.data)
    assert dm.root == Path(synthetic_root)
    trainer_cfg = OmegaConf.to_container(cfg.trainer)
    trainer_cfg["max_epochs"] = 1
    if trainer_cfg["accelerator"] in ("cpu", "auto") or torch.cuda.is_available():  # a GPU config needs a GPU
        instantiate(trainer_cfg, logger=False, enable_progress_bar=False)
    instantiate(cfg.logger)  # touches no store
    for cb in (cfg.callbacks or {}).values():
        if cb is not None:
            instantiate(cb, **({"dirpath": str(tmp_path)} if "dirpath" in cb else {}))


def test_default_config_points_at_the_demo_data_and_a_sqlite_store():
    cfg = compose_train()
    assert cfg.data.root.endswith("data/demo") and cfg.seed == 0
    assert cfg.logger.tracking_uri.startswith("sqlite:///") and cfg.logger.tracking_uri.endswith("mlflow.db")


def test_range_overrides_are_rewritten():
    argv = ["train.py", "-m", "seed=0..15", "data.root=../x..y", "+foo.bar=-2..1", "seed=range(16)"]
    assert rewrite_range_overrides(argv) == ["train.py", "-m", "seed=range(0,16)", "data.root=../x..y",
                                             "+foo.bar=range(-2,2)", "seed=range(16)"]


def test_state_point_metrics():
    rng = np.random.default_rng(0)
    target = [rng.uniform(0, 1, 50) for _ in range(3)]
    m = state_point_metrics([t.copy() for t in target], target, level=0.5)
    assert m["pearson"] == pytest.approx(1.0) and m["mae"] == 0.0
    assert m["chi4_pred"] == m["chi4_true"] == pytest.approx(50 * np.var([t.mean() for t in target]))
    assert m["self_consistency"] == pytest.approx(abs(np.mean([t.mean() for t in target]) - 0.5))
    # chi_4 is four_point_susceptibility's: structures of different N use their mean N; a NaN (a diverging
    # network) gives NaN for that chi_4 only
    uneven = [rng.uniform(0, 1, n) for n in (40, 50, 60)]
    m = state_point_metrics([u.astype(np.float32) for u in uneven], uneven, level=0.5)
    assert m["chi4_true"] == pytest.approx(50 * np.var([u.mean() for u in uneven]), rel=1e-12)
    assert m["chi4_pred"] == pytest.approx(m["chi4_true"], rel=1e-5)
    broken = [u.copy() for u in uneven]
    broken[1][3] = np.nan
    m = state_point_metrics(broken, uneven, level=0.5)
    assert np.isnan(m["chi4_pred"]) and np.isfinite(m["chi4_true"])


# --------------------------------------------------------------------------------------------- training
def test_fast_dev_run(synthetic_root, tmp_path):
    cfg = compose_train(local_overrides(synthetic_root, tmp_path) + ["trainer.fast_dev_run=true"])
    dm, _, _, module = build(cfg, seed=0)
    trainer = build_trainer(cfg, module, tmp_path)
    trainer.fit(module, datamodule=dm)
    assert trainer.state.finished


def test_short_training_learns_the_synthetic_dependence(request, synthetic_root, tmp_path):
    """The synthetic propensity is a monotone function of one descriptor: 12 MSE epochs + 2 full-loss epochs
    give a clearly positive Pearson correlation on the test structures, with all metric names present."""
    cfg = compose_train(local_overrides(synthetic_root, tmp_path, request) + [
        "schedule.stages=[{name: a, epochs: 12, lr: 0.003, loss: mse}, {name: b, epochs: 2, lr: 0.0001, loss: glassmlp}]",
        "trainer.check_val_every_n_epoch=7", "trainer.enable_progress_bar=false", "callbacks=none",
        "trainer.enable_checkpointing=false", "trainer.enable_model_summary=false", "data.train_fraction=0.5"])
    result = train(cfg, run_dir=tmp_path / "run")
    m = result["metrics"]
    assert m["test/avg/pearson"] > 0.5, m
    assert m["test/avg/chi4_true"] > 0  # three test structures per temperature
    for name in ("pearson", "mae", "chi4_pred", "chi4_true", "self_consistency"):
        assert f"test/T0.500_c0.50/{name}" in m and f"test/avg/{name}" in m
    client = __import__("mlflow").tracking.MlflowClient(result["tracking_uri"])
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["seed"] == "0"
    assert "val/T0.600_c0.80/pearson" in run.data.metrics and "train/loss" in run.data.metrics
    arts = {f.path for f in client.list_artifacts(result["run_id"], "model")}
    assert {"model/state_dict.pt", "model/scaler.npz", "model/network.yaml", "model/state_points.json"} <= arts
    # the model directory reads back through predict's reader with the trained weights
    from tglassmlp.predict import load_model_dir

    member = load_model_dir(tmp_path / "run" / "artifacts" / "model")
    # network.yaml holds the network's constructor arguments only, not the LightningModule's settings that
    # conf/model/ nests it in: the layout model directories have always had; MLflow params keep their names
    saved = OmegaConf.load(tmp_path / "run" / "artifacts" / "model" / "network.yaml")
    assert saved._target_ == "tglassmlp.model.network.TGlassMLP" and saved.n_descriptors == member.network.n_descriptors
    assert set(saved) - {"_target_"} <= set(inspect.signature(TGlassMLP).parameters), set(saved)
    assert run.data.params["model.mlp1_hidden"] == str(list(cfg.model.network.mlp1_hidden))
    assert "model.fused" not in run.data.params and "model.network" not in run.data.params
    for k, v in result["state_dict"].items():
        torch.testing.assert_close(member.network.state_dict()[k], v.cpu(), rtol=0, atol=0)
    assert member.scaler.n_kept == member.network.n_descriptors
    assert {"train", "all", "label_std"} <= set(member.state_points) and member.state_points["train"]
    figs = {f.path for f in client.list_artifacts(result["run_id"], "figures")}
    assert figs == {"figures/scatter_pred_vs_true.png", "figures/snapshot_true_vs_pred.png"}


def test_seed_zero_is_honoured_and_reproducible(request, synthetic_root, tmp_path):
    base = local_overrides(synthetic_root, tmp_path, request) + ["debug=fast", "trainer.enable_progress_bar=false",
                                                       "logger.log_figures=false"]
    a = train(compose_train(base + ["seed=0"]), run_dir=tmp_path / "a")
    b = train(compose_train(base + ["seed=0"]), run_dir=tmp_path / "b")
    c = train(compose_train(base + ["seed=1"]), run_dir=tmp_path / "c")
    assert a["seed"] == b["seed"] == 0
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)
    assert any(not torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


def test_set_up_errors_come_before_any_compute(synthetic_root, tmp_path, monkeypatch):
    """A missing dataset or an unreachable store fails before the data are read or a network is built."""
    import tglassmlp.training.job as train_module
    from tglassmlp.training.datamodule import DatasetNotFoundError
    from tglassmlp.tracking import TrackingStoreError

    monkeypatch.setattr(train_module, "build", lambda *a, **k: pytest.fail("build() reached"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = compose_train([f"data.root={synthetic_root}", f"logger.tracking_uri=http://127.0.0.1:{port}"])
    with pytest.raises(TrackingStoreError, match="cannot be reached"):
        train(cfg, run_dir=tmp_path / "run")
    cfg = compose_train([f"data.root={tmp_path}/missing", f"logger.tracking_uri=sqlite:///{tmp_path}/m.db"])
    with pytest.raises(DatasetNotFoundError, match="make demo"):
        train(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "m.db").exists()


# --------------------------------------------------------------------------------------------- CLI + server
def _runs(db: Path) -> list[tuple[str, str]]:
    if not db.exists():
        return []
    con = sqlite3.connect(str(db), timeout=5)
    try:
        return con.execute("SELECT r.run_uuid, r.status FROM runs r "
                           "WHERE EXISTS (SELECT 1 FROM metrics m WHERE m.run_uuid = r.run_uuid)").fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        con.close()


def _cli(args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([PYTHON, "train.py", *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def test_multirun_after_a_killed_run_read_back_through_a_server(request, synthetic_root, tmp_path):
    """A run SIGKILLed mid-training leaves the store usable; `-m seed=0..1` then records two finished runs,
    which a real `mlflow server` on the same database serves with their seed tags and metrics."""
    fresh_store(request, tmp_path)
    db = tmp_path / "mlflow.db"
    common = [f"data.root={synthetic_root}", f"logger.tracking_uri=sqlite:///{db}", f"paths.output_dir={tmp_path}/out",
              "debug=fast", "num_threads=1", "trainer.enable_progress_bar=false"]

    # 1. a long run, killed once it has logged metrics
    victim = _cli(common + ["trainer.max_epochs=100000", "seed=7"])
    try:
        deadline = time.time() + 120
        while not _runs(db) and time.time() < deadline and victim.poll() is None:
            time.sleep(0.5)
        assert _runs(db), f"the victim run never logged a metric:\n{victim.stdout.read() if victim.poll() is not None else ''}"
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
    assert victim.returncode == -signal.SIGKILL

    # 2. the literal ensemble command on the same store
    sweep = _cli(["-m", "seed=0..1", *common])
    out, _ = sweep.communicate(timeout=240)
    assert sweep.returncode == 0, out[-4000:]

    # 3. read back through a real server
    with mlflow_server(db) as url:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(url)
        exp = client.get_experiment_by_name("tglassmlp_demo/train")
        runs = client.search_runs([exp.experiment_id])
        (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]  # the multirun's parent run
        runs = [r for r in runs if r is not parent]
        finished = [r for r in runs if r.info.status == "FINISHED"]
        assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in finished)
        assert sorted(r.data.tags["seed"] for r in finished) == ["0", "1"]
        assert len({r.data.tags["sweep_id"] for r in finished}) == 1
        assert all(r.data.tags["dataset_hash"] == finished[0].data.tags["dataset_hash"] for r in finished)
        for r in finished:
            assert "test/avg/pearson" in r.data.metrics and "test/T0.600_c0.80/chi4_true" in r.data.metrics
            assert r.data.params["seed"] == r.data.tags["seed"]
        killed = [r for r in runs if r.data.tags.get("seed") == "7"]
        assert len(killed) == 1 and killed[0].info.status == "RUNNING"  # left as it was; harmless
        # the self-consistency selection at the end of the multirun scored and tagged both runs
        for r in finished:
            assert r.data.tags["ensemble.selected"] in ("true", "false")
            assert r.data.tags["ensemble.selection_basis"] == "structures below T_min"
            assert "selection/score" in r.data.metrics and "selection/selected" in r.data.metrics
        manifest = json.loads(next((tmp_path / "out").rglob("ensemble.json")).read_text())
        assert sorted(e["seed"] for e in manifest["ranking"]) == ["0", "1"]
        scores = [e["score"] for e in manifest["ranking"]]
        assert scores == sorted(scores) and all("T0.400_c0.80" in e["per_state_point"] for e in manifest["ranking"])
        assert manifest["selected"] == [e["run_id"] for e in manifest["ranking"] if e["selected"]]
        # default points: every dataset temperature below each run's own T_min (here only 0.4), no fallback
        assert manifest["points"] is None and manifest["fallback"] is None
        for e in manifest["ranking"]:
            assert e["score"] == max(e["per_state_point"].values()) and e["basis"] == "structures below T_min"
            assert {round(float(k[1:6]), 3) for k in e["per_state_point"]} == {0.4} and e["t_min"] > 0.4
            assert e["selected"] == (e["score"] < manifest["threshold"])
        # the manifest names its store, so predict's ManifestEnsemble needs nothing else; the weights it loads are
        # those train.py logged (save_model_dir -> MLflow -> load_model_dir)
        assert manifest["tracking_uri"] == f"sqlite:///{db}"
        from tglassmlp.predict import ManifestEnsemble

        ens = ManifestEnsemble(next((tmp_path / "out").rglob("ensemble.json")), top_k=2).load()
        assert set(ens.names) <= {e["run_id"] for e in manifest["ranking"]}
        assert all(m.state_points["train"] and m.scaler.n_kept == m.network.n_descriptors for m in ens.members)

"""analyze.py end to end on a small synthetic dataset with tiny saved networks, and the reader interface for
predictions: numbers in the tables against direct computations, figures written, MLflow run recorded."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tglassmlp.analysis.fields import (
    NetworkProbe,
    find_sweep_networks,
    prediction_field,
    structure_propensity,
)
from tglassmlp.analyze import HeterogeneitySettings, observe_ensemble, pearson_scores
from tglassmlp.data import shard_path, write_shard
from tglassmlp.model.network import TGlassMLP
from tglassmlp.observables import DescriptorScaler, descriptor_names, structural_descriptors
from tglassmlp.observables.four_point import four_point_susceptibility
from tglassmlp.observables.labels import labels_at_levels
from tglassmlp.observables.tts import master_curve
from tglassmlp.paths import config_dir
from tglassmlp.predict import save_model_dir

from conftest import random_configuration

BOX, N, BETA = 12.0, 120, 0.8
TAUS = {0.6: 20.0, 0.5: 60.0}
TIMES = np.geomspace(1, 400, 14)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """3 structures per temperature whose propensities decay on the master curve with random particle rates."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    raw = []
    for T, tau in TAUS.items():
        for k in range(3):
            pos, types = random_configuration(N, BOX, seed=100 * k + int(T * 10), min_distance=0.75)
            rate = np.exp(0.4 * rng.standard_normal(N))
            propensity = master_curve(TIMES[:, None] / tau, BETA) ** rate[None, :]
            write_shard(shard_path(root, T, k),
                        {"positions": pos, "types": types, "inherent_positions": pos, "times": TIMES,
                         "propensity": propensity.astype(np.float32)},
                        {"temperature": T, "box": BOX, "seed": k, "config": "{}", "source": "test", "equilibrated": 1})
            raw.append(structural_descriptors(pos, types, BOX)[types == 0])
    return root, raw


@pytest.fixture(scope="module")
def sweep(dataset, tmp_path_factory):
    """A train.py-like multirun folder with two small random networks (seeds 0, 1)."""
    _, raw = dataset
    root = tmp_path_factory.mktemp("sweep")
    scaler = DescriptorScaler(descriptor_names()).fit(raw)
    for seed in (0, 1):
        model = root / str(seed) / "artifacts" / "model"
        kwargs = {"n_descriptors": scaler.n_kept, "mlp1_hidden": [6, 6], "head_hidden": [10, 10]}
        net = TGlassMLP(**kwargs, seed=seed)
        save_model_dir(model, {**kwargs, "seed": None}, net, scaler, {"train": [[0.6, 0.8], [0.6, 0.5]]})
        (model.parent / "config").mkdir()
        OmegaConf.save(OmegaConf.create({"seed": seed, "data": {"train_fraction": 0.67, "split_seed": 0}}),
                       model.parent / "config" / "train.yaml")
    return root


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="analyze", overrides=overrides)


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_analyze_end_to_end(dataset, sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    from tglassmlp.analyze import analyze

    root, _ = dataset
    db = tmp_path / "mlflow.db"
    cfg = _compose([f"data_root={root}", f"out_dir={tmp_path / 'out'}", f"networks.sweep_dir={sweep}",
                    f"cache_dir={tmp_path / 'cache'}", f"logger.tracking_uri=sqlite:///{db}",
                    f"logger.artifact_location={tmp_path / 'artifacts'}", "study=test_analysis",
                    "figures.master_curve=false", "chi4.n_bootstrap=20", "chi4.n_bootstrap_fits=4",
                    "levels=[0.9,0.8,0.6]", "s4.q_max=2.0", "oz.q_max=1.6", "figures.dpi=60"])
    result = analyze(cfg)
    names = {p.split("/")[-1] for p in result["figures"]}
    assert {"fig02_pearson.png", "fig03_snapshots.png", "fig04_chi4.png", "fig06_chi4_predicted.png",
            "fig07_xi4.png", "fig08_chords.png", "fig09_attention.png", "fig10_bottleneck_levels.png",
            "fig11_bottleneck_temperatures.png", "fig12_length_scales.png", "fig14_prefactor_A.png",
            "fig05_snapshots_time.png"} <= names
    assert not list((tmp_path / "out").rglob("*.tmp-*"))  # atomic writes leave no temporary files

    # chi_4 of the MD rows equals Eq. (9) computed directly from the shards' type-0 propensities
    from tglassmlp.data import read_shard

    rows = _read_csv(tmp_path / "out" / "tables" / "levels.csv")
    md_row = next(r for r in rows if r["source"] == "MD" and float(r["T"]) == 0.5 and float(r["level"]) == 0.8)
    shards = [read_shard(shard_path(root, 0.5, k)) for k in range(3)]
    ref = [s["types"] == 0 for s in shards]
    curve = np.mean([s["propensity"][:, m].mean(1) for s, m in zip(shards, ref)], axis=0)
    labels = [labels_at_levels(TIMES, s["propensity"][:, m], curve, [0.8])[1] for s, m in zip(shards, ref)]
    assert float(md_row["chi4"]) == pytest.approx(four_point_susceptibility(labels)[0], rel=1e-5)
    # the networks were trained (per their state points) at T = 0.6: 2 of its 3 structures are training ones
    pred_06 = [r for r in rows if r["source"] == "tGlassMLP" and float(r["T"]) == 0.6]
    assert len(pred_06) == 3 and all(r["n_train"] == "2" and r["n_test"] == "1" for r in pred_06)
    assert all(-1 <= float(r["pearson_test"]) <= 1 and float(r["pearson_test_err"]) >= 0 for r in pred_06)
    attention = _read_csv(tmp_path / "out" / "tables" / "attention.csv")
    p_cols = [k for k in attention[0] if k.startswith("P_L")]
    assert sum(float(attention[0][k]) for k in p_cols) == pytest.approx(1.0, abs=1e-5)

    client = MlflowClient(f"sqlite:///{db}")
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.runName"] == "analysis-demo"
    assert run.data.metrics["MD/T0.500_c0.80/chi4"] == pytest.approx(float(md_row["chi4"]), rel=1e-5)
    logged = {a.path for a in client.list_artifacts(result["run_id"], "figures")}
    assert "figures/fig04_chi4.png" in logged


def test_analyze_md_only_without_mlflow(dataset, tmp_path):
    from tglassmlp.analyze import analyze

    root, _ = dataset
    cfg = _compose([f"data_root={root}", f"out_dir={tmp_path / 'out'}", "networks.sweep_dir=null", "mlflow=false",
                    "figures.master_curve=false", "chi4.n_bootstrap=5", "chi4.n_bootstrap_fits=2", "s4.q_max=2.0",
                    "figures.dpi=50"])
    result = analyze(cfg)
    assert result["run_id"] is None
    names = {p.split("/")[-1] for p in result["figures"]}
    assert "fig04_chi4.png" in names and "fig02_pearson.png" not in names
    series = _read_csv(tmp_path / "out" / "tables" / "md_time_series.csv")
    assert len(series) == 2 * len(TIMES)


def test_network_probe_matches_a_direct_forward_pass(dataset, sweep):
    _, raw = dataset
    nets = find_sweep_networks(sweep)
    probe = NetworkProbe(nets)
    res = probe.run(raw[0], 0.5, [0.9, 0.5])
    assert res.propensity.shape == (2, 2, raw[0].shape[0])
    with torch.no_grad():
        x = torch.as_tensor(nets[1].scaler.transform(raw[0]), dtype=torch.float32)
        direct = nets[1].network(x, 0.5, 0.5).numpy()
    np.testing.assert_allclose(res.propensity[1, 1], direct, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.attention.sum(-1), 1.0, rtol=1e-5)
    assert res.bottleneck.shape[-1] == 2


def test_find_sweep_networks_selected_needs_a_manifest(sweep):
    with pytest.raises(FileNotFoundError, match="ensemble.json"):
        find_sweep_networks(sweep, "selected")


def test_find_sweep_networks_needs_the_training_state_points(sweep, tmp_path):
    """The analysis separates trained from unseen temperatures: a model folder without state_points.json is refused."""
    import shutil

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    nets = find_sweep_networks(copy)
    assert [n.training_temperatures for n in nets] == [[0.6], [0.6]] and nets[1].config["seed"] == 1
    (copy / "1" / "artifacts" / "model" / "state_points.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"1/artifacts/model: no state_points.json"):
        find_sweep_networks(copy)


# ------------------------------------------------------------------------------------------------ reader interface
def test_structure_propensity_validates_and_selects_the_reference_type():
    pos = np.random.default_rng(1).uniform(0, 10, (6, 2))
    types = np.array([0, 1, 0, 2, 0, 0])
    s = structure_propensity(pos, 10.0, np.linspace(0, 1, 6), spread=np.full(6, 0.1), types=types, reference_type=0)
    assert s.values.shape == (1, 4) and s.spread.shape == (1, 4)
    np.testing.assert_allclose(s.positions, pos[types == 0])
    with pytest.raises(ValueError, match="s7: propensity has shape"):
        structure_propensity(pos, 10.0, np.ones((2, 5)), name="s7")
    with pytest.raises(ValueError, match="members has shape"):
        structure_propensity(pos, 10.0, np.ones((2, 6)), members=np.ones((3, 1, 6)))
    with pytest.raises(ValueError, match="box"):
        structure_propensity(pos, -1.0, np.ones(6))


def test_ensemble_error_bars_are_the_spread_over_networks():
    rng = np.random.default_rng(2)
    n, m, s_count = 300, 3, 5
    structs, per_member = [], np.zeros((m, s_count, 2, n))
    for s in range(s_count):
        pos = rng.uniform(0, 20, (n, 2))
        members = rng.random((m, 2, n))
        per_member[:, s] = members
        structs.append(structure_propensity(pos, 20.0, members.mean(0), members.std(0), members, name=f"s{s}"))
    field = prediction_field(0.4, [0.8, 0.5], structs)
    settings = HeterogeneitySettings({"n_bootstrap": 0}, {"q_max": 1.0}, {"q_max": 0.6}, {"cell_size": 2.0})
    obs = observe_ensemble(field, settings)
    chi_members = np.array([four_point_susceptibility(list(per_member[j])) for j in range(m)])
    np.testing.assert_allclose(obs["chi4"], chi_members.mean(0), rtol=1e-10)
    np.testing.assert_allclose(obs["chi4_err"], chi_members.std(0, ddof=1), rtol=1e-10)
    assert obs["n_networks"] == m
    assert np.all(np.isnan(field.times))  # no TTS given: no time axis


def test_pearson_scores_against_numpy():
    rng = np.random.default_rng(3)
    structs, expected = [], []
    for s in range(3):
        truth = rng.random((1, 200))
        members = truth[None] + rng.normal(0, 0.3, (2, 1, 200))
        st = structure_propensity(rng.uniform(0, 5, (200, 2)), 5.0, members.mean(0), members=members, truth=truth,
                                  trained=(s == 0))
        structs.append(st)
        if s:
            expected.append([np.corrcoef(members[j, 0], truth[0])[0, 1] for j in range(2)])
    scores = pearson_scores(prediction_field(0.5, [0.7], structs))
    per_net = np.mean(expected, axis=0)
    assert scores["test"][0] == pytest.approx(per_net.mean())
    assert scores["test_err"][0] == pytest.approx(per_net.std(ddof=1))
    assert scores["test_n"] == 2 and scores["train_n"] == 1

"""analyze.py end to end on a small synthetic dataset with tiny saved networks, and the reader interface for
predictions: numbers in the tables against direct computations, figures written, MLflow run recorded."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import compose_config
from tglassmlp.analysis.fields import (
    NetworkProbe,
    find_sweep_networks,
    prediction_field,
    structure_propensity,
)
from tglassmlp.analysis.job import HeterogeneitySettings, observe_ensemble, pearson_scores
from tglassmlp.data import read_shard, shard_path, write_shard
from tglassmlp.model.network import TGlassMLP
from tglassmlp.observables import DescriptorScaler, descriptor_names, structural_descriptors
from tglassmlp.observables.four_point import four_point_susceptibility
from tglassmlp.observables.labels import labels_at_levels
from tglassmlp.observables.tts import master_curve
from tglassmlp.predict import save_model_dir

from conftest import random_configuration

BOX, N, BETA = 12.0, 120, 0.8
TAUS = {0.6: 20.0, 0.5: 60.0}
TIMES = np.geomspace(1, 400, 14)
N_RUNS = 4


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
            # N_RUNS runs whose rates scatter around the particle's: run-to-run noise that rho_max measures
            runs = master_curve(TIMES[None, :, None] / tau, BETA) ** (
                rate[None, None, :] * np.exp(0.5 * rng.standard_normal((N_RUNS, 1, N))))
            runs = runs.astype(np.float32)
            write_shard(shard_path(root, T, k),
                        {"positions": pos, "types": types, "inherent_positions": pos, "times": TIMES,
                         "bond_breaking": runs, "propensity": runs.mean(axis=0, dtype=np.float64)},
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
    return compose_config("analyze", overrides)


def _read_csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_analyze_end_to_end(dataset, sweep, tmp_path):
    from mlflow.tracking import MlflowClient

    from tglassmlp.analysis.job import analyze

    root, _ = dataset
    db = tmp_path / "mlflow.db"
    # a store of the layout before experiments by purpose: the study's one experiment holds its training runs
    old = MlflowClient(f"sqlite:///{db}")
    old_exp = old.create_experiment("test_analysis", artifact_location=(tmp_path / "old").as_uri())
    old.set_terminated(old.create_run(old_exp, tags={"seed": "0"}).info.run_id, "FINISHED")
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
    # rho_max beside rho_P: the split-half ceiling of the test structure's labels, by hand from its stored runs
    from tglassmlp.analysis.job import training_structures
    from tglassmlp.observables.labels import crossing_time, interpolate_log_time

    trained = training_structures(find_sweep_networks(sweep, "all"), root)
    (test_k,) = [k for k in range(3) if shard_path(root, 0.6, k).resolve() not in trained]
    shards6 = [read_shard(shard_path(root, 0.6, k)) for k in range(3)]
    curve6 = np.mean([s["propensity"][:, s["types"] == 0].mean(1) for s in shards6], axis=0)
    test_shard = shards6[test_k]
    for r in pred_06:
        t_star = crossing_time(TIMES, curve6, float(r["level"]))
        per_run = interpolate_log_time(TIMES, np.moveaxis(test_shard["bond_breaking"].astype(np.float64), 0, 1),
                                       t_star)[:, test_shard["types"] == 0]
        halves = [np.corrcoef(per_run[list(a)].mean(0), per_run[[j for j in range(4) if j not in a]].mean(0))[0, 1]
                  for a in ((0, 1), (0, 2), (0, 3))]
        r_h = np.mean(halves)
        assert float(r["rho_max_test"]) == pytest.approx(np.sqrt(2 * r_h / (1 + r_h)), rel=1e-4)
        assert 0 < float(r["rho_max_test"]) < 1 and r["n_runs"] == "4"
        assert float(r["pearson_test_over_rho_max"]) == pytest.approx(
            float(r["pearson_test"]) / float(r["rho_max_test"]), rel=1e-4)
    # the Eq. (11) window each MD row reports is the one the fit of its S_4 (s4.csv) uses
    from tglassmlp.observables.four_point import OrnsteinZernikeFit

    s4 = [x for x in _read_csv(tmp_path / "out" / "tables" / "s4.csv")
          if x["source"] == "MD" and float(x["T"]) == 0.5 and float(x["level"]) == 0.8]
    fit = OrnsteinZernikeFit(**OmegaConf.to_container(cfg.oz)).compute(
        np.array([float(x["q"]) for x in s4]), np.array([float(x["S4"]) for x in s4]))
    assert float(md_row["oz_window_q"]) == pytest.approx(fit.window_q_max, rel=1e-5)
    assert fit.window_q_max < cfg.oz.q_max  # the self-consistent window stops short of q_max here
    report = (tmp_path / "out" / "analysis.md").read_text()
    assert "| rho_P (test) | rho_max | rho_P/rho_max |" in report and "N_R = 4" in report
    attention = _read_csv(tmp_path / "out" / "tables" / "attention.csv")
    p_cols = [k for k in attention[0] if k.startswith("P_L")]
    assert sum(float(attention[0][k]) for k in p_cols) == pytest.approx(1.0, abs=1e-5)

    client = MlflowClient(f"sqlite:///{db}")
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.runName"] == "analysis-demo"
    # the analysis goes to <study>/analyze, beside the old experiment, which keeps its runs only
    assert run.info.experiment_id == client.get_experiment_by_name("test_analysis/analyze").experiment_id
    assert [r.data.tags["seed"] for r in client.search_runs([old_exp])] == ["0"]
    assert run.data.metrics["MD/T0.500_c0.80/chi4"] == pytest.approx(float(md_row["chi4"]), rel=1e-5)
    assert run.data.metrics["MD/T0.500_c0.80/oz_window_q"] == pytest.approx(float(md_row["oz_window_q"]), rel=1e-5)
    r0 = pred_06[0]
    name = f"tGlassMLP/T0.600_c{float(r0['level']):.2f}"
    assert run.data.metrics[f"{name}/rho_max_test"] == pytest.approx(float(r0["rho_max_test"]), rel=1e-5)
    assert run.data.metrics[f"{name}/pearson_test_over_rho_max"] == pytest.approx(
        float(r0["pearson_test_over_rho_max"]), rel=1e-5)
    assert run.data.params["oz.qxi_max"] == str(cfg.oz.qxi_max) and run.data.params["labels.n_runs"] == "4"
    logged = {a.path for a in client.list_artifacts(result["run_id"], "figures")}
    assert "figures/fig04_chi4.png" in logged


def test_analyze_md_only_without_mlflow(dataset, tmp_path):
    from tglassmlp.analysis.job import analyze

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


# ------------------------------------------------------------------------------------------------ predict.py files
LEVELS = [0.9, 0.8, 0.6]


def _predict(ensemble_dir, structures, out, levels=LEVELS):
    """predict.py's Python API on the tiny structures (the system checks off: a 12-sigma box of random types)."""
    from tglassmlp.predict import DirectoryEnsemble, predict_structures

    torch.set_num_threads(1)
    return predict_structures(DirectoryEnsemble(ensemble_dir).load(), structures, out, levels=levels,
                              cache_dir=None, density_rtol=10.0, composition_atol=1.0)


@pytest.fixture(scope="module")
def predicted(dataset, sweep, tmp_path_factory):
    """predict.py's out_dir for the 6 structures of the dataset, by the sweep's 2 networks (mean-constrained)."""
    root, _ = dataset
    out = tmp_path_factory.mktemp("pred")
    _predict(sweep, root, out)
    return out


def _h5(path, *names):
    import h5py

    with h5py.File(path, "r") as h5:
        return [h5[n][()] for n in names]


def _scope(path):
    """The mean constraint's scope recorded in a prediction file ('structure' before predict.py recorded it)."""
    import json

    import h5py

    with h5py.File(path, "r") as h5:
        return json.loads(h5.attrs["constraint"]).get("scope", "structure")


def test_prediction_files_become_fields_with_per_network_members(predicted, dataset):
    from tglassmlp.analysis.fields import read_prediction_fields
    from tglassmlp.predict import tts_from_dict

    root, _ = dataset
    tts = tts_from_dict({"beta": BETA, "tau_alpha": {str(t): tau for t, tau in TAUS.items()}, "arrhenius": None})
    fields = read_prediction_fields(predicted, tts=tts)
    assert [f.temperature for f in fields] == [0.6, 0.5] and all(len(f.structures) == 3 for f in fields)
    for f in fields:
        assert f.levels.tolist() == LEVELS and f.n_members == 2
        # the time axis from the master curve exp(-ln2 (t/tau)^beta) = c: t = tau (ln(1/c) / ln 2)^(1/beta)
        np.testing.assert_allclose(f.times, TAUS[f.temperature] * (np.log(1 / np.array(LEVELS)) / np.log(2)) ** (1 / BETA),
                                   rtol=1e-12)
    s = fields[1].structures[2]
    assert s.name == str(shard_path(root, 0.5, 2).resolve()) and s.file.endswith("T0.500_s0002.pred.h5")
    types, positions, mean, per_net, c_mean, conv = _h5(s.file, "types", "positions", "propensity_mean",
                                                       "propensity_networks", "constraint/mean_prediction",
                                                       "constraint/converged")
    ref = types == 0
    np.testing.assert_array_equal(s.positions, positions[ref])
    np.testing.assert_array_equal(s.values, mean[:, ref])
    np.testing.assert_array_equal(s.members, per_net[:, :, ref])
    # the members are the mean-constrained predictions: their type-0 average (over the structure, or over all
    # structures of the temperature when predict.py constrains them together) is the constraint's Xbar, which
    # equals the level wherever the iteration converged
    pooled = _scope(s.file) == "temperature"
    together = np.concatenate([t.members for t in fields[1].structures], axis=2) if pooled else s.members
    np.testing.assert_allclose(together.mean(axis=2), c_mean, atol=1e-6)
    assert np.all(np.abs(c_mean - np.array(LEVELS))[conv.astype(bool)] <= 1e-4)
    assert fields[0].info["converged_fraction"] == pytest.approx(
        np.mean([_h5(p, "constraint/converged")[0].mean() for p in fields[0].info["files"]]))

    # ensemble error bars: chi_4 (Eq. 9) per network over the 3 structures, then mean and std over networks
    settings = HeterogeneitySettings({"n_bootstrap": 0}, {"q_max": 2.0}, {"q_max": 1.6}, {"cell_size": 2.0})
    obs = observe_ensemble(fields[1], settings)
    files = sorted(predicted.glob("T0.500_*.pred.h5"))
    chi = np.array([four_point_susceptibility([_h5(p, "propensity_networks")[0][j][:, _h5(p, "types")[0] == 0]
                                               for p in files]) for j in range(2)])
    np.testing.assert_allclose(obs["chi4"], chi.mean(0), rtol=1e-6)
    np.testing.assert_allclose(obs["chi4_err"], chi.std(0, ddof=1), rtol=1e-6)


def test_prediction_files_refuse_missing_foreign_and_inconsistent_files(predicted, dataset, sweep, tmp_path):
    import shutil

    from tglassmlp.analysis.fields import read_prediction_fields
    from tglassmlp.predict import PredictionInputError

    root, _ = dataset

    def folder(name, files):
        d = tmp_path / name
        d.mkdir()
        for f in files:
            shutil.copy(f, d / Path(f).name)
        return d

    every = sorted(predicted.glob("*.pred.h5"))
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        read_prediction_fields(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"holds no \*.pred.h5"):
        read_prediction_fields(folder("empty", []))
    with pytest.raises(ValueError, match=r"\['s0000.h5'\] is not predict.py output"):
        read_prediction_fields(folder("data", every + [shard_path(root, 0.6, 0)]))
    shutil.copy(shard_path(root, 0.6, 0), tmp_path / "fake.pred.h5")
    with pytest.raises(PredictionInputError, match="fake.pred.h5: not a tglassmlp prediction file"):
        read_prediction_fields([*every, tmp_path / "fake.pred.h5"])
    # summary.json lists every file; one lost in a copy is named
    d = folder("incomplete", every + [predicted / "summary.json"])
    (d / "T0.500_s0001.pred.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"lists \['T0.500_s0001.pred.h5'\], missing"):
        read_prediction_fields(d)
    # a file of another ensemble (network 0 alone) is not one of the ensemble's members
    _predict(sweep / "0", [shard_path(root, 0.6, 0)], tmp_path / "one_net")
    other = tmp_path / "one_net" / "T0.600_s0000.pred.h5"
    with pytest.raises(ValueError, match=r"ensemble \(network digests\) .* differs from"):
        read_prediction_fields([*every[1:], other])
    # one temperature at two sets of levels
    _predict(sweep, [shard_path(root, 0.5, 0)], tmp_path / "levels", levels=[0.9, 0.8, 0.5])
    with pytest.raises(ValueError, match=r"T = 0.5: .* at levels \[0.9, 0.8, 0.6\], .* at \[0.9, 0.8, 0.5\]"):
        read_prediction_fields([p for p in every if p.name != "T0.500_s0000.pred.h5"]
                               + [tmp_path / "levels" / "T0.500_s0000.pred.h5"])
    shutil.copy(every[0], tmp_path / "copy.pred.h5")
    with pytest.raises(ValueError, match="both predict the structure"):
        read_prediction_fields([*every, tmp_path / "copy.pred.h5"])


def test_analyze_uses_the_prediction_files(dataset, predicted, tmp_path):
    """analyze.py predictions=files without networks: the predicted rows are the files' mean-constrained
    predictions (chi_4 per network, Pearson against MD), and the train/test split is found through the files'
    ensemble source (a model folder holding the runs' state points and configs)."""
    from tglassmlp.analysis.job import analyze
    from tglassmlp.training.datamodule import PropensityDataModule

    root, _ = dataset
    cfg = _compose([f"data_root={root}", f"out_dir={tmp_path / 'out'}", "networks.sweep_dir=null", "mlflow=false",
                    "predictions=files", f"predictions.path={predicted}", "figures.master_curve=false",
                    "chi4.n_bootstrap=5", "chi4.n_bootstrap_fits=2", "levels=[0.9,0.8,0.6]", "s4.q_max=2.0",
                    "oz.q_max=1.6", "figures.dpi=50"])
    result = analyze(cfg)
    names = {p.split("/")[-1] for p in result["figures"]}
    assert {"fig02_pearson.png", "fig03_snapshots.png", "fig05_snapshots_time.png", "fig06_chi4_predicted.png",
            "fig12_length_scales.png"} <= names and "fig09_attention.png" not in names
    notes = result["summary"]["notes"]
    assert any("predict.py files, 2 networks (directory" in n for n in notes)
    # a per-structure constraint pins each structure's mean (chi_4 ~ 0): the report says so
    per_structure = _scope(next(predicted.glob("*.pred.h5"))) == "structure"
    assert any("constraint was applied per structure" in n for n in notes) == per_structure
    rows = [r for r in _read_csv(tmp_path / "out" / "tables" / "levels.csv") if r["source"] == "tGlassMLP"]
    assert len(rows) == 6
    files = {T: sorted(predicted.glob(f"T{T:.3f}_*.pred.h5")) for T in TAUS}
    test_index = PropensityDataModule(root, train_fraction=0.67).split(0.6, [0, 1, 2])[1]
    shards = [read_shard(shard_path(root, 0.6, k)) for k in range(3)]
    curve = np.mean([s["propensity"][:, s["types"] == 0].mean(1) for s in shards], axis=0)
    for r in rows:
        T, k = float(r["T"]), LEVELS.index(float(r["level"]))
        per_net = [[_h5(p, "propensity_networks")[0][j, k][_h5(p, "types")[0] == 0] for p in files[T]] for j in range(2)]
        chi = [four_point_susceptibility([x[None] for x in per_net[j]])[0] for j in range(2)]
        assert float(r["chi4"]) == pytest.approx(np.mean(chi), rel=1e-5)
        assert float(r["chi4_err"]) == pytest.approx(np.std(chi, ddof=1), rel=1e-5)
        if T == 0.5:  # not a training temperature of the networks: every structure is a test structure
            assert r["n_test"] == "3" and r["n_train"] == "0"
            continue
        assert r["n_test"] == "1" and r["n_train"] == "2"
        s = shards[test_index[0]]
        truth = labels_at_levels(TIMES, s["propensity"][:, s["types"] == 0], curve, [LEVELS[k]])[1][0]
        rho = [np.corrcoef(per_net[j][test_index[0]], truth)[0, 1] for j in range(2)]
        assert float(r["pearson_test"]) == pytest.approx(np.mean(rho), rel=1e-5)

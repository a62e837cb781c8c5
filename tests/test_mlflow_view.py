"""The researcher's view of MLflow: a sweep's parent run, the selection on every run, the registered ensemble
read back through a real `mlflow server`, the label ceiling beside the test Pearson, experiments by purpose,
and stores written before them (one experiment per study, no parent runs) still feeding predict.py."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import compose_config, mlflow_server
from test_datamodule import make_synthetic_dataset
from test_tracking import fresh_store
from tglassmlp.paths import PROJECT_ROOT

HEADLINE = ("test/pearson_mean", "test/rho_max_mean", "test/pearson_over_ceiling")
#: predict.py on the synthetic structures: their density and composition are not the KA2D system's
LOOSE_CHECKS = ["check.density_rtol=10", "check.composition_atol=1"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _predict(overrides, tmp_path):
    from tglassmlp.predict import predict, read_prediction

    cfg = compose_config("predict", [*overrides, "progress=false", "cache_dir=null", "num_threads=1",
                                     f"paths.output_dir={tmp_path}", *LOOSE_CHECKS])
    result = predict(cfg)
    return result, {Path(f).name: read_prediction(f) for f in result["files"]}


def test_sweep_parent_selection_and_registry_through_a_server(request, tmp_path):
    """`train.py -m seed=0..2 debug=fast` against a real `mlflow server` on loopback, read back through its
    REST API: one parent run with three children, the selection on each, the sweep's table on the parent,
    the registered version with alias `selected`; predict.py from the registry equals predict.py from the
    manifest."""
    from mlflow.tracking import MlflowClient

    root = make_synthetic_dataset(tmp_path / "data", temperatures=(0.5, 0.6), n_structures=4, n=60, box=8.5,
                                  no_md_temperatures=(0.4,), n_runs=2)
    fresh_store(request, tmp_path)  # the schema, ready-made: the server would spend its start-up migrating
    with mlflow_server(tmp_path / "mlflow.db", tmp_path / "server-artifacts") as url:
        cmd = [sys.executable, "train.py", "-m", "seed=0..2", "debug=fast", f"data.root={root}",
               f"logger.tracking_uri={url}", f"paths.output_dir={tmp_path}/out", "num_threads=1", "study=srv",
               "logger.log_figures=false", "hydra.callbacks.self_consistency.fallback_top_k=2"]
        proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-5000:]
        # quiet console: no Lightning tips or model summaries, no bars of jobs; one start and one end line per job
        assert "Tip:" not in out and "Total params" not in out and "Validation DataLoader" not in out
        assert "LeafSpec" not in out
        assert sum("training 3 epochs" in line for line in out.splitlines()) == 3
        assert sum(": done in " in line for line in out.splitlines()) == 3
        assert "registry:  srv.ensemble version 1 (alias selected)" in out

        client = MlflowClient(url)
        exp = client.get_experiment_by_name("srv/train")
        # the experiment was created through the server: artefacts go up and come down through it
        assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
        runs = client.search_runs([exp.experiment_id], max_results=100)
        (parent,) = [r for r in runs if r.data.tags.get("kind") == "sweep"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(runs) == 4 and sorted(int(r.data.tags["seed"]) for r in children) == [0, 1, 2]
        assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
        assert "mlflow.parentRunId" not in parent.data.tags
        assert "seed=range(0,3)" in parent.data.params["sweep.overrides"]

        manifest = json.loads(next((tmp_path / "out").rglob("ensemble.json")).read_text())
        by_run = {e["run_id"]: e for e in manifest["ranking"]}
        assert len(manifest["selected"]) == 2 and manifest["fallback"]  # debug=fast networks: the fallback chose
        for r in children:
            m, tags, e = r.data.metrics, r.data.tags, by_run[r.info.run_id]
            assert m["selection/score"] == pytest.approx(e["score"], rel=1e-12)
            assert m["selection/selected"] == (1.0 if e["selected"] else 0.0)
            assert tags["ensemble.selected"] == str(e["selected"]).lower()
            assert tags["ensemble.selection_basis"] == "structures below T_min; fallback top-k"
            assert tags["ensemble.threshold"] == "0.0001"
            # the headline metrics: Pearson is test/avg/pearson, the ceiling the mean of the state points'
            assert m["test/pearson_mean"] == pytest.approx(m["test/avg/pearson"], rel=1e-6)  # Lightning logs float32
            points = [k.split("/")[1] for k in m if k.endswith("/rho_max") and k.count("/") == 2]
            assert len(points) == 8  # 2 temperatures x the 4 levels of conf/data/demo.yaml
            assert m["test/rho_max_mean"] == pytest.approx(np.mean([m[f"test/{p}/rho_max"] for p in points]))
            assert m["test/pearson_over_ceiling"] == pytest.approx(
                np.mean([m[f"test/{p}/pearson"] / m[f"test/{p}/rho_max"] for p in points]))
            assert {k: e["metrics"][k] for k in HEADLINE} == {k: m[k] for k in HEADLINE}

        # the printed link's view: a saved view of the experiment whose metric columns the runs have
        record = json.loads(exp.tags["mlflow.sharedViewState.tglassmlp"])
        view = json.loads(record["state"])
        assert record["name"] and view["runsExpanded"] == {parent.info.run_id: True}
        logged = set(parent.data.metrics).union(*(r.data.metrics for r in children))
        columns = [c[len("metrics.`"):-1] for c in view["selectedColumns"] if c.startswith("metrics.")]
        assert columns[:3] == list(HEADLINE) and set(columns) <= logged
        assert f"{url}/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=tglassmlp" in out

        # the parent: the selection table as metrics, tags and an artefact; the ensemble's summary
        pm, pt = parent.data.metrics, parent.data.tags
        for r in children:
            seed, e = r.data.tags["seed"], by_run[r.info.run_id]
            assert pm[f"selection/seed{seed}/score"] == pytest.approx(e["score"], rel=1e-12)
            assert pm[f"selection/seed{seed}/selected"] == (1.0 if e["selected"] else 0.0)
            assert pt[f"selection.seed{seed}.basis"] == e["basis"]
        assert pm["selection/n_runs"] == 3 and pm["selection/n_selected"] == 2
        assert pm["selection/score"] == min(e["score"] for e in manifest["ranking"])
        selected = [r for r in children if r.info.run_id in manifest["selected"]]
        for key in HEADLINE:
            assert pm[key] == pytest.approx(np.mean([r.data.metrics[key] for r in selected]), rel=1e-12)
        table = Path(client.download_artifacts(parent.info.run_id, "selection.csv", str(tmp_path / "dl")))
        rows = list(csv.DictReader(io.StringIO(table.read_text())))
        assert [r["run_id"] for r in rows] == [e["run_id"] for e in manifest["ranking"]]
        assert all(float(r["threshold"]) == 1e-4 and r["selected"] in ("True", "False") for r in rows)

        # the registry: one version, alias 'selected', its source the parent's ensemble/ folder
        version = client.get_model_version_by_alias("srv.ensemble", "selected")
        assert version.version == "1" and version.run_id == parent.info.run_id
        assert version.source == f"runs:/{parent.info.run_id}/ensemble" and version.tags["n_members"] == "2"
        members = {f.path.split("/")[-1] for f in client.list_artifacts(parent.info.run_id, "ensemble/members")}
        assert members == set(manifest["selected"])

        # predict.py from the registry (through the server) == predict.py from the manifest
        structures = f"structures={root}/T0.400"
        reg, from_registry = _predict(["ensemble_source=registry", f"ensemble_source.tracking_uri={url}",
                                       "ensemble_source.name=srv.ensemble", structures, "track=false",
                                       f"out_dir={tmp_path}/p_registry"], tmp_path)
        _, from_manifest = _predict(["ensemble_source=manifest", f"ensemble_source.tracking_uri={url}",
                                     f"ensemble_source.manifest={next((tmp_path / 'out').rglob('ensemble.json'))}",
                                     structures, "track=false", f"out_dir={tmp_path}/p_manifest"], tmp_path)
    assert reg["ensemble_source"]["kind"] == "registry" and reg["ensemble_source"]["version"] == "1"
    assert sorted(from_registry) == sorted(from_manifest) and len(from_registry) == 4
    for name, d in from_registry.items():
        assert d["propensity_networks"].shape[:2] == (2, 4)  # 2 networks, the 4 default levels
        assert np.isfinite(d["propensity_mean"][:, d["reference_index"]]).all()
        np.testing.assert_array_equal(d["propensity_mean"], from_manifest[name]["propensity_mean"])
        np.testing.assert_array_equal(d["propensity_networks"], from_manifest[name]["propensity_networks"])


def test_label_ceiling_of_the_test_structures_against_two_run_split_half(tmp_path):
    """rho_max of the test samples = the mean over test structures of sqrt(2 r / (1 + r)), r the Pearson of
    the two runs' C_B at the label time (two runs: one split, Spearman-Brown to N_R = 2), computed here from
    the shards with numpy."""
    from tglassmlp.training.datamodule import PropensityDataModule
    from tglassmlp.data.shards import read_shard
    from tglassmlp.training.job import headline_metrics, label_ceilings

    root = make_synthetic_dataset(tmp_path / "d", temperatures=(0.6,), n_structures=4, n=60, box=8.5, n_runs=2,
                                  run_noise=0.15)
    dm = PropensityDataModule(root, levels=(0.8, 0.5), train_fraction=0.5, cache_dir=None)
    dm.setup()
    ceilings = label_ceilings(dm)
    assert sorted(ceilings) == ["T0.600_c0.50", "T0.600_c0.80"]
    for c in (0.8, 0.5):
        expected = []
        for s in [s for s in dm.test_samples if s.level == c]:
            rec = dm.structures[s.structure]
            runs = read_shard(rec.path, ["bond_breaking", "times"])
            k = np.searchsorted(runs["times"], s.t_star)
            w = (np.log(s.t_star) - np.log(runs["times"][k - 1])) / (np.log(runs["times"][k]) - np.log(runs["times"][k - 1]))
            at = ((1 - w) * runs["bond_breaking"][:, k - 1] + w * runs["bond_breaking"][:, k])[:, rec.reference]
            r = np.corrcoef(at[0], at[1])[0, 1]
            expected.append(math.sqrt(2 * r / (1 + r)))
        assert len(expected) == 2
        assert ceilings[f"T0.600_c{c:.2f}"] == pytest.approx(np.mean(expected), rel=1e-9)
    # noisier runs, lower ceiling; noise-free runs: rho_max = 1
    assert 0.5 < min(ceilings.values()) < 0.999
    metrics = {"test/avg/pearson": 0.3, "test/T0.600_c0.80/pearson": 0.4, "test/T0.600_c0.50/pearson": 0.2}
    head = headline_metrics(metrics, ceilings)
    assert head["test/pearson_mean"] == 0.3
    assert head["test/pearson_over_ceiling"] == pytest.approx(
        (0.4 / ceilings["T0.600_c0.80"] + 0.2 / ceilings["T0.600_c0.50"]) / 2)
    # labels that are not the runs' mean (transferred labels) get no ceiling
    dm.test_samples[0].labels = dm.test_samples[0].labels + 0.01
    assert len(label_ceilings(dm)) == 1
    # without per-run values: no ceiling at all, and no headline ceiling metrics
    bare = make_synthetic_dataset(tmp_path / "bare", temperatures=(0.6,), n_structures=4, n=60, box=8.5)
    dm2 = PropensityDataModule(bare, levels=(0.8,), train_fraction=0.5, cache_dir=None)
    dm2.setup()
    assert label_ceilings(dm2) == {}
    assert set(headline_metrics(metrics, {})) == {"test/pearson_mean"}


def _old_store_run(client, experiment_id, model_dir, seed, selected, score):
    """A finished training run as train.py logged them before experiments by purpose and parent runs."""
    run = client.create_run(experiment_id, tags={"seed": str(seed), "sweep_id": "/old/sweep",
                                                 "ensemble.selected": str(selected).lower(),
                                                 "mlflow.runName": f"seed{seed}"})
    rid = run.info.run_id
    client.log_metric(rid, "selection/self_consistency", score)
    client.log_metric(rid, "test/avg/pearson", 0.5)
    client.log_artifacts(rid, str(model_dir), "model")
    client.set_terminated(rid, "FINISHED")
    return rid


def test_an_old_store_still_feeds_predict(request, tmp_path):
    """A store with one experiment per study (`old`) and no parent runs: predict.py's mlflow source (which now
    looks for `old/train`) and a manifest of that layout still find the networks; predict's own run goes to
    `old/predict` beside it."""
    from tglassmlp.data.structures import read_structure
    from tglassmlp.model.artifact import save_model_dir
    from tglassmlp.model.network import TGlassMLP
    from tglassmlp.observables import DescriptorScaler
    from tglassmlp.observables.descriptors import descriptor_names, structural_descriptors
    from tglassmlp.tracking import make_client

    root = make_synthetic_dataset(tmp_path / "data", temperatures=(0.6,), n_structures=2, n=60, box=8.5)
    uri = fresh_store(request, tmp_path)
    raw = []
    for p in sorted(root.rglob("*.h5")):
        s = read_structure(p)
        raw.append(structural_descriptors(s.inherent_positions, s.types, s.box)[s.types == 0])
    scaler = DescriptorScaler(descriptor_names()).fit(raw)
    client = make_client(uri)
    exp = client.create_experiment("old", artifact_location=(tmp_path / "old-artifacts").as_uri())
    ids = []
    for seed, (selected, score) in enumerate([(True, 2e-5), (False, 0.3), (True, 1e-5)]):
        kwargs = {"n_descriptors": scaler.n_kept, "mlp1_hidden": [6, 6], "head_hidden": [10, 10]}
        model = save_model_dir(tmp_path / f"m{seed}", {**kwargs, "seed": None}, TGlassMLP(**kwargs, seed=seed),
                               scaler, {"train": [[0.6, 0.8]]})
        ids.append(_old_store_run(client, exp, model, seed, selected, score))
    manifest = tmp_path / "ensemble.json"
    manifest.write_text(json.dumps({"sweep_id": "/old/sweep", "experiment_id": exp, "tracking_uri": uri,
                                    "threshold": 1e-4, "selected": [ids[2], ids[0]], "ranking": [
                                        {"run_id": ids[2], "seed": "2", "score": 1e-5, "selected": True},
                                        {"run_id": ids[0], "seed": "0", "score": 2e-5, "selected": True},
                                        {"run_id": ids[1], "seed": "1", "score": 0.3, "selected": False}]}))

    common = [f"structures={root}/T0.600/s0000.h5", "levels=[0.8]", "study=old", f"logger.tracking_uri={uri}"]
    res_mlflow, by_mlflow = _predict(["ensemble_source=mlflow", f"ensemble_source.tracking_uri={uri}",
                                      f"out_dir={tmp_path}/p1", *common], tmp_path)
    res_manifest, by_manifest = _predict(["ensemble_source=manifest", f"ensemble_source.manifest={manifest}",
                                          f"out_dir={tmp_path}/p2", "track=false", *common], tmp_path)
    # the selected runs, best selection score first (the old metric name), from the legacy experiment
    assert res_mlflow["ensemble_source"]["experiment"] == "old"
    assert [m["name"] for m in res_mlflow["ensemble"]] == [ids[2], ids[0]]
    assert [m["name"] for m in res_manifest["ensemble"]] == [ids[2], ids[0]]
    (name,) = by_mlflow
    np.testing.assert_array_equal(by_mlflow[name]["propensity_networks"], by_manifest[name]["propensity_networks"])
    runs = client.search_runs([client.get_experiment_by_name("old/predict").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.search_runs([exp])) == 3  # the old experiment is read, never written


def test_quiet_console_is_local_and_selective():
    """Quiet mode changes logger levels only inside its block and ignores only the listed warnings."""
    import logging
    import warnings

    from tglassmlp.training.console import QUIET_LOGGERS, quiet_loggers, quiet_warnings

    before = {n: logging.getLogger(n).level for n in QUIET_LOGGERS}
    with quiet_loggers():
        assert all(logging.getLogger(n).level == logging.WARNING for n in QUIET_LOGGERS)
    assert {n: logging.getLogger(n).level for n in QUIET_LOGGERS} == before
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_warnings():
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", DeprecationWarning)
            warnings.warn("The number of training batches (3) is smaller than the logging interval", UserWarning)
            warnings.warn("something else is deprecated", DeprecationWarning)
        with quiet_warnings(enabled=False):
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", DeprecationWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated",
                                              "`isinstance(treespec, LeafSpec)` is deprecated, use ..."]


def test_experiment_names_and_links():
    from tglassmlp.tracking import experiment_name, legacy_experiment_names, ui_link

    assert experiment_name("demo", "train") == "demo/train"
    with pytest.raises(ValueError, match="purpose"):
        experiment_name("demo", "plots")
    assert legacy_experiment_names("demo/train") == ["demo/train", "demo"]
    assert legacy_experiment_names("a/b/predict") == ["a/b/predict", "a/b"]
    assert legacy_experiment_names("demo") == ["demo"]
    assert ui_link("3", "sqlite:////x.db") == "http://127.0.0.1:5000/#/experiments/3/runs?viewStateShareKey=tglassmlp"
    assert ui_link("3", "http://host:8080/", view=None) == "http://host:8080/#/experiments/3/runs"

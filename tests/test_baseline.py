"""Ridge baseline per state point and its comparison table with a tGlassMLP ensemble."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from test_datamodule import make_synthetic_dataset
from test_tracking import fresh_store
from tglassmlp.analysis.baseline import (
    ManifestError,
    comparison_table,
    fit_ridge_cv,
    main,
    read_manifest,
    ridge_baseline,
    run_metrics_from_mlflow,
    state_point_samples,
    write_comparison,
)
from tglassmlp.training.datamodule import PropensityDataModule


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def dm(synthetic_root, tmp_path_factory):
    module = PropensityDataModule(synthetic_root, levels=(0.8, 0.5), train_fraction=0.67,
                                  cache_dir=tmp_path_factory.mktemp("cache"), shuffle=False)
    module.setup()
    return module


# --------------------------------------------------------------------------------------------- ridge
def test_ridge_recovers_a_linear_model():
    rng = np.random.default_rng(0)
    coef = rng.normal(size=7)
    xs = [rng.normal(size=(50, 7)) for _ in range(4)]
    ys = [x @ coef + 0.3 for x in xs]
    model = fit_ridge_cv(xs, ys, cv_metric="mse")
    assert model.cv_groups == "structures" and model.n_folds == 4
    np.testing.assert_allclose(model.coef, coef, atol=1e-5)
    assert model.intercept == pytest.approx(0.3, abs=1e-5)
    x_new = rng.normal(size=(20, 7))
    np.testing.assert_allclose(model.predict(x_new), x_new @ coef + 0.3, atol=1e-4)


def test_ridge_prefers_a_large_penalty_on_pure_noise_and_handles_one_structure():
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(40, 30)) for _ in range(5)]
    ys = [rng.normal(size=40) for _ in range(5)]
    model = fit_ridge_cv(xs, ys, cv_metric="mse")
    assert model.alpha >= 1.0  # noise labels: shrinking helps the held-out MSE
    one = fit_ridge_cv(xs[:1], [xs[0] @ np.arange(30.0)], cv_metric="pearson")
    assert one.cv_groups == "particles"
    with pytest.raises(ValueError, match="cv_metric"):
        fit_ridge_cv(xs, ys, cv_metric="r2")
    with pytest.raises(ValueError, match="does not match"):
        fit_ridge_cv([xs[0]], [ys[0][:-1]])


def test_baseline_uses_the_data_module_split_and_is_exact_on_linear_labels(dm):
    """Labels replaced by a noiseless, state-point-dependent linear function of the standardised descriptors:
    the ridge fitted per state point predicts the test structures with Pearson ~ 1."""
    rng = np.random.default_rng(2)
    coefs = {sp: rng.normal(size=dm.n_features) for sp in dm.state_points}
    saved = [(s, s.labels) for s in dm.train_samples + dm.test_samples]
    try:
        for s in dm.train_samples + dm.test_samples:
            x = dm.structures[s.structure].features.astype(np.float64)
            s.labels = x @ coefs[(s.temperature, s.level)] + s.level
        result = ridge_baseline(dm, cv_metric="pearson")
    finally:
        for s, labels in saved:
            s.labels = labels
    assert set(result) == {"T0.500_c0.50", "T0.500_c0.80", "T0.600_c0.50", "T0.600_c0.80"}
    samples = state_point_samples(dm)
    for (t, c), parts in samples.items():
        row = result[f"T{t:.3f}_c{c:.2f}"]
        assert row["pearson"] > 0.9999, row
        assert row["n_train_structures"] == len(parts["train"]) == 4  # round(0.67 * 6)
        assert row["n_test_structures"] == len(parts["test"]) == 2
        train_ids = {k for _, _, k in parts["train"]}
        assert train_ids == {s.structure for s in dm.train_samples if s.temperature == t}
        assert not train_ids & {k for _, _, k in parts["test"]}


def test_baseline_on_the_synthetic_propensity_is_positive(dm):
    """The synthetic propensity is a monotone function of one descriptor: a linear fit correlates well."""
    result = ridge_baseline(dm)
    assert all(r["pearson"] > 0.5 for r in result.values()), result
    assert all(np.isfinite(r["alpha"]) and r["cv_groups"] == "structures" for r in result.values())


def test_ceilings_of_the_held_out_labels_on_the_demo_data(tmp_path):
    """rho_max beside the ridge Pearson: the demo's test structures' 4 runs at each sample's t*, split-half by hand."""
    from itertools import combinations

    from tglassmlp.analysis.baseline import state_point_ceilings
    from tglassmlp.data import read_shard
    from tglassmlp.observables.labels import interpolate_log_time
    from tglassmlp.paths import PROJECT_ROOT

    dm = PropensityDataModule(PROJECT_ROOT / "data" / "demo", state_points={0.6: [0.8, 0.5]}, train_fraction=0.5,
                              cache_dir=tmp_path, shuffle=False)
    dm.setup()
    ceilings = state_point_ceilings(dm)
    assert set(ceilings) == {"T0.600_c0.80", "T0.600_c0.50"}
    for (t, c), name in (((0.6, 0.8), "T0.600_c0.80"), ((0.6, 0.5), "T0.600_c0.50")):
        rho = []
        for sample in (x for x in dm.test_samples if (x.temperature, x.level) == (t, c)):
            shard = read_shard(dm.structures[sample.structure].path)
            ref = shard["types"] == 0
            runs = interpolate_log_time(shard["times"], np.moveaxis(shard["bond_breaking"].astype(float), 0, 1),
                                        sample.t_star)[:, ref]
            np.testing.assert_allclose(runs.mean(0), sample.labels, atol=1e-6)  # the runs average to the labels
            r_h = np.mean([np.corrcoef(runs[list(a)].mean(0), runs[[k for k in range(4) if k not in a]].mean(0))[0, 1]
                           for a in combinations(range(4), 2) if 0 in a])
            rho.append(np.sqrt(2 * r_h / (1 + r_h)))
        assert len(rho) == 2 and ceilings[name]["n_runs"] == [4]
        assert ceilings[name]["rho_max"] == pytest.approx(np.mean(rho), rel=1e-6)
        assert 0.2 < ceilings[name]["rho_max"] < 0.9


def test_state_point_samples_needs_setup(synthetic_root):
    with pytest.raises(RuntimeError, match="setup"):
        state_point_samples(PropensityDataModule(synthetic_root, cache_dir=None))


# --------------------------------------------------------------------------------------------- table
RIDGE = {"T0.500_c0.80": {"pearson": 0.40, "alpha": 1e-2}, "T0.600_c0.50": {"pearson": 0.60, "alpha": 1.0}}


def _run(a, b, extra=None):
    m = {"test/T0.500_c0.80/pearson": a, "test/T0.600_c0.50/pearson": b, "test/avg/pearson": (a + b) / 2,
         "test/T0.500_c0.80/mae": 0.1, "val/T0.500_c0.80/pearson": 0.99, "train/loss": 0.3}
    m.update(extra or {})
    return m


def test_comparison_table_by_hand():
    ridge = {k: {**v, "rho_max": 0.8} for k, v in RIDGE.items()}
    table = comparison_table([_run(0.5, 0.6), _run(0.7, 0.5)], ridge, run_ids=["a", "b"])
    rows = {r["state_point"]: r for r in table["rows"]}
    assert rows["T0.500_c0.80"]["mlp_over_rho_max"] == pytest.approx(0.6 / 0.8)
    assert rows["T0.500_c0.80"]["ridge_over_rho_max"] == pytest.approx(0.4 / 0.8)
    assert table["average"]["rho_max"] == pytest.approx(0.8)
    assert table["average"]["mlp_over_rho_max"] == pytest.approx(0.575 / 0.8)
    assert "| 0.800 | 0.75 | 0.50 |" in write_comparison(table, ridge, Path(tempfile.mkdtemp()))[0].read_text()
    assert rows["T0.500_c0.80"]["mlp_mean"] == pytest.approx(0.6)
    assert rows["T0.500_c0.80"]["mlp_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert rows["T0.500_c0.80"]["difference"] == pytest.approx(0.2)
    assert rows["T0.600_c0.50"]["mlp_mean"] == pytest.approx(0.55)
    assert (rows["T0.600_c0.50"]["temperature"], rows["T0.600_c0.50"]["level"]) == (0.6, 0.5)
    assert [r["state_point"] for r in table["rows"]] == ["T0.500_c0.80", "T0.600_c0.50"]
    avg = table["average"]
    assert avg["state_points"] == 2 and avg["mlp_mean"] == pytest.approx(0.575) and avg["ridge"] == pytest.approx(0.5)
    assert avg["mlp_std"] == pytest.approx(np.std([0.55, 0.6], ddof=1))  # spread of the per-run averages
    assert table["matches_or_beats"] is True and table["beats"] is True
    assert table["wins"] == 1 and table["n_compared"] == 2 and table["n_runs"] == 2


def test_comparison_table_falls_below_and_tolerance_and_missing_points():
    weak = comparison_table([_run(0.35, 0.60)], RIDGE)
    assert weak["average"]["mlp_mean"] == pytest.approx(0.475)
    assert weak["average"]["mlp_std"] == 0.0  # one run
    assert weak["matches_or_beats"] is False and weak["beats"] is False
    assert comparison_table([_run(0.35, 0.60)], RIDGE, tolerance=0.05)["matches_or_beats"] is True
    # a state point only the ensemble has (and a NaN value) is listed but not averaged
    extra = _run(0.5, 0.6, {"test/T0.450_c0.65/pearson": 0.9, "test/T0.400_c0.50/pearson": float("nan")})
    table = comparison_table([extra], RIDGE)
    assert table["n_compared"] == 2 and table["average"]["mlp_mean"] == pytest.approx(0.55)
    assert {m["state_point"] for m in table["missing"]} == {"T0.450_c0.65", "T0.400_c0.50"}


def test_comparison_table_errors():
    with pytest.raises(ValueError, match="empty"):
        comparison_table([], RIDGE)
    with pytest.raises(ManifestError, match="run r2 has no 'test/"):
        comparison_table([_run(0.5, 0.5), {"test/avg/pearson": 0.5}], RIDGE, run_ids=["r1", "r2"])


def test_write_comparison(tmp_path):
    table = comparison_table([_run(0.5, 0.6), _run(0.7, 0.5)], RIDGE)
    md, js = write_comparison(table, RIDGE, tmp_path / "out", {"note": "x"})
    text = md.read_text()
    assert "T0.500_c0.80" in text and "0.600 +- 0.141" in text and "matches or beats" in text
    data = json.loads(js.read_text())
    assert data["comparison"]["average"]["ridge"] == pytest.approx(0.5) and data["note"] == "x"


# --------------------------------------------------------------------------------------------- manifest
def test_missing_or_empty_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match="ensemble manifest .*nope.json does not exist"):
        read_manifest(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text(json.dumps({"selected": [], "ranking": []}))
    with pytest.raises(ManifestError, match="lists no runs"):
        read_manifest(tmp_path / "empty.json")
    (tmp_path / "m.json").write_text(json.dumps({"selected": [], "ranking": [{"run_id": "a"}, {"run_id": "b"}]}))
    assert read_manifest(tmp_path / "m.json")[0] == ["a", "b"]  # nothing selected: every ranked run
    (tmp_path / "s.json").write_text(json.dumps({"selected": ["b"], "ranking": [{"run_id": "a"}, {"run_id": "b"}]}))
    assert read_manifest(tmp_path / "s.json")[0] == ["b"]
    assert read_manifest(tmp_path / "s.json", "all")[0] == ["a", "b"]


def test_runs_from_mlflow_and_a_missing_run(request, tmp_path):
    from tglassmlp.tracking import make_client

    uri = fresh_store(request, tmp_path)
    client = make_client(uri)
    exp = client.create_experiment("baseline-test")
    ids = []
    for a, b in ((0.5, 0.6), (0.7, 0.5)):
        run = client.create_run(exp)
        for k, v in _run(a, b).items():
            client.log_metric(run.info.run_id, k, v)
        ids.append(run.info.run_id)
    metrics = run_metrics_from_mlflow(ids, uri)
    table = comparison_table(metrics, RIDGE, run_ids=ids)
    assert table["average"]["mlp_mean"] == pytest.approx(0.575) and table["run_ids"] == ids
    with pytest.raises(ManifestError, match="run 0123456789abcdef of the ensemble is not in the tracking store"):
        run_metrics_from_mlflow([ids[0], "0123456789abcdef"], uri)


# --------------------------------------------------------------------------------------------- CLI
def test_cli_with_metric_files(synthetic_root, tmp_path, capsys):
    files = []
    for k, (a, b) in enumerate(((0.9, 0.9), (0.95, 0.85))):
        p = tmp_path / f"m{k}.json"
        p.write_text(json.dumps({"test/T0.500_c0.80/pearson": a, "test/T0.600_c0.50/pearson": b}))
        files.append(str(p))
    rc = main(["--data", str(synthetic_root), "--metrics", *files, "--out", str(tmp_path / "out"),
               "--levels", "0.8", "0.5", "--train-fraction", "0.67"])
    assert rc == 0
    data = json.loads((tmp_path / "out" / "baseline_comparison.json").read_text())
    assert data["samples"] == {"n_train_samples": 16, "n_test_samples": 8}
    rows = {r["state_point"]: r for r in data["comparison"]["rows"]}
    assert set(rows) == {"T0.500_c0.50", "T0.500_c0.80", "T0.600_c0.50", "T0.600_c0.80"}
    assert rows["T0.500_c0.80"]["n_runs"] == 2 and math.isfinite(rows["T0.500_c0.80"]["ridge"])
    assert data["comparison"]["n_compared"] == 2
    assert (tmp_path / "out" / "baseline_comparison.md").is_file()


def test_cli_missing_manifest_is_a_clear_error(synthetic_root, tmp_path, capsys):
    rc = main(["--data", str(synthetic_root), "--manifest", str(tmp_path / "ensemble.json"),
               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "ensemble manifest" in capsys.readouterr().err and not (tmp_path / "out").exists()

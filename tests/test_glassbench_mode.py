"""GlassBench mode of train.py: a small GlassBench-format tree written from our own structures with
``write_glassbench`` (synthetic runs whose mobility follows the inherent-structure energy), its conversion, and
``python train.py -m experiment=glassbench glassbench.root=TREE seed=0..1`` end to end, its table checked against
a recomputation from the npz files that does not go through the conversion, the shards or the data module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from conftest import compose_config
from tglassmlp.data import read_glassbench, read_shard
from tglassmlp.training.datamodule import DatasetNotFoundError
from tglassmlp.data.glassbench import (GLASSBENCH_TIMES, GlassBenchTreeError, convert_glassbench_tree,
                                       glassbench_name, write_glassbench)
from tglassmlp.paths import PROJECT_ROOT
from tglassmlp.statepoints import state_point_name

DEMO = PROJECT_ROOT / "data" / "demo"
N_RUNS = 4
#: folder -> (GlassBench structure index, demo shard (T, k)); the test folder reuses train indices 1, 2 on purpose
TREE = {"T0.30/train": [(0, (0.45, 0)), (1, (0.45, 1)), (2, (0.45, 2))],
        "T0.30/test": [(1, (0.45, 3)), (2, (0.5, 0))],
        "T0.23/test": [(202, (0.5, 1)), (203, (0.5, 2))]}
CODES = {"0.30": [1, 2, 3, 4, 5, 6], "0.23": [5, 20, 40]}
#: rms displacement per time code of a particle of unit mobility [sigma]
#: (the first T = 0.23 code breaks no bond, as GlassBench's own T = 0.23, t = 0.1 files: C_B = 1 everywhere)
AMPLITUDE = {"0.30": [0.15, 0.25, 0.35, 0.5, 0.65, 0.8], "0.23": [0.0, 0.4, 0.7]}


def write_tree(root: Path, seed: int = 0, amplitude=AMPLITUDE, folders=TREE) -> Path:
    """A GlassBench KA2D tree from demo structures: runs are thermal positions plus Gaussian random walks whose
    variance grows with the time code and with each particle's mobility exp(0.8 z_i) (z: its standardised
    inherent-structure energy), so that the structure determines part of the propensity."""
    rng = np.random.default_rng(seed)
    for folder, structures in folders.items():
        t_text = folder.split("/")[0][1:]
        for index, (t_demo, k) in structures:
            s = read_shard(DEMO / f"T{t_demo:.3f}" / f"s{k:04d}.h5",
                           fields=["positions", "types", "inherent_positions", "particle_energies"])
            energies = s["particle_energies"]
            mobility = np.exp(0.8 * (energies - energies.mean()) / energies.std())
            walk = np.zeros((N_RUNS, s.n_particles, 2))
            previous = 0.0
            for code, a in zip(CODES[t_text], amplitude[t_text]):
                walk += np.sqrt(a**2 - previous**2) * np.sqrt(mobility)[:, None] * rng.normal(size=walk.shape)
                previous = a
                write_glassbench(root / folder / glassbench_name(s.n_particles, float(t_text), index, code),
                                 positions=s["positions"], inherent_positions=s["inherent_positions"],
                                 types=s["types"].astype(np.int64), box=s.box, run_positions=s["positions"] + walk)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("glassbench") / "KA2D")


def test_conversion_is_the_files_bond_breaking_and_is_cached(tree, tmp_path):
    from tglassmlp.observables import bond_breaking

    folders = list(TREE)
    index = convert_glassbench_tree(tree, folders, tmp_path)
    test = index["folders"]["T0.30/test"]
    # the test folder's indices 1, 2 collide with train's: shifted past them, originals kept in the index
    assert [e["index"] for e in test["structures"]] == [1, 2]
    assert [e["shard_index"] for e in test["structures"]] == [1 + 3, 2 + 3]  # + (largest train index + 1)
    assert test["times"] == [GLASSBENCH_TIMES["0.30"][c] for c in CODES["0.30"]]
    entry = test["structures"][1]
    shard = read_shard(entry["shard"])
    runs = [read_glassbench(tree / "T0.30/test" / glassbench_name(1290, 0.30, 2, c)) for c in CODES["0.30"]]
    expected = bond_breaking(runs[0].positions, np.stack([r.run_positions for r in runs], axis=1), runs[0].types,
                             runs[0].box)
    assert shard["bond_breaking"].shape == (N_RUNS, 6, 1290)
    np.testing.assert_allclose(shard["bond_breaking"], expected, atol=1e-7)
    np.testing.assert_allclose(shard["propensity"], expected.mean(axis=0), atol=1e-7)
    assert shard.temperature == 0.3 and shard.attrs["source"] == "glassbench:T0.30/test/N1290T0.30_2"
    # the C_B decays with the time code (the synthetic walks grow), as bond breaking should
    assert np.all(np.diff(shard["propensity"].mean(axis=1)) < 0)
    # second call: the cached conversion, nothing rewritten
    mtime = Path(entry["shard"]).stat().st_mtime_ns
    assert convert_glassbench_tree(tree, folders, tmp_path) == index
    assert Path(entry["shard"]).stat().st_mtime_ns == mtime


def test_a_time_code_without_broken_bonds_is_evaluated_but_not_trained_on(tmp_path):
    from tglassmlp.training.glassbench import GlassBenchDataModule

    folders = {"T0.30/train": TREE["T0.30/train"][:2], "T0.30/test": TREE["T0.30/test"][:1]}
    root = write_tree(tmp_path / "KA2D", amplitude={"0.30": [0.0, 0.0, 0.3, 0.45, 0.6, 0.8]}, folders=folders)
    dm = GlassBenchDataModule(root, test=["T0.30/test"], transfer=[], converted_dir=tmp_path / "converted",
                              cache_dir=tmp_path / "descriptors")
    dm.prepare_glassbench()
    levels = [c for _, _, c in dm.time_levels[0.3]]
    assert levels[0] == levels[1] == 1.0 and all(c < 1.0 for c in levels[2:])
    assert dm.requested == {0.3: levels[2:]}
    labels = dm.label_source.labels([dm.read_record(p) for p in dm.folder_shards("T0.30/test")], 0.3, levels[2:])
    shard = read_shard(dm.folder_shards("T0.30/test")[0], fields=["propensity", "types"])
    for k, c in enumerate(levels[2:], start=2):  # the labels are the propensity at the code's time itself
        np.testing.assert_array_equal(labels[c][0][0], shard["propensity"][k, shard["types"] == 0])
        assert labels[c][1][0] == GLASSBENCH_TIMES["0.30"][CODES["0.30"][k]]


def test_missing_folders_are_named(tree, tmp_path):
    with pytest.raises(GlassBenchTreeError, match="missing folder .*T0.30/nowhere"):
        convert_glassbench_tree(tree, ["T0.30/train", "T0.30/nowhere"], tmp_path)
    # the data module says it as train.py's set-up error (one line, no traceback)
    from hydra.utils import instantiate

    cfg = compose_config("train", ["experiment=glassbench", f"glassbench.root={tmp_path / 'nothing'}",
                                   f"paths.output_dir={tmp_path}"])
    with pytest.raises(DatasetNotFoundError, match=r"glassbench.root=.*nothing: no such folder"):
        instantiate(cfg.data).shard_paths()
    # without glassbench.root the preset refuses to start, naming the setting
    cfg = compose_config("train", ["experiment=glassbench"])
    with pytest.raises(DatasetNotFoundError, match="glassbench.root is not set"):
        instantiate(cfg.data).shard_paths()


def _same(value, expected, tol):
    """``value`` from the table's JSON (None for an undefined number) equals ``expected`` (NaN when undefined)."""
    if np.ndim(expected):
        assert len(value) == len(expected)
        for v, e in zip(value, expected):
            _same(v, e, tol)
        return
    if np.isnan(expected):
        assert value is None, value
    else:
        assert value is not None and abs(value - expected) <= tol, (value, expected)


def _half_split_rho_max(runs: np.ndarray) -> float:
    """rho_max of one structure's (4, N) runs by hand: the 3 splits into two pairs, r_h averaged,
    Spearman-Brown to 4 runs (2 r / (1 + r)), square root."""
    r = []
    for a in combinations(range(4), 2):
        b = tuple(k for k in range(4) if k not in a)
        if a < b:
            with np.errstate(invalid="ignore", divide="ignore"):
                r.append(np.corrcoef(runs[list(a)].mean(axis=0), runs[list(b)].mean(axis=0))[0, 1])
    r = float(np.mean(r))
    return float(np.sqrt(2 * r / (1 + r)))


def test_train_glassbench_multirun_writes_the_table(tree, tmp_path):
    """The literal command; the table's numbers recomputed from the npz files and the trained networks."""
    import torch

    from tglassmlp.metrics import pearson
    from tglassmlp.model.artifact import load_model_dir
    from tglassmlp.observables import bond_breaking, structural_descriptors
    from tglassmlp.physics import particle_energies

    db = tmp_path / "mlflow.db"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(PROJECT_ROOT / "src"))
    out = subprocess.run([sys.executable, "train.py", "-m", "experiment=glassbench", f"glassbench.root={tree}",
                          "seed=0..1", "debug=fast", "num_threads=1", "trainer.enable_progress_bar=false",
                          f"logger.tracking_uri=sqlite:///{db}", f"paths.output_dir={tmp_path}/out"],
                         cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    (table_json,) = list((tmp_path / "out" / "hydra").rglob("multirun_*/glassbench/table.json"))
    sweep = table_json.parent.parent
    table = json.loads(table_json.read_text())
    md = (sweep / "glassbench" / "table.md").read_text()
    assert "GlassBench" in out.stdout and "| T | t | tc |" in md
    assert table["n_networks"] == 2 and sorted(table["seeds"]) == ["0", "1"]

    # every roadmap row of the preset is in the table with its numbers; those we have no data for say so
    roadmap = compose_config("train", ["experiment=glassbench", "glassbench.root=x"]).glassbench.roadmap
    rows = {(r["T"], r["t"]): r for r in table["rows"]}
    for ref in roadmap.rows:
        row = rows[(float(ref.T), float(ref.t))]
        assert row["roadmap"] == {c: ref.get(c) for c in roadmap.columns}
    assert rows[(0.3, 20000.0)]["roadmap"]["rho_max"] == 0.924 and rows[(0.3, 20000.0)]["folder"] == "T0.30/test"
    assert rows[(0.23, 1.1)]["folder"] is None and rows[(0.23, 1.1)]["pearson_mean"] is None
    evaluated = [r for r in table["rows"] if r["folder"] is not None]
    assert sorted((r["folder"], r["time_code"]) for r in evaluated) == sorted(
        [("T0.30/test", c) for c in CODES["0.30"]] + [("T0.23/test", c) for c in CODES["0.23"]])
    assert all(r["transfer"] == (r["T"] == 0.23) for r in table["rows"])
    assert "T0.23/test (transfer)" in md

    # the networks of the sweep (job folders), in the table's order
    members = {}
    for run_json in sweep.glob("*/artifacts/run.json"):
        rid = json.loads(run_json.read_text())["run_id"]
        members[rid] = load_model_dir(run_json.parent / "model", name=rid, source="test")
    members = [members[name] for name in table["networks"]]

    # labels, runs, levels, descriptors and energies straight from the npz files
    for folder in ("T0.30/test", "T0.23/test"):
        t_text = folder[1:5]
        temperature = float(t_text)
        same_t = [f for f in TREE if f.startswith(f"T{t_text}/")]
        per_structure = {}
        for f in same_t:
            for index, _ in TREE[f]:
                files = [read_glassbench(tree / f / glassbench_name(1290, temperature, index, c))
                         for c in CODES[t_text]]
                g = files[0]
                ref = g.types == 0
                runs = bond_breaking(g.positions, np.stack([x.run_positions for x in files], axis=1), g.types,
                                     g.box)[:, :, ref]
                per_structure[(f, index)] = {
                    "runs": runs, "labels": runs.mean(axis=0),
                    "descriptors": structural_descriptors(g.inherent_positions, g.types, g.box)[ref],
                    "energies": particle_energies(g.inherent_positions, g.types, g.box)[ref]}
        levels = np.mean([s["labels"].mean(axis=1) for s in per_structure.values()], axis=0)
        tested = [per_structure[(folder, index)] for index, _ in TREE[folder]]
        for k, code in enumerate(CODES[t_text]):
            row = next(r for r in evaluated if r["folder"] == folder and r["time_code"] == code)
            assert row["t"] == GLASSBENCH_TIMES[t_text][code]
            assert row["level"] == pytest.approx(levels[k], abs=1e-6)
            labels = [s["labels"][k] for s in tested]
            with torch.no_grad():
                preds = [[m.predict(s["descriptors"], temperature, levels[k]) for s in tested] for m in members]
            ours = [np.mean([pearson(p, y) for p, y in zip(ps, labels)]) for ps in preds]
            _same(row["pearson"], ours, 2e-5)
            _same(row["pearson_mean"], np.mean(ours), 2e-5)
            _same(row["pearson_std"], np.std(ours, ddof=1), 2e-5)
            ensemble = [np.mean([ps[j] for ps in preds], axis=0) for j in range(len(tested))]
            _same(row["ensemble_pearson"], np.mean([pearson(p, y) for p, y in zip(ensemble, labels)]), 2e-5)
            _same(row["rho_max"], np.mean([_half_split_rho_max(s["runs"][:, k]) for s in tested]), 1e-5)
            if row["rho_max"] is not None:
                assert row["pearson_over_rho_max"] == pytest.approx(row["pearson_mean"] / row["rho_max"], rel=1e-9)
            _same(row["e_pot_pearson"], np.mean([pearson(s["energies"], y) for s, y in zip(tested, labels)]), 1e-5)
            if folder == "T0.23/test" and k == 0:  # no bond broken: every number undefined, written as null
                assert row["level"] == 1.0 and row["pearson_mean"] is None and row["rho_max"] is None
            # the synthetic mobility follows the energy: high energy, bonds break first (the roadmap's sign)
            if k > 0:
                assert row["e_pot_pearson"] < -0.1
        # train.py's own test metrics on T0.30/test are the same numbers (the same networks, structures, labels)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("tglassmlp_glassbench/train")
    runs = client.search_runs([exp.experiment_id])
    (gb_run,) = [r for r in runs if r.data.tags.get("glassbench.table") == "true"]
    # grouped under the sweep's parent run, beside the seeds' runs
    from tglassmlp.callbacks import SWEEP_KIND

    (parent,) = [r for r in runs if r.data.tags.get("kind") == SWEEP_KIND]
    assert gb_run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    row = rows[(0.3, 20000.0)]
    assert gb_run.data.metrics["glassbench/T0.300_tc06/pearson_mean"] == pytest.approx(row["pearson_mean"])
    assert gb_run.data.metrics["glassbench/T0.230_tc40/rho_max"] == pytest.approx(rows[(0.23, 1.5e6)]["rho_max"])
    assert {a.path for a in client.list_artifacts(gb_run.info.run_id, "glassbench")} == {
        "glassbench/table.md", "glassbench/table.json"}
    trained = [r for r in runs if r.info.run_id in table["networks"]]
    for r in trained:
        k = table["networks"].index(r.info.run_id)
        for code in CODES["0.30"]:
            row = next(x for x in evaluated if x["folder"] == "T0.30/test" and x["time_code"] == code)
            name = f"test/{state_point_name(0.3, row['level'])}/pearson"
            assert r.data.metrics[name] == pytest.approx(row["pearson"][k], abs=1e-4), name

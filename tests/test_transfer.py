"""The two-step transfer (tglassmlp.transfer): Table I bookkeeping, transferred and composite label sources,
self-consistency selection, resumption after an interruption, and a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from conftest import compose_config
from test_datamodule import labels_by_hand, make_synthetic_dataset
from test_tracking import fresh_store
from tglassmlp.data import shard_path
from tglassmlp.training.datamodule import MDLabels, PropensityDataModule, StructureRecord
from tglassmlp.ensemble import NoSelfConsistentNetworkError, load_run_network, rank_and_select, select_sweep
from tglassmlp.observables import labels_at_levels
from tglassmlp.transfer import (
    CompositeLabels,
    NoSelfConsistentTransferError,
    TransferError,
    TransferredLabels,
    TransferTable,
)

PAPER_LEVELS = [0.99, 0.94, 0.9, 0.85, 0.8, 0.75, 0.65, 0.5]


def compose_transfer(overrides=()):
    return compose_config("transfer", overrides)


# --------------------------------------------------------------------------------------------- Table I
def test_paper_presets_reproduce_table_one():
    """Table I of the paper, T_min = 0.21: which MD temperatures train each equi-time ensemble and where its
    labels go (read off the printed table: 'x' at 0.21 only for c >= 0.8, at 0.23 down to 0.75)."""
    cfg = compose_transfer(["experiment=paper_tmin021"])
    t = cfg.transfer
    table = TransferTable.from_config(t.md, t.transferred, t.results, t.held_out)
    assert table.step1_levels == PAPER_LEVELS
    assert list(table.equitime_state_points(0.99)) == [0.21, 0.23, 0.25, 0.3, 0.4]
    assert list(table.equitime_state_points(0.75)) == [0.23, 0.25, 0.3, 0.4]
    assert list(table.equitime_state_points(0.65)) == [0.25, 0.3, 0.4]
    assert table.transfer_temperatures(0.8) == [0.15, 0.18]
    assert table.transfer_temperatures(0.75) == [0.18, 0.21]
    assert table.transfer_temperatures(0.5) == [0.18, 0.21, 0.23]
    assert table.t_min() == 0.21
    # 't' and 'r' below T_min(c) at c: the paper's "applied to lower temperatures T < T_min"
    assert table.selection_points(0.65) == [(0.15, 0.65), (0.18, 0.65), (0.21, 0.65), (0.23, 0.65)]
    assert (0.15, 0.25) in table.selection_points(None) and (0.21, 0.25) not in table.selection_points(None)
    assert table.step2_state_points[0.15] == [0.99, 0.94, 0.9, 0.85, 0.8]
    assert table.step2_state_points[0.4] == PAPER_LEVELS + [0.25, 0.15, 0.075]
    rows = table.to_markdown().splitlines()
    assert rows[0] == "| <C_B> \\ T | 0.15 | 0.18 | 0.21 | 0.23 | 0.25 | 0.3 | 0.4 |"
    assert rows[2 + PAPER_LEVELS.index(0.75)] == "| 0.75 | r | t | t | x | x | x | x |"
    assert rows[2 + 8] == "| 0.25 | r | r | r | r | r | x | x |"

    cfg = compose_transfer(["experiment=paper_tmin025"])
    t = cfg.transfer
    table = TransferTable.from_config(t.md, t.transferred, t.results, t.held_out)
    assert table.t_min() == 0.25 and table.step1_levels == PAPER_LEVELS
    assert all(table.transfer_temperatures(c) == [0.21, 0.23] for c in PAPER_LEVELS)
    assert table.held_out[0.21] == (0.99, 0.94, 0.9, 0.85, 0.8)


@pytest.mark.parametrize("overrides", [[], ["experiment=paper_tmin021"], ["experiment=paper_tmin025"],
                                       ["experiment=demo_transfer", "debug=fast"]])
def test_transfer_config_composes_and_builds(overrides, tmp_path):
    cfg = compose_transfer(overrides + [f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)
    procedure = instantiate(cfg.transfer, _convert_="all")
    assert procedure.output_dir == Path(tmp_path) / "transfer" / cfg.study
    # plain train.py learns the MD points of the same preset
    assert {round(float(k), 3) for k in cfg.data.state_points} == set(procedure.table.md)


@pytest.mark.parametrize("md, transferred, held_out, message", [
    ({0.5: [0.8]}, {0.5: [0.8]}, None, "both 'x'"),
    ({0.5: [0.8]}, {0.4: [0.5]}, None, "nothing to learn from"),
    ({0.5: [0.8]}, {0.6: [0.8]}, None, "nothing to learn from"),
    ({0.5: [0.8]}, {0.4: [0.8]}, {0.5: [0.8]}, "also MD training points"),
    ({0.5: [1.2]}, {}, None, "must lie in"),
    (None, {0.4: [0.8]}, None, "choose a preset"),
])
def test_inconsistent_tables_are_refused(md, transferred, held_out, message):
    with pytest.raises(ValueError, match=message):
        TransferTable.from_config(md, transferred, held_out=held_out)


# --------------------------------------------------------------------------------------------- labels
def _records(temperature, n_structures=3, n0=7, with_md=True, seed=0):
    """StructureRecords with a made-up MD propensity decaying in time (no shard on disk needed)."""
    rng = np.random.default_rng(seed)
    times = np.geomspace(1.0, 100.0, 9)
    out = []
    for k in range(n_structures):
        rates = rng.uniform(0.001, 0.008, n0)
        rec = StructureRecord(temperature=temperature, index=k, path=Path(f"T{temperature:.3f}/s{k:04d}.h5"),
                              box=5.0, reference=np.ones(n0, bool), descriptors=rng.normal(size=(n0, 3)),
                              positions=rng.uniform(0, 5, (n0, 2)))
        if with_md:
            rec.times, rec.propensity = times, np.exp(-np.outer(times, rates))
        out.append(rec)
    return out


def test_transferred_labels_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    labels = {(0.4, c): {k: rng.uniform(size=7) for k in range(3)} for c in (0.8, 0.5)}
    spread = {key: {k: 0.1 * v for k, v in d.items()} for key, d in labels.items()}
    path = TransferredLabels.write(tmp_path / "labels.npz", labels, spread, {"note": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npz"]  # no temporary file left behind
    source = TransferredLabels(path)
    assert source.state_points == [(0.4, 0.5), (0.4, 0.8)] and source.meta == {"note": "test"}
    got = source.labels(_records(0.4, with_md=False), 0.4, [0.8, 0.65])
    assert list(got) == [0.8]  # 0.65 is not in the file: left to the data module's warning
    values, t_star = got[0.8]
    for k in range(3):
        np.testing.assert_array_equal(values[k], labels[(0.4, 0.8)][k].astype(np.float32))
    assert np.all(np.isnan(t_star))
    np.testing.assert_allclose(source.get(0.4, 0.5, 2, spread=True), 0.1 * labels[(0.4, 0.5)][2], rtol=1e-6)
    with pytest.raises(ValueError, match="reference particles"):
        source.labels(_records(0.4, n0=5, with_md=False), 0.4, [0.8])
    with pytest.raises(ValueError, match="no transferred labels for .*s0003"):
        source.labels(_records(0.4, n_structures=4, with_md=False), 0.4, [0.8])
    with pytest.raises(ValueError, match="finite"):
        TransferredLabels.write(tmp_path / "bad.npz", {(0.4, 0.8): {0: np.array([np.nan])}})
    with pytest.raises(FileNotFoundError, match="step 1"):
        TransferredLabels(tmp_path / "missing.npz").labels(_records(0.4), 0.4, [0.8])


def test_composite_labels_take_md_at_x_and_transferred_elsewhere(tmp_path):
    recs = _records(0.4)  # these shards HAVE MD (like the demo's T = 0.4), reaching c = 0.8 but not 0.5
    curve = np.mean([r.propensity.mean(axis=1) for r in recs], axis=0)
    assert curve[-1] < 0.8 < curve[0] and curve[-1] > 0.5
    fake = {(0.4, c): {r.index: np.full(7, 0.123 + c) for r in recs} for c in (0.8, 0.5)}
    transferred = TransferredLabels(TransferredLabels.write(tmp_path / "l.npz", fake))

    # explicit Table I: (0.4, 0.8) is 't' although MD exists there (held out): MD must not be used
    held_out = CompositeLabels(transferred, md_state_points={0.6: [0.8]}).labels(recs, 0.4, [0.8, 0.5])
    np.testing.assert_allclose(held_out[0.8][0][1], 0.923, rtol=1e-6)
    # 'x' at (0.4, 0.8): the MD labels, the same as labels_at_levels on the average curve
    mixed = CompositeLabels(transferred, md_state_points={0.4: [0.8]}).labels(recs, 0.4, [0.8, 0.5])
    _, expected = labels_at_levels(recs[1].times, recs[1].propensity, curve, [0.8])
    np.testing.assert_allclose(mixed[0.8][0][1], expected[0])
    assert np.all(np.isfinite(mixed[0.8][1]))  # an MD crossing time
    np.testing.assert_allclose(mixed[0.5][0][0], 0.623, rtol=1e-6)
    assert np.all(np.isnan(mixed[0.5][1]))
    # no table: MD where the shards have it and the curve reaches the level, transferred otherwise
    auto = CompositeLabels(transferred).labels(recs, 0.4, [0.8, 0.5])
    np.testing.assert_allclose(auto[0.8][0][2], MDLabels().labels(recs, 0.4, [0.8])[0.8][0][2])
    np.testing.assert_allclose(auto[0.5][0][2], 0.623, rtol=1e-6)
    no_md = CompositeLabels(transferred).labels(_records(0.4, with_md=False), 0.4, [0.8])
    np.testing.assert_allclose(no_md[0.8][0][0], 0.923, rtol=1e-6)


def test_composite_labels_feed_the_data_module(tmp_path):
    """Step 2's data: MD labels at the 'x' temperature, transferred ones on the swap-MC structures."""
    root = make_synthetic_dataset(tmp_path / "d", temperatures=(0.6,), n_structures=3, n=40, box=7.0,
                                  no_md_temperatures=(0.4,))
    n0 = {k: int((read_types(root, 0.4, k) == 0).sum()) for k in range(3)}
    fake = {(0.4, 0.8): {k: np.linspace(0.1, 0.9, n0[k]) for k in range(3)}}
    source = CompositeLabels(TransferredLabels(TransferredLabels.write(tmp_path / "l.npz", fake)), {0.6: [0.8]})
    dm = PropensityDataModule(root, state_points={0.6: [0.8], 0.4: [0.8]}, train_fraction=0.67, cache_dir=None,
                              label_source=source)
    dm.setup()
    assert dm.state_points == [(0.4, 0.8), (0.6, 0.8)]
    at_04 = [s for s in dm.train_samples + dm.test_samples if s.temperature == 0.4]
    assert len(at_04) == 3 and all(np.isnan(s.t_star) for s in at_04)
    np.testing.assert_allclose(at_04[0].labels, np.linspace(0.1, 0.9, len(at_04[0].labels)), rtol=1e-6)
    assert all(np.isfinite(s.t_star) for s in dm.train_samples if s.temperature == 0.6)


def read_types(root, temperature, index):
    from tglassmlp.data import read_shard, shard_path

    return np.asarray(read_shard(shard_path(root, temperature, index), fields=["types"])["types"])


# --------------------------------------------------------------------------------------------- selection
def test_rank_and_select():
    entries = [{"run_id": "a", "seed": 0, "score": 3e-4}, {"run_id": "b", "seed": 1, "score": 5e-5},
               {"run_id": "c", "seed": 2, "score": float("nan")}, {"run_id": "d", "seed": 3, "score": 2e-5}]
    choice = rank_and_select([dict(e) for e in entries], 1e-4, None, "ens")
    assert choice["selected"] == ["d", "b"] and choice["fallback"] is None
    with pytest.raises(NoSelfConsistentNetworkError, match="no network of 4 passes .* seed 3: 2e-05"):
        rank_and_select([dict(e) for e in entries], 1e-5, None, "ens")
    choice = rank_and_select([dict(e) for e in entries], 1e-5, 3, "ens")
    assert choice["selected"] == ["d", "b", "a"] and "NO network passes" in choice["note"]
    # the transfer's error is both a selection error and a TransferError (transfer.py exits with its message)
    with pytest.raises(TransferError, match="ens: no network of 4 passes") as info:
        rank_and_select([dict(e) for e in entries], 1e-5, None, "ens", error=NoSelfConsistentTransferError)
    assert isinstance(info.value, NoSelfConsistentNetworkError)


def test_changed_training_config_is_refused_on_resume(tmp_path):
    cfg = compose_transfer(["debug=fast", f"paths.output_dir={tmp_path}"])
    procedure = instantiate(cfg.transfer, _convert_="all")
    from tglassmlp.transfer import TransferState

    procedure.state = TransferState(procedure.state_path, procedure.transfer_id)
    procedure.state.ensemble("step1_c0.94")["fingerprint"] = "0123456789abcdef"
    with pytest.raises(TransferError, match="another training config"):
        procedure.train_ensemble("step1_c0.94", procedure.ensemble_config(cfg, {0.6: [0.94]}), [0], "1", "p")


def test_missing_temperatures_fail_before_anything_is_created(tmp_path):
    from tglassmlp.training.datamodule import DatasetNotFoundError

    root = make_synthetic_dataset(tmp_path / "d", temperatures=(0.6,), n_structures=2, n=40, box=7.0)
    cfg = compose_transfer([f"data.root={root}", f"paths.output_dir={tmp_path}/out",
                            f"logger.tracking_uri=sqlite:///{tmp_path}/out/mlflow.db"])
    with pytest.raises(DatasetNotFoundError, match=r"temperature\(s\) \[0.35, 0.4, 0.45, 0.5\]"):
        instantiate(cfg.transfer, _convert_="all").compute(cfg)
    assert not (tmp_path / "out").exists()  # no state file, no tracking store


# --------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transfer")
    root = make_synthetic_dataset(tmp / "data", n_structures=4, n=60, box=8.5, no_md_temperatures=(0.4,))
    return tmp, root


def tiny_config(tmp, root, uri, **transfer):
    cfg = compose_transfer([f"data.root={root}", f"logger.tracking_uri={uri}", f"paths.output_dir={tmp}/out",
                            "debug=fast", "logger.log_figures=false", "callbacks=none", "num_threads=1",
                            "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
                            "trainer.check_val_every_n_epoch=10"])
    with open_dict(cfg):
        # MD at 0.6; its MD at 0.5 is held out ('t' there, like the demo's 0.4); 0.4 is swap-MC only
        cfg.transfer.md = {0.6: [0.8, 0.5]}
        cfg.transfer.transferred = {0.5: [0.8, 0.5], 0.4: [0.8]}
        cfg.transfer.held_out = {0.5: [0.8]}
        cfg.transfer.step1.seeds = [0]
        cfg.transfer.step2.seeds = [0, 1]
        cfg.transfer.selection.fallback_top_k = 1
        cfg.transfer.comparison = None
        for k, v in transfer.items():
            cfg.transfer[k] = v
    return cfg


def test_end_to_end_with_interruptions(request, tiny, monkeypatch):
    """Stop after step 1, crash during step 2, rerun: nothing finished is trained twice; the labels are the
    selected networks' predictions; runs form a tree in MLflow."""
    import mlflow

    import tglassmlp.training.job as train_module

    torch.set_num_threads(1)
    tmp, root = tiny
    uri = fresh_store(request, tmp)
    calls = []
    real_train = train_module.train

    def counting_train(cfg, run_dir=None, extra_tags=None):
        calls.append((cfg.seed, json.dumps({str(k): list(v) for k, v in cfg.data.state_points.items()})))
        if crash_at and len(calls) == crash_at:
            raise RuntimeError("simulated crash")
        return real_train(cfg, run_dir=run_dir, extra_tags=extra_tags)

    monkeypatch.setattr(train_module, "train", counting_train)

    # 1. step 1 only: one equi-time ensemble per level with 't' entries (0.8 and 0.5), trained at T = 0.6
    crash_at = None
    cfg = tiny_config(tmp, root, uri, stop_after="step1")
    p = instantiate(cfg.transfer, _convert_="all").compute(cfg)
    assert calls == [(0, '{"0.6": [0.8]}'), (0, '{"0.6": [0.5]}')]
    state = json.loads(p.state_path.read_text())
    assert state["finished"] == ["step1"] and p.manifest is None
    labels = TransferredLabels(p.labels_path)
    assert labels.state_points == [(0.4, 0.8), (0.5, 0.5), (0.5, 0.8)]
    # the label of a structure = the selected network's own prediction there (one network: exactly it)
    client = mlflow.tracking.MlflowClient(p.tracking.tracking_uri)
    sel = json.loads((p.output_dir / "step1_c0.80" / "ensemble.json").read_text())
    network, scaler, _ = load_run_network(client, sel["selected"][0], tmp / "dl")
    rec = p.records(cfg, [0.4])[0.4][2]
    with torch.no_grad():
        direct = network(torch.as_tensor(scaler.transform(rec.descriptors), dtype=torch.float32), 0.4, 0.8)
    np.testing.assert_allclose(labels.get(0.4, 0.8, rec.index), direct.numpy(), rtol=1e-5, atol=1e-6)
    assert sel["ranking"][0]["per_state_point"].keys() == {"T0.400_c0.80", "T0.500_c0.80"}

    # 2. step 2 crashes after its first network; 3. the rerun trains only the missing one
    calls.clear()
    crash_at = 2
    cfg = tiny_config(tmp, root, uri)
    with pytest.raises(RuntimeError, match="simulated crash"):
        instantiate(cfg.transfer, _convert_="all").compute(cfg)
    assert [c[0] for c in calls] == [0, 1]
    step2_points = json.loads(calls[0][1])
    assert step2_points == {"0.4": [0.8], "0.5": [0.8, 0.5], "0.6": [0.8, 0.5]}
    calls.clear()
    crash_at = None
    p = instantiate(cfg.transfer, _convert_="all").compute(cfg)
    assert [c[0] for c in calls] == [1]
    state = json.loads(p.state_path.read_text())
    assert state["finished"] == ["step1", "step2"] and len(state["ensembles"]["step2"]["runs"]) == 2
    manifest = json.loads(p.manifest_path.read_text())
    assert manifest["final"] and len(manifest["selected"]) == 1 and manifest["fallback"]
    assert set(manifest["points"]) == {"T0.400_c0.80", "T0.500_c0.80", "T0.500_c0.50"}
    # the held-out metric against a direct computation: MD labels rebuilt by hand from the raw shards at
    # T = 0.5, the selected networks run by hand (downloaded from MLflow), numpy's Pearson per structure
    held = p.held_out_metrics["T0.500_c0.80"]
    assert held["n_structures"] == 4 and held["n_networks"] == len(manifest["selected"])
    paths = {k: shard_path(root, 0.5, k) for k in range(4)}
    _, md = labels_by_hand(list(paths.values()), 0.8)
    nets = [load_run_network(client, r, tmp / "dl_held")[:2] for r in manifest["selected"]]
    r_ensemble, r_step1 = {}, []
    for rec in p.records(cfg, [0.5])[0.5]:
        with torch.no_grad():
            preds = [net(torch.as_tensor(sc.transform(rec.descriptors), dtype=torch.float32), 0.5, 0.8).numpy()
                     for net, sc in nets]
        y = md[paths[rec.index]]
        r_ensemble[str(rec.index)] = np.corrcoef(np.mean(preds, axis=0), y)[0, 1]
        r_step1.append(np.corrcoef(labels.get(0.5, 0.8, rec.index), y)[0, 1])
    assert held["pearson_ensemble"] == pytest.approx(np.mean(list(r_ensemble.values())), rel=1e-5)
    assert held["step1_labels_pearson"] == pytest.approx(np.mean(r_step1), rel=1e-5)
    assert held["per_structure_ensemble"] == pytest.approx(r_ensemble, rel=1e-5) and len(r_ensemble) == 4
    # the manifest names its store: predict.py's ManifestEnsemble loads the final ensemble from it alone
    from tglassmlp.predict import ManifestEnsemble

    assert ManifestEnsemble(p.manifest_path).load().names == manifest["selected"]
    # one selection implementation: select_sweep on the step-2 sweep at the transfer's points gives the same
    # scores and ranking as TwoStepTransfer.select did (same reader, same networks, same scoring)
    again = select_sweep(uri, cfg.logger.experiment_name, manifest["sweep_id"], root, [], threshold=p.threshold,
                         points=[(0.4, 0.8), (0.5, 0.8), (0.5, 0.5)], fallback_top_k=1,
                         cache_dir=cfg.data.get("cache_dir"), max_structures=cfg.data.get("max_structures"))
    assert [e["run_id"] for e in again["ranking"]] == [e["run_id"] for e in manifest["ranking"]]
    for e, f in zip(again["ranking"], manifest["ranking"]):
        assert e["per_state_point"] == pytest.approx(f["per_state_point"], rel=1e-12, abs=0)
        assert e["score"] == max(e["per_state_point"].values())
    assert again["selected"] == manifest["selected"] and again["fallback"] == manifest["fallback"]

    # MLflow: procedure -> ensembles -> members, all with the transfer tags; the step-2 networks learnt from
    # the transferred labels (their data module got the composite label source)
    runs = client.search_runs([p.tracking.experiment_id], "tags.`transfer.id` = 'tglassmlp_transfer_demo'")
    by_role = {}
    for r in runs:
        by_role.setdefault(r.data.tags["transfer.role"], []).append(r)
    assert len(by_role["procedure"]) == 1 and len(by_role["ensemble"]) == 3 and len(by_role["member"]) == 4
    proc = by_role["procedure"][0]
    assert proc.info.status == "FINISHED" and "held_out/T0.500_c0.80/pearson_ensemble" in proc.data.metrics
    parents = {r.info.run_id: r for r in by_role["ensemble"]}
    assert all(r.data.tags["mlflow.parentRunId"] == proc.info.run_id for r in parents.values())
    for m in by_role["member"]:
        ens = parents[m.data.tags["mlflow.parentRunId"]]
        assert ens.data.tags["transfer.ensemble"] == m.data.tags["transfer.ensemble"]
        assert m.data.tags["ensemble.selected"] in ("true", "false")
    step2_member = next(m for m in by_role["member"] if m.data.tags["transfer.step"] == "2")
    art = client.download_artifacts(step2_member.info.run_id, "config/train.yaml", str(tmp / "dl2"))
    assert "tglassmlp.transfer.CompositeLabels" in Path(art).read_text()


def test_step1_labels_are_the_mean_of_the_selected_networks(tmp_path, monkeypatch):
    """Step 1 writes, per structure, the mean over the selected networks of their predictions (and their spread),
    checked against a by-hand sum over three untrained networks that predict differently (no training, no
    MLflow: the members are built directly and handed to the procedure in place of the MLflow download)."""
    import tglassmlp.transfer.procedure as procedure_module
    from tglassmlp.model.artifact import EnsembleMember
    from tglassmlp.model.network import TGlassMLP
    from tglassmlp.observables.descriptors import DescriptorScaler, descriptor_names
    from tglassmlp.transfer import TransferState

    root = make_synthetic_dataset(tmp_path / "d", temperatures=(0.6,), n_structures=2, n=40, box=7.0,
                                  no_md_temperatures=(0.5,))
    cfg = compose_transfer([f"data.root={root}", f"paths.output_dir={tmp_path}/out", "debug=fast"])
    with open_dict(cfg):
        cfg.transfer.md = {0.6: [0.8]}
        cfg.transfer.transferred = {0.5: [0.8]}
        cfg.transfer.held_out = {}
        cfg.transfer.comparison = None
    procedure = instantiate(cfg.transfer, _convert_="all")
    procedure.output_dir.mkdir(parents=True)
    procedure.state = TransferState(procedure.state_path, procedure.transfer_id)

    class NoTracking:
        client = None

        def log_artifact(self, *args, **kwargs):
            pass

    procedure.tracking = NoTracking()
    records = procedure.records(cfg, [0.5])[0.5]
    assert len(records) == 2
    scaler = DescriptorScaler(names=descriptor_names()).fit([r.descriptors for r in records])
    n_kept = int(np.sum(scaler.kept))
    members = [EnsembleMember(f"run{k}", TGlassMLP(n_descriptors=n_kept, seed=k).eval(), scaler, None, f"d{k}", "test")
               for k in range(3)]
    selected = [m.name for m in members]
    manifest = tmp_path / "out" / "step1_c0.80" / "ensemble.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"selected": selected, "fallback": False}))
    procedure.state.ensemble("step1_c0.80")["selection"] = str(manifest)
    monkeypatch.setattr(procedure_module, "load_run_members",
                        lambda client, run_ids: [next(m for m in members if m.name == r) for r in run_ids])

    procedure._write_step1_labels(cfg)

    labels = TransferredLabels(procedure.labels_path)
    assert labels.state_points == [(0.5, 0.8)]
    for rec in records:
        # each network by hand: standardise with the scaler's stored mean/std, run the torch module
        x = torch.as_tensor((rec.descriptors[:, scaler.kept] - scaler.mean[scaler.kept]) / scaler.std[scaler.kept],
                            dtype=torch.float32)
        with torch.no_grad():
            each = [m.network(x, 0.5, 0.8).numpy().astype(np.float64) for m in members]
        # the networks really differ, so any single one of them is not the mean
        assert min(np.abs(each[0] - each[1]).max(), np.abs(each[0] - each[2]).max()) > 1e-3
        mean = (each[0] + each[1] + each[2]) / 3.0
        spread = np.sqrt(sum((e - mean) ** 2 for e in each) / 3.0)
        np.testing.assert_allclose(labels.get(0.5, 0.8, rec.index), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(labels.get(0.5, 0.8, rec.index, spread=True), spread, rtol=1e-4, atol=1e-6)


def test_held_out_ceilings_against_two_run_split_half(tmp_path):
    """rho_max at a held-out point (held_out.json, the comparison table) = the mean over its structures of
    sqrt(2 r / (1 + r)), r the Pearson of the two runs' type-0 C_B at the level's crossing time t* (two runs:
    one split, Spearman-Brown to N_R = 2), with t* and the runs interpolated in log t here from the raw shards."""
    import math

    from tglassmlp.data import read_shard

    root = make_synthetic_dataset(tmp_path / "data", n_structures=4, n=60, box=8.5, no_md_temperatures=(0.4,),
                                  n_runs=2, run_noise=0.15)
    cfg = tiny_config(tmp_path, root, f"sqlite:///{tmp_path}/mlflow.db")
    procedure = instantiate(cfg.transfer, _convert_="all")
    paths = sorted((Path(root) / "T0.500").glob("s*.h5"))
    t_star, _ = labels_by_hand(paths, 0.8)
    expected = []
    for p in paths:
        raw = read_shard(p, fields=["types", "times", "bond_breaking"])
        log_t = np.log(np.asarray(raw["times"], np.float64))
        k = int(np.searchsorted(log_t, math.log(t_star)))
        w = (math.log(t_star) - log_t[k - 1]) / (log_t[k] - log_t[k - 1])
        runs = np.asarray(raw["bond_breaking"], np.float64)[:, :, np.asarray(raw["types"]) == 0]
        at = (1 - w) * runs[:, k - 1] + w * runs[:, k]
        r = np.corrcoef(at[0], at[1])[0, 1]
        expected.append(math.sqrt(2 * r / (1 + r)))
    ceilings = procedure.held_out_ceilings(cfg)
    assert list(ceilings) == ["T0.500_c0.80"]
    assert ceilings["T0.500_c0.80"] == pytest.approx(float(np.mean(expected)), rel=1e-9)

"""The transfer comparison (tglassmlp.transfer.comparison): every row of its table (JSON, markdown, MLflow
metrics) against a direct computation, on a tiny setup where training is replaced by untrained networks of
distinct seeds (no MLflow, no data on disk: what is checked is the bookkeeping and the statistics, i.e. which
networks are scored on which structures, fed which state point, against which labels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import open_dict

from tglassmlp.transfer import comparison
from conftest import compose_config
from test_transfer_evaluation import N_DESCRIPTORS, corr, forward_by_hand, make_members, md_labels_near
from tglassmlp.model.artifact import EnsembleMember
from tglassmlp.model.network import TGlassMLP
from tglassmlp.transfer import TransferredLabels, TransferState

HELD_OUT = [(0.5, 0.8), (0.5, 0.5)]
CEILINGS = {"T0.500_c0.80": 0.61, "T0.500_c0.50": float("nan")}
T_MD = 0.6


class RecordingTracking:
    """Stands in for MlflowTracking: remembers what the comparison logs."""

    client = None

    def __init__(self):
        self.metrics, self.artifacts, self.ended = {}, [], []

    def open_run(self, tags, run_name=None, *, reopen=None):
        return reopen or f"run:{run_name}"

    def log_metrics(self, metrics, step=None, *, run_id=None):
        self.metrics.update(metrics)

    def log_artifact(self, path, artifact_path=None, *, run_id=None):
        self.artifacts.append(path.name)

    def end_run(self, run_id=None, status="FINISHED"):
        self.ended.append(run_id)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    cfg = compose_config("transfer", ["debug=fast", f"paths.output_dir={tmp_path}/out"])
    with open_dict(cfg):
        cfg.transfer.md = {T_MD: [0.8, 0.5]}
        cfg.transfer.transferred = {0.5: [0.8, 0.5]}
        cfg.transfer.held_out = {0.5: [0.8, 0.5]}
        cfg.transfer.comparison = None
        cfg.data.train_fraction = 0.75  # 4 structures: 1 test structure per split, 4 folds cover them all
    procedure = instantiate(cfg.transfer, _convert_="all")
    procedure.output_dir.mkdir(parents=True)
    procedure.state = TransferState(procedure.state_path, procedure.transfer_id)
    procedure.state.data["procedure_run_id"] = "run:procedure"
    procedure.tracking = RecordingTracking()

    step2, records = make_members(n_members=2, n_structures=4, seed=3)
    records = [r.__class__(index=k, descriptors=r.descriptors) for k, r in enumerate(records)]  # indices 0..3
    pool = {f"step2_{k}": m for k, m in enumerate(step2)}
    procedure.manifest = {"selected": ["step2_1"], "ranking": [{"run_id": "step2_1"}, {"run_id": "step2_0"}]}
    targets = {p: (records, md_labels_near(step2, records, *p, noise=0.8, seed=k)) for k, p in enumerate(HELD_OUT)}
    monkeypatch.setattr(procedure, "held_out_targets", lambda _cfg: targets)
    # the ceilings themselves: test_transfer.py::test_held_out_ceilings_against_two_run_split_half
    monkeypatch.setattr(procedure, "held_out_ceilings", lambda _cfg: dict(CEILINGS))
    rng = np.random.default_rng(7)
    step1 = {p: {r.index: y + 0.5 * y.std() * rng.normal(size=y.shape) for r, y in zip(*targets[p])}
             for p in HELD_OUT}
    TransferredLabels.write(procedure.labels_path, step1)

    trained = []

    def train_ensemble(name, ens_cfg, seeds, step, parent, extra_tags=None):
        """Untrained networks, one per seed, distinct across ensembles and seeds."""
        trained.append({"name": name, "state_points": {float(t): list(cs) for t, cs in ens_cfg.data.state_points.items()},
                        "split_seed": ens_cfg.data.get("split_seed"), "step": step, "parent": parent,
                        "tags": dict(extra_tags or {})})
        runs = {}
        for s in seeds:
            run_id = f"{name}/seed{s}"
            net = TGlassMLP(n_descriptors=N_DESCRIPTORS, seed=100 * len(trained) + s).eval()
            pool[run_id] = EnsembleMember(run_id, net, step2[0].scaler, None, run_id, "test")
            runs[s] = run_id
        return runs

    monkeypatch.setattr(procedure, "train_ensemble", train_ensemble)
    monkeypatch.setattr(comparison, "load_run_members", lambda client, run_ids: [pool[r] for r in run_ids])
    return cfg, procedure, targets, step1, pool, trained


def scores(members, targets, fed=lambda t, c: (t, c), scored_on=None):
    """Direct computation of one row: {point name: (mean +- std over networks of their mean Pearson over
    structures, mean over structures of the ensemble-mean prediction's Pearson)}; np.corrcoef throughout."""
    out = {}
    for (t, c), (recs, md) in targets.items():
        t_in, c_in = fed(t, c)
        per_net, preds = [], {}
        for m in members:
            mine = [(r, y) for r, y in zip(recs, md) if scored_on is None or r.index in scored_on[m.name]]
            ps = [forward_by_hand(m, r.descriptors, t_in, c_in) for r, _ in mine]
            per_net.append(np.mean([corr(p, y) for p, (_, y) in zip(ps, mine)]))
            for (r, y), p in zip(mine, ps):
                preds.setdefault(r.index, (y, []))[1].append(p)
        ens = [corr(np.mean(ps, axis=0), y) for y, ps in preds.values()]
        out[f"T{t:.3f}_c{c:.2f}"] = (np.mean(per_net), np.std(per_net), np.mean(ens), len(ens))
    return out


def assert_row(row, expected):
    assert set(row) == set(expected)
    for sp, (net_mean, net_std, ens, n) in expected.items():
        assert row[sp]["pearson_networks"] == pytest.approx(net_mean, rel=1e-5)
        assert row[sp]["pearson_networks_std"] == pytest.approx(net_std, rel=1e-4, abs=1e-7)
        assert row[sp]["pearson_ensemble"] == pytest.approx(ens, rel=1e-5)
        assert row[sp]["n_structures"] == n


def test_comparison_table_equals_a_direct_computation(setup):
    cfg, procedure, targets, step1, pool, trained = setup
    result = comparison.compare_transfer(procedure, cfg, seeds=(0, 1), folds=4)
    rows = result["rows"]
    assert result["held_out"] == ["T0.500_c0.80", "T0.500_c0.50"]
    names = list(rows)
    assert names[:3] == ["transfer (step-2 ensemble, selected)", "transfer (step-2, all networks)",
                         "step-1 labels (equi-time ensembles)"]

    # transfer rows: the manifest's selected network(s) / all ranked networks, fed the held-out point itself
    assert_row(rows[names[0]], scores([pool["step2_1"]], targets))
    assert_row(rows[names[1]], scores([pool["step2_1"], pool["step2_0"]], targets))
    # step-1 labels: the stored transferred labels against the MD labels
    for p, (recs, md) in targets.items():
        expected = np.mean([corr(step1[p][r.index], y) for r, y in zip(recs, md)])
        assert rows[names[2]][f"T{p[0]:.3f}_c{p[1]:.2f}"]["pearson_ensemble"] == pytest.approx(expected, rel=1e-5)

    by_method = {}
    for t in trained:
        by_method.setdefault(t["tags"]["comparison.method"], []).append(t)
    # (a): 4 folds, each trained on the MD points plus the held-out temperature, each network scored only on
    # its fold's test structures; every structure is a test structure exactly once
    folds = by_method["a"]
    assert len(folds) == 4
    tests = [[int(x) for x in f["tags"]["comparison.test_structures"].split(",")] for f in folds]
    assert sorted(k for test in tests for k in test) == [0, 1, 2, 3]
    for f, test in zip(folds, tests):
        assert f["state_points"] == {T_MD: [0.8, 0.5], 0.5: [0.8, 0.5]}
        assert f["split_seed"] == f["tags"]["comparison.split_seed"]
        # the test set named in the tag is the data module's test split of that seed
        dm = comparison.PropensityDataModule(cfg.data.root, train_fraction=0.75, split_seed=f["split_seed"],
                                             cache_dir=None)
        assert dm.split(0.5, range(4))[1] == test
    scored_on = {f"{f['name']}/seed{s}": test for f, test in zip(folds, tests) for s in (0, 1)}
    a_row = next(n for n in names if n.startswith("(a)"))
    assert a_row.endswith("MD (4 folds)")
    assert_row(rows[a_row], scores([pool[r] for r in scored_on], targets, scored_on=scored_on))
    # (b): one ensemble per held-out point trained at (T_min(c), c) alone, fed (T_min(c), c)
    assert [t["state_points"] for t in by_method["b"]] == [{T_MD: [0.8]}, {T_MD: [0.5]}]
    b_row = next(n for n in names if n.startswith("(b)"))
    for t, (p, recs_md) in zip(by_method["b"], targets.items()):
        members = [pool[f"{t['name']}/seed{s}"] for s in (0, 1)]
        expected = scores(members, {p: recs_md}, fed=lambda _t, c: (T_MD, c))
        assert_row({k: v for k, v in rows[b_row].items() if k in expected}, expected)
    # (c): one ensemble on the MD points, fed the held-out point
    (c_train,) = by_method["c"]
    assert c_train["state_points"] == {T_MD: [0.8, 0.5]}
    c_row = next(n for n in names if n.startswith("(c)"))
    assert_row(rows[c_row], scores([pool[f"{c_train['name']}/seed{s}"] for s in (0, 1)], targets))

    # the same numbers reach the JSON, the markdown table and MLflow
    out = procedure.output_dir / "comparison"
    assert json.loads((out / "comparison.json").read_text()) == json.loads(json.dumps(result))
    table = (out / "comparison.md").read_text().splitlines()
    assert table[0] == "| method | T0.500_c0.80 | T0.500_c0.50 | mean |"
    for k, name in enumerate(names):
        cells = [c.strip() for c in table[2 + k].strip("|").split("|")]
        assert cells[0] == name
        ens = [rows[name][sp]["pearson_ensemble"] for sp in result["held_out"]]
        for cell, v in zip(cells[1:3], ens):
            assert cell.startswith(f"**{v:.3f}**"), (name, cell)
        assert cells[3] == f"{np.mean(ens):.3f}"
        for sp, v in zip(result["held_out"], ens):
            assert procedure.tracking.metrics[f"comparison/{sp}/method{k}/pearson_ensemble"] == v
    # rho_max beside the Pearsons: a row of the table, the JSON (null where undefined) and a metric where defined
    ceiling_row = [c.strip() for c in table[2 + len(names)].strip("|").split("|")]
    assert ceiling_row == ["label ceiling rho_max", "0.610", "-", "0.610"]
    assert result["rho_max"] == {"T0.500_c0.80": 0.61, "T0.500_c0.50": None}
    assert procedure.tracking.metrics["comparison/T0.500_c0.80/rho_max"] == 0.61
    assert "comparison/T0.500_c0.50/rho_max" not in procedure.tracking.metrics
    assert sorted(procedure.tracking.artifacts) == ["comparison.json", "comparison.md", "comparison.png"]
    assert procedure.tracking.ended == ["run:comparison"]


@pytest.mark.parametrize("kwargs, message", [
    ({"methods": ("a", "d")}, r"unknown comparison method\(s\) \['d'\]"),
    ({"seeds": ()}, "at least one seed"),
    ({"folds": 0}, "folds must be >= 1"),
])
def test_comparison_refuses_bad_settings_before_training(setup, kwargs, message):
    cfg, procedure, _, _, _, trained = setup
    with pytest.raises(ValueError, match=message):
        comparison.compare_transfer(procedure, cfg, **kwargs)
    assert not trained and not (procedure.output_dir / "comparison").exists()


def test_comparison_without_held_out_md_says_so(setup, monkeypatch):
    cfg, procedure, _, _, _, trained = setup
    monkeypatch.setattr(procedure, "held_out_targets", lambda _cfg: {})
    with pytest.raises(ValueError, match=r"no held-out MD state point .*transfer.held_out"):
        comparison.compare_transfer(procedure, cfg)
    assert not trained and not (procedure.output_dir / "comparison").exists()

"""Scores of transfer ensembles (tglassmlp.transfer.evaluation.evaluate_members) against a direct computation:
each network's forward pass by hand (scaler statistics, torch module) and numpy's own Pearson (np.corrcoef)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tglassmlp.model.artifact import EnsembleMember
from tglassmlp.model.network import TGlassMLP
from tglassmlp.observables.descriptors import DescriptorScaler
from tglassmlp.statepoints import state_point_name
from tglassmlp.transfer import evaluate_members

N_DESCRIPTORS = 6
N_REFERENCE = 30


def make_members(n_members=3, n_structures=4, seed=0):
    """Untrained networks (distinct seeds, so they predict differently) sharing one fitted scaler, and records
    carrying only what the scoring reads (index, raw descriptors)."""
    rng = np.random.default_rng(seed)
    records = [SimpleNamespace(index=10 + k, descriptors=rng.normal(size=(N_REFERENCE, N_DESCRIPTORS)) * 2.0 + 1.0)
               for k in range(n_structures)]
    scaler = DescriptorScaler().fit([r.descriptors for r in records])
    assert scaler.n_kept == N_DESCRIPTORS
    members = [EnsembleMember(f"net{k}", TGlassMLP(n_descriptors=N_DESCRIPTORS, seed=k).eval(), scaler, None,
                              f"d{k}", "test") for k in range(n_members)]
    return members, records


def forward_by_hand(member, descriptors, temperature, level):
    """(N_0,) prediction: standardise with the scaler's stored mean/std, run the torch module."""
    s = member.scaler
    x = torch.as_tensor((descriptors - s.mean) / s.std, dtype=torch.float32)
    with torch.no_grad():
        return member.network(x, temperature, level).numpy().astype(np.float64)


def corr(x, y):
    return float(np.corrcoef(x, y)[0, 1])


def md_labels_near(members, records, temperature, level, noise, seed=1):
    """Made-up MD labels correlated with the ensemble prediction (so the scores are far from 0 and differ
    between per-network and ensemble-mean Pearson)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
        mean = np.mean([forward_by_hand(m, r.descriptors, temperature, level) for m in members], axis=0)
        out.append(mean + noise * mean.std() * rng.normal(size=mean.shape))
    return out


def test_evaluate_members_equals_a_direct_computation():
    members, records = make_members()
    points = [(0.45, 0.8), (0.45, 0.5)]
    targets = {p: (records, md_labels_near(members, records, *p, noise=1.0, seed=k)) for k, p in enumerate(points)}
    result = evaluate_members(members, targets)
    assert sorted(result) == sorted(state_point_name(*p) for p in points)
    for (t, c), (recs, md) in targets.items():
        preds = np.array([[forward_by_hand(m, r.descriptors, t, c) for r in recs] for m in members])  # (M, S, N_0)
        # the networks really differ, so the ensemble mean is not any one of them
        assert np.abs(preds[0] - preds[1]).max() > 1e-3 and np.abs(preds[0] - preds[2]).max() > 1e-3
        per_net = np.array([[corr(preds[k, s], md[s]) for s in range(len(recs))] for k in range(len(members))])
        ensemble = np.array([corr(preds[:, s].mean(axis=0), md[s]) for s in range(len(recs))])
        d = result[state_point_name(t, c)]
        assert d["pearson_networks"] == pytest.approx(per_net.mean(axis=1).mean(), rel=1e-5)
        assert d["pearson_networks_std"] == pytest.approx(per_net.mean(axis=1).std(), rel=1e-4, abs=1e-7)
        assert d["pearson_ensemble"] == pytest.approx(ensemble.mean(), rel=1e-5)
        assert d["per_structure_ensemble"] == pytest.approx({str(r.index): v for r, v in zip(recs, ensemble)},
                                                            rel=1e-5)
        assert d["n_networks"] == 3 and d["n_structures"] == 4
        # the two statistics are distinguishable here (an ensemble-mean Pearson computed as a mean of the
        # networks' Pearsons would fail the assertions above)
        assert abs(ensemble.mean() - per_net.mean()) > 1e-3
        assert 0.2 < ensemble.mean() < 0.95


def test_evaluate_members_feeds_the_input_state_and_scores_each_network_on_its_structures():
    """GlassMLP-style input (the networks see (0.6, c) while scored at (0.45, c)) and per-network structure
    sets (each structure is a test structure of some networks only): the ensemble of a structure is the mean
    of the networks that score it."""
    members, records = make_members()
    t, c, t_in = 0.45, 0.8, 0.6
    md = md_labels_near(members, records, t_in, c, noise=0.7)
    scored_on = {"net0": [10, 11], "net1": [11, 12, 13], "net2": [10, 13]}
    result = evaluate_members(members, {(t, c): (records, md)}, input_state=lambda _t, _c: (t_in, _c),
                              structures=lambda m, _t: scored_on[m.name])[state_point_name(t, c)]
    by_index = {r.index: (r, y) for r, y in zip(records, md)}
    pred = {(m.name, k): forward_by_hand(m, by_index[k][0].descriptors, t_in, c) for m in members
            for k in scored_on[m.name]}
    # fed (0.6, c), not (0.45, c): the networks do depend on T
    assert np.abs(pred["net0", 10] - forward_by_hand(members[0], by_index[10][0].descriptors, t, c)).max() > 1e-4
    per_net = [np.mean([corr(pred[m.name, k], by_index[k][1]) for k in scored_on[m.name]]) for m in members]
    ensemble = {}
    for k in sorted(by_index):
        nets = [m.name for m in members if k in scored_on[m.name]]
        ensemble[str(k)] = corr(np.mean([pred[n, k] for n in nets], axis=0), by_index[k][1])
    assert result["pearson_networks"] == pytest.approx(np.mean(per_net), rel=1e-5)
    assert result["pearson_networks_std"] == pytest.approx(np.std(per_net), rel=1e-4)
    assert result["per_structure_ensemble"] == pytest.approx(ensemble, rel=1e-5)
    assert result["pearson_ensemble"] == pytest.approx(np.mean(list(ensemble.values())), rel=1e-5)
    assert result["n_structures"] == 4 and result["n_networks"] == 3


def test_evaluate_members_refuses_inconsistent_targets():
    members, records = make_members(n_members=1, n_structures=2)
    labels = [np.linspace(0, 1, N_REFERENCE)] * 2
    with pytest.raises(ValueError, match=r"T0.450_c0.80: 2 structures but 1 label arrays"):
        evaluate_members(members, {(0.45, 0.8): (records, labels[:1])})
    with pytest.raises(ValueError, match=r"T0.450_c0.80, structure 11: labels of shape \(29,\), .*\(30 reference"):
        evaluate_members(members, {(0.45, 0.8): (records, [labels[0], labels[1][:-1]])})
    with pytest.raises(ValueError, match="no networks"):
        evaluate_members([], {(0.45, 0.8): (records, labels)})
    with pytest.raises(ValueError, match=r"T0.450_c0.80: network net0 is scored on no structure"):
        evaluate_members(members, {(0.45, 0.8): (records, labels)}, structures=lambda m, t: [])

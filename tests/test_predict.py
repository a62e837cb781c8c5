"""predict.py: the App. B mean constraint (converging sign converges, printed sign diverges), chunked prediction
with bounded memory, the GlassBench round trip, ensemble sources, bad-input errors and the Hydra entry point."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_tracking import fresh_store
from tglassmlp.model.network import TGlassMLP
from tglassmlp.observables import DescriptorScaler, descriptor_names, structural_descriptors
from tglassmlp.paths import PROJECT_ROOT
from tglassmlp.predict import (DirectoryEnsemble, ManifestEnsemble, MeanConstraint, MlflowEnsemble,
                               ModelDirectoryError, PredictionInputError, check_structure, constrained_prediction, find_structures,
                               levels_at, load_model_dir, load_structure, predict_structures, read_prediction,
                               save_model_dir, tts_from_dict, tts_from_json)

STEP = 0.75


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------- helpers
def elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def affine_network(n_descriptors: int, slope: float, offset: float, weight: float, seed: int = 0) -> TGlassMLP:
    """A TGlassMLP whose output is slope * c + offset + weight * g_i for c > 0, g_i independent of (T, c).

    MLP1 is zero, so the attention weights do not depend on the state point; MLP2 and the head pass c through
    ELU layers, which are the identity for positive arguments; the head adds the bottleneck's particle term.
    """
    net = TGlassMLP(n_descriptors=n_descriptors, seed=seed)
    nb = net.bottleneck[0].out_features
    with torch.no_grad():
        for module in (net.mlp1, net.mlp2, net.head):
            for p in module.parameters():
                p.zero_()
        net.mlp2[0].weight[0, 3] = 1.0  # state feature 3 is c (identity normalisation)
        net.mlp2[2].weight[0, 0] = 1.0
        net.mlp2[4].weight[0, 0] = 1.0  # m2[0] = c
        net.head[0].weight[0, nb] = 1.0  # h1[0] = c
        net.head[0].weight[1, 0] = 1.0  # h1[1] = ELU(b0)
        net.head[2].weight[0, 0] = 1.0
        net.head[2].weight[1, 1] = 1.0
        net.head[4].weight[0, 0] = slope
        net.head[4].weight[0, 1] = weight
        net.head[4].bias[0] = offset
        net.bottleneck[0].weight.mul_(0.3)
        net.bottleneck[0].bias.fill_(0.3)
    return net.eval()


def particle_term(net: TGlassMLP, features: np.ndarray) -> np.ndarray:
    """g_i = ELU(ELU(ELU(W_b S_out + b_b)_0)) evaluated in numpy (Eqs. 5-7 with MLP1 = 0)."""
    s = features.astype(np.float64)
    f = net.attention.f.detach().numpy().astype(np.float64)
    a = s * f[0] + f[-1]
    w = np.exp(a - a.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    wb = net.bottleneck[0].weight.detach().numpy().astype(np.float64)
    bb = net.bottleneck[0].bias.detach().numpy().astype(np.float64)
    return elu(elu(elu((s * w) @ wb[0] + bb[0])))


@pytest.fixture(scope="module")
def affine():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(300, 20)).astype(np.float32)
    net = affine_network(20, slope=0.9, offset=0.05, weight=0.1)
    g = particle_term(net, features).mean()
    return net, torch.from_numpy(features), g


# --------------------------------------------------------------------------------------------- constraint
def test_affine_network_matches_its_numpy_reference(affine):
    net, features, g = affine
    with torch.no_grad():
        y = net(features, 0.4, torch.tensor([0.3, 0.8])).numpy()
    ref = 0.05 + 0.1 * particle_term(net, features.numpy())
    np.testing.assert_allclose(y, np.stack([0.9 * 0.3 + ref, 0.9 * 0.8 + ref]), atol=2e-6)


def test_converging_sign_converges_to_the_fixed_point(affine):
    net, features, g = affine
    targets = np.array([0.9, 0.7, 0.5, 0.3])
    out, res = constrained_prediction(net, features, 0.4, targets, MeanConstraint(), chunk_size=128)
    # fixed point of Xbar(c) = 0.9 c + 0.05 + 0.1 g = c*
    expected = (targets - 0.05 - 0.1 * g) / 0.9
    assert res.converged.all() and np.all(res.iterations <= 6)
    np.testing.assert_allclose(res.input_level, expected, atol=1e-4 / 0.9 + 1e-6)
    np.testing.assert_allclose(out.mean(axis=1, dtype=np.float64), targets, atol=1e-4)
    np.testing.assert_allclose(res.mean_prediction, out.mean(axis=1, dtype=np.float64), atol=1e-6)
    # near the fixed point the error shrinks by 1 - 0.75 * slope = 0.325 per update
    err = res.history_mean - targets[:, None]
    for row in err:
        row = row[np.isfinite(row)]
        big = np.abs(row[:-1]) > 1e-5
        np.testing.assert_allclose((row[1:] / row[:-1])[big], 1 - STEP * 0.9, atol=1e-2)


def test_constraint_over_a_temperature_keeps_structure_to_structure_fluctuations(affine):
    """chi_4 (Eq. 9) is N_0 times the variance of the per-structure means: the constraint must fix their average
    over the structures of a temperature (one input level for all), not each of them (which would pin chi_4 to
    ~0). Pooled structures keep exactly the differences the network predicts between them."""
    net, features, g = affine
    other = features + 0.7  # a second 'structure' whose particle term differs
    g_other = particle_term(net, other.numpy()).mean()
    target = np.array([0.6])
    pooled, res = constrained_prediction(net, torch.cat([features, other]), 0.4, target, MeanConstraint())
    n = features.shape[0]
    means = np.array([pooled[0, :n].mean(dtype=np.float64), pooled[0, n:].mean(dtype=np.float64)])
    assert res.converged[0]
    assert means.mean() == pytest.approx(target[0], abs=1e-4)
    # the difference is the network's own (0.1 (g - g')), whatever the common input level
    assert means[0] - means[1] == pytest.approx(0.1 * (g - g_other), abs=1e-5)
    assert abs(g - g_other) > 1e-3
    separate = [constrained_prediction(net, f, 0.4, target, MeanConstraint())[0][0].mean(dtype=np.float64)
                for f in (features, other)]
    np.testing.assert_allclose(separate, target[0], atol=1e-4)  # per structure: the difference is gone


def test_printed_sign_diverges(affine):
    net, features, g = affine
    target = np.array([0.5])
    assert 0.05 + 0.1 * g - 0.1 * 0.5 > 0.01  # the first error is positive: the printed '+' pushes c up
    _, res = constrained_prediction(net, features, 0.4, target, MeanConstraint(sign="paper", bounds=None))
    err = (res.history_mean - target[:, None])[0]
    assert np.all(np.isfinite(err)) and not res.converged[0] and res.iterations[0] == 6
    # the error grows by 1 + 0.75 * slope = 1.675 per update: 22x after 6
    np.testing.assert_allclose(err[1:] / err[:-1], 1 + STEP * 0.9, rtol=1e-3)
    assert abs(err[-1]) > 20 * abs(err[0])
    # the reported prediction is the best evaluation (the first), not the runaway last one
    assert res.input_level[0] == 0.5 and res.mean_prediction[0] == pytest.approx(0.5 + err[0])
    # with the default bounds the input runs up onto c = 1, still unconverged
    _, bounded = constrained_prediction(net, features, 0.4, target, MeanConstraint(sign="paper"))
    hist = bounded.history_input[0][np.isfinite(bounded.history_input[0])]
    assert hist[-1] == 1.0 and np.all(np.diff(hist) > 0) and not bounded.converged[0]


@pytest.mark.parametrize("slope, converges", [(0.5, True), (1.0, True), (2.5, True), (2.8, False), (-0.5, False)])
def test_constraint_on_a_linear_mean(slope, converges):
    # Xbar(c) = c* + 0.03 + slope (c - c*): the error changes by 1 - 0.75 slope per update, so the converging
    # update converges exactly for 0 < slope < 8/3 (given enough updates)
    target, calls = 0.6, []

    def evaluate(c, which):
        calls.append(len(c))
        return target + 0.03 + slope * (c - target)

    res = MeanConstraint(max_iterations=50, bounds=None).compute(evaluate, np.array([target]))
    assert bool(res.converged[0]) is converges
    assert len(calls) <= 51
    err = res.history_mean[0] - target
    assert err[1] / err[0] == pytest.approx(1 - STEP * slope, rel=1e-9)
    # the paper's 6 updates reach 1e-4 from an error of 0.03 only where |1 - 0.75 slope|^6 * 0.03 < 1e-4
    six = MeanConstraint(bounds=None).compute(evaluate, np.array([target]))
    assert bool(six.converged[0]) is (abs(1 - STEP * slope) ** 6 * 0.03 < 1e-4)


def test_constraint_switches():
    evaluate = lambda c, which: 0.1 + 0.5 * c  # noqa: E731
    assert MeanConstraint(enabled=False).compute(evaluate, [0.5]).iterations[0] == 0
    res = MeanConstraint(max_iterations=2, tolerance=0.0).compute(evaluate, [0.5, 0.8])
    assert res.history_input.shape == (2, 3) and res.iterations.tolist() == [2, 1]
    # c* = 0.8 is out of reach (Xbar <= 0.6 on [0, 1]): the input is clipped to 1, stops moving, stops there
    np.testing.assert_allclose(res.history_input[1], [0.8, 1.0, np.nan])
    assert res.input_level[1] == 1.0 and not res.converged[1]
    with pytest.raises(PredictionInputError, match="sign"):
        MeanConstraint(sign="plus")
    with pytest.raises(PredictionInputError, match="bounds"):
        MeanConstraint(bounds=(1.0, 0.0))


# --------------------------------------------------------------------------------------------- chunks, memory
@pytest.mark.parametrize("fast", [True, False], ids=["factorised", "plain"])
def test_chunks_are_used_and_give_the_whole_prediction(affine, fast):
    net, features, _ = affine
    sizes = []
    handle = net.head.register_forward_hook(lambda mod, inp, out: sizes.append(out.shape[-2]))
    try:
        chunked, res = constrained_prediction(net, features, 0.4, [0.8, 0.5], MeanConstraint(), chunk_size=64,
                                              fast_attention=fast)
    finally:
        handle.remove()
    whole, _ = constrained_prediction(net, features, 0.4, [0.8, 0.5], MeanConstraint(), chunk_size=10**6,
                                      fast_attention=False)
    assert max(sizes) == 64 and sum(sizes) == 300 * (res.iterations.max() + 1)
    np.testing.assert_allclose(chunked, whole, atol=2e-6)


MEMORY_PROBE = r"""
import json, resource, numpy as np, torch
from tglassmlp.model.network import TGlassMLP
from tglassmlp.predict import MeanConstraint, constrained_prediction
torch.set_num_threads(1)
n0, m, chunk, levels = 38400, 172, 1024, np.linspace(0.95, 0.45, 11)   # type-0 particles of N = 82560
net = TGlassMLP(n_descriptors=m, seed=0).eval()
feats = torch.randn(n0, m, generator=torch.Generator().manual_seed(0))
sizes = []
net.head.register_forward_hook(lambda mod, inp, out: sizes.append(out.shape[-2]))
constrained_prediction(net, feats[:64], 0.4, levels, MeanConstraint(max_iterations=0), chunk)   # warm-up
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out, res = constrained_prediction(net, feats, 0.4, levels, MeanConstraint(max_iterations=1, tolerance=0.0), chunk)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"delta_mb": (peak - base) / 1024, "max_chunk": max(sizes), "shape": list(out.shape),
                  "finite": bool(np.isfinite(out).all())}))
"""


def test_large_prediction_uses_bounded_memory():
    """N_0 = 38400 particles (N = 82560), 11 levels: an unchunked forward pass holds (11, 38400, 172) float32
    tensors of 277 MB each (logits, softmax weights, reweighted descriptors; measured +907 MB of peak RSS).
    In chunks of 1024 the peak may grow only by the factorised attention's per-particle vectors, (1 + 2) copies
    of the (38400, 172) features (76 MB), the (11, 38400) outputs and a few chunk-sized tensors."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["max_chunk"] == 1024 and r["shape"] == [11, 38400] and r["finite"]
    per_particle_vectors_mb = 3 * 38400 * 172 * 4 / 2**20
    unchunked_tensor_mb = 11 * 38400 * 172 * 4 / 2**20
    assert r["delta_mb"] < per_particle_vectors_mb + 48, r
    assert r["delta_mb"] < unchunked_tensor_mb / 2, r


# --------------------------------------------------------------------------------------------- GlassBench round trip
@pytest.fixture(scope="module")
def glassbench_models(glassbench_npz, tmp_path_factory):
    """Two small networks (paper sizes, random weights) with a scaler fitted on the GlassBench structure."""
    from tglassmlp.data import read_glassbench

    gb = read_glassbench(glassbench_npz)
    desc = structural_descriptors(gb.inherent_positions, gb.types, gb.box)
    scaler = DescriptorScaler(names=descriptor_names()).fit(desc[gb.types == 0])
    root = tmp_path_factory.mktemp("models")
    for seed in (0, 1):
        net = TGlassMLP(n_descriptors=scaler.n_kept, seed=seed)
        net.set_state_normalization([0.6, 0.5, 0.45], [0.9, 0.65, 0.5])
        save_model_dir(root / f"seed{seed}", {"n_descriptors": scaler.n_kept}, net, scaler,
                       {"train": [[0.45, 0.5], [0.6, 0.9]]})
    return root, gb, desc


def test_glassbench_round_trip(glassbench_models, tmp_path):
    root, gb, desc = glassbench_models
    ensemble = DirectoryEnsemble(root).load()
    assert len(ensemble) == 2
    result = predict_structures(ensemble, gb.path, tmp_path / "out", levels=[0.8, 0.5], cache_dir=None)
    (path,) = result["files"]
    assert Path(path).name == "N1290T0.23_202_tc05.pred.h5"
    d = read_prediction(path)
    np.testing.assert_array_equal(d["types"], gb.types)  # order and types 0..2 of the input
    np.testing.assert_array_equal(d["positions"], gb.positions)
    np.testing.assert_array_equal(d["inherent_positions"], gb.inherent_positions)
    ref = gb.types == 0
    np.testing.assert_array_equal(d["reference_index"], np.flatnonzero(ref))
    assert d["attrs"]["temperature"] == 0.23 and d["attrs"]["n_particles"] == 1290
    assert d["propensity_mean"].shape == (2, 1290) and d["propensity_networks"].shape == (2, 2, 1290)
    assert np.isnan(d["propensity_mean"][:, ~ref]).all() and np.isfinite(d["propensity_mean"][:, ref]).all()
    # independent evaluation: each network at the input level the file reports, on the file's particle order
    members = ensemble.members
    c_in = d["constraint"]["input_level"]
    per_net = []
    for k, m in enumerate(members):
        x = torch.from_numpy(m.scaler.transform(desc[ref]).astype(np.float32))
        with torch.no_grad():
            per_net.append(m.network(x, 0.23, torch.tensor(c_in[k], dtype=torch.float32)).numpy())
    per_net = np.stack(per_net)
    np.testing.assert_allclose(d["propensity_networks"][:, :, ref], per_net, atol=1e-5)
    np.testing.assert_allclose(d["propensity_mean"][:, ref], per_net.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(d["propensity_std"][:, ref], per_net.std(axis=0), atol=1e-5)
    np.testing.assert_allclose(d["constraint"]["mean_prediction"], per_net.mean(axis=2), atol=1e-5)
    assert [e["digest"] for e in d["attrs"]["ensemble"]] == [m.digest for m in members]

    # a rerun keeps the finished file; other settings are refused unless overwrite
    mtime = Path(path).stat().st_mtime_ns
    again = predict_structures(ensemble, gb.path, tmp_path / "out", levels=[0.8, 0.5], cache_dir=None)
    assert again["structures"][0]["resumed"] and Path(path).stat().st_mtime_ns == mtime
    with pytest.raises(PredictionInputError, match="other settings"):
        predict_structures(ensemble, gb.path, tmp_path / "out", levels=[0.7], cache_dir=None)
    redone = predict_structures(ensemble, gb.path, tmp_path / "out", levels=[0.7], cache_dir=None, overwrite=True)
    assert read_prediction(redone["files"][0])["levels"].tolist() == [0.7]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["files"] == redone["files"]


def test_structure_checks(glassbench_models, tmp_path):
    root, gb, desc = glassbench_models
    ensemble = DirectoryEnsemble(root).load()
    s = load_structure(gb.path)
    check_structure(s, ensemble)  # the real thing passes
    bad = load_structure(gb.path)
    bad.types = np.where(bad.types == 2, 1, bad.types)
    with pytest.raises(PredictionInputError, match=r"type\(s\) \[2\] absent"):
        check_structure(bad, ensemble)
    bad = load_structure(gb.path)
    bad.box *= 1.1
    with pytest.raises(PredictionInputError, match="number density"):
        check_structure(bad, ensemble)
    bad = load_structure(gb.path)
    bad.descriptor_names = bad.descriptor_names[:-1] + ["other"]
    with pytest.raises(PredictionInputError, match="descriptor columns differ.*column 175"):
        check_structure(bad, ensemble)
    # a GlassBench-named file with a NaN position: the importer's message, naming file and key
    with np.load(gb.path) as npz:
        raw = {k: npz[k] for k in npz.files}
    raw["initial_positions"] = raw["initial_positions"].copy()
    raw["initial_positions"][7, 0] = np.nan
    np.savez(tmp_path / "N1290T0.23_999_tc05.npz", **raw)
    with pytest.raises(PredictionInputError, match="N1290T0.23_999_tc05.npz.*not finite"):
        load_structure(tmp_path / "N1290T0.23_999_tc05.npz")
    np.savez(tmp_path / "structure.npz", **raw)
    with pytest.raises(PredictionInputError, match="structure.npz: file name does not follow GlassBench"):
        load_structure(tmp_path / "structure.npz")


def test_missing_inherent_structure_and_descriptors_are_computed(tmp_path):
    from conftest import random_configuration
    from tglassmlp.data import shard_path, write_shard
    from tglassmlp.physics import forces

    pos, types = random_configuration(40, 7.0, seed=5)
    path = shard_path(tmp_path, 0.35, 2)
    write_shard(path, {"positions": pos, "types": types}, {"temperature": 0.35, "box": 7.0, "seed": 0,
                                                         "config": {"test": True}, "source": "test"})
    with pytest.raises(PredictionInputError, match="no inherent structure stored"):
        load_structure(path, compute_inherent=False)
    s = load_structure(path, cache_dir=tmp_path / "cache")
    assert s.inherent_computed and s.label == "T0.350_s0002" and s.temperature == 0.35
    assert np.abs(forces(s.inherent_positions, types, 7.0)).max() <= 1e-6
    np.testing.assert_allclose(s.descriptors, structural_descriptors(s.inherent_positions, types, 7.0), rtol=1e-12)
    assert s.descriptor_names == descriptor_names()


def test_input_errors(glassbench_models, tmp_path):
    root, gb, _ = glassbench_models
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(PredictionInputError, match="unknown structure file type '.txt'"):
        find_structures(tmp_path / "notes.txt")
    with pytest.raises(PredictionInputError, match="holds no shard"):
        find_structures(tmp_path)
    with pytest.raises(PredictionInputError, match="does not exist"):
        find_structures(tmp_path / "missing.h5")
    # a model directory without its standardisation
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("network.yaml", "state_dict.pt"):
        (broken / f).write_bytes((root / "seed0" / f).read_bytes())
    with pytest.raises(ModelDirectoryError, match=r"lacks \['scaler.npz'\].*standardisation"):
        load_model_dir(broken)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictionInputError, match="no model directory"):
        DirectoryEnsemble(tmp_path / "empty").load()
    with pytest.raises(PredictionInputError, match="either levels"):
        levels_at(0.3, levels=[0.5], times=[10.0])
    with pytest.raises(PredictionInputError, match="need a time-temperature superposition"):
        levels_at(0.3, times=[10.0])
    with pytest.raises(PredictionInputError, match=r"in \(0, 1\]"):
        levels_at(0.3, levels=[1.5])


def test_times_become_levels_by_the_master_curve():
    tts = tts_from_dict({"beta": 0.8, "tau_alpha": {"0.45": 750.0, "0.6": 200.0}, "arrhenius": None})
    with pytest.raises(PredictionInputError, match=r"missing \['beta'\].*labels_report.json or tts.json"):
        tts_from_dict({"tau_alpha": {"0.45": 750.0}})
    with pytest.raises(PredictionInputError, match="time-temperature superposition: .*beta must be positive"):
        tts_from_dict({"beta": 0.0, "tau_alpha": {"0.45": 750.0}})
    c, t = levels_at(0.45, times=[750.0, 75.0], tts=tts)
    np.testing.assert_allclose(c, [0.5, math.exp(-math.log(2) * 0.1**0.8)], rtol=1e-12)
    assert t.tolist() == [750.0, 75.0]
    with pytest.raises(PredictionInputError, match="arrhenius_t_max"):
        levels_at(0.35, times=[100.0], tts=tts)  # no Arrhenius law to extrapolate with
    # the demo's label report is a fitted TTS: <C_B>(tau_alpha) = 1/2 at every fitted temperature
    report = PROJECT_ROOT / "docs" / "demo" / "labels_report.json"
    if report.is_file():
        demo = tts_from_json(report)
        for temperature, tau in json.loads(report.read_text())["tau_alpha"].items():
            assert levels_at(float(temperature), times=[tau], tts=demo)[0][0] == pytest.approx(0.5, abs=1e-12)


# --------------------------------------------------------------------------------------------- MLflow sources
def _log_model_run(tracking, model_dir: Path, tags: dict) -> str:
    run_id = tracking.start_run(tags)
    for f in sorted(model_dir.iterdir()):
        tracking.log_artifact(f, "model")
    tracking.end("FINISHED")
    return run_id


def test_manifest_and_mlflow_sources(request, glassbench_models, tmp_path):
    from tglassmlp.tracking import MlflowTracking

    root, _, _ = glassbench_models
    uri = fresh_store(request, tmp_path)
    tracking = MlflowTracking(uri, "study", artifact_location=str(tmp_path / "artifacts"))
    r0 = _log_model_run(tracking, root / "seed0", {"ensemble.selected": "true"})
    r1 = _log_model_run(tracking, root / "seed1", {"ensemble.selected": "false"})
    digests = {r0: load_model_dir(root / "seed0").digest, r1: load_model_dir(root / "seed1").digest}

    ens = MlflowEnsemble(uri, "study").load()
    assert ens.names == [r0] and ens.members[0].digest == digests[r0]
    assert sorted(MlflowEnsemble(uri, "study", filter="").load().names) == sorted([r0, r1])
    with pytest.raises(PredictionInputError, match="no finished run .* matches"):
        MlflowEnsemble(uri, "study", filter="tags.seed = '7'").load()
    with pytest.raises(PredictionInputError, match="has no experiment 'nope'"):
        MlflowEnsemble(uri, "nope").load()

    manifest = tmp_path / "ensemble.json"
    ranking = [{"run_id": r1, "score": 0.01}, {"run_id": r0, "score": 0.2}]
    manifest.write_text(json.dumps({"selected": [], "ranking": ranking, "note": "no run passes"}))
    with pytest.raises(PredictionInputError, match="selects no run .*top_k"):
        ManifestEnsemble(manifest, uri).load()
    top = ManifestEnsemble(manifest, uri, top_k=1).load()
    assert top.names == [r1] and top.members[0].digest == digests[r1] and "top 1" in top.source["how"]
    manifest.write_text(json.dumps({"selected": [r0, "0123456789abcdef"], "ranking": ranking}))
    with pytest.raises(PredictionInputError, match="run 0123456789abcdef is not in the MLflow store"):
        ManifestEnsemble(manifest, uri).load()
    with pytest.raises(PredictionInputError, match="does not exist"):
        ManifestEnsemble(manifest, f"sqlite:///{tmp_path}/none.db").load()
    with pytest.raises(PredictionInputError, match="names no tracking store"):
        ManifestEnsemble(manifest).load()
    # select_sweep records its store in the manifest: enough to load the ensemble
    manifest.write_text(json.dumps({"selected": [r0], "ranking": ranking, "tracking_uri": uri}))
    assert ManifestEnsemble(manifest).load().members[0].digest == digests[r0]

    # the selection's reader (tglassmlp.ensemble) downloads and reads through load_model_dir: same weights
    from tglassmlp.ensemble import load_run_network

    local = load_model_dir(root / "seed0")
    network, scaler, state_points = load_run_network(tracking.client, r0, tmp_path / "dl")
    assert not network.training and state_points == {"train": [[0.45, 0.5], [0.6, 0.9]]}
    assert scaler.names == local.scaler.names and np.array_equal(scaler.mean, local.scaler.mean)
    for k, v in local.network.state_dict().items():
        torch.testing.assert_close(network.state_dict()[k], v, rtol=0, atol=0)
    save_model_dir(tmp_path / "no_state_points", {"n_descriptors": local.scaler.n_kept}, local.network, local.scaler)
    r2 = _log_model_run(tracking, tmp_path / "no_state_points", {"ensemble.selected": "false"})
    with pytest.raises(FileNotFoundError, match=f"run {r2}: .*no state_points.json"):
        load_run_network(tracking.client, r2, tmp_path / "dl2")


# --------------------------------------------------------------------------------------------- Hydra entry point
def test_predict_py_with_times_and_mlflow(request, glassbench_models, tmp_path):
    root, gb, _ = glassbench_models
    uri = fresh_store(request, tmp_path)
    tts_file = tmp_path / "tts.json"
    tts_file.write_text(json.dumps({"beta": 0.8, "tau_alpha": {"0.23": 1000.0}, "arrhenius": None}))
    cmd = [sys.executable, str(PROJECT_ROOT / "predict.py"), "ensemble_source=directory",
           f"ensemble_source.path={root}", f"structures={gb.path}", "levels=null", "times=[1000,100]",
           f"tts.json={tts_file}", f"out_dir={tmp_path}/pred", f"paths.output_dir={tmp_path}/out",
           f"logger.tracking_uri={uri}", "cache_dir=null", "progress=false", "study=test"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "N1290T0.23_202_tc05.pred.h5" in out.stdout and "MLflow run" in out.stdout
    d = read_prediction(tmp_path / "pred" / "N1290T0.23_202_tc05.pred.h5")
    np.testing.assert_allclose(d["levels"], [0.5, math.exp(-math.log(2) * 0.1**0.8)], rtol=1e-12)
    np.testing.assert_allclose(d["times"], [1000.0, 100.0])
    # the TTS used is written back (TimeTemperatureSuperposition.to_dict): the input values and the settings
    written = json.loads((tmp_path / "pred" / "tts.json").read_text())
    assert written["beta"] == 0.8 and written["tau_alpha"] == {"0.23": 1000.0} and written["arrhenius"] is None
    assert set(written["settings"]) == {"arrhenius_t_max", "fit_below", "tau_glass"}
    from tglassmlp.tracking import make_client

    client = make_client(uri)
    exp = client.get_experiment_by_name("test/predict")  # experiments by purpose: <study>/predict
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["job"] == "predict"
    assert "constraint/converged_fraction" in run.data.metrics and run.data.params["n_networks"] == "2"
    names = [a.path for a in client.list_artifacts(run.info.run_id, "predictions")]
    assert names == ["predictions/N1290T0.23_202_tc05.pred.h5"]



def test_predict_config_composes_and_names_a_missing_ensemble(tmp_path):
    from hydra import compose, initialize_config_dir

    from tglassmlp.paths import config_dir
    from tglassmlp.predict import predict

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=["ensemble_source=manifest", "track=false",
                                                        f"paths.output_dir={tmp_path}"])
    assert cfg.constraint.max_iterations == 6 and cfg.constraint.step == 0.75 and cfg.constraint.sign == "converging"
    assert cfg.logger.experiment_name == "tglassmlp_demo/predict"
    with pytest.raises(PredictionInputError, match="set ensemble_source.manifest="):
        predict(cfg)
    assert not (tmp_path / "predictions").exists()  # nothing written before the ensemble is known


def test_configured_constraint_pools_a_temperature_and_keeps_per_structure_means(glassbench_models, tmp_path):
    """predict.py's configured constraint (conf/predict.yaml, instantiated as predict.py does) fixes the mean
    over all structures of a temperature, not each structure's: two different T = 0.23 structures keep
    different means (chi_4 survives) while the constraint acts on every network's pooled mean."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from tglassmlp.paths import config_dir

    root, gb, _ = glassbench_models
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=["ensemble_source=manifest", "track=false"])
    constraint = instantiate(cfg.constraint)
    assert constraint.scope == "temperature" and MeanConstraint().scope == "temperature"
    # a second structure at the same T: 40 type-1 <-> type-2 (GlassBench numbering) swaps keep the composition
    raw = dict(np.load(gb.path))
    types = raw["types"].copy()
    ones, twos = np.flatnonzero(types == 1)[:40], np.flatnonzero(types == 2)[:40]
    types[ones], types[twos] = 2, 1
    other = tmp_path / "N1290T0.23_999_tc05.npz"
    np.savez(other, **{**raw, "types": types})
    ensemble = DirectoryEnsemble(root).load()
    target = 0.8
    result = predict_structures(ensemble, [gb.path, other], tmp_path / "out", levels=[target], cache_dir=None,
                                constraint=constraint)
    preds = [read_prediction(f) for f in result["files"]]
    per_net = []  # (structure, network) mean over that structure's reference particles
    for d in preds:
        ref = d["types"] == 0
        per_net.append(d["propensity_networks"][:, 0][:, ref].mean(axis=1, dtype=np.float64))  # (networks, levels, N)
    per_net = np.array(per_net)
    n_ref = np.array([(d["types"] == 0).sum() for d in preds])
    pooled = (per_net * n_ref[:, None]).sum(axis=0) / n_ref.sum()
    # random-weight networks do not reach the target inside the bounds; what the constraint acted on is
    # stored: one input per network for both structures, and the pooled mean (not each structure's own)
    for d in preds:
        np.testing.assert_allclose(d["constraint"]["input_level"], preds[0]["constraint"]["input_level"])
        np.testing.assert_allclose(np.ravel(d["constraint"]["mean_prediction"]), pooled, atol=1e-5)
    assert np.all(np.abs(per_net[0] - per_net[1]) > 1e-3), per_net


def test_prediction_file_to_gsd_for_ovito(glassbench_models, tmp_path):
    """A prediction file becomes a GSD frame whose per-particle properties (read back by the gsd package) are the
    file's propensity mean and spread per level, NaN off the reference type."""
    gsd_hoomd = pytest.importorskip("gsd.hoomd", reason="gsd not installed (pip install gsd)")
    from tglassmlp.predict.gsd_export import main

    root, gb, _ = glassbench_models
    result = predict_structures(DirectoryEnsemble(root).load(), gb.path, tmp_path / "out", levels=[0.8, 0.5],
                                cache_dir=None)
    d = read_prediction(result["files"][0])
    assert main([str(tmp_path / "p.gsd"), result["files"][0]]) == 0
    with gsd_hoomd.open(tmp_path / "p.gsd", mode="r") as traj:
        frame = traj[0]
        assert frame.particles.N == 1290 and frame.configuration.dimensions == 2
        np.testing.assert_array_equal(frame.particles.typeid, gb.types)
        for k, c in enumerate([0.8, 0.5]):
            np.testing.assert_array_equal(frame.log[f"particles/propensity_c{c:.3f}"], d["propensity_mean"][k])
            np.testing.assert_array_equal(frame.log[f"particles/propensity_std_c{c:.3f}"], d["propensity_std"][k])
        np.testing.assert_array_equal(frame.log["particles/reference"], (gb.types == 0).astype(np.int32))


def test_networks_trained_on_other_descriptor_settings_are_refused(glassbench_models, tmp_path, caplog):
    """A scaler records the descriptor settings hash it was fitted with (saved and loaded with it); predict
    refuses a network whose hash differs from the prediction's settings, warns for one without a record."""
    from tglassmlp.data.structures import descriptor_settings_hash
    from tglassmlp.observables.descriptors import DescriptorScaler, load_descriptor_settings
    from tglassmlp.predict.run import check_descriptor_settings

    root, gb, _ = glassbench_models
    ensemble = DirectoryEnsemble(root).load()
    default = descriptor_settings_hash(load_descriptor_settings())
    plain = load_descriptor_settings()
    plain = dataclasses.replace(plain, perimeter_weighted=False)
    assert descriptor_settings_hash(plain) != default
    for m in ensemble.members:
        m.scaler.settings_hash = None
    with caplog.at_level("WARNING"):
        check_descriptor_settings(ensemble)
    assert "record no descriptor settings" in caplog.text
    for m in ensemble.members:
        m.scaler.settings_hash = default
    check_descriptor_settings(ensemble)
    with pytest.raises(PredictionInputError, match="other settings"):
        check_descriptor_settings(ensemble, plain)
    ensemble.members[1].scaler.settings_hash = descriptor_settings_hash(plain)
    with pytest.raises(PredictionInputError, match="1 network"):
        predict_structures(ensemble, gb.path, tmp_path / "out", levels=[0.8], cache_dir=None)
    saved = ensemble.members[1].scaler.save(tmp_path / "scaler.npz")
    assert DescriptorScaler.load(saved).settings_hash == descriptor_settings_hash(plain)

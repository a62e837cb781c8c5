"""The one self-consistency selection (tglassmlp.ensemble): the score's definition against hand-computed
values, the default selection points, ranking / fallback / error rules, and which structures are scored.
The end-to-end paths (train.py multirun, the two-step transfer) are in test_train.py and test_transfer.py."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_configuration
from tglassmlp.data import shard_path, write_shard
from tglassmlp.training.datamodule import StructureRecord
from tglassmlp.ensemble import (
    STRUCTURES_BASIS,
    TEST_METRIC_BASIS,
    NoSelfConsistentNetworkError,
    StructureCache,
    points_below_t_min,
    rank_and_select,
    read_structures,
    self_consistency,
)
from tglassmlp.predict import EnsembleMember


class _ShiftScaler:
    """Stands in for a DescriptorScaler: x -> x - 1 (so a forgotten standardisation changes the numbers)."""

    def transform(self, x):
        return np.asarray(x, dtype=np.float64) - 1.0


class _LinearNetwork(torch.nn.Module):
    """y_i = c + a T + b f_i0 on the standardised features f: the mean over particles is known in closed form."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, features, temperature, level):
        return level + self.a * temperature + self.b * features[:, 0]


def _member(a=0.01, b=0.1, t_min=0.6):
    return EnsembleMember(name="net", network=_LinearNetwork(a, b), scaler=_ShiftScaler(),
                          state_points={"train": [[t_min, 0.8], [0.7, 0.5]]}, digest="0" * 16, source="test")


def _records(temperature, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [StructureRecord(temperature=temperature, index=k, path=Path(f"s{k:04d}.h5"), box=5.0,
                            reference=np.ones(n, bool), descriptors=rng.normal(1.0, 0.5, size=(n, 3)),
                            positions=np.zeros((n, 2))) for k, n in enumerate(sizes)]


def test_score_is_the_mean_over_structures_of_the_particle_mean():
    """|mean_s mean_i X(s; T, c) - c| with X = c + a T + b f_0: = |a T + b mean_s mean_i (x_i0 - 1)|. Structures
    of different sizes make the mean of means differ from the pooled particle mean; the paper's is the former."""
    a, b = 0.01, 0.1
    member = _member(a, b)
    records = {0.4: _records(0.4, [5, 40], seed=1), 0.35: _records(0.35, [12], seed=2)}
    points = [(0.4, 0.8), (0.4, 0.5), (0.35, 0.8)]
    got = self_consistency(member, records, points)
    x04 = [r.descriptors[:, 0] - 1.0 for r in records[0.4]]
    per_structure = np.mean([x.mean() for x in x04])
    pooled = np.concatenate(x04).mean()
    assert abs(per_structure - pooled) > 1e-3  # the two definitions are distinguishable here
    # the network computes in float32: outputs near c ~ 1 are resolved to ~1e-7, far below the 1e-4 threshold
    f32 = dict(rel=0, abs=2e-7)
    for c in (0.8, 0.5):  # the level enters the input and cancels in the residual
        assert got[f"T0.400_c{c:.2f}"] == pytest.approx(abs(a * 0.4 + b * per_structure), **f32)
    x035 = records[0.35][0].descriptors[:, 0] - 1.0
    assert got["T0.350_c0.80"] == pytest.approx(abs(a * 0.35 + b * x035.mean()), **f32)
    # EnsembleMember.predict is the same forward pass: its particle means give the same residual
    means = [member.predict(r.descriptors, 0.4, 0.8).mean() for r in records[0.4]]
    assert got["T0.400_c0.80"] == pytest.approx(abs(np.mean(means) - 0.8), **f32)


def test_temperature_without_structures_is_left_out(caplog):
    with caplog.at_level(logging.WARNING, logger="tglassmlp.ensemble"):
        got = self_consistency(_member(), {0.4: [], 0.35: _records(0.35, [6])}, [(0.4, 0.8), (0.35, 0.8)])
    assert list(got) == ["T0.350_c0.80"] and "no structure at T = 0.4" in caplog.text


def test_default_points_are_below_the_lowest_training_temperature():
    sp = {"train": [[0.6, 0.8], [0.45, 0.5]], "test": [[0.45, 0.5]]}
    assert points_below_t_min(sp, [0.6, 0.35, 0.45, 0.4, 0.449999999999], [0.8, 0.5]) == [
        (0.35, 0.8), (0.35, 0.5), (0.4, 0.8), (0.4, 0.5)]  # 0.449999999999 is T_min within rounding
    assert points_below_t_min(sp, [0.45, 0.6], [0.8]) == []


def _entries():
    return [{"run_id": "a", "seed": 0, "score": 3e-4, "basis": STRUCTURES_BASIS},
            {"run_id": "b", "seed": 1, "score": 5e-5, "basis": STRUCTURES_BASIS},
            {"run_id": "c", "seed": 2, "score": 1e-6, "basis": TEST_METRIC_BASIS},
            {"run_id": "d", "seed": 3, "score": math.nan, "basis": TEST_METRIC_BASIS}]


def test_ranking_rules():
    entries = _entries()
    choice = rank_and_select(entries, 1e-4)
    assert [e["run_id"] for e in entries] == ["c", "b", "a", "d"]  # best first, NaN last
    assert choice["selected"] == ["c", "b"] and choice["note"].startswith("2 of 4 networks pass")
    assert [e["selected"] for e in entries] == [True, True, False, False]
    # select_sweep: a score on the training temperatures' test set ranks but never selects
    entries = _entries()
    choice = rank_and_select(entries, 1e-4, structures_only=True, allow_empty=True)
    assert choice["selected"] == ["b"] and not entries[0]["selected"]
    choice = rank_and_select(_entries(), 1e-5, structures_only=True, allow_empty=True)
    assert choice["selected"] == [] and choice["fallback"] is None and "nothing selected" in choice["note"]
    choice = rank_and_select(_entries(), 1e-5, 2, structures_only=True, allow_empty=True, setting="top")
    assert choice["selected"] == ["c", "b"] and "(top=2)" in choice["note"] and choice["fallback"]
    with pytest.raises(NoSelfConsistentNetworkError, match="sweep x: no network of 4 passes .*with top=K"):
        rank_and_select(_entries(), 1e-7, None, "sweep x", setting="top")
    nan = [{"run_id": "d", "seed": 3, "score": math.nan, "basis": TEST_METRIC_BASIS}]
    with pytest.raises(NoSelfConsistentNetworkError, match="none of the 1 networks has a finite"):
        rank_and_select(nan, 1e-4, 2)
    assert rank_and_select(nan, 1e-4, 2, allow_empty=True)["selected"] == []
    with pytest.raises(ValueError, match="fallback_top_k must be a positive"):
        rank_and_select(_entries(), 1e-4, -1)


def _shard(root, t, k, equilibrated=None, inherent=True):
    pos, types = random_configuration(40, 7.0, seed=100 * k + int(t * 100))
    fields = {"positions": pos, "types": types}
    if inherent:
        fields["inherent_positions"] = pos
    attrs = {"temperature": t, "box": 7.0, "seed": 0, "config": {"synthetic": True}, "source": "synthetic",
             "structure_index": k}
    if equilibrated is not None:
        attrs["equilibrated"] = equilibrated
    write_shard(shard_path(root, t, k), fields, attrs)


def test_which_structures_are_scored(tmp_path, caplog):
    """select_sweep scores only usable structures (equilibrated, with an inherent structure); the transfer
    reads every shard, as its data module trains on them, and a shard it cannot use is an error."""
    root = tmp_path / "data"
    _shard(root, 0.4, 0)
    _shard(root, 0.4, 1, equilibrated=0)
    _shard(root, 0.4, 2, inherent=False)
    _shard(root, 0.4, 3, equilibrated=1)
    with caplog.at_level(logging.WARNING):
        usable = read_structures(root, [0.4], usable_only=True)
    assert [r.index for r in usable[0.4]] == [0, 3]
    assert "s0001.h5: structure flagged as not equilibrated" in caplog.text
    assert "s0002.h5: no inherent structure yet" in caplog.text
    # max_structures counts the equilibrated structures, as the data module's listing does
    assert [r.index for r in read_structures(root, [0.4], max_structures=2, usable_only=True)[0.4]] == [0]
    assert read_structures(root, [0.35], usable_only=True) == {0.35: []}
    rec = usable[0.4][1]
    assert rec.descriptors.shape == (rec.n_reference, 176) and rec.n_reference == int(rec.reference.sum())
    with pytest.raises(ValueError, match="s0002.h5: no 'descriptors' and no 'inherent_positions'"):
        read_structures(root, [0.4])
    assert [r.index for r in read_structures(root, [0.4], max_structures=2)[0.4]] == [0, 1]

    cache = StructureCache(root, usable_only=True)
    first = cache([0.4])[0.4]
    assert cache([0.35, 0.4])[0.4] is first  # read once, shared by every network scored

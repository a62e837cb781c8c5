"""The dataset label report on a synthetic dataset whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tglassmlp.analysis.labels_report import label_report, temperature_curves
from tglassmlp.data import shard_path, write_shard
from tglassmlp.observables import descriptor_names, structural_descriptors
from tglassmlp.observables.tts import master_curve

from conftest import random_configuration

BOX, N, BETA = 7.5, 50, 0.8
TAUS = {0.6: 20.0, 0.5: 60.0}


@pytest.fixture
def synthetic_dataset(tmp_path):
    """Propensities decay on the master curve, slower for particles of low coarse-grained energy."""
    column = descriptor_names().index("energy_all_L2")
    times = np.geomspace(1, 300, 16)
    for T, tau in TAUS.items():
        for k in range(2):
            pos, types = random_configuration(N, BOX, seed=10 * k + int(T * 10))
            x = structural_descriptors(pos, types, BOX)[:, column]
            z = (x - x.mean()) / x.std()
            # mobility rises with energy: the propensity anti-correlates with energy_all_L2
            propensity = master_curve(times[:, None] / tau, BETA) ** np.exp(0.3 * z)[None, :]
            write_shard(shard_path(tmp_path, T, k),
                        {"positions": pos, "types": types, "inherent_positions": pos, "times": times,
                         "propensity": propensity.astype(np.float32)},
                        {"temperature": T, "box": BOX, "seed": k, "config": "{}", "source": "test",
                         "equilibrated": 1})
    # a flagged structure must be left out
    write_shard(shard_path(tmp_path, 0.5, 9), {"positions": pos, "types": types, "times": times,
                                               "propensity": np.zeros_like(propensity, dtype=np.float32)},
                {"temperature": 0.5, "box": BOX, "seed": 9, "config": "{}", "source": "test", "equilibrated": 0})
    return tmp_path


def test_report_recovers_relaxation_times_and_negative_baseline_correlation(synthetic_dataset, tmp_path):
    curves = temperature_curves(synthetic_dataset)
    assert curves["skipped"] == [str(shard_path(synthetic_dataset, 0.5, 9))]
    report = label_report(synthetic_dataset, tmp_path / "report", levels=[0.8, 0.5])
    for T, tau in TAUS.items():
        # the structure average of heterogeneous exponents shifts tau slightly: a few percent
        assert report["tau_alpha"][T] == pytest.approx(tau, rel=0.1)
    assert report["beta"] == pytest.approx(BETA, rel=0.1)
    assert len(report["rows"]) == 4
    assert all(r["pearson_mean"] < -0.8 for r in report["rows"])
    assert (tmp_path / "report" / "master_curve.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "report" / "labels_report.json").read_text())["baseline"] == "energy_all_L2"

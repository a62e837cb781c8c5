"""The one MLflow run lifecycle (tglassmlp.tracking.MlflowTracking.run): provenance tags, FINISHED on success,
FAILED on an error (which propagates), KILLED on Ctrl-C, and a recorded run reopened by a resumed job."""

from __future__ import annotations

import pytest

from test_tracking import fresh_store
from tglassmlp.tracking import MlflowTracking, git_commit


def test_run_context_manager_records_outcome_and_provenance(request, tmp_path):
    tracking = MlflowTracking(fresh_store(request, tmp_path), "study", str(tmp_path / "art"))
    with tracking.run({"job": "test", "skipped": None}, run_name="ok") as ok:
        tracking.log_metrics({"x": 1.0})
    with pytest.raises(ValueError, match="boom"):
        with tracking.run({"job": "test"}, run_name="bad") as bad:
            raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt):
        with tracking.run({"job": "test"}, run_name="stopped") as stopped:
            raise KeyboardInterrupt
    client = tracking.client
    statuses = {r: client.get_run(r).info.status for r in (ok, bad, stopped)}
    assert statuses == {ok: "FINISHED", bad: "FAILED", stopped: "KILLED"}
    tags = client.get_run(ok).data.tags
    commit, dirty = git_commit()
    assert tags["git_commit"] == commit == tags["mlflow.source.git.commit"]
    assert tags["git_dirty"] == str(dirty).lower() and tags["job"] == "test" and "skipped" not in tags
    assert client.get_run(ok).data.metrics == {"x": 1.0}

    # a resumed job reopens its recorded run (RUNNING again, then its own outcome) rather than making another
    with tracking.run({"job": "test"}, "resumed", reopen=bad) as again:
        assert again == bad and client.get_run(bad).info.status == "RUNNING"
    assert client.get_run(bad).info.status == "FINISHED"
    # a recorded run that the store no longer has: a new one
    with tracking.run({"job": "test"}, "fresh", reopen="0" * 32) as fresh:
        pass
    assert fresh not in (ok, bad, stopped) and client.get_run(fresh).info.status == "FINISHED"

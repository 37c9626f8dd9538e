"""Spooled points replay into the store they were meant for, and the spool file goes away."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from mlstack.tracking import ExperimentTracker, replay_run_ends, replay_spool
from mlstack.tracking.mlflow import tracker as tracker_module
from mlstack.tracking.mlflow.spool import MetricSpool, spool_folder


def test_replay_sends_every_spooled_point_and_removes_the_file(local_store, local_settings):
    with ExperimentTracker(run_name="spooled") as tracker:
        tracker.log_metric("kept", 0.0, step=0)
    spool = MetricSpool(spool_folder(local_settings), local_store)
    spool.append([(tracker.run_id, "loss", float(step), 1_000 + step, step) for step in range(1, 2501)])

    assert replay_spool(local_settings) == 2500
    history = MlflowClient(local_store).get_metric_history(tracker.run_id, "loss")
    assert sorted(metric.step for metric in history) == list(range(1, 2501))
    assert not spool.path.exists()
    assert replay_spool(local_settings) == 0


def test_a_run_ended_while_the_server_is_unreachable_is_ended_by_replay(local_store, local_settings, monkeypatch):
    monkeypatch.setattr(tracker_module, "_server_answers", lambda tracking_uri: False)
    with pytest.warns(UserWarning, match="mlstack sync"), ExperimentTracker(run_name="ends-offline") as tracker:
        tracker.log_metric("loss", 0.5, step=0)
    monkeypatch.undo()
    record = spool_folder(local_settings) / f"run-end-{tracker.run_id}.json"

    assert mlflow.active_run() is None
    assert MlflowClient(local_store).get_run(tracker.run_id).info.status == "RUNNING"
    assert replay_spool(record) == 0 and record.exists(), "replay_spool must leave run ends to replay_run_ends"
    assert replay_run_ends(local_settings) == 1
    info = MlflowClient(local_store).get_run(tracker.run_id).info
    assert (info.status, info.end_time is not None) == ("FINISHED", True)
    assert not record.exists()
    assert replay_run_ends(local_settings) == 0

"""Spooled points replay into the store they were meant for, and the spool file goes away."""

from __future__ import annotations

from mlflow import MlflowClient

from mlstack.tracking import ExperimentTracker, replay_spool
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

"""A server crash while a run logs: every point reaches the server once it is back."""

from __future__ import annotations

import pytest

from mlstack.tracking import ExperimentTracker

pytestmark = pytest.mark.integration

POINTS = 50_000


def test_every_point_survives_a_sigkill_of_the_server_mid_run(mlflow_stack, experiment):
    with ExperimentTracker(experiment, run_name="outage") as tracker:
        for step in range(POINTS):
            tracker.log_metric("loss", 1.0 / (step + 1), step=step)
        pending_at_crash = tracker._pipeline.pending
        mlflow_stack.restart_server()
        assert pending_at_crash > 0, "the crash must hit while points are still on their way"
    with mlflow_stack.pg_connect() as connection:
        count, distinct_steps, status = connection.execute(
            "SELECT count(*), count(DISTINCT step), (SELECT status FROM runs WHERE run_uuid = %s) "
            "FROM metrics WHERE run_uuid = %s AND key = 'loss'",
            (tracker.run_id, tracker.run_id),
        ).fetchone()
    assert (count, distinct_steps, status) == (POINTS, POINTS, "FINISHED")

"""A server crash while a run logs: every point, and the run's end, reach the server once it is back."""

from __future__ import annotations

import mlflow
import pytest

from mlstack.tracking import ExperimentTracker, setup_mlflow
from mlstack.tracking.mlflow.errors import MetricsSpooledError
from tests.conftest import run_mlstack

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


def test_a_run_that_ends_while_the_server_is_down_is_ended_by_sync(mlflow_stack, experiment):
    # "localhost" gives this test a metric pipeline of its own, with a 2-second outage budget
    uri = mlflow_stack.tracking_uri.replace("127.0.0.1", "localhost")
    settings = mlflow_stack.settings.model_copy(update={"metric_outage_budget_seconds": 2.0})
    setup_mlflow(experiment, tracking_uri=uri, settings=settings)
    tracker = ExperimentTracker(run_name="ends-while-down").start_run()
    tracker.log_metric("loss", 0.5, step=0)
    tracker.flush()
    mlflow_stack.stop_server()
    try:
        tracker.log_metric("loss", 0.25, step=1)
        with pytest.raises(MetricsSpooledError) as raised:
            tracker.end_run("FINISHED")  # without the spooled end: minutes of client retries, then an MlflowException
        assert "mlstack sync" in " ".join(raised.value.__notes__)
        assert mlflow.active_run() is None
    finally:
        mlflow_stack.start_server()
        setup_mlflow(experiment, tracking_uri=mlflow_stack.tracking_uri, settings=mlflow_stack.settings)
    with mlflow_stack.pg_connect() as connection:
        assert connection.execute("SELECT status FROM runs WHERE run_uuid = %s", (tracker.run_id,)).fetchone() == (
            "RUNNING",
        )

    sync = run_mlstack(mlflow_stack.settings.project_dir, "sync")  # as a user runs it: the login from .env

    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert "ended 1 runs" in sync.stdout
    with mlflow_stack.pg_connect() as connection:
        status, end_time = connection.execute(
            "SELECT status, end_time FROM runs WHERE run_uuid = %s", (tracker.run_id,)
        ).fetchone()
        steps = connection.execute(
            "SELECT step FROM metrics WHERE run_uuid = %s AND key = 'loss' ORDER BY step", (tracker.run_id,)
        ).fetchall()
    assert (status, steps) == ("FINISHED", [(0,), (1,)])
    assert end_time is not None

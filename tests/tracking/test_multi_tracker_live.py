"""MultiTracker against the live MLflow stack with ClearML offline: when one backend fails mid-run the
other keeps every point, checked where the points land (rows in PostgreSQL, the offline session's
metrics.jsonl)."""

from __future__ import annotations

import json
import time

import pytest

from mlstack.tracking import replay_run_ends, replay_spool, setup_mlflow
from mlstack.tracking.clearml.offline import FAILED_TAG
from mlstack.tracking.clearml.tracker import ClearMLTracker
from mlstack.tracking.multi import track

pytestmark = pytest.mark.integration

POINTS = 1000


def clearml_steps(settings, task_id: str, metric: str = "loss") -> list[int]:
    session = settings.clearml_offline_path / "offline" / task_id
    lines = (session / "metrics.jsonl").read_text().splitlines()
    events = [event for line in lines if line.strip() for event in json.loads(line)]
    return sorted(event["iter"] for event in events if event.get("metric") == metric)


def clearml_tags(settings, task_id: str) -> list[str]:
    return json.loads((settings.clearml_offline_path / "offline" / task_id / "task.json").read_text())["tags"]


def postgres_points(mlflow_stack, run_id: str) -> tuple[list[int], str]:
    with mlflow_stack.pg_connect() as connection:
        steps = connection.execute(
            "SELECT step FROM metrics WHERE run_uuid = %s AND key = 'loss' ORDER BY step", (run_id,)
        ).fetchall()
        (status,) = connection.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,)).fetchone()
    return [step for (step,) in steps], status


def test_clearml_failing_mid_run_leaves_every_point_in_mlflow(
    mlflow_stack, experiment, isolated_sdk, restore_mlflow_setup, monkeypatch
):
    fail_from = 400
    report = isolated_sdk / "notes.txt"
    report.write_text("after the failure")
    original = ClearMLTracker.log_metrics

    def reporter_dies(self, metrics, step=0, **seeds_names):
        if step >= fail_from:
            raise ConnectionError("the ClearML reporter died")
        original(self, metrics, step, **seeds_names)

    monkeypatch.setattr(ClearMLTracker, "log_metrics", reporter_dies)
    settings = mlflow_stack.settings
    with track("clearml fails", experiment, settings=settings) as run:
        assert run.backends == ("mlflow", "clearml")
        for step in range(POINTS):
            run.log_metrics({"loss": 1 / (step + 1)}, step=step)
        run.log_artifact(report)

    assert run.backends == ("mlflow",)
    (failure,) = run.failures
    assert (failure.backend, failure.call) == ("clearml", f"log_metrics(step={fail_from})")
    assert postgres_points(mlflow_stack, run.run_ids["mlflow"]) == (list(range(POINTS)), "FINISHED")
    assert clearml_steps(settings, run.run_ids["clearml"]) == list(range(fail_from))
    assert FAILED_TAG in clearml_tags(settings, run.run_ids["clearml"]), "the ClearML task is closed as failed"


def test_mlflow_server_killed_mid_run_leaves_every_point_in_clearml(
    mlflow_stack, experiment, isolated_sdk, restore_mlflow_setup
):
    kill_at = 100
    # "localhost" gives this test a metric pipeline of its own, with a 2-second outage budget
    uri = mlflow_stack.tracking_uri.replace("127.0.0.1", "localhost")
    settings = mlflow_stack.settings.model_copy(update={"metric_outage_budget_seconds": 2.0})
    setup_mlflow(experiment, tracking_uri=uri, settings=settings)
    try:
        with track("mlflow server killed", experiment, settings=settings) as run:
            for step in range(POINTS):
                run.log_metrics({"loss": 1 / (step + 1)}, step=step)
                if step == kill_at:
                    mlflow_stack.stop_server()
                if step > kill_at and "mlflow" in run.backends:
                    time.sleep(0.02)  # the budget runs out while points keep coming
    finally:
        mlflow_stack.start_server()

    (failure,) = [failure for failure in run.failures if failure.call.startswith("log_metrics")]
    assert failure.backend == "mlflow" and "mlstack sync" in str(failure.error)
    failed_at = int(failure.call.removeprefix("log_metrics(step=").rstrip(")"))
    assert kill_at < failed_at < POINTS, "the outage budget ran out mid-run"
    assert clearml_steps(settings, run.run_ids["clearml"]) == list(range(POINTS))
    assert "mlflow" not in run.backends and run.backends == ("clearml",)

    # What MLflow took before it was set aside is in the server or its spool; sync sends the rest.
    replay_spool(settings)
    replay_run_ends(settings)
    assert postgres_points(mlflow_stack, run.run_ids["mlflow"]) == (list(range(failed_at + 1)), "FAILED")

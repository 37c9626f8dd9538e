"""Trackers against the live stack: effects checked where they land (PostgreSQL rows, objects in the bucket)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pytest  # noqa: E402

from mlstack.tracking import (  # noqa: E402
    ExperimentTracker,
    MLflowExperimentTracker,
    NestedRunTracker,
    ParamConflictError,
    create_mlflow_run,
    find_mlflow_runs,
)

pytestmark = pytest.mark.integration


def artifact_keys(stack, run_id: str) -> set[str]:
    listed = stack.s3.list_objects_v2(Bucket=stack.bucket)
    return {
        item["Key"].split(f"{run_id}/artifacts/", 1)[1]
        for item in listed.get("Contents", [])
        if f"{run_id}/artifacts/" in item["Key"]
    }


def test_a_tracked_run_stores_params_tags_every_metric_point_and_artifacts_in_the_bucket(
    mlflow_stack, experiment, tmp_path
):
    report = tmp_path / "report.txt"
    report.write_text("residuals ok")
    figure, axes = plt.subplots()
    axes.plot([1, 2, 3])
    with ExperimentTracker(experiment, run_name="ridge", tags={"stage": "training"}) as tracker:
        tracker.log_params({"alpha": 0.5, "model_type": "ridge"})
        tracker.set_tags({"author": "tests"})
        for step in range(2500):
            tracker.log_metrics({"loss": 1 / (step + 1), "lr": 0.01}, step=step)
        tracker.log_artifact(report, artifact_path="reports")
        tracker.log_dict({"grid": [1, 2]}, "param_grid.json")
        tracker.log_figure(figure, "plots/curve.png")
        with pytest.raises(ParamConflictError):
            tracker.log_param("alpha", 0.9)

    with mlflow_stack.pg_connect() as connection:
        points = connection.execute(
            "SELECT key, count(*), min(step), max(step) FROM metrics WHERE run_uuid = %s GROUP BY key ORDER BY key",
            (tracker.run_id,),
        ).fetchall()
        params = dict(
            connection.execute("SELECT key, value FROM params WHERE run_uuid = %s", (tracker.run_id,)).fetchall()
        )
        status, name = connection.execute(
            "SELECT status, name FROM runs WHERE run_uuid = %s", (tracker.run_id,)
        ).fetchone()
    assert points == [("loss", 2500, 0, 2499), ("lr", 2500, 0, 2499)]
    assert params == {"alpha": "0.5", "model_type": "ridge"}
    assert (status, name) == ("FINISHED", "ridge")
    assert mlflow.get_run(tracker.run_id).data.tags["stage"] == "training"
    assert artifact_keys(mlflow_stack, tracker.run_id) == {"reports/report.txt", "param_grid.json", "plots/curve.png"}
    assert tracker.artifact_uri.endswith(f"{tracker.run_id}/artifacts")
    assert tracker.experiment_id == mlflow.get_experiment_by_name(experiment).experiment_id


def test_the_seed_style_start_run_and_plain_mlflow_calls_log_into_the_same_run(experiment):
    tracker = MLflowExperimentTracker(experiment_name=experiment)
    with tracker.start_run(run_name="gb-v1", tags={"framework": "sklearn"}):
        mlflow.log_metric("from_fluent", 1.0)
        tracker.log_metric("from_tracker", 2.0)
    run = mlflow.get_run(tracker.run_id)
    assert run.data.metrics == {"from_fluent": 1.0, "from_tracker": 2.0}
    assert run.data.tags["framework"] == "sklearn"


def test_nested_runs_are_children_of_the_open_run(experiment):
    with create_mlflow_run(run_name="cv", tags={"cv_folds": "3"}, experiment_name=experiment) as parent:
        for fold in range(3):
            with NestedRunTracker(run_name=f"fold-{fold}") as child:
                child.log_metric("fold_score", 0.8 + fold / 100)
        parent.log_metric("mean_cv_score", 0.81)
    children = find_mlflow_runs(experiment, f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert sorted(run.info.run_name for run in children) == ["fold-0", "fold-1", "fold-2"]
    assert all(run.info.status == "FINISHED" for run in children)


def test_an_exception_marks_the_run_failed_on_the_server_and_keeps_its_metrics(mlflow_stack, experiment):
    with pytest.raises(KeyError), ExperimentTracker(experiment, run_name="crash") as tracker:
        for step in range(1200):
            tracker.log_metric("loss", 1.0, step=step)
        raise KeyError("missing column")
    with mlflow_stack.pg_connect() as connection:
        status, points = connection.execute(
            "SELECT status, (SELECT count(*) FROM metrics WHERE run_uuid = runs.run_uuid) FROM runs "
            "WHERE run_uuid = %s",
            (tracker.run_id,),
        ).fetchone()
    assert (status, points) == ("FAILED", 1200)


def test_a_run_deleted_mid_run_ends_with_the_trackers_own_error(mlflow_stack, experiment):
    from mlflow import MlflowClient

    from mlstack.tracking.mlflow.errors import TrackingError

    tracker = ExperimentTracker(experiment, run_name="deleted-meanwhile")
    tracker.__enter__()
    tracker.log_metrics({"loss": 0.5}, step=0)
    tracker.flush()
    MlflowClient(mlflow_stack.tracking_uri).delete_run(tracker.run_id)
    with pytest.raises(TrackingError, match="could not be ended FINISHED") as raised:
        tracker.end_run()
    assert type(raised.value) is TrackingError and tracker.run_id in str(raised.value)

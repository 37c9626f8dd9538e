"""`mlstack sync` replaying a spool into the live server, folders of artifacts, the conversion preset."""

from __future__ import annotations

import json
import time

import pytest
from mlflow import MlflowClient

from mlstack.tracking import ExperimentTracker
from mlstack.tracking.mlflow.presets import PROCESS_TAG, MLflowConversionTracker
from mlstack.tracking.mlflow.spool import REJECTED_FOLDER, MetricSpool, read_spool, spool_folder, spool_run_end
from tests.conftest import run_mlstack

pytestmark = pytest.mark.integration


def test_mlstack_sync_replays_spooled_points_into_postgres_once(mlflow_stack, experiment):
    run_id = (
        MlflowClient(mlflow_stack.tracking_uri)
        .create_run(MlflowClient(mlflow_stack.tracking_uri).get_experiment_by_name(experiment).experiment_id)
        .info.run_id
    )
    now = int(time.time() * 1000)
    spool = MetricSpool(spool_folder(mlflow_stack.settings), mlflow_stack.tracking_uri)
    spool.append((run_id, "recovered", float(step), now + step, step) for step in range(2500))

    first = run_mlstack(mlflow_stack.settings.project_dir, "sync")
    second = run_mlstack(mlflow_stack.settings.project_dir, "sync")

    assert first.returncode == 0, first.stdout + first.stderr
    assert "sent 2500 spooled points" in first.stdout
    assert "nothing spooled" in second.stdout
    with mlflow_stack.pg_connect() as connection:
        count, top = connection.execute(
            "SELECT count(*), max(step) FROM metrics WHERE run_uuid = %s AND key = 'recovered'", (run_id,)
        ).fetchone()
    assert (count, top) == (2500, 2499)


def test_mlstack_sync_sets_aside_what_the_server_refuses_and_sends_the_rest(mlflow_stack, experiment):
    client = MlflowClient(mlflow_stack.tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    deleted, good = (client.create_run(experiment_id).info.run_id for _ in range(2))
    client.delete_run(deleted)
    now = int(time.time() * 1000)
    folder = spool_folder(mlflow_stack.settings)
    spool = MetricSpool(folder, mlflow_stack.tracking_uri)
    spool.append((run_id, "late", float(step), now + step, step) for run_id in (deleted, good) for step in range(1200))
    for run_id in (deleted, good):
        spool_run_end(folder, mlflow_stack.tracking_uri, run_id, "FINISHED", now + 5_000)

    first = run_mlstack(mlflow_stack.settings.project_dir, "sync")
    second = run_mlstack(mlflow_stack.settings.project_dir, "sync")

    output = first.stdout + first.stderr
    assert first.returncode == 1, output
    assert "Traceback" not in output
    assert "sent 1200 spooled points, ended 1 runs" in first.stdout
    set_aside_points = folder / REJECTED_FOLDER / f"{spool.path.stem}-{deleted}.jsonl"
    header = json.loads(set_aside_points.read_text().splitlines()[0])
    assert header["spool_file"] == spool.path.name and header["reason"].startswith("HTTP 400 INVALID_PARAMETER_VALUE: ")
    assert f"set aside in {set_aside_points}: {header['reason']}" in first.stdout
    tracking_uri, kept = read_spool(set_aside_points)
    assert (tracking_uri, len(list(kept))) == (mlflow_stack.tracking_uri, 1200)
    set_aside_end = folder / REJECTED_FOLDER / f"run-end-{deleted}.json"
    assert f"set aside in {set_aside_end}: {json.loads(set_aside_end.read_text())['reason']}" in first.stdout
    assert (second.returncode, "nothing spooled" in second.stdout) == (0, True), second.stdout + second.stderr
    with mlflow_stack.pg_connect() as connection:
        points = dict(
            connection.execute(
                "SELECT run_uuid, count(*) FROM metrics WHERE run_uuid IN (%s, %s) AND key = 'late' GROUP BY run_uuid",
                (deleted, good),
            ).fetchall()
        )
        status, end_time = connection.execute(
            "SELECT status, end_time FROM runs WHERE run_uuid = %s", (good,)
        ).fetchone()
    assert points == {good: 1200}
    assert (status, end_time) == ("FINISHED", now + 5_000)


def test_log_artifacts_uploads_a_folder_into_the_bucket(mlflow_stack, experiment, tmp_path):
    (tmp_path / "eval" / "plots").mkdir(parents=True)
    (tmp_path / "eval" / "metrics.json").write_text('{"rmse": 4.2}')
    (tmp_path / "eval" / "plots" / "residuals.txt").write_text("flat")

    with ExperimentTracker(experiment, run_name="folder") as tracker:
        tracker.log_artifacts(tmp_path / "eval", artifact_path="evaluation")

    listed = mlflow_stack.s3.list_objects_v2(Bucket=mlflow_stack.bucket, Prefix="")
    keys = {item["Key"].split("/artifacts/", 1)[1] for item in listed["Contents"] if tracker.run_id in item["Key"]}
    assert keys == {"evaluation/metrics.json", "evaluation/plots/residuals.txt"}


def test_conversion_preset_tags_the_run_and_its_source(mlflow_stack, experiment):
    with ExperimentTracker(experiment, run_name="source") as source:
        source.log_param("framework", "sklearn")
    with MLflowConversionTracker(experiment) as conversion:
        conversion.log_source_run(source.run_id)

    tags = MlflowClient(mlflow_stack.tracking_uri).get_run(conversion.run_id).data.tags
    assert tags[PROCESS_TAG] == "conversion"
    assert tags["mlstack.source_run_id"] == source.run_id
    assert tags["mlflow.runName"] == "conversion"

"""`mlstack monitoring exporter` on live stacks, started as a user starts it: its numbers are what a
plain mlflow client wrote, and what PostgreSQL, the bucket and the backup folder hold when read directly;
on the ha topology, each replica's replication lag by its Patroni name."""

from __future__ import annotations

import os
import uuid

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from mlstack.maintenance.bucket import bucket_objects
from mlstack.monitoring.exporter import RUN_STATUSES
from tests.conftest import client_environment, free_port, run_mlstack, wait_for
from tests.stack import LiveStack
from tests.unit.monitoring.exporter_process import labelled, running_exporter, scrape, value

pytestmark = pytest.mark.integration

#: Points the test logs (one log-batch request holds at most 1,000).
POINTS = 800


@pytest.fixture
def client(mlflow_stack, monkeypatch) -> MlflowClient:
    """A plain mlflow client with the environment a user exports from .env for a plain script."""
    for name, setting in client_environment(mlflow_stack.settings).items():
        monkeypatch.setenv(name, setting)
    return MlflowClient(tracking_uri=mlflow_stack.tracking_uri)


def held(stack: LiveStack) -> dict:
    """What the stack holds, read directly: PostgreSQL as its superuser, the bucket as the store's admin."""
    with stack.pg_connect() as connection:

        def rows(query: str) -> dict:
            return dict(connection.execute(query).fetchall())

        found = {
            "runs": rows("SELECT status, count(*) FROM runs WHERE lifecycle_stage = 'active' GROUP BY status"),
            "experiments": rows("SELECT lifecycle_stage, count(*) FROM experiments GROUP BY lifecycle_stage"),
            "models": connection.execute("SELECT count(*) FROM registered_models").fetchone()[0],
            "versions": connection.execute(
                "SELECT count(*) FROM model_versions WHERE current_stage <> 'Deleted_Internal'"
            ).fetchone()[0],
        }
    objects = list(bucket_objects(stack.settings))
    return {**found, "objects": len(objects), "object_bytes": sum(size for _, size in objects)}


def points_written(stack: LiveStack) -> int:
    """PostgreSQL's own count of rows inserted into the metrics table, now."""
    with stack.pg_connect() as connection:
        return connection.execute("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'metrics'").fetchone()[0]


def database_sizes(stack: LiveStack) -> dict[str, float]:
    databases = [stack.settings.postgres_db, stack.settings.mlflow_auth_db]
    with stack.pg_connect() as connection:
        query = "SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname = ANY(%s)"
        return {name: float(size) for name, size in connection.execute(query, (databases,)).fetchall()}


def plus(counts: dict[str, int], added: dict[str, int]) -> dict[str, int]:
    return {key: counts.get(key, 0) + added.get(key, 0) for key in {*counts, *added}}


def exported(samples, name: str, label: str) -> dict[str, int]:
    """The exporter's counts by `label`, without its zeros (the direct readings have none)."""
    return {key: int(found) for key, found in labelled(samples, name, label).items() if found}


def test_the_exporter_reports_what_was_written_as_postgres_and_the_bucket_hold_it(mlflow_stack, client, tmp_path):
    stack, settings = mlflow_stack, mlflow_stack.settings
    before, points_before = held(stack), points_written(stack)

    tag = uuid.uuid4().hex[:8]
    experiment = client.create_experiment(f"exporter-{tag}")
    dropped = client.create_experiment(f"exporter-dropped-{tag}")
    client.create_run(dropped)  # deleted with its experiment: not live
    client.delete_experiment(dropped)
    statuses = ["RUNNING", "FINISHED", "FINISHED", "FAILED", "KILLED"]
    runs = [client.create_run(experiment).info.run_id for _ in statuses]
    for run_id, status in zip(runs, statuses, strict=True):
        if status != "RUNNING":
            client.set_terminated(run_id, status)
    deleted_run = client.create_run(experiment).info.run_id
    client.delete_run(deleted_run)
    client.log_batch(
        runs[0], metrics=[Metric("loss", 1.0 / (step + 1), 1_700_000_000_000, step) for step in range(POINTS)]
    )
    sizes = {"report.txt": 1234, "weights.bin": 56789}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(os.urandom(size))
        client.log_artifact(runs[0], str(tmp_path / name))
    model = f"exporter-model-{tag}"
    client.create_registered_model(model)
    for _ in range(2):
        client.create_model_version(model, f"runs:/{runs[0]}/model", runs[0])
    client.delete_model_version(model, "2")
    backup = run_mlstack(settings.project_dir, "backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    archive = max(settings.backup_path.glob("mlstack-mlflow-*.tar"), key=lambda path: path.stat().st_mtime)

    with running_exporter(settings.project_dir, free_port(), tmp_path / "exporter.log") as (url, _):
        metric_points = "mlstack_mlflow_metric_points_written_total"
        # PostgreSQL publishes a backend's counts within seconds of its transaction, not at once
        wait_for(f"{POINTS} points counted", lambda: value(scrape(url), metric_points) >= points_before + POINTS)
        points_then = points_written(stack)
        samples = scrape(url)
        points_now, now = points_written(stack), held(stack)
        wait_for(
            "the database sizes as PostgreSQL gives them",
            lambda: labelled(scrape(url), "mlstack_postgres_database_bytes", "database") == database_sizes(stack),
        )

    assert labelled(samples, "mlstack_source_up", "source") == {"postgres": 1, "s3": 1, "backups": 1, "spool": 1}
    written = {"FINISHED": 2, "FAILED": 1, "KILLED": 1, "RUNNING": 1}
    assert exported(samples, "mlstack_mlflow_runs", "status") == now["runs"] == plus(before["runs"], written)
    assert set(labelled(samples, "mlstack_mlflow_runs", "status")) >= set(RUN_STATUSES)
    stages = exported(samples, "mlstack_mlflow_experiments", "lifecycle_stage")
    assert stages == now["experiments"] == plus(before["experiments"], {"active": 1, "deleted": 1})
    assert value(samples, "mlstack_mlflow_registered_models") == now["models"] == before["models"] + 1
    assert value(samples, "mlstack_mlflow_model_versions") == now["versions"] == before["versions"] + 1
    assert points_then <= value(samples, metric_points) <= points_now

    bucket = {"bucket": settings.mlflow_artifact_bucket}
    assert value(samples, "mlstack_bucket_objects", **bucket) == now["objects"] == before["objects"] + len(sizes)
    assert value(samples, "mlstack_bucket_bytes", **bucket) == now["object_bytes"]
    assert now["object_bytes"] == before["object_bytes"] + sum(sizes.values())

    assert value(samples, "mlstack_backup_last_success_timestamp_seconds") == archive.stat().st_mtime
    assert value(samples, "mlstack_backup_last_size_bytes") == archive.stat().st_size
    spool = settings.state_path / "spool"
    pending = len([path for path in spool.iterdir() if path.is_file()]) if spool.is_dir() else 0
    assert value(samples, "mlstack_spool_pending_files") == pending

    disk = os.statvfs(settings.state_path)
    size = value(samples, "mlstack_filesystem_size_bytes", path=str(settings.state_path))
    assert size == disk.f_blocks * disk.f_frsize
    assert 0 < value(samples, "mlstack_filesystem_avail_bytes", path=str(settings.state_path)) <= size
    assert value(samples, "mlstack_filesystem_size_bytes", path=str(settings.backup_path)) is not None
    assert value(samples, "mlstack_postgres_replication_lag_bytes", member="postgres-2") is None  # single: none

"""Backups that restore, on a scratch native stack of each topology (single; ha with its clusters and
replicas), as docs/operations.md "Backups" says: runs with params, 10,000 metric points, artifacts, a
registered model with an alias and a person's login; `mlstack backup`; `mlstack down`; every byte of
state wiped (.env too); `mlstack up`; `mlstack restore`: everything is identical. Then: a backup taken
while a tracker logs restores consistently, a damaged archive is refused before anything changes,
`upgrade` rolls back a migration that really fails, `gc` frees what deleted runs held and nothing else."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import mlflow
import psycopg
import pytest
import requests
from mlflow import MlflowClient
from rich.console import Console
from sklearn.linear_model import Ridge

from mlstack.bootstrap.storage import admin_s3
from mlstack.envfile import read_env, update_env
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import Settings
from mlstack.tracking import ExperimentTracker, setup_mlflow
from tests.conftest import make_project, run_mlstack
from tests.stack import discard

pytestmark = pytest.mark.integration

STACK = ("--stack", "mlflow", "--runtime", "native")
ALICE_PASSWORD = "alice-password-" + uuid.uuid4().hex[:8]
MODEL = "backup-model"


def logged_in(settings_dir: Path, monkeypatch) -> tuple[Settings, MlflowClient]:
    """The project's settings and a plain client with the login its .env has now."""
    values = read_env(settings_dir / ".env")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(name, values[name])
    settings = Settings.load(settings_dir)
    return settings, MlflowClient(settings.mlflow_url)


def ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def everything(settings: Settings) -> dict:
    """What a user would call the stack's content: rows of every table that matters, objects by checksum."""
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as connection:
        content = {
            table: sorted(map(repr, connection.execute(query).fetchall()))
            for table, query in {
                "runs": "SELECT run_uuid, name, status, lifecycle_stage, start_time, end_time, artifact_uri FROM runs",
                "metrics": "SELECT run_uuid, key, value, step, timestamp FROM metrics",
                "params": "SELECT run_uuid, key, value FROM params",
                "tags": "SELECT run_uuid, key, value FROM tags",
                "experiments": "SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments",
                "model_versions": "SELECT name, version, source, run_id, status FROM model_versions",
                "aliases": "SELECT name, alias, version FROM registered_model_aliases",
            }.items()
        }
    s3 = admin_s3(settings)
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.mlflow_artifact_bucket):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=settings.mlflow_artifact_bucket, Key=item["Key"])["Body"].read()
            objects[item["Key"]] = hashlib.sha256(body).hexdigest()
    return content | {"objects": objects}


def wipe(settings: Settings) -> None:
    """Every byte of the stack's state and configuration: the state folder, PostgreSQL's data, .env."""
    runtime = NativeRuntime(settings, Console(stderr=True))
    runtime.down()
    if runtime.postgres.os_user is not None:
        shutil.rmtree(runtime.postgres.home)
    shutil.rmtree(settings.state_path)
    settings.env_file.unlink()


@pytest.fixture(scope="module", params=["single", "ha"])
def project(request):
    """A scratch stack of each topology (MLSTACK_TOPOLOGY): every test here runs on both."""
    root = Path(tempfile.mkdtemp(prefix="mlstack-backup-"))
    settings = make_project(root / "project")
    update_env(settings.env_file, {"MLSTACK_TOPOLOGY": request.param})
    ok(run_mlstack(settings.project_dir, "up", *STACK))
    try:
        yield settings.project_dir
    finally:
        settings = Settings.load(settings.project_dir)
        runtime = NativeRuntime(settings, Console(stderr=True))
        discard(runtime)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def round_trip(project, tmp_path_factory):
    """Content before the backup, the archive, and content after wipe, up and restore."""
    monkeypatch = pytest.MonkeyPatch()
    settings, client = logged_in(project, monkeypatch)
    experiment_id = client.create_experiment("kept")
    for index in range(3):
        run = client.create_run(experiment_id, run_name=f"run-{index}")
        run_id = run.info.run_id
        client.log_param(run_id, "alpha", index / 10)
        for start in range(0, 10_000 if index == 0 else 100, 1000):
            metrics = [
                mlflow.entities.Metric("loss", 1 / (step + 1), 1_700_000_000_000 + step, step)
                for step in range(start, start + 1000)
            ]
            client.log_batch(run_id, metrics=metrics)
        artifact = tmp_path_factory.mktemp("artifacts") / f"weights-{index}.bin"
        artifact.write_bytes(bytes(range(256)) * (index + 1) * 40)
        client.log_artifact(run_id, str(artifact), "weights")
        client.set_terminated(run_id)
    mlflow.set_tracking_uri(settings.mlflow_url)
    with mlflow.start_run(experiment_id=experiment_id, run_name="model"):
        mlflow.sklearn.log_model(Ridge().fit([[0.0], [1.0]], [0.0, 1.0]), name="model", registered_model_name=MODEL)
    client.set_registered_model_alias(MODEL, "champion", "1")
    ok(run_mlstack(project, "user", "add", "alice", "--password-stdin", stdin=ALICE_PASSWORD + "\n"))
    before = everything(settings)

    backups = tmp_path_factory.mktemp("backups")
    made = ok(run_mlstack(project, "backup", "--output", str(backups), "--runtime", "native"))
    (archive,) = backups.glob("mlstack-mlflow-*.tar")
    ok(run_mlstack(project, "down", *STACK))
    wipe(settings)
    ok(run_mlstack(project, "init"))
    update_env(settings.env_file, {key: str(value) for key, value in ports(settings).items()})
    ok(run_mlstack(project, "up", *STACK))
    restored = ok(run_mlstack(project, "restore", str(archive), "--runtime", "native"))
    settings, _ = logged_in(project, monkeypatch)
    yield {
        "before": before,
        "after": everything(settings),
        "archive": archive,
        "backup_output": made,
        "restore_output": restored,
    }
    monkeypatch.undo()


def ports(settings: Settings) -> dict[str, object]:
    return {
        "POSTGRES_PORT": settings.postgres_port,
        "S3_PORT": settings.s3_port,
        "SEAWEEDFS_MASTER_PORT": settings.seaweedfs_master_port,
        "SEAWEEDFS_VOLUME_PORT": settings.seaweedfs_volume_port,
        "SEAWEEDFS_FILER_PORT": settings.seaweedfs_filer_port,
        "SEAWEEDFS_METRICS_PORT": settings.seaweedfs_metrics_port,
        "MLFLOW_PORT": settings.mlflow_port,
        "MLSTACK_HA_PORT_BASE": settings.ha_port_base,
        "MLSTACK_TOPOLOGY": settings.topology,
        "MLSTACK_TOOLS_DIR": settings.tools_path,
    }


def test_every_run_metric_artifact_model_and_alias_is_identical_after_the_round_trip(round_trip):
    before, after = round_trip["before"], round_trip["after"]
    assert len(before["metrics"]) >= 10_000 and len(before["objects"]) >= 4
    for part in before:
        assert after[part] == before[part], part


def test_restore_prints_the_verified_counts_and_the_archive_is_private(round_trip):
    assert "every count matches the archive's" in " ".join(round_trip["restore_output"].split())
    assert "metrics" in round_trip["restore_output"] and "objects" in round_trip["restore_output"]
    assert round_trip["archive"].stat().st_mode & 0o077 == 0


def test_people_keep_their_logins_and_the_new_env_logs_in(project, round_trip):
    settings = Settings.load(project)
    url = f"{settings.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(url, auth=("alice", ALICE_PASSWORD), timeout=10).status_code == 200
    admin = (settings.mlflow_auth_admin_username, settings.mlflow_auth_admin_password.get_secret_value())
    assert requests.get(url, auth=admin, timeout=10).status_code == 200


def test_a_stack_that_is_not_empty_is_refused_without_force(project, round_trip):
    refused = run_mlstack(project, "restore", str(round_trip["archive"]), "--runtime", "native")
    assert refused.returncode != 0 and "stack is not empty" in refused.stdout + refused.stderr


def test_a_damaged_archive_is_refused_before_anything_changes(project, round_trip, tmp_path):
    damaged = tmp_path / "damaged.tar"
    data = bytearray(round_trip["archive"].read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    damaged.write_bytes(bytes(data))
    settings = Settings.load(project)
    before = everything(settings)
    refused = run_mlstack(project, "restore", str(damaged), "--force", "--runtime", "native")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "nothing was changed" in output, output
    assert everything(settings) == before


def test_a_backup_taken_while_a_tracker_logs_restores_consistently(project, round_trip, tmp_path, monkeypatch):
    settings, client = logged_in(project, monkeypatch)
    experiment_id = client.create_experiment(f"busy-{uuid.uuid4().hex[:6]}")
    stop, tagged_one = threading.Event(), threading.Event()

    setup_mlflow(client.get_experiment(experiment_id).name, settings=settings)

    def busy() -> None:
        """mlstack's tracker logging runs that log an artifact, then say so in a tag: a tagged run
        must have its object."""
        index = 0
        while not stop.is_set():
            with ExperimentTracker(run_name=f"busy-{index}") as tracker:
                for step in range(200):
                    tracker.log_metrics({"m": float(step)}, step=step)
                artifact = tmp_path / f"a{index}.txt"
                artifact.write_text(f"artifact {index}")
                tracker.log_artifact(artifact)
                tracker.set_tags({"artifact_logged": "yes"})
            tagged_one.set()
            index += 1

    writer = threading.Thread(target=busy)
    writer.start()
    try:
        assert tagged_one.wait(timeout=300), "the tracker logged no run"
        ok(run_mlstack(project, "backup", "--output", str(tmp_path / "busy"), "--runtime", "native"))
    finally:
        stop.set()
        writer.join()
    (archive,) = (tmp_path / "busy").glob("*.tar")
    ok(run_mlstack(project, "restore", str(archive), "--force", "--runtime", "native"))
    settings, client = logged_in(project, monkeypatch)
    tagged = client.search_runs([experiment_id], "tags.artifact_logged = 'yes'", max_results=1000)
    assert tagged, "the backup caught runs in flight"
    keys = set(everything(settings)["objects"])
    for run in tagged:
        prefix = run.info.artifact_uri.removeprefix("mlflow-artifacts:/").strip("/")
        assert any(key.startswith(prefix + "/") for key in keys), f"run {run.info.run_id} lost its artifact"


def schema_revisions() -> tuple[str, str]:
    """The installed MLflow's newest schema revision and the one before it."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
    newest = ScriptDirectory.from_config(config).get_revision("head")
    return newest.revision, newest.down_revision


def schema_version(settings: Settings, set_to: str | None = None) -> str:
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as connection:
        if set_to is not None:
            connection.execute("UPDATE alembic_version SET version_num = %s", (set_to,))
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_an_upgrade_whose_migration_fails_restores_the_data_without_migrating_again(project, round_trip):
    """A schema the migration cannot apply: the database says it predates MLflow's newest revision but
    already holds that revision's tables, so `mlflow db upgrade` really fails (creating them). The
    rollback restores the backup as it was (no second migration, which would fail the same way); the
    server refuses the old schema and says so; once the cause is fixed the same command upgrades."""
    settings = Settings.load(project)
    before = everything(settings)
    newest, previous = schema_revisions()
    schema_version(settings, set_to=previous)

    failed = run_mlstack(project, "upgrade", "--runtime", "native")
    said = " ".join((failed.stdout + failed.stderr).split())  # as read, whatever the terminal's width
    assert failed.returncode != 0, said
    assert "upgrade failed in the schema migration" in said and "already exists" in said, said
    assert "restored from" in said and "does not start on that schema" in said, said
    assert schema_version(settings) == previous, "the rollback migrated again"
    assert everything(settings) == before

    schema_version(settings, set_to=newest)  # the cause, fixed
    ok(run_mlstack(project, "upgrade", "--runtime", "native"))
    assert everything(settings) == before
    assert all(service.healthy for service in NativeRuntime(settings, Console(stderr=True)).status())


def test_mlstack_upgrade_backs_up_migrates_and_restarts(project, round_trip):
    upgraded = ok(run_mlstack(project, "upgrade", "--runtime", "native"))
    assert "upgraded: the mlflow stack is current and up" in upgraded
    backups = Settings.load(project).backup_path
    assert list(backups.glob("mlstack-mlflow-*.tar")), "the backup before it"
    assert backups.stat().st_mode & 0o077 == 0, "the default backup folder is private"


def test_gc_frees_what_deleted_runs_held_and_never_touches_live_ones(project, round_trip, tmp_path, monkeypatch):
    settings, client = logged_in(project, monkeypatch)
    experiment_id = client.create_experiment(f"gc-{uuid.uuid4().hex[:6]}")
    runs = {}
    for name in ("kept", "deleted"):
        run_id = client.create_run(experiment_id, run_name=name).info.run_id
        artifact = tmp_path / f"{name}.bin"
        artifact.write_bytes(b"x" * 5000)
        client.log_artifact(run_id, str(artifact))
        runs[name] = run_id
    client.delete_run(runs["deleted"])
    prefix = {name: f"{experiment_id}/{run_id}/" for name, run_id in runs.items()}

    dry = ok(run_mlstack(project, "gc", "--dry-run"))
    assert "would free 1 deleted runs, 1 objects, 5,000 bytes" in dry
    assert ok(run_mlstack(project, "gc", "--older-than", "30d")).count("freed 0 deleted runs") == 1
    assert objects_under(settings, prefix["deleted"]), "dry run and --older-than delete nothing"

    assert "freed 1 deleted runs, 1 objects, 5,000 bytes" in ok(run_mlstack(project, "gc"))
    assert objects_under(settings, prefix["deleted"]) == []
    assert objects_under(settings, prefix["kept"]) == [f"{prefix['kept']}artifacts/kept.bin"]
    with psycopg.connect(settings.postgres_dsn(), autocommit=True) as connection:
        left = {
            row[0]
            for row in connection.execute("SELECT run_uuid FROM runs WHERE experiment_id = %s", (int(experiment_id),))
        }
    assert left == {runs["kept"]}


def objects_under(settings: Settings, prefix: str) -> list[str]:
    listing = admin_s3(settings).list_objects_v2(Bucket=settings.mlflow_artifact_bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]

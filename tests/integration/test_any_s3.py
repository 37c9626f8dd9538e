"""Bring your own S3: the S3 code paths (storage bootstrap, the server's artifacts, gc, backup and
restore) against two real S3 servers, never a mock: the stack's own SeaweedFS (the session's stack),
and a MinIO started here that the stack reaches through MLSTACK_S3_ENDPOINT, as a user's own S3.

The MinIO stands for an S3 a user runs: its root account is the stack's admin (S3_ADMIN_*), and the
MLflow server gets an account of its own whose policy grants the artifact bucket and nothing else,
made here with MinIO's admin API as its operator would. Effects are checked where they land: in the
bucket (the admin's client) and through the MLflow server.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from minio import MinioAdmin
from minio.credentials import StaticProvider
from mlflow import MlflowClient
from pydantic import SecretStr
from rich.console import Console

from mlstack.bootstrap import STORAGE_STEPS, Outcome, run_steps
from mlstack.bootstrap.storage import check_server_identity, ensure_bucket
from mlstack.envfile import update_env
from mlstack.errors import ConfigError, MissingToolError
from mlstack.health import http_ok, wait_until
from mlstack.maintenance.gc import collect_garbage
from mlstack.runtime.native.process import ManagedProcess, base_env
from mlstack.runtime.native.tools import find_minio, find_tools
from mlstack.secrets import generate_secret
from mlstack.settings import Settings
from mlstack.workflows import MlflowService
from tests.conftest import REQUIRED_RUNTIME, client_environment, free_port, make_project
from tests.stack import LiveStack, NativeStack

pytestmark = pytest.mark.integration

#: Past boto3's multipart threshold (8 MiB): the server uploads it to the bucket in two parts.
LARGE = 12 * 1024 * 1024 + 123


def bucket_policy(bucket: str) -> dict:
    """MinIO policy: read, write, list and delete inside `bucket`; nothing elsewhere."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            },
        ],
    }


def unavailable(reason: str) -> None:
    """CI (MLSTACK_REQUIRE_RUNTIME=native) fails on what is missing; elsewhere the test is skipped."""
    if REQUIRED_RUNTIME == "native":
        pytest.fail(f"MLSTACK_REQUIRE_RUNTIME=native but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def minio_backed_stack() -> Iterator[LiveStack]:
    """A scratch native stack whose artifact store is a MinIO of its own (MLSTACK_S3_ENDPOINT): MinIO's
    root account as the stack's admin, a bucket-confined account for the MLflow server."""
    root = Path(tempfile.mkdtemp(prefix="mlstack-any-s3-"))
    try:
        settings = make_project(root / "project")
        minio = find_minio(settings)
        if minio is None:
            unavailable("MinIO's server is not installed: `mlstack install-tools --minio` builds it (Go >= 1.24)")
        try:
            find_tools(settings)
        except MissingToolError as missing:
            unavailable(f"the native runtime cannot run: {missing}")

        console = Console(stderr=True)
        port, console_port = free_port(), free_port()
        endpoint = f"127.0.0.1:{port}"
        root_user, root_password = f"minio-root-{uuid.uuid4().hex[:8]}", generate_secret()
        process = ManagedProcess("minio", root / "minio-run", root / "minio-logs")
        process.start(
            [
                str(minio),
                "server",
                str(root / "minio-data"),
                "--address",
                endpoint,
                "--console-address",
                f"127.0.0.1:{console_port}",
                "--certs-dir",
                str(root / "minio-certs"),
            ],
            env={
                **base_env(),
                "MINIO_ROOT_USER": root_user,
                "MINIO_ROOT_PASSWORD": root_password,
                "MINIO_UPDATE": "off",
            },
        )
        stack: LiveStack | None = None
        try:
            live = f"http://{endpoint}/minio/health/live"
            wait_until("minio", lambda: http_ok(live), 60, console, process.is_running, process.tail)

            # the user's S3 operator: the server's account, confined to the artifact bucket
            bucket, server_key, server_secret = (
                settings.mlflow_artifact_bucket,
                settings.mlflow_s3_access_key,
                generate_secret(),
            )
            admin = MinioAdmin(endpoint=endpoint, credentials=StaticProvider(root_user, root_password), secure=False)
            policy = f"{bucket}-readwrite"
            admin.policy_add(policy, policy=bucket_policy(bucket))
            admin.user_add(server_key, server_secret)
            admin.attach_policy([policy], user=server_key)

            update_env(
                settings.env_file,
                {
                    "MLSTACK_S3_ENDPOINT": f"http://{endpoint}",
                    "S3_ADMIN_ACCESS_KEY": root_user,
                    "S3_ADMIN_SECRET_KEY": root_password,
                    "MLFLOW_S3_SECRET_KEY": server_secret,
                },
            )
            settings = Settings.load(settings.project_dir)
            stack = NativeStack(settings, console)
            stack.start()
            service = MlflowService(settings, stack.runtime, Console(file=io.StringIO()))
            service.client_account()
            stack.settings = service.settings
            yield stack
        finally:
            if stack is not None:
                stack.discard()
            process.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=["seaweedfs", "minio"])
def s3_stack(request) -> Iterator[LiveStack]:
    """A live MLflow stack on each S3: the session's stack (its own SeaweedFS), then one on a MinIO."""
    if request.param == "seaweedfs":
        yield request.getfixturevalue("mlflow_stack")
        return
    with minio_backed_stack() as stack:
        yield stack


@pytest.fixture
def client(s3_stack, monkeypatch) -> MlflowClient:
    """A plain mlflow client with the URI and client login exported from .env, as a user's script has them."""
    for name, value in client_environment(s3_stack.settings).items():
        monkeypatch.setenv(name, value)
    return MlflowClient(tracking_uri=s3_stack.tracking_uri)


def new_run(client: MlflowClient, experiment_id: str | None = None) -> tuple[str, str]:
    experiment_id = experiment_id or client.create_experiment(f"any-s3-{uuid.uuid4().hex[:10]}")
    return experiment_id, client.create_run(experiment_id).info.run_id


def log_file(client: MlflowClient, run_id: str, folder: Path, name: str, body: bytes, artifact_path: str) -> None:
    local = folder / run_id / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(body)
    client.log_artifact(run_id, str(local), artifact_path=artifact_path)


def artifact_key(experiment_id: str, run_id: str, path: str) -> str:
    """Where the server (--artifacts-destination s3://<bucket>) puts a run's artifact."""
    return f"{experiment_id}/{run_id}/artifacts/{path}"


def bucket_keys(stack: LiveStack, prefix: str) -> list[str]:
    pages = stack.s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


def error_code(call) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    return refused.value.response["Error"]["Code"]


def remove_bucket(stack: LiveStack, bucket: str) -> None:
    with contextlib.suppress(ClientError):
        for key in stack.s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            stack.s3.delete_object(Bucket=bucket, Key=key["Key"])
        stack.s3.delete_bucket(Bucket=bucket)


def test_storage_bootstrap_is_idempotent_and_the_server_key_stays_in_its_bucket(s3_stack):
    settings = s3_stack.settings
    for _ in range(2):  # `up` ran it once already: nothing more to create, however often it runs
        results = run_steps(STORAGE_STEPS, settings, lambda result: None)
        assert [(result.step, result.outcome) for result in results] == [
            ("artifact bucket", Outcome.PRESENT),
            ("MLflow server identity", Outcome.PRESENT),
        ]

    other = f"other-{uuid.uuid4().hex[:8]}"
    elsewhere = settings.model_copy(update={"mlflow_artifact_bucket": other})
    try:
        # the admin creates a bucket (once); the server's key does nothing there
        assert ensure_bucket(elsewhere).outcome == Outcome.CREATED
        assert ensure_bucket(elsewhere).outcome == Outcome.PRESENT
        s3_stack.s3.put_object(Bucket=other, Key="secret.txt", Body=b"not for mlflow")
        server = s3_stack.server_s3
        assert error_code(lambda: server.get_object(Bucket=other, Key="secret.txt")) == "AccessDenied"
        assert error_code(lambda: server.put_object(Bucket=other, Key="intrusion.txt", Body=b"x")) == "AccessDenied"
        assert error_code(lambda: server.list_objects_v2(Bucket=other)) == "AccessDenied"
        with pytest.raises(ConfigError, match=f"cannot list bucket {other}"):
            check_server_identity(elsewhere)
        assert [item["Key"] for item in s3_stack.s3.list_objects_v2(Bucket=other)["Contents"]] == ["secret.txt"]
    finally:
        remove_bucket(s3_stack, other)

    # a server key the store does not know is refused with what the store must grant
    wrong = settings.model_copy(update={"mlflow_s3_secret_key": SecretStr(generate_secret())})
    with pytest.raises(ConfigError, match="read, write, list and delete"):
        check_server_identity(wrong)


def test_artifacts_through_the_server_are_objects_in_the_bucket_byte_for_byte(s3_stack, client, tmp_path):
    experiment_id, run_id = new_run(client)
    bodies = {"small.bin": os.urandom(1024), "large.bin": os.urandom(LARGE)}
    for name, body in bodies.items():
        log_file(client, run_id, tmp_path / "up", name, body, "data")

    for name, body in bodies.items():
        key = artifact_key(experiment_id, run_id, f"data/{name}")
        assert s3_stack.s3.get_object(Bucket=s3_stack.bucket, Key=key)["Body"].read() == body, name
        downloaded = client.download_artifacts(run_id, f"data/{name}", str(tmp_path / "down" / name))
        assert Path(downloaded).read_bytes() == body, name
    large = s3_stack.s3.head_object(Bucket=s3_stack.bucket, Key=artifact_key(experiment_id, run_id, "data/large.bin"))
    assert large["ETag"].strip('"').endswith("-2"), f"the server stored {large['ETag']}: not a two-part upload"
    assert {item.path: item.file_size for item in client.list_artifacts(run_id, "data")} == {
        f"data/{name}": len(body) for name, body in bodies.items()
    }


def test_gc_deletes_a_deleted_runs_objects_and_keeps_a_live_runs(s3_stack, client, tmp_path):
    experiment_id, deleted = new_run(client)
    _, live = new_run(client, experiment_id)
    bodies = {run_id: os.urandom(4096) for run_id in (deleted, live)}
    for run_id, body in bodies.items():
        log_file(client, run_id, tmp_path, "weights.bin", body, "model")
    client.delete_run(deleted)

    report = collect_garbage(s3_stack.settings)

    assert deleted in report.runs and live not in report.runs
    assert bucket_keys(s3_stack, f"{experiment_id}/{deleted}/") == []
    kept = artifact_key(experiment_id, live, "model/weights.bin")
    assert bucket_keys(s3_stack, f"{experiment_id}/{live}/") == [kept]
    assert s3_stack.s3.get_object(Bucket=s3_stack.bucket, Key=kept)["Body"].read() == bodies[live]
    with s3_stack.pg_connect() as connection:
        rows = connection.execute("SELECT run_uuid FROM runs WHERE experiment_id = %s", (int(experiment_id),))
        assert [row[0] for row in rows.fetchall()] == [live]


def test_backup_and_restore_bring_back_an_object_and_a_metric_row(s3_stack, client, tmp_path):
    experiment_id, run_id = new_run(client)
    client.log_metric(run_id, "loss", 0.125, step=3)
    body = os.urandom(64 * 1024)
    log_file(client, run_id, tmp_path / "up", "weights.bin", body, "model")
    key = artifact_key(experiment_id, run_id, "model/weights.bin")

    service = MlflowService(s3_stack.settings, s3_stack.runtime, Console(file=io.StringIO()))
    archive = service.backup(tmp_path / "backups").path

    # what is lost after the backup: the object in the bucket, the metric's row in PostgreSQL
    s3_stack.s3.delete_object(Bucket=s3_stack.bucket, Key=key)
    assert error_code(lambda: s3_stack.s3.head_object(Bucket=s3_stack.bucket, Key=key)) in ("404", "NoSuchKey")
    with s3_stack.pg_connect() as connection:
        connection.execute("DELETE FROM metrics WHERE run_uuid = %s", (run_id,))

    service.restore(archive, force=True)
    s3_stack.settings = service.settings

    assert s3_stack.s3.get_object(Bucket=s3_stack.bucket, Key=key)["Body"].read() == body
    with s3_stack.pg_connect() as connection:
        metrics = connection.execute("SELECT key, value, step FROM metrics WHERE run_uuid = %s", (run_id,)).fetchall()
    assert metrics == [("loss", 0.125, 3)]
    # and through the (restarted) server
    assert client.get_run(run_id).data.metrics == {"loss": 0.125}
    downloaded = client.download_artifacts(run_id, "model/weights.bin", str(tmp_path / "down"))
    assert Path(downloaded).read_bytes() == body

"""The MLflow stack end to end: effects checked where they land (PostgreSQL rows, objects in SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError
from mlflow import MlflowClient
from mlflow.entities import Metric
from pydantic import SecretStr

from mlstack.bootstrap import MLFLOW_STACK_STEPS, Outcome, run_steps
from mlstack.bootstrap.storage import s3_client
from mlstack.envfile import update_env
from mlstack.errors import ConfigError
from mlstack.secrets import generate_secret
from mlstack.settings import Settings
from tests.conftest import client_environment
from tests.stack import DockerStack

pytestmark = pytest.mark.integration


@pytest.fixture
def client(mlflow_stack, monkeypatch) -> MlflowClient:
    """A plain mlflow client, its environment (the URI and the client login) exported from .env as a
    user does for a plain script; every client the test makes shares that environment."""
    for name, value in client_environment(mlflow_stack.settings).items():
        monkeypatch.setenv(name, value)
    return MlflowClient(tracking_uri=mlflow_stack.tracking_uri)


def new_run(client: MlflowClient) -> tuple[str, str]:
    experiment_id = client.create_experiment(f"it-{uuid.uuid4().hex[:10]}")
    return experiment_id, client.create_run(experiment_id).info.run_id


def test_logged_metrics_are_rows_in_postgres(mlflow_stack, client):
    _, run_id = new_run(client)
    for step in range(3):
        client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)
    client.log_param(run_id, "alpha", "0.5")

    with mlflow_stack.pg_connect() as conn:
        metrics = conn.execute(
            "SELECT step, value FROM metrics WHERE run_uuid = %s AND key = 'loss' ORDER BY step", (run_id,)
        ).fetchall()
        param = conn.execute("SELECT value FROM params WHERE run_uuid = %s AND key = 'alpha'", (run_id,)).fetchone()
    assert metrics == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    assert param == ("0.5",)


def test_logged_artifact_is_an_object_in_the_bucket(mlflow_stack, client, tmp_path):
    experiment_id, run_id = new_run(client)
    artifact = tmp_path / "report.txt"
    artifact.write_text("validation report")
    client.log_artifact(run_id, str(artifact), artifact_path="reports")

    key = f"{experiment_id}/{run_id}/artifacts/reports/report.txt"
    body = mlflow_stack.s3.get_object(Bucket=mlflow_stack.bucket, Key=key)["Body"].read()
    assert body == b"validation report"


def test_server_account_reaches_only_the_artifact_bucket(mlflow_stack):
    other = f"other-{uuid.uuid4().hex[:8]}"
    mlflow_stack.s3.create_bucket(Bucket=other)
    mlflow_stack.s3.put_object(Bucket=other, Key="secret.txt", Body=b"not for mlflow")
    server = mlflow_stack.server_s3

    for denied in (
        lambda: server.get_object(Bucket=other, Key="secret.txt"),
        lambda: server.put_object(Bucket=other, Key="intrusion.txt", Body=b"x"),
        lambda: server.list_objects_v2(Bucket=other),
        lambda: server.create_bucket(Bucket=f"new-{uuid.uuid4().hex[:8]}"),
    ):
        with pytest.raises(ClientError) as error:
            denied()
        assert error.value.response["Error"]["Code"] == "AccessDenied"

    server.put_object(Bucket=mlflow_stack.bucket, Key="probe/allowed.txt", Body=b"ok")
    assert server.get_object(Bucket=mlflow_stack.bucket, Key="probe/allowed.txt")["Body"].read() == b"ok"


def test_server_environment_holds_no_admin_credentials(mlflow_stack):
    admin_secret = mlflow_stack.settings.s3_admin_secret_key.get_secret_value()
    environments = mlflow_stack.server_environments()
    assert environments, "no MLflow server process found"
    for environment in environments:
        assert not any(name.startswith("S3_ADMIN") for name in environment)
        assert admin_secret not in environment.values()
        assert environment["AWS_ACCESS_KEY_ID"] == mlflow_stack.settings.mlflow_s3_access_key


def test_bootstrap_twice_changes_nothing_the_second_time(mlflow_stack):
    settings = mlflow_stack.settings
    run_steps(MLFLOW_STACK_STEPS, settings, lambda result: None)
    env_before = settings.env_file.read_text()

    second = run_steps(MLFLOW_STACK_STEPS, settings, lambda result: None)

    assert [result.outcome for result in second] == [Outcome.PRESENT] * len(MLFLOW_STACK_STEPS)
    assert settings.env_file.read_text() == env_before
    assert oct(settings.env_file.stat().st_mode & 0o777) == oct(0o600)


def test_bootstrap_names_a_server_key_the_store_refuses(mlflow_stack):
    from mlstack.bootstrap.storage import check_server_identity

    wrong = mlflow_stack.settings.model_copy(update={"mlflow_s3_secret_key": SecretStr("not-the-key-0123456789")})
    with pytest.raises(
        ConfigError, match=f"S3 key {wrong.mlflow_s3_access_key} cannot list bucket {wrong.mlflow_artifact_bucket}"
    ):
        check_server_identity(wrong)


def test_a_server_key_rotated_in_env_is_the_only_one_after_a_restart(mlflow_stack, client, tmp_path):
    settings = mlflow_stack.settings
    old = settings.mlflow_s3_secret_key.get_secret_value()
    update_env(settings.env_file, {"MLFLOW_S3_SECRET_KEY": generate_secret()})
    mlflow_stack.settings = mlflow_stack.runtime.settings = Settings.load(settings.project_dir)
    mlflow_stack.restart_stack()

    with pytest.raises(ClientError):
        s3_client(mlflow_stack.settings, settings.mlflow_s3_access_key, old).list_objects_v2(Bucket=mlflow_stack.bucket)
    experiment_id, run_id = new_run(client)
    (tmp_path / "after.txt").write_text("after rotation")
    client.log_artifact(run_id, str(tmp_path / "after.txt"))
    key = f"{experiment_id}/{run_id}/artifacts/after.txt"
    assert mlflow_stack.server_s3.get_object(Bucket=mlflow_stack.bucket, Key=key)["Body"].read() == b"after rotation"


def test_unknown_host_header_is_refused_and_configured_hosts_work(mlflow_stack):
    url = f"{mlflow_stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    port = mlflow_stack.settings.mlflow_port

    login = mlflow_stack.client_auth
    assert requests.get(url, headers={"Host": "evil.example.com"}, auth=login, timeout=10).status_code == 403
    for host in ("mlflow:5000", f"127.0.0.1:{port}", f"localhost:{port}"):
        assert requests.get(url, headers={"Host": host}, auth=login, timeout=10).status_code == 200, host


def test_requests_from_inside_the_compose_network_pass_the_host_check(mlflow_stack):
    if not isinstance(mlflow_stack, DockerStack):
        pytest.skip("the compose network exists only under the docker runtime; the Host-header test covers native")
    url = "http://mlflow:5000/api/2.0/mlflow/experiments/search?max_results=1"

    assert mlflow_stack.status_inside_network(url) == 200
    assert mlflow_stack.status_inside_network(url, host="evil.example.com") == 403


def test_server_runs_the_workers_threads_and_timeout_set_in_env(mlflow_stack):
    settings = mlflow_stack.settings
    gunicorn = [argv for argv in mlflow_stack.server_commands() if "gunicorn" in " ".join(argv[:3])]

    assert len(gunicorn) == settings.mlflow_workers + 1, gunicorn  # the master and its workers
    for argv in gunicorn:
        options = " ".join(argv)
        assert f"-w {settings.mlflow_workers}" in options
        assert f"--worker-class gthread --threads {settings.mlflow_threads}" in options
        assert f"--timeout {settings.mlflow_worker_timeout}" in options


def test_server_answers_from_the_fast_store(mlflow_stack, client):
    """.env's MLSTACK_FAST_STORE=true reaches the server, which builds the plugin's store, and its
    gunicorn hooks install the request-level log-batch path in each worker (both log so)."""
    _, run_id = new_run(client)
    client.log_metric(run_id, "loss", 0.5)

    assert client.get_run(run_id).data.metrics == {"loss": 0.5}
    environments = mlflow_stack.server_environments()
    assert environments, "no MLflow server process found"
    assert all(env.get("MLSTACK_FAST_STORE") == "true" for env in environments)
    assert "search-runs use mlstack's PostgreSQL fast paths" in mlflow_stack.server_log()
    assert (
        "log-batch requests take mlstack's request-level path; search-runs answers use protojson"
        in mlflow_stack.server_log()
    )


def test_large_artifact_round_trips_through_the_proxy(mlflow_stack, client, tmp_path):
    """200 MB up and down through the server: no worker timeout, not a byte changed."""
    experiment_id, run_id = new_run(client)
    big = tmp_path / "weights.bin"
    digest = hashlib.sha256()
    with big.open("wb") as handle:
        for _ in range(200):
            chunk = os.urandom(1024 * 1024)
            digest.update(chunk)
            handle.write(chunk)
    client.log_artifact(run_id, str(big))

    head = mlflow_stack.s3.head_object(
        Bucket=mlflow_stack.bucket, Key=f"{experiment_id}/{run_id}/artifacts/weights.bin"
    )
    assert head["ContentLength"] == 200 * 1024 * 1024
    downloaded = Path(client.download_artifacts(run_id, "weights.bin", str(tmp_path / "down")))
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == digest.hexdigest()


def test_uploads_held_open_on_every_worker_do_not_block_other_requests(mlflow_stack, client):
    """As many slow uploads as there are worker processes: a slow client holds a thread, not a worker."""
    experiment_id, run_id = new_run(client)
    uploads = mlflow_stack.settings.mlflow_workers
    release = threading.Event()
    started = threading.Semaphore(0)

    def held_body():
        yield os.urandom(1024 * 1024)
        started.release()  # the first megabyte is on the wire: the upload is connected
        release.wait(timeout=300)
        yield b"last bytes"

    def upload(index: int) -> requests.Response:
        artifacts = f"{mlflow_stack.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}"
        return requests.put(
            f"{artifacts}/artifacts/held{index}.bin", data=held_body(), auth=mlflow_stack.client_auth, timeout=300
        )

    with ThreadPoolExecutor(uploads) as pool:
        pending = [pool.submit(upload, index) for index in range(uploads)]
        try:
            for _ in range(uploads):
                assert started.acquire(timeout=60), "an upload never started"
            answer = requests.get(
                f"{mlflow_stack.tracking_uri}/api/2.0/mlflow/runs/get",
                params={"run_id": run_id},
                auth=mlflow_stack.client_auth,
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["run"]["info"]["run_id"] == run_id
            assert not any(upload.done() for upload in pending), "an upload ended before it was released"
        finally:
            release.set()
        for upload_result in pending:
            upload_result.result().raise_for_status()

    for index in range(uploads):
        key = f"{experiment_id}/{run_id}/artifacts/held{index}.bin"
        assert mlflow_stack.s3.head_object(Bucket=mlflow_stack.bucket, Key=key)["ContentLength"] == 1024 * 1024 + 10


def test_concurrent_clients_writing_and_uploading_lose_nothing(mlflow_stack, client, tmp_path):
    """More clients at once than workers x threads: every point is a row, every artifact an object."""
    experiment_id, _ = new_run(client)
    clients, rounds = mlflow_stack.settings.mlflow_workers * mlflow_stack.settings.mlflow_threads + 4, 4

    def one_client(index: int) -> str:
        own = MlflowClient(tracking_uri=mlflow_stack.tracking_uri)
        run_id = own.create_run(experiment_id).info.run_id
        for round_ in range(rounds):
            own.log_batch(run_id, metrics=[Metric("m", float(i), 0, round_ * 100 + i) for i in range(100)])
            own.set_tag(run_id, "round", str(round_))
            upload = tmp_path / f"{index}-{round_}.bin"
            upload.write_bytes(os.urandom(256 * 1024))
            own.log_artifact(run_id, str(upload))
        return run_id

    with ThreadPoolExecutor(clients) as pool:
        run_ids = list(pool.map(one_client, range(clients)))

    with mlflow_stack.pg_connect() as connection:
        rows = connection.execute(
            "SELECT count(*) FROM metrics WHERE run_uuid = ANY(%s) AND key = 'm'", (run_ids,)
        ).fetchone()[0]
    assert rows == clients * rounds * 100
    listed = mlflow_stack.s3.list_objects_v2(Bucket=mlflow_stack.bucket, Prefix=f"{experiment_id}/")
    assert listed["KeyCount"] == clients * rounds


def test_stack_restart_keeps_runs_and_artifacts(mlflow_stack, client, tmp_path):
    _, run_id = new_run(client)
    client.log_metric(run_id, "accuracy", 0.93)
    (tmp_path / "model.txt").write_text("weights")
    client.log_artifact(run_id, str(tmp_path / "model.txt"))

    mlflow_stack.restart_stack()

    after = MlflowClient(tracking_uri=mlflow_stack.tracking_uri)
    assert after.get_run(run_id).data.metrics == {"accuracy": 0.93}
    restored = Path(after.download_artifacts(run_id, "model.txt", str(tmp_path / "restored")))
    assert restored.read_text() == "weights"


def test_artifact_store_killed_during_uploads_loses_nothing_acknowledged(mlflow_stack, client, tmp_path):
    """SeaweedFS SIGKILLed while a client uploads: every upload the server acknowledged is there, byte
    for byte, after `up` restarts the store; the others failed loudly and upload once it is back."""
    experiment_id, run_id = new_run(client)
    acknowledged, refused = {}, []
    some_acknowledged, killed = threading.Event(), threading.Event()

    def upload_until_refused():
        for index in range(200):
            path = tmp_path / f"part-{index:03d}.bin"
            path.write_bytes(os.urandom(256 * 1024))
            try:
                client.log_artifact(run_id, str(path), artifact_path="parts")
            except Exception as error:  # the client's error for the store being gone
                refused.append((path, error))
                if killed.is_set():
                    return
            else:
                acknowledged[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
                if len(acknowledged) == 5:
                    some_acknowledged.set()

    uploader = threading.Thread(target=upload_until_refused)
    uploader.start()
    assert some_acknowledged.wait(120)
    mlflow_stack.runtime.kill("seaweedfs")
    killed.set()
    uploader.join(300)

    assert refused, "an upload while the store is gone fails instead of vanishing"
    mlflow_stack.runtime.up()
    for path, _ in refused:
        client.log_artifact(run_id, str(path), artifact_path="parts")
        acknowledged[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    for name, digest in acknowledged.items():
        key = f"{experiment_id}/{run_id}/artifacts/parts/{name}"
        body = mlflow_stack.s3.get_object(Bucket=mlflow_stack.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == digest, name
        downloaded = Path(client.download_artifacts(run_id, f"parts/{name}", str(tmp_path / "down")))
        assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == digest, name


def test_seaweedfs_inner_http_refuses_anything_unsigned(mlflow_stack, client, tmp_path):
    """Past S3, the filer's and the volume server's HTTP sides answer 401 to a local user without the
    JWT keys of this start: no object is read or written there."""
    if isinstance(mlflow_stack, DockerStack):
        pytest.skip("the compose stack keeps SeaweedFS's inner ports on its own network")
    settings = mlflow_stack.settings
    experiment_id, run_id = new_run(client)
    (tmp_path / "inner.txt").write_text("only through S3")
    client.log_artifact(run_id, str(tmp_path / "inner.txt"))
    filer = f"http://127.0.0.1:{settings.seaweedfs_filer_port}/buckets/{settings.mlflow_artifact_bucket}"
    key = f"{experiment_id}/{run_id}/artifacts/inner.txt"

    assert requests.get(f"{filer}/{key}", timeout=10).status_code == 401
    assert requests.post(f"{filer}/intrusion.txt", files={"file": b"x"}, timeout=10).status_code == 401
    assignment = requests.get(f"http://127.0.0.1:{settings.seaweedfs_master_port}/dir/assign", timeout=10).json()
    volume = f"http://127.0.0.1:{settings.seaweedfs_volume_port}/{assignment['fid']}"
    assert "auth" not in assignment, "the master hands out no write token to anyone who asks"
    assert requests.post(volume, files={"file": b"x"}, timeout=10).status_code == 401
    with pytest.raises(ClientError):
        mlflow_stack.s3.head_object(Bucket=settings.mlflow_artifact_bucket, Key="intrusion.txt")


def test_seaweedfs_grpc_sides_refuse_a_client_without_the_certificate(mlflow_stack):
    """Every gRPC port (master, volume, filer, S3) asks for the client certificate of this start:
    without it the handshake ends; with it (what SeaweedFS's own parts hold) the port speaks HTTP/2."""
    if isinstance(mlflow_stack, DockerStack):
        pytest.skip("the compose stack keeps SeaweedFS's inner ports on its own network")
    settings = mlflow_stack.settings
    config = settings.state_path / "native" / "seaweedfs-config"
    ports = [settings.seaweedfs_master_port, settings.seaweedfs_volume_port, settings.seaweedfs_filer_port]
    for port in [*ports, settings.s3_port]:
        grpc = port + 10000
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
            http2_preface(grpc, config, client_certificate=False)
        assert len(http2_preface(grpc, config, client_certificate=True)) == 9, "a SETTINGS frame"


def http2_preface(port: int, config: Path, client_certificate: bool) -> bytes:
    """Open TLS to `port` trusting SeaweedFS's gRPC authority, send HTTP/2's preface, read a frame header."""
    context = ssl.create_default_context(cafile=str(config / "grpc-ca.pem"))
    context.set_alpn_protocols(["h2"])
    if client_certificate:
        context.load_cert_chain(config / "grpc.pem", config / "grpc-key.pem")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        return tls.recv(9)

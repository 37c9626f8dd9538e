"""A stack made before SeaweedFS moves over on `mlstack up`: the MinIO stack of the last release
(LEGACY_COMMIT's own code, run from a clone checked out there) logs runs with artifacts; the clone
is updated to this release and `mlstack up` copies every object into SeaweedFS, verified, and keeps
MinIO's data. Every artifact then downloads through the server, byte for byte."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from rich.console import Console

from mlstack.envfile import read_env, update_env
from mlstack.maintenance import minio_move
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.runtime.native.tools import find_minio
from mlstack.settings import Settings
from tests.conftest import REPO, REQUIRED_RUNTIME, scratch_stack_env

pytestmark = pytest.mark.integration
#: The last release whose stack kept artifacts in MinIO.
LEGACY_COMMIT = "f980a9c"
STACK = ("--runtime", "native", "--stack", "mlflow")


def mlstack(clone: Path, *args: str, legacy: bool = False) -> subprocess.CompletedProcess:
    """`mlstack ARGS` from inside the clone; `legacy`: the clone's own (old) code, not this release's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLSTACK_", "MLFLOW_"))}
    env |= {"COLUMNS": "250", **({"PYTHONPATH": str(clone / "src")} if legacy else {})}
    command = [sys.executable, "-m", "mlstack.cli", *args]
    return subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=900)


def succeeded(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture
def legacy_clone() -> Iterator[Path]:
    """A clone at LEGACY_COMMIT in a private folder, its .env on free ports."""
    if find_minio(Settings.load(REPO)) is None:
        message = "MinIO's server is needed to make a stack of the last release: `mlstack install-tools --minio`"
        pytest.fail(message) if REQUIRED_RUNTIME == "native" else pytest.skip(message)
    parent = Path(tempfile.mkdtemp(prefix="mlstack-move-"))
    clone = parent / "mlstack"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", LEGACY_COMMIT], check=True)
    succeeded(mlstack(clone, "init", legacy=True))
    update_env(clone / ".env", scratch_stack_env())
    try:
        yield clone
    finally:
        mlstack(clone, "down", *STACK)
        mlstack(clone, "down", *STACK, legacy=True)
        NativeRuntime(Settings.load(clone), Console(stderr=True)).down()
        postgres = NativeRuntime(Settings.load(clone), Console(stderr=True)).postgres
        if postgres.os_user is not None:
            shutil.rmtree(postgres.home, ignore_errors=True)
        shutil.rmtree(parent, ignore_errors=True)


def log_in(clone: Path, monkeypatch) -> MlflowClient:
    """A plain mlflow client with the client login `mlstack up` wrote to .env, exported as a script does."""
    login = read_env(clone / ".env")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", login["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", login["MLFLOW_TRACKING_PASSWORD"])
    return MlflowClient(login["MLFLOW_TRACKING_URI"])


def log_runs(client: MlflowClient) -> dict[tuple[str, str], bytes]:
    """Runs with artifacts (small, nested, one past a multipart part), as the team's scripts log them."""
    files = {
        "notes.txt": b"kept across the move",
        "plots/curve.csv": b"step,loss\n1,0.5\n",
        "model.bin": os.urandom(12 << 20),
    }
    logged, workdir = {}, Path(tempfile.mkdtemp())
    for name in ("baseline", "tuned"):
        run_id = client.create_run(client.create_experiment(f"move-{name}")).info.run_id
        client.log_metric(run_id, "loss", 0.25)
        for path, body in files.items():
            local = workdir / run_id / path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(body)
            client.log_artifact(run_id, str(local), artifact_path=str(Path(path).parent) if "/" in path else None)
            logged[(run_id, path)] = body
    shutil.rmtree(workdir)
    return logged


def test_up_moves_every_artifact_of_a_minio_stack_and_the_server_serves_each(legacy_clone, monkeypatch):
    clone = legacy_clone
    assert "minio" in succeeded(mlstack(clone, "up", *STACK, legacy=True))
    logged = log_runs(log_in(clone, monkeypatch))
    succeeded(mlstack(clone, "down", *STACK, legacy=True))
    minio_data = clone / ".mlstack" / "native" / "minio"
    assert (minio_data / ".minio.sys").is_dir()

    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "-"], check=True)  # the update
    moved = succeeded(mlstack(clone, "up", *STACK))

    assert "moving this stack's artifacts from MinIO" in moved and f"rm -rf {minio_data}" in moved
    settings = Settings.load(clone)
    record = settings.state_path / minio_move.RECORD
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert (minio_data / ".minio.sys").is_dir(), "MinIO's data is left in place"
    running = NativeRuntime(settings, Console(stderr=True)).status()
    assert [(service.name, service.healthy) for service in running] == [
        ("postgres", True),
        ("seaweedfs", True),
        ("mlflow", True),
    ], "MinIO stopped after the move"

    client = log_in(clone, monkeypatch)
    downloads = Path(tempfile.mkdtemp())
    for (run_id, path), body in logged.items():
        local = client.download_artifacts(run_id, path, str(downloads / run_id))
        assert Path(local).read_bytes() == body, path
    shutil.rmtree(downloads)

    again = succeeded(mlstack(clone, "up", *STACK))
    assert "moving" not in again, "a finished move is not run again"


def test_an_interrupted_move_loses_nothing_and_completes_when_run_again(legacy_clone, monkeypatch):
    clone = legacy_clone
    succeeded(mlstack(clone, "up", *STACK, legacy=True))
    logged = log_runs(log_in(clone, monkeypatch))
    succeeded(mlstack(clone, "down", *STACK, legacy=True))
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", "-"], check=True)
    succeeded(mlstack(clone, "init"))  # the new secrets (S3_ADMIN_SECRET_KEY), as `up` makes them

    copy, calls = minio_move._copy_verified, []

    def interrupted(*args):
        calls.append(args)
        if len(calls) > 3:
            raise ConnectionError("the move was interrupted here")
        return copy(*args)

    settings = Settings.load(clone)
    runtime = NativeRuntime(settings, Console(stderr=True))
    monkeypatch.setattr(minio_move, "_copy_verified", interrupted)
    with pytest.raises(ConnectionError):
        runtime.up()
    assert not (settings.state_path / minio_move.RECORD).exists()
    monkeypatch.setattr(minio_move, "_copy_verified", copy)

    runtime.up()

    record = read_record(settings)
    objects = len(logged)
    assert record["copied"] + record["already_there"] == sum(record["buckets"].values()) >= objects
    assert record["already_there"] == 3
    bucket = settings.mlflow_artifact_bucket
    keys = {item["Key"] for item in minio_move.admin_s3(settings).list_objects_v2(Bucket=bucket)["Contents"]}
    assert all(any(key.endswith(f"{run_id}/artifacts/{path}") for key in keys) for run_id, path in logged)


def read_record(settings: Settings) -> dict:
    return json.loads((settings.state_path / minio_move.RECORD).read_text())

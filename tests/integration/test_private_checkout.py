"""The README's first run, as a new user does it: a clone under a private folder (0700, like /root or
a mktemp -d folder), the `mlstack` command run from inside it. As root (CI), PostgreSQL runs as the
`postgres` user, which cannot enter that folder."""

from __future__ import annotations

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
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.settings import Settings
from tests.conftest import REPO, scratch_stack_env

pytestmark = pytest.mark.integration
STACK = ("--runtime", "native", "--stack", "mlflow")


def mlstack(clone: Path, *args: str) -> subprocess.CompletedProcess:
    """`mlstack ARGS` from inside the clone, found from the working directory as a user's shell finds it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLSTACK_", "MLFLOW_"))}
    env["COLUMNS"] = "250"
    return subprocess.run(
        [sys.executable, "-m", "mlstack.cli", *args], cwd=clone, env=env, capture_output=True, text=True, timeout=600
    )


def one_clear_line(result: subprocess.CompletedProcess) -> str:
    """The error line of a failed command, asserting it failed without a traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture
def private_clone() -> Iterator[Path]:
    """A git clone of this repository inside a fresh 0700 folder, with a .env on free ports."""
    parent = Path(tempfile.mkdtemp(prefix="mlstack-private-"))
    assert stat.S_IMODE(parent.stat().st_mode) == 0o700
    clone = parent / "mlstack"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    assert mlstack(clone, "init").returncode == 0
    update_env(clone / ".env", scratch_stack_env())
    runtime = NativeRuntime(Settings.load(clone), Console(stderr=True))
    try:
        yield clone
    finally:
        runtime.down()
        if runtime.postgres.os_user is not None:
            shutil.rmtree(runtime.postgres.home, ignore_errors=True)
        shutil.rmtree(parent, ignore_errors=True)


def test_first_run_in_a_private_folder_up_status_fault_repair_down_and_restart(private_clone, monkeypatch):
    settings = Settings.load(private_clone)
    runtime = NativeRuntime(settings, Console(stderr=True))

    up = mlstack(private_clone, "up", *STACK)
    assert up.returncode == 0, up.stdout + up.stderr
    status = mlstack(private_clone, "status", *STACK)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"data: {runtime.postgres.data}" in status.stdout

    # nothing of the stack is open to other users
    assert stat.S_IMODE(settings.state_path.stat().st_mode) == 0o700
    assert stat.S_IMODE(settings.env_file.stat().st_mode) == 0o600
    for log in (settings.state_path / "logs").iterdir():
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, log
    assert stat.S_IMODE(runtime.postgres.home.stat().st_mode) == 0o700
    assert stat.S_IMODE(runtime.postgres.data.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert runtime.postgres.data.owner() == "postgres"
        assert not runtime.postgres.data.is_relative_to(private_clone)

    # `up` wrote the client account's login to .env; a script exports it (or uses setup_mlflow)
    written = read_env(private_clone / ".env")
    assert written["MLFLOW_TRACKING_URI"] == settings.mlflow_url and written["MLFLOW_TRACKING_USERNAME"]
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", written["MLFLOW_TRACKING_USERNAME"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", written["MLFLOW_TRACKING_PASSWORD"])
    client = MlflowClient(settings.mlflow_url)
    experiment_id = client.create_experiment("kept-across-restarts")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "loss", 0.25, step=7)

    runtime.kill("seaweedfs")
    down_status = mlstack(private_clone, "status", *STACK)
    assert down_status.returncode != 0
    assert "seaweedfs" in down_status.stdout and "not running" in down_status.stdout
    failed = one_clear_line(mlstack(private_clone, "bootstrap", "--stack", "mlflow"))
    assert "The artifact store (S3) does not answer" in failed and "make up" in failed

    repaired = mlstack(private_clone, "up", *STACK)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert mlstack(private_clone, "status", *STACK).returncode == 0

    assert mlstack(private_clone, "down", *STACK).returncode == 0
    stopped = mlstack(private_clone, "status", *STACK)
    assert stopped.returncode != 0, stopped.stdout

    again = mlstack(private_clone, "up", *STACK)
    assert again.returncode == 0, again.stdout + again.stderr
    assert client.get_experiment_by_name("kept-across-restarts").experiment_id == experiment_id
    assert [(m.value, m.step) for m in client.get_metric_history(run_id, "loss")] == [(0.25, 7)]

"""The MLflow stack under Docker as a user runs it (docker tier; it needs an engine, and none runs
where this project's CI does): a clone's `mlstack up --runtime docker` builds the images and waits
for health, a run with an artifact is logged, two backups in a row succeed, the data is wiped
(`down --volumes`), a fresh `up` and `mlstack restore` bring the run and its artifact back."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlstack.envfile import update_env
from mlstack.runtime.docker import engine_answers
from mlstack.settings import Settings
from tests.conftest import REPO, run_mlstack, run_python, scratch_stack_env

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not engine_answers(), reason="no Docker engine answers; this test runs the compose stack"),
]
STACK = ("--stack", "mlflow", "--runtime", "docker")


@pytest.fixture(scope="module")
def clone() -> Iterator[Path]:
    """A clone of this repository with a .env on free ports, run as a compose project of its own."""
    clone = Path(tempfile.mkdtemp(prefix="mlstack-docker-")) / "mlstack"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    assert run_mlstack(clone, "init").returncode == 0
    update_env(clone / ".env", scratch_stack_env())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPOSE_PROJECT_NAME", f"mlstack-docker-test-{clone.parent.name.lower()}")
        try:
            yield clone
        finally:
            compose(clone, "down", "--volumes", "--remove-orphans")


def compose(clone: Path, *args: str) -> None:
    command = ["docker", "compose", "-f", "infra/mlflow/compose.yaml", "--env-file", ".env", *args]
    subprocess.run(command, cwd=clone, check=True, capture_output=True)


def up(clone: Path) -> Settings:
    started = run_mlstack(clone, "up", *STACK, timeout=1800)
    assert started.returncode == 0, started.stdout + started.stderr
    return Settings.load(clone)


LOG_A_RUN = """
    import mlflow
    mlflow.set_tracking_uri("{uri}")
    with mlflow.start_run(run_name="docker-round-trip") as run:
        mlflow.log_param("p", "1")
        mlflow.log_metric("m", 0.5)
        mlflow.log_text("kept", "notes/kept.txt")
    print(run.info.run_id)
"""

READ_THE_RUN = """
    import mlflow
    mlflow.set_tracking_uri("{uri}")
    run = mlflow.get_run("{run_id}")
    notes = mlflow.artifacts.load_text(run.info.artifact_uri + "/notes/kept.txt")
    print(run.data.params["p"], run.data.metrics["m"], notes)
"""


def as_client(settings: Settings, code: str, home: Path, **values: str) -> str:
    login = {
        "MLFLOW_TRACKING_USERNAME": settings.mlflow_tracking_username,
        "MLFLOW_TRACKING_PASSWORD": settings.mlflow_tracking_password.get_secret_value(),
    }
    code = "import os\nos.environ.update(" + repr(login) + ")\n" + code.format(uri=settings.mlflow_url, **values)
    result = run_python(code, home)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_build_up_backup_twice_wipe_restore(clone, tmp_path):
    settings = up(clone)
    run_id = as_client(settings, LOG_A_RUN, tmp_path / "home")
    for attempt in ("first", "second"):
        backed_up = run_mlstack(clone, "backup", "--stack", "mlflow", "--output", str(tmp_path / attempt), *STACK[2:])
        assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    (archive,) = (tmp_path / "second").glob("mlstack-mlflow-*.tar")
    compose(clone, "down", "--volumes")
    settings = up(clone)
    restored = run_mlstack(clone, "restore", str(archive), *STACK[2:])
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert as_client(settings, READ_THE_RUN, tmp_path / "home", run_id=run_id) == "1 0.5 kept"

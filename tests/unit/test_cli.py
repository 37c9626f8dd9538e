"""The `mlstack` command's set-up paths that need no running services."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from mlstack.envfile import read_env, update_env


def mlstack(project_dir, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLSTACK_PROJECT_DIR": str(project_dir), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "mlstack.cli", *args], env=env, capture_output=True, text=True)


def test_init_creates_env_0600_and_never_prints_a_whole_secret(tmp_path):
    (tmp_path / ".env.example").write_text("POSTGRES_PASSWORD=__generate__\nMINIO_ROOT_PASSWORD=__generate__\n")

    result = mlstack(tmp_path, "init")

    assert result.returncode == 0, result.stderr
    env = tmp_path / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    values = read_env(env)
    assert len(values["POSTGRES_PASSWORD"]) == 32
    assert values["POSTGRES_PASSWORD"] not in result.stdout
    assert "POSTGRES_PASSWORD: generated" in result.stdout


def test_second_init_keeps_secrets(project):
    before = project.env_file.read_text()
    result = mlstack(project.project_dir, "init")
    assert result.returncode == 0
    assert "nothing changed" in result.stdout
    assert project.env_file.read_text() == before


def test_up_refuses_a_well_known_default_secret_and_starts_nothing(project):
    update_env(project.env_file, {"MINIO_ROOT_PASSWORD": "minioadmin"})

    result = mlstack(project.project_dir, "up", "--runtime", "native")

    assert result.returncode == 1
    assert "MINIO_ROOT_PASSWORD is a well-known default" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert read_env(project.env_file)["MINIO_ROOT_PASSWORD"] == "minioadmin"
    assert not (project.state_path / "run").exists()


def test_native_runtime_refuses_placeholder_secrets(project):
    import pytest
    from rich.console import Console

    from mlstack.errors import PlaceholderSecretError
    from mlstack.runtime.native.runtime import NativeRuntime
    from mlstack.settings import Settings

    update_env(project.env_file, {"MLFLOW_S3_SECRET_KEY": "__generate__"})
    with pytest.raises(PlaceholderSecretError, match="MLFLOW_S3_SECRET_KEY is still a placeholder"):
        NativeRuntime(Settings.load(project.project_dir), Console()).up()


def test_check_secrets_exit_code_names_the_variable(project):
    update_env(project.env_file, {"POSTGRES_PASSWORD": "postgres"})
    result = mlstack(project.project_dir, "check-secrets", "--stack", "mlflow")
    assert result.returncode == 1
    assert "POSTGRES_PASSWORD" in result.stdout

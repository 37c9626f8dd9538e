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
    update_env(project.env_file, {"S3_ADMIN_SECRET_KEY": "minioadmin"})

    result = mlstack(project.project_dir, "up", "--runtime", "native")

    assert result.returncode == 1
    assert "S3_ADMIN_SECRET_KEY is a well-known default" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert read_env(project.env_file)["S3_ADMIN_SECRET_KEY"] == "minioadmin"
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


def mlstack_in(folder, *args: str) -> subprocess.CompletedProcess:
    """`mlstack ARGS` run from `folder`, the project found from the working directory only."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLSTACK_")}
    return subprocess.run(
        [sys.executable, "-m", "mlstack.cli", *args],
        cwd=folder,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    assert output.startswith("error:") and output.count("error:") == 1, output
    return output


def test_up_outside_a_project_is_one_clear_line_and_creates_nothing(tmp_path):
    output = assert_one_clear_line(mlstack_in(tmp_path, "up", "--runtime", "native"))
    assert f"no mlstack project at {tmp_path}" in " ".join(output.split())
    assert "MLSTACK_PROJECT_DIR" in output and "mlstack init" in output
    assert list(tmp_path.iterdir()) == []


def test_init_outside_a_checkout_writes_env_from_the_packaged_template(tmp_path):
    result = mlstack_in(tmp_path, "init")
    assert result.returncode == 0, result.stdout + result.stderr
    values = read_env(tmp_path / ".env")
    assert values["MLFLOW_ARTIFACT_BUCKET"] == "mlflow-artifacts"
    assert len(values["CLEARML_TOKEN_SECRET"]) == 32
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    # the folder is now a project: status runs there and says nothing is up
    status = mlstack_in(tmp_path, "status", "--runtime", "native", "--stack", "mlflow")
    assert status.returncode == 3, status.stdout + status.stderr


def test_bootstrap_with_the_stack_down_is_one_clear_line_naming_the_service(project):
    output = assert_one_clear_line(mlstack(project.project_dir, "bootstrap", "--stack", "mlflow"))
    assert "PostgreSQL does not answer at 127.0.0.1:" in output and "make up" in output
    assert "MLFLOW_TRACKING_URI" not in read_env(project.env_file)


def test_bootstrap_names_each_service_of_the_stack_that_does_not_answer(project, monkeypatch):
    import pytest

    from mlstack.bootstrap import preflight
    from mlstack.errors import StackNotReadyError

    answering = {"postgres"}
    monkeypatch.setattr(preflight, "postgres_ok", lambda dsn: "postgres" in answering)
    monkeypatch.setattr(preflight, "s3_answers", lambda url: "s3" in answering)
    monkeypatch.setattr(preflight, "http_ok", lambda url: "mlflow" in answering)
    with pytest.raises(StackNotReadyError, match=rf"The artifact store \(S3\) does not answer at {project.s3_url}"):
        preflight.require_mlflow_stack(project)
    answering.add("s3")
    with pytest.raises(StackNotReadyError, match=rf"the MLflow server does not answer at {project.mlflow_url}"):
        preflight.require_mlflow_stack(project)
    answering.add("mlflow")
    preflight.require_mlflow_stack(project)


def test_a_service_that_stops_answering_mid_bootstrap_is_one_clear_error(project):
    import pytest

    from mlstack.bootstrap import STORAGE_STEPS, run_steps
    from mlstack.errors import StackNotReadyError

    with pytest.raises(
        StackNotReadyError, match="bootstrap step 'artifact bucket' failed: a service stopped answering"
    ):
        run_steps(STORAGE_STEPS, project, lambda result: None)


def test_doctor_judges_only_what_the_selected_stack_needs(project, monkeypatch):
    from typer.testing import CliRunner

    from mlstack import cli, runtime

    monkeypatch.setenv("MLSTACK_PROJECT_DIR", str(project.project_dir))
    monkeypatch.setattr(
        "mlstack.doctor.check_max_map_count", lambda: "vm.max_map_count is 65530, Elasticsearch needs more"
    )
    monkeypatch.setattr("mlstack.runtime.native.tools.find_tools", lambda settings: None)
    monkeypatch.setattr(runtime, "engine_answers", lambda: False)
    runner = CliRunner()

    mlflow_only = runner.invoke(cli.app, ["doctor", "--stack", "mlflow", "--runtime", "native"])
    assert mlflow_only.exit_code == 0, mlflow_only.output
    assert "max_map_count" not in mlflow_only.output

    everything = runner.invoke(cli.app, ["doctor", "--stack", "all"])
    assert everything.exit_code == 0, everything.output
    assert "clearml stack is passed over" in everything.output and "max_map_count" not in everything.output

    clearml = runner.invoke(cli.app, ["doctor", "--stack", "clearml"])
    assert clearml.exit_code == 1
    assert "vm.max_map_count is 65530" in clearml.output and "MongoDB and Elasticsearch" in clearml.output


def test_user_commands_with_auth_off_or_the_stack_down_are_one_clear_line(project):
    down = assert_one_clear_line(mlstack(project.project_dir, "user", "add", "alice", "--password-stdin"))
    assert "does not answer" in down and "make up" in down
    update_env(project.env_file, {"MLFLOW_AUTH": "false"})
    off = assert_one_clear_line(mlstack(project.project_dir, "user", "remove", "alice"))
    assert "authentication is off (MLFLOW_AUTH=false in .env)" in off


def test_the_servers_allowed_hosts_gain_each_public_name_with_any_port(project):
    from mlstack_mlflow_store.launch import prepare

    from mlstack.runtime.native.server import mlflow_server_env
    from mlstack.settings import Settings

    update_env(project.env_file, {"MLFLOW_PUBLIC_HOSTS": "mlflow.example.com, 10.0.0.7"})
    _, env, _ = prepare(["mlflow", "server"], mlflow_server_env(Settings.load(project.project_dir)))
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert allowed[-4:] == ["mlflow.example.com", "mlflow.example.com:*", "10.0.0.7", "10.0.0.7:*"]
    assert "127.0.0.1:*" in allowed


def test_restore_of_something_that_is_not_an_archive_is_one_clear_line(project, tmp_path):
    (tmp_path / "notes.tar").write_text("not an archive")
    refused = assert_one_clear_line(mlstack(project.project_dir, "restore", str(tmp_path / "notes.tar")))
    assert "is not a readable backup archive" in refused and "nothing was changed" in refused


def test_user_add_refuses_a_name_that_is_not_a_plain_login_before_reaching_the_server(project):
    for name in ("../admin", "a b", "bob/../admin", ".hidden", "x" * 65, "ali$ce", "é"):
        refused = assert_one_clear_line(mlstack(project.project_dir, "user", "add", name, "--password-stdin"))
        assert "is not a user name mlstack takes" in refused and "does not answer" not in refused, refused


def test_help_loads_none_of_the_heavy_libraries():
    """Each command imports what it needs when it runs: `mlstack --help` (and a typo) stay instant."""
    heavy = ("mlflow", "clearml", "boto3", "botocore", "psycopg", "docker", "sklearn", "pandas", "requests")
    code = (
        "import sys, runpy\n"
        "sys.argv = ['mlstack', '--help']\n"
        "try:\n    runpy.run_module('mlstack.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({heavy!r})))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-300:]


def test_doctor_names_minio_when_an_old_stacks_artifacts_wait_to_move(project, monkeypatch):
    from typer.testing import CliRunner

    from mlstack import cli, runtime

    monkeypatch.setenv("MLSTACK_PROJECT_DIR", str(project.project_dir))
    monkeypatch.setattr("mlstack.runtime.native.tools.find_tools", lambda settings: None)
    monkeypatch.setattr("mlstack.runtime.native.tools.find_minio", lambda settings: None)
    monkeypatch.setattr(runtime, "engine_answers", lambda: False)
    (project.state_path / "native" / "minio" / ".minio.sys").mkdir(parents=True)

    result = CliRunner().invoke(cli.app, ["doctor", "--stack", "mlflow", "--runtime", "native"])

    said = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "still in MinIO's data" in said and "install-tools --minio" in said

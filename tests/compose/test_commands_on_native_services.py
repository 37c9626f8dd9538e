"""The MLflow compose stack's healthcheck and one-shot commands, exactly as compose renders them, run
against native services on free ports: the PostgreSQL healthcheck proves TCP (not only the socket
the image's init server answers on), and the bootstrap one-shots wait for a service that is not
there yet instead of failing `up --wait`.

A container's view is mapped, nothing else changed: the service name `postgres` is 127.0.0.1,
the container's port the scratch port, its default socket folder a scratch one; the storage
one-shot's S3 endpoint (`http://seaweedfs:8333`) is the native SeaweedFS's (MLSTACK_S3_ENDPOINT,
the setting that names the store)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from mlstack.bootstrap.storage import admin_s3
from mlstack.errors import MissingToolError
from mlstack.health import wait_until
from mlstack.runtime.native.postgres import initdb, prepare_home
from mlstack.runtime.native.runtime import NativeRuntime
from mlstack.runtime.native.tools import NativeTools, find_tools
from mlstack.settings import Settings
from tests.compose.conftest import run_compose

pytestmark = pytest.mark.integration

PROJECT_DIR = Path(__file__).resolve().parents[2]
COMPOSE_FILE = PROJECT_DIR / "infra" / "mlflow" / "compose.yaml"


@pytest.fixture
def rendered(compose_cli, project) -> dict:
    """The compose stack as compose renders it from the scratch project's .env."""
    result = run_compose(compose_cli, COMPOSE_FILE, project.env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


@pytest.fixture
def native(project):
    """The scratch project's native runtime with PostgreSQL's data folder initialised, nothing running."""
    try:
        tools = find_tools(project)
    except MissingToolError as missing:
        if os.environ.get("MLSTACK_REQUIRE_RUNTIME") == "native":
            pytest.fail(f"MLSTACK_REQUIRE_RUNTIME=native but the native runtime cannot run: {missing}")
        pytest.skip(f"the native runtime is not installed: {missing}")
    runtime = NativeRuntime(project, Console(stderr=True), start_timeout=60)
    prepare_home(project, runtime.postgres, runtime.postgres.data, print)
    initdb(project, runtime.postgres, tools.postgres_bin)
    socket_folder = runtime.postgres.home / "socket"
    socket_folder.mkdir(mode=0o700)
    if runtime.postgres.os_user:
        shutil.chown(socket_folder, runtime.postgres.os_user, runtime.postgres.os_user)
    try:
        yield runtime, tools, socket_folder
    finally:
        runtime.down()
        if runtime.postgres.os_user:
            shutil.rmtree(runtime.postgres.home, ignore_errors=True)


def start_postgres(runtime: NativeRuntime, tools: NativeTools, socket_folder: Path, tcp: bool) -> None:
    """PostgreSQL on the project's data: on its socket alone (as the image's init server runs), or
    on TCP too (as it runs once initialised); returns once it answers where it listens."""
    s, layout, process = runtime.settings, runtime.postgres, runtime.processes["postgres"]
    listen = s.bind_address if tcp else ""
    command = [str(tools.postgres_bin / "postgres"), "-D", str(layout.data), "-p", str(s.postgres_port)]
    command += ["-c", f"listen_addresses={listen}", "-c", f"unix_socket_directories={socket_folder}"]
    process.start(command, env={"PATH": os.environ["PATH"]}, user=layout.os_user, cwd=layout.home)
    host = s.bind_address if tcp else str(socket_folder)
    ready = [str(tools.postgres_bin / "pg_isready"), "-q", "-h", host, "-p", str(s.postgres_port)]
    wait_until("postgres", lambda: subprocess.run(ready).returncode == 0, 60, runtime.console, process.is_running)


def stop_postgres(runtime: NativeRuntime) -> None:
    assert runtime.processes["postgres"].stop()


def container_env(settings: Settings, tools: NativeTools, socket_folder: Path, environment: dict) -> dict[str, str]:
    """`environment` of a compose service, seen from inside its container: PostgreSQL's port is
    5432 there and libpq's default socket is the image's (PGHOST and PGPORT stand for both)."""
    return {
        **{key: str(value) for key, value in environment.items()},
        "PATH": f"{tools.postgres_bin}:{os.environ['PATH']}",
        "PGHOST": str(socket_folder),
        "PGPORT": str(settings.postgres_port),
    }


def healthcheck(service: dict, env: dict[str, str]) -> int:
    kind, command = service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True).returncode


def test_postgres_is_healthy_only_once_it_answers_over_tcp(rendered, native, project):
    runtime, tools, socket_folder = native
    env = container_env(project, tools, socket_folder, rendered["postgres"]["environment"])
    start_postgres(runtime, tools, socket_folder, tcp=False)
    socket_probe = ["sh", "-c", 'pg_isready -U "$POSTGRES_USER" -d "$POSTGRES_DB"']
    assert subprocess.run(socket_probe, env=env).returncode == 0, "the socket answers: the init server runs"
    assert healthcheck(rendered["postgres"], env) != 0, "healthy while nothing can connect over TCP"
    stop_postgres(runtime)
    start_postgres(runtime, tools, socket_folder, tcp=True)
    assert healthcheck(rendered["postgres"], env) == 0


def run_one_shot(service: dict, environment: dict[str, str], home: Path) -> subprocess.Popen:
    """The one-shot's command under the bootstrap image's entrypoint (`mlstack`), in a folder without
    .env (as in the image), with the service's environment alone."""
    home.mkdir()
    env = {**{key: str(value) for key, value in environment.items()}, "HOME": str(home), "PATH": os.environ["PATH"]}
    env["COLUMNS"] = "200"
    command = [sys.executable, "-m", "mlstack.cli", *service["command"]]
    return subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(process: subprocess.Popen, text: str) -> str:
    """The one-shot's output up to the first line holding `text` (AssertionError if it ends first)."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"the one-shot ended (rc {process.wait()}) without saying {text!r}:\n{''.join(seen)}")


def database_bootstrap_env(service: dict, project: Settings, **changes: str) -> dict:
    """The database-bootstrap service's environment, its `postgres` host the scratch PostgreSQL."""
    return {
        **service["environment"],
        "MLSTACK_POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": project.postgres_port,
        **changes,
    }


def test_database_bootstrap_waits_for_postgres_that_starts_on_its_socket_first(rendered, native, project, tmp_path):
    runtime, tools, socket_folder = native
    service = rendered["database-bootstrap"]
    environment = database_bootstrap_env(service, project)
    start_postgres(runtime, tools, socket_folder, tcp=False)  # the image's first start: init scripts run
    one_shot = run_one_shot(service, environment, tmp_path / "home")
    try:
        read_until(one_shot, "waiting up to")
        stop_postgres(runtime)
        start_postgres(runtime, tools, socket_folder, tcp=True)
        output, _ = one_shot.communicate(timeout=180)
    finally:
        one_shot.kill()
    assert one_shot.returncode == 0, output
    assert "MLflow database role" in output and "MLflow databases" in output
    with psycopg.connect(project.postgres_dsn("postgres"), autocommit=True) as connection:
        owners = connection.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s)",
            ([project.postgres_db, project.mlflow_auth_db],),
        ).fetchall()
    assert dict(owners) == {project.postgres_db: project.mlflow_db_user, project.mlflow_auth_db: project.mlflow_db_user}


def test_database_bootstrap_refused_login_fails_at_once_naming_it(rendered, native, project, tmp_path):
    runtime, tools, socket_folder = native
    service = rendered["database-bootstrap"]
    environment = database_bootstrap_env(service, project, POSTGRES_PASSWORD="not-the-password-of-this-server")
    start_postgres(runtime, tools, socket_folder, tcp=True)
    one_shot = run_one_shot(service, environment, tmp_path / "home")
    output, _ = one_shot.communicate(timeout=60)
    assert one_shot.returncode == 1 and "password authentication failed" in output, output
    assert "waiting up to" not in output


def test_storage_bootstrap_waits_for_the_object_store_to_start(rendered, native, project, tmp_path):
    runtime, tools, _ = native
    service = rendered["storage-bootstrap"]
    assert service["environment"]["MLSTACK_S3_ENDPOINT"] == "http://seaweedfs:8333"
    environment = {**service["environment"], "MLSTACK_S3_ENDPOINT": project.s3_url}
    one_shot = run_one_shot(service, environment, tmp_path / "home")
    try:
        read_until(one_shot, "waiting up to")
        runtime._start_seaweedfs(tools)
        output, _ = one_shot.communicate(timeout=180)
    finally:
        one_shot.kill()
    assert one_shot.returncode == 0, output
    assert "MLflow server identity" in output
    assert (
        admin_s3(project).head_bucket(Bucket=project.mlflow_artifact_bucket)["ResponseMetadata"]["HTTPStatusCode"]
        == 200
    )


def test_migrate_waits_for_the_backend_store_then_migrates_it(rendered, native, project, tmp_path):
    from mlstack.bootstrap import run_steps
    from mlstack.bootstrap.database import DATABASE_STEPS

    runtime, tools, socket_folder = native
    start_postgres(runtime, tools, socket_folder, tcp=True)
    run_steps(DATABASE_STEPS, project, lambda result: None)  # database-bootstrap ran before migrate
    stop_postgres(runtime)
    service = rendered["migrate"]
    address = f"127.0.0.1:{project.postgres_port}"
    environment = {key: str(value).replace("postgres:5432", address) for key, value in service["environment"].items()}
    environment["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the image's python and mlflow
    home = tmp_path / "home"
    home.mkdir()
    command = [part.replace("$$", "$") for part in service["command"]]  # `config` keeps compose's escape
    one_shot = subprocess.Popen(
        command,
        cwd=home,
        env={**environment, "HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        read_until(one_shot, "waiting for the backend store")
        start_postgres(runtime, tools, socket_folder, tcp=True)
        output, _ = one_shot.communicate(timeout=300)
    finally:
        one_shot.kill()
    assert one_shot.returncode == 0, output
    with psycopg.connect(project.postgres_dsn(project.postgres_db), autocommit=True) as connection:
        assert connection.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1


def test_monitoring_config_writes_what_prometheus_and_alertmanager_accept(compose_cli, project, tmp_path):
    """The monitoring-config one-shot as compose renders it, its volume a scratch folder: promtool and
    amtool accept what it writes, readable by Prometheus' and Alertmanager's own users (0644)."""
    config = ("--profile", "monitoring", "config", "--format", "json")
    result = run_compose(compose_cli, COMPOSE_FILE, project.env_file, *config)
    assert result.returncode == 0, result.stderr
    service = json.loads(result.stdout)["services"]["monitoring-config"]
    volume = tmp_path / "monitoring-config"
    mounted = next(mount["target"] for mount in service["volumes"] if mount["source"] == "monitoring-config")
    service = {**service, "command": [str(volume) if part == mounted else part for part in service["command"]]}
    one_shot = run_one_shot(service, service["environment"], tmp_path / "home")
    assert one_shot.wait(timeout=120) == 0, one_shot.stdout.read()
    assert {path.name: path.stat().st_mode & 0o777 for path in volume.iterdir()} == dict.fromkeys(
        ("prometheus.yml", "alertmanager.yml", "alerts.yml"), 0o644
    )
    for command in (["promtool", "check", "config"], ["amtool", "check-config"]):
        if shutil.which(command[0]) is None:
            pytest.fail(f"{command[0]} is not installed (Debian's prometheus and prometheus-alertmanager)")
    for command in (
        ["promtool", "check", "config", str(volume / "prometheus.yml")],
        ["amtool", "check-config", str(volume / "alertmanager.yml")],
    ):
        checked = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = json.loads((volume / "prometheus.yml").read_text())["scrape_configs"]
    assert {job["job_name"]: job["static_configs"][0]["targets"] for job in jobs}["mlflow"] == ["mlflow:9189"]

"""DockerRuntime's status, up and down without an engine: the real compose CLI renders the config,
canned `ps`/`up`/`logs` answers stand in for the engine at the subprocess boundary."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from mlstack.envfile import update_env
from mlstack.errors import ServiceStartError
from mlstack.runtime import docker
from mlstack.runtime.docker import DockerRuntime, judge_services, parse_ps
from mlstack.settings import Settings
from tests.compose.conftest import run_compose

PROJECT_DIR = Path(__file__).resolve().parents[2]
REAL_RUN = subprocess.run
MLFLOW_ONE_SHOT = ("preflight", "database-bootstrap", "storage-bootstrap", "migrate")
MLFLOW_LONG_RUNNING = {"postgres": (5432,), "seaweedfs": (8333,), "mlflow": (5000,)}
CLEARML_SERVICES = ("mongo", "redis", "elasticsearch", "fileserver", "apiserver", "webserver", "async_delete")
AGENT = "agent-services"


def container(
    service: str, state: str = "running", health: str = "healthy", exit_code: int = 0, ports=(), run: bool = False
) -> dict:
    """One `compose ps --all --format json` entry, with the fields compose v5 prints."""
    return {
        "Name": f"mlstack-{service}-{'run-1a2b' if run else '1'}",
        "Service": service,
        "State": state,
        "Health": health if state == "running" else "",
        "ExitCode": exit_code,
        "Status": f"Up 2 minutes ({health})" if state == "running" else f"Exited ({exit_code}) 1 minute ago",
        "Publishers": [
            {"URL": "127.0.0.1", "TargetPort": port, "PublishedPort": port, "Protocol": "tcp"} for port in ports
        ],
        "Labels": f"com.docker.compose.oneoff={run},com.docker.compose.service={service}",
    }


def healthy_mlflow(**replaced: dict) -> list[dict]:
    """The mlflow stack after a good `up`, with some services' entries replaced."""
    entries = {name: container(name, "exited") for name in MLFLOW_ONE_SHOT}
    entries |= {name: container(name, ports=ports) for name, ports in MLFLOW_LONG_RUNNING.items()}
    return list((entries | replaced).values())


def healthy_clearml(*extra: dict) -> list[dict]:
    return [*(container(name) for name in CLEARML_SERVICES), *extra]


def subcommand(args: list[str]) -> str:
    """The compose subcommand in `args`, past the global --profile options."""
    index = 0
    while args[index] == "--profile":
        index += 2
    return args[index]


class FakeEngine:
    """Stands in for the engine behind the compose CLI: `ps`, `up`, `logs`, `down` answer from here,
    `config` (which needs no engine) runs the real CLI; `docker volume inspect` finds `volumes` only.
    Records each call's arguments and timeout."""

    def __init__(
        self,
        containers: list[dict],
        up_exit: int = 0,
        up_stderr: str = "",
        logs: dict | None = None,
        volumes: tuple[str, ...] = (),
    ):
        self.ps_output = "\n".join(json.dumps(entry) for entry in containers)
        self.up_exit, self.up_stderr, self.up_hangs = up_exit, up_stderr, False
        self.logs = logs or {}
        self.volumes = set(volumes)
        self.calls: list[tuple[list[str], float | None]] = []

    def __call__(self, command: list[str], **options) -> subprocess.CompletedProcess:
        if command[:3] == ["docker", "volume", "inspect"]:
            self.calls.append((command, options.get("timeout")))
            return subprocess.CompletedProcess(command, 0 if command[3] in self.volumes else 1, "", "")
        args = command[command.index("--env-file") + 2 :]
        self.calls.append((args, options.get("timeout")))
        verb = subcommand(args)
        if verb == "config":
            return REAL_RUN(command, **options)
        if verb == "up" and self.up_hangs:
            raise subprocess.TimeoutExpired(command, options["timeout"])
        stdout, exit_code, stderr = "", 0, ""
        if verb == "ps":
            stdout = self.ps_output
        elif verb == "logs":
            stdout = self.logs.get(args[-1], "")
        elif verb == "up":
            exit_code, stderr = self.up_exit, self.up_stderr
        return subprocess.CompletedProcess(command, exit_code, stdout, stderr)

    def arguments(self, verb: str) -> list[list[str]]:
        return [args for args, _ in self.calls if subcommand(args) == verb]


@pytest.fixture
def project(tmp_path, generated_env, compose_cli, monkeypatch) -> Settings:
    """A scratch checkout: the repo's infra/ linked in, a generated .env, the real compose CLI."""
    (tmp_path / "infra").symlink_to(PROJECT_DIR / "infra")
    monkeypatch.setattr(docker, "find_compose", lambda settings: compose_cli)
    return Settings.load(tmp_path)


def runtime_with(project: Settings, monkeypatch, engine: FakeEngine, stack: str = "mlflow") -> DockerRuntime:
    monkeypatch.setattr(subprocess, "run", engine)
    return DockerRuntime(project, Console(quiet=True), stack)


def rendered_config(compose_cli, generated_env, stack: str) -> dict:
    compose_file = PROJECT_DIR / "infra" / stack / "compose.yaml"
    result = run_compose(compose_cli, compose_file, generated_env, "--profile", "*", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_healthy_stack_reports_every_service_and_up_is_a_no_op(project, monkeypatch):
    engine = FakeEngine(healthy_mlflow())
    runtime = runtime_with(project, monkeypatch, engine)

    statuses = {service.name: service for service in runtime.status()}
    assert set(statuses) == {*MLFLOW_ONE_SHOT, *MLFLOW_LONG_RUNNING}
    assert all(service.healthy for service in statuses.values())
    assert {statuses[name].detail for name in MLFLOW_ONE_SHOT} == {"completed"}
    assert {statuses[name].detail for name in MLFLOW_LONG_RUNNING} == {"running (healthy)"}
    assert statuses["mlflow"].url == "127.0.0.1:5000"

    assert runtime.up() is False
    assert engine.arguments("up") == []


def test_failed_one_shot_step_is_unhealthy_and_up_repairs_the_stack(project, monkeypatch):
    engine = FakeEngine(healthy_mlflow(migrate=container("migrate", "exited", exit_code=1)))
    runtime = runtime_with(project, monkeypatch, engine)

    migrate = next(service for service in runtime.status() if service.name == "migrate")
    assert (migrate.running, migrate.healthy, migrate.detail) == (False, False, "exited 1")

    assert runtime.up() is True
    [(up_args, timeout)] = [call for call in engine.calls if subcommand(call[0]) == "up"]
    assert up_args == ["up", "--detach", "--wait", "--wait-timeout", "600", "--build"]
    assert timeout == 600


@pytest.mark.parametrize("stack", ["mlflow", "clearml"])
def test_after_down_every_service_outside_a_profile_is_missing(project, monkeypatch, compose_cli, generated_env, stack):
    config = rendered_config(compose_cli, generated_env, stack)
    runtime = runtime_with(project, monkeypatch, FakeEngine([]), stack)

    statuses = runtime.status()
    assert {service.name for service in statuses} == {n for n, s in config["services"].items() if not s.get("profiles")}
    assert AGENT not in {service.name for service in statuses}
    for service in statuses:
        assert (service.running, service.healthy, service.detail) == (False, False, "missing: not created")


@pytest.mark.parametrize(
    ("entry", "running", "detail"),
    [
        (container("mlflow", health="starting"), True, "running (starting)"),
        (container("mlflow", health="unhealthy"), True, "running (unhealthy)"),
        (container("mlflow", "exited", exit_code=0), False, "exited 0"),
        (container("mlflow", "restarting"), False, "restarting"),
    ],
)
def test_long_running_service_is_healthy_only_while_running_healthy(compose_cli, generated_env, entry, running, detail):
    config = rendered_config(compose_cli, generated_env, "mlflow")
    mlflow = next(s for s in judge_services(config, healthy_mlflow(mlflow=entry)) if s.name == "mlflow")
    assert (mlflow.running, mlflow.healthy, mlflow.detail) == (running, False, detail)


def test_one_shot_step_still_running_is_not_healthy_yet(compose_cli, generated_env):
    config = rendered_config(compose_cli, generated_env, "mlflow")
    statuses = judge_services(config, healthy_mlflow(migrate=container("migrate", health="")))
    migrate = next(service for service in statuses if service.name == "migrate")
    assert (migrate.running, migrate.healthy) == (True, False)


def test_a_failed_compose_run_container_does_not_count(compose_cli, generated_env):
    config = rendered_config(compose_cli, generated_env, "mlflow")
    leftover = container("migrate", "exited", exit_code=1, run=True)
    assert all(service.healthy for service in judge_services(config, [*healthy_mlflow(), leftover]))


def test_ps_output_as_one_json_array_is_accepted():
    entries = healthy_mlflow()
    assert parse_ps(json.dumps(entries)) == parse_ps("\n".join(map(json.dumps, entries))) == entries
    assert parse_ps("") == []


def test_agent_started_under_its_profile_is_listed_judged_and_repaired(project, monkeypatch):
    engine = FakeEngine(healthy_clearml(container(AGENT, health="unhealthy")))
    runtime = runtime_with(project, monkeypatch, engine, "clearml")

    agent = next(service for service in runtime.status() if service.name == AGENT)
    assert (agent.running, agent.healthy, agent.detail) == (True, False, "running (unhealthy)")

    assert runtime.up() is True
    [up_args] = engine.arguments("up")
    assert up_args[:3] == ["--profile", "agent", "up"]


def test_agent_not_started_is_not_expected(project, monkeypatch):
    engine = FakeEngine(healthy_clearml())
    runtime = runtime_with(project, monkeypatch, engine, "clearml")

    assert {service.name for service in runtime.status()} == set(CLEARML_SERVICES)
    assert runtime.up() is False


def test_down_selects_every_profile_so_the_agent_stops_too(project, monkeypatch, compose_cli, generated_env):
    engine = FakeEngine(healthy_clearml(container(AGENT)))
    runtime_with(project, monkeypatch, engine, "clearml").down()

    [down_args] = engine.arguments("down")
    assert "--remove-orphans" in down_args
    global_options = down_args[: down_args.index("down")]
    compose_file = PROJECT_DIR / "infra" / "clearml" / "compose.yaml"
    selected = run_compose(compose_cli, compose_file, generated_env, *global_options, "config", "--services")
    assert selected.returncode == 0, selected.stderr
    assert set(selected.stdout.split()) == {*CLEARML_SERVICES, AGENT}


def test_failed_up_names_each_unhealthy_service_with_its_last_log_lines(project, monkeypatch):
    engine = FakeEngine(
        healthy_mlflow(mlflow=container("mlflow", health="unhealthy")),
        up_exit=1,
        up_stderr="container mlstack-mlflow-mlflow-1 is unhealthy",
        logs={"mlflow": "mlflow-1  | sqlalchemy.exc.OperationalError: connection refused\n"},
    )
    runtime = runtime_with(project, monkeypatch, engine)

    with pytest.raises(ServiceStartError) as failure:
        runtime.up()
    message = str(failure.value)
    assert "container mlstack-mlflow-mlflow-1 is unhealthy" in message
    assert "mlflow: running (unhealthy)" in message
    assert "sqlalchemy.exc.OperationalError: connection refused" in message
    assert engine.arguments("logs") == [["--profile", "*", "logs", "--no-color", "--tail", "20", "mlflow"]]


def test_up_that_outlasts_its_timeout_raises_instead_of_hanging(project, monkeypatch):
    engine = FakeEngine(healthy_mlflow(mlflow=container("mlflow", health="starting")))
    engine.up_hangs = True
    runtime = runtime_with(project, monkeypatch, engine)
    runtime.up_timeout = 30

    with pytest.raises(ServiceStartError, match="did not finish within 30 s") as failure:
        runtime.up()
    assert "mlflow: running (starting)" in str(failure.value)


def test_docker_runtime_outside_a_checkout_names_the_missing_compose_file(tmp_path, compose_cli):
    from mlstack.errors import RuntimeUnavailableError

    (tmp_path / ".env").write_text("")
    runtime = DockerRuntime(Settings.load(tmp_path), Console())
    with pytest.raises(RuntimeUnavailableError, match="infra/mlflow/compose.yaml from the mlstack checkout"):
        runtime.status()


def test_tls_on_starts_the_tls_profile_with_the_generated_certificate(project, monkeypatch):
    update_env(project.env_file, {"MLFLOW_TLS": "true"})
    settings = Settings.load(project.project_dir)
    engine = FakeEngine(healthy_mlflow())
    runtime = runtime_with(settings, monkeypatch, engine)

    assert runtime.up() is True, "a healthy stack without its TLS front is not done"
    [up_args] = engine.arguments("up")
    assert up_args[:3] == ["--profile", "tls", "up"]
    certificate = settings.state_path / "tls" / "server.pem"
    assert certificate.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    config = runtime.rendered_config()["services"]["tls-proxy"]
    mounts = {volume["target"]: volume["source"] for volume in config["volumes"]}
    assert mounts["/certs/server.pem"] == str(certificate)
    assert config["ports"][0]["host_ip"] == "127.0.0.1", "the front binds where MLFLOW_TLS_BIND_ADDRESS says"


def test_a_stack_from_before_seaweedfs_moves_its_minio_data_once_then_removes_minio(project, monkeypatch):
    from mlstack.maintenance.minio_move import record_path

    volume = "mlstack-mlflow_minio-data"
    engine = FakeEngine(healthy_mlflow(), volumes=(volume,), logs={"minio-move": "moved 3 objects\n"})
    runtime = runtime_with(project, monkeypatch, engine)

    assert runtime.requested_profiles() == ["minio-move"]
    assert runtime.up() is True, "a healthy stack whose MinIO data has not moved is not done"
    [up_args] = engine.arguments("up")
    assert up_args[:3] == ["--profile", "minio-move", "up"]
    assert engine.arguments("rm") == [["--profile", "*", "rm", "--force", "--stop", "minio", "minio-move"]]
    assert volume in record_path(project).read_text(), "the record names where MinIO's data stays"
    assert engine.arguments("down") == [], "MinIO's volume is kept"

    assert runtime.requested_profiles() == []
    assert runtime.up() is False
    assert len(engine.arguments("up")) == 1


def test_a_stack_without_minio_data_never_starts_the_move(project, monkeypatch):
    engine = FakeEngine(healthy_mlflow())
    runtime = runtime_with(project, monkeypatch, engine)

    assert runtime.requested_profiles() == []
    assert runtime.up() is False
    assert engine.arguments("rm") == []


def test_ha_runs_the_override_and_judges_every_member(project, monkeypatch):
    from mlstack.stacks.mlflow import MLFLOW_HA_STACK

    update_env(project.env_file, {"MLSTACK_TOPOLOGY": "ha"})
    settings = Settings.load(project.project_dir)
    long_running = [service for service in MLFLOW_HA_STACK.long_running()]
    engine = FakeEngine(
        [*(container(name, "exited") for name in MLFLOW_ONE_SHOT), *(container(s.name) for s in long_running)]
    )
    runtime = runtime_with(settings, monkeypatch, engine)

    folder = settings.project_dir / "infra" / "mlflow"
    command = runtime.command("ps")
    assert command[command.index("-f") : command.index("--env-file")] == [
        "-f",
        str(folder / "compose.yaml"),
        "-f",
        str(folder / "compose.ha.yaml"),
    ]
    statuses = {service.name: service for service in runtime.status()}
    assert set(statuses) == {*MLFLOW_ONE_SHOT, *(service.name for service in long_running)}
    assert all(service.healthy for service in statuses.values())
    assert runtime.up() is False

    assert runtime.server_services() == ["mlflow-1", "mlflow-2", "mlflow"]
    runtime.stop_server()
    [stop_args] = engine.arguments("stop")
    assert stop_args[stop_args.index("stop") + 1 :] == ["tls-proxy", "mlflow", "mlflow-2", "mlflow-1"]


def test_ha_runs_postgres_clients_in_a_member_to_the_leader_through_haproxy(project, monkeypatch):
    update_env(project.env_file, {"MLSTACK_TOPOLOGY": "ha"})
    runtime = DockerRuntime(Settings.load(project.project_dir), Console(quiet=True))
    environment = runtime.rendered_config()["services"]["postgres-1"]["environment"]
    ran = []
    monkeypatch.setattr(
        subprocess, "run", lambda command, **_: ran.append(command) or subprocess.CompletedProcess(command, 0, b"", b"")
    )

    runtime.exec("postgres", ["pg_dump", "mlflow"])
    [command] = ran
    exec_args = command[command.index("exec") :]
    assert exec_args[:3] == ["exec", "-T", "postgres-1"]
    assert "PGHOST=postgres " in exec_args[5] and "$PATRONI_SUPERUSER_PASSWORD" in exec_args[5]
    assert exec_args[-2:] == ["pg_dump", "mlflow"]
    # the variables the login reads are the member's
    assert {"PATRONI_SUPERUSER_USERNAME", "PATRONI_SUPERUSER_PASSWORD"} <= environment.keys()
